//! Durable Streams through the runtime: a tenant's stream actor found by
//! name or started (ractor's registry makes the name unique, so a stream
//! never has two writers), calls retried once when an idle actor stopped
//! under our feet, and catch-up reads straight from the store, bounded by
//! the tail the actor reported.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ractor::{Actor, ActorRef, RpcReplyPort};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::handle::{CALL_TIMEOUT, Runtime};
use crate::cluster::{Cluster, Owner, StreamCall, to_value};
use crate::error::{Error, Result};
use crate::model::TenantId;
use crate::model::stream::{ReadFrom, StreamConfig, StreamRecord};
use crate::streams::{
    Append, Appended, ForkRequest, Release, StreamActor, StreamArgs, StreamMsg, Tail,
};

/// Attempts to reach a stream's actor (one may stop, idle, as we call it).
const ATTEMPTS: usize = 3;
/// The first wait before asking again who owns a stream whose owner did
/// not answer.
const OWNER_RETRY: std::time::Duration = std::time::Duration::from_millis(100);
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

/// Where a stream's calls go: its actor on this node, or (in a cluster)
/// the node that owns it.
enum Route {
    Here(ActorRef<StreamMsg>),
    Owner(Arc<Cluster>, String),
}

impl Runtime {
    fn stream_name(&self, tenant: &TenantId, path: &str) -> String {
        // ractor's registry is process-wide: the runtime's own prefix keeps
        // two runtimes in one process (tests) from sharing a stream's actor.
        format!("{}{tenant}\u{0}{path}", self.inner.stream_names)
    }

    /// The stream's actor here if it runs; else, in a cluster, its owner
    /// (this node, if nobody live owns it: then its actor is started). A
    /// call that may be passed on (`forward`) goes to the owner a claim
    /// here found last, without claiming again.
    async fn route(&self, tenant: &TenantId, path: &str, forward: bool) -> Result<Route> {
        if let Some(cell) = ractor::registry::where_is(self.stream_name(tenant, path)) {
            return Ok(Route::Here(cell.into()));
        }
        let Some(cluster) = self.inner.cluster.get() else {
            return self.stream_actor(tenant, path, None).await.map(Route::Here);
        };
        if let Some(owner) = cluster.known_stream_owner(tenant, path).filter(|_| forward) {
            return Ok(Route::Owner(cluster.clone(), owner));
        }
        match cluster.stream_owner(tenant, path).await? {
            Owner::There(owner) => Ok(Route::Owner(cluster.clone(), owner)),
            Owner::Here { epoch } => {
                (self.stream_actor(tenant, path, Some(epoch)).await).map(Route::Here)
            }
        }
    }

