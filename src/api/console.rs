//! The agent console's API (`/console/api/...`) and its tenant-wide feed
//! (`WS /console/ws`). Support staff sign in with their own staff key (made
//! through the admin API or `tertulia key create --kind staff --name …`); the
//! key names the tenant and the person, whose name visitors see.
//!
//! The console lists conversations here, follows the feed for changes,
//! watches one conversation on its ordinary socket (a staff ticket: the
//! socket counts as staff in `presence` and its `message` frames are answers
//! in the person's name), and takes a conversation over or hands it back.
//! Handlers call the runtime; nothing here touches the database.

use std::collections::HashMap;

use bytes::Bytes;
use serde::Deserialize;
use serde::Serialize;
use serde_json::{Value, json};
use tertulia_actors::model::protocol::{MAX_CLIENT_MSG_ID_LEN, WireMessage};
use tertulia_actors::model::{Attendant, NewMessage, Role, Scope, now_timestamp};
use warp::filters::BoxedFilter;
use warp::{Filter, Reply};

use crate::app::AppState;
use crate::auth::{Staff, staff_caller};
use crate::http::UpgradeSlot;
use crate::http::error::ApiError;
use crate::http::{created, ok, parse_limit, parse_object, parse_session, required_text};

/// Conversations listed at most (the newest).
const MAX_LIST: usize = 200;
/// Messages of one conversation loaded at most (the newest).
const MAX_HISTORY: usize = 500;

/// Every console route, behind a staff key (the feed socket, behind its ticket).
pub fn routes(app: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    conversation_routes(app.clone())
        .or(ticket_routes(app))
        .unify()
        .boxed()
}

/// Who is signed in, the conversations, and acting on one.
fn conversation_routes(app: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let max_body = app.config.server.max_body_bytes;
    let staff = staff_caller(app.runtime.clone(), app.limiter.clone());
    let with_app = app.filter();
    // GET /console/api/me
    let me = warp::path!("console" / "api" / "me")
        .and(warp::get())
        .and(staff.clone())
        .map(signed_in)
        .map(ok);
    // GET /console/api/conversations?limit=
    let list = warp::path!("console" / "api" / "conversations")
        .and(warp::get())
        .and(with_app.clone())
        .and(staff.clone())
        .and(warp::query::<HashMap<String, String>>())
        .then(list_conversations)
        .map(ok);
    // GET /console/api/conversations/{id}/messages?limit=
    let messages = warp::path!("console" / "api" / "conversations" / String / "messages")
        .and(warp::get())
        .and(with_app.clone())
        .and(staff.clone())
        .and(warp::query::<HashMap<String, String>>())
        .then(conversation_messages)
        .map(ok);
    // POST /console/api/conversations/{id}/takeover
    let take_over = warp::path!("console" / "api" / "conversations" / String / "takeover")
        .and(warp::post())
        .and(with_app.clone())
        .and(staff.clone())
        .then(take_over)
        .map(ok);
    // POST /console/api/conversations/{id}/handback
    let hand_back = warp::path!("console" / "api" / "conversations" / String / "handback")
        .and(warp::post())
        .and(with_app.clone())
        .and(staff.clone())
        .then(hand_back)
        .map(ok);
    // POST /console/api/conversations/{id}/messages {content, client_msg_id?}
    let answer = warp::path!("console" / "api" / "conversations" / String / "messages")
        .and(warp::post())
        .and(with_app)
        .and(staff)
        .and(crate::http::body(max_body))
        .then(answer)
        .map(created);
    me.or(list)
        .unify()
        .or(messages)
        .unify()
        .or(take_over)
        .unify()
        .or(hand_back)
        .unify()
        .or(answer)
        .unify()
        .boxed()
}

/// Tickets for the sockets the console opens, and the feed socket itself.
fn ticket_routes(app: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let staff = staff_caller(app.runtime.clone(), app.limiter.clone());
    let with_app = app.filter();
    // POST /console/api/conversations/{id}/socket: a staff ticket for the
    // conversation's own socket.
    let socket = warp::path!("console" / "api" / "conversations" / String / "socket")
        .and(warp::post())
        .and(with_app.clone())
        .and(staff.clone())
        .and(warp::header::optional::<String>("host"))
        .then(socket_ticket)
        .map(ok);
    // POST /console/api/feed: a ticket for the tenant-wide feed.
    let feed_ticket = warp::path!("console" / "api" / "feed")
        .and(warp::post())
        .and(with_app.clone())
        .and(staff)
        .and(warp::header::optional::<String>("host"))
        .map(feed_ticket)
        .map(ok);
    // GET /console/ws?ticket=
    let feed = warp::path!("console" / "ws")
        .and(warp::get())
        .and(with_app)
        .and(warp::query::<FeedQuery>())
        .and(crate::api::sockets::browser_origin())
        .and(warp::header::optional::<String>("sec-websocket-key"))
        .and(warp::ext::optional::<UpgradeSlot>())
        .map(open_feed);
    socket.or(feed_ticket).unify().or(feed).unify().boxed()
}

/// GET /console/api/me
fn signed_in(staff: Staff) -> Result<Value, ApiError> {
    Ok(json!({
        "tenant": staff.tenant,
        "name": staff.name,
        "key_id": staff.key_id,
    }))
}

/// POST /console/api/conversations/{id}/socket
async fn socket_ticket(
    id: String,
    app: AppState,
    staff: Staff,
    host: Option<String>,
) -> Result<Value, ApiError> {
    let session = parse_session(&id)?;
    // Only the tenant's own conversations get a ticket.
    app.runtime
        .session(&Scope::tenant(staff.tenant.clone()), session)
        .await?;
    let (ticket, expires) = app
        .tickets
        .issue_staff(&staff.tenant, &staff.name, Some(session));
    let base = app.socket_base(host);
    Ok(json!({
        "websocket_url": format!("{base}/chat/ws/{session}?ticket={ticket}"),
        "expires_at": expires,
    }))
}

