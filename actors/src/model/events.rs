//! The webhook events: how each is built from the change that causes it, and
//! how it is rendered for an endpoint (the JSON envelope, or a Slack message).
//! Pure functions, no actor. The actor that makes a change builds its event
//! and hands both to storage as one write, so they commit together.
//!
//! Every `data` object is flat and always has the same keys (absent values are
//! `null`), so an n8n workflow can use `{{$json.body.data.content}}` without
//! code. `schemas/events/` documents each one; a test keeps them in step.

use serde_json::{Map, Value, json};

use super::conversation::{Attendant, Contact, Handoff, SessionRecord};
use super::ids::{SessionId, TenantId, now_timestamp};
use super::message::StoredMessage;
use super::webhook::{EventRecord, TEST_EVENT, WebhookFormat};

/// What the session knows about its conversation when it records an event.
pub struct ConversationFacts<'a> {
    pub tenant: &'a TenantId,
    pub id: SessionId,
    pub channel: Option<&'a str>,
    pub external_id: Option<&'a str>,
    pub title: Option<&'a str>,
    pub status: &'a str,
    pub version: u64,
    pub context: &'a Map<String, Value>,
}

fn base(facts: &ConversationFacts<'_>) -> Map<String, Value> {
    let mut data = Map::new();
    data.insert("conversation_id".into(), facts.id.to_string().into());
    data.insert("channel".into(), facts.channel.into());
    data.insert("external_id".into(), facts.external_id.into());
    data
}

fn event(facts: &ConversationFacts<'_>, kind: &str, data: Map<String, Value>) -> EventRecord {
    EventRecord::new(facts.tenant.clone(), kind, Some(facts.id), data)
}

impl<'a> ConversationFacts<'a> {
    /// What a stored record says about its conversation.
    pub fn of(record: &'a SessionRecord) -> Self {
        ConversationFacts {
            tenant: &record.tenant,
            id: record.id,
            channel: record.channel.as_deref(),
            external_id: record.external_id.as_deref(),
            title: record.title.as_deref(),
            status: &record.status,
            version: record.version,
            context: &record.context,
        }
    }
}

pub fn conversation_created(record: &SessionRecord) -> EventRecord {
    let facts = ConversationFacts::of(record);
    let mut data = base(&facts);
    data.insert("title".into(), facts.title.into());
    data.insert("status".into(), facts.status.into());
    data.insert("context".into(), Value::Object(record.context.clone()));
    data.insert("client_id".into(), record.client_id.clone().into());
    data.insert("created_at".into(), record.created_at.clone().into());
    event(&facts, "conversation.created", data)
}

/// `changed` names what changed: `context`, `title`, `status`, `consent`.
pub fn conversation_updated(
    facts: &ConversationFacts<'_>,
    changed: &[&str],
    consent_granted: Option<bool>,
) -> EventRecord {
    let mut data = base(facts);
    data.insert("changed".into(), json!(changed));
    data.insert("title".into(), facts.title.into());
    data.insert("status".into(), facts.status.into());
    data.insert("version".into(), facts.version.into());
    data.insert("context".into(), Value::Object(facts.context.clone()));
    data.insert("consent_granted".into(), consent_granted.into());
    data.insert("updated_at".into(), now_timestamp().into());
    event(facts, "conversation.updated", data)
}

pub fn conversation_deleted(tenant: &TenantId, id: SessionId) -> EventRecord {
    let mut data = Map::new();
    data.insert("conversation_id".into(), id.to_string().into());
    data.insert("deleted_at".into(), now_timestamp().into());
    EventRecord::new(tenant.clone(), "conversation.deleted", Some(id), data)
}

pub fn message_created(facts: &ConversationFacts<'_>, message: &StoredMessage) -> EventRecord {
    let mut data = base(facts);
    data.insert("message_id".into(), message.id.to_string().into());
    data.insert("seq".into(), message.seq.into());
    data.insert("role".into(), json!(message.role));
    data.insert("direction".into(), json!(message.direction));
    data.insert("author".into(), message.author.clone().into());
    data.insert("content".into(), message.content.clone().into());
    data.insert("request_id".into(), message.request_id.as_deref().into());
    data.insert("status".into(), json!(message.status));
    data.insert(
        "model".into(),
        message
            .agent
            .as_ref()
            .and_then(|meta| meta.model.clone())
            .into(),
    );
    data.insert(
        "tool_calls".into(),
        serde_json::to_value(&message.tool_calls).expect("tool calls serialise"),
    );
    data.insert("context".into(), Value::Object(facts.context.clone()));
    data.insert("created_at".into(), message.created_at.clone().into());
    event(facts, "message.created", data)
}

