//! n8n's chat widget (`@n8n/chat`) pointed at tertulia instead of an n8n
//! Chat Trigger: `POST /n8n-chat/{widget key}` with the widget's webhook
//! protocol. `sendMessage` answers `{output}`, or (the widget's streaming
//! mode, which asks for `text/plain`) newline-delimited `begin`/`item`/`end`
//! chunks; `loadPreviousSession` answers the history in the LangChain shape
//! the widget renders. The widget's `sessionId` is a webchat conversation's
//! id, so consent, leads, limits and the console are the webchat's.

use std::net::IpAddr;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tertulia_actors::model::{KeyKind, MessageStatus, NewMessage, Role, StoredMessage};
use tokio::sync::mpsc;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::HeaderMap;

use super::turn::{Turn, TurnEvent};
use super::{answer_timeout, bad, streamed};
use crate::app::AppState;
use crate::auth::{WebchatCaller, resolve_webchat};
use crate::http::error::{ApiError, ReplyProblem};
use crate::http::{ClientIp, allow_origin, ok, parse_object, preflight};

/// How many earlier messages `loadPreviousSession` gives back.
const PREVIOUS_MESSAGES: usize = 200;
/// Who the widget's chunks say wrote them (it groups chunks by node).
const NODE: &str = "tertulia";

pub fn routes(app: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let max_body = app.config.server.max_body_bytes;

    // POST /n8n-chat/{widget key}
    let chat = warp::path!("n8n-chat" / String)
        .and(warp::post())
        .and(app.filter())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<ClientIp>())
        .and(crate::http::body(max_body))
        .then(chat);

    // OPTIONS /n8n-chat/{widget key}: its JSON body needs a preflight.
    let options = warp::path!("n8n-chat" / String)
        .and(warp::options())
        .and(warp::header::optional::<String>("origin"))
        .map(|_key: String, origin| preflight("POST", origin));

    chat.or(options).unify().boxed()
}

async fn chat(
    key: String,
    app: AppState,
    headers: HeaderMap,
    client_ip: Option<ClientIp>,
    body: Bytes,
) -> warp::reply::Response {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let ip = client_ip.map(|client| client.0);
    let caller = match widget_caller(&app, &key, header("origin"), ip) {
        Ok(caller) => caller,
        Err(error) => return ok::<Value>(Err(error)),
    };
    // The widget's streaming mode asks for `text/plain`; its plain mode does not.
    let streaming = header("accept").is_some_and(|accept| accept.contains("text/plain"));
    let reply = match request_of(header("content-type"), &body) {
        Err(error) => ok::<Value>(Err(error)),
        Ok(request) => answer(&app, &caller, request, streaming).await,
    };
    allow_origin(reply, caller.widget_origin.as_deref())
}

/// The path's key must be a widget key used from an allowed origin: an API
/// key would be in every visitor's browser.
fn widget_caller(
    app: &AppState,
    key: &str,
    origin: Option<&str>,
    ip: Option<IpAddr>,
) -> Result<WebchatCaller, ApiError> {
    if let Some((_, KeyKind::Api)) = app.runtime.key_kind(key) {
        return Err(ApiError::ApiKeyInUrl);
    }
    let caller = resolve_webchat(&app.runtime, Some(key), origin, ip)?;
    app.limiter.check(&caller.tenant, Some(key), ip)?;
    Ok(caller)
}

/// What the widget asks.
struct Request {
    action: String,
    session_id: String,
    input: Option<String>,
}

fn request_of(content_type: Option<&str>, body: &Bytes) -> Result<Request, ApiError> {
    if content_type.is_some_and(|kind| kind.starts_with("multipart/")) {
        return Err(ApiError::UnsupportedMedia(
            "files are not taken here: turn the widget's allowFileUploads off".into(),
        ));
    }
    let body = parse_object(body, "the body")?;
    let text = |field: &str| body.get(field).and_then(Value::as_str).map(str::to_owned);
    let action = text("action")
        .ok_or_else(|| bad("`action` is required: sendMessage or loadPreviousSession"))?;
    let session_id = text("sessionId").ok_or_else(|| bad("`sessionId` is required: a string"))?;
    Ok(Request {
        action,
        session_id,
        input: text("chatInput"),
    })
}

async fn answer(
    app: &AppState,
    caller: &WebchatCaller,
    request: Request,
    streaming: bool,
) -> warp::reply::Response {
    if let Err(error) = caller.check_session_id(&request.session_id) {
        return ok::<Value>(Err(error));
    }
    match request.action.as_str() {
        "loadPreviousSession" => ok(previous_session(app, caller, &request.session_id).await),
        "sendMessage" => match send(app, caller, &request).await {
            Err(error) => ok::<Value>(Err(error)),
            Ok(turn) if streaming => streamed("text/plain; charset=utf-8", move |sender| {
                write_chunks(turn, sender)
            }),
            Ok(turn) => ok(whole_answer(turn).await),
        },
        other => ok::<Value>(Err(ApiError::BadRequest(format!(
            "unknown action `{other}`: sendMessage or loadPreviousSession"
        )))),
    }
}

