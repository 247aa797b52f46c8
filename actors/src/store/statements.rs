//! The SurrealQL of each write: what `Write::append_to` adds to a batch.
//! Every variable carries its write's prefix (`w3_sid`), so one batch holds
//! many writes' statements side by side in one transaction.
//!
//! Messages and events are not statements of their own: consecutive ones
//! gather in the batch's [`Bulk`] rows and go in as one `INSERT` per table,
//! written out before the next statement, so the batch's order holds. One
//! bulk `INSERT` costs about a third of a `CREATE` per row.

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::counters::{self, Counters, Touch};
use crate::model::stream::{ProducerRecord, StreamRecord, StreamUnit};
use crate::model::{
    Attendant, Consent, Delivery, DoubleTexting, EventRecord, Handoff, MessageId, SessionId,
    StoredMessage, TenantId,
};

/// One transaction being built: its text, its variables, and the rows
/// waiting to be inserted in bulk.
pub struct Batch {
    sql: String,
    vars: Map<String, Value>,
    bulk: Bulk,
}

/// Rows gathered for one `INSERT` per table.
#[derive(Default)]
struct Bulk {
    messages: Vec<Value>,
    events: Vec<Value>,
    deliveries: Vec<Value>,
    /// Bulk inserts written so far: each binds its own variable.
    written: usize,
}

impl Bulk {
    /// Writes the gathered rows out as one `INSERT` per table.
    fn write_out(&mut self, sql: &mut String, vars: &mut Map<String, Value>) {
        for (table, rows) in [
            ("message", std::mem::take(&mut self.messages)),
            ("event", std::mem::take(&mut self.events)),
            ("delivery", std::mem::take(&mut self.deliveries)),
        ] {
            if rows.is_empty() {
                continue;
            }
            let name = format!("bulk{}", self.written);
            self.written += 1;
            vars.insert(name.clone(), Value::Array(rows));
            sql.push_str(&format!("INSERT INTO {table} ${name} RETURN NONE;\n"));
        }
    }
}

impl Batch {
    pub fn new() -> Self {
        Batch {
            sql: String::from("BEGIN TRANSACTION;\n"),
            vars: Map::new(),
            bulk: Bulk::default(),
        }
    }

    /// Adds a statement that guards the whole transaction (the fence), with
    /// its own variables; before any write's.
    pub fn guard(&mut self, statement: &str, vars: Value) {
        self.sql.push_str(statement);
        if let Value::Object(vars) = vars {
            self.vars.extend(vars);
        }
    }

    /// The statements of the write at `index`.
    pub fn write(&mut self, index: usize) -> Statements<'_> {
        Statements {
            sql: &mut self.sql,
            vars: &mut self.vars,
            bulk: &mut self.bulk,
            prefix: format!("w{index}_"),
        }
    }

    /// The transaction's text and variables.
    pub fn finish(mut self) -> (String, Map<String, Value>) {
        self.bulk.write_out(&mut self.sql, &mut self.vars);
        self.sql.push_str("COMMIT TRANSACTION;");
        (self.sql, self.vars)
    }
}

/// A batch's statements and variables, seen through one write's prefix.
pub struct Statements<'a> {
    sql: &'a mut String,
    vars: &'a mut Map<String, Value>,
    bulk: &'a mut Bulk,
    prefix: String,
}

/// A conversation's tenant and id: most writes name both.
type Conversation<'a> = (&'a TenantId, SessionId);

impl<'a> Statements<'a> {
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

    /// Adds a statement, after the rows gathered before it.
    pub fn push(&mut self, statement: String) {
        self.bulk.write_out(self.sql, self.vars);
        self.sql.push_str(&statement);
        self.sql.push('\n');
    }

    /// A document with this record key, for a bulk `INSERT`.
    fn row(id: &str, document: &impl Serialize) -> Value {
        let mut row = serde_json::to_value(document).expect("stored documents serialise");
        row["id"] = json!(id);
        row
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
            "CREATE type::record('{table}', {id}) CONTENT {document} RETURN NONE;"
        ));
    }

    /// `UPSERT` of a document with this id (a batch must never fail on a duplicate).
    pub fn upsert(&mut self, table: &str, id: impl Serialize, document: &impl Serialize) {
        let id = self.doc("id", &id);
        let document = self.doc("doc", document);
        self.push(format!(
            "UPSERT type::record('{table}', {id}) CONTENT {document} RETURN NONE;"
        ));
    }
}

/// A message, inserted with the batch's others. Its conversation's
/// counters follow lazily (`counters.rs`).
pub fn append_message(out: &mut Statements, message: &StoredMessage) {
    let row = Statements::row(&message.id.to_string(), message);
    out.bulk.messages.push(row);
}

