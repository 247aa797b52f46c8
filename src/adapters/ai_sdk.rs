//! The Vercel AI SDK's UI message stream protocol (v1), as `useChat`'s
//! `DefaultChatTransport` speaks it: `POST /ai-sdk/chat` takes the
//! transport's body, posts its last user message (idempotent by the
//! message's id) and streams the answer as SSE parts; `GET
//! /ai-sdk/chat/{id}/stream` gives the answer in progress again from its
//! start, or 204 when there is none (`resume: true`).

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tertulia_actors::model::{MessageStatus, NewMessage};
use tokio::sync::mpsc;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;

use super::target::conversation;
use super::turn::{Turn, TurnEvent};
use super::{answer_timeout, bad, sse, streamed, text_parts};
use crate::app::AppState;
use crate::auth::{Creator, session_creator};
use crate::http::error::ApiError;
use crate::http::{allow_origin, ok, parse_object};

/// The header that tells the SDK which stream protocol this is.
const PROTOCOL_HEADER: &str = "x-vercel-ai-ui-message-stream";
/// The longest message id kept (it is the message's `client_msg_id`).
const MAX_ID_LEN: usize = 128;

pub fn routes(app: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let max_body = app.config.server.max_body_bytes;
    let with_app = app.filter();
    let creator = session_creator(app.runtime.clone(), app.limiter.clone());

    // POST /ai-sdk/chat
    let chat = warp::path!("ai-sdk" / "chat")
        .and(warp::post())
        .and(with_app.clone())
        .and(creator.clone())
        .and(crate::http::body(max_body))
        .then(chat);

    // GET /ai-sdk/chat/{id}/stream
    let resume = warp::path!("ai-sdk" / "chat" / String / "stream")
        .and(warp::get())
        .and(with_app)
        .and(creator)
        .then(resume);

    chat.or(resume).unify().boxed()
}

/// What the transport sends: the chat's id and the user message to answer.
struct ChatRequest {
    id: String,
    message_id: String,
    text: String,
    /// `regenerate-message`: answer the message again.
    regenerate: bool,
}

fn parse_request(body: &Bytes) -> Result<ChatRequest, ApiError> {
    let body = parse_object(body, "the body")?;
    let id = match body.get("id") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        _ => return Err(bad("`id` (the chat's id) is required: a string")),
    };
    let regenerate = match body.get("trigger").map(Value::as_str) {
        None | Some(Some("submit-message")) => false,
        Some(Some("regenerate-message")) => true,
        Some(_) => return Err(bad("`trigger` is submit-message or regenerate-message")),
    };
    let last = match body.get("messages") {
        Some(Value::Array(messages)) => messages.last().and_then(Value::as_object),
        _ => return Err(bad("`messages` is required: an array of UI messages")),
    }
    .ok_or_else(|| bad("`messages` must end with the user's message, an object"))?;
    if last.get("role").and_then(Value::as_str) != Some("user") {
        return Err(bad("the last of `messages` must have role `user`"));
    }
    let message_id = match last.get("id") {
        Some(Value::String(id)) if !id.is_empty() && id.len() <= MAX_ID_LEN => id.clone(),
        _ => {
            return Err(bad(format!(
                "the user message needs an `id` of 1 to {MAX_ID_LEN} characters"
            )));
        }
    };
    let text = text_of(last);
    if text.trim().is_empty() {
        return Err(bad("the user message has no text part"));
    }
    Ok(ChatRequest {
        id,
        message_id,
        text,
        regenerate,
    })
}

/// The text of a UI message: its `text` parts, in order.
fn text_of(message: &Map<String, Value>) -> String {
    let parts = message.get("parts").and_then(Value::as_array);
    text_parts(parts.map(Vec::as_slice).unwrap_or_default())
}

async fn chat(app: AppState, creator: Creator, body: Bytes) -> warp::reply::Response {
    let origin = creator.widget_origin.clone();
    let reply = match start_chat(&app, &creator, &body).await {
        Ok(turn) => stream_turn(turn),
        Err(error) => ok::<Value>(Err(error)),
    };
    allow_origin(reply, origin.as_deref())
}

async fn start_chat(app: &AppState, creator: &Creator, body: &Bytes) -> Result<Turn, ApiError> {
    let request = parse_request(body)?;
    let session = conversation(&app.runtime, creator, &request.id).await?;
    let (scope, timeout) = (&creator.scope, answer_timeout(app));
    if request.regenerate {
        let id = &request.message_id;
        match Turn::answer_again(&app.runtime, scope, session, id, timeout).await {
            // A message never stored (its first send was lost) is sent now.
            Err(ApiError::Runtime(tertulia_actors::Error::InvalidInput(_))) => {}
            again => return again,
        }
    }
    let message = NewMessage {
        client_msg_id: Some(request.message_id),
        request_id: crate::http::request_id(),
        ..NewMessage::user(request.text)
    };
    let (turn, _) = Turn::ask(&app.runtime, scope, session, message, timeout).await?;
    Ok(turn)
}