    /// Starts the stream's actor (or finds it started by a racing call).
    /// In a cluster, `epoch` is the one its lease was claimed under: as for
    /// a conversation (`Runtime::started_under`), an actor that started
    /// after this node's lease moved on is stopped again.
    async fn stream_actor(
        &self,
        tenant: &TenantId,
        path: &str,
        epoch: Option<u64>,
    ) -> Result<ActorRef<StreamMsg>> {
        let name = self.stream_name(tenant, path);
        for _ in 0..ATTEMPTS {
            if let Some(cell) = ractor::registry::where_is(name.clone()) {
                return Ok(cell.into());
            }
            let args = StreamArgs {
                tenant: tenant.clone(),
                path: path.to_owned(),
                storage: self.inner.storage.clone(),
                release: self.releaser(),
            };
            match Actor::spawn(Some(name.clone()), StreamActor, args).await {
                Ok((actor, _)) => return self.still_held(actor, epoch),
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

    fn still_held(
        &self,
        actor: ActorRef<StreamMsg>,
        epoch: Option<u64>,
    ) -> Result<ActorRef<StreamMsg>> {
        match epoch.and_then(|epoch| self.claim_void(epoch, "a stream")) {
            Some(error) => {
                actor.stop(Some("this node's lease ran out while it started".into()));
                Err(error)
            }
            None => Ok(actor),
        }
    }

    /// A call to the stream's actor, wherever it runs. `message` is what
    /// its actor here is sent; `call`, what crosses to its owner in a
    /// cluster (`None`: this node's own actor only, for a peer's call: a
    /// stream owned elsewhere is refused, not passed on).
    async fn ask_stream<X: Send + DeserializeOwned + 'static>(
        &self,
        tenant: &TenantId,
        path: &str,
        call: Option<StreamCall>,
        message: impl Fn(RpcReplyPort<Result<X>>) -> StreamMsg,
    ) -> Result<X> {
        for attempt in 1..=ATTEMPTS {
            let actor = match (self.route(tenant, path, call.is_some()).await?, &call) {
                (Route::Here(actor), _) => actor,
                (Route::Owner(_, owner), None) => return Err(Error::OwnerUnreachable(owner)),
                (Route::Owner(cluster, owner), Some(call)) => {
                    match cluster
                        .call_stream(&owner, tenant, path, call.clone())
                        .await
                    {
                        // The owner went away or let the stream go: ask
                        // again who owns it.
                        Err(Error::OwnerUnreachable(_)) if attempt < ATTEMPTS => {
                            tokio::time::sleep(OWNER_RETRY * attempt as u32).await;
                            continue;
                        }
                        answer => return answer,
                    }
                }
            };
            match actor.call(&message, Some(CALL_TIMEOUT)).await {
                Ok(ractor::rpc::CallResult::Success(answer)) => return answer,
                Ok(ractor::rpc::CallResult::Timeout) => return Err(Error::Unavailable("stream")),
                // Stopped (idle) before it read the message: nothing was done.
                Ok(ractor::rpc::CallResult::SenderError) | Err(_) => continue,
            }
        }
        Err(Error::Unavailable("stream"))
    }

    /// A peer's call for a stream this node owns (`Hooks::local_streams`).
    pub(super) async fn serve_stream_call(
        &self,
        tenant: TenantId,
        path: String,
        call: StreamCall,
    ) -> Result<serde_json::Value> {
        let here = Here(self, &tenant, &path);
        match call {
            StreamCall::Create {
                config,
                closed,
                body,
                fork,
                may_make,
                max_bytes,
            } => {
                here.ask(|reply| StreamMsg::Create {
                    config: config.clone(),
                    closed,
                    body: body.clone(),
                    fork: fork.clone(),
                    may_make,
                    max_bytes,
                    reply,
                })
                .await
            }
            StreamCall::AddFork { request } => {
                here.ask(|reply| StreamMsg::AddFork(request.clone(), reply))
                    .await
            }
            StreamCall::ReleaseFork { stream_id } => {
                here.ask(|reply| StreamMsg::ReleaseFork(stream_id.clone(), reply))
                    .await
            }
            StreamCall::Append { append } => {
                here.ask(|reply| StreamMsg::Append(append.clone(), reply))
                    .await
            }
            StreamCall::Head { touch } => here.ask(|reply| StreamMsg::Head { touch, reply }).await,
            StreamCall::Delete => here.ask(StreamMsg::Delete).await,
        }
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

    /// The tenant's stream settings (the defaults for an unknown tenant).
    fn stream_limits(&self, tenant: &TenantId) -> crate::model::stream::StreamAccess {
        self.tenant_settings(tenant)
            .map(|settings| settings.streams.clone())
            .unwrap_or_default()
    }

    /// How an expired fork releases its source: a call of the runtime's,
    /// from a task (the fork's actor must not wait on another's).
    fn releaser(&self) -> Release {
        let runtime = std::sync::Arc::downgrade(&self.inner);
        std::sync::Arc::new(move |tenant, path, id| {
            if let Some(inner) = runtime.upgrade() {
                let runtime = Runtime { inner };
                tokio::spawn(async move { runtime.release_chain(&tenant, Some((path, id))).await });
            }
        })
    }

    /// Releases `source` and, each time a release deletes a stream that was
    /// itself a fork, that stream's source.
    async fn release_chain(&self, tenant: &TenantId, mut source: Option<(String, String)>) {
        while let Some((path, id)) = source.take() {
            let call = StreamCall::ReleaseFork {
                stream_id: id.clone(),
            };
            match self
                .ask_stream(tenant, &path, Some(call), |reply| {
                    StreamMsg::ReleaseFork(id.clone(), reply)
                })
                .await
            {
                Ok(next) => source = next,
                Err(error) => {
                    tracing::warn!(stream = %path, %error, "a fork's source was not released");
                }
            }
        }
    }

    /// `PUT`: the stream and whether this call made it. A fork asks its
    /// source first (which counts it), and takes the source's settings
    /// where `config` leaves them out; a fork not made releases it again.
    pub async fn create_stream(
        &self,
        tenant: &TenantId,
        path: &str,
        config: StreamConfig,
        closed: bool,
        body: bytes::Bytes,
        fork: Option<(String, ForkRequest)>,
    ) -> Result<(StreamRecord, bool)> {
        // Counted before a source counts a fork, so no early return leaks it.
        let limits = self.stream_limits(tenant);
        let may_make = self.inner.storage.count_streams(tenant).await? < limits.max_streams;
        let (config, fork) = match fork {
            None => (config, None),
            Some((source, request)) => {
                let inherits_type = request.content_type.is_none();
                let call = StreamCall::AddFork {
                    request: request.clone(),
                };
                let base = self
                    .ask_stream(tenant, &source, Some(call), |reply| {
                        StreamMsg::AddFork(request.clone(), reply)
                    })
                    .await?;
                let mut config = config;
                if inherits_type {
                    config.content_type = base.config.content_type.clone();
                }
                if config.ttl_secs.is_none() && config.expires_at.is_none() {
                    config.ttl_secs = base.config.ttl_secs;
                    config.expires_at = base.config.expires_at.clone();
                }
                (config, Some(base))
            }
        };
        let source = fork
            .as_ref()
            .map(|base| (base.source_path.clone(), base.source_id.clone()));
        let call = StreamCall::Create {
            config: config.clone(),
            closed,
            body: body.clone(),
            fork: fork.clone().map(Box::new),
            may_make,
            max_bytes: limits.max_stream_bytes,
        };
        let made = self
            .ask_stream(tenant, path, Some(call), |reply| StreamMsg::Create {
                config: config.clone(),
                closed,
                body: body.clone(),
                fork: fork.clone().map(Box::new),
                may_make,
                max_bytes: limits.max_stream_bytes,
                reply,
            })
            .await;
        if !matches!(made, Ok((_, true))) {
            self.release_chain(tenant, source).await;
        }
        made
    }

    /// `POST`: an append, a closure or both.
    pub async fn append_stream(
        &self,
        tenant: &TenantId,
        path: &str,
        mut append: Append,
    ) -> Result<Appended> {
        append.max_bytes = self.stream_limits(tenant).max_stream_bytes;
        let append = Box::new(append);
        let call = StreamCall::Append {
            append: append.clone(),
        };
        self.ask_stream(tenant, path, Some(call), |reply| {
            StreamMsg::Append(append.clone(), reply)
        })
        .await
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
        let call = StreamCall::Head { touch };
        match self
            .ask_stream(tenant, path, Some(call), |reply| StreamMsg::Head {
                touch,
                reply,
            })
            .await?
        {
            None => Err(Error::StreamNotFound(path.to_owned())),
            Some(record) if record.deleted => Err(Error::StreamGone(path.to_owned())),
            Some(record) => Ok(record),
        }
    }

    /// `DELETE`; a fork deleted for good releases its source.
    pub async fn delete_stream(&self, tenant: &TenantId, path: &str) -> Result<()> {
        let source =
            (self.ask_stream(tenant, path, Some(StreamCall::Delete), StreamMsg::Delete)).await?;
        self.release_chain(tenant, source).await;
        Ok(())
    }

    /// The stream's tail as it moves, for a live read.
    pub async fn watch_stream(
        &self,
        tenant: &TenantId,
        path: &str,
    ) -> Result<watch::Receiver<Tail>> {
        for _ in 0..ATTEMPTS {
            let watched = match self.route(tenant, path, true).await? {
                Route::Owner(cluster, owner) => cluster.remote_tail(&owner, tenant, path).await?,
                Route::Here(actor) => {
                    match actor.call(StreamMsg::Watch, Some(CALL_TIMEOUT)).await {
                        Ok(ractor::rpc::CallResult::Success(watched)) => watched,
                        Ok(ractor::rpc::CallResult::Timeout) => {
                            return Err(Error::Unavailable("stream"));
                        }
                        // Stopped (idle) before it read the message.
                        Ok(ractor::rpc::CallResult::SenderError) | Err(_) => continue,
                    }
                }
            };
            return watched.ok_or_else(|| Error::StreamNotFound(path.to_owned()));
        }
        Err(Error::Unavailable("stream"))
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
        // A fork's data below its fork point is in its sources' units: each
        // round reads the part `next` falls in, up to where that part ends.
        'reading: while next < record.tail && size < max_bytes.max(1) {
            let (stream_id, part_end) = record.part_at(next);
            let until = part_end.min(record.tail);
            let units = self
                .inner
                .storage
                .stream_units(stream_id, next, UNITS_PER_READ)
                .await?;
            if units.is_empty() {
                break;
            }
            for unit in units {
                if unit.position >= until {
                    match next >= until {
                        true => continue 'reading,
                        false => break 'reading,
                    }
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
                    let keep = ((until.min(unit.end) - unit.position) as usize).min(data.len());
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

/// A peer's call run on this node's actor of one stream, its answer as it
/// crosses back.
struct Here<'a>(&'a Runtime, &'a TenantId, &'a str);

impl Here<'_> {
    async fn ask<X: Send + serde::Serialize + DeserializeOwned + 'static>(
        &self,
        message: impl Fn(RpcReplyPort<Result<X>>) -> StreamMsg,
    ) -> Result<serde_json::Value> {
        to_value(self.0.ask_stream(self.1, self.2, None, message).await)
    }
}
