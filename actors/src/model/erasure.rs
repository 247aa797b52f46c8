//! Erasure: who a request to forget a person names (a conversation, a
//! webchat `session_id`, an email or a phone), and what was erased.

use serde::Serialize;

use super::ids::SessionId;

/// How the person to forget is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErasureSubject {
    Conversation(SessionId),
    /// A webchat visitor, by the `session_id` their page chose.
    WebchatSession(String),
    Email(String),
    Phone(String),
}

impl ErasureSubject {
    /// The name of the identifier, as the request and the event give it.
    pub fn field(&self) -> &'static str {
        match self {
            ErasureSubject::Conversation(_) => "conversation_id",
            ErasureSubject::WebchatSession(_) => "session_id",
            ErasureSubject::Email(_) => "email",
            ErasureSubject::Phone(_) => "phone",
        }
    }
}

/// What an erasure did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Erased {
    pub erased_by: &'static str,
    pub conversation_ids: Vec<SessionId>,
    pub erased_at: String,
}
