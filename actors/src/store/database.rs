//! The database handle: opening SurrealDB (embedded surrealkv, `mem://` in
//! tests, or a server), the migrations, one read helper that shapes rows,
//! and the transaction that writes one batch. Held by the persistence actor
//! (for writes) and by `Storage` (for reads); nothing outside `store/` sees it
//! but as an opaque handle.

use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use surrealdb::Surreal;
use surrealdb::engine::any::Any;

use super::connect::connect;
use super::counters::Touch;
use super::sealing::{HoldsSecrets, Sealer};
use super::statements::{self, Batch};
use super::write::Write;
use crate::config::DbCredentials;
use crate::error::{Error, Result};
use crate::model::{ApiKeyRecord, Delivery, EventRecord, TenantId, TenantRecord, WebhookEndpoint};

impl From<surrealdb::Error> for Error {
    fn from(error: surrealdb::Error) -> Self {
        Error::Storage(error.to_string())
    }
}

/// An open database handle. Opaque outside this file: only the persistence
/// actor and its tasks run queries with it.
///
/// Clones share one SurrealDB client session: cloning a `Surreal` itself
/// opens a new session in the engine (about 50 KiB of maps each, and a
/// message through the engine's router), which every live conversation's
/// `Storage` and every batch would otherwise pay.
#[derive(Clone)]
pub struct Database {
    pub(super) db: Arc<Surreal<Any>>,
    /// Why the last write batch failed, until one commits again: what
    /// `/readyz` reports while the disk is full.
    write_failure: Arc<Mutex<Option<String>>>,
    /// The free space writes leave on the data directory's filesystem.
    reserve: Option<Arc<SpaceReserve>>,
    /// Seals secrets before they are written, opens them when read.
    sealer: Arc<Sealer>,
    /// In a cluster, what every batch checks first (`leases.rs`).
    pub(super) fence: Option<Arc<super::fence::Fence>>,
}

/// Free space that writes may not use: checked before each batch, so a
/// filling disk refuses writes cleanly instead of failing a commit midway
/// (surrealkv can then keep part of a commit it reported as failed).
struct SpaceReserve {
    path: std::path::PathBuf,
    bytes: u64,
}

impl SpaceReserve {
    /// Why a write may not go ahead now, if it may not.
    fn short(&self) -> Option<String> {
        let stats = rustix::fs::statvfs(&self.path).ok()?;
        let free = stats.f_bavail.saturating_mul(stats.f_frsize);
        (free < self.bytes).then(|| {
            format!(
                "{} MB free on the data directory's filesystem; writes keep {} MB free (storage.min_free_mb)",
                free / (1 << 20),
                self.bytes / (1 << 20)
            )
        })
    }
}

/// A ticket secret as it is kept (base64), if it is long enough.
fn decoded_secret(encoded: &str) -> Option<Vec<u8>> {
    STANDARD
        .decode(encoded)
        .ok()
        .filter(|secret| secret.len() >= 32)
}

impl Database {
    /// Opens `endpoint` (`surrealkv://…?sync=every`, `mem://`, a server's
    /// `ws://…`), selects the namespace and database, and applies pending
    /// migrations.
    pub async fn open(endpoint: &str, namespace: &str, database: &str) -> Result<Database> {
        Database::open_signed_in(endpoint, namespace, database, None).await
    }

    /// [`Database::open`], signed in as `credentials` first (a server).
    pub async fn open_signed_in(
        endpoint: &str,
        namespace: &str,
        database: &str,
        credentials: Option<&DbCredentials>,
    ) -> Result<Database> {
        let db = connect(endpoint, credentials).await?;
        if super::connect::is_server(endpoint) {
            // A server wants its namespace and database defined before use
            // (the names are checked identifiers: `check_config`).
            db.query(format!(
                "DEFINE NAMESPACE IF NOT EXISTS {namespace}; USE NS {namespace}; \
                 DEFINE DATABASE IF NOT EXISTS {database};"
            ))
            .await?
            .check()?;
        }
        let database = Database::selecting(db, namespace, database).await?;
        database.migrate().await?;
        Ok(database)
    }

