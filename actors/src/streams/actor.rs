//! One live Durable Stream. Started by the runtime's stream registry on
//! first use (rehydrated from its record and its producers' states), it is
//! the stream's only writer: creation, appends (with `Stream-Seq` and
//! idempotent producers checked), closure and deletion go through it one at
//! a time, each answered once Persistence says it is durable. Readers read
//! the units straight from storage; live readers watch its tail. Stops when
//! idle with nobody watching; never queries SurrealDB itself.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::watch;

use super::append::{Append, Appended, plan_append, unit_bytes, units_of};
use super::fork::{ForkBase, ForkRequest, new_record};
use super::state::{Release, StreamState, Tail, tail_of};
use crate::error::{Error, Result};
use crate::model::TenantId;
use crate::model::stream::{StreamConfig, StreamRecord};
use crate::store::{Storage, Write};

/// A stream stays in memory this long after its last call while nobody watches it.
const IDLE: Duration = Duration::from_secs(300);

pub enum StreamMsg {
    /// `PUT`: makes the stream, or finds it made with the same settings
    /// (`Ok(false)`); other settings are a conflict.
    Create {
        config: StreamConfig,
        closed: bool,
        body: Bytes,
        /// A fork: what the source agreed to (it counts this fork already).
        fork: Option<Box<ForkBase>>,
        /// The tenant's limits: whether one more stream may be made, and
        /// the bytes a stream may hold.
        may_make: bool,
        max_bytes: u64,
        reply: RpcReplyPort<Result<(StreamRecord, bool)>>,
    },
    /// A fork of this stream is being made: checks the fork point and
    /// counts the fork, so this stream's units outlive a delete.
    AddFork(ForkRequest, RpcReplyPort<Result<ForkBase>>),
    /// A fork of this stream (`stream_id`) is gone; the source to release
    /// next, if this one went with it.
    ReleaseFork(String, RpcReplyPort<Result<Option<(String, String)>>>),
    /// `POST`: an append, a closure, or both.
    Append(Box<Append>, RpcReplyPort<Result<Appended>>),
    /// The stream as it is now, if it exists (deleted while forks read it,
    /// too: callers answer 410 then). `touch`: a read, which
    /// renews a `Stream-TTL` (a `HEAD` does not).
    Head {
        touch: bool,
        reply: RpcReplyPort<Result<Option<StreamRecord>>>,
    },
    /// `DELETE`: the stream and everything of it (only hidden while forks
    /// read from it); the source to release, if it was a fork.
    Delete(RpcReplyPort<Result<Option<(String, String)>>>),
    /// Its tail as it moves, for live readers (`None`: no stream).
    Watch(RpcReplyPort<Option<watch::Receiver<Tail>>>),
    /// Stops if nothing happened since the last check and nobody watches.
    IdleCheck,
}

/// Stays on this node (see `cluster::wire` for what crosses nodes).
impl ractor::Message for StreamMsg {}

pub struct StreamArgs {
    pub tenant: TenantId,
    pub path: String,
    pub storage: Storage,
    pub release: Release,
}

pub struct StreamActor;

