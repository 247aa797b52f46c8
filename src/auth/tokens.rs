//! Client tokens: `Authorization: Bearer <HS256 JWT>` names one end user
//! (`sub`) inside the tenant, signed with the tenant's
//! `client_token_secret`; `exp` is required.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::tickets::unix_now;

/// The claims of a client token.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ClientClaims {
    /// The end user's `client_id`.
    pub(crate) sub: String,
    /// Expiry, seconds since the Unix epoch: required.
    pub(crate) exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) iat: Option<u64>,
}

/// The longest `client_id` accepted.
pub const MAX_CLIENT_ID_LEN: usize = 128;

/// The `client_id` of a genuine, unexpired HS256 token signed with `secret`.
pub fn verify_client_token(secret: &str, token: &str) -> Option<String> {
    if secret.is_empty() {
        return None;
    }
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 5;
    validation.set_required_spec_claims(&["exp", "sub"]);
    let data = jsonwebtoken::decode::<ClientClaims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .ok()?;
    let client = data.claims.sub;
    (!client.is_empty() && client.len() <= MAX_CLIENT_ID_LEN).then_some(client)
}

/// A client token for `client_id`, valid for `ttl`; and its expiry (Unix seconds).
pub fn mint_client_token(secret: &str, client_id: &str, ttl: Duration) -> (String, u64) {
    let now = unix_now();
    let claims = ClientClaims {
        sub: client_id.to_owned(),
        exp: now + ttl.as_secs(),
        iat: Some(now),
    };
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing cannot fail");
    (token, claims.exp)
}
