//! The root supervisor: the top of the tree. Supervises `Persistence`,
//! `Webhooks`, the `Analyst` and one `Tenant` per tenant, started on first use.
//!
//! Persistence that panics is restarted after a capped backoff with the same
//! database handle, and every `Storage` clone is re-pointed at the new actor;
//! `Webhooks` and the `Analyst` likewise (their state is in the database). A tenant that fails is
//! let go and started again on its next use. Shutdown runs here, once, in
//! order: tenants store their answers in progress and close their sockets,
//! webhook workers stop (what they had not delivered is sent after the next
//! start), persistence drains, then the root stops.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::agent::AgentRegistry;
use crate::config::RuntimeConfig;
use crate::model::TenantSettings;

/// Every tenant this node serves: from the config file and from the database,
/// grown by the admin API while running.
pub type TenantDirectory = Arc<dashmap::DashMap<TenantId, Arc<TenantSettings>>>;
use crate::error::{Error, Result};
use crate::insights::{Analyst, AnalystArgs, AnalystHandle, AnalystMsg};
use crate::model::Subscriptions;
use crate::model::TenantId;
use crate::net::egress::EgressPolicy;
use crate::store::{Database, Persistence, PersistenceArgs, PersistenceMsg, Storage};
use crate::supervision::Backoff;
use crate::tree::tenant::{SessionRegistry, Tenant, TenantArgs, TenantMsg};
use crate::webhooks::{Webhooks, WebhooksArgs, WebhooksHandle, WebhooksMsg};

/// How long each tenant gets to shut its sessions down.
const TENANT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

pub enum RootMsg {
    /// The storage handle, for the runtime's reads.
    Storage(RpcReplyPort<Storage>),
    /// The webhook actor's handle, for the admin API.
    Webhooks(RpcReplyPort<WebhooksHandle>),
    /// Restarts the webhook actor after its backoff.
    RestartWebhooks,
    /// The Analyst's handle, for insights.
    Analyst(RpcReplyPort<AnalystHandle>),
    /// Restarts the Analyst after its backoff.
    RestartAnalyst,
    /// The tenant's actor, started if needed.
    Tenant {
        id: TenantId,
        reply: RpcReplyPort<Result<ActorRef<TenantMsg>>>,
    },
    /// Restarts persistence after its backoff.
    RestartPersistence,
    /// A tenant's settings changed in the directory: tell its actor, if running.
    Reconfigure(TenantId),
    /// Orderly stop of the whole tree; answers when everything is stored.
    Shutdown(RpcReplyPort<()>),
}

/// Stays on this node (see `cluster::wire` for what crosses nodes).
impl ractor::Message for RootMsg {}

pub struct RootArgs {
    pub db: Database,
    pub config: RuntimeConfig,
    pub tenants: TenantDirectory,
    pub agents: AgentRegistry,
    pub registry: SessionRegistry,
    pub policy: EgressPolicy,
    pub feeds: crate::conversation::feed::Feeds,
    /// How the webhook actor reaches other nodes (set once a cluster runs).
    pub nudger: crate::webhooks::NudgerSlot,
}

pub struct RootState {
    args: RootArgs,
    storage: Storage,
    persistence: ActorRef<PersistenceMsg>,
    persistence_backoff: Backoff,
    events_committed: Arc<tokio::sync::Notify>,
    subscriptions: Subscriptions,
    webhooks: WebhooksHandle,
    webhooks_backoff: Backoff,
    analyst: AnalystHandle,
    analyst_backoff: Backoff,
    tenants: HashMap<TenantId, ActorRef<TenantMsg>>,
    tenant_actors: HashMap<ActorId, TenantId>,
    shutting_down: bool,
}

pub struct Root;

