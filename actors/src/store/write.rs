//! Writes: every change to the stored state as a [`Write`], how each becomes
//! SurrealQL statements of one batch, and [`Durable`], the callback that fires
//! once the batch holding a write has committed (or failed).
//!
//! Never lets one bad statement into a batch: SurrealDB aborts a transaction
//! at its first error, which would fail every other session's writes with it.

use std::borrow::Cow;

use serde_json::{Map, Value, json};
use tokio::sync::oneshot;

use super::counters::Counters;
use super::sealing::{HoldsSecrets, Sealer};
use super::statements::{self, Statements};
use crate::error::{Error, Result};
use crate::model::stream::{ProducerRecord, StreamRecord, StreamUnit};
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
        /// The context's version after this change.
        version: u64,
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
        double_texting: Option<crate::model::DoubleTexting>,
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
    /// Conversation counters owed by committed batches (the persistence
    /// actor's own write; see `counters.rs`).
    Counters(Counters),
    /// A conversation's insights (replacing the last), and the `seq` they
    /// cover on the conversation.
    PutInsight(Box<crate::model::insight::Insight>),
    /// A stream made (or made again), with its first units.
    PutStream {
        record: Box<StreamRecord>,
        units: Vec<StreamUnit>,
    },
    /// Units appended to a stream, its new tail (and closure, `Stream-Seq`)
    /// and the producer's new state, in one transaction.
    AppendStream {
        record: Box<StreamRecord>,
        units: Vec<StreamUnit>,
        producer: Option<ProducerRecord>,
    },
    /// A stream, its units and its producers' states, gone.
    DeleteStream(Box<StreamRecord>),
    /// Erases what these conversations hold about a person: message text,
    /// authors and origins, the contact, the consent log's addresses, the
    /// insights, stored events' payloads. Rows that statistics count stay.
    Erase {
        tenant: TenantId,
        sessions: Vec<SessionId>,
        erased_at: String,
    },
}

impl Write {
    /// This write as it is stored: with its secrets sealed, if it holds any.
    pub(super) fn sealed(&self, sealer: &Sealer) -> Cow<'_, Write> {
        match self {
            Write::PutTenant(record) => {
                Cow::Owned(Write::PutTenant(Box::new(record.sealed(sealer))))
            }
            Write::PutEndpoint(endpoint) => {
                Cow::Owned(Write::PutEndpoint(Box::new(endpoint.sealed(sealer))))
            }
            _ => Cow::Borrowed(self),
        }
    }

    /// The message this write appends to a log, if it does.
    pub(super) fn appended(&self) -> Option<&StoredMessage> {
        match self {
            Write::AppendMessage(message) => Some(message),
            Write::WithEvents(write, _) => write.appended(),
            _ => None,
        }
    }

    /// Appends this write's statements to a batch.
    pub(super) fn append_to(&self, out: &mut Statements) {
        match self {
            Write::CreateSession(record) => {
                out.create("conversation", record.id.to_string(), record)
            }
            Write::AppendMessage(message) => statements::append_message(out, message),
            Write::WithEvents(write, events) => {
                write.append_to(out);
                for event in events {
                    statements::record_event(out, event);
                }
            }
            Write::Counters(counters) => statements::pay_counters(out, counters),
            Write::SetContext { .. } | Write::SetMeta { .. } => self.append_facts(out),
            Write::PutTenant(record) => out.upsert("tenant", &record.tenant_id, record),
            Write::PutKey(record) => out.upsert("api_key", &record.key_id, record),
            Write::RevokeKey { key_id, revoked_at } => {
                statements::revoke_key(out, key_id, revoked_at)
            }
            Write::DeleteSession { tenant, session } => {
                statements::delete_session(out, (tenant, *session))
            }
            Write::RecordConsent {
                tenant,
                session,
                consent,
            } => statements::record_consent(out, (tenant, *session), consent),
            Write::PutContact(contact) => {
                out.upsert("contact", contact.conversation_id.to_string(), contact)
            }
            Write::SetAttendance {
                tenant,
                session,
                handoff,
                human,
            } => statements::set_attendance(out, (tenant, *session), handoff, human),
            Write::PutEndpoint(endpoint) => {
                let key = json!([endpoint.tenant, endpoint.endpoint_id]);
                out.upsert("webhook_endpoint", key, endpoint)
            }
            Write::DeleteEndpoint {
                tenant,
                endpoint_id,
            } => statements::delete_endpoint(out, tenant, endpoint_id),
            Write::FanOut {
                event_ids,
                deliveries,
            } => statements::fan_out(out, event_ids, deliveries),
            Write::SendTest { event, delivery } => statements::send_test(out, event, delivery),
            Write::PutDelivery(delivery) => statements::put_delivery(out, delivery),
            Write::SetMessageGeo {
                tenant,
                message,
                geo,
            } => statements::set_message_geo(out, tenant, *message, geo),
            Write::Erase {
                tenant,
                sessions,
                erased_at,
            } => statements::erase(out, tenant, sessions, erased_at),
            Write::PutInsight(insight) => statements::put_insight(out, insight),
            Write::PutStream { record, units } => statements::put_stream(out, record, units, None),
            Write::AppendStream {
                record,
                units,
                producer,
            } => statements::put_stream(out, record, units, producer.as_ref()),
            Write::DeleteStream(record) => statements::delete_stream(out, record),
        }
    }

    /// A conversation's context, or its title, status and policy.
    fn append_facts(&self, out: &mut Statements) {
        match self {
            Write::SetContext {
                tenant,
                session,
                context,
                version,
                updated_at,
            } => statements::set_context(out, (tenant, *session), (context, *version), updated_at),
            Write::SetMeta {
                tenant,
                session,
                title,
                status,
                double_texting,
                version,
                updated_at,
            } => {
                let meta = (title.as_deref(), status.as_str(), *double_texting, *version);
                statements::set_meta(out, (tenant, *session), meta, updated_at)
            }
            _ => unreachable!("append_to hands only context and meta writes here"),
        }
    }
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
