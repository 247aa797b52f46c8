//! The persistence actor: the only code that talks to SurrealDB. Supervised by
//! `Root`, which restarts it with the same [`Database`] handle if it panics.
//!
//! Writes are group-committed. While one batch is being written, new writes
//! queue up; when the batch commits, every waiter of that batch is told, and
//! whatever queued meanwhile goes out as the next batch, in one transaction and
//! so one fsync (surrealkv with `sync=every`). Batches run in a spawned task,
//! so reads and new writes are never stuck behind the disk. Reads run in
//! spawned tasks too, each on a clone of the handle.
//!
//! Never lets one bad statement into a batch: SurrealDB aborts a transaction
//! at its first error, which would fail every other session's writes with it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use surrealdb::Surreal;
use surrealdb::engine::any::Any;
use tokio::sync::{Notify, oneshot};

use crate::domain::{
    ApiKeyRecord, Attendant, Consent, Contact, Delivery, DeliveryStatus, EventRecord, Handoff,
    MessageId, SessionId, SessionRecord, StoredMessage, TenantId, TenantRecord, WebhookEndpoint,
};
use crate::error::{Error, Result};

impl From<surrealdb::Error> for Error {
    fn from(error: surrealdb::Error) -> Self {
        Error::Storage(error.to_string())
    }
}

/// Numbered migrations, applied in order at start and recorded in `migration`,
/// so each runs once. A unit test checks this list against `schemas/migrations/`.
pub const MIGRATIONS: &[(u32, &str, &str)] = &[
    (
        1,
        "0001_init",
        include_str!("../../schemas/migrations/0001_init.surql"),
    ),
    (
        2,
        "0002_access",
        include_str!("../../schemas/migrations/0002_access.surql"),
    ),
    (
        3,
        "0003_client_scope",
        include_str!("../../schemas/migrations/0003_client_scope.surql"),
    ),
    (
        4,
        "0004_conversation_meta",
        include_str!("../../schemas/migrations/0004_conversation_meta.surql"),
    ),
    (
        5,
        "0005_message_roles",
        include_str!("../../schemas/migrations/0005_message_roles.surql"),
    ),
    (
        6,
        "0006_webchat",
        include_str!("../../schemas/migrations/0006_webchat.surql"),
    ),
    (
        7,
        "0007_answer_meta",
        include_str!("../../schemas/migrations/0007_answer_meta.surql"),
    ),
    (
        8,
        "0008_tool_calls",
        include_str!("../../schemas/migrations/0008_tool_calls.surql"),
    ),
    (
        9,
        "0009_webhooks",
        include_str!("../../schemas/migrations/0009_webhooks.surql"),
    ),
    (
        10,
        "0010_console",
        include_str!("../../schemas/migrations/0010_console.surql"),
    ),
];

/// The most writes one transaction carries; more wait for the next batch.
const MAX_BATCH: usize = 512;

/// An open database handle. Opaque outside this file: only the persistence
/// actor and its tasks run queries with it.
#[derive(Clone)]
pub struct Database {
    db: Surreal<Any>,
}

impl Database {
    /// Opens `endpoint` (`surrealkv://…?sync=every`, `mem://`, …), selects the
    /// namespace and database, and applies pending migrations.
    pub async fn open(endpoint: &str, namespace: &str, database: &str) -> Result<Database> {
        let db = surrealdb::engine::any::connect(endpoint)
            .await
            .map_err(|error| {
                Error::Startup(format!("cannot open database at {endpoint}: {error}"))
            })?;
        db.use_ns(namespace).use_db(database).await?;
        let database = Database { db };
        database.migrate().await?;
        Ok(database)
    }

    /// The endpoint for an embedded surrealkv store under `data_dir`, syncing
    /// every commit to disk, so an acknowledged message survives a crash.
    pub fn surrealkv_endpoint(data_dir: &Path) -> Result<String> {
        std::fs::create_dir_all(data_dir).map_err(|error| {
            Error::Startup(format!(
                "cannot create data directory {}: {error}",
                data_dir.display()
            ))
        })?;
        let absolute = std::fs::canonicalize(data_dir).map_err(|error| {
            Error::Startup(format!(
                "cannot resolve data directory {}: {error}",
                data_dir.display()
            ))
        })?;
        Ok(format!(
            "surrealkv://{}/tertulia.db?sync=every",
            absolute.display()
        ))
    }