/// An event for the outbox, inserted with the batch's others.
pub fn record_event(out: &mut Statements, event: &EventRecord) {
    let row = Statements::row(&event.event_id, event);
    out.bulk.events.push(row);
}

/// The marker of a batch that owes counters (see `counters.rs`).
pub fn owe_counters(out: &mut Statements, id: &str, touches: &[Touch]) {
    let id = out.var("id", json!(id));
    let marker = out.var("marker", counters::marker(touches));
    out.push(format!(
        "CREATE type::record('pending_count', {id}) CONTENT {marker} RETURN NONE;"
    ));
}

/// Owed counters, and the markers they settle.
pub fn pay_counters(out: &mut Statements, counters: &Counters) {
    let touches = out.doc("touches", &counters.touches);
    let markers = out.var("markers", json!(counters.markers));
    out.push(format!(
        "FOR $t IN {touches} {{ UPDATE type::record('conversation', $t.sid) SET \
         last_seq = array::max([last_seq, $t.seq]), message_count += $t.added, \
         updated_at = array::max([updated_at, $t.at]) WHERE tenant = $t.tenant RETURN NONE; }};\n\
         FOR $m IN {markers} {{ DELETE type::record('pending_count', $m) RETURN NONE; }};"
    ));
}

pub fn set_context(
    out: &mut Statements,
    conversation: Conversation<'_>,
    (context, version): (&Map<String, Value>, u64),
    updated_at: &str,
) {
    let (sid, tenant) = out.conversation(conversation);
    let context = out.var("context", Value::Object(context.clone()));
    let version = out.var("context_version", json!(version));
    let at = out.var("at", json!(updated_at));
    out.push(format!(
        "UPDATE type::record('conversation', {sid}) SET context = {context}, \
         context_version = {version}, updated_at = {at} WHERE tenant = {tenant} RETURN NONE;"
    ));
}

/// Title, status, the double-texting policy and version.
pub fn set_meta(
    out: &mut Statements,
    conversation: Conversation<'_>,
    (title, status, policy, version): (Option<&str>, &str, Option<DoubleTexting>, u64),
    updated_at: &str,
) {
    let (sid, tenant) = out.conversation(conversation);
    let title = out.optional("title", title.map(|title| json!(title)));
    let policy = out.optional("double_texting", policy.map(|policy| json!(policy)));
    let status = out.var("status", json!(status));
    let version = out.var("version", json!(version));
    let at = out.var("at", json!(updated_at));
    out.push(format!(
        "UPDATE type::record('conversation', {sid}) SET title = {title}, status = {status}, \
         double_texting = {policy}, version = {version}, updated_at = {at} WHERE tenant = {tenant} RETURN NONE;"
    ));
}

