//! The `webhook` agent provider: an n8n workflow (or any HTTP endpoint) is the
//! brain. Not an actor: the `Agent` actor consumes the stream this returns,
//! so dropping it (on `cancel`) drops the request.
//!
//! The question, the conversation's context and its recent history are POSTed
//! as JSON, signed per Standard Webhooks (`net/post.rs`) and, for n8n's Header
//! Auth, with an optional static header. The reply may be:
//! - JSON: the field `reply` or `output` (n8n's usual name), of the object or
//!   of the first element of an array; or a JSON string;
//! - newline-delimited JSON (`application/x-ndjson`): each line a string or
//!   an object with `delta`, `content`, `output`, `reply` or `text`, shown as
//!   it arrives;
//! - anything else: plain text, shown as it arrives.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use serde_json::{Value, json};

use crate::agent::reply::{LinesReply, ReplyDecoder, TextReply, json_reply};
use crate::agent::{AgentError, AgentEvent, AgentProvider, AgentRequest, AgentStream};
use crate::model::WebhookAgentSettings;
use crate::model::{AnswerMeta, Role};
use crate::net::post::{AGENT_USER_AGENT, SignedPost, header_if_set};
use crate::net::signing::Signer;

/// The longest error body quoted back, in characters.
const QUOTED_ERROR_CHARS: usize = 200;
/// The largest whole (non-streamed) reply read, in bytes.
const MAX_REPLY_BYTES: usize = 1024 * 1024;

/// The `webhook` provider. One HTTP client (a connection pool) per connect timeout.
pub struct WebhookAgent {
    /// Where requests may go.
    policy: crate::net::egress::EgressPolicy,
    clients: dashmap::DashMap<u64, reqwest::Client>,
}

impl WebhookAgent {
    fn client(&self, connect_timeout_ms: u64) -> Result<reqwest::Client, AgentError> {
        if let Some(client) = self.clients.get(&connect_timeout_ms) {
            return Ok(client.clone());
        }
        // Follows no redirect: one would re-send the signed question elsewhere.
        let client = self
            .policy
            .client_builder()
            .connect_timeout(Duration::from_millis(connect_timeout_ms.max(1)))
            .build()
            .map_err(|error| AgentError(format!("cannot build the HTTP client: {error}")))?;
        self.clients.insert(connect_timeout_ms, client.clone());
        Ok(client)
    }
}

impl AgentProvider for WebhookAgent {
    fn answer(&self, request: AgentRequest) -> AgentStream {
        let settings = request.settings.webhook_agent.clone();
        if let Some(problem) = settings.invalid() {
            return stream::once(async move { Err(AgentError(problem)) }).boxed();
        }
        if let Err(error) = self.policy.check_url(&settings.url) {
            let error = AgentError(format!("the workflow's URL is refused: {error}"));
            return stream::once(async { Err(error) }).boxed();
        }
        let client = match self.client(settings.connect_timeout_ms) {
            Ok(client) => client,
            Err(error) => return stream::once(async { Err(error) }).boxed(),
        };
        let timeout = Duration::from_millis(settings.timeout_ms.max(1));
        let opened = async move {
            match tokio::time::timeout(timeout, call(&client, &settings, &request)).await {
                Ok(Ok(reply)) => reply,
                Ok(Err(error)) => stream::once(async { Err(error) }).boxed(),
                Err(_) => {
                    let error = AgentError(format!(
                        "the workflow did not answer within {} s",
                        timeout.as_secs_f32()
                    ));
                    stream::once(async { Err(error) }).boxed()
                }
            }
        };
        let meta = stream::once(async {
            Ok(AgentEvent::Meta(AnswerMeta {
                agent: Some("webhook".into()),
                finish_reason: Some("stop".into()),
                ..AnswerMeta::default()
            }))
        });
        stream::once(opened).flatten().chain(meta).boxed()
    }
}

