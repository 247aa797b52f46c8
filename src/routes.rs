//! The HTTP surface: the frontend session API of the seed "Chat API –
//! Documentación para el Frontend", health checks and the chat page. Filters
//! declare the shape; handlers call the runtime and shape its answer as JSON.
//! Nothing here touches the database.

use std::collections::HashMap;
use std::convert::Infallible;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tertulia_actors::domain::{Scope, SessionId, SessionRecord, StoredMessage};
use tertulia_actors::protocol::WireMessage;
use warp::http::StatusCode;
use warp::{Filter, Reply};

use crate::AppState;
use crate::auth::{Creator, caller, session_creator};
use crate::error::{ApiError, handle_rejection};

/// The default page size of `GET /chat/sessions/{id}/history`, and its maximum.
const DEFAULT_HISTORY: usize = 500;
const MAX_HISTORY: usize = 5000;
/// The default page size of `GET /chat/sessions`.
const DEFAULT_SESSIONS: usize = 100;

/// Every route, with rejections turned into JSON errors.
pub fn routes(
    app: AppState,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
    let max_body = app.config.server.max_body_bytes;
    let api_key = caller(app.runtime.clone(), app.limiter.clone());
    let with_app = {
        let app = app.clone();
        warp::any().map(move || app.clone())
    };

    // GET /healthz
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| warp::reply::json(&json!({"status": "ok"})).into_response());

    // GET /readyz
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_app.clone())
        .then(|app: AppState| async move {
            if app.runtime.ready().await {
                warp::reply::json(&json!({"status": "ready"})).into_response()
            } else {
                crate::error::json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_ready",
                    "not ready".into(),
                )
            }
        });

    // POST /chat/sessions
    let create = warp::path!("chat" / "sessions")
        .and(warp::post())
        .and(with_app.clone())
        .and(session_creator(app.runtime.clone(), app.limiter.clone()))
        .and(warp::header::optional::<String>("host"))
        .and(optional_body(max_body))
        .then(create_session);

    // OPTIONS on what a widget calls from another origin: the CORS preflight.
    // It carries no key, so it cannot be checked here; the request that
    // follows is (its Origin against the tenant's allowed origins).
    let preflight = warp::path!("chat" / "sessions")
        .and(warp::options())
        .map(|| "POST")
        .or(warp::path!("api" / "webchat" / "messages")
            .and(warp::options())
            .map(|| "POST"))
        .unify()
        .or(warp::path!("api" / "webchat" / "consent")
            .and(warp::options())
            .map(|| "POST"))
        .unify()
        .or(warp::path!("api" / "webchat" / "handoff")
            .and(warp::options())
            .map(|| "POST"))
        .unify()
        .or(warp::path!("api" / "webchat" / "history" / String)
            .and(warp::options())
            .map(|_| "GET"))
        .unify()
        .and(warp::header::optional::<String>("origin"))
        .map(preflight);

    // GET /chat/sessions
    let list = warp::path!("chat" / "sessions")
        .and(warp::get())
        .and(with_app.clone())
        .and(api_key.clone())
        .and(warp::query::<HashMap<String, String>>())
        .then(list_sessions);

    // GET /chat/sessions/{id}/history
    let history = warp::path!("chat" / "sessions" / String / "history")
        .and(warp::get())
        .and(with_app.clone())
        .and(api_key.clone())
        .and(warp::query::<HashMap<String, String>>())
        .then(session_history);

    // POST /chat/sessions/{id}/context
    let context = warp::path!("chat" / "sessions" / String / "context")
        .and(warp::post())
        .and(with_app.clone())
        .and(api_key.clone())
        .and(warp::body::content_length_limit(max_body))
        .and(warp::body::bytes())
        .then(update_context);

    // POST /chat/sessions/{id}/ticket
    let ticket = warp::path!("chat" / "sessions" / String / "ticket")
        .and(warp::post())
        .and(with_app.clone())
        .and(api_key.clone())
        .and(warp::header::optional::<String>("host"))
        .then(new_ticket);

    // DELETE /chat/sessions/{id}
    let delete = warp::path!("chat" / "sessions" / String)
        .and(warp::delete())
        .and(with_app.clone())
        .and(api_key)
        .then(delete_session);

    healthz
        .or(readyz)
        .unify()
        .or(crate::page::routes(app.clone()))
        .unify()
        .or(create)
        .unify()
        .or(preflight)
        .unify()
        .or(list)
        .unify()
        .or(history)
        .unify()
        .or(context)
        .unify()
        .or(ticket)
        .unify()
        .or(delete)
        .unify()
        // Boxed groups keep warp's nested filter types small: unboxed, this
        // one chain took rustc five minutes to compile.
        .boxed()
        .or(crate::admin::routes(app.clone()))
        .unify()
        .or(crate::conversations::routes(app.clone()))
        .unify()
        .or(crate::webchat::routes(app.clone()))
        .unify()
        .or(crate::console::routes(app.clone()))
        .unify()
        .or(crate::ws::webchat_route(app.clone()))
        .unify()
        .or(crate::ws::route(app))
        .unify()
        .recover(handle_rejection)
        .unify()
}