impl Actor for StreamActor {
    type Msg = StreamMsg;
    type State = StreamState;
    type Arguments = StreamArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<StreamMsg>,
        args: StreamArgs,
    ) -> std::result::Result<StreamState, ActorProcessingErr> {
        let record = args.storage.load_stream(&args.tenant, &args.path).await?;
        let producers = match &record {
            Some(record) => args
                .storage
                .stream_producers(&record.stream_id)
                .await?
                .into_iter()
                .map(|producer| (producer.producer, producer.state))
                .collect(),
            None => HashMap::new(),
        };
        let (tail, _) = watch::channel(tail_of(record.as_ref()));
        myself.send_interval(IDLE, || StreamMsg::IdleCheck);
        Ok(StreamState {
            tenant: args.tenant,
            path: args.path,
            storage: args.storage,
            record,
            producers,
            tail,
            busy_since_check: true,
            last_access: std::time::Instant::now(),
            release: args.release,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<StreamMsg>,
        message: StreamMsg,
        state: &mut StreamState,
    ) -> std::result::Result<(), ActorProcessingErr> {
        if !matches!(message, StreamMsg::IdleCheck) {
            state.busy_since_check = true;
            state.forget_if_expired().await;
        }
        match message {
            StreamMsg::Create {
                config,
                closed,
                body,
                fork,
                may_make,
                max_bytes,
                reply,
            } => {
                let limits = (may_make, max_bytes);
                let made = state
                    .create(config, closed, body, fork.map(|f| *f), limits)
                    .await;
                let _ = reply.send(made);
            }
            StreamMsg::AddFork(request, reply) => {
                let _ = reply.send(state.add_fork(request).await);
            }
            StreamMsg::ReleaseFork(stream_id, reply) => {
                let _ = reply.send(state.release_fork(&stream_id).await);
            }
            StreamMsg::Append(append, reply) => {
                let _ = reply.send(state.append(*append).await);
            }
            StreamMsg::Head { touch, reply } => {
                if touch {
                    state.last_access = std::time::Instant::now();
                }
                let _ = reply.send(Ok(state.record.clone()));
            }
            StreamMsg::Delete(reply) => {
                let _ = reply.send(state.delete().await);
            }
            StreamMsg::Watch(reply) => {
                let watching = state.live().map(|_| state.tail.subscribe());
                let _ = reply.send(watching);
            }
            StreamMsg::IdleCheck => {
                let idle = !state.busy_since_check && state.tail.receiver_count() == 0;
                state.busy_since_check = false;
                if idle {
                    myself.stop(Some("idle".into()));
                }
            }
        }
        Ok(())
    }
}

impl StreamState {
    /// A stream past its `Stream-TTL` (idle that long) or `Stream-Expires-At`
    /// is deleted before anything else is done with it.
    async fn forget_if_expired(&mut self) {
        let Some(record) = &self.record else {
            return;
        };
        let idle = record
            .config
            .ttl_secs
            .is_some_and(|ttl| self.last_access.elapsed() >= Duration::from_secs(ttl));
        let past = record.config.expires_at.as_deref().is_some_and(|at| {
            chrono::DateTime::parse_from_rfc3339(at).is_ok_and(|at| at <= chrono::Utc::now())
        });
        if idle || past {
            match self.delete().await {
                Ok(Some((path, id))) => (self.release)(self.tenant.clone(), path, id),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(stream = %self.path, %error, "an expired stream was not deleted")
                }
            }
        }
    }

    async fn create(
        &mut self,
        config: StreamConfig,
        closed: bool,
        body: Bytes,
        fork: Option<ForkBase>,
        (may_make, max_bytes): (bool, u64),
    ) -> Result<(StreamRecord, bool)> {
        if let Some(record) = &self.record {
            let same = !record.deleted
                && crate::model::stream::same_type(
                    &record.config.content_type,
                    &config.content_type,
                )
                && record.config.ttl_secs == config.ttl_secs
                && record.config.expires_at == config.expires_at
                && record.closed == closed
                && fork.as_ref().map_or(record.forked_from.is_none(), |fork| {
                    record.forked_from.as_ref().map(|(path, _)| path) == Some(&fork.source_path)
                        && record.fork_point() == fork.point
                });
            return match same {
                true => Ok((record.clone(), false)),
                false => Err(Error::Conflict(
                    "the stream exists with other settings (or was deleted while forks read it)"
                        .into(),
                )),
            };
        }
        if !may_make {
            return Err(Error::QuotaExceeded(
                "the tenant has as many streams as it may (streams.max_streams)".into(),
            ));
        }
        let mut record = new_record(self, config, closed, fork);
        let units = match body.is_empty() {
            true => Vec::new(),
            false => units_of(&record, &body, true)?,
        };
        record.size_bytes = units.iter().map(|unit| unit_bytes(&record, unit)).sum();
        if record.size_bytes > max_bytes {
            return Err(Error::ContentTooLarge {
                actual: usize::try_from(record.size_bytes).unwrap_or(usize::MAX),
                limit: usize::try_from(max_bytes).unwrap_or(usize::MAX),
            });
        }
        record.tail = units.last().map_or(record.tail, |unit| unit.end);
        let write = Write::PutStream {
            record: Box::new(record.clone()),
            units,
        };
        self.storage.write_and_wait(write).await?;
        self.producers.clear();
        self.last_access = std::time::Instant::now();
        self.record = Some(record.clone());
        self.publish();
        Ok((record, true))
    }

    async fn append(&mut self, append: Append) -> Result<Appended> {
        self.last_access = std::time::Instant::now();
        let record = self.existing()?;
        let known = append
            .producer
            .as_ref()
            .and_then(|producer| self.producers.get(&producer.id).copied());
        let plan = plan_append(record, known, &append)?;
        let Some((write, next, producer)) = plan.write else {
            return Ok(plan.answer);
        };
        self.storage.write_and_wait(write).await?;
        if let (Some(headers), Some(state)) = (&append.producer, producer) {
            self.producers.insert(headers.id.clone(), state);
        }
        self.record = Some(next);
        self.publish();
        Ok(plan.answer)
    }
}
