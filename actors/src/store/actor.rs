//! The persistence actor: the one writer of SurrealDB. Supervised by `Root`,
//! which restarts it with the same [`Database`] handle if it panics.
//!
//! Writes are group-committed. While one batch is being written, new writes
//! queue up; when the batch commits, every waiter of that batch is told, and
//! whatever queued meanwhile goes out as the next batch, in one transaction and
//! so one fsync (surrealkv with `sync=every`). Batches run in a spawned task,
//! so new writes are never stuck behind the disk. Reads do not pass through
//! here at all (`read.rs`).
//!
//! The conversation counters that committed messages owe are kept here and
//! written a little later, many messages' worth at once (`counters.rs`); a
//! flush writes them at once, so a reader that flushes sees them.
//!
//! When a batch fails (a full disk), its writers are told
//! `StorageUnavailable` and nothing of it is acknowledged (a commit that
//! fails midway may still leave part of it behind: hence the free-space
//! reserve checked before each batch, `database.rs`); the actor then probes
//! with a one-record write every [`PROBE_INTERVAL`] until one commits, so
//! `/readyz` turns ready again by itself once space returns, even if no
//! client writes meanwhile.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::Notify;

use super::counters::{Counters, PendingCounters, touches_of};
use super::database::Database;
use super::write::{Durable, Write};
use crate::error::{Error, Result};

/// The most writes one transaction carries; more wait for the next batch.
const MAX_BATCH: usize = 512;

/// How long owed counters wait to be written with others: long enough that
/// a question and its answer usually share one update.
const COUNTERS_DELAY: Duration = Duration::from_millis(200);

/// How often a failing store is tried again with a probe write.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

pub enum PersistenceMsg {
    /// Stores a change; `Durable` fires once it is on disk (or failed).
    /// Boxed, so every other message stays small.
    Write(Box<Write>, Durable),
    /// A barrier: answers once every write queued before it has committed or
    /// failed. Writes queued after it do not delay it.
    Flush(RpcReplyPort<()>),
    /// Writes and batches committed so far: writes per batch is the
    /// group-commit gain (the actor's own counters writes are not counted).
    #[cfg(test)]
    Stats(RpcReplyPort<WriteStats>),
    /// The batch in flight (of this many writes) finished; start the next one.
    BatchDone(u64),
    /// A committed batch's messages owe their conversations' counters.
    Owed(Counters),
    /// Time to write the counters owed.
    WriteCounters,
    /// A counters write failed: owed again.
    CountersFailed(Counters),
    /// Time to try the failing store again.
    Probe,
    /// The probe finished (its outcome is in the database's write health).
    ProbeDone,
    /// Test hook: the next `n` batches fail as a full disk would make them.
    #[cfg(feature = "fault-injection")]
    InjectFailures(u32),
}

