//! The webhook actor's answers to the admin API (`actor.rs` routes them
//! here): deleting and listing endpoints, test events and replays. In a
//! cluster, a node that does not deliver stores what it was asked and
//! tells the one that does.

use ractor::RpcReplyPort;
use ractor::rpc::CallResult;

use super::actor::{CALL_TIMEOUT, WebhooksState};
use super::endpoints::Key;
use super::worker::{WorkerMsg, make_pending};
use crate::error::{Error, Result};
use crate::model::{Delivery, TenantId, WebhookEndpoint, WebhookNudge};
use crate::store::Write;

impl WebhooksState {
    /// Removes an endpoint, its worker and its deliveries.
    pub(super) async fn delete(&mut self, key: Key) -> Result<()> {
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
        self.args.storage.write_and_wait(write).await?;
        self.tell(WebhookNudge::Changed);
        Ok(())
    }

    /// Tells the other nodes (in a cluster).
    pub(super) fn tell(&self, nudge: WebhookNudge) {
        if let Some(role) = &self.role {
            role.tell(nudge);
        }
    }

    /// A tenant's endpoints, oldest first.
    pub(super) fn list(&self, tenant: &TenantId) -> Vec<WebhookEndpoint> {
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
    /// In a cluster, a node that does not deliver stores them and tells the
    /// one that does.
    pub(super) async fn send_test(&mut self, key: Key) -> Result<Delivery> {
        let Some(endpoint) = self.endpoints.get(&key) else {
            return Err(Error::WebhookNotFound(key.1));
        };
        let event = crate::model::events::test_event(&key.0, &key.1);
        let delivery = Delivery::new(&event, endpoint);
        let write = Write::SendTest {
            event: Box::new(event.clone()),
            delivery: Box::new(delivery.clone()),
        };
        self.args.storage.write_and_wait(write).await?;
        match self.workers.get(&key) {
            Some(worker) => {
                let _ = worker.cast(WorkerMsg::Replayed(vec![(delivery.clone(), event)]));
            }
            None => self.tell(WebhookNudge::Changed),
        }
        Ok(delivery)
    }

    /// Asks the endpoint's worker to replay one delivery (or every dead one);
    /// the worker answers, this actor does not wait for it.
    pub(super) fn replay(
        &self,
        key: Key,
        delivery_id: Option<String>,
        reply: RpcReplyPort<Result<usize>>,
    ) {
        let Some(worker) = self.workers.get(&key).cloned() else {
            return self.replay_elsewhere(key, delivery_id, reply);
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

    /// A replay on a node that does not deliver (in a cluster): the
    /// deliveries are made pending here, and the holder reads them.
    fn replay_elsewhere(
        &self,
        key: Key,
        delivery_id: Option<String>,
        reply: RpcReplyPort<Result<usize>>,
    ) {
        let (Some(endpoint), Some(role)) = (self.endpoints.get(&key).cloned(), &self.role) else {
            let _ = reply.send(Err(Error::WebhookNotFound(key.1)));
            return;
        };
        let storage = self.args.storage.clone();
        let ids = delivery_id.map(|id| vec![id]);
        let nudger = role.nudger.clone();
        tokio::spawn(async move {
            let outcome = make_pending(&storage, &endpoint, ids).await;
            if let (Ok(_), Some(nudge)) = (&outcome, nudger.get()) {
                nudge(None, WebhookNudge::Changed);
            }
            let _ = reply.send(outcome.map(|replayed| replayed.len()));
        });
    }
}
