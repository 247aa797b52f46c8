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
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;
use tertulia_actors::model::protocol::{MAX_CLIENT_MSG_ID_LEN, ServerFrame, WireMessage};
use tertulia_actors::model::{Attendant, NewMessage, Role, Scope, now_timestamp};
use tokio::sync::broadcast::error::RecvError;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role as SocketRole, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::app::AppState;
use crate::auth::{Staff, staff_caller};
use crate::http::UpgradeSlot;
use crate::http::error::ApiError;
use crate::http::{parse_limit, parse_object, parse_session, required_text, respond};

/// Conversations listed at most (the newest).
const MAX_LIST: usize = 200;
/// Messages of one conversation loaded at most (the newest).
const MAX_HISTORY: usize = 500;

pub fn routes(app: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let max_body = app.config.server.max_body_bytes;
    let staff = staff_caller(app.runtime.clone(), app.limiter.clone());
    let with_app = warp::any().map(move || app.clone());

    // GET /console/api/me
    let me = warp::path!("console" / "api" / "me")
        .and(warp::get())
        .and(staff.clone())
        .map(|staff: Staff| {
            warp::reply::json(&json!({
                "tenant": staff.tenant,
                "name": staff.name,
                "key_id": staff.key_id,
            }))
            .into_response()
        });

    // GET /console/api/conversations?limit=
    let list = warp::path!("console" / "api" / "conversations")
        .and(warp::get())
        .and(with_app.clone())
        .and(staff.clone())
        .and(warp::query::<HashMap<String, String>>())
        .then(
            |app: AppState, staff: Staff, query: HashMap<String, String>| async move {
                let result = async {
                    let limit = parse_limit(&query, 50, MAX_LIST)?;
                    let conversations = app
                        .runtime
                        .console_conversations(&staff.tenant, limit)
                        .await?;
                    let count = conversations.len();
                    Ok(json!({"conversations": conversations, "count": count}))
                }
                .await;
                respond(StatusCode::OK, result)
            },
        );

    // GET /console/api/conversations/{id}/messages?limit=
    let messages = warp::path!("console" / "api" / "conversations" / String / "messages")
        .and(warp::get())
        .and(with_app.clone())
        .and(staff.clone())
        .and(warp::query::<HashMap<String, String>>())
        .then(
            |id: String, app: AppState, staff: Staff, query: HashMap<String, String>| async move {
                let result = async {
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
                .await;
                respond(StatusCode::OK, result)
            },
        );

    // POST /console/api/conversations/{id}/takeover
    let take_over = warp::path!("console" / "api" / "conversations" / String / "takeover")
        .and(warp::post())
        .and(with_app.clone())
        .and(staff.clone())
        .then(|id: String, app: AppState, staff: Staff| async move {
            let result = async {
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
            .await;
            respond(StatusCode::OK, result)
        });

    // POST /console/api/conversations/{id}/handback
    let hand_back = warp::path!("console" / "api" / "conversations" / String / "handback")
        .and(warp::post())
        .and(with_app.clone())
        .and(staff.clone())
        .then(|id: String, app: AppState, staff: Staff| async move {
            let result = async {
                let session = parse_session(&id)?;
                app.runtime
                    .hand_back(&staff.tenant, session, &staff.name)
                    .await?;
                Ok(json!({"session_id": session, "agent": {"kind": "ai"}}))
            }
            .await;
            respond(StatusCode::OK, result)
        });

    // POST /console/api/conversations/{id}/messages {content, client_msg_id?}
    let answer = warp::path!("console" / "api" / "conversations" / String / "messages")
        .and(warp::post())
        .and(with_app.clone())
        .and(staff.clone())
        .and(warp::body::content_length_limit(max_body))
        .and(warp::body::bytes())
        .then(
            |id: String, app: AppState, staff: Staff, body: Bytes| async move {
                let result = async {
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
                .await;
                respond(StatusCode::CREATED, result)
            },
        );

    // POST /console/api/conversations/{id}/socket: a staff ticket for the
    // conversation's own socket.
    let socket = warp::path!("console" / "api" / "conversations" / String / "socket")
        .and(warp::post())
        .and(with_app.clone())
        .and(staff.clone())
        .and(warp::header::optional::<String>("host"))
        .then(
            |id: String, app: AppState, staff: Staff, host: Option<String>| async move {
                let result = async {
                    let session = parse_session(&id)?;
                    // Only the tenant's own conversations get a ticket.
                    app.runtime
                        .session(&Scope::tenant(staff.tenant.clone()), session)
                        .await?;
                    let (ticket, expires) =
                        app.tickets
                            .issue_staff(&staff.tenant, &staff.name, Some(session));
                    let base = app.socket_base(host);
                    Ok(json!({
                        "websocket_url": format!("{base}/chat/ws/{session}?ticket={ticket}"),
                        "expires_at": expires,
                    }))
                }
                .await;
                respond(StatusCode::OK, result)
            },
        );

    // POST /console/api/feed: a ticket for the tenant-wide feed.
    let feed_ticket = warp::path!("console" / "api" / "feed")
        .and(warp::post())
        .and(with_app.clone())
        .and(staff)
        .and(warp::header::optional::<String>("host"))
        .map(|app: AppState, staff: Staff, host: Option<String>| {
            let (ticket, expires) = app.tickets.issue_staff(&staff.tenant, &staff.name, None);
            let base = app.socket_base(host);
            warp::reply::json(&json!({
                "websocket_url": format!("{base}/console/ws?ticket={ticket}"),
                "expires_at": expires,
            }))
            .into_response()
        });

    // GET /console/ws?ticket=
    let feed = warp::path!("console" / "ws")
        .and(warp::get())
        .and(with_app)
        .and(warp::query::<FeedQuery>())
        .and(warp::header::optional::<String>("sec-websocket-key"))
        .and(warp::ext::optional::<UpgradeSlot>())
        .and_then(
            |app: AppState,
             query: FeedQuery,
             websocket_key: Option<String>,
             slot: Option<UpgradeSlot>| async move {
                Ok::<_, Rejection>(open_feed(app, query, websocket_key, slot))
            },
        );

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
        .or(socket)
        .unify()
        .or(feed_ticket)
        .unify()
        .or(feed)
        .unify()
        .boxed()
}

#[derive(Debug, Deserialize)]
struct FeedQuery {
    ticket: Option<String>,
}

/// Checks a feed ticket, then upgrades and streams the tenant's feed.
fn open_feed(
    app: AppState,
    query: FeedQuery,
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
    let receiver = match app.runtime.console_feed(&tenant) {
        Ok(receiver) => receiver,
        Err(error) => return ApiError::from(error).into_response(),
    };
    let Some(on_upgrade) = slot.take() else {
        return ApiError::NotWebSocket.into_response();
    };
    let settings = app.config.websocket.clone();
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let config = WebSocketConfig::default()
            .read_buffer_size(settings.read_buffer_bytes)
            .max_message_size(Some(settings.max_message_bytes));
        let socket = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            SocketRole::Server,
            Some(config),
        )
        .await;
        tracing::debug!(%tenant, staff = %name, "console feed opened");
        serve_feed(
            socket,
            receiver,
            Duration::from_millis(settings.ping_interval_ms.max(1)),
        )
        .await;
    });
    crate::http::switching_protocols(&websocket_key)
}

/// Writes every feed frame until the console goes away; it sends nothing
/// but pongs and its close. A console that fell behind is told to reload.
async fn serve_feed<S>(
    socket: WebSocketStream<S>,
    mut feed: tokio::sync::broadcast::Receiver<tertulia_actors::model::protocol::Frame>,
    ping_every: Duration,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = socket.split();
    let mut ping = tokio::time::interval(ping_every);
    ping.tick().await;
    loop {
        let sent = tokio::select! {
            frame = feed.recv() => match frame {
                Ok(frame) => match Utf8Bytes::try_from(frame.bytes().clone()) {
                    Ok(text) => sink.send(Message::Text(text)).await,
                    Err(_) => continue,
                },
                Err(RecvError::Lagged(missed)) => {
                    let frame = ServerFrame::error(
                        "feed_lagged",
                        format!("{missed} changes were missed; reload the list"),
                    );
                    sink.send(Message::Text(frame.encode().as_str().into())).await
                }
                Err(RecvError::Closed) => return,
            },
            read = stream.next() => match read {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => Ok(()),
            },
            _ = ping.tick() => sink.send(Message::Ping(Default::default())).await,
        };
        if sent.is_err() {
            return;
        }
    }
}
