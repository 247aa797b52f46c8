//! The webhook actor: supervised by `Root`, it supervises one delivery
//! worker per endpoint, keeps every endpoint in memory, is the only writer
//! of endpoints, and fans committed events out (see `mod.rs`). In a
//! cluster it does the last two only while its node holds the `webhooks`
//! role (`holding.rs`), and otherwise tells the holder.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::Notify;

use super::endpoints::{Key, sync_config};
use super::fanout::fan_out_once;
use super::holding::{NudgerSlot, Role};
use super::worker::{DeliverySettings, Worker, WorkerArgs, WorkerMsg, WorkerReport};
use crate::config::RuntimeConfig;
use crate::error::{Error, Result};
use crate::model::{
    Delivery, Subscriptions, TenantId, WebhookEndpoint, WebhookNudge, now_timestamp,
};
use crate::net::egress::EgressPolicy;
use crate::store::{Storage, Write};
use crate::supervision::Backoff;

/// How often undispatched events are looked for even without a wake-up
/// (a wake-up is lost if persistence restarts between commit and notify).
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// How long an admin call waits for this actor (and it for a worker).
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Changes an endpoint (or makes it, from `None`): runs inside the actor,
/// so it never races the actor's own changes (a receiver's `410 Gone`).
pub type EndpointChange =
    Box<dyn FnOnce(Option<WebhookEndpoint>) -> Result<WebhookEndpoint> + Send>;

pub enum WebhooksMsg {
    /// Events committed: fan them out.
    EventsCommitted,
    /// A fan-out finished; `more` if it stopped at its batch size.
    FanOutDone { more: bool },
    /// Applies a change to an endpoint and stores it; answers with the result.
    Change {
        tenant: TenantId,
        endpoint_id: String,
        change: EndpointChange,
        reply: RpcReplyPort<Result<WebhookEndpoint>>,
    },
    Delete {
        tenant: TenantId,
        endpoint_id: String,
        reply: RpcReplyPort<Result<()>>,
    },
    List {
        tenant: TenantId,
        reply: RpcReplyPort<Vec<WebhookEndpoint>>,
    },
    Get {
        tenant: TenantId,
        endpoint_id: String,
        reply: RpcReplyPort<Result<WebhookEndpoint>>,
    },
    /// The receiver answered `410 Gone`: disable the endpoint.
    /// A delivery worker's report.
    Worker(WorkerReport),
    /// Sends a `webhook.test` event to one endpoint.
    SendTest {
        tenant: TenantId,
        endpoint_id: String,
        reply: RpcReplyPort<Result<Delivery>>,
    },
    /// Replays one delivery, or every dead one (`delivery_id: None`).
    Replay {
        tenant: TenantId,
        endpoint_id: String,
        delivery_id: Option<String>,
        reply: RpcReplyPort<Result<usize>>,
    },
    /// Restarts a failed worker after its backoff.
    RestartWorker(TenantId, String),
    /// In a cluster: claim the `webhooks` role (every third of the lease).
    Claim,
    /// In a cluster: another node's nudge.
    Nudged(WebhookNudge),
}

/// Stays on this node (see `cluster::wire` for what crosses nodes).
impl ractor::Message for WebhooksMsg {}

pub struct WebhooksArgs {
    pub storage: Storage,
    pub config: RuntimeConfig,
    pub policy: EgressPolicy,
    pub events_committed: Arc<Notify>,
    pub subscriptions: Subscriptions,
    /// How to reach the other nodes' webhook actors (in a cluster).
    pub nudger: NudgerSlot,
}

pub struct WebhooksState {
    pub(super) args: WebhooksArgs,
    client: reqwest::Client,
    settings: Arc<DeliverySettings>,
    pub(super) endpoints: HashMap<Key, WebhookEndpoint>,
    pub(super) workers: HashMap<Key, ActorRef<WorkerMsg>>,
    pub(super) worker_ids: HashMap<ActorId, Key>,
    worker_backoff: Backoff,
    fanning_out: bool,
    fan_out_again: bool,
    /// In a cluster: whether this node holds the `webhooks` role.
    pub(super) role: Option<Role>,
}