pub fn revoke_key(out: &mut Statements, key_id: &str, revoked_at: &str) {
    let id = out.var("id", json!(key_id));
    let at = out.var("at", json!(revoked_at));
    out.push(format!(
        "UPDATE type::record('api_key', {id}) SET revoked_at = {at} WHERE revoked_at = NONE RETURN NONE;"
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
         WHERE tenant = {tenant_var} RETURN NONE;\n\
         CREATE consent CONTENT {logged} RETURN NONE;"
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
         human = {human} WHERE tenant = {tenant} RETURN NONE;"
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
    out.push(format!(
        "FOR $event IN {events} {{ UPDATE type::record('event', $event) SET dispatched = true RETURN NONE; }};"
    ));
    for delivery in deliveries {
        let row = Statements::row(&delivery.delivery_id, delivery);
        out.bulk.deliveries.push(row);
    }
}

/// A test event, already dispatched, and its one delivery.
pub fn send_test(out: &mut Statements, event: &EventRecord, delivery: &Delivery) {
    record_event(out, event);
    let event = out.var("eid", json!(event.event_id));
    let id = out.var("did", json!(delivery.delivery_id));
    let delivery = out.doc("delivery", delivery);
    out.push(format!(
        "UPDATE type::record('event', {event}) SET dispatched = true RETURN NONE;\n\
         CREATE type::record('delivery', {id}) CONTENT {delivery} RETURN NONE;"
    ));
}

/// An attempt's outcome or a replay (UPDATE: a delivery whose endpoint was
/// deleted meanwhile stays deleted).
pub fn put_delivery(out: &mut Statements, delivery: &Delivery) {
    let id = out.var("did", json!(delivery.delivery_id));
    let delivery = out.doc("delivery", delivery);
    out.push(format!(
        "UPDATE type::record('delivery', {id}) CONTENT {delivery} RETURN NONE;"
    ));
}

pub fn set_message_geo(out: &mut Statements, tenant: &TenantId, message: MessageId, geo: &Value) {
    let id = out.var("id", json!(message.to_string()));
    let tenant = out.var("tenant", json!(tenant));
    let geo = out.var("geo", geo.clone());
    out.push(format!(
        "UPDATE type::record('message', {id}) SET origin.geo = {geo} \
         WHERE tenant = {tenant} AND origin != NONE RETURN NONE;"
    ));
}

/// Everything about a person in these conversations, in one step: message
/// text, authors, origins (address, user agent, geolocation) and client
/// ids; the contact; the consent log's subject, address and user agent; the
/// insights; stored events' payloads and deliveries' last errors (a body is
/// rebuilt from its event). The rows stay, so counts, times and tokens do.
pub fn erase(out: &mut Statements, tenant: &TenantId, sessions: &[SessionId], erased_at: &str) {
    let ids: Vec<String> = sessions.iter().map(SessionId::to_string).collect();
    let ids = out.var("ids", json!(ids));
    let tenant = out.var("tenant", json!(tenant));
    let at = out.var("at", json!(erased_at));
    out.push(format!(
        "FOR $sid IN {ids} {{\n\
         UPDATE message SET content = '', author = NONE, origin = NONE, client_msg_id = NONE, \
         tool_calls = NONE WHERE tenant = {tenant} AND session_id = $sid RETURN NONE;\n\
         DELETE type::record('contact', $sid) WHERE tenant = {tenant} RETURN NONE;\n\
         DELETE type::record('insight', $sid) WHERE tenant = {tenant} RETURN NONE;\n\
         UPDATE consent SET subject = 'erased', ip = NONE, user_agent = NONE \
         WHERE tenant = {tenant} AND conversation_id = $sid RETURN NONE;\n\
         UPDATE event SET data = {{ erased: true }} WHERE tenant = {tenant} AND conversation_id = $sid RETURN NONE;\n\
         UPDATE delivery SET last_error = NONE WHERE tenant = {tenant} AND conversation_id = $sid RETURN NONE;\n\
         UPDATE type::record('conversation', $sid) SET context = {{}}, title = NONE, \
         external_id = NONE, consent = NONE, handoff = NONE, erased_at = {at}, analyzed_seq = last_seq \
         WHERE tenant = {tenant} RETURN NONE;\n}};"
    ));
}

/// A conversation's insights, and the newest `seq` they cover.
pub fn put_insight(out: &mut Statements, insight: &crate::model::insight::Insight) {
    let conversation = (&insight.tenant, insight.conversation_id);
    let (sid, tenant) = out.conversation(conversation);
    let document = out.doc("insight", insight);
    let seq = out.var("seq", json!(insight.through_seq));
    out.push(format!(
        "UPSERT type::record('insight', {sid}) CONTENT {document} RETURN NONE;\n\
         UPDATE type::record('conversation', {sid}) SET analyzed_seq = {seq} \
         WHERE tenant = {tenant} RETURN NONE;"
    ));
}

/// A stream's record (its tail, closure, `Stream-Seq`), its new units and a
/// producer's new state. The units go in as one bulk `INSERT`.
pub fn put_stream(
    out: &mut Statements,
    record: &StreamRecord,
    units: &[StreamUnit],
    producer: Option<&ProducerRecord>,
) {
    out.upsert("stream", json!([record.tenant, record.path]), record);
    if !units.is_empty() {
        let rows: Vec<Value> = units
            .iter()
            .map(|unit| {
                let mut row = serde_json::to_value(unit).expect("stored documents serialise");
                row["id"] = json!(format!("{}_{:020}", unit.stream_id, unit.position));
                row
            })
            .collect();
        let rows = out.var("units", Value::Array(rows));
        out.push(format!("INSERT INTO stream_unit {rows} RETURN NONE;"));
    }
    if let Some(producer) = producer {
        let id = json!([producer.stream_id, producer.producer]);
        out.upsert("stream_producer", id, producer);
    }
}

/// A stream and everything of it.
pub fn delete_stream(out: &mut Statements, record: &StreamRecord) {
    let key = out.var("key", json!([record.tenant, record.path]));
    let id = out.var("stream_id", json!(record.stream_id));
    out.push(format!(
        "DELETE type::record('stream', {key}) WHERE stream_id = {id} RETURN NONE;\n\
         DELETE stream_unit WHERE stream_id = {id} RETURN NONE;\n\
         DELETE stream_producer WHERE stream_id = {id} RETURN NONE;"
    ));
}