async fn resume(id: String, app: AppState, creator: Creator) -> warp::reply::Response {
    let origin = creator.widget_origin.clone();
    let found = async {
        let session = conversation(&app.runtime, &creator, &id).await?;
        Turn::resume(&app.runtime, &creator.scope, session, answer_timeout(&app)).await
    };
    let reply = match found.await {
        Ok(Some(turn)) => stream_turn(turn),
        Ok(None) => warp::http::Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Default::default())
            .expect("an empty 204 is valid"),
        Err(error) => ok::<Value>(Err(error)),
    };
    allow_origin(reply, origin.as_deref())
}

fn stream_turn(turn: Turn) -> warp::reply::Response {
    let mut reply = streamed("text/event-stream", move |sender| write_parts(turn, sender));
    reply
        .headers_mut()
        .insert(PROTOCOL_HEADER, warp::http::HeaderValue::from_static("v1"));
    reply
}

/// Writes the turn as UI message stream parts, then `[DONE]`.
async fn write_parts(mut turn: Turn, sender: mpsc::Sender<Bytes>) {
    let mut parts = Parts::default();
    while let Some(event) = turn.next().await {
        for part in parts.of(event) {
            if sender.send(sse(&part)).await.is_err() {
                return;
            }
        }
    }
    let _ = sender.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
}

/// The stream's state: whether a text part is open, and its id.
#[derive(Default)]
struct Parts {
    text: Option<String>,
    answer: String,
}

impl Parts {
    /// The parts one event becomes.
    fn of(&mut self, event: TurnEvent) -> Vec<Value> {
        match event {
            TurnEvent::Started { answer, text } => {
                self.answer = answer.to_string();
                let mut parts = vec![json!({"type": "start", "messageId": self.answer})];
                if !text.is_empty() {
                    parts.extend(self.text(text));
                }
                parts
            }
            TurnEvent::Delta { text } => self.text(text),
            TurnEvent::ToolCall {
                call_id,
                name,
                arguments,
            } => {
                let mut parts = self.close_text();
                let input = serde_json::from_str::<Value>(&arguments).unwrap_or(json!(arguments));
                parts.push(
                    json!({"type": "tool-input-available", "toolCallId": call_id,
                    "toolName": name, "input": input, "dynamic": true}),
                );
                parts
            }
            TurnEvent::ToolResult {
                call_id,
                content,
                is_error,
            } => vec![match is_error {
                true => json!({"type": "tool-output-error", "toolCallId": call_id,
                    "errorText": content, "dynamic": true}),
                false => {
                    let output = serde_json::from_str::<Value>(&content).unwrap_or(json!(content));
                    json!({"type": "tool-output-available", "toolCallId": call_id,
                        "output": output, "dynamic": true})
                }
            }],
            // Transient: the client sees it, the message (as stored) does not keep it.
            TurnEvent::Context { version, patch } => vec![json!({"type": "data-context",
                "data": {"version": version, "patch": patch}, "transient": true})],
            // The end says how it went; its error part carries the reason.
            TurnEvent::Problem { .. } => Vec::new(),
            TurnEvent::Done { status, .. } => self.finish(status),
            TurnEvent::Failed { code, message } => {
                let mut parts = self.close_text();
                parts.push(json!({"type": "error", "errorText": format!("{message} ({code})")}));
                parts
            }
        }
    }

    fn text(&mut self, delta: String) -> Vec<Value> {
        let mut parts = Vec::new();
        if self.text.is_none() {
            let id = format!("{}-text-{}", self.answer, uuid::Uuid::now_v7().simple());
            parts.push(json!({"type": "text-start", "id": id}));
            self.text = Some(id);
        }
        parts.push(json!({"type": "text-delta", "id": self.text, "delta": delta}));
        parts
    }

    fn close_text(&mut self) -> Vec<Value> {
        self.text
            .take()
            .map(|id| json!({"type": "text-end", "id": id}))
            .into_iter()
            .collect()
    }

    fn finish(&mut self, status: MessageStatus) -> Vec<Value> {
        let mut parts = self.close_text();
        match status {
            MessageStatus::Complete => {
                parts.push(json!({"type": "finish", "finishReason": "stop"}));
            }
            MessageStatus::Interrupted => {
                parts.push(json!({"type": "finish", "finishReason": "other"}));
            }
            MessageStatus::Failed => parts.push(json!({"type": "error",
                "errorText": "the agent failed; the partial answer was kept"})),
        }
        parts
    }
}