pub struct Webhooks;

impl Actor for Webhooks {
    type Msg = WebhooksMsg;
    type State = WebhooksState;
    type Arguments = WebhooksArgs;

    /// Loads the endpoints, brings the config file's up to date, and starts
    /// a worker for each (which reads its pending deliveries).
    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: WebhooksArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let config = &args.config.webhooks;
        let settings = Arc::new(DeliverySettings {
            delays: config.retry_delays()?,
            jitter: config.jitter,
            timeout: Duration::from_millis(config.timeout_ms),
            max_in_flight: config.max_in_flight,
        });
        let client = args
            .policy
            .client_builder()
            .pool_max_idle_per_host(config.max_in_flight)
            .build()?;
        let stored = args.storage.load_endpoints().await?;
        let mut endpoints: HashMap<Key, WebhookEndpoint> = stored
            .into_iter()
            .map(|endpoint| {
                (
                    (endpoint.tenant.clone(), endpoint.endpoint_id.clone()),
                    endpoint,
                )
            })
            .collect();
        sync_config(&args.storage, &args.config.webhooks, &mut endpoints).await?;
        args.subscriptions.replace(endpoints.values());
        let role = (args.storage.clustered())
            .then(|| Role::new(args.config.cluster.lease() / 3, args.nudger.clone()));
        let mut state = WebhooksState {
            worker_backoff: Backoff::new("webhook_worker", &args.config.supervision),
            args,
            client,
            settings,
            endpoints,
            workers: HashMap::new(),
            worker_ids: HashMap::new(),
            fanning_out: false,
            fan_out_again: false,
            role,
        };
        if state.role.is_none() {
            let keys: Vec<Key> = state.endpoints.keys().cloned().collect();
            for key in keys {
                start_worker(&myself, &mut state, key).await?;
            }
        }
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Whatever was committed before this start is fanned out now; from
        // then on, commits wake us (and a sweep catches a lost wake-up).
        let notify = state.args.events_committed.clone();
        let wake = myself.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = notify.notified() => {}
                    () = tokio::time::sleep(SWEEP_INTERVAL) => {}
                }
                if wake.cast(WebhooksMsg::EventsCommitted).is_err() {
                    break;
                }
            }
        });
        match &state.role {
            // The first claim starts the workers, if the role is ours.
            Some(role) => {
                myself.send_interval(role.every, || WebhooksMsg::Claim);
                claim(&myself, state).await;
            }
            None => fan_out(&myself, state),
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WebhooksMsg::EventsCommitted => fan_out(&myself, state),
            WebhooksMsg::FanOutDone { more } => {
                state.fanning_out = false;
                if more || std::mem::take(&mut state.fan_out_again) {
                    fan_out(&myself, state);
                }
            }
            WebhooksMsg::Change {
                tenant,
                endpoint_id,
                change,
                reply,
            } => {
                let current = state.endpoints.get(&(tenant, endpoint_id)).cloned();
                let outcome = match change(current) {
                    Ok(endpoint) => store(&myself, state, endpoint).await,
                    Err(error) => Err(error),
                };
                let _ = reply.send(outcome);
            }
            WebhooksMsg::Delete {
                tenant,
                endpoint_id,
                reply,
            } => {
                let _ = reply.send(state.delete((tenant, endpoint_id)).await);
            }
            WebhooksMsg::List { tenant, reply } => {
                let _ = reply.send(state.list(&tenant));
            }
            WebhooksMsg::Get {
                tenant,
                endpoint_id,
                reply,
            } => {
                let found = state.endpoints.get(&(tenant, endpoint_id.clone())).cloned();
                let _ = reply.send(found.ok_or(Error::WebhookNotFound(endpoint_id)));
            }
            WebhooksMsg::Worker(WorkerReport::Gone {
                tenant,
                endpoint_id,
            }) => gone(&myself, state, (tenant, endpoint_id)).await,
            WebhooksMsg::SendTest {
                tenant,
                endpoint_id,
                reply,
            } => {
                let _ = reply.send(state.send_test((tenant, endpoint_id)).await);
            }
            WebhooksMsg::Replay {
                tenant,
                endpoint_id,
                delivery_id,
                reply,
            } => state.replay((tenant, endpoint_id), delivery_id, reply),
            WebhooksMsg::RestartWorker(tenant, endpoint_id) => {
                let key = (tenant, endpoint_id);
                let idle = state.endpoints.contains_key(&key) && !state.workers.contains_key(&key);
                if idle && delivers(state) {
                    start_worker(&myself, state, key).await?;
                }
            }
            WebhooksMsg::Claim => claim(&myself, state).await,
            WebhooksMsg::Nudged(nudge) => nudged(&myself, state, nudge).await,
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
        let Some(key) = state.worker_ids.remove(&cell.get_id()) else {
            return Ok(());
        };
        state.workers.remove(&key);
        if let Some(error) = failure {
            // Its deliveries are in the database: the new worker reads them.
            let delay = state.worker_backoff.next_delay();
            tracing::error!(endpoint = %key.1, %error, ?delay, "webhook worker failed; restarting it");
            myself.send_after(delay, move || WebhooksMsg::RestartWorker(key.0, key.1));
        }
        Ok(())
    }
}

