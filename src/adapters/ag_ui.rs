//! AG-UI, the Agent-User Interaction protocol (CopilotKit and others):
//! `POST /ag-ui` with a `RunAgentInput` runs one agent turn on the
//! conversation its `threadId` names and streams AG-UI events over SSE.
//! The conversation's context is the run's shared state: `STATE_SNAPSHOT`
//! first, then a `STATE_DELTA` (the same JSON Patch the WebSocket's
//! `context` frame carries) for every change while the run goes on.

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tertulia_actors::model::{MessageStatus, NewMessage};
use tokio::sync::mpsc;
use warp::Filter;
use warp::filters::BoxedFilter;

use super::target::conversation;
use super::turn::{Turn, TurnEvent};
use super::{answer_timeout, bad, sse, streamed, text_parts};
use crate::app::AppState;
use crate::auth::{Creator, session_creator};
use crate::http::error::ApiError;
use crate::http::{allow_origin, ok, parse_object, preflight};

/// The longest message or run id kept.
const MAX_ID_LEN: usize = 128;

pub fn routes(app: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let max_body = app.config.server.max_body_bytes;

    // POST /ag-ui
    let run = warp::path!("ag-ui")
        .and(warp::post())
        .and(app.filter())
        .and(session_creator(app.runtime.clone(), app.limiter.clone()))
        .and(crate::http::body(max_body))
        .then(run);

    // OPTIONS /ag-ui
    let options = warp::path!("ag-ui")
        .and(warp::options())
        .and(warp::header::optional::<String>("origin"))
        .map(|origin| preflight("POST", origin));

    run.or(options).unify().boxed()
}

/// The parts of `RunAgentInput` a run uses.
struct RunInput {
    thread_id: String,
    run_id: String,
    message_id: String,
    text: String,
    state: Option<Map<String, Value>>,
}

fn parse_input(body: &Bytes) -> Result<RunInput, ApiError> {
    let body = parse_object(body, "the body")?;
    let id = |field: &str| match body.get(field) {
        Some(Value::String(id)) if !id.is_empty() && id.len() <= MAX_ID_LEN => Ok(id.clone()),
        _ => Err(bad(format!(
            "`{field}` is required: a string of 1 to {MAX_ID_LEN} characters"
        ))),
    };
    let (thread_id, run_id) = (id("threadId")?, id("runId")?);
    let last = match body.get("messages") {
        Some(Value::Array(messages)) => messages
            .iter()
            .rev()
            .find(|message| message.get("role").and_then(Value::as_str) == Some("user")),
        _ => return Err(bad("`messages` is required: an array")),
    }
    .and_then(Value::as_object)
    .ok_or_else(|| bad("`messages` has no user message to answer"))?;
    let message_id = match last.get("id") {
        Some(Value::String(id)) if !id.is_empty() && id.len() <= MAX_ID_LEN => id.clone(),
        _ => return Err(bad("the user message needs an `id`")),
    };
    let text = text_of(last.get("content"));
    if text.trim().is_empty() {
        return Err(bad("the user message has no text content"));
    }
    let state = match body.get("state") {
        None | Some(Value::Null) => None,
        Some(Value::Object(state)) => Some(state.clone()),
        Some(_) => {
            return Err(bad(
                "`state` must be an object (the conversation's context)",
            ));
        }
    };
    Ok(RunInput {
        thread_id,
        run_id,
        message_id,
        text,
        state,
    })
}

/// A user message's text: a string, or the text parts of a content array.
fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => text_parts(parts),
        _ => String::new(),
    }
}

async fn run(app: AppState, creator: Creator, body: Bytes) -> warp::reply::Response {
    let origin = creator.widget_origin.clone();
    let reply = match start(&app, &creator, &body).await {
        Ok((input, snapshot, turn)) => streamed("text/event-stream", move |sender| {
            write_events(input, snapshot, turn, sender)
        }),
        Err(error) => ok::<Value>(Err(error)),
    };
    allow_origin(reply, origin.as_deref())
}

