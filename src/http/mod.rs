//! HTTP plumbing every surface shares: what a request carries (the client's
//! address and the upgrade handle the accept loop puts in it), body and
//! parameter parsing with errors that name the field, and the one way a
//! handler's result becomes a reply.
//!
//! Architecture Invariant: imports nothing of this crate but `http/error.rs`;
//! knows nothing of the runtime's actors.

pub mod deadline;
pub mod error;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hyper::upgrade::OnUpgrade;
use serde::Serialize;
use serde_json::{Map, Value};
use tertulia_actors::model::SessionId;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use warp::http::{Response, StatusCode, header};
use warp::{Filter, Reply};

use self::error::ApiError;

/// The client's address: the socket's peer, or what a trusted proxy forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// hyper's upgrade handle for this request, put there by the server loop.
/// (warp's `ext` filters need `Clone`; `OnUpgrade` is not.)
#[derive(Clone)]
pub struct UpgradeSlot(Arc<Mutex<Option<OnUpgrade>>>);

impl UpgradeSlot {
    pub fn new(upgrade: OnUpgrade) -> Self {
        UpgradeSlot(Arc::new(Mutex::new(Some(upgrade))))
    }

    pub(crate) fn take(&self) -> Option<OnUpgrade> {
        self.0.lock().ok()?.take()
    }
}

/// The 101 answer to a WebSocket upgrade with this `Sec-WebSocket-Key`.
pub(crate) fn switching_protocols(websocket_key: &str) -> warp::reply::Response {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(websocket_key.as_bytes()),
        )
        .body(Default::default())
        .expect("a static 101 response is valid")
}

tokio::task_local! {
    /// The `X-Request-Id` of the request being served, set by the accept
    /// loop around each request's handling.
    static REQUEST_ID: String;
}

/// Runs `serving` as the handling of the request `id`.
pub async fn serving_request<F: std::future::Future>(id: String, serving: F) -> F::Output {
    REQUEST_ID.scope(id, serving).await
}

/// The id of the request this task is serving, if it is serving one: what
/// a handler stamps on the messages the request stores.
pub fn request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// The answer to a CORS preflight for a route that takes `methods`.
pub fn preflight(methods: &'static str, origin: Option<String>) -> warp::reply::Response {
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
    absent.or(body(max)).unify()
}

/// A request body of at most `max` bytes, whether its length is declared
/// (`Content-Length`) or not (`Transfer-Encoding: chunked`, as some HTTP
/// clients and n8n's HTTP node send it): 413 as soon as it is known to be
/// over, without reading the rest.
pub fn body(max: u64) -> impl Filter<Extract = (Bytes,), Error = warp::Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .and_then(move |declared: Option<u64>, stream| async move {
            if declared.is_some_and(|length| length > max) {
                return Err(warp::reject::custom(ApiError::BodyTooLarge { limit: max }));
            }
            read_bounded(stream, max)
                .await
                .map_err(warp::reject::custom)
        })
}

async fn read_bounded<S, B>(stream: S, max: u64) -> Result<Bytes, ApiError>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    use futures_util::StreamExt;
    let mut body = bytes::BytesMut::new();
    futures_util::pin_mut!(stream);
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk.map_err(|error| match deadline::timed_out(&error) {
            true => ApiError::BodyTimeout,
            false => ApiError::UnreadableBody,
        })?;
        if (body.len() + chunk.remaining()) as u64 > max {
            return Err(ApiError::BodyTooLarge { limit: max });
        }
        while chunk.has_remaining() {
            let piece = chunk.chunk();
            let taken = piece.len();
            body.extend_from_slice(piece);
            chunk.advance(taken);
        }
    }
    Ok(body.freeze())
}

// Handlers return `Result<T, ApiError>` and write no reply themselves; the
// route maps the result with one of these, so a success status and the
// error mapping are each written once.

/// The reply to a handler's result: its value as JSON with `status`, or the
/// error's status and JSON body.
fn reply_with<T: Serialize>(
    status: StatusCode,
    result: Result<T, ApiError>,
) -> warp::reply::Response {
    match result {
        Ok(body) => warp::reply::with_status(warp::reply::json(&body), status).into_response(),
        Err(error) => error.into_response(),
    }
}

/// `200 OK` with the handler's value.
pub fn ok<T: Serialize>(result: Result<T, ApiError>) -> warp::reply::Response {
    reply_with(StatusCode::OK, result)
}

/// `201 Created` with the handler's value.
pub fn created<T: Serialize>(result: Result<T, ApiError>) -> warp::reply::Response {
    reply_with(StatusCode::CREATED, result)
}

/// `202 Accepted`: the work is queued (a webhook delivery).
pub fn accepted<T: Serialize>(result: Result<T, ApiError>) -> warp::reply::Response {
    reply_with(StatusCode::ACCEPTED, result)
}

/// `201` for something new, `200` for what was there already (an open
/// handoff request asked for again).
pub fn created_or_ok<T: Serialize>(result: Result<(T, bool), ApiError>) -> warp::reply::Response {
    match result {
        Ok((body, true)) => created(Ok(body)),
        Ok((body, false)) => ok(Ok(body)),
        Err(error) => error.into_response(),
    }
}

/// Lets the page at `origin` (already checked against the tenant's allowed
/// origins) read this reply.
pub fn allow_origin(
    mut response: warp::reply::Response,
    origin: Option<&str>,
) -> warp::reply::Response {
    if let Some(origin) = origin.and_then(|origin| origin.parse().ok()) {
        response
            .headers_mut()
            .insert("access-control-allow-origin", origin);
        response
            .headers_mut()
            .insert("vary", header::HeaderValue::from_static("Origin"));
    }
    response
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

/// Refuses a query with a parameter outside `allowed`, naming it.
pub fn only_params(query: &HashMap<String, String>, allowed: &[&str]) -> Result<(), ApiError> {
    match query.keys().find(|name| !allowed.contains(&name.as_str())) {
        Some(name) => Err(ApiError::BadRequest(format!(
            "unknown parameter `{name}`: send {}",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

/// Refuses a body with a field outside `allowed`, naming it.
pub fn only_fields(body: &Map<String, Value>, allowed: &[&str]) -> Result<(), ApiError> {
    match body.keys().find(|field| !allowed.contains(&field.as_str())) {
        Some(field) => Err(ApiError::BadRequest(format!(
            "unknown field `{field}`: send {}",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}
