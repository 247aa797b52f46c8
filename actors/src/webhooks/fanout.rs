//! The fan-out of the outbox: the undispatched events, a delivery for each
//! subscribed, enabled endpoint, written in one step with the events marked
//! dispatched; only then are the workers told.

use std::collections::HashMap;

use ractor::ActorRef;

use super::endpoints::Key;
use super::worker::WorkerMsg;
use crate::error::Result;
use crate::model::{Delivery, EventRecord, TenantId, WebhookEndpoint};
use crate::store::{Storage, Write};

/// Events fanned out per transaction.
const FAN_OUT_BATCH: usize = 500;

pub(super) async fn fan_out_once(
    storage: &Storage,
    by_tenant: &HashMap<TenantId, Vec<WebhookEndpoint>>,
    workers: &HashMap<Key, ActorRef<WorkerMsg>>,
) -> Result<bool> {
    let events = storage.undispatched_events(FAN_OUT_BATCH).await?;
    if events.is_empty() {
        return Ok(false);
    }
    let mut deliveries = Vec::new();
    let mut per_endpoint: HashMap<Key, Vec<(Delivery, EventRecord)>> = HashMap::new();
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
