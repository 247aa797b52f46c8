//! The ractor_cluster node (its listener, authenticated by the shared
//! cookie), the loop that dials every configured peer it is not connected
//! to, and the lease keeper. Started by `Cluster::start`.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use ractor_cluster::node::{NodeConnectionMode, NodeServerSessionInformation};
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage};

use super::shared::{Cluster, DropSessions};
use crate::error::{Error, Result};

/// How often unconnected peers are dialled.
const DIAL_EVERY: Duration = Duration::from_secs(1);

pub(super) async fn start(cluster: &Arc<Cluster>) -> Result<ActorRef<NodeServerMessage>> {
    let config = &cluster.config;
    let listen: std::net::SocketAddr = config.listen.parse().map_err(|_| {
        Error::Startup(format!(
            "cluster.listen `{}` is not an address",
            config.listen
        ))
    })?;
    let server = NodeServer::new(
        listen.port(),
        config.cookie.clone().unwrap_or_default(),
        config.node.clone(),
        listen.ip().to_string(),
        None,
        Some(NodeConnectionMode::Isolated),
    )
    .with_listen_addr(listen.ip());
    let (server, _) = Actor::spawn(None, server, ())
        .await
        .map_err(|error| Error::Startup(format!("the cluster node did not start: {error}")))?;
    let events = Events(Arc::downgrade(cluster));
    let _ = server.cast(NodeServerMessage::SubscribeToEvents {
        id: "tertulia".into(),
        subscription: Box::new(events),
    });
    tokio::spawn(dial_peers(Arc::downgrade(cluster), server.clone()));
    tracing::info!(node = %config.node, %listen, peers = ?config.peers, "cluster node listening");
    Ok(server)
}

/// Tells the cluster when a peer goes away.
struct Events(Weak<Cluster>);

impl NodeEventSubscription for Events {
    fn node_session_opened(&self, _session: NodeServerSessionInformation) {}

    fn node_session_disconnected(&self, session: NodeServerSessionInformation) {
        if let (Some(cluster), Some(peer)) = (self.0.upgrade(), session.peer_name) {
            cluster.node_lost(node_name(&peer.name));
        }
    }

    fn node_session_authenticated(&self, session: NodeServerSessionInformation) {
        if let Some(peer) = session.peer_name {
            tracing::info!(peer = %peer.name, "connected to a node");
            if let Some(cluster) = self.0.upgrade() {
                cluster.peer_connected(node_name(&peer.name).to_owned());
            }
        }
    }
}

/// A peer's node name: ractor_cluster gives it as `name@host`.
fn node_name(peer: &str) -> &str {
    peer.split_once('@').map_or(peer, |(name, _)| name)
}

/// Dials, every second, each configured peer with no session open, so a
/// peer that starts later or restarts is found.
async fn dial_peers(cluster: Weak<Cluster>, server: ActorRef<NodeServerMessage>) {
    let mut first = true;
    loop {
        if !std::mem::take(&mut first) {
            tokio::time::sleep(DIAL_EVERY).await;
        }
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        let sessions = match server
            .call(NodeServerMessage::GetSessions, Some(DIAL_EVERY))
            .await
        {
            Ok(CallResult::Success(sessions)) => sessions,
            Err(_) => return, // the node server stopped
            Ok(_) => continue,
        };
        let connected: Vec<String> = sessions
            .values()
            .filter_map(|session| session.peer_name.as_ref())
            .map(|peer| peer.connection_string.clone())
            .collect();
        for peer in &cluster.config.peers {
            if !connected.contains(peer) {
                // Refused or unreachable: tried again next round.
                let _ = ractor_cluster::client_connect(&server, peer.as_str()).await;
            }
        }
    }
}

/// Renews this node's lease every third of its length. When it finds the
/// lease lost (the node was paused, or cut off from the database, for
/// longer than the lease), writes are refused at once, every session of
/// the old epoch is stopped, and only then does the node carry on under
/// its new epoch.
pub(super) fn keep_lease(cluster: Weak<Cluster>, drop_sessions: DropSessions) {
    tokio::spawn(async move {
        let mut renewed = Instant::now();
        loop {
            let Some(lease) = cluster.upgrade().map(|cluster| cluster.config.lease()) else {
                return;
            };
            tokio::time::sleep(lease / 3).await;
            let Some(cluster) = cluster.upgrade() else {
                return;
            };
            let fence = &cluster.fence;
            let renewal = cluster
                .db
                .renew_node(cluster.node(), &cluster.config.listen, fence.epoch(), lease)
                .await;
            match renewal {
                Ok(renewal) if renewal.kept => {
                    renewed = Instant::now();
                    if fence.is_lost() {
                        fence.regain(renewal.epoch);
                    }
                }
                Ok(renewal) => {
                    fence.lose();
                    tracing::warn!(
                        node = %cluster.node(),
                        old = fence.epoch(),
                        new = renewal.epoch,
                        "this node's lease ran out: stopping its sessions before carrying on"
                    );
                    drop_sessions().await;
                    renewed = Instant::now();
                    fence.regain(renewal.epoch);
                }
                Err(error) => {
                    tracing::warn!(%error, "the node's lease could not be renewed");
                    if renewed.elapsed() >= lease && !fence.is_lost() {
                        // Others may own our conversations by now.
                        fence.lose();
                    }
                }
            }
        }
    });
}
