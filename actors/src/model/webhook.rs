//! Webhook data: recorded events, endpoints, deliveries and which event
//! types each tenant's endpoints subscribe to. Plain data; the webhook
//! actor and the store act on it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::ids::{SessionId, TenantId, now_timestamp};

/// Something that happened, recorded in the same transaction as the change
/// that caused it, for the webhook outbox to deliver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub event_id: String,
    pub tenant: TenantId,
    /// `lead.captured`, …
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<SessionId>,
    /// Flat fields a workflow can use without code.
    pub data: Map<String, Value>,
    pub created_at: String,
    /// Whether it has been fanned out to endpoints (or needed no fan-out).
    #[serde(default)]
    pub dispatched: bool,
}

impl EventRecord {
    pub fn new(
        tenant: TenantId,
        kind: &str,
        conversation_id: Option<SessionId>,
        data: Map<String, Value>,
    ) -> Self {
        EventRecord {
            event_id: format!("evt_{}", Uuid::now_v7().simple()),
            tenant,
            kind: kind.to_owned(),
            conversation_id,
            data,
            created_at: now_timestamp(),
            dispatched: false,
        }
    }
}

/// Every event type a webhook endpoint can subscribe to (`webhook.test` is
/// sent only by the "send test event" call, to the endpoint it names).
pub const EVENT_TYPES: &[&str] = &[
    "conversation.created",
    "conversation.updated",
    "conversation.deleted",
    "message.created",
    "lead.captured",
    "handoff.requested",
    "handoff.taken",
    "agent.failed",
    "conversation.analyzed",
    "contact.erased",
];

/// The type of the event sent by "send test event".
pub const TEST_EVENT: &str = "webhook.test";

/// How an endpoint wants its events: the event as JSON (n8n, CRMs), or a
/// Slack incoming-webhook message (`{"text": …}`) for notification channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    #[default]
    Json,
    Slack,
}

/// Where a tenant's events go. Made through the admin API (`source: admin`)
/// or the config file (`source: config`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    pub endpoint_id: String,
    pub tenant: TenantId,
    pub url: String,
    /// Standard Webhooks signing secret, `whsec_` + base64.
    pub secret: String,
    /// The secret before the last rotation: requests carry both signatures
    /// until it expires, so receivers can switch at their own pace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<String>,
    /// Event types (or `prefix.*`, or `*`); empty means every event.
    pub events: Vec<String>,
    pub format: WebhookFormat,
    pub enabled: bool,
    /// Why it is disabled, when the receiver disabled it (`410 Gone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// A static header (n8n's Header Auth), because n8n cannot check signatures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `admin` or `config`.
    pub source: String,
    pub created_at: String,
    pub updated_at: String,
}

// By hand, so secrets never reach a log line.
impl fmt::Debug for WebhookEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookEndpoint")
            .field("endpoint_id", &self.endpoint_id)
            .field("tenant", &self.tenant)
            .field("url", &self.url)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl WebhookEndpoint {
    /// Whether this endpoint wants events of type `kind`.
    pub fn wants(&self, kind: &str) -> bool {
        filter_wants(&self.events, kind)
    }
}

/// Whether an endpoint's event filter (empty: everything) takes `kind`.
pub fn filter_wants(filters: &[String], kind: &str) -> bool {
    filters.is_empty()
        || filters.iter().any(|filter| {
            filter == "*"
                || filter == kind
                || filter.strip_suffix(".*").is_some_and(|prefix| {
                    kind.strip_prefix(prefix)
                        .is_some_and(|rest| rest.starts_with('.'))
                })
        })
}

/// Events kept even when no endpoint subscribes to them: rare, and what an
/// operator looks for afterwards. The others are stored only for delivery.
pub const ALWAYS_RECORDED: &[&str] = &[
    "lead.captured",
    "agent.failed",
    "handoff.requested",
    "handoff.taken",
    "contact.erased",
];

/// Where one event stands with one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting for its first attempt or its next retry.
    Pending,
    Delivered,
    /// Every attempt failed: kept, visible and replayable.
    Dead,
}

/// One event on its way to one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// `dlv_` + a UUID v7: ids sort in the order deliveries were made.
    pub delivery_id: String,
    pub tenant: TenantId,
    pub endpoint_id: String,
    pub event_id: String,
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    pub status: DeliveryStatus,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
}

impl Delivery {
    /// A new pending delivery of `event` to `endpoint`, due now.
    pub fn new(event: &EventRecord, endpoint: &WebhookEndpoint) -> Self {
        let now = now_timestamp();
        Delivery {
            delivery_id: format!("dlv_{}", Uuid::now_v7().simple()),
            tenant: endpoint.tenant.clone(),
            endpoint_id: endpoint.endpoint_id.clone(),
            event_id: event.event_id.clone(),
            event_type: event.kind.clone(),
            conversation_id: event.conversation_id.map(|id| id.to_string()),
            status: DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_at: Some(now.clone()),
            last_attempt_at: None,
            last_status_code: None,
            last_error: None,
            created_at: now,
            delivered_at: None,
        }
    }
}

/// What a node tells the webhook actors of the others, in a cluster (where
/// one node, the holder of the `webhooks` role, fans out and delivers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookNudge {
    /// Events were committed here: the holder fans them out.
    EventsCommitted,
    /// Endpoints or deliveries were changed here: read them again.
    Changed,
}

/// Which event types each tenant's enabled endpoints want, kept current by
/// the webhook actor and read by persistence: an event nobody subscribes to
/// is not stored for delivery (most tenants have no endpoint, and a stored
/// copy of every message would double the cost of storing it).
#[derive(Clone, Default)]
pub struct Subscriptions(Arc<RwLock<HashMap<TenantId, Vec<Vec<String>>>>>);

impl Subscriptions {
    /// Whether an enabled endpoint of `tenant` wants events of type `kind`.
    pub fn wants(&self, tenant: &TenantId, kind: &str) -> bool {
        self.0
            .read()
            .expect("subscriptions poisoned")
            .get(tenant)
            .is_some_and(|filters| filters.iter().any(|filter| filter_wants(filter, kind)))
    }

    /// Replaces what is known with the subscriptions of `endpoints`.
    pub fn replace<'a>(&self, endpoints: impl IntoIterator<Item = &'a WebhookEndpoint>) {
        let mut by_tenant: HashMap<TenantId, Vec<Vec<String>>> = HashMap::new();
        for endpoint in endpoints.into_iter().filter(|endpoint| endpoint.enabled) {
            by_tenant
                .entry(endpoint.tenant.clone())
                .or_default()
                .push(endpoint.events.clone());
        }
        *self.0.write().expect("subscriptions poisoned") = by_tenant;
    }
}

/// The key bytes of a Standard Webhooks secret (`whsec_` + base64); `None`
/// if the secret is not in that form. Settings validation and the signer
/// both read secrets through this one function.
pub fn signing_key(secret: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let encoded = secret.strip_prefix("whsec_")?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    (!key.is_empty()).then_some(key)
}
