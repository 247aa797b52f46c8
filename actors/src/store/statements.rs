//! The SurrealQL of each write: what `Write::append_to` adds to a batch.
//! Every variable carries its write's prefix (`w3_sid`), so one batch holds
//! many writes' statements side by side in one transaction.

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::model::{
    Attendant, Consent, Delivery, EventRecord, Handoff, MessageId, SessionId, StoredMessage,
    TenantId,
};

/// A batch's statements and variables, seen through one write's prefix.
pub struct Statements<'a> {
    sql: &'a mut String,
    vars: &'a mut Map<String, Value>,
    prefix: String,
}

/// A conversation's tenant and id: most writes name both.
type Conversation<'a> = (&'a TenantId, SessionId);

impl<'a> Statements<'a> {
    /// The statements of the write at `index` in a batch.
    pub fn new(sql: &'a mut String, vars: &'a mut Map<String, Value>, index: usize) -> Self {
        Statements {
            sql,
            vars,
            prefix: format!("w{index}_"),
        }
    }

    /// The same batch under a longer prefix (a write's events).
    pub fn nested(&mut self, suffix: &str) -> Statements<'_> {
        Statements {
            prefix: format!("{}{suffix}", self.prefix),
            sql: self.sql,
            vars: self.vars,
        }
    }

    /// Binds `value` and returns the variable that names it (`$w3_sid`).
    pub fn var(&mut self, name: &str, value: Value) -> String {
        let key = format!("{}{name}", self.prefix);
        self.vars.insert(key.clone(), value);
        format!("${key}")
    }

    /// Binds a document as its JSON.
    pub fn doc(&mut self, name: &str, document: &impl Serialize) -> String {
        let value = serde_json::to_value(document).expect("stored documents serialise");
        self.var(name, value)
    }

    /// Binds `value` if there is one; `NONE` (not null) stands for an absent
    /// one, as `option<…>` fields require.
    pub fn optional(&mut self, name: &str, value: Option<Value>) -> String {
        match value {
            Some(value) => self.var(name, value),
            None => "NONE".to_owned(),
        }
    }

    pub fn push(&mut self, statement: String) {
        self.sql.push_str(&statement);
        self.sql.push('\n');
    }

    /// The conversation's record and tenant variables.
    fn conversation(&mut self, (tenant, session): Conversation<'_>) -> (String, String) {
        (
            self.var("sid", json!(session.to_string())),
            self.var("tenant", json!(tenant)),
        )
    }

    /// `CREATE` of a document with this id.
    pub fn create(&mut self, table: &str, id: impl Serialize, document: &impl Serialize) {
        let id = self.doc("id", &id);
        let document = self.doc("doc", document);
        self.push(format!(
            "CREATE type::record('{table}', {id}) CONTENT {document};"
        ));
    }

    /// `UPSERT` of a document with this id (a batch must never fail on a duplicate).
    pub fn upsert(&mut self, table: &str, id: impl Serialize, document: &impl Serialize) {
        let id = self.doc("id", &id);
        let document = self.doc("doc", document);
        self.push(format!(
            "UPSERT type::record('{table}', {id}) CONTENT {document};"
        ));
    }
}

/// A message, and the conversation's counters bumped with it.
pub fn append_message(out: &mut Statements, message: &StoredMessage) {
    out.create("message", message.id.to_string(), message);
    let (sid, tenant) = out.conversation((&message.tenant, message.session_id));
    let seq = out.var("seq", json!(message.seq));
    let at = out.var("at", json!(message.created_at));
    out.push(format!(
        "UPDATE type::record('conversation', {sid}) SET last_seq = {seq}, \
         message_count += 1, updated_at = {at} WHERE tenant = {tenant};"
    ));
}

/// An event for the outbox; returns the variable naming its id.
pub fn record_event(out: &mut Statements, event: &EventRecord) -> String {
    let id = out.var("eid", json!(event.event_id));
    let document = out.doc("event", event);
    out.push(format!(
        "CREATE type::record('event', {id}) CONTENT {document};"
    ));
    id
}

pub fn set_context(
    out: &mut Statements,
    conversation: Conversation<'_>,
    context: &Map<String, Value>,
    updated_at: &str,
) {
    let (sid, tenant) = out.conversation(conversation);
    let context = out.var("context", Value::Object(context.clone()));
    let at = out.var("at", json!(updated_at));
    out.push(format!(
        "UPDATE type::record('conversation', {sid}) SET context = {context}, \
         updated_at = {at} WHERE tenant = {tenant};"
    ));
}

/// Title, status and version.
pub fn set_meta(
    out: &mut Statements,
    conversation: Conversation<'_>,
    (title, status, version): (Option<&str>, &str, u64),
    updated_at: &str,
) {
    let (sid, tenant) = out.conversation(conversation);
    let title = out.optional("title", title.map(|title| json!(title)));
    let status = out.var("status", json!(status));
    let version = out.var("version", json!(version));
    let at = out.var("at", json!(updated_at));
    out.push(format!(
        "UPDATE type::record('conversation', {sid}) SET title = {title}, status = {status}, \
         version = {version}, updated_at = {at} WHERE tenant = {tenant};"
    ));
}

