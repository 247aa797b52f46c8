//! A conversation as a read-only Durable Stream in JSON mode:
//! `/ds/{tenant}/v1/conversation/{id}`. `GET` reads (catch-up, long-poll,
//! SSE) and `HEAD` tells the tail; there is no write (the conversation is
//! written through its own API), so other methods get 405. The caller is
//! who may read the conversation over REST: the tenant's API key, or with
//! a client token, that client's conversations only. The items and offsets
//! are `model/conversation_stream.rs`'s; the runtime's tail follows the
//! session.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use tertulia_actors::Runtime;
use tertulia_actors::model::conversation_stream::TailFrom;
use tertulia_actors::model::{Scope, SessionId};
use tertulia_actors::runtime::{ConversationTail, TailBatch};
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, Method, StatusCode};

use super::events::{control_event, cursor, data_event};
use super::{Call, preflight, secured, status};
use crate::app::AppState;
use crate::auth::limits::Limiter;
use crate::http::ClientIp;
use crate::http::error::ApiError;

/// How long a long-poll waits for something new before answering 204.
const LONG_POLL: Duration = Duration::from_secs(10);
/// How long an SSE response stays open.
const SSE_LIFETIME: Duration = Duration::from_secs(60);
/// The only methods a conversation's stream answers.
const METHODS: &str = "GET, HEAD, OPTIONS";

pub fn routes(app: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let rest = warp::method()
        .and(warp::header::headers_cloned())
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::ext::optional::<ClientIp>())
        .and(app.filter())
        .boxed();
    // GET /ds/{tenant}/v1/conversation/{id}: catch-up, long-poll, SSE
    let get = warp::path!("ds" / String / "v1" / "conversation" / String)
        .and(warp::get())
        .and(rest.clone())
        .then(handle);
    // HEAD: where the conversation's stream ends now
    let head = warp::path!("ds" / String / "v1" / "conversation" / String)
        .and(warp::head())
        .and(rest.clone())
        .then(handle);
    // OPTIONS: CORS preflight
    let options = warp::path!("ds" / String / "v1" / "conversation" / String)
        .and(warp::options())
        .and(rest)
        .then(handle);
    get.or(head).unify().or(options).unify().boxed()
}

async fn handle(
    tenant: String,
    id: String,
    method: Method,
    headers: HeaderMap,
    query: HashMap<String, String>,
    ip: Option<ClientIp>,
    app: AppState,
) -> warp::reply::Response {
    let call = Call {
        path: id,
        base: String::new(),
        method,
        headers,
        query,
        body: Bytes::new(),
    };
    let reply = match call.method == Method::OPTIONS {
        true => Ok(preflight(&call, METHODS)),
        false => serve(&app, &tenant, ip, &call).await,
    };
    secured(reply.unwrap_or_else(warp::Reply::into_response))
}

async fn serve(
    app: &AppState,
    tenant: &str,
    ip: Option<ClientIp>,
    call: &Call,
) -> Result<warp::reply::Response, ApiError> {
    let scope = access(&app.runtime, &app.limiter, tenant, call, ip)?;
    let session = crate::http::parse_session(&call.path)?;
    let runtime = &app.runtime;
    if call.method == Method::HEAD {
        let tail = runtime
            .tail_conversation(&scope, session, TailFrom::Now)
            .await?;
        return Ok(status(StatusCode::OK)
            .header("content-type", "application/json")
            .header("stream-next-offset", tail.offset())
            .header("cache-control", "no-store")
            .body(Default::default())
            .expect("a head answer is valid"));
    }
    let offset = call.query.get("offset").map(String::as_str);
    let from = TailFrom::parse(offset).ok_or_else(|| {
        ApiError::BadRequest("`offset` is not an offset of this conversation".into())
    })?;
    let live = call.query.get("live").map(String::as_str);
    if live.is_some() && offset.is_none() {
        return Err(ApiError::BadRequest("a live read needs an `offset`".into()));
    }
    if !matches!(live, None | Some("long-poll" | "sse")) {
        return Err(ApiError::BadRequest("`live` is long-poll or sse".into()));
    }
    let mut tail = runtime.tail_conversation(&scope, session, from).await?;
    match live {
        None => catch_up(session, offset, &mut tail, call).await,
        Some("long-poll") => long_poll(&mut tail, call).await,
        _ => Ok(sse(tail, call)),
    }
}

