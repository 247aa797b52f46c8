//! The Conversation API of the seed "Chat Endpoints" (base `/chat`,
//! `X-API-Key` plus, for one end user, `Authorization: Bearer`). A
//! conversation is a session: its id works on `/chat/sessions/{id}/…`,
//! `/chat/ws/{id}` and here. Handlers call the runtime; nothing here touches
//! the database.

use std::collections::HashMap;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tertulia_actors::model::protocol::{MAX_AUTHOR_LEN, MAX_CLIENT_MSG_ID_LEN};
use tertulia_actors::model::{DoubleTexting, MetaChange, NewMessage, Role, Scope};
use warp::Filter;
use warp::filters::BoxedFilter;

use super::views::{ConversationMessage, ConversationView, array};
use crate::app::AppState;
use crate::auth::caller;
use crate::http::error::ApiError;
use crate::http::{
    created, created_or_ok, ok, only_fields, optional_body, parse_limit, parse_object,
    parse_session, required_text,
};

/// `GET /chat/conversations` returns this many unless `limit` says otherwise.
const DEFAULT_CONVERSATIONS: usize = 50;
/// The most messages one `GET /chat/{id}/messages` returns.
const MAX_MESSAGES: usize = 5000;
/// The longest title.
const MAX_TITLE_BYTES: usize = 200;
const STATUSES: [&str; 2] = ["active", "archived"];

/// Every Conversation API route.
pub fn routes(app: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    conversation_routes(app.clone())
        .or(message_routes(app))
        .unify()
        .boxed()
}

/// The state and the caller: every route here takes both.
fn app_and_caller(app: &AppState) -> BoxedFilter<(AppState, Scope)> {
    let who = caller(app.runtime.clone(), app.limiter.clone());
    app.filter().and(who).boxed()
}

/// Conversations: made, listed, changed.
fn conversation_routes(app: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let max_body = app.config.server.max_body_bytes;
    let app_and_caller = app_and_caller(&app);
    let body = crate::http::body(max_body);

    // POST /chat/conversation
    let create = warp::path!("chat" / "conversation")
        .and(warp::post())
        .and(app_and_caller.clone())
        .and(optional_body(max_body))
        .then(create_conversation)
        .map(created);
    // GET /chat/conversations?limit=50&status_filter=active|archived
    let list = warp::path!("chat" / "conversations")
        .and(warp::get())
        .and(app_and_caller.clone())
        .and(warp::query::<HashMap<String, String>>())
        .then(list_conversations)
        .map(ok);
    // PATCH /chat/{id}
    let update = warp::path!("chat" / String)
        .and(warp::patch())
        .and(app_and_caller.clone())
        .and(body.clone())
        .then(update_conversation)
        .map(ok);
    create.or(list).unify().or(update).unify().boxed()
}

/// A conversation's messages, contact and handoff.
fn message_routes(app: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let max_body = app.config.server.max_body_bytes;
    let app_and_caller = app_and_caller(&app);
    let body = crate::http::body(max_body);

    // GET /chat/{id}/messages?limit=N
    let messages = warp::path!("chat" / String / "messages")
        .and(warp::get())
        .and(app_and_caller.clone())
        .and(warp::query::<HashMap<String, String>>())
        .then(list_messages)
        .map(ok);
    // POST /chat/{id}/messages
    let post = warp::path!("chat" / String / "messages")
        .and(warp::post())
        .and(app_and_caller.clone())
        .and(body.clone())
        .then(post_message)
        .map(created);
    // GET /chat/{id}/contact
    let contact = warp::path!("chat" / String / "contact")
        .and(warp::get())
        .and(app_and_caller.clone())
        .then(get_contact)
        .map(ok);
    // POST /chat/{id}/handoff
    let handoff = warp::path!("chat" / String / "handoff")
        .and(warp::post())
        .and(app_and_caller.clone())
        .and(optional_body(max_body))
        .then(request_handoff)
        .map(created_or_ok);
    messages
        .or(post)
        .unify()
        .or(contact)
        .unify()
        .or(handoff)
        .unify()
        .boxed()
}

