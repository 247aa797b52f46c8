//! One endpoint's delivery worker, supervised by `Webhooks` (actor.rs),
//! which starts one per endpoint. The worker owns its endpoint's pending
//! deliveries: it sends them, signed, records every attempt, retries on the
//! configured schedule and declares a delivery dead when the schedule is used
//! up. A slow or failing endpoint only ever holds up its own worker.
//!
//! Order: deliveries of one conversation go out one at a time, in the order
//! they were made; a delivery waiting for its retry holds back the later ones
//! of its conversation (not those of others). Up to `max_in_flight`
//! conversations are in flight at once.
//!
//! Memory: at most about [`WINDOW`] deliveries are held; the rest wait in the
//! database (`backlog`) and are read in order as the window empties. A new
//! worker starts with everything in the database, so a restart loses nothing.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, DerivedActorRef, RpcReplyPort};

use super::attempt::{Attempt, attempt};
use crate::error::{Error, Result};
use crate::model::{
    Delivery, DeliveryStatus, EventRecord, TenantId, WebhookEndpoint, now_timestamp,
};
use crate::net::egress::EgressPolicy;
use crate::store::{Durable, Storage, Write};

/// Deliveries held in memory per endpoint before the rest wait in the database.
/// What a worker tells the webhook actor.
#[derive(Debug)]
pub enum WorkerReport {
    /// The receiver answered `410 Gone`: the endpoint is to be disabled.
    Gone {
        tenant: TenantId,
        endpoint_id: String,
    },
}

pub const WINDOW: usize = 1000;
/// How long to wait before reading the backlog again after a failed read.
const REFILL_RETRY: Duration = Duration::from_secs(1);

pub enum WorkerMsg {
    /// New deliveries, already durable, in the order they were made.
    Enqueue(Vec<(Delivery, EventRecord)>),
    /// The endpoint changed (URL, secret, filter, enabled…).
    Update(Box<WebhookEndpoint>),
    /// Makes these deliveries (`None`: every dead one) pending again.
    Replay {
        ids: Option<Vec<String>>,
        reply: RpcReplyPort<Result<usize>>,
    },
    /// Replayed deliveries, stored as pending again.
    Replayed(Vec<(Delivery, EventRecord)>),
    /// An attempt finished.
    Attempted {
        delivery_id: String,
        outcome: Attempt,
    },
    /// A retry may be due.
    Wake,
    /// The next part of the backlog, read from the database.
    Refilled(Result<Vec<(Delivery, EventRecord)>>),
    /// Another node of a cluster made deliveries pending (a test, a
    /// replay): every pending one is read again, the held ones skipped.
    Rescan,
    /// A finished delivery's outcome is stored: a rescan can no longer
    /// read it as pending.
    Recorded(String),
}
impl ractor::Message for WorkerMsg {}

/// The delivery policy, from `[webhooks]`.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// Waits before each retry; after the last, a failure is final.
    pub delays: Vec<Duration>,
    pub jitter: f64,
    pub timeout: Duration,
    pub max_in_flight: usize,
}

pub struct WorkerArgs {
    pub endpoint: WebhookEndpoint,
    pub storage: Storage,
    pub client: reqwest::Client,
    pub policy: EgressPolicy,
    pub settings: Arc<DeliverySettings>,
    pub webhooks: DerivedActorRef<WorkerReport>,
}

struct Queued {
    delivery: Delivery,
    event: EventRecord,
    due: Instant,
}

pub struct WorkerState {
    args: WorkerArgs,
    /// Pending deliveries by conversation (or by event, for events of none).
    queues: HashMap<String, VecDeque<Queued>>,
    /// Ids of every delivery in `queues`.
    held: HashSet<String>,
    /// Delivered or dead, its outcome not stored yet: still pending in the
    /// database, so a rescan must not hold it again.
    settled: HashSet<String>,
    /// The next backlog read starts from the first pending delivery.
    rescan: bool,
    /// Conversations with an attempt in flight.
    in_flight: HashSet<String>,
    /// The newest delivery read or received: the backlog starts after it.
    loaded_through: Option<String>,
    /// Whether the database may hold pending deliveries that are not in memory.
    backlog: bool,
    refilling: bool,
    /// Deliveries turned away while a refill was being read: read again.
    dropped_while_refilling: bool,
    refill_not_before: Instant,
    /// The earliest wake already scheduled.
    wake_at: Option<Instant>,
}