    /// Opens `endpoint` as it is, without migrations: the target of a
    /// restore, whose backup brings its own schema and migration records.
    pub async fn open_unmigrated(
        endpoint: &str,
        namespace: &str,
        database: &str,
    ) -> Result<Database> {
        Database::selecting(connect(endpoint, None).await?, namespace, database).await
    }

    async fn selecting(db: Surreal<Any>, namespace: &str, database: &str) -> Result<Database> {
        db.use_ns(namespace).use_db(database).await?;
        Ok(Database {
            db: Arc::new(db),
            write_failure: Arc::default(),
            reserve: None,
            sealer: Arc::new(Sealer::plain()),
            fence: None,
        })
    }

    /// Runs a SurrealQL dump (an export) from `file` into this database.
    pub async fn import_file(&self, file: &Path) -> Result<()> {
        self.db
            .import(file)
            .await
            .map_err(|error| Error::Storage(format!("the backup does not import: {error}")))
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
        for (version, name, sql) in super::migrations::MIGRATIONS {
            if applied.contains(&u64::from(*version)) {
                continue;
            }
            let statement = format!(
                "BEGIN TRANSACTION;\n{sql}\nCREATE type::record('migration', $version) CONTENT {{ version: $version, name: $name, applied_at: $at }};\nCOMMIT TRANSACTION;"
            );
            self.db
                .query(statement)
                .bind(
                    json!({"version": version, "name": name, "at": crate::model::now_timestamp()}),
                )
                .await?
                .check()
                .map_err(|error| Error::Startup(format!("migration {name} failed: {error}")))?;
            tracing::info!(migration = name, "applied migration");
        }
        Ok(())
    }

    /// The secret that signs WebSocket tickets: made once, kept in the
    /// database (sealed, when a key is set), so tickets handed out before a
    /// restart still work after it.
    pub async fn ticket_secret(&self) -> Result<Vec<u8>> {
        const PLACE: &str = "setting/ticket_secret";
        #[derive(serde::Deserialize)]
        struct Row {
            secret: Option<Vec<u8>>,
            text: Option<String>,
        }
        let rows: Vec<Row> = self
            .select(
                "SELECT secret, text FROM type::record('setting', 'ticket_secret');",
                json!({}),
            )
            .await?;
        let stored = match rows.into_iter().next() {
            Some(Row {
                text: Some(text), ..
            }) => Some((
                self.sealer.is_current(&text),
                self.sealer.open(&text, PLACE)?,
            )),
            Some(Row {
                secret: Some(secret),
                ..
            }) => Some((false, STANDARD.encode(secret))),
            _ => None,
        };
        let (current, encoded) = match stored {
            Some((current, encoded)) if decoded_secret(&encoded).is_some() => (current, encoded),
            _ => (false, STANDARD.encode(rand::random::<[u8; 32]>())),
        };
        if !current {
            self.db
                .query("UPSERT type::record('setting', 'ticket_secret') CONTENT { text: $text };")
                .bind(json!({"text": self.sealer.seal(&encoded, PLACE)}))
                .await?
                .check()?;
        }
        Ok(decoded_secret(&encoded).expect("checked above"))
    }

    /// Seals and opens stored secrets with `sealer` from now on.
    pub fn sealing_with(mut self, sealer: Sealer) -> Database {
        self.sealer = Arc::new(sealer);
        self
    }

    /// Opens the secrets of a record as it was read.
    pub(super) fn open_secrets(&self, record: &mut impl HoldsSecrets) -> Result<()> {
        record.open(&self.sealer)
    }