/// GET /chat/{id}/contact: the lead captured in a (webchat) conversation.
async fn get_contact(
    conversation: String,
    app: AppState,
    scope: Scope,
) -> Result<impl Serialize, ApiError> {
    let conversation = parse_session(&conversation)?;
    app.runtime
        .contact(&scope, conversation)
        .await?
        .ok_or(ApiError::NoContact)
}

/// The longest handoff reason.
const MAX_REASON_BYTES: usize = 500;

/// Asks for a person to take over: flags the conversation and records
/// `handoff.requested` (once: an open request is returned with `200`).
/// The optional `reason` of a handoff request.
pub fn handoff_reason(body: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    match body.get("reason") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(reason)) if reason.len() <= MAX_REASON_BYTES => {
            Ok(Some(reason.clone()).filter(|reason| !reason.trim().is_empty()))
        }
        Some(_) => Err(ApiError::BadRequest(format!(
            "`reason` must be text of at most {MAX_REASON_BYTES} bytes"
        ))),
    }
}

async fn request_handoff(
    conversation: String,
    app: AppState,
    scope: Scope,
    body: Bytes,
) -> Result<(impl Serialize, bool), ApiError> {
    let conversation = parse_session(&conversation)?;
    let body = if body.is_empty() {
        Map::new()
    } else {
        parse_object(&body, "the body")?
    };
    only_fields(&body, &["reason"])?;
    let reason = handoff_reason(&body)?;
    let (handoff, new) = app
        .runtime
        .request_handoff(&scope, conversation, "api", reason)
        .await?;
    Ok((json!({"handoff": handoff, "new": new}), new))
}

/// `author` from a body: absent, or 1 to 100 bytes of text.
pub fn parse_author(body: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    match body.get("author") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(author))
            if !author.trim().is_empty() && author.len() <= MAX_AUTHOR_LEN =>
        {
            Ok(Some(author.trim().to_owned()))
        }
        Some(_) => Err(ApiError::BadRequest(format!(
            "`author` must be text of 1 to {MAX_AUTHOR_LEN} bytes"
        ))),
    }
}

/// `title` from a body: absent, `null` (clear it) or 1 to 200 bytes of text.
fn parse_title(body: &Map<String, Value>) -> Result<Option<Option<String>>, ApiError> {
    match body.get("title") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(title))
            if !title.trim().is_empty() && title.len() <= MAX_TITLE_BYTES =>
        {
            Ok(Some(Some(title.trim().to_owned())))
        }
        Some(_) => Err(ApiError::BadRequest(format!(
            "`title` must be text of 1 to {MAX_TITLE_BYTES} bytes, or null"
        ))),
    }
}

fn parse_status(value: Option<&str>, field: &str) -> Result<Option<String>, ApiError> {
    match value {
        None => Ok(None),
        Some(status) if STATUSES.contains(&status) => Ok(Some(status.to_owned())),
        Some(other) => Err(ApiError::BadRequest(format!(
            "`{field}` must be one of {}, not `{other}`",
            STATUSES.join(", ")
        ))),
    }
}

/// POST /chat/conversation `{title?}` → 201
async fn create_conversation(
    app: AppState,
    scope: Scope,
    body: Bytes,
) -> Result<impl Serialize, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        parse_object(&body, "the body")?
    };
    let title = parse_title(&body)?.flatten();
    let record = app
        .runtime
        .create_session(&scope, Map::new(), title)
        .await?;
    Ok(json!(ConversationView::from(&record)))
}

/// GET /chat/conversations?limit=50&status_filter=active|archived (newest first)
async fn list_conversations(
    app: AppState,
    scope: Scope,
    query: HashMap<String, String>,
) -> Result<impl Serialize, ApiError> {
    let limit = parse_limit(
        &query,
        DEFAULT_CONVERSATIONS,
        tertulia_actors::runtime::MAX_LIST,
    )?;
    let status = parse_status(
        query.get("status_filter").map(String::as_str),
        "status_filter",
    )?;
    let conversations = app.runtime.list_sessions(&scope, status.as_deref(), limit);
    Ok(array::<_, ConversationView>(&conversations.await?))
}

