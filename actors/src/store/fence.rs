//! [`Fence`]: a node's standing in a cluster, shared by its lease keeper
//! (which renews it) and the persistence actor's batches (which check it;
//! `leases.rs`). Apart from the leases so the database handle can hold one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::error::Error;

/// This node's standing, shared by its keeper (which renews it) and the
/// persistence actor (which checks it in every batch).
#[derive(Debug)]
pub struct Fence {
    node: String,
    epoch: AtomicU64,
    /// Set when the lease was found lost, until the keeper has stopped the
    /// sessions of the old epoch and joined again under a new one.
    lost: AtomicBool,
}

impl Fence {
    pub fn new(node: &str, epoch: u64) -> Arc<Fence> {
        Arc::new(Fence {
            node: node.to_owned(),
            epoch: AtomicU64::new(epoch),
            lost: AtomicBool::new(false),
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// From now on every batch is refused, until [`Fence::regain`].
    pub fn lose(&self) {
        self.lost.store(true, Ordering::Release);
    }

    /// Writes go ahead again, checked against `epoch`.
    pub fn regain(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Release);
        self.lost.store(false, Ordering::Release);
    }

    /// Whether the node still stands at `epoch`: not lost, and not moved on
    /// to a later one. A claim made under `epoch` is void otherwise.
    pub fn holds(&self, epoch: u64) -> bool {
        !self.is_lost() && self.epoch() == epoch
    }

    /// The error a refused batch reports.
    pub fn error(&self) -> Error {
        Error::Fenced(format!(
            "node {} lost its lease (epoch {})",
            self.node,
            self.epoch()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::Fence;

    #[test]
    fn a_claims_epoch_holds_until_the_lease_is_lost_or_moves_on() {
        let fence = Fence::new("node-a", 3);
        assert!(fence.holds(3));
        assert!(!fence.holds(2), "an older epoch is void");
        fence.lose();
        assert!(!fence.holds(3), "nothing holds while the lease is lost");
        fence.regain(4);
        assert!(!fence.holds(3), "a claim of the old epoch stays void");
        assert!(fence.holds(4));
    }
}
