//! One tenant. Supervised by `Root`, started on first use; supervises the
//! tenant's live `Session`s.
//!
//! Starts a session on demand, restarts a session that panicked after a
//! capped backoff (so a crash loop cannot spin), lets a session that
//! passivated or was deleted go, and restarts nothing once shutdown has
//! begun. Keeps the shared registry of live sessions current so the
//! runtime's fast path can skip this actor.
//!
//! A session starts in a task of its own (reading its record, rehydrating),
//! never in this actor's handler, so many sessions start side by side; the
//! task reports back with `Started`, and callers asking meanwhile wait for
//! it. A conversation created a moment ago is started from the record the
//! runtime handed over (`Created`), with no read at all.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::agent::AgentProvider;
use crate::config::{Limits, SessionConfig, SupervisionConfig};
use crate::conversation::outbound::CloseReason;
use crate::conversation::session::{Session, SessionArgs, SessionMsg};
use crate::error::{Error, Result};
use crate::model::TenantSettings;
use crate::model::{SessionId, SessionRecord, TenantId};
use crate::store::{Storage, Write};
use crate::supervision::Backoff;

/// Live sessions of every tenant, for lookups that need not ask a tenant.
pub type SessionRegistry = Arc<DashMap<(TenantId, SessionId), ActorRef<SessionMsg>>>;

/// How long a session gets to store its last answer and close its sockets.
const TERMINATE_TIMEOUT: Duration = Duration::from_secs(10);

pub enum TenantMsg {
    /// The live session with this id, started (rehydrated) if needed.
    Session {
        session: SessionId,
        reply: RpcReplyPort<Result<ActorRef<SessionMsg>>>,
    },
    /// Stops the session (closing its sockets) and deletes it with its log.
    Delete {
        session: SessionId,
        reply: RpcReplyPort<Result<()>>,
    },
    /// Stops these sessions (closing their sockets), so nothing of them is
    /// left in memory, then stores `write` (the erasure) and answers.
    Erase {
        sessions: Vec<SessionId>,
        write: Box<Write>,
        reply: RpcReplyPort<Result<()>>,
    },
    /// Restarts a session that crashed, once its backoff has passed.
    Restart(SessionId),
    /// A start task finished.
    Started {
        session: SessionId,
        started: Result<ActorRef<SessionMsg>>,
    },
    /// A conversation was just created: kept so its first use needs no read.
    Created(Box<SessionRecord>),
    /// Terminates every live session (storing answers in progress), then stops.
    Shutdown(RpcReplyPort<()>),
    /// The tenant's settings changed: new sessions and every live one use them.
    Reconfigure {
        settings: Arc<TenantSettings>,
        provider: Arc<dyn AgentProvider>,
    },
    /// Test hook: panics the session's handler, to exercise restarts.
    #[cfg(feature = "fault-injection")]
    InjectSessionPanic(SessionId),
}

/// Stays on this node (see `cluster::wire` for what crosses nodes).
impl ractor::Message for TenantMsg {}

pub struct TenantArgs {
    pub id: TenantId,
    pub settings: Arc<TenantSettings>,
    pub provider: Arc<dyn AgentProvider>,
    pub storage: Storage,
    pub registry: SessionRegistry,
    pub feeds: crate::conversation::feed::Feeds,
    pub sessions: SessionConfig,
    pub limits: Limits,
    pub supervision: SupervisionConfig,
}

pub struct TenantState {
    args: TenantArgs,
    live: HashMap<SessionId, ActorRef<SessionMsg>>,
    by_actor: HashMap<ActorId, SessionId>,
    backoffs: HashMap<SessionId, Backoff>,
    /// Sessions waiting out a restart backoff, or being started, with the
    /// callers waiting for them.
    restarting: HashMap<SessionId, Vec<Waiter>>,
    starting: HashMap<SessionId, Vec<Waiter>>,
    /// Records of conversations created and not yet started, oldest first.
    fresh: HashMap<SessionId, SessionRecord>,
    fresh_order: VecDeque<SessionId>,
    shutting_down: bool,
}

type Waiter = RpcReplyPort<Result<ActorRef<SessionMsg>>>;

/// New conversations' records kept for their first start; older ones are read.
const MAX_FRESH: usize = 4096;

pub struct Tenant;

