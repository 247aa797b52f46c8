//! The webhook actor: supervised by `Root`, it supervises one delivery
//! worker per endpoint (webhook_worker.rs) and is the only writer of
//! endpoints.
//!
//! The outbox: every event is stored in the same transaction as the change
//! that caused it (`Write::WithEvents`). When such a batch commits,
//! persistence wakes this actor, which fans the undispatched events out:
//! one delivery per subscribed, enabled endpoint, created in the same
//! transaction that marks the events dispatched. Only then do the workers
//! hear of them. A crash anywhere in between leaves the events undispatched
//! (fanned out after the restart) or the deliveries pending (sent after the
//! restart): nothing is lost, and a duplicate carries the same `webhook-id`.

pub mod worker;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::Notify;

use self::worker::{DeliverySettings, Worker, WorkerArgs, WorkerMsg, WorkerReport};
use crate::config::{RuntimeConfig, WebhookEndpointConfig};
use crate::error::{Error, Result};
use crate::model::{
    Delivery, EVENT_TYPES, Subscriptions, TenantId, WebhookEndpoint, now_timestamp,
};
use crate::net::egress::EgressPolicy;
use crate::store::{Storage, Write};
use crate::supervision::Backoff;

/// Events fanned out per transaction.
const FAN_OUT_BATCH: usize = 500;
/// How often undispatched events are looked for even without a wake-up
/// (a wake-up is lost if persistence restarts between commit and notify).
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// How long an admin call waits for this actor.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

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

pub struct WebhooksArgs {
    pub storage: Storage,
    pub config: RuntimeConfig,
    pub policy: EgressPolicy,
    pub events_committed: Arc<Notify>,
    pub subscriptions: Subscriptions,
}

type Key = (TenantId, String);

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
        sync_config(&args, &mut endpoints).await?;
        args.subscriptions.replace(endpoints.values());
        let mut state = WebhooksState {
            worker_backoff: Backoff::new(&args.config.supervision),
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
                let key = (tenant, endpoint_id);
                let current = state.endpoints.get(&key).cloned();
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
                let key = (tenant.clone(), endpoint_id.clone());
                if !state.endpoints.contains_key(&key) {
                    let _ = reply.send(Err(Error::WebhookNotFound(endpoint_id)));
                    return Ok(());
                }
                if let Some(worker) = state.workers.remove(&key) {
                    state.worker_ids.remove(&worker.get_id());
                    worker.stop(Some("endpoint deleted".into()));
                }
                state.endpoints.remove(&key);
                state.args.subscriptions.replace(state.endpoints.values());
                let outcome = state
                    .args
                    .storage
                    .write_and_wait(Write::DeleteEndpoint {
                        tenant,
                        endpoint_id,
                    })
                    .await;
                let _ = reply.send(outcome);
            }
            WebhooksMsg::List { tenant, reply } => {
                let mut endpoints: Vec<WebhookEndpoint> = state
                    .endpoints
                    .values()
                    .filter(|endpoint| endpoint.tenant == tenant)
                    .cloned()
                    .collect();
                endpoints.sort_by(|a, b| a.created_at.cmp(&b.created_at));
                let _ = reply.send(endpoints);
            }
            WebhooksMsg::Get {
                tenant,
                endpoint_id,
                reply,
            } => {
                let found = state
                    .endpoints
                    .get(&(tenant, endpoint_id.clone()))
                    .cloned()
                    .ok_or(Error::WebhookNotFound(endpoint_id));
                let _ = reply.send(found);
            }
            WebhooksMsg::Worker(WorkerReport::Gone {
                tenant,
                endpoint_id,
            }) => {
                let key = (tenant, endpoint_id);
                if let Some(mut endpoint) = state.endpoints.get(&key).cloned()
                    && endpoint.enabled
                {
                    tracing::warn!(endpoint = %endpoint.endpoint_id, url = %endpoint.url, "the receiver answered 410 Gone; endpoint disabled");
                    endpoint.enabled = false;
                    endpoint.disabled_reason = Some(format!(
                        "the receiver answered 410 Gone at {}",
                        now_timestamp()
                    ));
                    endpoint.updated_at = now_timestamp();
                    if let Err(error) = store(&myself, state, endpoint).await {
                        tracing::error!(%error, "the disabled endpoint was not stored");
                    }
                }
            }
            WebhooksMsg::SendTest {
                tenant,
                endpoint_id,
                reply,
            } => {
                let key = (tenant.clone(), endpoint_id.clone());
                let (Some(endpoint), Some(worker)) =
                    (state.endpoints.get(&key), state.workers.get(&key))
                else {
                    let _ = reply.send(Err(Error::WebhookNotFound(endpoint_id)));
                    return Ok(());
                };
                let event = crate::model::events::test_event(&tenant, &endpoint_id);
                let delivery = Delivery::new(&event, endpoint);
                let stored = state
                    .args
                    .storage
                    .write_and_wait(Write::SendTest {
                        event: Box::new(event.clone()),
                        delivery: Box::new(delivery.clone()),
                    })
                    .await;
                if stored.is_ok() {
                    let _ = worker.cast(WorkerMsg::Replayed(vec![(delivery.clone(), event)]));
                }
                let _ = reply.send(stored.map(|()| delivery));
            }
            WebhooksMsg::Replay {
                tenant,
                endpoint_id,
                delivery_id,
                reply,
            } => match state.workers.get(&(tenant, endpoint_id.clone())) {
                Some(worker) => {
                    let worker = worker.clone();
                    // The worker answers; this actor does not wait for it.
                    tokio::spawn(async move {
                        let outcome = match worker
                            .call(
                                |reply| WorkerMsg::Replay {
                                    ids: delivery_id.map(|id| vec![id]),
                                    reply,
                                },
                                Some(CALL_TIMEOUT),
                            )
                            .await
                        {
                            Ok(CallResult::Success(outcome)) => outcome,
                            _ => Err(Error::Unavailable("webhook worker")),
                        };
                        let _ = reply.send(outcome);
                    });
                }
                None => {
                    let _ = reply.send(Err(Error::WebhookNotFound(endpoint_id)));
                }
            },
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

