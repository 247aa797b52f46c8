//! The frontend session API of the seed "Chat API – Documentación para el
//! Frontend": create, list, history, context, tickets and deletion of
//! sessions. Filters declare the shape; handlers call the runtime and shape
//! its answer as JSON.

use std::collections::HashMap;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tertulia_actors::model::protocol::WireMessage;
use tertulia_actors::model::{Scope, StoredMessage};
use warp::Filter;
use warp::filters::BoxedFilter;

use super::views::SessionView;
use crate::app::AppState;
use crate::auth::{Creator, caller, session_creator};
use crate::http::error::ApiError;
use crate::http::{allow_origin, ok, optional_body, parse_limit, parse_object, parse_session};

/// The default page size of `GET /chat/sessions/{id}/history`, and its maximum.
const DEFAULT_HISTORY: usize = 500;
const MAX_HISTORY: usize = 5000;
/// The default page size of `GET /chat/sessions`.
const DEFAULT_SESSIONS: usize = 100;

/// The session routes.
pub fn routes(app: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let max_body = app.config.server.max_body_bytes;
    let api_key = caller(app.runtime.clone(), app.limiter.clone());
    let with_app = app.filter();

    // POST /chat/sessions
    let create = warp::path!("chat" / "sessions")
        .and(warp::post())
        .and(with_app.clone())
        .and(session_creator(app.runtime.clone(), app.limiter.clone()))
        .and(warp::header::optional::<String>("host"))
        .and(optional_body(max_body))
        .then(create_session);

    // GET /chat/sessions
    let list = warp::path!("chat" / "sessions")
        .and(warp::get())
        .and(with_app.clone())
        .and(api_key.clone())
        .and(warp::query::<HashMap<String, String>>())
        .then(list_sessions)
        .map(ok);

    // GET /chat/sessions/{id}/history
    let history = warp::path!("chat" / "sessions" / String / "history")
        .and(warp::get())
        .and(with_app.clone())
        .and(api_key.clone())
        .and(warp::query::<HashMap<String, String>>())
        .then(session_history)
        .map(ok);

    // POST /chat/sessions/{id}/context
    let context = warp::path!("chat" / "sessions" / String / "context")
        .and(warp::post())
        .and(with_app.clone())
        .and(api_key.clone())
        .and(warp::header::optional::<String>("if-match"))
        .and(crate::http::body(max_body))
        .then(update_context)
        .map(ok);

    // POST /chat/sessions/{id}/ticket
    let ticket = warp::path!("chat" / "sessions" / String / "ticket")
        .and(warp::post())
        .and(with_app.clone())
        .and(api_key.clone())
        .and(warp::header::optional::<String>("host"))
        .then(new_ticket)
        .map(ok);

    // DELETE /chat/sessions/{id}
    let delete = warp::path!("chat" / "sessions" / String)
        .and(warp::delete())
        .and(with_app.clone())
        .and(api_key)
        .then(delete_session)
        .map(ok);

    create
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
        .boxed()
}

/// POST /chat/sessions: body optional, `{"context": {...}}`. A widget's
/// page (its origin checked against the tenant's list) may read the answer.
async fn create_session(
    app: AppState,
    creator: Creator,
    host: Option<String>,
    body: Bytes,
) -> warp::reply::Response {
    let origin = creator.widget_origin.clone();
    let reply = ok(create(app, creator, host, body).await);
    allow_origin(reply, origin.as_deref())
}

async fn create(
    app: AppState,
    creator: Creator,
    host: Option<String>,
    body: Bytes,
) -> Result<impl Serialize, ApiError> {
    let Creator {
        scope,
        widget_origin,
    } = creator;
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
    let (url, expires) = app.websocket_url(host, &scope, record.id, widget_origin.is_some());
    Ok(json!({
        "session_id": record.id,
        "status": "created",
        "websocket_url": url,
        "websocket_url_expires_at": expires,
        "created_at": record.created_at,
    }))
}

/// GET /chat/sessions?limit=N
async fn list_sessions(
    app: AppState,
    scope: Scope,
    query: HashMap<String, String>,
) -> Result<Value, ApiError> {
    let limit = parse_limit(&query, DEFAULT_SESSIONS, tertulia_actors::runtime::MAX_LIST)?;
    let detailed = match query.get("detail").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::BadRequest("`detail` is true or false".into())),
    };
    // The seed's shape: the ids of the active conversations. `detail=true`
    // lists every conversation as an object.
    let status = (!detailed).then_some("active");
    let records = app.runtime.list_sessions(&scope, status, limit).await?;
    let count = records.len();
    let sessions = match detailed {
        true => json!(
            records
                .into_iter()
                .map(SessionView::from)
                .collect::<Vec<_>>()
        ),
        false => json!(records.iter().map(|record| record.id).collect::<Vec<_>>()),
    };
    Ok(json!({"count": count, "sessions": sessions}))
}

/// GET /chat/sessions/{id}/history?limit=N (the newest N, oldest first)
async fn session_history(
    session: String,
    app: AppState,
    scope: Scope,
    query: HashMap<String, String>,
) -> Result<impl Serialize, ApiError> {
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

/// POST /chat/sessions/{id}/context: the body's keys are merged into the
/// context. With `If-Match: <version>` only if the context is still at that
/// version (412 `stale_context` with `current_version` otherwise).
async fn update_context(
    session: String,
    app: AppState,
    scope: Scope,
    if_match: Option<String>,
    body: Bytes,
) -> Result<impl Serialize, ApiError> {
    let session = parse_session(&session)?;
    let if_match = if_match.as_deref().map(parse_version).transpose()?;
    let patch = parse_object(&body, "the context")?;
    let (context, version) = app
        .runtime
        .update_context_if(&scope, session, patch, if_match)
        .await?;
    Ok(
        json!({"status": "updated", "session_id": session, "context": context,
        "context_version": version}),
    )
}

/// An `If-Match` version: a number, bare or quoted as an entity tag.
fn parse_version(header: &str) -> Result<u64, ApiError> {
    let text = header.trim().trim_start_matches("W/").trim_matches('"');
    text.parse().map_err(|_| {
        ApiError::BadRequest(
            "`If-Match` must be the context version you last saw, such as 3".into(),
        )
    })
}

/// POST /chat/sessions/{id}/ticket: a fresh `websocket_url` once the old one expired.
async fn new_ticket(
    session: String,
    app: AppState,
    scope: Scope,
    host: Option<String>,
) -> Result<impl Serialize, ApiError> {
    let session = parse_session(&session)?;
    app.runtime.session(&scope, session).await?;
    let (url, expires) = app.websocket_url(host, &scope, session, false);
    Ok(json!({"session_id": session, "websocket_url": url, "websocket_url_expires_at": expires}))
}

/// DELETE /chat/sessions/{id}: closes its sockets (close code 4004) and deletes it.
async fn delete_session(
    session: String,
    app: AppState,
    scope: Scope,
) -> Result<impl Serialize, ApiError> {
    let session = parse_session(&session)?;
    app.runtime.delete_session(&scope, session).await?;
    Ok(json!({"status": "deleted", "session_id": session}))
}
