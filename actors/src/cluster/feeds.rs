//! The console feed across nodes (`conversation/feed.rs` on each node):
//! a node with consoles of a tenant puts its gateway in the process group
//! `tertulia.feed.<tenant>`, which ractor_cluster shares with every peer;
//! a node that publishes a frame of that tenant sends it to the group's
//! members on other nodes (`Cast::Feed`), whose gateways hand it to their
//! consoles. A node whose consoles have all gone leaves the group when the
//! next frame finds nobody listening. Installed by `Cluster::start`.

use ractor::{ActorCell, ActorRef};

use super::wire::{Cast, Wire};
use crate::conversation::feed::{FeedPeers, FeedRoute};
use crate::model::TenantId;

pub(super) fn group(tenant: &TenantId) -> String {
    format!("tertulia.feed.{tenant}")
}

/// The feed's peers, as seen from this node's gateway.
pub(super) struct FeedGroups {
    pub(super) gateway: ActorCell,
}

impl FeedPeers for FeedGroups {
    fn listening(&self, tenant: &TenantId) {
        let group = group(tenant);
        let joined = ractor::pg::get_local_members(&group)
            .iter()
            .any(|member| member.get_id() == self.gateway.get_id());
        if !joined {
            ractor::pg::join(group, vec![self.gateway.clone()]);
        }
    }

    fn route(&self, tenant: &TenantId) -> Option<FeedRoute> {
        let members: Vec<ActorCell> = ractor::pg::get_members(&group(tenant))
            .into_iter()
            .filter(|member| !member.get_id().is_local())
            .collect();
        if members.is_empty() {
            return None;
        }
        let tenant = tenant.clone();
        Some(Box::new(move |text: &[u8]| {
            let text = String::from_utf8_lossy(text).into_owned();
            for member in members {
                let cast = Cast::Feed {
                    tenant: tenant.clone(),
                    text: text.clone(),
                };
                let _ = ActorRef::<Wire>::from(member).cast(Wire::Cast(cast));
            }
        }))
    }
}
