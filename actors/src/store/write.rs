//! Writes: every change to the stored state as a [`Write`], how each becomes
//! SurrealQL statements of one batch, and [`Durable`], the callback that fires
//! once the batch holding a write has committed (or failed).
//!
//! Never lets one bad statement into a batch: SurrealDB aborts a transaction
//! at its first error, which would fail every other session's writes with it.

use serde_json::{Map, Value, json};
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::model::{
    ApiKeyRecord, Attendant, Consent, Contact, Delivery, EventRecord, Handoff, MessageId,
    SessionId, SessionRecord, StoredMessage, TenantId, TenantRecord, WebhookEndpoint,
};

/// A change to the stored state. Each becomes statements of one batch.
#[derive(Debug, Clone)]
pub enum Write {
    CreateSession(Box<SessionRecord>),
    /// Appends to a session's log and bumps the conversation's counters.
    AppendMessage(StoredMessage),
    /// A change and the events it caused, in one transaction: the outbox.
    /// The webhook actor is woken once they commit.
    WithEvents(Box<Write>, Vec<EventRecord>),
    SetContext {
        tenant: TenantId,
        session: SessionId,
        context: Map<String, Value>,
        updated_at: String,
    },
    /// Removes the conversation and its whole log.
    DeleteSession {
        tenant: TenantId,
        session: SessionId,
    },
    /// Stores a tenant made through the admin API (UPSERT: the runtime checks
    /// for duplicates first, and a batch must never fail on one).
    PutTenant(Box<TenantRecord>),
    /// A conversation's title, status and version (its session checked the
    /// version it replaces: it is the only writer of its conversation).
    SetMeta {
        tenant: TenantId,
        session: SessionId,
        title: Option<String>,
        status: String,
        version: u64,
        updated_at: String,
    },
    PutKey(ApiKeyRecord),
    RevokeKey {
        key_id: String,
        revoked_at: String,
    },
    /// The visitor's consent decision: kept on the conversation (the latest
    /// rules) and appended to the consent log.
    RecordConsent {
        tenant: TenantId,
        session: SessionId,
        consent: Consent,
    },
    /// Creates or replaces a conversation's contact.
    PutContact(Box<Contact>),
    /// Opens a handoff request on a conversation.
    SetAttendance {
        tenant: TenantId,
        session: SessionId,
        handoff: Option<Handoff>,
        human: Option<Attendant>,
    },
    /// Creates or replaces a webhook endpoint.
    PutEndpoint(Box<WebhookEndpoint>),
    /// Removes an endpoint and every delivery to it.
    DeleteEndpoint {
        tenant: TenantId,
        endpoint_id: String,
    },
    /// Marks events dispatched and creates their deliveries: one step, so an
    /// event is fanned out exactly once.
    FanOut {
        event_ids: Vec<String>,
        deliveries: Vec<Delivery>,
    },
    /// A test event, already dispatched, and its one delivery.
    SendTest {
        event: Box<EventRecord>,
        delivery: Box<Delivery>,
    },
    /// Records an attempt's outcome, or a replay (UPDATE: a delivery whose
    /// endpoint was deleted meanwhile stays deleted).
    PutDelivery(Box<Delivery>),
    /// Adds the geolocation of a stored message's address (looked up after it was stored).
    SetMessageGeo {
        tenant: TenantId,
        message: MessageId,
        geo: Value,
    },
}

