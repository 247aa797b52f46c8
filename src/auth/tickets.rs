//! Tickets: what a browser carries in `websocket_url`, since it cannot set
//! headers on a WebSocket. A ticket is `base64url(payload).base64url(hmac)`,
//! the payload naming the tenant, the session (or, for staff, the feed) and
//! the expiry, signed with HMAC-SHA256 under a secret the runtime keeps in
//! the database (so tickets survive a restart).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tertulia_actors::model::{Scope, SessionId, TenantId};

#[derive(Serialize, Deserialize)]
struct TicketPayload {
    /// Tenant id.
    t: String,
    /// Client id, when the session was opened for one end user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<String>,
    /// Opened with a widget key: the socket's `Origin` is checked too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    w: bool,
    /// Session id; absent on a ticket for the console's tenant-wide feed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<SessionId>,
    /// A staff member's name: the socket is theirs (the agent console).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    n: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    e: u64,
}

/// What a genuine session ticket says about its socket.
#[derive(Debug, Clone, PartialEq)]
pub struct TicketClaims {
    pub scope: Scope,
    /// A widget key opened the session: check the socket's `Origin` too.
    pub widget: bool,
    /// The staff member the socket belongs to (the console), if any.
    pub staff: Option<String>,
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

    /// A ticket for this scope and session, and when it expires (Unix seconds).
    pub fn issue(&self, scope: &Scope, session: SessionId, widget: bool) -> (String, u64) {
        self.sign(TicketPayload {
            t: scope.tenant.0.clone(),
            c: scope.client.clone(),
            w: widget,
            s: Some(session),
            n: None,
            e: unix_now() + self.ttl.as_secs(),
        })
    }

    /// A staff member's ticket: for one conversation's socket, or (with no
    /// session) for the tenant's console feed.
    pub fn issue_staff(
        &self,
        tenant: &TenantId,
        name: &str,
        session: Option<SessionId>,
    ) -> (String, u64) {
        self.sign(TicketPayload {
            t: tenant.0.clone(),
            c: None,
            w: false,
            s: session,
            n: Some(name.to_owned()),
            e: unix_now() + self.ttl.as_secs(),
        })
    }

    /// The claims of a genuine, unexpired ticket for this session.
    pub fn verify(&self, ticket: &str, session: SessionId) -> Option<TicketClaims> {
        let payload = self.open(ticket)?;
        (payload.s == Some(session)).then_some(TicketClaims {
            scope: Scope {
                tenant: TenantId(payload.t),
                client: payload.c,
            },
            widget: payload.w,
            staff: payload.n,
        })
    }

    /// The tenant and staff name of a genuine, unexpired console feed ticket.
    pub fn verify_feed(&self, ticket: &str) -> Option<(TenantId, String)> {
        let payload = self.open(ticket)?;
        match (payload.s, payload.n) {
            (None, Some(name)) => Some((TenantId(payload.t), name)),
            _ => None,
        }
    }

    fn sign(&self, payload: TicketPayload) -> (String, u64) {
        let expires = payload.e;
        let payload =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).expect("tickets serialise"));
        let signature = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        (format!("{payload}.{signature}"), expires)
    }

    fn open(&self, ticket: &str) -> Option<TicketPayload> {
        let (payload, signature) = ticket.split_once('.')?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        self.mac(payload).verify_slice(&signature).ok()?;
        let payload: TicketPayload =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        (payload.e > unix_now()).then_some(payload)
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(payload.as_bytes());
        mac
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
