//! One tenant. Supervised by `Root`, started on first use; supervises the
//! tenant's live `Session`s.
//!
//! Starts a session on demand (rehydrating it from the database), restarts a
//! session that panicked after a capped backoff (so a crash loop cannot spin),
//! lets a session that passivated or was deleted go, and restarts nothing once
//! shutdown has begun. Keeps the shared registry of live sessions current so
//! the runtime's fast path can skip this actor.

use std::collections::HashMap;
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
use crate::model::{SessionId, TenantId};
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
    /// Restarts a session that crashed, once its backoff has passed.
    Restart(SessionId),
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
    /// Sessions waiting out a restart backoff, with the callers waiting for them.
    restarting: HashMap<SessionId, Vec<RpcReplyPort<Result<ActorRef<SessionMsg>>>>>,
    shutting_down: bool,
}

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
                } else if let Some(waiting) = state.restarting.get_mut(&session) {
                    waiting.push(reply);
                } else {
                    let _ = reply.send(live_session(&myself, state, session).await);
                }
            }
            TenantMsg::Restart(session) => {
                let waiting = state.restarting.remove(&session).unwrap_or_default();
                if state.shutting_down {
                    return Ok(());
                }
                let started = live_session(&myself, state, session).await;
                if let Err(error) = &started {
                    tracing::warn!(%session, %error, "session not restarted");
                }
                for reply in waiting {
                    let _ = reply.send(match &started {
                        Ok(actor) => Ok(actor.clone()),
                        Err(_) => Err(Error::Unavailable("session")),
                    });
                }
            }
            TenantMsg::Delete { session, reply } => {
                let _ = reply.send(delete(state, session).await);
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
                .or_insert_with(|| Backoff::new(&state.args.supervision))
                .next_delay();
            tracing::error!(%session, %error, ?delay, "session crashed; restarting it");
            state.restarting.entry(session).or_default();
            myself.send_after(delay, move || TenantMsg::Restart(session));
        }
        Ok(())
    }
}

/// The live session, or a newly started one if it exists in the database.
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

async fn live_session(
    myself: &ActorRef<TenantMsg>,
    state: &mut TenantState,
    session: SessionId,
) -> Result<ActorRef<SessionMsg>> {
    if let Some(actor) = state.live.get(&session) {
        return Ok(actor.clone());
    }
    let tenant = state.args.id.clone();
    let record = state
        .args
        .storage
        .load_session(&tenant, session)
        .await?
        .ok_or(Error::SessionNotFound {
            tenant: tenant.clone(),
            session,
        })?;
    let args = SessionArgs {
        record,
        settings: state.args.settings.clone(),
        provider: state.args.provider.clone(),
        storage: state.args.storage.clone(),
        sessions: state.args.sessions.clone(),
        limits: state.args.limits.clone(),
        supervision: state.args.supervision.clone(),
        feeds: state.args.feeds.clone(),
    };
    let (actor, _) = Actor::spawn_linked(None, Session, args, myself.get_cell())
        .await
        .map_err(|error| Error::Storage(format!("session {session} could not start: {error}")))?;
    state.live.insert(session, actor.clone());
    state.by_actor.insert(actor.get_id(), session);
    state.args.registry.insert((tenant, session), actor.clone());
    Ok(actor)
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
    if let Some(actor) = state.live.remove(&session) {
        state.by_actor.remove(&actor.get_id());
        state.args.registry.remove(&(tenant.clone(), session));
        let stopped = actor
            .call(
                |reply| SessionMsg::Terminate {
                    reason: CloseReason::session_deleted(),
                    keep_partial: false,
                    reply,
                },
                Some(TERMINATE_TIMEOUT),
            )
            .await;
        if !matches!(stopped, Ok(CallResult::Success(()))) {
            actor.stop(Some("deleted".into()));
        }
    }
    state.restarting.remove(&session);
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
