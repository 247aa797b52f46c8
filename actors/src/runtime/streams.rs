//! Durable Streams through the runtime: a tenant's stream actor found by
//! name or started (ractor's registry makes the name unique, so a stream
//! never has two writers), calls retried once when an idle actor stopped
//! under our feet, and catch-up reads straight from the store, bounded by
//! the tail the actor reported.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ractor::{Actor, ActorRef, RpcReplyPort};
use tokio::sync::watch;

use super::handle::{CALL_TIMEOUT, Runtime};
use crate::error::{Error, Result};
use crate::model::TenantId;
use crate::model::stream::{ReadFrom, StreamConfig, StreamRecord};
use crate::streams::{Append, Appended, StreamActor, StreamArgs, StreamMsg, Tail};

/// Attempts to reach a stream's actor (one may stop, idle, as we call it).
const ATTEMPTS: usize = 3;
/// Units read from the store per round of a catch-up read.
const UNITS_PER_READ: usize = 256;

/// What a catch-up read found.
#[derive(Debug, Clone)]
pub struct StreamRead {
    pub record: StreamRecord,
    /// Where the read started and where the next one starts.
    pub start: u64,
    pub next: u64,
    pub body: ReadBody,
}

impl StreamRead {
    /// Whether the read reached the stream's tail.
    pub fn up_to_date(&self) -> bool {
        self.next >= self.record.tail
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReadBody {
    Bytes(Vec<u8>),
    /// Each message's JSON text.
    Json(Vec<String>),
}

impl Runtime {
    async fn stream_actor(&self, tenant: &TenantId, path: &str) -> Result<ActorRef<StreamMsg>> {
        // ractor's registry is process-wide: the runtime's own prefix keeps
        // two runtimes in one process (tests) from sharing a stream's actor.
        let name = format!("{}{tenant}\u{0}{path}", self.inner.stream_names);
        for _ in 0..ATTEMPTS {
            if let Some(cell) = ractor::registry::where_is(name.clone()) {
                return Ok(cell.into());
            }
            let args = StreamArgs {
                tenant: tenant.clone(),
                path: path.to_owned(),
                storage: self.inner.storage.clone(),
            };
            match Actor::spawn(Some(name.clone()), StreamActor, args).await {
                Ok((actor, _)) => return Ok(actor),
                // Started by a racing call, or still stopping: look again.
                Err(ractor::SpawnErr::ActorAlreadyRegistered(_)) => {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                Err(error) => {
                    return Err(Error::Storage(format!("the stream did not start: {error}")));
                }
            }
        }
        Err(Error::Unavailable("stream"))
    }

    async fn call_stream<T: Send + 'static>(
        &self,
        tenant: &TenantId,
        path: &str,
        message: impl Fn(RpcReplyPort<T>) -> StreamMsg,
    ) -> Result<T> {
        for _ in 0..ATTEMPTS {
            let actor = self.stream_actor(tenant, path).await?;
            match actor.call(&message, Some(CALL_TIMEOUT)).await {
                Ok(ractor::rpc::CallResult::Success(answer)) => return Ok(answer),
                Ok(ractor::rpc::CallResult::Timeout) => return Err(Error::Unavailable("stream")),
                // Stopped (idle) before it read the message: nothing was done.
                Ok(ractor::rpc::CallResult::SenderError) | Err(_) => continue,
            }
        }
        Err(Error::Unavailable("stream"))
    }

    /// Stops every stream actor of this runtime (at shutdown: they hold
    /// the database handle, which must be let go).
    pub(super) async fn stop_streams(&self) {
        for name in ractor::registry::registered() {
            if name.starts_with(&self.inner.stream_names)
                && let Some(actor) = ractor::registry::where_is(name)
            {
                let _ = actor
                    .stop_and_wait(None, Some(std::time::Duration::from_secs(5)))
                    .await;
            }
        }
    }

    /// `PUT`: the stream and whether this call made it.
    pub async fn create_stream(
        &self,
        tenant: &TenantId,
        path: &str,
        config: StreamConfig,
        closed: bool,
        body: bytes::Bytes,
    ) -> Result<(StreamRecord, bool)> {
        self.call_stream(tenant, path, |reply| StreamMsg::Create {
            config: config.clone(),
            closed,
            body: body.clone(),
            reply,
        })
        .await?
    }

    /// `POST`: an append, a closure or both.
    pub async fn append_stream(
        &self,
        tenant: &TenantId,
        path: &str,
        append: Append,
    ) -> Result<Appended> {
        self.call_stream(tenant, path, |reply| {
            StreamMsg::Append(Box::new(append.clone()), reply)
        })
        .await?
    }

    /// `HEAD`: the stream as it is now (a `Stream-TTL` is not renewed).
    pub async fn stream(&self, tenant: &TenantId, path: &str) -> Result<StreamRecord> {
        self.stream_touched(tenant, path, false).await
    }

    async fn stream_touched(
        &self,
        tenant: &TenantId,
        path: &str,
        touch: bool,
    ) -> Result<StreamRecord> {
        self.call_stream(tenant, path, |reply| StreamMsg::Head { touch, reply })
            .await?
            .ok_or_else(|| Error::StreamNotFound(path.to_owned()))
    }

    /// `DELETE`.
    pub async fn delete_stream(&self, tenant: &TenantId, path: &str) -> Result<()> {
        self.call_stream(tenant, path, StreamMsg::Delete).await?
    }

    /// The stream's tail as it moves, for a live read.
    pub async fn watch_stream(
        &self,
        tenant: &TenantId,
        path: &str,
    ) -> Result<watch::Receiver<Tail>> {
        self.call_stream(tenant, path, StreamMsg::Watch)
            .await?
            .ok_or_else(|| Error::StreamNotFound(path.to_owned()))
    }

    /// A catch-up read from `from`, of at most about `max_bytes` (at least
    /// one unit when there is one), up to the tail the actor reports now.
    pub async fn read_stream(
        &self,
        tenant: &TenantId,
        path: &str,
        from: ReadFrom,
        max_bytes: usize,
    ) -> Result<StreamRead> {
        let record = self.stream_touched(tenant, path, true).await?;
        let start = match from {
            ReadFrom::Start => 0,
            ReadFrom::Now => record.tail,
            ReadFrom::At(position) if position <= record.tail => position,
            ReadFrom::At(_) => {
                return Err(Error::InvalidInput(
                    "the offset is past the stream's end".into(),
                ));
            }
        };
        let json = record.config.is_json();
        let (mut bytes, mut messages, mut size, mut next) = (Vec::new(), Vec::new(), 0, start);
        'reading: while next < record.tail && size < max_bytes.max(1) {
            let units = self
                .inner
                .storage
                .stream_units(&record.stream_id, next, UNITS_PER_READ)
                .await?;
            if units.is_empty() {
                break;
            }
            for unit in units {
                if unit.position >= record.tail {
                    break 'reading;
                }
                if json {
                    size += unit.data.len();
                    messages.push(unit.data);
                    next = unit.end;
                } else {
                    let data = STANDARD
                        .decode(&unit.data)
                        .map_err(|_| Error::Storage("a stored stream unit is not base64".into()))?;
                    let skip = ((next - unit.position) as usize).min(data.len());
                    let keep =
                        ((record.tail.min(unit.end) - unit.position) as usize).min(data.len());
                    bytes.extend_from_slice(&data[skip..keep]);
                    size = bytes.len();
                    next = unit.position + keep as u64;
                }
                if size >= max_bytes {
                    break 'reading;
                }
            }
        }
        let body = match json {
            true => ReadBody::Json(messages),
            false => ReadBody::Bytes(bytes),
        };
        Ok(StreamRead {
            record,
            start,
            next,
            body,
        })
    }
}