    /// Rewrites every stored secret that is not as the current key would
    /// store it (plain text from before a key was set, or sealed with a
    /// previous key), so that a rotation is finished when this returns and
    /// the previous key can be dropped. A secret that does not open stops
    /// the start, naming it: nothing is rewritten then. Runs at start,
    /// before the store is used; returns how many records were rewritten.
    pub async fn reseal_secrets(&self) -> Result<usize> {
        let mut tenants: Vec<TenantRecord> = self
            .select("SELECT * OMIT id FROM tenant;", json!({}))
            .await?;
        let mut endpoints: Vec<WebhookEndpoint> = self
            .select("SELECT * OMIT id FROM webhook_endpoint;", json!({}))
            .await?;
        let mut rewrites = Vec::new();
        for tenant in &mut tenants {
            if !tenant.is_current(&self.sealer) {
                tenant.open(&self.sealer)?;
                rewrites.push(Write::PutTenant(Box::new(tenant.clone())));
            }
        }
        for endpoint in &mut endpoints {
            if !endpoint.is_current(&self.sealer) {
                endpoint.open(&self.sealer)?;
                rewrites.push(Write::PutEndpoint(Box::new(endpoint.clone())));
            }
        }
        if !rewrites.is_empty() {
            self.write_batch(&rewrites, None).await?;
        }
        Ok(rewrites.len())
    }

    /// Every stored tenant, and every key that is not revoked: loaded once at
    /// start into the runtime's in-memory maps, which admin calls keep current.
    pub async fn load_access(&self) -> Result<(Vec<TenantRecord>, Vec<ApiKeyRecord>)> {
        let mut tenants: Vec<TenantRecord> = self
            .select("SELECT * OMIT id FROM tenant;", json!({}))
            .await?;
        for tenant in &mut tenants {
            tenant.open(&self.sealer)?;
        }
        let keys = self
            .select(
                "SELECT * OMIT id FROM api_key WHERE revoked_at = NONE;",
                json!({}),
            )
            .await?;
        Ok((tenants, keys))
    }

    /// The first row `query` selects, if any.
    pub(super) async fn select_first<T: DeserializeOwned>(
        &self,
        query: &str,
        vars: Value,
    ) -> Result<Option<T>> {
        Ok(self.select(query, vars).await?.into_iter().next())
    }

    /// The rows `query` selects, each deserialised as `T`.
    pub(super) async fn select<T: DeserializeOwned>(
        &self,
        query: &str,
        vars: Value,
    ) -> Result<Vec<T>> {
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

    /// The whole database as SurrealQL (SurrealDB's own export): every
    /// table's definition and every record as it is now.
    pub(super) async fn export_text(&self) -> Result<String> {
        use futures_util::StreamExt;
        let mut stream = self.db.export(()).await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            bytes.extend(chunk?);
        }
        String::from_utf8(bytes).map_err(|_| Error::Storage("the export is not UTF-8".into()))
    }

    /// The rows of each of `statements` statements of `query`, in order.
    pub(super) async fn select_each(
        &self,
        query: &str,
        vars: Value,
        statements: usize,
    ) -> Result<Vec<Vec<Value>>> {
        let mut response = self.db.query(query.to_owned()).bind(vars).await?;
        (0..statements)
            .map(|index| {
                let rows: surrealdb::types::Value = response.take(index)?;
                Ok(match rows.into_json_value() {
                    Value::Array(rows) => rows,
                    Value::Null => Vec::new(),
                    other => vec![other],
                })
            })
            .collect()
    }

