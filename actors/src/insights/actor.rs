//! The Analyst: one per node, supervised by `Root` (restarted after a capped
//! backoff; what it was doing is found again by its sweep). It decides which
//! conversation is analysed when, and never waits on a model itself: each
//! analysis is a task (`analysis.rs`) that reports back with `Finished`.
//!
//! - At most `MAX_RUNNING` analyses at once; the rest wait their turn, and
//!   a conversation asked for twice is analysed once (both callers hear).
//! - Every `sweep_every` a task looks for conversations of tenants with a
//!   model that went quiet (`insights.quiet_after_secs`) with messages not
//!   yet analysed, from where the last sweep stopped.
//! - A failed analysis is retried on `insights.retry_schedule_ms` (30 s,
//!   2 min, 10 min, 1 h), then left until the conversation changes again.
//! - `Hold` stops analyses of conversations being erased (waiting for any
//!   running one to end) until `Release`, so nothing read before an erasure
//!   is stored after it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::task::JoinHandle;

use super::analysis::Job;
use crate::agent::AgentProvider;
use crate::error::{Error, Result};
use crate::model::insight::Insight;
use crate::model::{SessionId, TenantId, TenantSettings};
use crate::store::Storage;

/// Analyses running at once.
const MAX_RUNNING: usize = 4;
/// Conversations one sweep takes per tenant.
const SWEEP_PAGE: usize = 100;
/// How far back the first sweep looks for quiet conversations.
const FIRST_LOOK_BACK: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// A conversation, by tenant.
pub type Key = (TenantId, SessionId);
type Reply = RpcReplyPort<Result<Insight>>;

pub enum AnalystMsg {
    /// Analyse this conversation (unless nothing is new: then its insights
    /// as they are); `reply` hears once they are stored.
    Analyze {
        key: Key,
        reply: Option<Reply>,
    },
    /// Look for conversations that went quiet.
    Sweep,
    /// What a sweep found, and where each tenant's next sweep starts.
    Swept(Vec<(TenantId, String, Vec<SessionId>)>),
    /// An analysis ended.
    Finished {
        key: Key,
        outcome: Box<Result<Insight>>,
    },
    /// Analyse none of these until `Release`; answers once none is running.
    Hold {
        keys: Vec<Key>,
        reply: RpcReplyPort<()>,
    },
    Release(Vec<Key>),
}

/// Stays on this node (see `cluster::wire` for what crosses nodes).
impl ractor::Message for AnalystMsg {}

pub struct AnalystArgs {
    pub storage: Storage,
    /// Every tenant's settings (the runtime's directory).
    pub tenants: Arc<DashMap<TenantId, Arc<TenantSettings>>>,
    /// The model provider insights use (the `openai` agent), if registered.
    pub provider: Option<Arc<dyn AgentProvider>>,
    pub sweep_every: Duration,
    /// Waits before each retry of a failed analysis.
    pub retries: Vec<Duration>,
}

pub struct AnalystState {
    args: AnalystArgs,
    running: HashMap<Key, (JoinHandle<()>, Vec<Reply>)>,
    waiting: VecDeque<Key>,
    waiting_replies: HashMap<Key, Vec<Reply>>,
    failures: HashMap<Key, usize>,
    held: HashSet<Key>,
    /// Per tenant: the `updated_at` the next sweep starts from.
    cursors: HashMap<TenantId, String>,
    sweeping: bool,
}

pub struct Analyst;

impl Actor for Analyst {
    type Msg = AnalystMsg;
    type State = AnalystState;
    type Arguments = AnalystArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: AnalystArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(args.sweep_every, || AnalystMsg::Sweep);
        Ok(AnalystState {
            args,
            running: HashMap::new(),
            waiting: VecDeque::new(),
            waiting_replies: HashMap::new(),
            failures: HashMap::new(),
            held: HashSet::new(),
            cursors: HashMap::new(),
            sweeping: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AnalystMsg::Analyze { key, reply } => state.ask(&myself, key, reply),
            AnalystMsg::Sweep if !state.sweeping => state.sweep(&myself),
            AnalystMsg::Sweep => {}
            AnalystMsg::Swept(found) => {
                state.sweeping = false;
                for (tenant, cursor, sessions) in found {
                    for session in sessions {
                        state.ask(&myself, (tenant.clone(), session), None);
                    }
                    state.cursors.insert(tenant, cursor);
                }
            }
            AnalystMsg::Finished { key, outcome } => state.finished(&myself, key, *outcome),
            AnalystMsg::Hold { keys, reply } => {
                for key in keys {
                    if let Some((task, waiters)) = state.running.remove(&key) {
                        task.abort();
                        let _ = task.await;
                        answer(waiters, || Err(Error::Unavailable("analysis")));
                    }
                    state.held.insert(key);
                }
                let _ = reply.send(());
                state.start_waiting(&myself);
            }
            AnalystMsg::Release(keys) => {
                for key in keys {
                    state.held.remove(&key);
                    state.failures.remove(&key);
                }
            }
        }
        Ok(())
    }
}

fn answer(waiters: Vec<Reply>, outcome: impl Fn() -> Result<Insight>) {
    for waiter in waiters {
        let _ = waiter.send(outcome());
    }
}