impl Actor for Tenant {
    type Msg = TenantMsg;
    type State = TenantState;
    type Arguments = TenantArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: TenantArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(TenantState {
            args,
            live: HashMap::new(),
            by_actor: HashMap::new(),
            backoffs: HashMap::new(),
            restarting: HashMap::new(),
            starting: HashMap::new(),
            fresh: HashMap::new(),
            fresh_order: VecDeque::new(),
            shutting_down: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TenantMsg::Session { session, reply } => {
                if state.shutting_down {
                    let _ = reply.send(Err(Error::ShuttingDown));
                } else if let Some(actor) = state.live.get(&session) {
                    let _ = reply.send(Ok(actor.clone()));
                } else if let Some(waiting) = state.restarting.get_mut(&session) {
                    waiting.push(reply);
                } else {
                    start(&myself, state, session, vec![reply]);
                }
            }
            TenantMsg::Restart(session) => {
                let waiting = state.restarting.remove(&session).unwrap_or_default();
                if !state.shutting_down {
                    start(&myself, state, session, waiting);
                }
            }
            TenantMsg::Started { session, started } => started_one(state, session, started),
            TenantMsg::Created(record) => remember_fresh(state, *record),
            TenantMsg::Delete { session, reply } => {
                let _ = reply.send(delete(state, session).await);
            }
            TenantMsg::Erase {
                sessions,
                write,
                reply,
            } => {
                for session in sessions {
                    stop_live(state, session, CloseReason::session_erased()).await;
                }
                let _ = reply.send(state.args.storage.write_and_wait(*write).await);
            }
            TenantMsg::Shutdown(reply) => {
                shut_down(state).await;
                let _ = reply.send(());
                myself.stop(Some("shutdown".into()));
            }
            TenantMsg::Reconfigure { settings, provider } => {
                for session in state.live.values() {
                    let _ = session.cast(SessionMsg::Reconfigure {
                        settings: settings.clone(),
                        provider: provider.clone(),
                    });
                }
                state.args.settings = settings;
                state.args.provider = provider;
            }
            #[cfg(feature = "fault-injection")]
            TenantMsg::InjectSessionPanic(session) => {
                if let Some(actor) = state.live.get(&session) {
                    let _ = actor.cast(SessionMsg::InjectPanic);
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some((cell, failure)) = crate::supervision::exit_of(event) else {
            return Ok(());
        };
        let Some(session) = state.by_actor.remove(&cell.get_id()) else {
            return Ok(());
        };
        state.live.remove(&session);
        crate::metrics::sessions_live(&state.args.id.0, state.live.len());
        state
            .args
            .registry
            .remove(&(state.args.id.clone(), session));
        if let Some(error) = failure
            && !state.shutting_down
        {
            let delay = state
                .backoffs
                .entry(session)
                .or_insert_with(|| Backoff::new("session", &state.args.supervision))
                .next_delay();
            tracing::error!(%session, %error, ?delay, "session crashed; restarting it");
            state.restarting.entry(session).or_default();
            myself.send_after(delay, move || TenantMsg::Restart(session));
        }
        Ok(())
    }
}

/// Every live session stores an answer in progress as `interrupted` and
/// closes its sockets; whoever waits for a restarting one is told.
async fn shut_down(state: &mut TenantState) {
    state.shutting_down = true;
    for waiting in state.restarting.drain() {
        for reply in waiting.1 {
            let _ = reply.send(Err(Error::ShuttingDown));
        }
    }
    let sessions: Vec<ActorRef<SessionMsg>> = state.live.values().cloned().collect();
    let terminations = sessions.iter().map(|session| {
        session.call(
            |reply| SessionMsg::Terminate {
                reason: CloseReason::shutting_down(),
                keep_partial: true,
                reply,
            },
            Some(TERMINATE_TIMEOUT),
        )
    });
    futures_util::future::join_all(terminations).await;
    for session in state.live.keys() {
        state
            .args
            .registry
            .remove(&(state.args.id.clone(), *session));
    }
}

/// Starts `session` in a task (unless it is already starting), reading its
/// record unless it was just created; `waiting` are told when it is live.
fn start(
    myself: &ActorRef<TenantMsg>,
    state: &mut TenantState,
    session: SessionId,
    waiting: Vec<Waiter>,
) {
    if let Some(already) = state.starting.get_mut(&session) {
        already.extend(waiting);
        return;
    }
    state.starting.insert(session, waiting);
    let fresh = state.fresh.remove(&session);
    let args = &state.args;
    let (tenant, storage) = (args.id.clone(), args.storage.clone());
    let (settings, provider) = (args.settings.clone(), args.provider.clone());
    let (sessions, limits) = (args.sessions.clone(), args.limits.clone());
    let (supervision, feeds) = (args.supervision.clone(), args.feeds.clone());
    let tenant_actor = myself.clone();
    tokio::spawn(async move {
        let started = async {
            let is_fresh = fresh.is_some();
            let record = match fresh {
                Some(record) => record,
                None => storage
                    .load_session(&tenant, session)
                    .await?
                    .ok_or(Error::SessionNotFound { tenant, session })?,
            };
            let session_args = SessionArgs {
                record,
                fresh: is_fresh,
                settings,
                provider,
                storage,
                sessions,
                limits,
                supervision,
                feeds,
            };
            let supervisor = tenant_actor.get_cell();
            let (actor, _) = Actor::spawn_linked(None, Session, session_args, supervisor)
                .await
                .map_err(|error| {
                    Error::Storage(format!("session {session} could not start: {error}"))
                })?;
            Ok(actor)
        }
        .await;
        if let Err(ractor::MessagingErr::SendErr(TenantMsg::Started {
            started: Ok(actor), ..
        })) = tenant_actor.cast(TenantMsg::Started { session, started })
        {
            actor.stop(Some("its tenant is gone".into()));
        }
    });
}

/// A start task finished: the session is live (or not), and whoever
/// waited for it is told.
fn started_one(state: &mut TenantState, session: SessionId, started: Result<ActorRef<SessionMsg>>) {
    let waiting = state.starting.remove(&session).unwrap_or_default();
    let started = match started {
        Ok(actor) if state.shutting_down => {
            actor.stop(Some("shutdown".into()));
            Err(Error::ShuttingDown)
        }
        Ok(actor) => {
            state.live.insert(session, actor.clone());
            crate::metrics::sessions_live(&state.args.id.0, state.live.len());
            state.by_actor.insert(actor.get_id(), session);
            let key = (state.args.id.clone(), session);
            state.args.registry.insert(key, actor.clone());
            Ok(actor)
        }
        Err(error) => {
            tracing::warn!(%session, %error, "session not started");
            Err(error)
        }
    };
    for reply in waiting {
        let _ = reply.send(match &started {
            Ok(actor) => Ok(actor.clone()),
            Err(Error::SessionNotFound { tenant, session }) => Err(Error::SessionNotFound {
                tenant: tenant.clone(),
                session: *session,
            }),
            Err(Error::ShuttingDown) => Err(Error::ShuttingDown),
            Err(Error::Storage(why)) => Err(Error::Storage(why.clone())),
            Err(_) => Err(Error::Unavailable("session")),
        });
    }
}

/// Keeps a new conversation's record for its first start, forgetting the
/// oldest beyond `MAX_FRESH` (those are read from the database instead).
fn remember_fresh(state: &mut TenantState, record: SessionRecord) {
    if state.shutting_down || state.live.contains_key(&record.id) {
        return;
    }
    state.fresh_order.push_back(record.id);
    state.fresh.insert(record.id, record);
    while state.fresh_order.len() > MAX_FRESH {
        if let Some(oldest) = state.fresh_order.pop_front() {
            state.fresh.remove(&oldest);
        }
    }
}

/// Stops a live session (its sockets closed with `reason`, an answer in
/// progress dropped) and forgets every copy of it this actor keeps.
async fn stop_live(state: &mut TenantState, session: SessionId, reason: CloseReason) {
    if let Some(actor) = state.live.remove(&session) {
        crate::metrics::sessions_live(&state.args.id.0, state.live.len());
        state.by_actor.remove(&actor.get_id());
        let tenant = state.args.id.clone();
        state.args.registry.remove(&(tenant, session));
        let stopped = actor
            .call(
                |reply| SessionMsg::Terminate {
                    reason,
                    keep_partial: false,
                    reply,
                },
                Some(TERMINATE_TIMEOUT),
            )
            .await;
        if !matches!(stopped, Ok(CallResult::Success(()))) {
            actor.stop(Some("stopped".into()));
        }
    }
    state.restarting.remove(&session);
    state.fresh.remove(&session);
}

async fn delete(state: &mut TenantState, session: SessionId) -> Result<()> {
    let tenant = state.args.id.clone();
    if state
        .args
        .storage
        .load_session(&tenant, session)
        .await?
        .is_none()
    {
        return Err(Error::SessionNotFound { tenant, session });
    }
    stop_live(state, session, CloseReason::session_deleted()).await;
    state
        .args
        .storage
        .write_and_wait(Write::WithEvents(
            Box::new(Write::DeleteSession {
                tenant: tenant.clone(),
                session,
            }),
            vec![crate::model::events::conversation_deleted(&tenant, session)],
        ))
        .await
}
