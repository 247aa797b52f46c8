//! The one signed POST: how the `webhook` agent, the `openai` agent's tools
//! and webhook deliveries all send JSON to someone else's server. The body
//! is signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature`, one signature per valid secret so a rotation keeps
//! the old one working), with an optional static header for receivers that
//! check one (n8n's Header Auth).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::signing::Signer;

/// A JSON POST to sign and send.
pub struct SignedPost<'a> {
    pub url: reqwest::Url,
    pub body: Vec<u8>,
    /// The message id (`webhook-id`): the same on every retry of one message.
    pub message_id: &'a str,
    /// Signers of the body; none sends it unsigned.
    pub signers: Vec<Signer>,
    /// A static header the receiver checks (name, value).
    pub header: Option<(&'a str, &'a str)>,
    pub timeout: Option<Duration>,
    /// What the sender accepts back, if it says.
    pub accept: Option<&'a str>,
    /// Who is sending (`User-Agent`).
    pub user_agent: &'static str,
}

/// The `User-Agent` of agents' and tools' requests.
pub const AGENT_USER_AGENT: &str = concat!("tertulia/", env!("CARGO_PKG_VERSION"));
/// The `User-Agent` of webhook deliveries.
pub const WEBHOOK_USER_AGENT: &str = concat!("tertulia-webhooks/", env!("CARGO_PKG_VERSION"));

impl SignedPost<'_> {
    /// The request, ready to send with `client`.
    pub fn request(self, client: &reqwest::Client) -> reqwest::RequestBuilder {
        let mut request = client
            .post(self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::USER_AGENT, self.user_agent);
        if let Some(timeout) = self.timeout {
            request = request.timeout(timeout);
        }
        if let Some(accept) = self.accept {
            request = request.header(reqwest::header::ACCEPT, accept);
        }
        if !self.signers.is_empty() {
            let timestamp = unix_now();
            let signatures: Vec<String> = self
                .signers
                .iter()
                .map(|signer| {
                    signer
                        .sign(self.message_id, timestamp, &self.body)
                        .signature
                })
                .collect();
            request = request
                .header("webhook-id", self.message_id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signatures.join(" "));
        }
        if let Some((name, value)) = self.header {
            request = request.header(name, value);
        }
        request.body(self.body)
    }
}

/// A static header from settings where an empty name means none.
pub fn header_if_set<'a>(name: &'a str, value: &'a str) -> Option<(&'a str, &'a str)> {
    (!name.is_empty()).then_some((name, value))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}
