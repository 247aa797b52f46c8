//! Several nodes on one SurrealDB server (`[cluster]`). Started by the
//! runtime beside the supervision tree when `cluster.node` is set; absent
//! otherwise, and nothing below it runs.
//!
//! Each live conversation has one owner: the node holding its lease
//! (`store/leases.rs`). A request that reaches another node is served
//! through the owner: the runtime is handed a `RemoteSession` (a local
//! stand-in that speaks `SessionMsg`) instead of a session, and it talks to
//! the owner's `Gateway` over ractor_cluster in [`wire::Wire`] messages.
//! A socket stays on the node it reached, behind a `Relay`; its frames come
//! back through the two gateways.
//!
//! ```text
//! mod.rs      starting a node, and reaching a conversation owned elsewhere
//! shared.rs   Cluster: ownership, the stand-ins, the relayed sockets' queues
//! wire.rs     what crosses nodes, as versioned JSON
//! gateway.rs  Gateway: serves the owner's side, delivers the edge's frames
//! remote.rs   RemoteSession and Relay: the edge's side
//! node.rs     the ractor_cluster node, its peers, and the lease keeper
//! feeds.rs    the console feed across nodes, over process groups
//! heartbeat.rs  peers that are paused, told from peers that are alive
//! streams.rs  Durable Streams: calls to a stream's owner, live tails
//! ```

mod feeds;
mod gateway;
mod heartbeat;
mod node;
mod remote;
mod shared;
mod streams;
pub mod wire;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use dashmap::DashMap;
use ractor::ActorRef;

pub use self::shared::{
    Cluster, DropSessions, Hooks, LocalSessions, LocalStreams, OnAccessChanged, OnNudge, Owner,
};
pub use self::streams::to_value;
pub use self::wire::StreamCall;
use crate::config::{ClusterConfig, Limits};
use crate::conversation::session::SessionMsg;
use crate::error::{Error, Result};
use crate::model::{SessionId, TenantId, WebhookNudge};
use crate::store::{Database, Fence};

impl Cluster {
    /// Starts the node (listener, peers, gateway, lease keeper).
    pub async fn start(
        config: ClusterConfig,
        limits: Limits,
        fence: Arc<Fence>,
        db: Database,
        hooks: Hooks,
    ) -> Result<Arc<Cluster>> {
        let (local, drop_sessions) = (hooks.local.clone(), hooks.drop_sessions.clone());
        let cluster = Arc::new(Cluster {
            config,
            limits,
            fence,
            db,
            proxies: DashMap::new(),
            relays: DashMap::new(),
            attached: DashMap::new(),
            next_relay: AtomicU64::new(1),
            node_server: std::sync::OnceLock::new(),
            hooks,
            heard: DashMap::new(),
            tails: DashMap::new(),
            stream_owners: DashMap::new(),
        });
        let gateway = gateway::start(&cluster, local).await?;
        (cluster.hooks.feeds).span(Arc::new(feeds::FeedGroups { gateway }));
        let server = node::start(&cluster).await?;
        let _ = cluster.node_server.set(server);
        node::keep_lease(Arc::downgrade(&cluster), drop_sessions);
        heartbeat::start(Arc::downgrade(&cluster));
        Ok(cluster)
    }

    /// Tells `node` (`None`: every peer connected now) something for its
    /// webhook actor; a node that cannot be reached hears of it at its
    /// next claim or sweep instead.
    pub fn nudge(&self, node: Option<String>, nudge: WebhookNudge) {
        let me = self.node().to_owned();
        tokio::spawn(async move {
            let gateways = match node {
                Some(node) => gateway::reach(&node).await.into_iter().collect(),
                None => gateway::peers(&me),
            };
            for gateway in gateways {
                let _ = gateway.cast(wire::Wire::Cast(wire::Cast::Nudge { nudge }));
            }
        });
    }

    /// Tells every peer connected now that tenants or keys changed; a peer
    /// that misses it reads them at its next start.
    pub fn access_changed(&self) {
        for gateway in gateway::peers(self.node()) {
            let _ = gateway.cast(wire::Wire::Cast(wire::Cast::AccessChanged));
        }
    }

    /// The stand-in for a conversation that `owner` owns.
    pub async fn proxy(
        self: &Arc<Self>,
        owner: String,
        tenant: &TenantId,
        session: SessionId,
    ) -> Result<ActorRef<SessionMsg>> {
        let Some(gateway) = gateway::reach(&owner).await else {
            return Err(Error::OwnerUnreachable(owner));
        };
        let proxy = remote::spawn_session(self, owner, gateway, tenant.clone(), session).await?;
        // Two requests may have raced here: the first live stand-in stays.
        let kept = self
            .proxies
            .entry((tenant.clone(), session))
            .and_modify(|live| {
                if live.get_status() != ractor::ActorStatus::Running {
                    *live = proxy.clone();
                }
            })
            .or_insert_with(|| proxy.clone())
            .clone();
        if kept.get_id() != proxy.get_id() {
            proxy.stop(None);
        }
        Ok(kept)
    }
}
