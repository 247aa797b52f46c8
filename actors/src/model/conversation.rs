//! A conversation as stored (`SessionRecord`) and the facts about it that
//! change over its life: title and status, consent, the visitor's contact,
//! a request for a person and who attends it. Plain data.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ids::{SessionId, TenantId};

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
    /// This conversation's own double-texting policy, over the tenant's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub double_texting: Option<super::policy::DoubleTexting>,
    /// Incremented by every change of the context (live context).
    #[serde(default)]
    pub context_version: u64,
}

impl SessionRecord {
    /// A new, empty, active conversation of `tenant`, created now; callers
    /// fill in what they know with struct update syntax.
    pub fn new(tenant: TenantId) -> SessionRecord {
        let now = super::now_timestamp();
        SessionRecord {
            id: SessionId::new(),
            tenant,
            status: "active".into(),
            context: Map::new(),
            created_at: now.clone(),
            updated_at: now,
            last_seq: 0,
            message_count: 0,
            client_id: None,
            title: None,
            version: first_version(),
            channel: None,
            external_id: None,
            consent: None,
            handoff: None,
            human: None,
            double_texting: None,
            context_version: 0,
        }
    }
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Participant {
    /// The person the conversation is with (a widget visitor, an app user).
    Visitor,
    /// A member of the tenant's staff, watching from the agent console.
    Staff { name: String },
    /// A program reading the conversation as a stream (Durable Streams): it
    /// is in no presence count, so its reads come and go unannounced.
    Reader,
}

impl Participant {
    /// Whether others are told when it joins or leaves.
    pub fn is_present(&self) -> bool {
        !matches!(self, Participant::Reader)
    }
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetaChange {
    /// `Some(None)` clears the title.
    pub title: Option<Option<String>>,
    pub status: Option<String>,
    /// `Some(None)` goes back to the tenant's policy.
    pub double_texting: Option<Option<super::policy::DoubleTexting>>,
    pub version: u64,
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
}