impl Write {
    /// Appends this write's statements, with variables prefixed by its index.
    pub(super) fn append_to(
        &self,
        index: usize,
        statement: &mut String,
        vars: &mut Map<String, Value>,
    ) {
        let p = format!("w{index}_");
        let mut bind = |name: &str, value: Value| {
            vars.insert(format!("{p}{name}"), value);
        };
        match self {
            Write::CreateSession(record) => {
                bind("id", json!(record.id.to_string()));
                bind(
                    "doc",
                    serde_json::to_value(record).expect("records serialise"),
                );
                statement.push_str(&format!(
                    "CREATE type::record('conversation', ${p}id) CONTENT ${p}doc;\n"
                ));
            }
            Write::AppendMessage(message) => append_message(&p, message, statement, &mut bind),
            Write::WithEvents(write, events) => {
                write.append_to(index, statement, vars);
                for (number, event) in events.iter().enumerate() {
                    let prefix = format!("{p}e{number}_");
                    let mut bind = |name: &str, value: Value| {
                        vars.insert(format!("{prefix}{name}"), value);
                    };
                    append_event(&prefix, event, statement, &mut bind);
                }
            }
            Write::SetContext {
                tenant,
                session,
                context,
                updated_at,
            } => {
                bind("sid", json!(session.to_string()));
                bind("tenant", json!(tenant));
                bind("context", Value::Object(context.clone()));
                bind("at", json!(updated_at));
                statement.push_str(&format!(
                    "UPDATE type::record('conversation', ${p}sid) SET context = ${p}context, \
                     updated_at = ${p}at WHERE tenant = ${p}tenant;\n"
                ));
            }
            Write::SetMeta {
                tenant,
                session,
                title,
                status,
                version,
                updated_at,
            } => {
                bind("sid", json!(session.to_string()));
                bind("tenant", json!(tenant));
                // NONE, not null: an absent title must satisfy option<string>.
                let title = match title {
                    Some(title) => {
                        bind("title", json!(title));
                        format!("${p}title")
                    }
                    None => "NONE".to_owned(),
                };
                bind("status", json!(status));
                bind("version", json!(version));
                bind("at", json!(updated_at));
                statement.push_str(&format!(
                    "UPDATE type::record('conversation', ${p}sid) SET title = {title}, status = ${p}status, \
                     version = ${p}version, updated_at = ${p}at WHERE tenant = ${p}tenant;\n"
                ));
            }
            Write::PutTenant(record) => {
                bind("id", json!(record.tenant_id));
                bind(
                    "doc",
                    serde_json::to_value(record).expect("tenants serialise"),
                );
                statement.push_str(&format!(
                    "UPSERT type::record('tenant', ${p}id) CONTENT ${p}doc;\n"
                ));
            }
            Write::PutKey(record) => {
                bind("id", json!(record.key_id));
                bind("doc", serde_json::to_value(record).expect("keys serialise"));
                statement.push_str(&format!(
                    "UPSERT type::record('api_key', ${p}id) CONTENT ${p}doc;\n"
                ));
            }
            Write::RevokeKey { key_id, revoked_at } => {
                bind("id", json!(key_id));
                bind("at", json!(revoked_at));
                statement.push_str(&format!(
                    "UPDATE type::record('api_key', ${p}id) SET revoked_at = ${p}at WHERE revoked_at = NONE;\n"
                ));
            }
            Write::DeleteSession { tenant, session } => {
                bind("sid", json!(session.to_string()));
                bind("tenant", json!(tenant));
                // The consent log and recorded events stay: they are the audit trail.
                statement.push_str(&format!(
                    "DELETE message WHERE tenant = ${p}tenant AND session_id = ${p}sid;\n\
                     DELETE type::record('contact', ${p}sid) WHERE tenant = ${p}tenant;\n\
                     DELETE type::record('conversation', ${p}sid) WHERE tenant = ${p}tenant;\n"
                ));
            }
            Write::RecordConsent {
                tenant,
                session,
                consent,
            } => {
                bind("sid", json!(session.to_string()));
                bind("tenant", json!(tenant));
                let consent = serde_json::to_value(consent).expect("consents serialise");
                let mut logged = consent.clone();
                logged["tenant"] = json!(tenant);
                logged["conversation_id"] = json!(session.to_string());
                bind("consent", consent);
                bind("logged", logged);
                statement.push_str(&format!(
                    "UPDATE type::record('conversation', ${p}sid) SET consent = ${p}consent \
                     WHERE tenant = ${p}tenant;\n\
                     CREATE consent CONTENT ${p}logged;\n"
                ));
            }
            Write::PutContact(contact) => {
                bind("id", json!(contact.conversation_id.to_string()));
                bind(
                    "doc",
                    serde_json::to_value(contact).expect("contacts serialise"),
                );
                statement.push_str(&format!(
                    "UPSERT type::record('contact', ${p}id) CONTENT ${p}doc;\n"
                ));
            }
            Write::SetAttendance {
                tenant,
                session,
                handoff,
                human,
            } => {
                bind("sid", json!(session.to_string()));
                bind("tenant", json!(tenant));
                // NONE, not null, for an absent one (option<object>).
                let mut field = |name: &str, value: Option<Value>| match value {
                    Some(value) => {
                        bind(name, value);
                        format!("${p}{name}")
                    }
                    None => "NONE".to_owned(),
                };
                let handoff = field(
                    "handoff",
                    handoff
                        .as_ref()
                        .map(|handoff| serde_json::to_value(handoff).expect("handoffs serialise")),
                );
                let human = field(
                    "human",
                    human
                        .as_ref()
                        .map(|human| serde_json::to_value(human).expect("attendants serialise")),
                );
                statement.push_str(&format!(
                    "UPDATE type::record('conversation', ${p}sid) SET handoff = {handoff}, \
                     human = {human} WHERE tenant = ${p}tenant;\n"
                ));
            }
            Write::PutEndpoint(endpoint) => {
                bind("key", json!([endpoint.tenant, endpoint.endpoint_id]));
                bind(
                    "doc",
                    serde_json::to_value(endpoint).expect("endpoints serialise"),
                );
                statement.push_str(&format!(
                    "UPSERT type::record('webhook_endpoint', ${p}key) CONTENT ${p}doc;\n"
                ));
            }
            Write::DeleteEndpoint {
                tenant,
                endpoint_id,
            } => {
                bind("key", json!([tenant, endpoint_id]));
                bind("tenant", json!(tenant));
                bind("endpoint", json!(endpoint_id));
                statement.push_str(&format!(
                    "DELETE delivery WHERE tenant = ${p}tenant AND endpoint_id = ${p}endpoint;\n\
                     DELETE type::record('webhook_endpoint', ${p}key);\n"
                ));
            }
            Write::FanOut {
                event_ids,
                deliveries,
            } => {
                bind("events", json!(event_ids));
                bind(
                    "deliveries",
                    serde_json::to_value(deliveries).expect("deliveries serialise"),
                );
                statement.push_str(&format!(
                    "FOR $event IN ${p}events {{ UPDATE type::record('event', $event) SET dispatched = true; }};\n\
                     FOR $delivery IN ${p}deliveries {{ CREATE type::record('delivery', $delivery.delivery_id) CONTENT $delivery; }};\n"
                ));
            }
            Write::SendTest { event, delivery } => {
                append_event(&p, event, statement, &mut bind);
                bind("did", json!(delivery.delivery_id));
                bind(
                    "delivery",
                    serde_json::to_value(delivery).expect("deliveries serialise"),
                );
                statement.push_str(&format!(
                    "UPDATE type::record('event', ${p}eid) SET dispatched = true;\n\
                     CREATE type::record('delivery', ${p}did) CONTENT ${p}delivery;\n"
                ));
            }
            Write::PutDelivery(delivery) => {
                bind("did", json!(delivery.delivery_id));
                bind(
                    "delivery",
                    serde_json::to_value(delivery).expect("deliveries serialise"),
                );
                statement.push_str(&format!(
                    "UPDATE type::record('delivery', ${p}did) CONTENT ${p}delivery;\n"
                ));
            }
            Write::SetMessageGeo {
                tenant,
                message,
                geo,
            } => {
                bind("id", json!(message.to_string()));
                bind("tenant", json!(tenant));
                bind("geo", geo.clone());
                statement.push_str(&format!(
                    "UPDATE type::record('message', ${p}id) SET origin.geo = ${p}geo \
                     WHERE tenant = ${p}tenant AND origin != NONE;\n"
                ));
            }
        }
    }
}