pub fn lead_captured(
    facts: &ConversationFacts<'_>,
    contact: &Contact,
    message_id: &str,
) -> EventRecord {
    let mut data = base(facts);
    data.insert("message_id".into(), message_id.into());
    data.insert("name".into(), contact.name.clone().into());
    data.insert("email".into(), contact.email.clone().into());
    data.insert("phone".into(), contact.phone.clone().into());
    data.insert("context".into(), Value::Object(facts.context.clone()));
    event(facts, "lead.captured", data)
}

pub fn handoff_requested(facts: &ConversationFacts<'_>, handoff: &Handoff) -> EventRecord {
    let mut data = base(facts);
    data.insert("title".into(), facts.title.into());
    data.insert("requested_by".into(), handoff.requested_by.clone().into());
    data.insert("reason".into(), handoff.reason.clone().into());
    data.insert("context".into(), Value::Object(facts.context.clone()));
    data.insert("requested_at".into(), handoff.requested_at.clone().into());
    event(facts, "handoff.requested", data)
}

/// A member of staff took the conversation over (the AI stays silent).
pub fn handoff_taken(facts: &ConversationFacts<'_>, attendant: &Attendant) -> EventRecord {
    let mut data = base(facts);
    data.insert("by".into(), attendant.name.clone().into());
    data.insert("taken_at".into(), attendant.since.clone().into());
    event(facts, "handoff.taken", data)
}

pub fn agent_failed(
    facts: &ConversationFacts<'_>,
    message: &StoredMessage,
    question_id: &str,
    agent: &str,
    error: &str,
) -> EventRecord {
    let mut data = base(facts);
    data.insert("message_id".into(), message.id.to_string().into());
    data.insert("question_id".into(), question_id.into());
    data.insert("agent".into(), agent.into());
    data.insert("error".into(), error.into());
    data.insert("partial_content".into(), message.content.clone().into());
    event(facts, "agent.failed", data)
}

/// A conversation was analysed (its insights are new or changed).
pub fn conversation_analyzed(
    facts: &ConversationFacts<'_>,
    insight: &super::insight::Insight,
) -> EventRecord {
    let mut data = base(facts);
    let answer = serde_json::to_value(&insight.answer).expect("insights serialise");
    if let Value::Object(answer) = answer {
        data.extend(answer);
    }
    data.insert("model".into(), insight.model.clone().into());
    data.insert("through_seq".into(), insight.through_seq.into());
    data.insert("analyzed_at".into(), insight.analyzed_at.clone().into());
    event(facts, "conversation.analyzed", data)
}

/// A person's data was erased from these conversations. Carries no
/// personal data: only which kind of identifier was used, and where.
pub fn contact_erased(
    tenant: &TenantId,
    erased_by: &str,
    conversations: &[SessionId],
    erased_at: &str,
) -> EventRecord {
    let mut data = Map::new();
    data.insert("erased_by".into(), erased_by.into());
    let ids: Vec<String> = conversations.iter().map(SessionId::to_string).collect();
    data.insert("conversation_ids".into(), json!(ids));
    data.insert("erased_at".into(), erased_at.into());
    EventRecord::new(tenant.clone(), "contact.erased", None, data)
}

/// The event "send test event" sends.
pub fn test_event(tenant: &TenantId, endpoint_id: &str) -> EventRecord {
    let mut data = Map::new();
    data.insert("endpoint_id".into(), endpoint_id.into());
    data.insert(
        "message".into(),
        "A test event from tertulia: this endpoint receives events.".into(),
    );
    EventRecord::new(tenant.clone(), TEST_EVENT, None, data)
}

/// What an endpoint receives: the same bytes on every attempt, so the
/// signature of a retry covers the same body.
pub fn body(event: &EventRecord, format: WebhookFormat) -> Vec<u8> {
    let value = match format {
        WebhookFormat::Json => json!({
            "id": event.event_id,
            "type": event.kind,
            "timestamp": event.created_at,
            "tenant": event.tenant,
            "data": event.data,
        }),
        WebhookFormat::Slack => json!({ "text": slack_text(event) }),
    };
    serde_json::to_vec(&value).expect("JSON values serialise")
}

/// The longest message excerpt in a Slack notification, in characters.
const SLACK_EXCERPT_CHARS: usize = 300;

