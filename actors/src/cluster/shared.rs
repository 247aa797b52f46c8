//! The state a node keeps as part of a cluster, and what it decides from
//! it alone: who owns a conversation, which stand-ins are live, what to let
//! go when a peer is lost. Shared (behind an `Arc`) by the runtime, the
//! gateway, the stand-ins and the keeper; imports none of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use futures_util::future::BoxFuture;
use ractor::{ActorRef, ActorStatus};

use crate::config::{ClusterConfig, Limits};
use crate::conversation::connection::ConnectionMsg;
use crate::conversation::feed::Feeds;
use crate::conversation::outbound::OutboundSender;
use crate::conversation::session::SessionMsg;
use crate::error::Result;
use crate::model::{SessionId, TenantId, WebhookNudge};
use crate::store::{Database, Fence};
use crate::streams::Tail;

use super::wire::StreamCall;

/// Finds (or starts) a session on this node, for the gateway: the runtime's
/// own path, claiming the lease first.
pub type LocalSessions = Arc<
    dyn Fn(TenantId, SessionId) -> BoxFuture<'static, Result<ActorRef<SessionMsg>>> + Send + Sync,
>;

/// Stops every live session of this node (its lease was lost): handed in
/// by the runtime, called by the keeper before it joins again.
pub type DropSessions = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// Hands another node's nudge to this node's webhook actor.
pub type OnNudge = Arc<dyn Fn(WebhookNudge) + Send + Sync>;

/// Runs a call for one of this node's Durable Streams, for the gateway:
/// the runtime's own path, which refuses a stream owned elsewhere.
pub type LocalStreams = Arc<
    dyn Fn(TenantId, String, StreamCall) -> BoxFuture<'static, Result<serde_json::Value>>
        + Send
        + Sync,
>;

/// Reads tenants and keys again: another node changed them.
pub type OnAccessChanged = Arc<dyn Fn() + Send + Sync>;

/// The ways the cluster reaches the rest of its node, handed in by the
/// runtime at start.
pub struct Hooks {
    pub local: LocalSessions,
    pub local_streams: LocalStreams,
    pub drop_sessions: DropSessions,
    pub on_nudge: OnNudge,
    pub on_access_changed: OnAccessChanged,
    /// The console feed, which the gateway hands peers' frames to.
    pub feeds: Feeds,
}

/// Who owns a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This node: its lease is ours now, taken under this epoch of the
    /// node's own lease (see [`Cluster::holds`]).
    Here { epoch: u64 },
    /// Another node, by name.
    There(String),
}

/// This node's part in the cluster. Shared by the runtime, the gateway and
/// the stand-ins.
pub struct Cluster {
    pub(super) config: ClusterConfig,
    pub(super) limits: Limits,
    pub(super) fence: Arc<Fence>,
    pub(super) db: Database,
    /// Stand-ins for sessions owned elsewhere, by conversation.
    pub(super) proxies: DashMap<(TenantId, SessionId), ActorRef<SessionMsg>>,
    /// Edge side: the queues of sockets relayed from an owner, by relay id,
    /// with the owner's name.
    pub(super) relays: DashMap<u64, (String, OutboundSender)>,
    /// Owner side: the connections of sockets relayed from other nodes, by
    /// (their node, their relay id).
    pub(super) attached: DashMap<(String, u64), ActorRef<ConnectionMsg>>,
    pub(super) next_relay: AtomicU64,
    pub(super) node_server: std::sync::OnceLock<ActorRef<ractor_cluster::NodeServerMessage>>,
    pub(super) hooks: Hooks,
    /// When each peer's last heartbeat arrived (`heartbeat.rs`).
    pub(super) heard: DashMap<String, std::time::Instant>,
    /// Live tails of streams owned elsewhere, kept while watched
    /// (`streams.rs`).
    pub(super) tails: DashMap<(TenantId, String), tokio::sync::watch::Sender<Tail>>,
    /// Who owned each stream another node owns, as its last claim said:
    /// calls through this node skip the claim until the owner fails them.
    pub(super) stream_owners: DashMap<(TenantId, String), String>,
}

impl Cluster {
    /// Joins the cluster's lease table: this node's first epoch, and the
    /// fence its writes will carry.
    pub async fn join(config: &ClusterConfig, db: &Database) -> Result<Arc<Fence>> {
        let renewal = db
            .renew_node(&config.node, &config.listen, 0, config.lease())
            .await?;
        tracing::info!(node = %config.node, epoch = renewal.epoch, "joined the cluster");
        Ok(Fence::new(&config.node, renewal.epoch))
    }

    pub fn node(&self) -> &str {
        &self.config.node
    }