pub struct Worker;

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: WorkerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(WorkerState {
            args,
            queues: HashMap::new(),
            held: HashSet::new(),
            settled: HashSet::new(),
            rescan: false,
            in_flight: HashSet::new(),
            loaded_through: None,
            // Everything pending is in the database until read.
            backlog: true,
            refilling: false,
            dropped_while_refilling: false,
            refill_not_before: Instant::now(),
            wake_at: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        pump(&myself, state);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WorkerMsg::Enqueue(items) => {
                if state.backlog || state.held.len() >= WINDOW {
                    // They are in the database; the backlog read finds them.
                    state.backlog = true;
                    state.dropped_while_refilling |= state.refilling;
                } else {
                    for (delivery, event) in items {
                        if state
                            .loaded_through
                            .as_ref()
                            .is_none_or(|through| delivery.delivery_id > *through)
                        {
                            state.loaded_through = Some(delivery.delivery_id.clone());
                        }
                        hold(state, delivery, event);
                    }
                }
            }
            WorkerMsg::Update(endpoint) => state.args.endpoint = *endpoint,
            WorkerMsg::Replay { ids, reply } => {
                let storage = state.args.storage.clone();
                let endpoint = state.args.endpoint.clone();
                let myself = myself.clone();
                tokio::spawn(async move {
                    let _ = reply.send(replay(&storage, &endpoint, ids, &myself).await);
                });
            }
            WorkerMsg::Replayed(items) => {
                for (delivery, event) in items {
                    hold(state, delivery, event);
                }
            }
            WorkerMsg::Attempted {
                delivery_id,
                outcome,
            } => attempted(&myself, state, delivery_id, outcome),
            WorkerMsg::Wake => state.wake_at = None,
            WorkerMsg::Refilled(read) => refilled(&myself, state, read),
            WorkerMsg::Rescan => {
                state.rescan = true;
                state.backlog = true;
            }
            WorkerMsg::Recorded(delivery_id) => {
                state.settled.remove(&delivery_id);
            }
        }
        pump(&myself, state);
        Ok(())
    }
}

/// A backlog read came back: its deliveries are held (the held ones and
/// the settled ones skipped), or the read is tried again in a moment.
fn refilled(
    myself: &ActorRef<WorkerMsg>,
    state: &mut WorkerState,
    read: Result<Vec<(Delivery, EventRecord)>>,
) {
    state.refilling = false;
    match read {
        Ok(items) => {
            let asked = WINDOW.saturating_sub(state.held.len()).max(1);
            let complete = items.len() < asked && !state.dropped_while_refilling;
            // A rescan reads from the start: never step back.
            if let Some((last, _)) = items.last()
                && state
                    .loaded_through
                    .as_ref()
                    .is_none_or(|through| last.delivery_id > *through)
            {
                state.loaded_through = Some(last.delivery_id.clone());
            }
            for (delivery, event) in items {
                hold(state, delivery, event);
            }
            state.backlog = !complete || state.rescan;
        }
        Err(error) => {
            tracing::warn!(endpoint = %state.args.endpoint.endpoint_id, %error, "cannot read pending deliveries; trying again");
            state.refill_not_before = Instant::now() + REFILL_RETRY;
            schedule_wake(myself, state, REFILL_RETRY);
        }
    }
    state.dropped_while_refilling = false;
}

/// The queue's depth and oldest delivery, for `/metrics`. Each queue is in
/// order, so the oldest is at the front of one of them.
fn report_queue(state: &WorkerState) {
    let oldest = state
        .queues
        .values()
        .filter_map(|queue| queue.front())
        .map(|head| head.delivery.created_at.as_str())
        .min();
    crate::metrics::webhook_queue(&state.args.endpoint.endpoint_id, state.held.len(), oldest);
}

/// Adds a pending delivery behind the others of its conversation.
fn hold(state: &mut WorkerState, delivery: Delivery, event: EventRecord) {
    if delivery.status != DeliveryStatus::Pending
        || state.settled.contains(&delivery.delivery_id)
        || !state.held.insert(delivery.delivery_id.clone())
    {
        return;
    }
    let due = due_instant(delivery.next_attempt_at.as_deref());
    state
        .queues
        .entry(order_key(&delivery))
        .or_default()
        .push_back(Queued {
            delivery,
            event,
            due,
        });
}

