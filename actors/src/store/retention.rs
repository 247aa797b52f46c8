//! Retention's queries: each removes (or finds) at most one batch, straight
//! on the database handle rather than through the persistence actor's
//! group commit, so a long prune is many short transactions between which
//! message batches commit, never one long write ahead of them.

use serde::Deserialize;
use serde_json::json;

use super::handle::Storage;
use super::read::bounded;
use crate::error::Result;
use crate::model::{ALWAYS_RECORDED, DeliveryStatus, SessionId, TenantId};

/// A conversation retention may act on, with the version a change needs.
#[derive(Debug, Clone, Deserialize)]
pub struct IdleConversation {
    #[serde(rename = "session_id")]
    pub id: SessionId,
    pub version: u64,
}

/// Up to `limit` of an endpoint's deliveries in `status` made before
/// `before` (a delivery id: ids grow with time, so the index on
/// `(tenant, endpoint_id, status, delivery_id)` finds them).
const OLD_DELIVERIES: &str = "SELECT delivery_id, event_id FROM delivery WITH INDEX delivery_by_endpoint \
    WHERE tenant = $tenant AND endpoint_id = $endpoint AND status = $status \
    AND delivery_id < $before LIMIT $limit;";

/// The deliveries, then each of their events that no delivery needs any
/// more (except the kinds kept for ever), in one transaction: an event is
/// never left behind by a crash between the two.
const REMOVE_DELIVERIES: &str = "BEGIN TRANSACTION;
FOR $delivery IN $deliveries { DELETE type::record('delivery', $delivery) RETURN NONE; };
FOR $event IN $events {
    IF array::len(SELECT VALUE delivery_id FROM delivery WITH INDEX delivery_by_event WHERE event_id = $event LIMIT 1) = 0 {
        DELETE type::record('event', $event) WHERE type NOTINSIDE $kept RETURN NONE;
    };
};
COMMIT TRANSACTION;";

#[derive(Deserialize)]
struct OldDelivery {
    delivery_id: String,
    event_id: String,
}

impl Storage {
    /// Removes one batch of old deliveries and their events no delivery
    /// needs; returns how many deliveries went (fewer than `limit`: no more).
    pub async fn prune_deliveries(
        &self,
        tenant: &TenantId,
        endpoint_id: &str,
        status: DeliveryStatus,
        before: &str,
        limit: usize,
    ) -> Result<usize> {
        let vars = json!({
            "tenant": tenant,
            "endpoint": endpoint_id,
            "status": status,
            "before": before,
            "limit": limit,
        });
        let old: Vec<OldDelivery> = bounded(self.db.select(OLD_DELIVERIES, vars)).await?;
        if old.is_empty() {
            return Ok(0);
        }
        let deliveries: Vec<&str> = old.iter().map(|row| row.delivery_id.as_str()).collect();
        let mut events: Vec<&str> = old.iter().map(|row| row.event_id.as_str()).collect();
        events.sort_unstable();
        events.dedup();
        let vars = json!({"deliveries": deliveries, "events": events, "kept": ALWAYS_RECORDED});
        bounded(self.db.run(REMOVE_DELIVERIES, vars)).await?;
        Ok(old.len())
    }

    /// Up to `limit` of a tenant's conversations last changed before
    /// `before` (a stored timestamp), in `status` if given, oldest first.
    pub async fn idle_conversations(
        &self,
        tenant: &TenantId,
        status: Option<&str>,
        before: &str,
        limit: usize,
    ) -> Result<Vec<IdleConversation>> {
        let filter = if status.is_some() {
            "AND status = $status "
        } else {
            ""
        };
        let query = format!(
            "SELECT session_id, version FROM conversation WHERE tenant = $tenant {filter}\
             AND updated_at < $before ORDER BY updated_at LIMIT $limit;"
        );
        let vars = json!({"tenant": tenant, "status": status, "before": before, "limit": limit});
        bounded(self.db.select(&query, vars)).await
    }
}
