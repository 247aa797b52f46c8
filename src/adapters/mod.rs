//! The protocols of the client libraries teams already use, each a thin
//! translation over the same `Runtime` calls as the seed's own surfaces: the
//! Vercel AI SDK's UI message stream (`ai_sdk.rs`), n8n's chat widget
//! (`n8n_chat.rs`) and AG-UI (`ag_ui.rs`). A turn is posted and followed by
//! `turn.rs`; `target.rs` says which conversation a protocol's id names.
//! None of them stores anything itself: one log per conversation, whichever
//! protocol wrote to it.
//!
//! Architecture Invariant: imports `config`, `http`, `auth` and `app` of this
//! crate only; reaches data only through `Runtime`.

pub mod ag_ui;
pub mod ai_sdk;
pub mod n8n_chat;
pub mod target;
pub mod turn;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;
use warp::Filter;
use warp::Reply;
use warp::filters::BoxedFilter;

use crate::app::AppState;
use crate::http::error::ApiError;

/// Every adapter's routes.
pub fn routes(app: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    ai_sdk::routes(app.clone())
        .or(n8n_chat::routes(app.clone()))
        .unify()
        .or(ag_ui::routes(app))
        .unify()
        .boxed()
}

/// How long an adapter follows one answer before giving up on it (the
/// answer itself goes on and is stored; only this stream ends).
pub fn answer_timeout(app: &AppState) -> Duration {
    Duration::from_millis(app.config.webchat.reply_timeout_ms)
}

/// A 400 whose text says what is wrong with the request.
pub fn bad(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(message.into())
}

/// The text of a message's content parts: its `text` parts, in order (the
/// AI SDK's UI message parts and AG-UI's content array share the shape).
pub fn text_parts(parts: &[Value]) -> String {
    parts
        .iter()
        .filter(|part| part.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|part| part.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One server-sent event whose data is `data` as JSON (AI SDK, AG-UI).
pub fn sse(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

/// A streamed response whose body `produce` writes, piece by piece, into the
/// sender it is given. It runs in its own task: a client that goes away
/// drops the receiver, the next send fails and `produce` stops there.
pub fn streamed<F, Fut>(content_type: &'static str, produce: F) -> warp::reply::Response
where
    F: FnOnce(mpsc::Sender<Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, mut receiver) = mpsc::channel::<Bytes>(64);
    tokio::spawn(produce(sender));
    let body = futures_util::stream::poll_fn(move |cx| {
        receiver
            .poll_recv(cx)
            .map(|piece| piece.map(Ok::<_, Infallible>))
    });
    let reply = warp::reply::stream(body);
    let reply = warp::reply::with_header(reply, "content-type", content_type);
    let reply = warp::reply::with_header(reply, "cache-control", "no-cache");
    // Proxies such as nginx would otherwise hold the stream back.
    warp::reply::with_header(reply, "x-accel-buffering", "no").into_response()
}
