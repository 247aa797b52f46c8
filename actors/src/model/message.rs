//! Messages: what a client sends (`NewMessage`, `ClientCommand`), what the
//! log stores (`StoredMessage` with its answer metadata and tool calls), and
//! the acknowledgement of a durable one. Plain data.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ids::{MessageId, SessionId, TenantId};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
    System,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
        }
    }

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
    /// The channel of its conversation (`webchat`), or none for the API and
    /// sockets: kept on each message so statistics count by it without a join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The `X-Request-Id` of the HTTP request that stored it (for a socket's
    /// messages, the request that opened the socket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Boxed: the message travels inside every write, so it stays small.
    pub request_id: Option<Box<str>>,
}

impl StoredMessage {
    /// A whole message of `role`, written now, with nothing else known about
    /// it; callers fill in what they know with struct update syntax.
    pub fn new(
        tenant: TenantId,
        session_id: SessionId,
        seq: u64,
        role: Role,
        content: String,
    ) -> StoredMessage {
        StoredMessage {
            id: MessageId::new(),
            tenant,
            session_id,
            seq,
            role,
            content,
            status: MessageStatus::Complete,
            client_msg_id: None,
            created_at: super::now_timestamp(),
            no_reply: false,
            direction: role.direction(),
            author: None,
            origin: None,
            agent: None,
            tool_calls: Vec::new(),
            channel: None,
            request_id: None,
        }
    }
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

/// A message as a client or back end sent it, before the session gives it a `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// The `X-Request-Id` of the request that brought it.
    pub request_id: Option<String>,
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
            request_id: None,
        }
    }
}

/// What the session tells the sender once its message is durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub client_msg_id: Option<String>,
    pub message_id: MessageId,
    pub seq: u64,
    pub created_at: String,
}

/// A command from a connected client, already parsed and shape-checked by the edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientCommand {
    Message(NewMessage),
    Cancel,
    Typing,
    /// Replay every stored message with `seq > after_seq`, then any answer in progress.
    Resume {
        after_seq: u64,
        /// The context version the client has (the whole context is sent if stale).
        context_version: Option<u64>,
    },
    /// Merge these keys into the session's context.
    Context(Map<String, Value>),
    Ping,
}