/// The answer to a CORS preflight for a route that takes `methods`.
fn preflight(methods: &'static str, origin: Option<String>) -> warp::reply::Response {
    let mut response = warp::http::Response::builder()
        .status(StatusCode::NO_CONTENT)
        .header("access-control-allow-methods", methods)
        .header("access-control-allow-headers", "x-api-key, content-type")
        .header("access-control-max-age", "600")
        .header("vary", "Origin");
    if let Some(origin) = origin {
        response = response.header("access-control-allow-origin", origin);
    }
    response
        .body(Default::default())
        .expect("a static preflight response is valid")
}

/// A body of at most `max` bytes, or none at all: a request with neither
/// `Content-Length` nor `Transfer-Encoding` has an empty body.
pub fn optional_body(max: u64) -> impl Filter<Extract = (Bytes,), Error = warp::Rejection> + Clone {
    let absent = warp::header::optional::<String>("content-length")
        .and(warp::header::optional::<String>("transfer-encoding"))
        .and_then(
            |length: Option<String>, encoding: Option<String>| async move {
                if length.is_none() && encoding.is_none() {
                    Ok(Bytes::new())
                } else {
                    Err(warp::reject::not_found())
                }
            },
        );
    absent
        .or(warp::body::content_length_limit(max).and(warp::body::bytes()))
        .unify()
}

/// A handler's answer: a JSON body, or the error's JSON body and status.
pub fn respond<T: Serialize>(
    status: StatusCode,
    result: Result<T, ApiError>,
) -> warp::reply::Response {
    match result {
        Ok(body) => warp::reply::with_status(warp::reply::json(&body), status).into_response(),
        Err(error) => error.into_response(),
    }
}

/// `201` for something new, `200` for what was there already (an open
/// handoff request asked for again).
pub fn created_or_ok<T: Serialize>(result: Result<(T, bool), ApiError>) -> warp::reply::Response {
    match result {
        Ok((body, true)) => respond(StatusCode::CREATED, Ok(body)),
        Ok((body, false)) => respond(StatusCode::OK, Ok(body)),
        Err(error) => error.to_response(),
    }
}

/// Session ids that do not parse are reported like unknown ones.
pub fn parse_session(text: &str) -> Result<SessionId, ApiError> {
    text.parse().map_err(|_| ApiError::UnknownSession)
}

pub fn parse_object(body: &Bytes, what: &str) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(ApiError::BadRequest(format!(
            "{what} must be a JSON object"
        ))),
        Err(error) => Err(ApiError::BadRequest(format!("invalid JSON body: {error}"))),
    }
}

/// A required text field of 1 to `max` bytes that is not only spaces; the
/// error names the field.
pub fn required_text(
    body: &Map<String, Value>,
    field: &str,
    max: usize,
) -> Result<String, ApiError> {
    match body.get(field).and_then(Value::as_str) {
        Some(text) if !text.trim().is_empty() && text.len() <= max => Ok(text.to_owned()),
        _ => Err(ApiError::BadRequest(format!(
            "`{field}` is required: text of 1 to {max} bytes"
        ))),
    }
}

pub fn parse_limit(
    query: &HashMap<String, String>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match query.get("limit") {
        None => Ok(default),
        Some(text) => match text.parse::<usize>() {
            Ok(limit) if (1..=max).contains(&limit) => Ok(limit),
            _ => Err(ApiError::BadRequest(format!(
                "`limit` must be a whole number from 1 to {max}"
            ))),
        },
    }
}

fn websocket_url(
    app: &AppState,
    host: Option<String>,
    scope: &Scope,
    session: SessionId,
    widget: bool,
) -> (String, u64) {
    let base = socket_base(app, host);
    let (ticket, expires) = app.tickets.issue(scope, session, widget);
    (format!("{base}/chat/ws/{session}?ticket={ticket}"), expires)
}

/// `ws://host` (or the configured public URL, as `wss://`) that sockets are opened on.
pub fn socket_base(app: &AppState, host: Option<String>) -> String {
    if app.config.server.public_url.is_empty() {
        format!(
            "ws://{}",
            host.unwrap_or_else(|| app.local_addr.to_string())
        )
    } else {
        app.config
            .server
            .public_url
            .trim_end_matches('/')
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1)
    }
}

