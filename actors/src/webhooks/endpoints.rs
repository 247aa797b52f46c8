//! Endpoints as data: what makes one invalid, a new signing secret, and the
//! config file's endpoints brought up to date with what is stored.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;

use crate::config::{WebhookEndpointConfig, WebhooksConfig};
use crate::error::{Error, Result};
use crate::model::{EVENT_TYPES, TenantId, WebhookEndpoint, now_timestamp};
use crate::net::egress::EgressPolicy;
use crate::store::{Storage, Write};

/// An endpoint: its tenant and id.
pub type Key = (TenantId, String);

/// A new signing secret: `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// What is wrong with an endpoint's settings, if anything.
pub fn endpoint_problem(endpoint: &WebhookEndpoint, policy: &EgressPolicy) -> Option<Error> {
    let id_ok = !endpoint.endpoint_id.is_empty()
        && endpoint.endpoint_id.len() <= 64
        && endpoint
            .endpoint_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !id_ok {
        return Some(Error::InvalidInput(
            "an endpoint's id (`name`) must be 1 to 64 of a-z, A-Z, 0-9, `_`, `-`".into(),
        ));
    }
    if endpoint.url.len() > 2048 {
        return Some(Error::InvalidInput(
            "`url` is longer than 2048 bytes".into(),
        ));
    }
    match policy.check_url(&endpoint.url) {
        Err(crate::net::egress::EgressError::NotHttp(_)) => {
            return Some(Error::InvalidInput("`url` must be an http(s) URL".into()));
        }
        Err(error) => return Some(Error::UrlNotAllowed(format!("`url`: {error}"))),
        Ok(_) => {}
    }
    if crate::net::signing::Signer::new(&endpoint.secret).is_none() {
        return Some(Error::InvalidInput(
            "`secret` must be `whsec_` followed by base64".into(),
        ));
    }
    if let Some(filter) = endpoint.events.iter().find(|filter| !known_filter(filter)) {
        return Some(Error::InvalidInput(format!(
            "`events`: `{filter}` is not an event type, `prefix.*` or `*` (types: {})",
            EVENT_TYPES.join(", ")
        )));
    }
    let header_ok = match (&endpoint.header_name, &endpoint.header_value) {
        (None, None) => true,
        (Some(name), Some(value)) => {
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_ok()
                && reqwest::header::HeaderValue::from_str(value).is_ok()
                && !name.to_ascii_lowercase().starts_with("webhook-")
        }
        _ => false,
    };
    if !header_ok {
        return Some(Error::InvalidInput(
            "`header_name` and `header_value` go together, as a valid HTTP header not named `webhook-*`".into(),
        ));
    }
    None
}

fn known_filter(filter: &str) -> bool {
    filter == "*"
        || EVENT_TYPES.contains(&filter)
        || filter.strip_suffix(".*").is_some_and(|prefix| {
            EVENT_TYPES
                .iter()
                .any(|kind| kind.split('.').next() == Some(prefix))
        })
}

/// The config file's endpoints, as they should be stored now, given what is
/// stored: the file wins, except that an endpoint its receiver disabled
/// stays disabled while its URL is unchanged, and a changed secret keeps the
/// old one valid for the rotation overlap.
pub fn from_config(
    entry: &WebhookEndpointConfig,
    stored: Option<&WebhookEndpoint>,
    overlap: Duration,
) -> WebhookEndpoint {
    let now = now_timestamp();
    let secret = entry.resolve_secret();
    let gone = stored.filter(|stored| stored.url == entry.url && stored.disabled_reason.is_some());
    let rotated = stored.filter(|stored| stored.secret != secret);
    let non_empty = |text: &str| (!text.is_empty()).then(|| text.to_owned());
    WebhookEndpoint {
        endpoint_id: entry.name.clone(),
        tenant: TenantId(entry.tenant.clone()),
        url: entry.url.clone(),
        previous_secret: match rotated {
            Some(stored) => Some(stored.secret.clone()),
            None => stored.and_then(|stored| stored.previous_secret.clone()),
        },
        previous_secret_expires_at: match rotated {
            Some(_) => Some(later(overlap)),
            None => stored.and_then(|stored| stored.previous_secret_expires_at.clone()),
        },
        secret,
        events: entry.events.clone(),
        format: entry.format,
        enabled: gone.is_none() && entry.enabled.unwrap_or(true),
        disabled_reason: gone.and_then(|stored| stored.disabled_reason.clone()),
        header_name: non_empty(&entry.header_name),
        header_value: non_empty(&entry.header_value),
        description: non_empty(&entry.description),
        source: "config".into(),
        created_at: stored.map_or_else(|| now.clone(), |stored| stored.created_at.clone()),
        updated_at: now,
    }
}

/// The timestamp `after` from now, in the stored format.
pub fn later(after: Duration) -> String {
    crate::model::stored_time(
        chrono::Utc::now() + chrono::Duration::from_std(after).unwrap_or_default(),
    )
}

/// Stores the config file's endpoints and removes those it no longer lists.
pub(super) async fn sync_config(
    storage: &Storage,
    config: &WebhooksConfig,
    endpoints: &mut HashMap<Key, WebhookEndpoint>,
) -> Result<()> {
    let overlap = Duration::from_secs(config.rotation_overlap_secs);
    let mut listed = Vec::new();
    for entry in &config.endpoints {
        let key = (TenantId(entry.tenant.clone()), entry.name.clone());
        let stored = endpoints.get(&key);
        let mut wanted = from_config(entry, stored, overlap);
        if let Some(stored) = stored {
            // Unchanged apart from the time: nothing to write.
            wanted.updated_at = stored.updated_at.clone();
            if *stored == wanted {
                listed.push(key);
                continue;
            }
            wanted.updated_at = now_timestamp();
        }
        storage
            .write_and_wait(Write::PutEndpoint(Box::new(wanted.clone())))
            .await?;
        endpoints.insert(key.clone(), wanted);
        listed.push(key);
    }
    let dropped: Vec<Key> = endpoints
        .iter()
        .filter(|(key, endpoint)| endpoint.source == "config" && !listed.contains(key))
        .map(|(key, _)| key.clone())
        .collect();
    for key in dropped {
        tracing::info!(endpoint = %key.1, tenant = %key.0, "endpoint no longer in the config file; removed");
        storage
            .write_and_wait(Write::DeleteEndpoint {
                tenant: key.0.clone(),
                endpoint_id: key.1.clone(),
            })
            .await?;
        endpoints.remove(&key);
    }
    Ok(())
}