    /// Deliveries selected by `query`, each with its event (deliveries whose
    /// event is gone are left out).
    pub(super) async fn deliveries_with_events(
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

    /// Runs statements that return nothing the caller needs.
    pub(super) async fn run(&self, query: &str, vars: Value) -> Result<()> {
        let mut response = self.db.query(query.to_owned()).bind(vars).await?;
        // Once one statement of a transaction fails, every other reports
        // only that the transaction failed: name the one that caused it.
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

    /// Keeps `megabytes` free on the filesystem of `path` (0: no check).
    pub fn keeping_free(mut self, path: &Path, megabytes: u64) -> Database {
        self.reserve = (megabytes > 0).then(|| {
            Arc::new(SpaceReserve {
                path: path.to_owned(),
                bytes: megabytes << 20,
            })
        });
        self
    }

    /// The reserve check before a write: an error once space is short.
    fn check_space(&self) -> Result<()> {
        match self.reserve.as_ref().and_then(|reserve| reserve.short()) {
            Some(why) => Err(Error::Storage(why)),
            None => Ok(()),
        }
    }

    /// Writes a batch in one transaction. `owed` names the marker that
    /// records the conversations whose counters the batch's messages change.
    pub(super) async fn write_batch(
        &self,
        writes: &[Write],
        owed: Option<(&str, &[Touch])>,
    ) -> Result<()> {
        let mut batch = Batch::new();
        self.fence_batch(&mut batch)?;
        for (index, write) in writes.iter().enumerate() {
            write
                .sealed(&self.sealer)
                .append_to(&mut batch.write(index));
        }
        if let Some((marker, touches)) = owed {
            statements::owe_counters(&mut batch.write(writes.len()), marker, touches);
        }
        let (statement, vars) = batch.finish();
        self.fenced_outcome(self.guarded_write(&statement, Value::Object(vars)).await)
    }

    /// A write of one small record, to learn whether writes commit again
    /// after a failure (no client write may be needed for that).
    pub(super) async fn probe_write(&self) -> Result<()> {
        let probe = "UPSERT type::record('setting', 'write_probe') SET at = time::now();";
        self.guarded_write(probe, json!({})).await
    }

    /// A write behind the free-space reserve, its outcome remembered.
    async fn guarded_write(&self, statement: &str, vars: Value) -> Result<()> {
        let outcome = match self.check_space() {
            Ok(()) => self.run(statement, vars).await,
            Err(short) => Err(short),
        };
        self.record_write(&outcome);
        outcome
    }

    pub(super) fn record_write(&self, outcome: &Result<()>) {
        let mut failure = self.write_failure.lock().unwrap_or_else(|e| e.into_inner());
        *failure = outcome.as_ref().err().map(|error| match error {
            Error::Storage(why) => why.clone(),
            other => other.to_string(),
        });
    }

    /// Why writes fail now, if they do.
    pub fn write_failure(&self) -> Option<String> {
        self.write_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Recomputes the counters of every conversation a marker names (left
    /// by a process that stopped before writing them), then drops the
    /// markers. Runs at start, before the store is used.
    pub(super) async fn repair_counters(&self) -> Result<usize> {
        #[derive(serde::Deserialize)]
        struct Marker {
            conversations: Vec<(TenantId, String)>,
        }
        let markers: Vec<Marker> = self
            .select("SELECT conversations FROM pending_count;", json!({}))
            .await?;
        let mut owed: Vec<(TenantId, String)> = markers
            .into_iter()
            .flat_map(|marker| marker.conversations)
            .collect();
        owed.sort();
        owed.dedup();
        for (tenant, session) in &owed {
            self.run(
                "LET $newest = (SELECT seq, created_at FROM message \
                   WHERE tenant = $tenant AND session_id = $sid ORDER BY seq DESC LIMIT 1)[0];\n\
                 LET $count = (SELECT count() AS n FROM message \
                   WHERE tenant = $tenant AND session_id = $sid GROUP ALL)[0].n;\n\
                 UPDATE type::record('conversation', $sid) SET \
                   last_seq = $newest.seq ?? 0, message_count = $count ?? 0, \
                   updated_at = array::max([updated_at, $newest.created_at ?? updated_at]) \
                   WHERE tenant = $tenant RETURN NONE;",
                json!({"tenant": tenant, "sid": session}),
            )
            .await?;
        }
        self.run("DELETE pending_count RETURN NONE;", json!({}))
            .await?;
        Ok(owed.len())
    }
}