#[derive(Serialize)]
struct SessionView {
    session_id: SessionId,
    status: String,
    context: Map<String, Value>,
    created_at: String,
    updated_at: String,
    message_count: u64,
    last_seq: u64,
}

impl From<SessionRecord> for SessionView {
    fn from(record: SessionRecord) -> Self {
        SessionView {
            session_id: record.id,
            status: record.status,
            context: record.context,
            created_at: record.created_at,
            updated_at: record.updated_at,
            message_count: record.message_count,
            last_seq: record.last_seq,
        }
    }
}

/// POST /chat/sessions: body optional, `{"context": {...}}`.
async fn create_session(
    app: AppState,
    creator: Creator,
    host: Option<String>,
    body: Bytes,
) -> warp::reply::Response {
    let Creator {
        scope,
        widget_origin,
    } = creator;
    let result = async {
        let context = if body.iter().all(u8::is_ascii_whitespace) {
            Map::new()
        } else {
            match parse_object(&body, "the body")?.remove("context") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(context)) => context,
                Some(_) => {
                    return Err(ApiError::BadRequest(
                        "`context` must be a JSON object".into(),
                    ));
                }
            }
        };
        let record = app.runtime.create_session(&scope, context, None).await?;
        let (url, expires) = websocket_url(&app, host, &scope, record.id, widget_origin.is_some());
        Ok(json!({
            "session_id": record.id,
            "status": "created",
            "websocket_url": url,
            "websocket_url_expires_at": expires,
            "created_at": record.created_at,
        }))
    }
    .await;
    let mut response = respond(StatusCode::OK, result);
    if let Some(origin) = widget_origin
        && let Ok(origin) = origin.parse()
    {
        // The origin was checked against the tenant's list: let its page read this.
        response
            .headers_mut()
            .insert("access-control-allow-origin", origin);
        response
            .headers_mut()
            .insert("vary", "Origin".parse().expect("static header"));
    }
    response
}

/// GET /chat/sessions?limit=N
async fn list_sessions(
    app: AppState,
    scope: Scope,
    query: HashMap<String, String>,
) -> warp::reply::Response {
    let result = async {
        let limit = parse_limit(&query, DEFAULT_SESSIONS, tertulia_actors::runtime::MAX_LIST)?;
        let sessions: Vec<SessionView> = app
            .runtime
            .list_sessions(&scope, None, limit)
            .await?
            .into_iter()
            .map(SessionView::from)
            .collect();
        Ok(json!({"count": sessions.len(), "sessions": sessions}))
    }
    .await;
    respond(StatusCode::OK, result)
}

/// GET /chat/sessions/{id}/history?limit=N (the newest N, oldest first)
async fn session_history(
    session: String,
    app: AppState,
    scope: Scope,
    query: HashMap<String, String>,
) -> warp::reply::Response {
    let result = async {
        let session = parse_session(&session)?;
        let limit = parse_limit(&query, DEFAULT_HISTORY, MAX_HISTORY)?;
        let history: Vec<WireMessage> = app
            .runtime
            .history(&scope, session, limit)
            .await?
            .iter()
            .map(|message: &StoredMessage| WireMessage::from(message))
            .collect();
        Ok(json!({"session_id": session, "count": history.len(), "history": history}))
    }
    .await;
    respond(StatusCode::OK, result)
}

/// POST /chat/sessions/{id}/context: the body's keys are merged into the context.
async fn update_context(
    session: String,
    app: AppState,
    scope: Scope,
    body: Bytes,
) -> warp::reply::Response {
    let result = async {
        let session = parse_session(&session)?;
        let patch = parse_object(&body, "the context")?;
        let context = app.runtime.update_context(&scope, session, patch).await?;
        Ok(json!({"status": "updated", "session_id": session, "context": context}))
    }
    .await;
    respond(StatusCode::OK, result)
}

/// POST /chat/sessions/{id}/ticket: a fresh `websocket_url` once the old one expired.
async fn new_ticket(
    session: String,
    app: AppState,
    scope: Scope,
    host: Option<String>,
) -> warp::reply::Response {
    let result = async {
        let session = parse_session(&session)?;
        app.runtime.session(&scope, session).await?;
        let (url, expires) = websocket_url(&app, host, &scope, session, false);
        Ok(json!({"session_id": session, "websocket_url": url, "websocket_url_expires_at": expires}))
    }
    .await;
    respond(StatusCode::OK, result)
}

/// DELETE /chat/sessions/{id}: closes its sockets (close code 4004) and deletes it.
async fn delete_session(session: String, app: AppState, scope: Scope) -> warp::reply::Response {
    let result = async {
        let session = parse_session(&session)?;
        app.runtime.delete_session(&scope, session).await?;
        Ok(json!({"status": "deleted", "session_id": session}))
    }
    .await;
    respond(StatusCode::OK, result)
}
