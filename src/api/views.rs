//! The REST surfaces' views of stored data, one type per wire shape, each
//! built from the stored record in one place. The socket's own shape is
//! `WireMessage` (`tertulia_actors::model::protocol`).
//!
//! Field order is the order clients have always seen; absent values are
//! `null`, as the seeds show them.

use serde::Serialize;
use serde_json::{Map, Value, json};
use tertulia_actors::model::{
    AnswerMeta, Consent, Direction, DoubleTexting, Handoff, MessageId, MessageStatus, Role,
    SessionId, SessionRecord, StoredMessage, ToolCallRecord,
};

/// A JSON array of the views `V` of `items`.
pub fn array<'a, T, V>(items: &'a [T]) -> Value
where
    V: Serialize + From<&'a T>,
{
    Value::Array(items.iter().map(|item| json!(V::from(item))).collect())
}

/// A session as the frontend session API lists it.
#[derive(Serialize)]
pub struct SessionView {
    session_id: SessionId,
    status: String,
    context: Map<String, Value>,
    created_at: String,
    updated_at: String,
    message_count: u64,
    last_seq: u64,
}

impl From<SessionRecord> for SessionView {
    fn from(record: SessionRecord) -> Self {
        SessionView {
            session_id: record.id,
            status: record.status,
            context: record.context,
            created_at: record.created_at,
            updated_at: record.updated_at,
            message_count: record.message_count,
            last_seq: record.last_seq,
        }
    }
}

/// A conversation as the seed "Chat Endpoints" shows it.
#[derive(Serialize)]
pub struct ConversationView<'a> {
    id: SessionId,
    title: &'a Option<String>,
    client_id: &'a Option<String>,
    status: &'a str,
    created_at: &'a str,
    updated_at: &'a str,
    version: u64,
    message_count: u64,
    context: &'a Map<String, Value>,
    context_version: u64,
    /// The conversation's own double-texting policy (none: the tenant's).
    #[serde(skip_serializing_if = "Option::is_none")]
    double_texting: Option<DoubleTexting>,
    channel: &'a Option<String>,
    consent: &'a Option<Consent>,
    handoff: &'a Option<Handoff>,
}

impl<'a> From<&'a SessionRecord> for ConversationView<'a> {
    fn from(record: &'a SessionRecord) -> Self {
        ConversationView {
            id: record.id,
            title: &record.title,
            client_id: &record.client_id,
            status: &record.status,
            created_at: &record.created_at,
            updated_at: &record.updated_at,
            version: record.version,
            message_count: record.message_count,
            context: &record.context,
            context_version: record.context_version,
            double_texting: record.double_texting,
            channel: &record.channel,
            consent: &record.consent,
            handoff: &record.handoff,
        }
    }
}

/// A message as the seed "Chat Endpoints" shows it: a message is never
/// edited, so `updated_at` is its creation and `version` is 1.
#[derive(Serialize)]
pub struct ConversationMessage<'a> {
    id: MessageId,
    conversation_id: SessionId,
    role: Role,
    content: &'a str,
    created_at: &'a str,
    updated_at: &'a str,
    version: u64,
    seq: u64,
    status: MessageStatus,
    client_msg_id: &'a Option<String>,
    author: &'a Option<String>,
    direction: Direction,
    agent: &'a Option<Box<AnswerMeta>>,
    tool_calls: &'a [ToolCallRecord],
}

impl<'a> From<&'a StoredMessage> for ConversationMessage<'a> {
    fn from(message: &'a StoredMessage) -> Self {
        ConversationMessage {
            id: message.id,
            conversation_id: message.session_id,
            role: message.role,
            content: &message.content,
            created_at: &message.created_at,
            updated_at: &message.created_at,
            version: 1,
            seq: message.seq,
            status: message.status,
            client_msg_id: &message.client_msg_id,
            author: &message.author,
            direction: message.direction,
            agent: &message.agent,
            tool_calls: &message.tool_calls,
        }
    }
}

/// A message as the webchat history shows it. API keys also see where it
/// came from (address, user agent, geolocation); a widget sees its own words.
#[derive(Serialize)]
pub struct WebchatMessage<'a> {
    id: MessageId,
    conversation_id: SessionId,
    seq: u64,
    role: Role,
    author: &'a Option<String>,
    content: &'a str,
    status: MessageStatus,
    direction: Direction,
    locale: Option<&'a str>,
    created_at: &'a str,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    visitor: Option<VisitorFacts<'a>>,
}

/// Where a visitor's message came from, for API keys only.
#[derive(Serialize)]
struct VisitorFacts<'a> {
    ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    geo: Option<&'a Value>,
}

impl<'a> WebchatMessage<'a> {
    /// The view of `message`; with `full`, where it came from too.
    pub fn of(message: &'a StoredMessage, full: bool) -> Self {
        let origin = message.origin.as_deref();
        WebchatMessage {
            id: message.id,
            conversation_id: message.session_id,
            seq: message.seq,
            role: message.role,
            author: &message.author,
            content: &message.content,
            status: message.status,
            direction: message.direction,
            locale: origin.and_then(|origin| origin.locale.as_deref()),
            created_at: &message.created_at,
            visitor: full.then(|| VisitorFacts {
                ip: origin.and_then(|origin| origin.ip.as_deref()),
                user_agent: origin.and_then(|origin| origin.user_agent.as_deref()),
                geo: origin.and_then(|origin| origin.geo.as_ref()),
            }),
        }
    }
}