/// Deliveries of one conversation keep their order; others are independent.
fn order_key(delivery: &Delivery) -> String {
    delivery
        .conversation_id
        .clone()
        .unwrap_or_else(|| delivery.event_id.clone())
}

/// When a stored `next_attempt_at` falls, on the monotonic clock (now, if it has passed).
fn due_instant(next_attempt_at: Option<&str>) -> Instant {
    let now = Instant::now();
    let Some(at) = next_attempt_at.and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
    else {
        return now;
    };
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    wait.to_std().map(|wait| now + wait).unwrap_or(now)
}

/// Starts what is due, reads the backlog when the window has room, and
/// schedules a wake for the next retry.
fn pump(myself: &ActorRef<WorkerMsg>, state: &mut WorkerState) {
    report_queue(state);
    let now = Instant::now();
    if state.backlog
        && !state.refilling
        && state.held.len() < WINDOW / 2
        && now >= state.refill_not_before
    {
        state.refilling = true;
        let storage = state.args.storage.clone();
        let endpoint = state.args.endpoint.clone();
        let after = match std::mem::take(&mut state.rescan) {
            true => None,
            false => state.loaded_through.clone(),
        };
        let limit = WINDOW - state.held.len();
        let myself = myself.clone();
        tokio::spawn(async move {
            let read = storage.pending_deliveries(&endpoint, after, limit).await;
            let _ = myself.cast(WorkerMsg::Refilled(read));
        });
    }
    if !state.args.endpoint.enabled {
        return;
    }
    let mut due: Vec<(&String, &str)> = Vec::new();
    let mut next: Option<Instant> = None;
    for (key, queue) in &state.queues {
        let Some(head) = queue.front() else { continue };
        if state.in_flight.contains(key) {
            continue;
        }
        if head.due <= now {
            due.push((key, &head.delivery.delivery_id));
        } else {
            next = Some(next.map_or(head.due, |next| next.min(head.due)));
        }
    }
    due.sort_by(|a, b| a.1.cmp(b.1));
    let free = state
        .args
        .settings
        .max_in_flight
        .saturating_sub(state.in_flight.len());
    let starting: Vec<String> = due
        .into_iter()
        .take(free)
        .map(|(key, _)| key.clone())
        .collect();
    for key in starting {
        let head = state.queues[&key].front().expect("a due queue has a head");
        let delivery_id = head.delivery.delivery_id.clone();
        let event = head.event.clone();
        let endpoint = state.args.endpoint.clone();
        let client = state.args.client.clone();
        let policy = state.args.policy.clone();
        let timeout = state.args.settings.timeout;
        let myself = myself.clone();
        state.in_flight.insert(key);
        tokio::spawn(async move {
            let outcome = attempt(&client, &policy, &endpoint, &event, timeout).await;
            let _ = myself.cast(WorkerMsg::Attempted {
                delivery_id,
                outcome,
            });
        });
    }
    if let Some(next) = next {
        schedule_wake(myself, state, next.saturating_duration_since(now));
    }
}

fn schedule_wake(myself: &ActorRef<WorkerMsg>, state: &mut WorkerState, after: Duration) {
    let at = Instant::now() + after;
    if state.wake_at.is_some_and(|scheduled| scheduled <= at) {
        return;
    }
    state.wake_at = Some(at);
    myself.send_after(after, || WorkerMsg::Wake);
}