async fn send(app: &AppState, caller: &WebchatCaller, request: &Request) -> Result<Turn, ApiError> {
    let input = request.input.as_deref().unwrap_or_default();
    if input.trim().is_empty() {
        return Err(bad("`chatInput` is required: the visitor's message"));
    }
    app.limiter
        .check_webchat(&caller.tenant, &request.session_id, caller.client_ip)?;
    let conversation = app
        .runtime
        .webchat_conversation(&caller.tenant, &request.session_id, true)
        .await?;
    let message = NewMessage {
        request_id: crate::http::request_id(),
        ..NewMessage::user(input)
    };
    let timeout = answer_timeout(app);
    let (turn, _) = Turn::ask(
        &app.runtime,
        &caller.scope(),
        conversation.id,
        message,
        timeout,
    )
    .await?;
    Ok(turn)
}

/// The non-streaming reply: `{output}` once the answer is stored.
async fn whole_answer(mut turn: Turn) -> Result<Value, ApiError> {
    while let Some(event) = turn.next().await {
        match event {
            TurnEvent::Done { text, status, .. } if status != MessageStatus::Failed => {
                return Ok(json!({"output": text}));
            }
            TurnEvent::Done { answer, .. } => {
                return Err(problem(&turn, ReplyProblem::AgentFailed, Some(answer)));
            }
            TurnEvent::Failed { code, .. } if code == "answer_timeout" => {
                return Err(problem(&turn, ReplyProblem::Timeout, None));
            }
            TurnEvent::Failed { .. } => return Err(problem(&turn, ReplyProblem::Restarted, None)),
            _ => {}
        }
    }
    Err(problem(&turn, ReplyProblem::Restarted, None))
}

fn problem(
    turn: &Turn,
    problem: ReplyProblem,
    assistant: Option<tertulia_actors::model::MessageId>,
) -> ApiError {
    ApiError::Reply {
        problem,
        conversation_id: turn.session(),
        last_message_id: turn.question(),
        assistant_message_id: assistant,
    }
}

/// The streaming reply, one JSON object per line, as the widget reads it.
async fn write_chunks(mut turn: Turn, sender: mpsc::Sender<Bytes>) {
    let metadata = json!({"nodeId": NODE, "nodeName": NODE, "itemIndex": 0, "runIndex": 0});
    let line = |mut chunk: Map<String, Value>| {
        chunk.insert("metadata".into(), metadata.clone());
        Bytes::from(format!("{}\n", Value::Object(chunk)))
    };
    let object = |value: Value| match value {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    while let Some(event) = turn.next().await {
        let chunk = match event {
            TurnEvent::Started { text, .. } => {
                let begin = line(object(json!({"type": "begin"})));
                if sender.send(begin).await.is_err() {
                    return;
                }
                if text.is_empty() {
                    continue;
                }
                json!({"type": "item", "content": text})
            }
            TurnEvent::Delta { text } => json!({"type": "item", "content": text}),
            TurnEvent::Done { .. } => json!({"type": "end"}),
            TurnEvent::Failed { message, .. } => json!({"type": "error", "content": message}),
            TurnEvent::Problem { message, .. } => json!({"type": "error", "content": message}),
            TurnEvent::ToolCall { .. }
            | TurnEvent::ToolResult { .. }
            | TurnEvent::Context { .. } => continue,
        };
        if sender.send(line(object(chunk))).await.is_err() {
            return;
        }
    }
}

/// `loadPreviousSession`: the conversation's messages as LangChain
/// serialises them, which is what n8n's chat memory answers.
async fn previous_session(
    app: &AppState,
    caller: &WebchatCaller,
    session_id: &str,
) -> Result<Value, ApiError> {
    let conversation = match app
        .runtime
        .webchat_conversation(&caller.tenant, session_id, false)
        .await
    {
        Ok(conversation) => conversation,
        // A new visitor: nothing to restore.
        Err(tertulia_actors::Error::UnknownExternal { .. }) => return Ok(json!({"data": []})),
        Err(error) => return Err(error.into()),
    };
    let history = app
        .runtime
        .history(&caller.scope(), conversation.id, PREVIOUS_MESSAGES)
        .await?;
    let data: Vec<Value> = history.iter().filter_map(langchain_message).collect();
    Ok(json!({"data": data}))
}

fn langchain_message(message: &StoredMessage) -> Option<Value> {
    let kind = match message.role {
        Role::User => "HumanMessage",
        Role::Assistant => "AIMessage",
        Role::System => return None,
    };
    Some(json!({
        "lc": 1,
        "type": "constructor",
        "id": ["langchain_core", "messages", kind],
        "kwargs": {"content": message.content, "additional_kwargs": {}, "response_metadata": {}},
    }))
}