async fn fan_out_once(
    storage: &Storage,
    by_tenant: &HashMap<TenantId, Vec<WebhookEndpoint>>,
    workers: &HashMap<Key, ActorRef<WorkerMsg>>,
) -> Result<bool> {
    let events = storage.undispatched_events(FAN_OUT_BATCH).await?;
    if events.is_empty() {
        return Ok(false);
    }
    let mut deliveries = Vec::new();
    let mut per_endpoint: HashMap<Key, Vec<(Delivery, crate::model::EventRecord)>> = HashMap::new();
    for event in &events {
        for endpoint in by_tenant.get(&event.tenant).into_iter().flatten() {
            if endpoint.wants(&event.kind) {
                let delivery = Delivery::new(event, endpoint);
                deliveries.push(delivery.clone());
                per_endpoint
                    .entry((endpoint.tenant.clone(), endpoint.endpoint_id.clone()))
                    .or_default()
                    .push((delivery, event.clone()));
            }
        }
    }
    storage
        .write_and_wait(Write::FanOut {
            event_ids: events.iter().map(|event| event.event_id.clone()).collect(),
            deliveries,
        })
        .await?;
    for (key, items) in per_endpoint {
        if let Some(worker) = workers.get(&key) {
            let _ = worker.cast(WorkerMsg::Enqueue(items));
        }
    }
    Ok(events.len() == FAN_OUT_BATCH)
}

/// A new signing secret: `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// What is wrong with an endpoint's settings, if anything.
pub fn endpoint_problem(endpoint: &WebhookEndpoint, policy: &EgressPolicy) -> Option<Error> {
    let id_ok = !endpoint.endpoint_id.is_empty()
        && endpoint.endpoint_id.len() <= 64
        && endpoint
            .endpoint_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !id_ok {
        return Some(Error::InvalidInput(
            "an endpoint's id (`name`) must be 1 to 64 of a-z, A-Z, 0-9, `_`, `-`".into(),
        ));
    }
    if endpoint.url.len() > 2048 {
        return Some(Error::InvalidInput(
            "`url` is longer than 2048 bytes".into(),
        ));
    }
    match policy.check_url(&endpoint.url) {
        Err(crate::net::egress::EgressError::NotHttp(_)) => {
            return Some(Error::InvalidInput("`url` must be an http(s) URL".into()));
        }
        Err(error) => return Some(Error::UrlNotAllowed(format!("`url`: {error}"))),
        Ok(_) => {}
    }
    if crate::net::signing::Signer::new(&endpoint.secret).is_none() {
        return Some(Error::InvalidInput(
            "`secret` must be `whsec_` followed by base64".into(),
        ));
    }
    if let Some(filter) = endpoint.events.iter().find(|filter| !known_filter(filter)) {
        return Some(Error::InvalidInput(format!(
            "`events`: `{filter}` is not an event type, `prefix.*` or `*` (types: {})",
            EVENT_TYPES.join(", ")
        )));
    }
    let header_ok = match (&endpoint.header_name, &endpoint.header_value) {
        (None, None) => true,
        (Some(name), Some(value)) => {
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_ok()
                && reqwest::header::HeaderValue::from_str(value).is_ok()
                && !name.to_ascii_lowercase().starts_with("webhook-")
        }
        _ => false,
    };
    if !header_ok {
        return Some(Error::InvalidInput(
            "`header_name` and `header_value` go together, as a valid HTTP header not named `webhook-*`".into(),
        ));
    }
    None
}

fn known_filter(filter: &str) -> bool {
    filter == "*"
        || EVENT_TYPES.contains(&filter)
        || filter.strip_suffix(".*").is_some_and(|prefix| {
            EVENT_TYPES
                .iter()
                .any(|kind| kind.split('.').next() == Some(prefix))
        })
}