    async fn migrate(&self) -> Result<()> {
        self.db
            .query("DEFINE TABLE IF NOT EXISTS migration SCHEMALESS;")
            .await?
            .check()?;
        let applied: Vec<Value> = self
            .select("SELECT version FROM migration;", json!({}))
            .await?;
        let applied: Vec<u64> = applied
            .iter()
            .filter_map(|row| row["version"].as_u64())
            .collect();
        for (version, name, sql) in MIGRATIONS {
            if applied.contains(&u64::from(*version)) {
                continue;
            }
            let statement = format!(
                "BEGIN TRANSACTION;\n{sql}\nCREATE type::record('migration', $version) CONTENT {{ version: $version, name: $name, applied_at: $at }};\nCOMMIT TRANSACTION;"
            );
            self.db
                .query(statement)
                .bind(
                    json!({"version": version, "name": name, "at": crate::domain::now_timestamp()}),
                )
                .await?
                .check()
                .map_err(|error| Error::Startup(format!("migration {name} failed: {error}")))?;
            tracing::info!(migration = name, "applied migration");
        }
        Ok(())
    }

    /// The secret that signs WebSocket tickets: made once, kept in the
    /// database, so tickets handed out before a restart still work after it.
    pub async fn ticket_secret(&self) -> Result<Vec<u8>> {
        #[derive(serde::Deserialize)]
        struct Row {
            secret: Vec<u8>,
        }
        let rows: Vec<Row> = self
            .select(
                "SELECT secret FROM type::record('setting', 'ticket_secret');",
                json!({}),
            )
            .await?;
        if let Some(row) = rows.into_iter().next().filter(|row| row.secret.len() >= 32) {
            return Ok(row.secret);
        }
        let secret: [u8; 32] = rand::random();
        self.db
            .query("UPSERT type::record('setting', 'ticket_secret') CONTENT { secret: $secret };")
            .bind(json!({"secret": secret.to_vec()}))
            .await?
            .check()?;
        Ok(secret.to_vec())
    }

    /// Every stored tenant, and every key that is not revoked: loaded once at
    /// start into the runtime's in-memory maps, which admin calls keep current.
    pub async fn load_access(&self) -> Result<(Vec<TenantRecord>, Vec<ApiKeyRecord>)> {
        let tenants = self
            .select("SELECT * OMIT id FROM tenant;", json!({}))
            .await?;
        let keys = self
            .select(
                "SELECT * OMIT id FROM api_key WHERE revoked_at = NONE;",
                json!({}),
            )
            .await?;
        Ok((tenants, keys))
    }

    async fn select<T: DeserializeOwned>(&self, query: &str, vars: Value) -> Result<Vec<T>> {
        let mut response = self.db.query(query.to_owned()).bind(vars).await?;
        let rows: surrealdb::types::Value = response.take(0)?;
        let rows = match rows.into_json_value() {
            Value::Array(rows) => rows,
            Value::Null => Vec::new(),
            other => vec![other],
        };
        rows.into_iter()
            .map(|row| {
                serde_json::from_value(row)
                    .map_err(|error| Error::Storage(format!("unexpected row shape: {error}")))
            })
            .collect()
    }

    /// Deliveries selected by `query`, each with its event (deliveries whose
    /// event is gone are left out).
    async fn deliveries_with_events(
        &self,
        query: &str,
        vars: Value,
    ) -> Result<Vec<(Delivery, EventRecord)>> {
        let deliveries: Vec<Delivery> = self.select(query, vars).await?;
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        let mut events = Map::new();
        let targets: Vec<String> = deliveries
            .iter()
            .enumerate()
            .map(|(index, delivery)| {
                events.insert(format!("e{index}"), json!(delivery.event_id));
                format!("type::record('event', $e{index})")
            })
            .collect();
        let found: Vec<EventRecord> = self
            .select(
                &format!("SELECT * OMIT id, dispatched FROM {};", targets.join(", ")),
                Value::Object(events),
            )
            .await?;
        let mut by_id: std::collections::HashMap<String, EventRecord> = found
            .into_iter()
            .map(|event| (event.event_id.clone(), event))
            .collect();
        Ok(deliveries
            .into_iter()
            .filter_map(|delivery| {
                let event = by_id.remove(&delivery.event_id).or_else(|| {
                    tracing::error!(delivery = %delivery.delivery_id, "a delivery's event is missing");
                    None
                })?;
                Some((delivery, event))
            })
            .collect())
    }