/// Records an attempt: delivered and dead deliveries leave the queue; a
/// failure waits for its retry at the head of its conversation.
fn attempted(
    myself: &ActorRef<WorkerMsg>,
    state: &mut WorkerState,
    delivery_id: String,
    outcome: Attempt,
) {
    let Some((key, queue)) = state.queues.iter_mut().find(|(_, queue)| {
        queue
            .front()
            .is_some_and(|head| head.delivery.delivery_id == delivery_id)
    }) else {
        return;
    };
    let key = key.clone();
    state.in_flight.remove(&key);
    let head = queue.front_mut().expect("found by its head");
    let now = now_timestamp();
    let delivery = &mut head.delivery;
    delivery.attempts += 1;
    delivery.last_attempt_at = Some(now.clone());
    let mut done = false;
    let endpoint_id = state.args.endpoint.endpoint_id.clone();
    match outcome {
        Attempt::Delivered(status) => {
            crate::metrics::delivery_attempted(&endpoint_id, "delivered");
            delivery.status = DeliveryStatus::Delivered;
            delivery.last_status_code = Some(status);
            delivery.last_error = None;
            delivery.delivered_at = Some(now);
            delivery.next_attempt_at = None;
            done = true;
        }
        Attempt::Gone => {
            crate::metrics::delivery_attempted(&endpoint_id, "gone");
            // Stays pending: if the endpoint is enabled again, it goes first.
            delivery.last_status_code = Some(410);
            delivery.last_error = Some("410 Gone: the receiver disabled this endpoint".into());
            delivery.next_attempt_at = Some(now);
            state.args.endpoint.enabled = false;
            let _ = state.args.webhooks.send_message(WorkerReport::Gone {
                tenant: state.args.endpoint.tenant.clone(),
                endpoint_id: state.args.endpoint.endpoint_id.clone(),
            });
        }
        Attempt::Failed { status, error } => {
            delivery.last_status_code = status;
            delivery.last_error = Some(error);
            done = !retry_later(head, &state.args.settings);
            crate::metrics::delivery_attempted(&endpoint_id, if done { "dead" } else { "failed" });
        }
    }
    let record = head.delivery.clone();
    if done {
        queue.pop_front();
        if queue.is_empty() {
            state.queues.remove(&key);
        }
        state.held.remove(&delivery_id);
        state.settled.insert(delivery_id.clone());
    }
    let myself = myself.clone();
    state.args.storage.write(
        Write::PutDelivery(Box::new(record)),
        Durable::new(move |outcome| {
            if let Err(error) = &outcome {
                // At least once: the delivery may be sent again after a restart.
                tracing::error!(delivery = %delivery_id, %error, "delivery attempt not recorded");
            }
            let _ = myself.cast(WorkerMsg::Recorded(delivery_id));
        }),
    );
}

/// Schedules the next attempt of a failed delivery, if its schedule has
/// one left; otherwise it is dead. Whether it will be tried again.
fn retry_later(head: &mut Queued, settings: &DeliverySettings) -> bool {
    let delivery = &mut head.delivery;
    let Some(delay) = settings.delays.get(delivery.attempts as usize - 1) else {
        delivery.status = DeliveryStatus::Dead;
        delivery.next_attempt_at = None;
        tracing::warn!(delivery = %delivery.delivery_id, endpoint = %delivery.endpoint_id, "delivery dead after its last attempt");
        return false;
    };
    let wait = jittered(*delay, settings.jitter);
    head.due = Instant::now() + wait;
    delivery.next_attempt_at = Some(crate::model::stored_time(
        chrono::Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default(),
    ));
    true
}

/// `delay`, spread by up to `jitter` of itself either way.
fn jittered(delay: Duration, jitter: f64) -> Duration {
    let spread = (rand::random::<f64>() * 2.0 - 1.0) * jitter;
    delay.mul_f64((1.0 + spread).max(0.0))
}

/// Makes deliveries pending again (from their first attempt), stores that,
/// then hands them to the worker.
async fn replay(
    storage: &Storage,
    endpoint: &WebhookEndpoint,
    ids: Option<Vec<String>>,
    myself: &ActorRef<WorkerMsg>,
) -> Result<usize> {
    let replayed = make_pending(storage, endpoint, ids).await?;
    let count = replayed.len();
    let _ = myself.cast(WorkerMsg::Replayed(replayed));
    Ok(count)
}

/// Makes deliveries of `endpoint` pending again, from their first attempt
/// (`None`: every dead one), and stores that; the ones made pending.
pub(super) async fn make_pending(
    storage: &Storage,
    endpoint: &WebhookEndpoint,
    ids: Option<Vec<String>>,
) -> Result<Vec<(Delivery, EventRecord)>> {
    let one = ids.as_ref().and_then(|ids| ids.first().cloned());
    let found = storage
        .load_deliveries(&endpoint.tenant, &endpoint.endpoint_id, ids)
        .await?;
    if let Some(id) = one
        && found.is_empty()
    {
        return Err(Error::DeliveryNotFound(id));
    }
    let now = now_timestamp();
    let mut replayed = Vec::new();
    for (mut delivery, event) in found {
        if delivery.status == DeliveryStatus::Pending {
            continue;
        }
        delivery.status = DeliveryStatus::Pending;
        delivery.attempts = 0;
        delivery.next_attempt_at = Some(now.clone());
        delivery.delivered_at = None;
        storage
            .write_and_wait(Write::PutDelivery(Box::new(delivery.clone())))
            .await?;
        replayed.push((delivery, event));
    }
    Ok(replayed)
}