/// POST /console/api/feed
fn feed_ticket(app: AppState, staff: Staff, host: Option<String>) -> Result<Value, ApiError> {
    let (ticket, expires) = app.tickets.issue_staff(&staff.tenant, &staff.name, None);
    let base = app.socket_base(host);
    Ok(json!({
        "websocket_url": format!("{base}/console/ws?ticket={ticket}"),
        "expires_at": expires,
    }))
}

#[derive(Debug, Deserialize)]
struct FeedQuery {
    ticket: Option<String>,
}

/// Checks a feed ticket, then upgrades and streams the tenant's feed.
fn open_feed(
    app: AppState,
    query: FeedQuery,
    origin: crate::api::sockets::BrowserOrigin,
    websocket_key: Option<String>,
    slot: Option<UpgradeSlot>,
) -> warp::reply::Response {
    let (Some(websocket_key), Some(slot)) = (websocket_key, slot) else {
        return ApiError::NotWebSocket.into_response();
    };
    let Some((tenant, name)) = query
        .ticket
        .as_deref()
        .and_then(|ticket| app.tickets.verify_feed(ticket))
    else {
        return ApiError::InvalidTicket.into_response();
    };
    if let Err(error) = origin.check(&app, &tenant, false) {
        return error.into_response();
    }
    let receiver = match app.runtime.console_feed(&tenant) {
        Ok(receiver) => receiver,
        Err(error) => return ApiError::from(error).into_response(),
    };
    let Some(on_upgrade) = slot.take() else {
        return ApiError::NotWebSocket.into_response();
    };
    tracing::debug!(%tenant, staff = %name, "console feed opened");
    crate::server::feed::serve(on_upgrade, app.config.websocket.clone(), receiver);
    crate::http::switching_protocols(&websocket_key)
}

/// GET /console/api/conversations?limit=
async fn list_conversations(
    app: AppState,
    staff: Staff,
    query: HashMap<String, String>,
) -> Result<impl Serialize, ApiError> {
    let limit = parse_limit(&query, 50, MAX_LIST)?;
    let conversations = app
        .runtime
        .console_conversations(&staff.tenant, limit)
        .await?;
    let count = conversations.len();
    Ok(json!({"conversations": conversations, "count": count}))
}

/// GET /console/api/conversations/{id}/messages?limit=
async fn conversation_messages(
    id: String,
    app: AppState,
    staff: Staff,
    query: HashMap<String, String>,
) -> Result<impl Serialize, ApiError> {
    let session = parse_session(&id)?;
    let limit = parse_limit(&query, MAX_HISTORY, MAX_HISTORY)?;
    let scope = Scope::tenant(staff.tenant.clone());
    let record = app.runtime.session(&scope, session).await?;
    let messages: Vec<WireMessage> = app
        .runtime
        .history(&scope, session, limit)
        .await?
        .iter()
        .map(WireMessage::from)
        .collect();
    Ok(json!({
        "conversation": tertulia_actors::runtime::ConversationSummary::from(&record),
        "messages": messages,
    }))
}

/// POST /console/api/conversations/{id}/takeover
async fn take_over(id: String, app: AppState, staff: Staff) -> Result<impl Serialize, ApiError> {
    let session = parse_session(&id)?;
    let attendant = Attendant {
        name: staff.name.clone(),
        key_id: staff.key_id.clone(),
        since: now_timestamp(),
    };
    let attendant = app
        .runtime
        .take_over(&staff.tenant, session, attendant)
        .await?;
    Ok(json!({
        "session_id": session,
        "agent": {"kind": "human", "name": attendant.name},
        "since": attendant.since,
    }))
}

/// POST /console/api/conversations/{id}/handback
async fn hand_back(id: String, app: AppState, staff: Staff) -> Result<impl Serialize, ApiError> {
    let session = parse_session(&id)?;
    app.runtime
        .hand_back(&staff.tenant, session, &staff.name)
        .await?;
    Ok(json!({"session_id": session, "agent": {"kind": "ai"}}))
}

/// POST /console/api/conversations/{id}/messages {content, client_msg_id?}
async fn answer(
    id: String,
    app: AppState,
    staff: Staff,
    body: Bytes,
) -> Result<impl Serialize, ApiError> {
    let session = parse_session(&id)?;
    let body = parse_object(&body, "the message")?;
    let content = required_text(&body, "content", usize::MAX)?;
    let client_msg_id = match body.get("client_msg_id") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(id))
            if !id.is_empty() && id.len() <= MAX_CLIENT_MSG_ID_LEN =>
        {
            Some(id.clone())
        }
        Some(_) => {
            return Err(ApiError::BadRequest(format!(
                "`client_msg_id` must be a string of 1 to {MAX_CLIENT_MSG_ID_LEN} bytes"
            )));
        }
    };
    let message = NewMessage {
        role: Role::Assistant,
        respond: false,
        client_msg_id,
        author: Some(staff.name.clone()),
        request_id: crate::http::request_id(),
        ..NewMessage::user(content)
    };
    let scope = Scope::tenant(staff.tenant.clone());
    let ack = app.runtime.post_message(&scope, session, message).await?;
    Ok(json!({
        "message_id": ack.message_id,
        "seq": ack.seq,
        "client_msg_id": ack.client_msg_id,
        "created_at": ack.created_at,
    }))
}
