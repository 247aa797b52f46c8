//! Plain domain types the actors exchange: ids, stored messages, sessions and
//! the commands a client can give. No actor, transport or database code here.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use uuid::Uuid;

/// A tenant's id as configured (`[tenants.<id>]`): short, stable, human-chosen.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(pub String);

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A conversation (session) id: a UUID v7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(pub Uuid);

impl SessionId {
    pub fn new() -> Self {
        SessionId(Uuid::now_v7())
    }
}

impl Default for SessionId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for SessionId {
    type Err = uuid::Error;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(text).map(SessionId)
    }
}

/// A message id: a UUID v7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(pub Uuid);

impl MessageId {
    pub fn new() -> Self {
        MessageId(Uuid::now_v7())
    }
}

impl Default for MessageId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
    System,
}

impl Role {
    /// Users write in; everything else is said to them.
    pub fn direction(self) -> Direction {
        match self {
            Role::User => Direction::Inbound,
            Role::Assistant | Role::System => Direction::Outbound,
        }
    }
}

/// Which way a message went, seen from the tenant: a visitor's message is
/// `inbound`, an answer `outbound`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

/// Where an inbound message came from, as its channel saw it. Recorded for
/// webchat messages; shown to API keys, never to the widget.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Origin {
    /// The surface it arrived on: `webchat`.
    pub channel: String,
    /// The client's address: the socket's peer, or `X-Forwarded-For` when the
    /// peer is a trusted proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// A BCP 47 language tag (`es-MX`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// What the geolocation provider said about `ip`, when one is configured.
    /// Added after the message is stored: the lookup never delays it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geo: Option<Value>,
}

/// Whether a stored message is whole. Only assistant messages can be cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    /// Written in full.
    Complete,
    /// Cut short by `cancel` or by a shutdown; `content` is what was generated.
    Interrupted,
    /// The agent failed; `content` is what was generated before it did.
    Failed,
}

/// One entry of a session's ordered log, exactly as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredMessage {
    #[serde(rename = "message_id")]
    pub id: MessageId,
    pub tenant: TenantId,
    pub session_id: SessionId,
    /// Position in the session's log: assigned by the session actor when the
    /// message is handed to storage, so log order is durability order.
    pub seq: u64,
    pub role: Role,
    pub content: String,
    pub status: MessageStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
    /// RFC 3339, UTC, microseconds: sorts as text.
    pub created_at: String,
    /// A user message its poster asked not to be answered.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_reply: bool,
    pub direction: Direction,
    /// Who wrote it, as the sender named them (a webchat visitor's `author`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Box<Origin>>,
    /// How an assistant message was generated (model, ids, tokens, timings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Box<AnswerMeta>>,
    /// The tools the agent called while writing this answer, with their results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallRecord>,
}

/// One tool call of an answer and what it returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallRecord {
    /// The model's id for the call.
    pub call_id: String,
    pub name: String,
    /// The arguments, as the JSON text the model wrote.
    pub arguments: String,
    /// What the tool answered (or why it failed), as given back to the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_error: bool,
}

/// What is known about how an answer was generated. Providers fill what they
/// know; the agent actor adds the timings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AnswerMeta {
    /// The agent that answered (`openai`, `webhook`, `echo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The provider's id for the response (`chatcmpl-…`): the seed's `assistant_response_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u32>,
    /// From the request to the first piece of text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_first_token_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_ms: Option<u64>,
    /// `stop`, `length`, `tool_calls`, `content_filter`…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
}

impl AnswerMeta {
    /// Takes every field `newer` knows.
    pub fn merge(&mut self, newer: AnswerMeta) {
        fn take<T>(into: &mut Option<T>, newer: Option<T>) {
            if newer.is_some() {
                *into = newer;
            }
        }
        take(&mut self.agent, newer.agent);
        take(&mut self.model, newer.model);
        take(&mut self.response_id, newer.response_id);
        take(&mut self.prompt_tokens, newer.prompt_tokens);
        take(&mut self.completion_tokens, newer.completion_tokens);
        take(
            &mut self.time_to_first_token_ms,
            newer.time_to_first_token_ms,
        );
        take(&mut self.total_ms, newer.total_ms);
        take(&mut self.finish_reason, newer.finish_reason);
    }
}

/// A stored conversation, without its messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    #[serde(rename = "session_id")]
    pub id: SessionId,
    pub tenant: TenantId,
    pub status: String,
    pub context: Map<String, Value>,
    pub created_at: String,
    pub updated_at: String,
    /// The highest `seq` stored so far (0 for an empty conversation).
    pub last_seq: u64,
    pub message_count: u64,
    /// The end user it belongs to, when it was created with a client token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Incremented by every change of title or status (optimistic concurrency).
    #[serde(default = "first_version")]
    pub version: u64,
    /// The channel that opened it (`webchat`), if not the session API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The channel's own id for it: a webchat `session_id`, chosen by the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// The visitor's latest consent decision (webchat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<Consent>,
    /// An open request for a person to take over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<Handoff>,
    /// The person answering instead of the AI (the conversation's agent is
    /// `human` while this is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub human: Option<Attendant>,
}

/// A member of the tenant's staff who took a conversation over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attendant {
    /// Their name, as their staff key gives it; shown to the visitor.
    pub name: String,
    /// The staff key they signed in with.
    pub key_id: String,
    pub since: String,
}

/// Who is on the other end of a socket, for `presence` frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Participant {
    /// The person the conversation is with (a widget visitor, an app user).
    Visitor,
    /// A member of the tenant's staff, watching from the agent console.
    Staff { name: String },
}