/// One line (or two) for a notification channel.
pub fn slack_text(event: &EventRecord) -> String {
    let text = |key: &str| event.data.get(key).and_then(Value::as_str).map(escape);
    let conversation = text("title")
        .or_else(|| text("external_id"))
        .or_else(|| text("conversation_id"))
        .unwrap_or_else(|| "a conversation".into());
    match event.kind.as_str() {
        "lead.captured" => {
            let details: Vec<String> = ["email", "phone"]
                .iter()
                .filter_map(|key| text(key))
                .collect();
            format!(
                "New lead: {} ({}) in conversation {conversation}",
                text("name").unwrap_or_else(|| "no name given".into()),
                details.join(", ")
            )
        }
        "handoff.requested" => format!(
            "Handoff requested in conversation {conversation}{}",
            text("reason")
                .map(|reason| format!(": {reason}"))
                .unwrap_or_default()
        ),
        "agent.failed" => format!(
            "The agent failed to answer in conversation {conversation}: {}",
            text("error").unwrap_or_default()
        ),
        "message.created" => {
            let who = text("author").unwrap_or_else(|| text("role").unwrap_or_default());
            let content: String = event.data["content"]
                .as_str()
                .unwrap_or_default()
                .chars()
                .take(SLACK_EXCERPT_CHARS)
                .collect();
            format!(
                "{who} in conversation {conversation}:\n> {}",
                escape(&content)
            )
        }
        "conversation.created" => format!("New conversation {conversation}"),
        "conversation.updated" => format!(
            "Conversation {conversation} updated ({})",
            event.data["changed"]
                .as_array()
                .map(|changed| {
                    changed
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default()
        ),
        "conversation.deleted" => format!("Conversation {conversation} was deleted"),
        "handoff.taken" => format!(
            "{} took over conversation {conversation}",
            text("by").unwrap_or_else(|| "A person".into())
        ),
        "conversation.analyzed" => format!(
            "Conversation {conversation}: {} (intent {}, lead {})",
            text("summary").unwrap_or_default(),
            text("intent").unwrap_or_default(),
            text("lead_quality").unwrap_or_default()
        ),
        "contact.erased" => format!(
            "A person's data was erased from {} conversation(s)",
            event.data["conversation_ids"]
                .as_array()
                .map_or(0, Vec::len)
        ),
        _ => text("message").unwrap_or_else(|| format!("tertulia event {}", event.kind)),
    }
}

/// Slack reads `&`, `<` and `>` as markup; a visitor's text must not ping
/// `<!channel>` or forge links.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead() -> EventRecord {
        let mut data = Map::new();
        data.insert("conversation_id".into(), "c1".into());
        data.insert("name".into(), "Ana <!channel>".into());
        data.insert("email".into(), "ana@example.com".into());
        data.insert("phone".into(), Value::Null);
        EventRecord::new(TenantId("t".into()), "lead.captured", None, data)
    }

    #[test]
    fn slack_text_names_the_lead_and_escapes_markup() {
        assert_eq!(
            slack_text(&lead()),
            "New lead: Ana &lt;!channel&gt; (ana@example.com) in conversation c1"
        );
    }

    #[test]
    fn slack_text_says_who_took_over_and_names_no_one_erased() {
        let mut data = Map::new();
        data.insert("conversation_id".into(), "c2".into());
        data.insert("by".into(), "Ana <b>".into());
        let taken = EventRecord::new(TenantId("t".into()), "handoff.taken", None, data);
        assert_eq!(
            slack_text(&taken),
            "Ana &lt;b&gt; took over conversation c2"
        );
        let erased = contact_erased(&TenantId("t".into()), "email", &[SessionId::new()], "now");
        assert_eq!(
            slack_text(&erased),
            "A person's data was erased from 1 conversation(s)"
        );
    }

    #[test]
    fn the_json_body_is_the_envelope_and_the_same_every_time() {
        let event = lead();
        let body = body(&event, WebhookFormat::Json);
        assert_eq!(body, super::body(&event, WebhookFormat::Json));
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["id"], event.event_id);
        assert_eq!(value["type"], "lead.captured");
        assert_eq!(value["data"]["email"], "ana@example.com");
        let slack: Value =
            serde_json::from_slice(&super::body(&event, WebhookFormat::Slack)).unwrap();
        assert!(slack["text"].as_str().unwrap().starts_with("New lead: Ana"));
    }
}