async fn start(
    app: &AppState,
    creator: &Creator,
    body: &Bytes,
) -> Result<(RunInput, Value, Turn), ApiError> {
    let input = parse_input(body)?;
    let session = conversation(&app.runtime, creator, &input.thread_id).await?;
    let scope = &creator.scope;
    // The client's state is the agent's too: merged into the context with
    // the message, so the answer sees it and the run streams the change.
    // (Merging what is there already changes nothing and sends no delta.)
    let state = input.state.clone().filter(|state| !state.is_empty());
    let message = NewMessage {
        client_msg_id: Some(input.message_id.clone()),
        context: state,
        request_id: crate::http::request_id(),
        ..NewMessage::user(input.text.clone())
    };
    let timeout = answer_timeout(app);
    let (turn, _) = Turn::ask(&app.runtime, scope, session, message, timeout).await?;
    // The snapshot is the context the listener joined with: the deltas
    // after it are on the same stream, so none is missed or applied twice.
    let snapshot = Value::Object(turn.context());
    Ok((input, snapshot, turn))
}

/// The run as AG-UI events: started, the state, the answer, finished.
async fn write_events(
    input: RunInput,
    snapshot: Value,
    mut turn: Turn,
    sender: mpsc::Sender<Bytes>,
) {
    let ids = json!({"threadId": input.thread_id, "runId": input.run_id});
    let opening = [
        with_ids("RUN_STARTED", &ids),
        json!({"type": "STATE_SNAPSHOT", "snapshot": snapshot}),
    ];
    for event in opening {
        if sender.send(sse(&event)).await.is_err() {
            return;
        }
    }
    let mut events = Events::default();
    while let Some(event) = turn.next().await {
        for event in events.of(event, &ids) {
            if sender.send(sse(&event)).await.is_err() {
                return;
            }
        }
    }
}

fn with_ids(kind: &str, ids: &Value) -> Value {
    let mut event = ids.clone();
    event["type"] = json!(kind);
    event
}

/// The stream's state: the answer, and the text message open, if any
/// (AG-UI allows no tool call inside a text message).
#[derive(Default)]
struct Events {
    answer: String,
    open: Option<String>,
    segments: usize,
}

impl Events {
    fn of(&mut self, event: TurnEvent, ids: &Value) -> Vec<Value> {
        match event {
            TurnEvent::Started { answer, text } => {
                self.answer = answer.to_string();
                self.text(text)
            }
            TurnEvent::Delta { text } => self.text(text),
            TurnEvent::ToolCall {
                call_id,
                name,
                arguments,
            } => {
                let mut events = self.close();
                events.push(json!({"type": "TOOL_CALL_START", "toolCallId": call_id,
                    "toolCallName": name, "parentMessageId": self.answer}));
                if !arguments.is_empty() {
                    events.push(json!({"type": "TOOL_CALL_ARGS", "toolCallId": call_id,
                        "delta": arguments}));
                }
                events.push(json!({"type": "TOOL_CALL_END", "toolCallId": call_id}));
                events
            }
            TurnEvent::ToolResult {
                call_id, content, ..
            } => vec![json!({"type": "TOOL_CALL_RESULT", "toolCallId": call_id,
                "messageId": format!("{}-{call_id}", self.answer), "content": content,
                "role": "tool"})],
            TurnEvent::Context { patch, .. } => {
                vec![json!({"type": "STATE_DELTA", "delta": patch})]
            }
            TurnEvent::Problem { .. } => Vec::new(),
            TurnEvent::Done { status, .. } => {
                let mut events = self.close();
                events.push(match status {
                    MessageStatus::Failed => json!({"type": "RUN_ERROR",
                        "message": "the agent failed; the partial answer was kept",
                        "code": "agent_failed"}),
                    _ => with_ids("RUN_FINISHED", ids),
                });
                events
            }
            TurnEvent::Failed { code, message } => {
                let mut events = self.close();
                events.push(json!({"type": "RUN_ERROR", "message": message, "code": code}));
                events
            }
        }
    }

    fn text(&mut self, delta: String) -> Vec<Value> {
        let mut events = Vec::new();
        // AG-UI refuses an empty delta.
        if delta.is_empty() {
            return events;
        }
        let id = match &self.open {
            Some(id) => id.clone(),
            None => {
                self.segments += 1;
                let id = match self.segments {
                    1 => self.answer.clone(),
                    n => format!("{}-{n}", self.answer),
                };
                events.push(json!({"type": "TEXT_MESSAGE_START", "messageId": id,
                    "role": "assistant"}));
                self.open = Some(id.clone());
                id
            }
        };
        events.push(json!({"type": "TEXT_MESSAGE_CONTENT", "messageId": id, "delta": delta}));
        events
    }

    fn close(&mut self) -> Vec<Value> {
        self.open
            .take()
            .map(|id| json!({"type": "TEXT_MESSAGE_END", "messageId": id}))
            .into_iter()
            .collect()
    }
}