/// The receiver answered `410 Gone`: the endpoint is disabled, with why.
async fn gone(myself: &ActorRef<WebhooksMsg>, state: &mut WebhooksState, key: Key) {
    let Some(mut endpoint) = state.endpoints.get(&key).cloned() else {
        return;
    };
    if !endpoint.enabled {
        return;
    }
    tracing::warn!(endpoint = %endpoint.endpoint_id, url = %endpoint.url, "the receiver answered 410 Gone; endpoint disabled");
    endpoint.enabled = false;
    let now = now_timestamp();
    endpoint.disabled_reason = Some(format!("the receiver answered 410 Gone at {now}"));
    endpoint.updated_at = now;
    if let Err(error) = store(myself, state, endpoint).await {
        tracing::error!(%error, "the disabled endpoint was not stored");
    }
}

async fn start_worker(
    myself: &ActorRef<WebhooksMsg>,
    state: &mut WebhooksState,
    key: Key,
) -> Result<(), ActorProcessingErr> {
    let endpoint = state.endpoints[&key].clone();
    let args = WorkerArgs {
        endpoint,
        storage: state.args.storage.clone(),
        client: state.client.clone(),
        policy: state.args.policy.clone(),
        settings: state.settings.clone(),
        webhooks: myself.get_derived(),
    };
    let (worker, _) = Actor::spawn_linked(None, Worker, args, myself.get_cell()).await?;
    state.worker_ids.insert(worker.get_id(), key.clone());
    state.workers.insert(key, worker);
    Ok(())
}

/// Stores an endpoint and tells (or starts) its worker.
async fn store(
    myself: &ActorRef<WebhooksMsg>,
    state: &mut WebhooksState,
    endpoint: WebhookEndpoint,
) -> Result<WebhookEndpoint> {
    state
        .args
        .storage
        .write_and_wait(Write::PutEndpoint(Box::new(endpoint.clone())))
        .await?;
    let key = (endpoint.tenant.clone(), endpoint.endpoint_id.clone());
    state.endpoints.insert(key.clone(), endpoint.clone());
    state.args.subscriptions.replace(state.endpoints.values());
    match state.workers.get(&key) {
        Some(worker) => {
            let _ = worker.cast(WorkerMsg::Update(Box::new(endpoint.clone())));
        }
        None if delivers(state) => start_worker(myself, state, key)
            .await
            .map_err(|error| Error::Startup(format!("webhook worker: {error}")))?,
        None => {}
    }
    state.tell(WebhookNudge::Changed);
    Ok(endpoint)
}

