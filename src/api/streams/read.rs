//! `GET` (catch-up, long-poll, SSE) and `HEAD` of a stream. A catch-up
//! read answers what is stored from the offset up to about a megabyte; a
//! long-poll waits on the stream actor's tail for something new; SSE sends
//! what there is, then each append as it is acknowledged, with a `control`
//! event after each batch, and ends after a minute (clients reconnect from
//! the last `streamNextOffset`) or once a closed stream is read to its end.

use std::time::Duration;

use bytes::Bytes;
use tertulia_actors::Runtime;
use tertulia_actors::model::TenantId;
use tertulia_actors::model::stream::{ReadFrom, offset_text, parse_offset};
use tertulia_actors::runtime::{ReadBody, StreamRead};
use warp::http::StatusCode;

use super::events::{control_event, cursor, data_event};
use super::{Call, described, status};
use crate::http::error::ApiError;

/// The most bytes one catch-up read answers.
const MAX_READ_BYTES: usize = 1024 * 1024;
/// How long a long-poll waits for something new before answering 204.
const LONG_POLL: Duration = Duration::from_secs(10);
/// How long an SSE response stays open.
const SSE_LIFETIME: Duration = Duration::from_secs(60);

/// `HEAD`: the stream's type, tail and expiry, never cached.
pub async fn head(
    runtime: &Runtime,
    tenant: &TenantId,
    call: &Call,
) -> Result<warp::reply::Response, ApiError> {
    let record = runtime.stream(tenant, &call.path).await?;
    let mut builder =
        described(status(StatusCode::OK), &record).header("cache-control", "no-store");
    if let Some(ttl) = record.config.ttl_secs {
        builder = builder.header("stream-ttl", ttl);
    }
    if let Some(expires) = &record.config.expires_at {
        builder = builder.header("stream-expires-at", expires.as_str());
    }
    Ok(builder
        .body(Default::default())
        .expect("a head answer is valid"))
}

/// `GET`, in the mode `live` asks for.
pub async fn get(
    runtime: &Runtime,
    tenant: &TenantId,
    call: &Call,
) -> Result<warp::reply::Response, ApiError> {
    let offset = call.query.get("offset").map(String::as_str);
    let from = parse_offset(offset)
        .ok_or_else(|| ApiError::BadRequest("`offset` is not an offset of this stream".into()))?;
    let live = call.query.get("live").map(String::as_str);
    if live.is_some() && offset.is_none() {
        return Err(ApiError::BadRequest("a live read needs an `offset`".into()));
    }
    match live {
        None => catch_up(runtime, tenant, call, from).await,
        Some("long-poll") => long_poll(runtime, tenant, call, from).await,
        Some("sse") => sse(runtime, tenant, call, from).await,
        Some(_) => Err(ApiError::BadRequest("`live` is long-poll or sse".into())),
    }
}

async fn catch_up(
    runtime: &Runtime,
    tenant: &TenantId,
    call: &Call,
    from: ReadFrom,
) -> Result<warp::reply::Response, ApiError> {
    let read = runtime
        .read_stream(tenant, &call.path, from, MAX_READ_BYTES)
        .await?;
    let etag = format!("\"{}:{}:{}\"", read.record.stream_id, read.start, read.next);
    let now = from == ReadFrom::Now;
    if !now && call.header("if-none-match") == Some(etag.as_str()) {
        return Ok(status(StatusCode::NOT_MODIFIED)
            .header("etag", etag)
            .body(Default::default())
            .expect("a 304 is valid"));
    }
    let mut builder = read_headers(status(StatusCode::OK), &read);
    builder = match now {
        true => builder.header("cache-control", "no-store"),
        false => builder.header("etag", etag).header(
            "cache-control",
            "private, max-age=60, stale-while-revalidate=300",
        ),
    };
    Ok(builder
        .body(body_of(&read).into())
        .expect("a read answer is valid"))
}

/// The headers of an answer with data: type, next offset, and whether the
/// reader is at the end (and the stream closed there).
fn read_headers(
    builder: warp::http::response::Builder,
    read: &StreamRead,
) -> warp::http::response::Builder {
    let builder = builder
        .header("content-type", read.record.config.content_type.as_str())
        .header("stream-next-offset", offset_text(read.next));
    match (read.up_to_date(), read.record.closed) {
        (true, true) => builder
            .header("stream-up-to-date", "true")
            .header("stream-closed", "true"),
        (true, false) => builder.header("stream-up-to-date", "true"),
        _ => builder,
    }
}

