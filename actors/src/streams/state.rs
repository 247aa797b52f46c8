//! A live stream's state, shared by the operations of its actor
//! (`actor.rs`: create, append, expiry; `fork.rs`: forks and deletes):
//! its record, its producers, the tail live readers watch. The operation
//! files import this one and never each other.

use std::collections::HashMap;

use tokio::sync::watch;

use crate::model::TenantId;
use crate::model::stream::{ProducerState, StreamRecord};
use crate::store::Storage;

/// Where a stream ends now, as live readers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tail {
    pub tail: u64,
    pub closed: bool,
    /// The stream was deleted: readers end.
    pub gone: bool,
}

/// Tells a fork's source that the fork is gone (tenant, source path, source
/// id): how a fork that expired on its own releases what it read from.
pub type Release = std::sync::Arc<dyn Fn(TenantId, String, String) + Send + Sync>;

pub struct StreamState {
    pub(super) tenant: TenantId,
    pub(super) path: String,
    pub(super) storage: Storage,
    pub(super) record: Option<StreamRecord>,
    pub(super) producers: HashMap<String, ProducerState>,
    pub(super) tail: watch::Sender<Tail>,
    pub(super) busy_since_check: bool,
    pub(super) release: Release,
    /// The last read or write: a `Stream-TTL` counts from here (from the
    /// start of this actor after a restart, which may only lengthen it).
    pub(super) last_access: std::time::Instant,
}

/// The tail live readers see of `record` (of no stream, or a deleted one:
/// `gone`).
pub fn tail_of(record: Option<&StreamRecord>) -> Tail {
    let record = record.filter(|record| !record.deleted);
    Tail {
        tail: record.map_or(0, |record| record.tail),
        closed: record.is_some_and(|record| record.closed),
        gone: record.is_none(),
    }
}

impl StreamState {
    pub(super) fn publish(&self) {
        self.tail.send_replace(tail_of(self.record.as_ref()));
    }
}