/// Fans the undispatched events out in a task, one at a time: a wake-up
/// that arrives meanwhile runs another round after it. In a cluster, a
/// node that does not deliver tells the one that does instead.
fn fan_out(myself: &ActorRef<WebhooksMsg>, state: &mut WebhooksState) {
    if !delivers(state) {
        return state.tell(WebhookNudge::EventsCommitted);
    }
    if state.fanning_out {
        state.fan_out_again = true;
        return;
    }
    state.fanning_out = true;
    let mut by_tenant: HashMap<TenantId, Vec<WebhookEndpoint>> = HashMap::new();
    for endpoint in state.endpoints.values().filter(|endpoint| endpoint.enabled) {
        by_tenant
            .entry(endpoint.tenant.clone())
            .or_default()
            .push(endpoint.clone());
    }
    let workers = state.workers.clone();
    let storage = state.args.storage.clone();
    let myself = myself.clone();
    tokio::spawn(async move {
        let more = match fan_out_once(&storage, &by_tenant, &workers).await {
            Ok(more) => more,
            Err(error) => {
                tracing::error!(%error, "fan-out of events failed; the next sweep tries again");
                false
            }
        };
        let _ = myself.cast(WebhooksMsg::FanOutDone { more });
    });
}

/// Whether this node fans out and delivers: always on its own, in a
/// cluster only while it holds the `webhooks` role.
fn delivers(state: &WebhooksState) -> bool {
    state.role.as_ref().is_none_or(Role::here)
}

/// Claims the role (in a cluster): a node that gains it starts every
/// worker and fans out; one that loses it stops them. Endpoints are read
/// again either way: another node may have changed them.
async fn claim(myself: &ActorRef<WebhooksMsg>, state: &mut WebhooksState) {
    let Some(role) = state.role.as_mut() else {
        return;
    };
    let moved = role.claim(&state.args.storage).await;
    if moved.gained || moved.lost {
        // Their deliveries stay in the database for the holder's workers.
        for (_, worker) in state.workers.drain() {
            state.worker_ids.remove(&worker.get_id());
            worker.stop(Some("the webhooks role moved".into()));
        }
    }
    reload(myself, state).await;
    if moved.gained {
        fan_out(myself, state);
    }
}

/// Another node's nudge.
async fn nudged(myself: &ActorRef<WebhooksMsg>, state: &mut WebhooksState, nudge: WebhookNudge) {
    match nudge {
        WebhookNudge::EventsCommitted => fan_out(myself, state),
        WebhookNudge::Changed => {
            reload(myself, state).await;
            for worker in state.workers.values() {
                let _ = worker.cast(WorkerMsg::Rescan);
            }
        }
    }
}

/// Reads the endpoints again (in a cluster): workers hear of changes, the
/// deleted ones stop, and a node that delivers starts a worker for each
/// new one.
async fn reload(myself: &ActorRef<WebhooksMsg>, state: &mut WebhooksState) {
    let stored = match state.args.storage.load_endpoints().await {
        Ok(stored) => stored,
        Err(error) => {
            tracing::warn!(%error, "endpoints could not be read again");
            return;
        }
    };
    let fresh: HashMap<Key, WebhookEndpoint> = (stored.into_iter())
        .map(|endpoint| {
            (
                (endpoint.tenant.clone(), endpoint.endpoint_id.clone()),
                endpoint,
            )
        })
        .collect();
    for (key, worker) in &state.workers {
        match fresh.get(key) {
            None => worker.stop(Some("endpoint deleted".into())),
            Some(endpoint) if state.endpoints.get(key) != Some(endpoint) => {
                let _ = worker.cast(WorkerMsg::Update(Box::new(endpoint.clone())));
            }
            Some(_) => {}
        }
    }
    (state.workers).retain(|key, _| fresh.contains_key(key));
    let live: std::collections::HashSet<ActorId> = state
        .workers
        .values()
        .map(|worker| worker.get_id())
        .collect();
    state.worker_ids.retain(|id, _| live.contains(id));
    state.endpoints = fresh;
    state.args.subscriptions.replace(state.endpoints.values());
    if !delivers(state) {
        return;
    }
    let idle: Vec<Key> = (state.endpoints.keys())
        .filter(|key| !state.workers.contains_key(*key))
        .cloned()
        .collect();
    for key in idle {
        if let Err(error) = start_worker(myself, state, key).await {
            tracing::error!(%error, "a webhook worker did not start; the next claim tries again");
        }
    }
}

crate::supervision::reports_to!(WorkerReport => WebhooksMsg::Worker);