/// A read's data as the stream's type has it: bytes, or a JSON array.
fn body_of(read: &StreamRead) -> Vec<u8> {
    match &read.body {
        ReadBody::Bytes(bytes) => bytes.clone(),
        ReadBody::Json(messages) => format!("[{}]", messages.join(",")).into_bytes(),
    }
}

async fn long_poll(
    runtime: &Runtime,
    tenant: &TenantId,
    call: &Call,
    from: ReadFrom,
) -> Result<warp::reply::Response, ApiError> {
    let mut tail = runtime.watch_stream(tenant, &call.path).await?;
    let start = match from {
        ReadFrom::Now => tail.borrow().tail,
        ReadFrom::Start => 0,
        ReadFrom::At(position) => position,
    };
    let cursor = cursor(call.query.get("cursor"));
    let deadline = tokio::time::Instant::now() + LONG_POLL;
    loop {
        let now = *tail.borrow_and_update();
        if now.gone {
            return Err(ApiError::from(tertulia_actors::Error::StreamNotFound(
                call.path.clone(),
            )));
        }
        if now.tail > start {
            let read = runtime
                .read_stream(tenant, &call.path, ReadFrom::At(start), MAX_READ_BYTES)
                .await?;
            let builder = read_headers(status(StatusCode::OK), &read)
                .header("stream-cursor", cursor.to_string())
                .header(
                    "cache-control",
                    "private, max-age=60, stale-while-revalidate=300",
                );
            return Ok(builder
                .body(body_of(&read).into())
                .expect("a read answer is valid"));
        }
        // A closed stream read to its end has nothing more to wait for.
        let waited = match now.closed {
            true => None,
            false => Some(tokio::time::timeout_at(deadline, tail.changed()).await),
        };
        if !matches!(waited, Some(Ok(Ok(())))) {
            let builder = status(StatusCode::NO_CONTENT)
                .header("stream-next-offset", offset_text(now.tail.max(start)))
                .header("stream-up-to-date", "true")
                .header("stream-cursor", cursor.to_string())
                .header("cache-control", "no-store");
            let builder = match now.closed {
                true => builder.header("stream-closed", "true"),
                false => builder,
            };
            return Ok(builder.body(Default::default()).expect("a 204 is valid"));
        }
    }
}

async fn sse(
    runtime: &Runtime,
    tenant: &TenantId,
    call: &Call,
    from: ReadFrom,
) -> Result<warp::reply::Response, ApiError> {
    let record = runtime.stream(tenant, &call.path).await?;
    // Bytes that are not text travel as base64 (each data event on its own).
    let base64 = !record.config.allows_sse();
    let mut tail = runtime.watch_stream(tenant, &call.path).await?;
    let mut next = match from {
        ReadFrom::Now => tail.borrow().tail,
        ReadFrom::Start => 0,
        ReadFrom::At(position) => position,
    };
    let (runtime, tenant, path) = (runtime.clone(), tenant.clone(), call.path.clone());
    let mut cursor_seen = call.query.get("cursor").cloned();
    let mut response = crate::adapters::streamed("text/event-stream", move |sender| async move {
        let deadline = tokio::time::Instant::now() + SSE_LIFETIME;
        loop {
            let read = match runtime
                .read_stream(&tenant, &path, ReadFrom::At(next), MAX_READ_BYTES)
                .await
            {
                Ok(read) => read,
                Err(_) => return,
            };
            let cursor = cursor(cursor_seen.as_ref());
            cursor_seen = Some(cursor.to_string());
            // A batch and its control event go out as one write, so a reader
            // never sees data without the offset that follows it.
            let mut batch = Vec::new();
            if read.next > next {
                batch.extend_from_slice(&data_event(&data_text(&read, base64)));
            }
            let end = (read.up_to_date(), read.record.closed);
            batch.extend_from_slice(&control_event(&offset_text(read.next), end, cursor));
            next = read.next;
            if sender.send(Bytes::from(batch)).await.is_err() {
                return;
            }
            if read.up_to_date() && read.record.closed {
                return;
            }
            if !read.up_to_date() {
                continue;
            }
            match tokio::time::timeout_at(deadline, tail.changed()).await {
                Ok(Ok(())) if !tail.borrow().gone => {}
                _ => return,
            }
        }
    });
    if base64 {
        let headers = response.headers_mut();
        headers.insert(
            "stream-sse-data-encoding",
            warp::http::HeaderValue::from_static("base64"),
        );
    }
    Ok(response)
}

/// A read's data as SSE `data` text: base64 for bytes that are not text.
fn data_text(read: &StreamRead, base64: bool) -> String {
    match base64 {
        true => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(body_of(read))
        }
        false => String::from_utf8_lossy(&body_of(read)).into_owned(),
    }
}