/// GET /chat/{id}/messages?limit=N (oldest first; with `limit`, the latest N)
async fn list_messages(
    conversation: String,
    app: AppState,
    scope: Scope,
    query: HashMap<String, String>,
) -> Result<impl Serialize, ApiError> {
    let conversation = parse_session(&conversation)?;
    let limit = parse_limit(&query, MAX_MESSAGES, MAX_MESSAGES)?;
    let messages = app.runtime.history(&scope, conversation, limit).await?;
    Ok(array::<_, ConversationMessage>(&messages))
}

/// POST /chat/{id}/messages `{role, content, respond?, client_msg_id?}` → 201.
/// A `user` message is answered unless `respond` is false; `assistant` and
/// `system` messages (a workflow or a person answering) are stored and sent
/// to every socket, and start no answer.
async fn post_message(
    conversation: String,
    app: AppState,
    scope: Scope,
    body: Bytes,
) -> Result<impl Serialize, ApiError> {
    let conversation = parse_session(&conversation)?;
    let body = parse_object(&body, "the body")?;
    only_fields(
        &body,
        &["role", "content", "respond", "client_msg_id", "author"],
    )?;
    let role = match body.get("role").and_then(Value::as_str) {
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some("system") => Role::System,
        _ => {
            return Err(ApiError::BadRequest(
                "`role` must be user, assistant or system".into(),
            ));
        }
    };
    let content = required_text(
        &body,
        "content",
        app.runtime.config().limits.max_content_bytes,
    )?;
    let respond = match body.get("respond") {
        None => true,
        Some(Value::Bool(respond)) => *respond,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "`respond` must be true or false".into(),
            ));
        }
    };
    let client_msg_id = match body.get("client_msg_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if !id.is_empty() && id.len() <= MAX_CLIENT_MSG_ID_LEN => {
            Some(id.clone())
        }
        Some(_) => {
            return Err(ApiError::BadRequest(format!(
                "`client_msg_id` must be text of 1 to {MAX_CLIENT_MSG_ID_LEN} bytes"
            )));
        }
    };
    let author = parse_author(&body)?;
    let message = NewMessage {
        role,
        respond,
        client_msg_id,
        author: author.clone(),
        request_id: crate::http::request_id(),
        ..NewMessage::user(content.clone())
    };
    let ack = app
        .runtime
        .post_message(&scope, conversation, message)
        .await?;
    Ok(json!({
        "id": ack.message_id,
        "conversation_id": conversation,
        "role": role,
        "content": content,
        "created_at": ack.created_at,
        "updated_at": ack.created_at,
        "version": 1,
        "seq": ack.seq,
        "status": "complete",
        "client_msg_id": ack.client_msg_id,
        "author": author,
        "direction": role.direction(),
    }))
}

/// PATCH /chat/{id} `{title?, status?, version}`: a stale `version` is 409
/// with `current_version`.
async fn update_conversation(
    conversation: String,
    app: AppState,
    scope: Scope,
    body: Bytes,
) -> Result<impl Serialize, ApiError> {
    let conversation = parse_session(&conversation)?;
    let body = parse_object(&body, "the body")?;
    only_fields(&body, &["title", "status", "version", "double_texting"])?;
    let version = body.get("version").and_then(Value::as_u64).ok_or_else(|| {
        ApiError::BadRequest("`version` is required: the version you last saw".into())
    })?;
    let status = match body.get("status") {
        None => None,
        Some(Value::String(status)) => parse_status(Some(status), "status")?,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "`status` must be active or archived".into(),
            ));
        }
    };
    let double_texting = match body.get("double_texting") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(name)) => Some(Some(DoubleTexting::parse(name).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "`double_texting` is {}, or null",
                DoubleTexting::NAMES
            ))
        })?)),
        Some(_) => {
            return Err(ApiError::BadRequest(format!(
                "`double_texting` is {}, or null",
                DoubleTexting::NAMES
            )));
        }
    };
    let change = MetaChange {
        title: parse_title(&body)?,
        status,
        double_texting,
        version,
    };
    let record = app
        .runtime
        .update_conversation(&scope, conversation, change)
        .await?;
    Ok(json!(ConversationView::from(&record)))
}