/// Sends the question; returns the reply as a stream of events.
async fn call(
    client: &reqwest::Client,
    settings: &WebhookAgentSettings,
    request: &AgentRequest,
) -> Result<BoxStream<'static, Result<AgentEvent, AgentError>>, AgentError> {
    let body = request_body(settings, request);
    let url = reqwest::Url::parse(&settings.url)
        .map_err(|_| AgentError("`webhook_agent.url` is not a valid URL".into()))?;
    let message_id = format!("msg_{}", request.question_id.0.simple());
    let post = SignedPost {
        url,
        body: body.into_bytes(),
        message_id: &message_id,
        signers: Signer::new(&settings.secret).into_iter().collect(),
        header: header_if_set(&settings.header_name, &settings.header_value),
        timeout: None,
        accept: Some("application/json, application/x-ndjson, text/plain"),
        user_agent: AGENT_USER_AGENT,
    };
    let response = post.request(client).send().await.map_err(|error| {
        AgentError(if crate::net::egress::refused_by_guard(&error) {
            "the workflow's address is refused by the egress guard (`egress.allow`)".into()
        } else if error.is_connect() {
            "cannot connect to the workflow".into()
        } else {
            format!("the workflow request failed: {}", error.without_url())
        })
    })?;
    read_reply(response, settings).await
}

/// The question as the workflow receives it, with the newest history.
fn request_body(settings: &WebhookAgentSettings, request: &AgentRequest) -> String {
    let history: Vec<Value> = request
        .history
        .iter()
        .rev()
        .take(settings.history_messages.max(1))
        .rev()
        .map(|turn| {
            let role = match turn.role {
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::System => "system",
            };
            json!({"role": role, "content": turn.content})
        })
        .collect();
    json!({
        "type": "agent.request",
        "tenant": request.tenant,
        "conversation_id": request.session,
        "message_id": request.question_id,
        "content": request.question(),
        "context": request.context,
        "history": history,
    })
    .to_string()
}

/// The workflow's answer as a stream of events: NDJSON as it arrives,
/// a JSON object's `reply`/`output` text, or plain text in chunks.
async fn read_reply(
    response: reqwest::Response,
    settings: &WebhookAgentSettings,
) -> Result<BoxStream<'static, Result<AgentEvent, AgentError>>, AgentError> {
    let status = response.status();
    let kind = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        let quoted: String = text.chars().take(QUOTED_ERROR_CHARS).collect();
        return Err(AgentError(format!(
            "the workflow answered {status}: {}",
            quoted.trim()
        )));
    }
    let idle = Duration::from_millis(settings.timeout_ms.max(1));
    if kind.contains("ndjson") || kind.contains("jsonl") {
        return Ok(decoded(response, idle, LinesReply::default()));
    }
    if kind.contains("json") {
        let body = response.bytes().await.map_err(|error| {
            AgentError(format!(
                "the workflow's reply broke: {}",
                error.without_url()
            ))
        })?;
        if body.len() > MAX_REPLY_BYTES {
            return Err(AgentError("the workflow's reply is too large".into()));
        }
        let text = json_reply(&body)?;
        return Ok(stream::once(async { Ok(AgentEvent::Text(text)) }).boxed());
    }
    Ok(decoded(response, idle, TextReply::default()))
}

/// The body's bytes as they arrive, each silence bounded by `idle`.
fn body_chunks(
    response: reqwest::Response,
    idle: Duration,
) -> BoxStream<'static, Result<Bytes, AgentError>> {
    stream::unfold(Some(response.bytes_stream()), move |body| async move {
        let mut body = body?;
        match tokio::time::timeout(idle, body.next()).await {
            Err(_) => Some((
                Err(AgentError(format!(
                    "the workflow sent nothing for {} s",
                    idle.as_secs_f32()
                ))),
                None,
            )),
            Ok(None) => None,
            Ok(Some(Err(_))) => Some((
                Err(AgentError("the workflow's reply broke off".into())),
                None,
            )),
            Ok(Some(Ok(bytes))) => Some((Ok(bytes), Some(body))),
        }
    })
    .boxed()
}

/// The body decoded as it arrives (each silence bounded by `idle`), and
/// once more at its end, so a last line or character is never left behind.
fn decoded(
    response: reqwest::Response,
    idle: Duration,
    mut decoder: impl ReplyDecoder,
) -> BoxStream<'static, Result<AgentEvent, AgentError>> {
    body_chunks(response, idle)
        .map(Some)
        .chain(stream::once(async { None }))
        .flat_map(move |piece| {
            stream::iter(match piece {
                Some(Ok(bytes)) => decoder.push(&bytes),
                Some(Err(error)) => vec![Err(error)],
                None => decoder.finish(),
            })
        })
        .boxed()
}

/// Used by the agent registry.
pub fn provider(policy: crate::net::egress::EgressPolicy) -> std::sync::Arc<dyn AgentProvider> {
    std::sync::Arc::new(WebhookAgent {
        policy,
        clients: dashmap::DashMap::new(),
    })
}