    /// Who owns the conversation; if nobody live does, this node takes it.
    pub async fn owner(&self, tenant: &TenantId, session: SessionId) -> Result<Owner> {
        let epoch = self.live_epoch()?;
        let claim = self
            .db
            .claim_conversation(tenant, session, self.node(), epoch)
            .await?;
        if let Some(holder) = claim.held_by {
            return Ok(Owner::There(holder));
        }
        if let Some(before) = claim.taken_from.filter(|before| before != self.node()) {
            tracing::info!(%session, from = %before, "took the conversation over");
            crate::metrics::conversation_taken_over();
        }
        Ok(Owner::Here { epoch })
    }

    /// Who owns `tenant`'s Durable Stream at `path` (its one writer); if
    /// nobody live does, this node takes it.
    pub async fn stream_owner(&self, tenant: &TenantId, path: &str) -> Result<Owner> {
        let epoch = self.live_epoch()?;
        let claim = self
            .db
            .claim_stream(tenant, path, self.node(), epoch)
            .await?;
        let key = (tenant.clone(), path.to_owned());
        Ok(match claim.held_by {
            Some(holder) => {
                self.stream_owners.insert(key, holder.clone());
                Owner::There(holder)
            }
            None => {
                self.stream_owners.remove(&key);
                Owner::Here { epoch }
            }
        })
    }

    /// The epoch to claim under, unless the lease is known lost.
    fn live_epoch(&self) -> Result<u64> {
        match self.fence.is_lost() {
            true => Err(self.fence.error()),
            false => Ok(self.fence.epoch()),
        }
    }

    /// Whether a claim this node made under `epoch` still holds: its own
    /// lease has neither run out nor moved on to a new epoch since.
    pub fn holds(&self, epoch: u64) -> bool {
        self.fence.holds(epoch)
    }

    /// A live stand-in for a conversation owned elsewhere, if there is one.
    pub fn live_proxy(
        &self,
        tenant: &TenantId,
        session: SessionId,
    ) -> Option<ActorRef<SessionMsg>> {
        let key = (tenant.clone(), session);
        let proxy = self.proxies.get(&key)?.clone();
        if proxy.get_status() == ActorStatus::Running {
            return Some(proxy);
        }
        self.proxies
            .remove_if(&key, |_, live| live.get_id() == proxy.get_id());
        None
    }

    /// A peer went away: its stand-ins stop (the next request asks who owns
    /// the conversation now), sockets relayed from it re-attach, and sockets
    /// it relayed here are let go.
    pub(super) fn node_lost(&self, node: &str) {
        tracing::warn!(peer = %node, "lost the connection to a node");
        self.proxies.retain(|_, proxy| {
            let keep = owner_of(proxy).as_deref() != Some(node);
            if !keep {
                proxy.stop(Some("its owner is unreachable".into()));
            }
            keep
        });
        self.relays.retain(|_, (owner, _)| owner != node);
        self.stream_owners.retain(|_, owner| owner != node);
        self.attached.retain(|(from, _), connection| {
            let keep = from != node;
            if !keep {
                connection.stop(None);
            }
            keep
        });
    }

    /// A peer connected, or connected again. Its broadcasts of changed
    /// tenants, keys, webhook endpoints and deliveries reached only the
    /// peers connected when it made them, so what it may have changed while
    /// the two were apart is read again here (a revoked key must not stay
    /// valid on a node that was cut off). It counts as heard now: a peer
    /// paused before its first heartbeat is still found silent.
    pub(super) fn peer_connected(&self, peer: String) {
        self.heard_from(peer);
        (self.hooks.on_access_changed)();
        (self.hooks.on_nudge)(WebhookNudge::Changed);
    }

    /// A peer's heartbeat arrived, or it has just connected (`heartbeat.rs`).
    pub(super) fn heard_from(&self, peer: String) {
        self.heard.insert(peer, std::time::Instant::now());
    }

    /// Leaves the cluster: the lease ends now, so other nodes take this
    /// node's conversations over at once.
    pub async fn leave(&self) {
        if let Err(error) = self.db.release_node(self.node(), self.fence.epoch()).await {
            tracing::warn!(%error, "the node's lease could not be released; it runs out by itself");
        }
        if let Some(server) = self.node_server.get() {
            server.stop(None);
        }
    }

    pub(super) fn next_relay(&self) -> u64 {
        self.next_relay.fetch_add(1, Ordering::Relaxed)
    }
}

/// A stand-in's name: it carries its owner (for `owner_of`) and a random
/// part, so stand-ins never clash in ractor's registry.
pub(super) fn proxy_name(owner: &str) -> String {
    format!("remote\u{0}{owner}\u{0}{}", uuid::Uuid::now_v7().simple())
}

/// The owner a stand-in stands for.
pub(super) fn owner_of(proxy: &ActorRef<SessionMsg>) -> Option<String> {
    proxy.get_name()?.split('\u{0}').nth(1).map(str::to_owned)
}
