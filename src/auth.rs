//! Credentials at the edge: the tenant's API key (`X-API-Key`) for REST and
//! back-end sockets, and short-lived tickets in `websocket_url` for browsers,
//! which cannot set headers on a WebSocket.
//!
//! A ticket is `base64url(payload).base64url(hmac)`, the payload naming the
//! tenant, the session and the expiry, signed with HMAC-SHA256 under a secret
//! the runtime keeps in the database (so tickets survive a restart).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tertulia_actors::Runtime;
use tertulia_actors::domain::{SessionId, TenantId};
use warp::{Filter, Rejection};

use crate::error::ApiError;
use crate::limits::Limiter;
use crate::server::PeerAddr;

/// Resolves `X-API-Key` to its tenant (401 when it is missing or unknown),
/// then counts the request against the key's and the address's limits (429).
pub fn tenant_by_api_key(
    runtime: Runtime,
    limiter: Limiter,
) -> impl Filter<Extract = (TenantId,), Error = Rejection> + Clone {
    warp::header::optional::<String>("x-api-key")
        .and(warp::ext::optional::<PeerAddr>())
        .and_then(move |key: Option<String>, peer: Option<PeerAddr>| {
            let runtime = runtime.clone();
            let limiter = limiter.clone();
            async move {
                let key = key.ok_or_else(|| warp::reject::custom(ApiError::MissingApiKey))?;
                let tenant = runtime
                    .tenant_for_api_key(&key)
                    .ok_or_else(|| warp::reject::custom(ApiError::InvalidApiKey))?;
                limiter
                    .check(&tenant, Some(&key), peer.map(|peer| peer.0.ip()))
                    .map_err(|error| warp::reject::custom(ApiError::from(error)))?;
                Ok::<_, Rejection>(tenant)
            }
        })
}

#[derive(Serialize, Deserialize)]
struct TicketPayload {
    /// Tenant id.
    t: String,
    /// Session id.
    s: SessionId,
    /// Expiry, seconds since the Unix epoch.
    e: u64,
}

/// Issues and checks WebSocket tickets.
#[derive(Clone)]
pub struct Tickets {
    secret: Vec<u8>,
    ttl: Duration,
}

impl Tickets {
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        Tickets {
            secret: secret.to_vec(),
            ttl,
        }
    }

    /// A ticket for this tenant and session, and when it expires (Unix seconds).
    pub fn issue(&self, tenant: &TenantId, session: SessionId) -> (String, u64) {
        let expires = unix_now() + self.ttl.as_secs();
        let payload = TicketPayload {
            t: tenant.0.clone(),
            s: session,
            e: expires,
        };
        let payload =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).expect("tickets serialise"));
        let signature = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        (format!("{payload}.{signature}"), expires)
    }

    /// The tenant the ticket was issued to, if it is genuine, unexpired and for this session.
    pub fn verify(&self, ticket: &str, session: SessionId) -> Option<TenantId> {
        let (payload, signature) = ticket.split_once('.')?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        self.mac(payload).verify_slice(&signature).ok()?;
        let payload: TicketPayload =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        (payload.s == session && payload.e > unix_now()).then_some(TenantId(payload.t))
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(payload.as_bytes());
        mac
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_works_only_for_its_session_and_until_it_expires() {
        let tickets = Tickets::new(b"secret", Duration::from_secs(60));
        let session = SessionId::new();
        let tenant = TenantId("acme".into());
        let (ticket, _) = tickets.issue(&tenant, session);
        assert_eq!(tickets.verify(&ticket, session), Some(tenant.clone()));
        assert_eq!(tickets.verify(&ticket, SessionId::new()), None);
        assert_eq!(
            Tickets::new(b"other", Duration::from_secs(60)).verify(&ticket, session),
            None
        );

        let expired = Tickets::new(b"secret", Duration::ZERO);
        let (ticket, _) = expired.issue(&tenant, session);
        assert_eq!(expired.verify(&ticket, session), None);
    }

    #[test]
    fn a_tampered_ticket_is_refused() {
        let tickets = Tickets::new(b"secret", Duration::from_secs(60));
        let session = SessionId::new();
        let (ticket, _) = tickets.issue(&TenantId("acme".into()), session);
        let (payload, signature) = ticket.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&serde_json::json!({"t": "other", "s": session, "e": u64::MAX}))
                .unwrap(),
        );
        assert_eq!(
            tickets.verify(&format!("{forged}.{signature}"), session),
            None
        );
        assert_eq!(tickets.verify(payload, session), None);
        assert_eq!(tickets.verify("", session), None);
    }
}
