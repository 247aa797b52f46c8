//! The `webhooks` role, in a cluster: one node at a time fans the outbox
//! out and delivers (its webhook actor runs the workers), so per-conversation
//! order and at-least-once hold as on one node. The other nodes keep their
//! endpoints current (for reads, and for persistence's subscriptions) and
//! tell the holder what they committed or changed. Outside a cluster there
//! is no `Role` and nothing here runs.
//!
//! The role is a lease like a conversation's (`store/leases.rs`): taken
//! under the node's epoch, held while the node's own lease is live, so the
//! holder renews nothing of its own. Every node claims it every third of
//! the lease; a node that finds it free (its holder died or left) takes it
//! over, reads the endpoints and starts their workers, which read every
//! pending delivery from the database.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::model::WebhookNudge;
use crate::store::{Holder, Storage};

/// The role's name in `cluster_role`.
const ROLE: &str = "webhooks";

/// How this node's webhook actor reaches the others': the node to tell
/// (`None`: every peer) and what. Set by the runtime once the cluster runs.
pub type Nudger = Arc<dyn Fn(Option<String>, WebhookNudge) + Send + Sync>;

/// Where the runtime puts the [`Nudger`]: the tree starts before the cluster.
pub type NudgerSlot = Arc<OnceLock<Nudger>>;

/// This node's view of the role.
pub(super) struct Role {
    /// Who held it at the last claim (`None`: not known, or this node's
    /// lease is lost).
    holder: Option<Holder>,
    /// How often the role is claimed.
    pub(super) every: Duration,
    pub(super) nudger: NudgerSlot,
}

impl Role {
    pub(super) fn new(every: Duration, nudger: NudgerSlot) -> Role {
        Role {
            holder: None,
            every,
            nudger,
        }
    }

    pub(super) fn here(&self) -> bool {
        matches!(self.holder, Some(Holder::Here { .. }))
    }

    /// Tells the holder that events were committed here, or every peer
    /// that endpoints or deliveries changed.
    pub(super) fn tell(&self, nudge: WebhookNudge) {
        let Some(nudger) = self.nudger.get() else {
            return;
        };
        match (nudge, &self.holder) {
            (WebhookNudge::Changed, _) => nudger(None, nudge),
            (WebhookNudge::EventsCommitted, Some(Holder::There(node))) => {
                nudger(Some(node.clone()), nudge)
            }
            (WebhookNudge::EventsCommitted, _) => {}
        }
    }
}

/// What a claim changed for this node.
pub(super) struct Moved {
    /// The role is this node's now, and was not (or was under an older
    /// epoch of this node's lease).
    pub(super) gained: bool,
    /// The role was this node's and is not now.
    pub(super) lost: bool,
}

impl Role {
    /// Claims the role for this node; a failed claim (the node's lease
    /// lost, the database gone) counts as not holding it.
    pub(super) async fn claim(&mut self, storage: &Storage) -> Moved {
        let before = self.holder.take();
        let now = match storage.claim_role(ROLE).await {
            Ok(holder) => Some(holder),
            Err(error) => {
                tracing::warn!(%error, "the webhooks role could not be claimed");
                None
            }
        };
        let here = |holder: &Option<Holder>| matches!(holder, Some(Holder::Here { .. }));
        let gained = match (&before, &now) {
            (Some(Holder::Here { epoch: was }), Some(Holder::Here { epoch })) => was != epoch,
            (_, now) => here(now),
        };
        let lost = here(&before) && !here(&now);
        if gained || lost {
            tracing::info!(holder = ?now, "the webhooks role moved");
        }
        self.holder = now;
        Moved { gained, lost }
    }
}