fn append_message(
    p: &str,
    message: &StoredMessage,
    statement: &mut String,
    bind: &mut impl FnMut(&str, Value),
) {
    bind("id", json!(message.id.to_string()));
    bind(
        "doc",
        serde_json::to_value(message).expect("messages serialise"),
    );
    bind("sid", json!(message.session_id.to_string()));
    bind("tenant", json!(message.tenant));
    bind("seq", json!(message.seq));
    bind("at", json!(message.created_at));
    statement.push_str(&format!(
        "CREATE type::record('message', ${p}id) CONTENT ${p}doc;\n\
         UPDATE type::record('conversation', ${p}sid) SET last_seq = ${p}seq, \
         message_count += 1, updated_at = ${p}at WHERE tenant = ${p}tenant;\n"
    ));
}

fn append_event(
    p: &str,
    event: &EventRecord,
    statement: &mut String,
    bind: &mut impl FnMut(&str, Value),
) {
    bind("eid", json!(event.event_id));
    bind(
        "event",
        serde_json::to_value(event).expect("events serialise"),
    );
    statement.push_str(&format!(
        "CREATE type::record('event', ${p}eid) CONTENT ${p}event;\n"
    ));
}

/// Called once when a write is durable (or has failed). If it is dropped
/// unfired (the actor died with the write queued), it reports the failure, so
/// no waiter ever hangs.
pub struct Durable(Option<Box<dyn FnOnce(Result<()>) + Send>>);

impl Durable {
    pub fn new(callback: impl FnOnce(Result<()>) + Send + 'static) -> Self {
        Durable(Some(Box::new(callback)))
    }

    /// A `Durable` whose outcome arrives on a oneshot, for callers that await.
    pub fn channel() -> (Durable, oneshot::Receiver<Result<()>>) {
        let (tx, rx) = oneshot::channel();
        (
            Durable::new(move |outcome| {
                let _ = tx.send(outcome);
            }),
            rx,
        )
    }

    pub(super) fn complete(mut self, outcome: Result<()>) {
        if let Some(callback) = self.0.take() {
            callback(outcome);
        }
    }
}

impl Drop for Durable {
    fn drop(&mut self) {
        if let Some(callback) = self.0.take() {
            callback(Err(Error::Unavailable("persistence")));
        }
    }
}
