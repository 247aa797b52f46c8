//! `GET /`: a page to chat in, embedded in the binary.
//!
//! The page needs an API key to create a conversation. If the `default`
//! tenant still uses the well-known development key from `config/default.toml`,
//! the page is pre-filled with it (it is public anyway); any other key is never
//! put in a page: the user pastes it.

use crate::AppState;
use tertulia_actors::domain::TenantId;

/// The development key shipped in `config/default.toml`.
pub const DEVELOPMENT_KEY: &str = "tk_dev_default_change_me";

const INDEX: &str = include_str!("static/index.html");

pub fn index_html(app: &AppState) -> String {
    let uses_dev_key = app
        .runtime
        .tenant_settings(&TenantId("default".into()))
        .is_some_and(|settings| settings.api_keys.iter().any(|key| key == DEVELOPMENT_KEY));
    INDEX.replace(
        "{{DEV_API_KEY}}",
        if uses_dev_key { DEVELOPMENT_KEY } else { "" },
    )
}
