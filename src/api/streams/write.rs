//! `PUT` (create), `POST` (append, close) and `DELETE` of a stream: the
//! protocol's headers read and checked here, the decisions made by the
//! stream's actor, its answer turned back into status codes and headers.

use tertulia_actors::Runtime;
use tertulia_actors::model::TenantId;
use tertulia_actors::model::stream::{
    MAX_PRODUCER_NUMBER, StreamConfig, parse_expires_at, parse_position, parse_whole,
    valid_content_type, valid_path,
};
use tertulia_actors::runtime::{Append, Appended, ForkRequest, ProducerHeaders};
use warp::http::StatusCode;

use super::{Call, described, status};
use crate::http::error::ApiError;

/// `PUT`: 201 made, 200 made before with the same settings, 409 otherwise.
pub async fn create(
    runtime: &Runtime,
    tenant: &TenantId,
    call: &Call,
) -> Result<warp::reply::Response, ApiError> {
    let content_type = call
        .header("content-type")
        .unwrap_or("application/octet-stream")
        .trim()
        .to_owned();
    if !valid_content_type(&content_type) {
        return Err(ApiError::BadRequest(format!(
            "`{content_type}` is not a content type"
        )));
    }
    let ttl = call.header("stream-ttl");
    let expires = call.header("stream-expires-at");
    if ttl.is_some() && expires.is_some() {
        return Err(ApiError::BadRequest(
            "send Stream-TTL or Stream-Expires-At, not both".into(),
        ));
    }
    let ttl_secs = ttl
        .map(|text| {
            parse_whole(text).ok_or_else(|| {
                ApiError::BadRequest("Stream-TTL must be whole seconds, like 3600".into())
            })
        })
        .transpose()?;
    let expires_at = expires
        .map(|text| {
            parse_expires_at(text).ok_or_else(|| {
                ApiError::BadRequest("Stream-Expires-At must be an RFC 3339 time".into())
            })
        })
        .transpose()?;
    let config = StreamConfig {
        content_type: content_type.to_ascii_lowercase(),
        ttl_secs,
        expires_at,
    };
    let closed = closes(call)?;
    let fork = fork_of(tenant, call)?;
    let (record, made) = runtime
        .create_stream(tenant, &call.path, config, closed, call.body.clone(), fork)
        .await?;
    let code = if made {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut answer = described(status(code), &record);
    if made {
        let location = format!("{}/ds/{tenant}/v1/stream/{}", call.base, call.path);
        answer = answer.header("location", location);
    }
    Ok(answer
        .body(Default::default())
        .expect("a create answer is valid"))
}

/// `Stream-Forked-From` (a stream URL's path, with or without
/// `/ds/{tenant}`), `Stream-Fork-Offset`, `Stream-Fork-Sub-Offset`.
fn fork_of(tenant: &TenantId, call: &Call) -> Result<Option<(String, ForkRequest)>, ApiError> {
    let sub = call
        .header("stream-fork-sub-offset")
        .map(|text| {
            parse_whole(text).ok_or_else(|| {
                ApiError::BadRequest("Stream-Fork-Sub-Offset must be a whole number".into())
            })
        })
        .transpose()?;
    let Some(source) = call.header("stream-forked-from") else {
        return match sub.is_some() || call.header("stream-fork-offset").is_some() {
            true => Err(ApiError::BadRequest(
                "Stream-Fork-Offset and Stream-Fork-Sub-Offset need Stream-Forked-From".into(),
            )),
            false => Ok(None),
        };
    };
    let position = call
        .header("stream-fork-offset")
        .map(|text| {
            parse_position(text)
                .ok_or_else(|| ApiError::BadRequest("Stream-Fork-Offset is not an offset".into()))
        })
        .transpose()?;
    if sub.is_some_and(|sub| sub > 0) && position.is_none() {
        return Err(ApiError::BadRequest(
            "Stream-Fork-Sub-Offset needs Stream-Fork-Offset".into(),
        ));
    }
    let own = format!("/ds/{tenant}");
    let source = source.trim();
    let source = source.strip_prefix(own.as_str()).unwrap_or(source);
    let source = source
        .strip_prefix("/v1/stream/")
        .filter(|path| valid_path(path))
        .ok_or_else(|| {
            ApiError::BadRequest("Stream-Forked-From must be a stream's path (/v1/stream/…)".into())
        })?;
    let request = ForkRequest {
        position,
        sub,
        content_type: call.header("content-type").map(str::to_owned),
    };
    Ok(Some((source.to_owned(), request)))
}

/// `Stream-Closed: true` (any case); anything else there is a mistake.
fn closes(call: &Call) -> Result<bool, ApiError> {
    match call.header("stream-closed") {
        None => Ok(false),
        Some(value) if value.eq_ignore_ascii_case("true") => Ok(true),
        Some(value) if value.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(ApiError::BadRequest("Stream-Closed must be true".into())),
    }
}

/// `POST`: 204 appended (200 for a producer), 204 for a producer's
/// duplicate, 409 closed / out of sequence / another type, 403 fenced.
pub async fn append(
    runtime: &Runtime,
    tenant: &TenantId,
    call: &Call,
) -> Result<warp::reply::Response, ApiError> {
    let append = Append {
        content_type: call.header("content-type").map(str::to_owned),
        body: call.body.clone(),
        seq: call.header("stream-seq").map(str::to_owned),
        producer: producer(call)?,
        close: closes(call)?,
        // The runtime puts the tenant's limit here.
        max_bytes: u64::MAX,
    };
    let answer = match runtime.append_stream(tenant, &call.path, append).await? {
        Appended::Done { record, producer } => {
            // 200 tells a producer its data went in; a closure alone is 204.
            let code = match producer.is_some() && !call.body.is_empty() {
                true => StatusCode::OK,
                false => StatusCode::NO_CONTENT,
            };
            let builder = described(status(code), &record);
            match producer {
                Some(state) => builder
                    .header("producer-epoch", state.epoch)
                    .header("producer-seq", state.last_seq),
                None => builder,
            }
        }
        Appended::Duplicate { record, producer } => {
            described(status(StatusCode::NO_CONTENT), &record)
                .header("producer-epoch", producer.epoch)
                .header("producer-seq", producer.last_seq)
        }
        Appended::Closed(record) => described(status(StatusCode::CONFLICT), &record),
        Appended::SeqRegression => {
            return Err(ApiError::from(tertulia_actors::Error::Conflict(
                "Stream-Seq must be greater than the last one accepted".into(),
            )));
        }
        Appended::StaleEpoch { current } => {
            status(StatusCode::FORBIDDEN).header("producer-epoch", current)
        }
        Appended::EpochStartsAtZero => {
            return Err(ApiError::BadRequest(
                "a new Producer-Epoch starts at Producer-Seq 0".into(),
            ));
        }
        Appended::Gap { expected, received } => status(StatusCode::CONFLICT)
            .header("producer-expected-seq", expected)
            .header("producer-received-seq", received),
    };
    Ok(answer
        .body(Default::default())
        .expect("an append answer is valid"))
}

/// `Producer-Id`, `-Epoch` and `-Seq`: all three or none.
fn producer(call: &Call) -> Result<Option<ProducerHeaders>, ApiError> {
    let (id, epoch, seq) = (
        call.header("producer-id"),
        call.header("producer-epoch"),
        call.header("producer-seq"),
    );
    let (id, epoch, seq) = match (id, epoch, seq) {
        (None, None, None) => return Ok(None),
        (Some(id), Some(epoch), Some(seq)) => (id, epoch, seq),
        _ => {
            return Err(ApiError::BadRequest(
                "Producer-Id, Producer-Epoch and Producer-Seq go together".into(),
            ));
        }
    };
    if id.trim().is_empty() {
        return Err(ApiError::BadRequest("Producer-Id may not be empty".into()));
    }
    let number = |text: &str, name: &str| {
        parse_whole(text)
            .filter(|number| *number <= MAX_PRODUCER_NUMBER)
            .ok_or_else(|| {
                ApiError::BadRequest(format!("{name} must be an integer from 0 to 2^53-1"))
            })
    };
    Ok(Some(ProducerHeaders {
        id: id.to_owned(),
        epoch: number(epoch, "Producer-Epoch")?,
        seq: number(seq, "Producer-Seq")?,
    }))
}

/// `DELETE`: 204, or 404.
pub async fn delete(
    runtime: &Runtime,
    tenant: &TenantId,
    call: &Call,
) -> Result<warp::reply::Response, ApiError> {
    runtime.delete_stream(tenant, &call.path).await?;
    Ok(status(StatusCode::NO_CONTENT)
        .body(Default::default())
        .expect("a delete answer is valid"))
}