impl Actor for Root {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = RootArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: RootArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let events_committed = Arc::new(tokio::sync::Notify::new());
        let subscriptions = Subscriptions::default();
        let persistence_args = PersistenceArgs {
            db: args.db.clone(),
            events_committed: events_committed.clone(),
            subscriptions: subscriptions.clone(),
        };
        let (persistence, _) =
            Actor::spawn_linked(None, Persistence, persistence_args, myself.get_cell()).await?;
        let storage = Storage::new(persistence.clone(), args.db.clone());
        let webhooks =
            spawn_webhooks(&myself, &args, &storage, &events_committed, &subscriptions).await?;
        let analyst = spawn_analyst(&myself, &args, &storage).await?;
        Ok(RootState {
            analyst: AnalystHandle::new(analyst),
            analyst_backoff: Backoff::new("analyst", &args.config.supervision),
            storage,
            persistence,
            persistence_backoff: Backoff::new("persistence", &args.config.supervision),
            events_committed,
            subscriptions,
            webhooks: WebhooksHandle::new(webhooks),
            webhooks_backoff: Backoff::new("webhooks", &args.config.supervision),
            tenants: HashMap::new(),
            tenant_actors: HashMap::new(),
            shutting_down: false,
            args,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RootMsg::Storage(reply) => {
                let _ = reply.send(state.storage.clone());
            }
            RootMsg::Webhooks(reply) => {
                let _ = reply.send(state.webhooks.clone());
            }
            RootMsg::RestartWebhooks if !state.shutting_down => {
                restart_webhooks(&myself, state).await;
            }
            RootMsg::Analyst(reply) => {
                let _ = reply.send(state.analyst.clone());
            }
            RootMsg::RestartAnalyst if !state.shutting_down => {
                match spawn_analyst(&myself, &state.args, &state.storage).await {
                    Ok(analyst) => state.analyst.replace(analyst),
                    Err(error) => {
                        let delay = state.analyst_backoff.next_delay();
                        tracing::error!(%error, ?delay, "the analyst did not restart; trying again");
                        myself.send_after(delay, || RootMsg::RestartAnalyst);
                    }
                }
            }
            RootMsg::Tenant { id, reply } => {
                let _ = reply.send(tenant(&myself, state, id).await);
            }
            RootMsg::Reconfigure(id) => reconfigure(state, &id),
            RootMsg::RestartPersistence if !state.shutting_down => {
                let args = PersistenceArgs {
                    db: state.args.db.clone(),
                    events_committed: state.events_committed.clone(),
                    subscriptions: state.subscriptions.clone(),
                };
                let (persistence, _) =
                    Actor::spawn_linked(None, Persistence, args, myself.get_cell()).await?;
                state.storage.replace(persistence.clone());
                state.persistence = persistence;
                tracing::info!("persistence restarted");
            }
            RootMsg::RestartWebhooks | RootMsg::RestartPersistence | RootMsg::RestartAnalyst => {}
            RootMsg::Shutdown(reply) => {
                shut_down(state).await;
                let _ = reply.send(());
                myself.stop(Some("shutdown".into()));
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
        if cell.get_id() == state.persistence.get_id() {
            if state.shutting_down {
                return Ok(());
            }
            let delay = state.persistence_backoff.next_delay();
            tracing::error!(error = ?failure, ?delay, "persistence stopped; restarting it");
            myself.send_after(delay, || RootMsg::RestartPersistence);
        } else if cell.get_id() == state.webhooks.actor().get_id() {
            if state.shutting_down {
                return Ok(());
            }
            let delay = state.webhooks_backoff.next_delay();
            tracing::error!(error = ?failure, ?delay, "webhooks stopped; restarting it");
            myself.send_after(delay, || RootMsg::RestartWebhooks);
        } else if cell.get_id() == state.analyst.actor().get_id() {
            if state.shutting_down {
                return Ok(());
            }
            let delay = state.analyst_backoff.next_delay();
            tracing::error!(error = ?failure, ?delay, "the analyst stopped; restarting it");
            myself.send_after(delay, || RootMsg::RestartAnalyst);
        } else if let Some(tenant) = state.tenant_actors.remove(&cell.get_id()) {
            state.tenants.remove(&tenant);
            if let Some(error) = failure {
                tracing::error!(%tenant, %error, "tenant failed; it starts again on next use");
            }
        }
        Ok(())
    }
}

async fn spawn_webhooks(
    myself: &ActorRef<RootMsg>,
    args: &RootArgs,
    storage: &Storage,
    events_committed: &Arc<tokio::sync::Notify>,
    subscriptions: &Subscriptions,
) -> Result<ActorRef<WebhooksMsg>, ActorProcessingErr> {
    let webhooks_args = WebhooksArgs {
        storage: storage.clone(),
        config: args.config.clone(),
        policy: args.policy.clone(),
        events_committed: events_committed.clone(),
        subscriptions: subscriptions.clone(),
        nudger: args.nudger.clone(),
    };
    let (webhooks, _) =
        Actor::spawn_linked(None, Webhooks, webhooks_args, myself.get_cell()).await?;
    Ok(webhooks)
}

async fn spawn_analyst(
    myself: &ActorRef<RootMsg>,
    args: &RootArgs,
    storage: &Storage,
) -> Result<ActorRef<AnalystMsg>, ActorProcessingErr> {
    let analyst_args = AnalystArgs {
        storage: storage.clone(),
        tenants: args.tenants.clone(),
        provider: args.agents.get("openai").cloned(),
        sweep_every: Duration::from_millis(args.config.insights.sweep_every_ms.max(1)),
        retries: (args.config.insights.retry_schedule_ms.iter())
            .map(|ms| Duration::from_millis(*ms))
            .collect(),
    };
    let (analyst, _) = Actor::spawn_linked(None, Analyst, analyst_args, myself.get_cell()).await?;
    Ok(analyst)
}

async fn restart_webhooks(myself: &ActorRef<RootMsg>, state: &mut RootState) {
    let spawned = spawn_webhooks(
        myself,
        &state.args,
        &state.storage,
        &state.events_committed,
        &state.subscriptions,
    )
    .await;
    match spawned {
        Ok(webhooks) => {
            state.webhooks.replace(webhooks);
            tracing::info!("webhooks restarted");
        }
        Err(error) => {
            let delay = state.webhooks_backoff.next_delay();
            tracing::error!(%error, ?delay, "webhooks did not restart; trying again");
            myself.send_after(delay, || RootMsg::RestartWebhooks);
        }
    }
}

/// Hands a tenant's live actor its new settings and agent.
fn reconfigure(state: &RootState, id: &TenantId) {
    let settings = state
        .args
        .tenants
        .get(id)
        .map(|entry| entry.value().clone());
    let (Some(tenant), Some(settings)) = (state.tenants.get(id), settings) else {
        return;
    };
    match state.args.agents.get(&settings.agent) {
        Some(provider) => {
            let provider = provider.clone();
            let _ = tenant.cast(TenantMsg::Reconfigure { settings, provider });
        }
        None => {
            tracing::error!(tenant = %id, agent = %settings.agent, "no such agent; settings not applied")
        }
    }
}

/// Tenants stop and hand over their last writes, webhooks stop, persistence
/// drains and stops.
async fn shut_down(state: &mut RootState) {
    state.shutting_down = true;
    let tenants: Vec<ActorRef<TenantMsg>> = state.tenants.values().cloned().collect();
    let stops = tenants
        .iter()
        .map(|tenant| tenant.call(TenantMsg::Shutdown, Some(TENANT_SHUTDOWN_TIMEOUT)));
    futures_util::future::join_all(stops).await;
    let _ = state
        .analyst
        .actor()
        .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(5)))
        .await;
    let _ = state
        .webhooks
        .actor()
        .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(5)))
        .await;
    // Drain, not stop: a stop would outrank the writes still queued.
    state.storage.flush().await;
    // Then stop it and wait, so its database handle is dropped now.
    let _ = state
        .persistence
        .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(5)))
        .await;
}