/// A visitor's decision on the processing of their personal data: who, when,
/// from where, and to which text. The latest one rules; every one is logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Consent {
    pub granted: bool,
    /// Which version of the consent text the visitor was shown.
    pub text_version: String,
    /// The visitor, as the channel knows them (the webchat `session_id`).
    pub subject: String,
    pub recorded_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// A lead: what a consenting visitor said about themselves, one per conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    pub tenant: TenantId,
    pub conversation_id: SessionId,
    /// The channel it was captured on: `webchat`.
    pub origin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Lowercased domain, as validated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// E.164 (`+525512345678`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// When the contact first had an email or a phone (and `lead.captured` was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead_captured_at: Option<String>,
}

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
    "agent.failed",
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
pub const ALWAYS_RECORDED: &[&str] = &["lead.captured", "agent.failed", "handoff.requested"];

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

/// A request for a person to take over a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handoff {
    pub requested_at: String,
    /// Who asked: `visitor`, `agent` (the model) or `api`.
    pub requested_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn first_version() -> u64 {
    1
}

/// A change to a conversation's title or status, valid only against `version`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetaChange {
    /// `Some(None)` clears the title.
    pub title: Option<Option<String>>,
    pub status: Option<String>,
    pub version: u64,
}

/// Who is asking: a tenant, and within it possibly one end user. A call with
/// a client sees only that client's conversations; without, the whole tenant's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pub tenant: TenantId,
    pub client: Option<String>,
}

impl Scope {
    /// The whole tenant (an API key alone).
    pub fn tenant(tenant: TenantId) -> Self {
        Scope {
            tenant,
            client: None,
        }
    }

    /// Whether this caller may see `record` (its tenant is checked by the query).
    pub fn may_see(&self, record: &SessionRecord) -> bool {
        self.client.is_none() || self.client == record.client_id
    }
}

/// A tenant created through the admin API (tenants in the config file have no record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantRecord {
    pub tenant_id: TenantId,
    pub settings: crate::config::TenantSettings,
    pub created_at: String,
}

/// What a key may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// `X-API-Key`: back ends and back offices, the whole tenant.
    Api,
    /// Public, in a landing page's widget: may only open conversations (and
    /// use the webchat surface), from the tenant's allowed origins.
    Widget,
    /// One member of the tenant's support staff, for the agent console: reads
    /// conversations, takes them over and answers in their own name.
    Staff,
}

impl KeyKind {
    /// The readable start of every key of this kind.
    pub fn prefix(self) -> &'static str {
        match self {
            KeyKind::Api => "tk_",
            KeyKind::Widget => "wk_",
            KeyKind::Staff => "sk_",
        }
    }
}

/// A stored key: its hash, never its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub key_id: String,
    pub tenant: TenantId,
    pub kind: KeyKind,
    /// Whose key it is: required for staff keys (their name is shown to
    /// visitors when they answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The key's first characters, to recognise it in listings.
    pub prefix: String,
    /// SHA-256 of the whole key, lowercase hex.
    pub hash: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

/// A message as a client or back end sent it, before the session gives it a `seq`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    /// `User` from sockets; back ends may also post `Assistant` (an n8n
    /// workflow or a person answering) and `System` messages.
    pub role: Role,
    /// Whether a `User` message starts an answer (back ends may say no).
    pub respond: bool,
    pub content: String,
    /// Merged into the session's context before the agent answers.
    pub context: Option<Map<String, Value>>,
    /// The client's own id for the message: a repeat is acknowledged again, not stored twice.
    pub client_msg_id: Option<String>,
    /// Who wrote it, as the sender names them.
    pub author: Option<String>,
    /// Where it came from (webchat: address, user agent, locale).
    pub origin: Option<Box<Origin>>,
}

impl NewMessage {
    /// A message from a user that is to be answered.
    pub fn user(content: impl Into<String>) -> Self {
        NewMessage {
            role: Role::User,
            respond: true,
            content: content.into(),
            context: None,
            client_msg_id: None,
            author: None,
            origin: None,
        }
    }
}

/// What the session tells the sender once its message is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub client_msg_id: Option<String>,
    pub message_id: MessageId,
    pub seq: u64,
    pub created_at: String,
}

/// A command from a connected client, already parsed and shape-checked by the edge.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientCommand {
    Message(NewMessage),
    Cancel,
    Typing,
    /// Replay every stored message with `seq > after_seq`, then any answer in progress.
    Resume {
        after_seq: u64,
    },
    /// Merge these keys into the session's context.
    Context(Map<String, Value>),
    Ping,
}

/// Now, as stored and sent: RFC 3339 in UTC with microseconds, so text order is time order.
pub fn now_timestamp() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// Shallow merge: keys in `patch` replace those in `into`; a `null` removes the key.
pub fn merge_context(into: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (key, value) in patch {
        if value.is_null() {
            into.remove(&key);
        } else {
            into.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_replaces_adds_and_removes_keys() {
        let mut context = json!({"a": 1, "b": 2}).as_object().unwrap().clone();
        let patch = json!({"b": 3, "c": 4, "a": null})
            .as_object()
            .unwrap()
            .clone();
        merge_context(&mut context, patch);
        assert_eq!(Value::Object(context), json!({"b": 3, "c": 4}));
    }

    #[test]
    fn timestamps_sort_as_text() {
        let first = now_timestamp();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = now_timestamp();
        assert!(first < second, "{first} !< {second}");
        assert!(first.ends_with('Z') && first.len() == 27, "{first}");
    }
}