/// A stored time this far in the past.
fn stored_time_ago(ago: chrono::TimeDelta) -> String {
    crate::model::stored_time(chrono::Utc::now() - ago)
}

impl AnalystState {
    fn ask(&mut self, myself: &ActorRef<AnalystMsg>, key: Key, reply: Option<Reply>) {
        if self.held.contains(&key) {
            if let Some(reply) = reply {
                let _ = reply.send(Err(Error::Unavailable("analysis")));
            }
            return;
        }
        if let Some((_, waiters)) = self.running.get_mut(&key) {
            waiters.extend(reply);
            return;
        }
        let waiters = self.waiting_replies.entry(key.clone()).or_default();
        waiters.extend(reply);
        if !self.waiting.contains(&key) {
            self.waiting.push_back(key);
        }
        self.start_waiting(myself);
    }

    fn start_waiting(&mut self, myself: &ActorRef<AnalystMsg>) {
        while self.running.len() < MAX_RUNNING {
            let Some(key) = self.waiting.pop_front() else {
                return;
            };
            let waiters = self.waiting_replies.remove(&key).unwrap_or_default();
            if self.held.contains(&key) {
                answer(waiters, || Err(Error::Unavailable("analysis")));
                continue;
            }
            let task = self.spawn(myself, key.clone());
            self.running.insert(key, (task, waiters));
        }
    }

    fn spawn(&self, myself: &ActorRef<AnalystMsg>, key: Key) -> JoinHandle<()> {
        let settings = self
            .args
            .tenants
            .get(&key.0)
            .map(|entry| entry.value().clone());
        let job = match (settings, &self.args.provider) {
            (Some(settings), Some(provider)) => Some(Job {
                storage: self.args.storage.clone(),
                settings,
                provider: provider.clone(),
                tenant: key.0.clone(),
                session: key.1,
            }),
            _ => None,
        };
        let myself = myself.clone();
        tokio::spawn(async move {
            let outcome = match job {
                Some(job) => job.run().await,
                None => Err(Error::NoModel),
            };
            let outcome = Box::new(outcome);
            let _ = myself.cast(AnalystMsg::Finished { key, outcome });
        })
    }

    fn finished(&mut self, myself: &ActorRef<AnalystMsg>, key: Key, outcome: Result<Insight>) {
        let Some((_, waiters)) = self.running.remove(&key) else {
            // Aborted by `Hold`: its callers were told already.
            return;
        };
        match &outcome {
            Ok(_) => {
                self.failures.remove(&key);
            }
            Err(Error::AnalysisFailed(_) | Error::Storage(_) | Error::Unavailable(_)) => {
                let failures = self.failures.entry(key.clone()).or_default();
                match self.args.retries.get(*failures) {
                    Some(&delay) => {
                        *failures += 1;
                        tracing::warn!(tenant = %key.0, session = %key.1, error = ?outcome.as_ref().err(), ?delay, "analysis failed; retrying");
                        let retry = key.clone();
                        myself.send_after(delay, move || AnalystMsg::Analyze {
                            key: retry,
                            reply: None,
                        });
                    }
                    None => {
                        tracing::error!(tenant = %key.0, session = %key.1, "analysis failed after every retry; left until the conversation changes");
                        self.failures.remove(&key);
                    }
                }
            }
            Err(_) => {}
        }
        answer(waiters, || outcome.clone());
        self.start_waiting(myself);
    }

    /// Starts a sweep task over every tenant with a model and a quiet time.
    fn sweep(&mut self, myself: &ActorRef<AnalystMsg>) {
        if self.args.provider.is_none() {
            return;
        }
        let mut asks = Vec::new();
        for entry in self.args.tenants.iter() {
            let (tenant, settings) = (entry.key().clone(), entry.value());
            let quiet = settings.insights.quiet_after_secs;
            if quiet == 0 || settings.insight_model().is_none() {
                continue;
            }
            let quiet = chrono::TimeDelta::seconds(quiet as i64);
            let since = self
                .cursors
                .get(&tenant)
                .cloned()
                .unwrap_or_else(|| stored_time_ago(quiet + FIRST_LOOK_BACK));
            asks.push((tenant, since, stored_time_ago(quiet)));
        }
        if asks.is_empty() {
            return;
        }
        self.sweeping = true;
        let (storage, myself) = (self.args.storage.clone(), myself.clone());
        tokio::spawn(async move {
            let mut found = Vec::new();
            for (tenant, since, until) in asks {
                match storage
                    .quiet_conversations(&tenant, &since, &until, SWEEP_PAGE)
                    .await
                {
                    Ok(rows) => {
                        // A full page: the next sweep goes on from its last row.
                        let cursor = match rows.last() {
                            Some(last) if rows.len() == SWEEP_PAGE => last.updated_at.clone(),
                            _ => until,
                        };
                        let sessions = rows.iter().map(|row| row.session_id).collect();
                        found.push((tenant, cursor, sessions));
                    }
                    Err(error) => {
                        tracing::warn!(%tenant, %error, "the insights sweep could not read")
                    }
                }
            }
            let _ = myself.cast(AnalystMsg::Swept(found));
        });
    }
}