async fn tenant(
    myself: &ActorRef<RootMsg>,
    state: &mut RootState,
    id: TenantId,
) -> Result<ActorRef<TenantMsg>> {
    if state.shutting_down {
        return Err(Error::ShuttingDown);
    }
    if let Some(actor) = state.tenants.get(&id) {
        return Ok(actor.clone());
    }
    let settings = state
        .args
        .tenants
        .get(&id)
        .map(|entry| entry.value().clone())
        .ok_or_else(|| Error::TenantNotFound(id.clone()))?;
    let provider = state
        .args
        .agents
        .get(&settings.agent)
        .cloned()
        .ok_or_else(|| {
            Error::Startup(format!("tenant {id}: no agent named `{}`", settings.agent))
        })?;
    let args = TenantArgs {
        id: id.clone(),
        settings,
        provider,
        storage: state.storage.clone(),
        registry: state.args.registry.clone(),
        feeds: state.args.feeds.clone(),
        sessions: state.args.config.sessions.clone(),
        limits: state.args.config.limits.clone(),
        supervision: state.args.config.supervision.clone(),
    };
    let (actor, _) = Actor::spawn_linked(None, Tenant, args, myself.get_cell())
        .await
        .map_err(|error| Error::Unavailable(tenant_start_failed(error.to_string())))?;
    state.tenant_actors.insert(actor.get_id(), id.clone());
    state.tenants.insert(id, actor.clone());
    Ok(actor)
}

/// Logs why a tenant could not start; callers only learn it is unavailable.
fn tenant_start_failed(reason: String) -> &'static str {
    tracing::error!(%reason, "tenant could not start");
    "tenant"
}
