//! The webhook actor: supervised by `Root`, it supervises one delivery
//! worker per endpoint, keeps every endpoint in memory, is the only writer
//! of endpoints, and fans committed events out (see `mod.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::Notify;

use super::endpoints::{Key, sync_config};
use super::fanout::fan_out_once;
use super::worker::{DeliverySettings, Worker, WorkerArgs, WorkerMsg, WorkerReport};
use crate::config::RuntimeConfig;
use crate::error::{Error, Result};
use crate::model::{Delivery, Subscriptions, TenantId, WebhookEndpoint, now_timestamp};
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
}

/// Stays on this node (see `cluster::wire` for what crosses nodes).
impl ractor::Message for WebhooksMsg {}

pub struct WebhooksArgs {
    pub storage: Storage,
    pub config: RuntimeConfig,
    pub policy: EgressPolicy,
    pub events_committed: Arc<Notify>,
    pub subscriptions: Subscriptions,
}

pub struct WebhooksState {
    args: WebhooksArgs,
    client: reqwest::Client,
    settings: Arc<DeliverySettings>,
    endpoints: HashMap<Key, WebhookEndpoint>,
    workers: HashMap<Key, ActorRef<WorkerMsg>>,
    worker_ids: HashMap<ActorId, Key>,
    worker_backoff: Backoff,
    fanning_out: bool,
    fan_out_again: bool,
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
        };
        let keys: Vec<Key> = state.endpoints.keys().cloned().collect();
        for key in keys {
            start_worker(&myself, &mut state, key).await?;
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
        fan_out(&myself, state);
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
                if state.endpoints.contains_key(&key) && !state.workers.contains_key(&key) {
                    start_worker(&myself, state, key).await?;
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

impl WebhooksState {
    /// Removes an endpoint, its worker and its deliveries.
    async fn delete(&mut self, key: Key) -> Result<()> {
        if !self.endpoints.contains_key(&key) {
            return Err(Error::WebhookNotFound(key.1));
        }
        if let Some(worker) = self.workers.remove(&key) {
            self.worker_ids.remove(&worker.get_id());
            worker.stop(Some("endpoint deleted".into()));
        }
        self.endpoints.remove(&key);
        self.args.subscriptions.replace(self.endpoints.values());
        let (tenant, endpoint_id) = key;
        let write = Write::DeleteEndpoint {
            tenant,
            endpoint_id,
        };
        self.args.storage.write_and_wait(write).await
    }

    /// A tenant's endpoints, oldest first.
    fn list(&self, tenant: &TenantId) -> Vec<WebhookEndpoint> {
        let mut endpoints: Vec<WebhookEndpoint> = self
            .endpoints
            .values()
            .filter(|endpoint| endpoint.tenant == *tenant)
            .cloned()
            .collect();
        endpoints.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        endpoints
    }

    /// Stores a `webhook.test` event and its one delivery, then hands it to the worker.
    async fn send_test(&mut self, key: Key) -> Result<Delivery> {
        let (Some(endpoint), Some(worker)) = (self.endpoints.get(&key), self.workers.get(&key))
        else {
            return Err(Error::WebhookNotFound(key.1));
        };
        let event = crate::model::events::test_event(&key.0, &key.1);
        let delivery = Delivery::new(&event, endpoint);
        let worker = worker.clone();
        let write = Write::SendTest {
            event: Box::new(event.clone()),
            delivery: Box::new(delivery.clone()),
        };
        self.args.storage.write_and_wait(write).await?;
        let _ = worker.cast(WorkerMsg::Replayed(vec![(delivery.clone(), event)]));
        Ok(delivery)
    }

    /// Asks the endpoint's worker to replay one delivery (or every dead one);
    /// the worker answers, this actor does not wait for it.
    fn replay(&self, key: Key, delivery_id: Option<String>, reply: RpcReplyPort<Result<usize>>) {
        let Some(worker) = self.workers.get(&key).cloned() else {
            let _ = reply.send(Err(Error::WebhookNotFound(key.1)));
            return;
        };
        tokio::spawn(async move {
            let replay = |reply| WorkerMsg::Replay {
                ids: delivery_id.map(|id| vec![id]),
                reply,
            };
            let outcome = match worker.call(replay, Some(CALL_TIMEOUT)).await {
                Ok(CallResult::Success(outcome)) => outcome,
                _ => Err(Error::Unavailable("webhook worker")),
            };
            let _ = reply.send(outcome);
        });
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
        None => start_worker(myself, state, key)
            .await
            .map_err(|error| Error::Startup(format!("webhook worker: {error}")))?,
    }
    Ok(endpoint)
}

/// Fans the undispatched events out in a task, one at a time: a wake-up
/// that arrives meanwhile runs another round after it.
fn fan_out(myself: &ActorRef<WebhooksMsg>, state: &mut WebhooksState) {
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

crate::supervision::reports_to!(WorkerReport => WebhooksMsg::Worker);