/// Stays on this node (see `cluster::wire` for what crosses nodes).
impl ractor::Message for PersistenceMsg {}

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
    counters: PendingCounters,
    counters_due: bool,
    /// A probe is scheduled or running.
    probing: bool,
    /// Batches still to fail on purpose (`InjectFailures`).
    #[cfg(feature = "fault-injection")]
    injected_failures: u32,
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
        // Counters a predecessor owed (it crashed, or the process did) are
        // recomputed from the logs before any new write.
        let repaired = args.db.repair_counters().await?;
        if repaired > 0 {
            tracing::info!(
                conversations = repaired,
                "recomputed conversation counters left unwritten"
            );
        }
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
            counters: PendingCounters::default(),
            counters_due: false,
            probing: false,
            #[cfg(feature = "fault-injection")]
            injected_failures: 0,
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
                if let Write::WithEvents(_, events) = &mut *write {
                    // Stored for delivery only if an endpoint wants it; a few
                    // kinds are kept anyway, already dispatched.
                    events.retain_mut(|event| {
                        let wanted = state.subscriptions.wants(&event.tenant, &event.kind);
                        event.dispatched = !wanted;
                        wanted || crate::model::ALWAYS_RECORDED.contains(&event.kind.as_str())
                    });
                }
                state.received += 1;
                state.queued.push((*write, durable));
                start_batch(&myself, state);
            }
            PersistenceMsg::BatchDone(writes) => {
                state.batch_in_flight = false;
                state.finished += writes;
                start_batch(&myself, state);
                probe_if_failing(&myself, state);
            }
            PersistenceMsg::Probe => {
                let (db, myself) = (state.db.clone(), myself.clone());
                tokio::spawn(async move {
                    let _ = db.probe_write().await;
                    let _ = myself.cast(PersistenceMsg::ProbeDone);
                });
            }
            PersistenceMsg::ProbeDone => {
                state.probing = false;
                match state.db.write_failure() {
                    Some(_) => probe_if_failing(&myself, state),
                    None => tracing::info!("the store takes writes again"),
                }
            }
            PersistenceMsg::Owed(counters) => owe(&myself, state, counters),
            PersistenceMsg::WriteCounters => {
                state.counters_due = false;
                queue_counters(&myself, state);
                start_batch(&myself, state);
            }
            PersistenceMsg::CountersFailed(counters) => owe(&myself, state, counters),
            #[cfg(feature = "fault-injection")]
            PersistenceMsg::InjectFailures(batches) => state.injected_failures = batches,
            PersistenceMsg::Flush(reply) => {
                queue_counters(&myself, state);
                state.flush_waiters.push((state.received, reply));
                start_batch(&myself, state);
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

/// Whether this batch is to fail on purpose (test builds only).
#[cfg(feature = "fault-injection")]
fn injected_failure(state: &mut PersistenceState) -> bool {
    let fail = state.injected_failures > 0;
    state.injected_failures = state.injected_failures.saturating_sub(1);
    fail
}

#[cfg(not(feature = "fault-injection"))]
fn injected_failure(_state: &mut PersistenceState) -> bool {
    false
}

/// Schedules a probe write while the store refuses writes.
fn probe_if_failing(myself: &ActorRef<PersistenceMsg>, state: &mut PersistenceState) {
    if !state.probing && state.db.write_failure().is_some() {
        state.probing = true;
        myself.send_after(PROBE_INTERVAL, || PersistenceMsg::Probe);
    }
}

/// Adds counters owed, and makes sure they are written before long.
fn owe(myself: &ActorRef<PersistenceMsg>, state: &mut PersistenceState, counters: Counters) {
    state.counters.add(counters);
    if !state.counters_due {
        state.counters_due = true;
        myself.send_after(COUNTERS_DELAY, || PersistenceMsg::WriteCounters);
    }
}

/// Queues the counters owed as a write of their own; if it fails, they are
/// owed again (the markers keep the debt on disk meanwhile).
fn queue_counters(myself: &ActorRef<PersistenceMsg>, state: &mut PersistenceState) {
    let Some(counters) = state.counters.take() else {
        return;
    };
    let retry = counters.clone();
    let write = Write::Counters(counters);
    let myself = myself.clone();
    let durable = Durable::new(move |outcome| {
        if outcome.is_err() {
            let _ = myself.cast(PersistenceMsg::CountersFailed(retry));
        }
    });
    state.received += 1;
    state.queued.push((write, durable));
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
    let own = batch
        .iter()
        .filter(|(write, _)| matches!(write, Write::Counters(_)))
        .count();
    state.stats.writes += (batch.len() - own) as u64;
    state.stats.batches += 1;
    let fail = injected_failure(state);
    let db = state.db.clone();
    let events_committed = state.events_committed.clone();
    let myself = myself.clone();
    tokio::spawn(async move {
        let count = batch.len() as u64;
        let (writes, waiters): (Vec<Write>, Vec<Durable>) = batch.into_iter().unzip();
        let touches = touches_of(writes.iter().filter_map(Write::appended));
        let marker = (!touches.is_empty()).then(|| uuid::Uuid::now_v7().to_string());
        let owed = marker.as_deref().map(|marker| (marker, touches.as_slice()));
        let started = std::time::Instant::now();
        let outcome = match fail {
            true => {
                let fault = Err(Error::Storage("injected storage fault".into()));
                db.record_write(&fault);
                fault
            }
            false => db.write_batch(&writes, owed).await,
        };
        if outcome.is_ok() {
            let roles = writes.iter().filter_map(Write::appended).map(|m| m.role);
            crate::metrics::committed(writes.len(), started.elapsed(), roles);
        }
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
        // The actor hears of the counters a committed batch owes before any
        // waiter hears of the commit, so a flush asked by someone who saw an
        // ack writes them too.
        if let (Ok(()), Some(marker)) = (&outcome, marker) {
            let markers = vec![marker];
            let _ = myself.cast(PersistenceMsg::Owed(Counters { touches, markers }));
        }
        for waiter in waiters {
            waiter.complete(match &outcome {
                Ok(()) => Ok(()),
                Err(Error::Storage(why)) => Err(Error::StorageUnavailable(why.clone())),
                Err(error) => Err(error.clone()),
            });
        }
        // If the actor is gone, its successor starts with an empty queue (and
        // repairs the counters this batch owed).
        let _ = myself.cast(PersistenceMsg::BatchDone(count));
    });
}
