//! The persistence actor: the one writer of SurrealDB. Supervised by `Root`,
//! which restarts it with the same [`Database`] handle if it panics.
//!
//! Writes are group-committed. While one batch is being written, new writes
//! queue up; when the batch commits, every waiter of that batch is told, and
//! whatever queued meanwhile goes out as the next batch, in one transaction and
//! so one fsync (surrealkv with `sync=every`). Batches run in a spawned task,
//! so new writes are never stuck behind the disk. Reads do not pass through
//! here at all (`read.rs`).

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::Notify;

use super::database::Database;
use super::write::{Durable, Write};
use crate::error::{Error, Result};

/// The most writes one transaction carries; more wait for the next batch.
const MAX_BATCH: usize = 512;

pub enum PersistenceMsg {
    /// Stores a change; `Durable` fires once it is on disk (or failed).
    Write(Write, Durable),
    /// A barrier: answers once every write queued before it has committed or
    /// failed. Writes queued after it do not delay it.
    Flush(RpcReplyPort<()>),
    /// Writes and batches committed so far: writes per batch is the group-commit gain.
    #[cfg(test)]
    Stats(RpcReplyPort<WriteStats>),
    /// The batch in flight (of this many writes) finished; start the next one.
    BatchDone(u64),
}

/// Counters of committed work since the actor started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    pub writes: u64,
    pub batches: u64,
}

/// What the persistence actor starts with (and restarts with).
#[derive(Clone)]
pub struct PersistenceArgs {
    pub db: Database,
    /// Notified after a batch with events commits: the webhook actor's cue.
    pub events_committed: Arc<Notify>,
    /// Which events some endpoint wants: only those are stored for delivery.
    pub subscriptions: crate::model::Subscriptions,
}

pub struct PersistenceState {
    db: Database,
    events_committed: Arc<Notify>,
    subscriptions: crate::model::Subscriptions,
    stats: WriteStats,
    queued: Vec<(Write, Durable)>,
    batch_in_flight: bool,
    /// Writes received, and writes whose batch has finished: a flush waits
    /// until `finished` reaches the `received` it saw.
    received: u64,
    finished: u64,
    flush_waiters: Vec<(u64, RpcReplyPort<()>)>,
}

pub struct Persistence;

impl Actor for Persistence {
    type Msg = PersistenceMsg;
    type State = PersistenceState;
    type Arguments = PersistenceArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: PersistenceArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(PersistenceState {
            db: args.db,
            events_committed: args.events_committed,
            subscriptions: args.subscriptions,
            stats: WriteStats::default(),
            queued: Vec::new(),
            batch_in_flight: false,
            received: 0,
            finished: 0,
            flush_waiters: Vec::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PersistenceMsg::Write(mut write, durable) => {
                if let Write::WithEvents(_, events) = &mut write {
                    // Stored for delivery only if an endpoint wants it; a few
                    // kinds are kept anyway, already dispatched.
                    events.retain_mut(|event| {
                        let wanted = state.subscriptions.wants(&event.tenant, &event.kind);
                        event.dispatched = !wanted;
                        wanted || crate::model::ALWAYS_RECORDED.contains(&event.kind.as_str())
                    });
                }
                state.received += 1;
                state.queued.push((write, durable));
                start_batch(&myself, state);
            }
            PersistenceMsg::BatchDone(count) => {
                state.batch_in_flight = false;
                state.finished += count;
                start_batch(&myself, state);
            }
            PersistenceMsg::Flush(reply) => {
                state.flush_waiters.push((state.received, reply));
            }
            #[cfg(test)]
            PersistenceMsg::Stats(reply) => {
                let _ = reply.send(state.stats);
            }
        }
        let finished = state.finished;
        for (_, reply) in state
            .flush_waiters
            .extract_if(.., |(target, _)| *target <= finished)
        {
            let _ = reply.send(());
        }
        Ok(())
    }
}

/// Sends everything queued (up to `MAX_BATCH`) as one transaction, unless a
/// batch is already in flight: then it waits for `BatchDone`.
fn start_batch(myself: &ActorRef<PersistenceMsg>, state: &mut PersistenceState) {
    if state.batch_in_flight || state.queued.is_empty() {
        return;
    }
    let take = state.queued.len().min(MAX_BATCH);
    let batch: Vec<(Write, Durable)> = state.queued.drain(..take).collect();
    state.batch_in_flight = true;
    state.stats.writes += batch.len() as u64;
    state.stats.batches += 1;
    let db = state.db.clone();
    let events_committed = state.events_committed.clone();
    let myself = myself.clone();
    tokio::spawn(async move {
        let count = batch.len() as u64;
        let (writes, waiters): (Vec<Write>, Vec<Durable>) = batch.into_iter().unzip();
        let outcome = db.write_batch(&writes).await;
        match &outcome {
            Err(error) => tracing::error!(%error, writes = writes.len(), "a write batch failed"),
            Ok(())
                if writes.iter().any(|write| {
                    matches!(write, Write::WithEvents(_, events) if events.iter().any(|event| !event.dispatched))
                }) =>
            {
                events_committed.notify_one();
            }
            Ok(()) => {}
        }
        for waiter in waiters {
            waiter.complete(match &outcome {
                Ok(()) => Ok(()),
                Err(error) => Err(Error::Storage(error.to_string())),
            });
        }
        // If the actor is gone, its successor starts with an empty queue.
        let _ = myself.cast(PersistenceMsg::BatchDone(count));
    });
}