    async fn write_batch(&self, writes: &[Write]) -> Result<()> {
        let mut statement = String::from("BEGIN TRANSACTION;\n");
        let mut vars = Map::new();
        for (index, write) in writes.iter().enumerate() {
            write.append_to(index, &mut statement, &mut vars);
        }
        statement.push_str("COMMIT TRANSACTION;");
        let mut response = self.db.query(statement).bind(Value::Object(vars)).await?;
        // Once one statement fails, every other reports only that the
        // transaction failed: name the one that caused it.
        let mut errors: Vec<(usize, surrealdb::Error)> =
            response.take_errors().into_iter().collect();
        errors.sort_by_key(|(index, _)| *index);
        let cause = errors
            .iter()
            .find(|(_, error)| !error.to_string().contains("failed transaction"))
            .or(errors.first());
        match cause {
            Some((index, error)) => Err(Error::Storage(format!("statement {index}: {error}"))),
            None => Ok(()),
        }
    }
}

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
    fn append_to(&self, index: usize, statement: &mut String, vars: &mut Map<String, Value>) {
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

    fn complete(mut self, outcome: Result<()>) {
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

/// Which messages of a log to read.
#[derive(Debug, Clone)]
pub struct MessageQuery {
    pub tenant: TenantId,
    pub session: SessionId,
    /// Only messages with `seq > after_seq`.
    pub after_seq: u64,
    /// At most this many: the oldest ones after `after_seq`, or the newest ones
    /// when `newest` is set (still returned oldest first).
    pub limit: usize,
    pub newest: bool,
}

pub enum PersistenceMsg {
    /// Stores a change; `Durable` fires once it is on disk (or failed).
    Write(Write, Durable),
    /// One conversation of a tenant, if it exists.
    LoadSession {
        tenant: TenantId,
        session: SessionId,
        reply: RpcReplyPort<Result<Option<SessionRecord>>>,
    },
    /// A tenant's conversations (only this client's, if given), most recently updated first.
    ListSessions {
        tenant: TenantId,
        client: Option<String>,
        status: Option<String>,
        limit: usize,
        reply: RpcReplyPort<Result<Vec<SessionRecord>>>,
    },
    /// Part of one log, in `seq` order.
    LoadMessages(MessageQuery, RpcReplyPort<Result<Vec<StoredMessage>>>),
    /// The stored message a client sent with this `client_msg_id`, if any.
    FindClientMessage {
        tenant: TenantId,
        session: SessionId,
        client_msg_id: String,
        reply: RpcReplyPort<Result<Option<StoredMessage>>>,
    },
    /// The conversation a channel knows by this id, if any.
    FindExternal {
        tenant: TenantId,
        channel: String,
        external_id: String,
        reply: RpcReplyPort<Result<Option<SessionRecord>>>,
    },
    /// A conversation's contact, if one was captured.
    LoadContact {
        tenant: TenantId,
        session: SessionId,
        reply: RpcReplyPort<Result<Option<Contact>>>,
    },
    /// A tenant's newest recorded events (of one conversation, if given), newest first.
    ListEvents {
        tenant: TenantId,
        conversation: Option<SessionId>,
        limit: usize,
        reply: RpcReplyPort<Result<Vec<EventRecord>>>,
    },
    /// Every webhook endpoint, of every tenant.
    LoadEndpoints(RpcReplyPort<Result<Vec<WebhookEndpoint>>>),
    /// The oldest events not yet fanned out to endpoints.
    UndispatchedEvents {
        limit: usize,
        reply: RpcReplyPort<Result<Vec<EventRecord>>>,
    },
    /// An endpoint's pending deliveries (with ids after `after`), oldest
    /// first, each with its event.
    PendingDeliveries {
        tenant: TenantId,
        endpoint_id: String,
        after: Option<String>,
        limit: usize,
        reply: RpcReplyPort<Result<Vec<(Delivery, EventRecord)>>>,
    },
    /// An endpoint's deliveries (in one status, if given), newest first.
    ListDeliveries {
        tenant: TenantId,
        endpoint_id: String,
        status: Option<DeliveryStatus>,
        limit: usize,
        reply: RpcReplyPort<Result<Vec<Delivery>>>,
    },
    /// Deliveries by id (of this tenant and endpoint), each with its event.
    LoadDeliveries {
        tenant: TenantId,
        endpoint_id: String,
        /// `None`: every dead one.
        ids: Option<Vec<String>>,
        reply: RpcReplyPort<Result<Vec<(Delivery, EventRecord)>>>,
    },
    /// A barrier: answers once every write queued before it has committed or
    /// failed. Writes queued after it do not delay it.
    Flush(RpcReplyPort<()>),
    /// Writes and batches committed so far: writes per batch is the group-commit gain.
    Stats(RpcReplyPort<WriteStats>),
    /// The batch in flight (of this many writes) finished; start the next one.
    BatchDone(u64),
}

/// Counters of committed work since the actor started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    pub writes: u64,
    pub batches: u64,
}

/// What the persistence actor starts with (and restarts with).
#[derive(Clone)]
pub struct PersistenceArgs {
    pub db: Database,
    /// Notified after a batch with events commits: the webhook actor's cue.
    pub events_committed: Arc<Notify>,
    /// Which events some endpoint wants: only those are stored for delivery.
    pub subscriptions: crate::webhooks::Subscriptions,
}

pub struct PersistenceState {
    db: Database,
    events_committed: Arc<Notify>,
    subscriptions: crate::webhooks::Subscriptions,
    stats: WriteStats,
    queued: Vec<(Write, Durable)>,
    batch_in_flight: bool,
    /// Writes received, and writes whose batch has finished: a flush waits
    /// until `finished` reaches the `received` it saw.
    received: u64,
    finished: u64,
    flush_waiters: Vec<(u64, RpcReplyPort<()>)>,
}

pub struct Persistence;

impl Actor for Persistence {
    type Msg = PersistenceMsg;
    type State = PersistenceState;
    type Arguments = PersistenceArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: PersistenceArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(PersistenceState {
            db: args.db,
            events_committed: args.events_committed,
            subscriptions: args.subscriptions,
            stats: WriteStats::default(),
            queued: Vec::new(),
            batch_in_flight: false,
            received: 0,
            finished: 0,
            flush_waiters: Vec::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PersistenceMsg::Write(mut write, durable) => {
                if let Write::WithEvents(_, events) = &mut write {
                    // Stored for delivery only if an endpoint wants it; a few
                    // kinds are kept anyway, already dispatched.
                    events.retain_mut(|event| {
                        let wanted = state.subscriptions.wants(&event.tenant, &event.kind);
                        event.dispatched = !wanted;
                        wanted || crate::domain::ALWAYS_RECORDED.contains(&event.kind.as_str())
                    });
                }
                state.received += 1;
                state.queued.push((write, durable));
                start_batch(&myself, state);
            }
            PersistenceMsg::BatchDone(count) => {
                state.batch_in_flight = false;
                state.finished += count;
                start_batch(&myself, state);
            }
            PersistenceMsg::Flush(reply) => {
                state.flush_waiters.push((state.received, reply));
            }
            PersistenceMsg::Stats(reply) => {
                let _ = reply.send(state.stats);
            }
            PersistenceMsg::LoadSession {
                tenant,
                session,
                reply,
            } => spawn_read(
                &state.db,
                "SELECT * OMIT id FROM type::record('conversation', $sid) WHERE tenant = $tenant;"
                    .into(),
                json!({"sid": session.to_string(), "tenant": tenant}),
                reply,
                first::<SessionRecord>,
            ),
            PersistenceMsg::ListSessions {
                tenant,
                client,
                status,
                limit,
                reply,
            } => {
                let mut filters = String::new();
                if client.is_some() {
                    filters.push_str("AND client_id = $client ");
                }
                if status.is_some() {
                    filters.push_str("AND status = $status ");
                }
                spawn_read(
                    &state.db,
                    format!(
                        "SELECT * OMIT id FROM conversation WHERE tenant = $tenant {filters}\
                         ORDER BY updated_at DESC LIMIT $limit;"
                    ),
                    json!({"tenant": tenant, "client": client, "status": status, "limit": limit}),
                    reply,
                    all::<SessionRecord>,
                );
            }
            PersistenceMsg::LoadMessages(query, reply) => {
                let order = if query.newest { "DESC" } else { "ASC" };
                spawn_read(
                    &state.db,
                    format!(
                        "SELECT * OMIT id FROM message WHERE tenant = $tenant AND session_id = $sid \
                         AND seq > $after ORDER BY seq {order} LIMIT $limit;"
                    ),
                    json!({
                        "tenant": query.tenant,
                        "sid": query.session.to_string(),
                        "after": query.after_seq,
                        "limit": query.limit,
                    }),
                    reply,
                    |mut rows: Vec<StoredMessage>| {
                        rows.sort_by_key(|message| message.seq);
                        rows
                    },
                );
            }
            PersistenceMsg::FindExternal {
                tenant,
                channel,
                external_id,
                reply,
            } => spawn_read(
                &state.db,
                "SELECT * OMIT id FROM conversation WHERE tenant = $tenant \
                 AND channel = $channel AND external_id = $external LIMIT 1;"
                    .into(),
                json!({"tenant": tenant, "channel": channel, "external": external_id}),
                reply,
                first::<SessionRecord>,
            ),
            PersistenceMsg::LoadContact {
                tenant,
                session,
                reply,
            } => spawn_read(
                &state.db,
                "SELECT * OMIT id FROM type::record('contact', $sid) WHERE tenant = $tenant;"
                    .into(),
                json!({"sid": session.to_string(), "tenant": tenant}),
                reply,
                first::<Contact>,
            ),
            PersistenceMsg::ListEvents {
                tenant,
                conversation,
                limit,
                reply,
            } => {
                let filter = if conversation.is_some() {
                    "AND conversation_id = $sid "
                } else {
                    ""
                };
                spawn_read(
                    &state.db,
                    format!(
                        "SELECT * OMIT id FROM event WHERE tenant = $tenant {filter}\
                         ORDER BY created_at DESC LIMIT $limit;"
                    ),
                    json!({
                        "tenant": tenant,
                        "sid": conversation.map(|id| id.to_string()),
                        "limit": limit,
                    }),
                    reply,
                    all::<EventRecord>,
                );
            }
            PersistenceMsg::LoadEndpoints(reply) => spawn_read(
                &state.db,
                "SELECT * OMIT id FROM webhook_endpoint ORDER BY tenant, endpoint_id;".into(),
                json!({}),
                reply,
                all::<WebhookEndpoint>,
            ),
            PersistenceMsg::UndispatchedEvents { limit, reply } => spawn_read(
                &state.db,
                "SELECT * OMIT id, dispatched FROM event WHERE dispatched = false \
                 ORDER BY event_id LIMIT $limit;"
                    .into(),
                json!({"limit": limit}),
                reply,
                all::<EventRecord>,
            ),
            PersistenceMsg::ListDeliveries {
                tenant,
                endpoint_id,
                status,
                limit,
                reply,
            } => {
                let filter = if status.is_some() {
                    "AND status = $status "
                } else {
                    ""
                };
                spawn_read(
                    &state.db,
                    format!(
                        "SELECT * OMIT id FROM delivery WHERE tenant = $tenant \
                         AND endpoint_id = $endpoint {filter}ORDER BY delivery_id DESC LIMIT $limit;"
                    ),
                    json!({"tenant": tenant, "endpoint": endpoint_id, "status": status, "limit": limit}),
                    reply,
                    all::<Delivery>,
                );
            }
            PersistenceMsg::PendingDeliveries {
                tenant,
                endpoint_id,
                after,
                limit,
                reply,
            } => {
                let filter = if after.is_some() {
                    "AND delivery_id > $after "
                } else {
                    ""
                };
                let db = state.db.clone();
                let query = format!(
                    "SELECT * OMIT id FROM delivery WHERE tenant = $tenant AND endpoint_id = $endpoint \
                     AND status = 'pending' {filter}ORDER BY delivery_id LIMIT $limit;"
                );
                let vars = json!({"tenant": tenant, "endpoint": endpoint_id, "after": after, "limit": limit});
                tokio::spawn(async move {
                    let _ = reply.send(db.deliveries_with_events(&query, vars).await);
                });
            }
            PersistenceMsg::LoadDeliveries {
                tenant,
                endpoint_id,
                ids,
                reply,
            } => {
                let db = state.db.clone();
                let filter = if ids.is_some() {
                    "delivery_id IN $ids"
                } else {
                    "status = 'dead'"
                };
                let query = format!(
                    "SELECT * OMIT id FROM delivery WHERE tenant = $tenant AND endpoint_id = $endpoint \
                     AND {filter} ORDER BY delivery_id;"
                );
                let vars = json!({"tenant": tenant, "endpoint": endpoint_id, "ids": ids});
                tokio::spawn(async move {
                    let _ = reply.send(db.deliveries_with_events(&query, vars).await);
                });
            }
            PersistenceMsg::FindClientMessage {
                tenant,
                session,
                client_msg_id,
                reply,
            } => spawn_read(
                &state.db,
                "SELECT * OMIT id FROM message WHERE tenant = $tenant AND session_id = $sid \
                 AND client_msg_id = $cid LIMIT 1;"
                    .into(),
                json!({"tenant": tenant, "sid": session.to_string(), "cid": client_msg_id}),
                reply,
                first::<StoredMessage>,
            ),
        }
        let finished = state.finished;
        for (_, reply) in state
            .flush_waiters
            .extract_if(.., |(target, _)| *target <= finished)
        {
            let _ = reply.send(());
        }
        Ok(())
    }
}

/// Runs a read in its own task, on a clone of the handle, so the actor never
/// waits on it; `reply` gets the rows, shaped by `shape`.
fn spawn_read<T, R>(
    db: &Database,
    query: String,
    vars: Value,
    reply: RpcReplyPort<Result<R>>,
    shape: fn(Vec<T>) -> R,
) where
    T: DeserializeOwned + Send + 'static,
    R: Send + 'static,
{
    let db = db.clone();
    tokio::spawn(async move {
        let rows = db.select::<T>(&query, vars).await;
        let _ = reply.send(rows.map(shape));
    });
}

fn first<T>(rows: Vec<T>) -> Option<T> {
    rows.into_iter().next()
}

fn all<T>(rows: Vec<T>) -> Vec<T> {
    rows
}

/// Sends everything queued (up to `MAX_BATCH`) as one transaction, unless a
/// batch is already in flight: then it waits for `BatchDone`.
fn start_batch(myself: &ActorRef<PersistenceMsg>, state: &mut PersistenceState) {
    if state.batch_in_flight || state.queued.is_empty() {
        return;
    }
    let take = state.queued.len().min(MAX_BATCH);
    let batch: Vec<(Write, Durable)> = state.queued.drain(..take).collect();
    state.batch_in_flight = true;
    state.stats.writes += batch.len() as u64;
    state.stats.batches += 1;
    let db = state.db.clone();
    let events_committed = state.events_committed.clone();
    let myself = myself.clone();
    tokio::spawn(async move {
        let count = batch.len() as u64;
        let (writes, waiters): (Vec<Write>, Vec<Durable>) = batch.into_iter().unzip();
        let outcome = db.write_batch(&writes).await;
        match &outcome {
            Err(error) => tracing::error!(%error, writes = writes.len(), "a write batch failed"),
            Ok(())
                if writes.iter().any(|write| {
                    matches!(write, Write::WithEvents(_, events) if events.iter().any(|event| !event.dispatched))
                }) =>
            {
                events_committed.notify_one();
            }
            Ok(()) => {}
        }
        for waiter in waiters {
            waiter.complete(match &outcome {
                Ok(()) => Ok(()),
                Err(error) => Err(Error::Storage(error.to_string())),
            });
        }
        // If the actor is gone, its successor starts with an empty queue.
        let _ = myself.cast(PersistenceMsg::BatchDone(count));
    });
}

/// How long a read may take before the caller is told storage is unavailable.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The typed way to reach the persistence actor. Clones share one slot that
/// `Root` re-points when it restarts the actor, so holders never keep a dead ref.
#[derive(Clone)]
pub struct Storage {
    actor: crate::supervision::Slot<PersistenceMsg>,
}

impl Storage {
    pub(crate) fn new(actor: ActorRef<PersistenceMsg>) -> Self {
        Storage {
            actor: crate::supervision::Slot::new(actor),
        }
    }

    pub(crate) fn replace(&self, actor: ActorRef<PersistenceMsg>) {
        self.actor.replace(actor);
    }

    fn actor(&self) -> ActorRef<PersistenceMsg> {
        self.actor.get()
    }

    /// Queues a write; `durable` fires when it is on disk or has failed. If the
    /// actor is gone, the message is dropped and `durable` reports the failure.
    pub fn write(&self, write: Write, durable: Durable) {
        let _ = self.actor().cast(PersistenceMsg::Write(write, durable));
    }

    /// Writes and waits until it is durable.
    pub async fn write_and_wait(&self, write: Write) -> Result<()> {
        let (durable, outcome) = Durable::channel();
        self.write(write, durable);
        outcome
            .await
            .unwrap_or(Err(Error::Unavailable("persistence")))
    }

    pub async fn load_session(
        &self,
        tenant: &TenantId,
        session: SessionId,
    ) -> Result<Option<SessionRecord>> {
        let tenant = tenant.clone();
        self.call(|reply| PersistenceMsg::LoadSession {
            tenant,
            session,
            reply,
        })
        .await
    }

    pub async fn list_sessions(
        &self,
        tenant: &TenantId,
        client: Option<&str>,
        status: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SessionRecord>> {
        let tenant = tenant.clone();
        let client = client.map(str::to_owned);
        let status = status.map(str::to_owned);
        self.call(|reply| PersistenceMsg::ListSessions {
            tenant,
            client,
            status,
            limit,
            reply,
        })
        .await
    }

    pub async fn load_messages(&self, query: MessageQuery) -> Result<Vec<StoredMessage>> {
        self.call(|reply| PersistenceMsg::LoadMessages(query, reply))
            .await
    }

    pub async fn find_client_message(
        &self,
        tenant: &TenantId,
        session: SessionId,
        client_msg_id: &str,
    ) -> Result<Option<StoredMessage>> {
        let tenant = tenant.clone();
        let client_msg_id = client_msg_id.to_owned();
        self.call(|reply| PersistenceMsg::FindClientMessage {
            tenant,
            session,
            client_msg_id,
            reply,
        })
        .await
    }

    pub async fn find_external(
        &self,
        tenant: &TenantId,
        channel: &str,
        external_id: &str,
    ) -> Result<Option<SessionRecord>> {
        let tenant = tenant.clone();
        let channel = channel.to_owned();
        let external_id = external_id.to_owned();
        self.call(|reply| PersistenceMsg::FindExternal {
            tenant,
            channel,
            external_id,
            reply,
        })
        .await
    }

    pub async fn load_contact(
        &self,
        tenant: &TenantId,
        session: SessionId,
    ) -> Result<Option<Contact>> {
        let tenant = tenant.clone();
        self.call(|reply| PersistenceMsg::LoadContact {
            tenant,
            session,
            reply,
        })
        .await
    }

    pub async fn list_events(
        &self,
        tenant: &TenantId,
        conversation: Option<SessionId>,
        limit: usize,
    ) -> Result<Vec<EventRecord>> {
        let tenant = tenant.clone();
        self.call(|reply| PersistenceMsg::ListEvents {
            tenant,
            conversation,
            limit,
            reply,
        })
        .await
    }

    pub async fn load_endpoints(&self) -> Result<Vec<WebhookEndpoint>> {
        self.call(PersistenceMsg::LoadEndpoints).await
    }

    pub async fn undispatched_events(&self, limit: usize) -> Result<Vec<EventRecord>> {
        self.call(|reply| PersistenceMsg::UndispatchedEvents { limit, reply })
            .await
    }

    pub async fn pending_deliveries(
        &self,
        endpoint: &WebhookEndpoint,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<(Delivery, EventRecord)>> {
        let tenant = endpoint.tenant.clone();
        let endpoint_id = endpoint.endpoint_id.clone();
        self.call(|reply| PersistenceMsg::PendingDeliveries {
            tenant,
            endpoint_id,
            after,
            limit,
            reply,
        })
        .await
    }

    pub async fn list_deliveries(
        &self,
        tenant: &TenantId,
        endpoint_id: &str,
        status: Option<DeliveryStatus>,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        let tenant = tenant.clone();
        let endpoint_id = endpoint_id.to_owned();
        self.call(|reply| PersistenceMsg::ListDeliveries {
            tenant,
            endpoint_id,
            status,
            limit,
            reply,
        })
        .await
    }

    /// These deliveries of an endpoint (`None`: every dead one), with their events.
    pub async fn load_deliveries(
        &self,
        tenant: &TenantId,
        endpoint_id: &str,
        ids: Option<Vec<String>>,
    ) -> Result<Vec<(Delivery, EventRecord)>> {
        let tenant = tenant.clone();
        let endpoint_id = endpoint_id.to_owned();
        self.call(|reply| PersistenceMsg::LoadDeliveries {
            tenant,
            endpoint_id,
            ids,
            reply,
        })
        .await
    }

    /// Waits until every write queued so far has committed (or failed).
    pub async fn flush(&self) {
        let _ = self
            .actor()
            .call(PersistenceMsg::Flush, Some(READ_TIMEOUT))
            .await;
    }

    async fn call<T: Send + 'static>(
        &self,
        build: impl FnOnce(RpcReplyPort<Result<T>>) -> PersistenceMsg,
    ) -> Result<T> {
        match self.actor().call(build, Some(READ_TIMEOUT)).await {
            Ok(CallResult::Success(result)) => result,
            _ => Err(Error::Unavailable("persistence")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{MessageId, MessageStatus, Role, now_timestamp};
    use std::sync::Mutex;

    #[tokio::test]
    async fn concurrent_writes_share_batches_and_complete_in_order() {
        let db = Database::open("mem://", "test", "test").await.unwrap();
        let args = PersistenceArgs {
            db,
            events_committed: Arc::new(Notify::new()),
            subscriptions: Default::default(),
        };
        let (actor, _) = Actor::spawn(None, Persistence, args).await.unwrap();
        let storage = Storage::new(actor.clone());
        let tenant = TenantId("t".into());
        let session = SessionId::new();
        let completed = Arc::new(Mutex::new(Vec::new()));
        let writes = 200u64;
        let mut outcomes = Vec::new();
        for seq in 1..=writes {
            let message = StoredMessage {
                id: MessageId::new(),
                tenant: tenant.clone(),
                session_id: session,
                seq,
                role: Role::User,
                content: format!("message {seq}"),
                status: MessageStatus::Complete,
                client_msg_id: None,
                created_at: now_timestamp(),
                no_reply: false,
                direction: Role::User.direction(),
                author: None,
                origin: None,
                agent: None,
                tool_calls: Vec::new(),
            };
            let (tx, rx) = oneshot::channel();
            let completed = completed.clone();
            storage.write(
                Write::AppendMessage(message),
                Durable::new(move |outcome| {
                    completed.lock().unwrap().push(seq);
                    let _ = tx.send(outcome);
                }),
            );
            outcomes.push(rx);
        }
        // A flush is a barrier: when it returns, every earlier write is done.
        storage.flush().await;
        assert_eq!(completed.lock().unwrap().len() as u64, writes);
        for outcome in outcomes {
            outcome.await.unwrap().unwrap();
        }
        assert_eq!(
            *completed.lock().unwrap(),
            (1..=writes).collect::<Vec<_>>(),
            "in submission order"
        );
        let stats = match actor.call(PersistenceMsg::Stats, None).await.unwrap() {
            CallResult::Success(stats) => stats,
            _ => panic!("no stats"),
        };
        assert_eq!(stats.writes, writes);
        assert!(
            stats.batches * 2 < writes,
            "writes that queued together were committed together: {stats:?}"
        );
        let stored = storage
            .load_messages(MessageQuery {
                tenant,
                session,
                after_seq: 0,
                limit: 1000,
                newest: false,
            })
            .await
            .unwrap();
        assert_eq!(
            stored.iter().map(|m| m.seq).collect::<Vec<_>>(),
            (1..=writes).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn a_change_and_its_events_commit_together_and_fan_out_once() {
        let db = Database::open("mem://", "test", "test").await.unwrap();
        let tenant = TenantId("t".into());
        let record = SessionRecord {
            id: SessionId::new(),
            tenant: tenant.clone(),
            status: "active".into(),
            context: Map::new(),
            created_at: now_timestamp(),
            updated_at: now_timestamp(),
            last_seq: 0,
            message_count: 0,
            client_id: None,
            title: None,
            version: 1,
            channel: None,
            external_id: None,
            consent: None,
            handoff: None,
            human: None,
        };
        let event = crate::events::conversation_created(&record);
        db.write_batch(&[Write::WithEvents(
            Box::new(Write::CreateSession(Box::new(record))),
            vec![event.clone()],
        )])
        .await
        .unwrap();
        let undispatched: Vec<EventRecord> = db
            .select(
                "SELECT * OMIT id, dispatched FROM event WHERE dispatched = false ORDER BY event_id;",
                json!({}),
            )
            .await
            .unwrap();
        assert_eq!(undispatched, vec![event.clone()]);
        db.write_batch(&[Write::FanOut {
            event_ids: vec![event.event_id.clone()],
            deliveries: Vec::new(),
        }])
        .await
        .unwrap();
        let undispatched: Vec<EventRecord> = db
            .select(
                "SELECT * OMIT id, dispatched FROM event WHERE dispatched = false;",
                json!({}),
            )
            .await
            .unwrap();
        assert!(undispatched.is_empty());
    }

    #[test]
    fn every_migration_file_is_listed_in_order() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".surql"))
            .collect();
        files.sort();
        let listed: Vec<String> = MIGRATIONS
            .iter()
            .map(|(_, name, _)| format!("{name}.surql"))
            .collect();
        assert_eq!(files, listed);
        for (index, (version, name, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version as usize, index + 1);
            assert!(name.starts_with(&format!("{version:04}_")), "{name}");
        }
    }
}
