//! One delivery attempt: an event sent, signed, to an endpoint, and how it
//! ended. Used by the delivery worker (`worker.rs`) and by nothing else.

use std::time::Duration;

use crate::model::{EventRecord, WebhookEndpoint, now_timestamp};
use crate::net::egress::EgressPolicy;
use crate::net::post::{SignedPost, WEBHOOK_USER_AGENT};
use crate::net::signing::Signer;

/// The longest excerpt of a failed response kept as `last_error`, in bytes.
const ERROR_EXCERPT_BYTES: usize = 200;

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered(u16),
    /// `410 Gone`: the receiver asks us to stop; the endpoint is disabled.
    Gone,
    Failed {
        status: Option<u16>,
        error: String,
    },
}

/// Sends one event, signed, and says how it went.
pub async fn attempt(
    client: &reqwest::Client,
    policy: &EgressPolicy,
    endpoint: &WebhookEndpoint,
    event: &EventRecord,
    timeout: Duration,
) -> Attempt {
    let failed = |error: String| Attempt::Failed {
        status: None,
        error,
    };
    let url = match policy.check_url(&endpoint.url) {
        Ok(url) => url,
        Err(error) => return failed(error.to_string()),
    };
    let body = crate::model::events::body(event, endpoint.format);
    let Some(signers) = signers(endpoint) else {
        return failed("the endpoint's secret is not `whsec_` + base64".into());
    };
    let post = SignedPost {
        url,
        body,
        message_id: &event.event_id,
        signers,
        header: endpoint
            .header_name
            .as_deref()
            .zip(endpoint.header_value.as_deref()),
        timeout: Some(timeout),
        accept: None,
        user_agent: WEBHOOK_USER_AGENT,
    };
    match post.request(client).send().await {
        Ok(response) => {
            let status = response.status();
            if status.is_success() {
                Attempt::Delivered(status.as_u16())
            } else if status == reqwest::StatusCode::GONE {
                Attempt::Gone
            } else {
                let excerpt = excerpt(response).await;
                let what = if status.is_redirection() {
                    "redirects are not followed"
                } else {
                    "not a 2xx"
                };
                Attempt::Failed {
                    status: Some(status.as_u16()),
                    error: format!("HTTP {status} ({what}){excerpt}"),
                }
            }
        }
        Err(error) => failed(describe(&error, timeout)),
    }
}

/// `v1,<sig>`, and the previous secret's signature too while it is valid.
/// The endpoint's signers: its secret, and the previous one while the
/// rotation overlap lasts. `None` if the secret is not in the right form.
fn signers(endpoint: &WebhookEndpoint) -> Option<Vec<Signer>> {
    let mut signers = vec![Signer::new(&endpoint.secret)?];
    let previous_valid = endpoint
        .previous_secret_expires_at
        .as_deref()
        .is_some_and(|expires| expires > now_timestamp().as_str());
    if previous_valid
        && let Some(previous) = endpoint.previous_secret.as_deref().and_then(Signer::new)
    {
        signers.push(previous);
    }
    Some(signers)
}

/// The start of an error response's body, for `last_error`.
async fn excerpt(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < ERROR_EXCERPT_BYTES {
        match tokio::time::timeout(Duration::from_secs(2), response.chunk()).await {
            Ok(Ok(Some(chunk))) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    bytes.truncate(ERROR_EXCERPT_BYTES);
    let text = String::from_utf8_lossy(&bytes).trim().to_owned();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// reqwest's own message names only the URL; the cause is in its sources.
fn describe(error: &reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!("no answer within {} ms", timeout.as_millis());
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