/// The config file's endpoints, as they should be stored now, given what is
/// stored: the file wins, except that an endpoint its receiver disabled
/// stays disabled while its URL is unchanged, and a changed secret keeps the
/// old one valid for the rotation overlap.
pub fn from_config(
    entry: &WebhookEndpointConfig,
    stored: Option<&WebhookEndpoint>,
    overlap: Duration,
) -> WebhookEndpoint {
    let now = now_timestamp();
    let secret = entry.resolve_secret();
    let gone = stored.filter(|stored| stored.url == entry.url && stored.disabled_reason.is_some());
    let rotated = stored.filter(|stored| stored.secret != secret);
    let non_empty = |text: &str| (!text.is_empty()).then(|| text.to_owned());
    WebhookEndpoint {
        endpoint_id: entry.name.clone(),
        tenant: TenantId(entry.tenant.clone()),
        url: entry.url.clone(),
        previous_secret: match rotated {
            Some(stored) => Some(stored.secret.clone()),
            None => stored.and_then(|stored| stored.previous_secret.clone()),
        },
        previous_secret_expires_at: match rotated {
            Some(_) => Some(later(overlap)),
            None => stored.and_then(|stored| stored.previous_secret_expires_at.clone()),
        },
        secret,
        events: entry.events.clone(),
        format: entry.format,
        enabled: gone.is_none() && entry.enabled.unwrap_or(true),
        disabled_reason: gone.and_then(|stored| stored.disabled_reason.clone()),
        header_name: non_empty(&entry.header_name),
        header_value: non_empty(&entry.header_value),
        description: non_empty(&entry.description),
        source: "config".into(),
        created_at: stored.map_or_else(|| now.clone(), |stored| stored.created_at.clone()),
        updated_at: now,
    }
}

/// The timestamp `after` from now, in the stored format.
pub fn later(after: Duration) -> String {
    (chrono::Utc::now() + chrono::Duration::from_std(after).unwrap_or_default())
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// Stores the config file's endpoints and removes those it no longer lists.
async fn sync_config(
    args: &WebhooksArgs,
    endpoints: &mut HashMap<Key, WebhookEndpoint>,
) -> Result<()> {
    let overlap = Duration::from_secs(args.config.webhooks.rotation_overlap_secs);
    let mut listed = Vec::new();
    for entry in &args.config.webhooks.endpoints {
        let key = (TenantId(entry.tenant.clone()), entry.name.clone());
        let stored = endpoints.get(&key);
        let mut wanted = from_config(entry, stored, overlap);
        if let Some(stored) = stored {
            // Unchanged apart from the time: nothing to write.
            wanted.updated_at = stored.updated_at.clone();
            if *stored == wanted {
                listed.push(key);
                continue;
            }
            wanted.updated_at = now_timestamp();
        }
        args.storage
            .write_and_wait(Write::PutEndpoint(Box::new(wanted.clone())))
            .await?;
        endpoints.insert(key.clone(), wanted);
        listed.push(key);
    }
    let dropped: Vec<Key> = endpoints
        .iter()
        .filter(|(key, endpoint)| endpoint.source == "config" && !listed.contains(key))
        .map(|(key, _)| key.clone())
        .collect();
    for key in dropped {
        tracing::info!(endpoint = %key.1, tenant = %key.0, "endpoint no longer in the config file; removed");
        args.storage
            .write_and_wait(Write::DeleteEndpoint {
                tenant: key.0.clone(),
                endpoint_id: key.1.clone(),
            })
            .await?;
        endpoints.remove(&key);
    }
    Ok(())
}

/// The typed way to reach the webhook actor; `Root` re-points it when it
/// restarts the actor.
#[derive(Clone)]
pub struct WebhooksHandle {
    actor: crate::supervision::Slot<WebhooksMsg>,
}

impl WebhooksHandle {
    pub(crate) fn new(actor: ActorRef<WebhooksMsg>) -> Self {
        WebhooksHandle {
            actor: crate::supervision::Slot::new(actor),
        }
    }

    pub(crate) fn replace(&self, actor: ActorRef<WebhooksMsg>) {
        self.actor.replace(actor);
    }

    pub(crate) fn actor(&self) -> ActorRef<WebhooksMsg> {
        self.actor.get()
    }

    pub async fn call<T: Send + 'static>(
        &self,
        build: impl FnOnce(RpcReplyPort<T>) -> WebhooksMsg,
    ) -> Result<T> {
        match self.actor().call(build, Some(CALL_TIMEOUT)).await {
            Ok(CallResult::Success(result)) => Ok(result),
            _ => Err(Error::Unavailable("webhooks")),
        }
    }
}

impl From<WorkerReport> for WebhooksMsg {
    fn from(report: WorkerReport) -> Self {
        WebhooksMsg::Worker(report)
    }
}

impl TryFrom<WebhooksMsg> for WorkerReport {
    type Error = ();

    fn try_from(message: WebhooksMsg) -> std::result::Result<Self, ()> {
        match message {
            WebhooksMsg::Worker(report) => Ok(report),
            _ => Err(()),
        }
    }
}