pub fn revoke_key(out: &mut Statements, key_id: &str, revoked_at: &str) {
    let id = out.var("id", json!(key_id));
    let at = out.var("at", json!(revoked_at));
    out.push(format!(
        "UPDATE type::record('api_key', {id}) SET revoked_at = {at} WHERE revoked_at = NONE;"
    ));
}

/// The conversation, its log and its contact. The consent log and recorded
/// events stay: they are the audit trail.
pub fn delete_session(out: &mut Statements, conversation: Conversation<'_>) {
    let (sid, tenant) = out.conversation(conversation);
    out.push(format!(
        "DELETE message WHERE tenant = {tenant} AND session_id = {sid};\n\
         DELETE type::record('contact', {sid}) WHERE tenant = {tenant};\n\
         DELETE type::record('conversation', {sid}) WHERE tenant = {tenant};"
    ));
}

/// The latest decision on the conversation, and a line in the consent log.
pub fn record_consent(out: &mut Statements, conversation: Conversation<'_>, consent: &Consent) {
    let (tenant, session) = conversation;
    let (sid, tenant_var) = out.conversation(conversation);
    let decision = serde_json::to_value(consent).expect("consents serialise");
    let mut logged = decision.clone();
    logged["tenant"] = json!(tenant);
    logged["conversation_id"] = json!(session.to_string());
    let decision = out.var("consent", decision);
    let logged = out.var("logged", logged);
    out.push(format!(
        "UPDATE type::record('conversation', {sid}) SET consent = {decision} \
         WHERE tenant = {tenant_var};\n\
         CREATE consent CONTENT {logged};"
    ));
}

/// Who attends the conversation: an open handoff request, a person.
pub fn set_attendance(
    out: &mut Statements,
    conversation: Conversation<'_>,
    handoff: &Option<Handoff>,
    human: &Option<Attendant>,
) {
    let (sid, tenant) = out.conversation(conversation);
    let handoff = handoff.as_ref().map(|handoff| json!(handoff));
    let handoff = out.optional("handoff", handoff);
    let human = human.as_ref().map(|human| json!(human));
    let human = out.optional("human", human);
    out.push(format!(
        "UPDATE type::record('conversation', {sid}) SET handoff = {handoff}, \
         human = {human} WHERE tenant = {tenant};"
    ));
}

/// An endpoint and every delivery to it.
pub fn delete_endpoint(out: &mut Statements, tenant: &TenantId, endpoint_id: &str) {
    let key = out.var("key", json!([tenant, endpoint_id]));
    let tenant = out.var("tenant", json!(tenant));
    let endpoint = out.var("endpoint", json!(endpoint_id));
    out.push(format!(
        "DELETE delivery WHERE tenant = {tenant} AND endpoint_id = {endpoint};\n\
         DELETE type::record('webhook_endpoint', {key});"
    ));
}

/// Events marked dispatched and their deliveries created, in one step.
pub fn fan_out(out: &mut Statements, event_ids: &[String], deliveries: &[Delivery]) {
    let events = out.var("events", json!(event_ids));
    let deliveries = out.doc("deliveries", &deliveries);
    out.push(format!(
        "FOR $event IN {events} {{ UPDATE type::record('event', $event) SET dispatched = true; }};\n\
         FOR $delivery IN {deliveries} {{ CREATE type::record('delivery', $delivery.delivery_id) CONTENT $delivery; }};"
    ));
}

/// A test event, already dispatched, and its one delivery.
pub fn send_test(out: &mut Statements, event: &EventRecord, delivery: &Delivery) {
    let event = record_event(out, event);
    let id = out.var("did", json!(delivery.delivery_id));
    let delivery = out.doc("delivery", delivery);
    out.push(format!(
        "UPDATE type::record('event', {event}) SET dispatched = true;\n\
         CREATE type::record('delivery', {id}) CONTENT {delivery};"
    ));
}

/// An attempt's outcome or a replay (UPDATE: a delivery whose endpoint was
/// deleted meanwhile stays deleted).
pub fn put_delivery(out: &mut Statements, delivery: &Delivery) {
    let id = out.var("did", json!(delivery.delivery_id));
    let delivery = out.doc("delivery", delivery);
    out.push(format!(
        "UPDATE type::record('delivery', {id}) CONTENT {delivery};"
    ));
}

pub fn set_message_geo(out: &mut Statements, tenant: &TenantId, message: MessageId, geo: &Value) {
    let id = out.var("id", json!(message.to_string()));
    let tenant = out.var("tenant", json!(tenant));
    let geo = out.var("geo", geo.clone());
    out.push(format!(
        "UPDATE type::record('message', {id}) SET origin.geo = {geo} \
         WHERE tenant = {tenant} AND origin != NONE;"
    ));
}