/// Who may read: whoever may read the conversation over REST. A key of
/// another tenant than the URL's gets what an unknown conversation gets.
fn access(
    runtime: &Runtime,
    limiter: &Limiter,
    tenant: &str,
    call: &Call,
    ip: Option<ClientIp>,
) -> Result<Scope, ApiError> {
    let (key, authorization) = call.credentials(runtime);
    let scope = crate::auth::resolve(runtime, key.as_deref(), authorization.as_deref())?;
    if scope.tenant.0 != tenant {
        return Err(ApiError::UnknownSession);
    }
    limiter.check(&scope.tenant, key.as_deref(), ip.map(|ip| ip.0))?;
    Ok(scope)
}

async fn catch_up(
    session: SessionId,
    offset: Option<&str>,
    tail: &mut ConversationTail,
    call: &Call,
) -> Result<warp::reply::Response, ApiError> {
    // A parsed offset is written back the same, so the one given names it.
    let start = offset.unwrap_or("-1");
    let batch = tail.catch_up().await?;
    let now = offset == Some("now");
    // What lies between two offsets never changes: they name it.
    let etag = format!("\"{session}:{start}:{}\"", batch.next);
    if !now && call.header("if-none-match") == Some(etag.as_str()) {
        return Ok(status(StatusCode::NOT_MODIFIED)
            .header("etag", etag)
            .body(Default::default())
            .expect("a 304 is valid"));
    }
    let builder = with_batch(status(StatusCode::OK), &batch).header("cache-control", "no-store");
    let builder = match now {
        true => builder,
        false => builder.header("etag", etag),
    };
    Ok(builder
        .body(body_of(&batch).into())
        .expect("a read answer is valid"))
}

async fn long_poll(
    tail: &mut ConversationTail,
    call: &Call,
) -> Result<warp::reply::Response, ApiError> {
    let cursor = cursor(call.query.get("cursor")).to_string();
    let deadline = tokio::time::Instant::now() + LONG_POLL;
    let builder = match tail.next(deadline).await? {
        Some(batch) => with_batch(status(StatusCode::OK), &batch)
            .header("stream-cursor", cursor)
            .header("cache-control", "no-store")
            .body(body_of(&batch).into()),
        None => status(StatusCode::NO_CONTENT)
            .header("stream-next-offset", tail.offset())
            .header("stream-up-to-date", "true")
            .header("stream-cursor", cursor)
            .header("cache-control", "no-store")
            .body(Default::default()),
    };
    Ok(builder.expect("a long-poll answer is valid"))
}

/// What there is, then each change as it happens, for a minute (clients
/// reconnect from the last `streamNextOffset`) or until the conversation
/// goes away.
fn sse(mut tail: ConversationTail, call: &Call) -> warp::reply::Response {
    let mut cursor_seen = call.query.get("cursor").cloned();
    crate::adapters::streamed("text/event-stream", move |sender| async move {
        let deadline = tokio::time::Instant::now() + SSE_LIFETIME;
        let mut next = Some(tail.catch_up().await);
        loop {
            let batch = match next.take() {
                Some(batch) => batch,
                None => tokio::select! {
                    batch = tail.next(deadline) => match batch.transpose() {
                        Some(batch) => batch,
                        None => return,
                    },
                    () = sender.closed() => return,
                },
            };
            let Ok(batch) = batch else { return };
            let cursor = cursor(cursor_seen.as_ref());
            cursor_seen = Some(cursor.to_string());
            // A batch and its control event go out as one write, so a reader
            // never sees data without the offset that follows it.
            let mut bytes = Vec::new();
            if !batch.items.is_empty() {
                bytes.extend_from_slice(&data_event(&array(&batch)));
            }
            bytes.extend_from_slice(&control_event(
                &batch.next,
                (batch.up_to_date, false),
                cursor,
            ));
            if sender.send(Bytes::from(bytes)).await.is_err() || tail.ended() {
                return;
            }
        }
    })
}

fn with_batch(
    builder: warp::http::response::Builder,
    batch: &TailBatch,
) -> warp::http::response::Builder {
    let builder = builder
        .header("content-type", "application/json")
        .header("stream-next-offset", batch.next.as_str());
    match batch.up_to_date {
        true => builder.header("stream-up-to-date", "true"),
        false => builder,
    }
}

/// The batch's items as one JSON array.
fn array(batch: &TailBatch) -> String {
    format!("[{}]", batch.items.join(","))
}

fn body_of(batch: &TailBatch) -> Vec<u8> {
    array(batch).into_bytes()
}
