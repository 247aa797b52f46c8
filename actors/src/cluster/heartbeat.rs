//! Heartbeats between nodes, for what the connection cannot tell: a peer
//! that is paused (SIGSTOP, a frozen VM) keeps its TCP sessions open and
//! its kernel acknowledging, so nothing closes the sockets relayed to it.
//! Every node tells every peer it is alive every third of the lease; a
//! peer not heard from for a whole lease is treated as lost
//! (`Cluster::node_lost`): its stand-ins stop and the sockets relayed to it
//! re-attach, by then to whichever node took its conversations over (its
//! lease has run out too, since it cannot renew it while paused). Started
//! by `Cluster::start`.

use std::sync::Weak;
use std::time::{Duration, Instant};

use super::gateway;
use super::shared::Cluster;
use super::wire::{Cast, Wire};

pub(super) fn start(cluster: Weak<Cluster>) {
    tokio::spawn(async move {
        let mut last = Instant::now();
        loop {
            let Some(every) = cluster.upgrade().map(|c| c.config.lease() / 3) else {
                return;
            };
            tokio::time::sleep(every).await;
            let Some(cluster) = cluster.upgrade() else {
                return;
            };
            let me = cluster.node().to_owned();
            for peer in gateway::peers(&me) {
                let _ = peer.cast(Wire::Cast(Cast::Heartbeat { from: me.clone() }));
            }
            let lease = cluster.config.lease();
            if last.elapsed() > lease {
                // This node was the one paused: its peers' silence is its own.
                cluster
                    .heard
                    .iter_mut()
                    .for_each(|mut at| *at = Instant::now());
            }
            last = Instant::now();
            for peer in silent(&cluster, lease) {
                // Heard of again once it runs: then it counts as alive.
                cluster.heard.remove(&peer);
                tracing::warn!(%peer, "no heartbeat from a node for a whole lease");
                cluster.node_lost(&peer);
            }
        }
    });
}

/// The peers not heard from for longer than `lease`.
fn silent(cluster: &Cluster, lease: Duration) -> Vec<String> {
    (cluster.heard.iter())
        .filter(|entry| entry.value().elapsed() > lease)
        .map(|entry| entry.key().clone())
        .collect()
}
