//! [`Storage`]: the typed way the rest of the runtime reaches the store.
//! Writes go to the persistence actor (group commit); reads (`read.rs`) go
//! straight to the database handle. Clones share one actor slot that `Root`
//! re-points when it restarts the actor, so holders never keep a dead ref.

use std::time::Duration;

use ractor::ActorRef;

use super::actor::PersistenceMsg;
use super::database::Database;
use super::leases::Holder;
use super::write::{Durable, Write};
use crate::error::{Error, Result};
use crate::supervision::Slot;

/// How long a flush may wait for the writes queued before it.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Storage {
    actor: Slot<PersistenceMsg>,
    pub(super) db: Database,
}

impl Storage {
    pub(crate) fn new(actor: ActorRef<PersistenceMsg>, db: Database) -> Self {
        Storage {
            actor: Slot::new(actor),
            db,
        }
    }

    /// Why the store refuses writes now (a full disk), if it does.
    pub fn write_failure(&self) -> Option<String> {
        self.db.write_failure()
    }

    /// Whether this node is one of a cluster's (its batches are fenced).
    pub fn clustered(&self) -> bool {
        self.db.fence.is_some()
    }

    /// Takes `role` for this node unless another node holds it live. Outside
    /// a cluster this node always holds it; a node whose lease is lost holds
    /// nothing (an error).
    pub async fn claim_role(&self, role: &str) -> Result<Holder> {
        let Some(fence) = &self.db.fence else {
            return Ok(Holder::Here { epoch: 0 });
        };
        if fence.is_lost() {
            return Err(fence.error());
        }
        let epoch = fence.epoch();
        let claim = self.db.claim_role(role, fence.node(), epoch).await?;
        Ok(match claim.held_by {
            Some(node) => Holder::There(node),
            None => Holder::Here { epoch },
        })
    }

    pub(crate) fn replace(&self, actor: ActorRef<PersistenceMsg>) {
        self.actor.replace(actor);
    }

    /// Queues a write; `durable` fires when it is on disk or has failed. If the
    /// actor is gone, the message is dropped and `durable` reports the failure.
    pub fn write(&self, write: Write, durable: Durable) {
        let _ = self
            .actor
            .get()
            .cast(PersistenceMsg::Write(Box::new(write), durable));
    }

    /// Writes and waits until it is durable.
    pub async fn write_and_wait(&self, write: Write) -> Result<()> {
        let (durable, outcome) = Durable::channel();
        self.write(write, durable);
        outcome
            .await
            .unwrap_or(Err(Error::Unavailable("persistence")))
    }

    /// Test hook: the next `batches` write batches fail, as a full disk
    /// would make them.
    #[cfg(feature = "fault-injection")]
    pub fn inject_failures(&self, batches: u32) {
        let _ = self
            .actor
            .get()
            .cast(PersistenceMsg::InjectFailures(batches));
    }

    /// The whole database as SurrealQL, once every write queued so far has
    /// committed.
    pub async fn export(&self) -> Result<String> {
        self.flush().await;
        self.db.export_text().await
    }

    /// Waits until every write queued so far has committed (or failed).
    pub async fn flush(&self) {
        let _ = self
            .actor
            .get()
            .call(PersistenceMsg::Flush, Some(FLUSH_TIMEOUT))
            .await;
    }
}
