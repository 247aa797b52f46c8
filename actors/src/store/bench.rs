//! What `benches/store.rs` drives: the real write path (the persistence
//! actor, its batches and lazy counters) beside the floor SurrealDB itself
//! sets for the same documents, and the shape the store used to write.
//! Compiled only with the `bench-internals` feature; nothing in the runtime
//! uses it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::actor::{Persistence, PersistenceArgs};
use super::database::Database;
use super::handle::Storage;
use super::write::{Durable, Write};
use crate::model::{Role, SessionId, SessionRecord, StoredMessage, TenantId};

/// One database and the persistence actor writing to it.
pub struct StoreBench {
    db: Database,
    storage: Storage,
    tenant: TenantId,
    conversations: Vec<SessionId>,
    next_seq: u64,
}

impl StoreBench {
    /// Opens `endpoint` (migrated, as the server does) with `conversations`
    /// empty conversations.
    pub async fn open(endpoint: &str, conversations: usize) -> StoreBench {
        let db = Database::open(endpoint, "bench", "bench")
            .await
            .expect("the bench database opens");
        let args = PersistenceArgs {
            db: db.clone(),
            events_committed: Default::default(),
            subscriptions: Default::default(),
        };
        let (actor, _) = ractor::Actor::spawn(None, Persistence, args)
            .await
            .expect("the persistence actor starts");
        let storage = Storage::new(actor, db.clone());
        let tenant = TenantId("bench".into());
        let mut ids = Vec::new();
        for _ in 0..conversations {
            let record = SessionRecord::new(tenant.clone());
            ids.push(record.id);
            storage
                .write_and_wait(Write::CreateSession(Box::new(record)))
                .await
                .expect("a conversation is stored");
        }
        StoreBench {
            db,
            storage,
            tenant,
            conversations: ids,
            next_seq: 0,
        }
    }

    /// Removes an index, to measure what it costs.
    pub async fn remove_index(&self, index: &str, table: &str) {
        self.db
            .run(&format!("REMOVE INDEX {index} ON {table};"), json!({}))
            .await
            .expect("the index is removed");
    }

    /// One message for each conversation, as a session would store them.
    pub fn messages(&mut self) -> Vec<StoredMessage> {
        self.next_seq += 1;
        let seq = self.next_seq;
        self.conversations
            .iter()
            .map(|session| message(&self.tenant, *session, seq))
            .collect()
    }

    /// The real path: every message handed to the persistence actor at
    /// once, timed until the last is durable.
    pub async fn append(&self, messages: Vec<StoredMessage>) -> Duration {
        let started = Instant::now();
        let waiting: Vec<oneshot::Receiver<crate::error::Result<()>>> = messages
            .into_iter()
            .map(|message| {
                let (durable, outcome) = Durable::channel();
                self.storage.write(Write::AppendMessage(message), durable);
                outcome
            })
            .collect();
        for outcome in waiting {
            outcome
                .await
                .expect("answered")
                .expect("the message is stored");
        }
        started.elapsed()
    }

    /// Writes the counters owed now (a reader's flush), timed.
    pub async fn settle(&self) -> Duration {
        let started = Instant::now();
        self.storage.flush().await;
        started.elapsed()
    }

    /// The floor: the same documents in one `INSERT` of one transaction.
    pub async fn raw_insert(&self, messages: &[StoredMessage]) -> Duration {
        let rows: Vec<Value> = messages.iter().map(row).collect();
        let started = Instant::now();
        self.db
            .run(
                "BEGIN TRANSACTION; INSERT INTO message $rows; COMMIT TRANSACTION;",
                json!({ "rows": rows }),
            )
            .await
            .expect("the floor batch commits");
        started.elapsed()
    }

    /// The shape before bulk writes: per message a `CREATE` and an `UPDATE`
    /// of its conversation, in one transaction.
    pub async fn per_message_statements(&self, messages: &[StoredMessage]) -> Duration {
        let mut sql = String::from("BEGIN TRANSACTION;\n");
        let mut vars = serde_json::Map::new();
        for (index, message) in messages.iter().enumerate() {
            vars.insert(format!("id{index}"), json!(message.id.to_string()));
            vars.insert(format!("doc{index}"), json!(message));
            vars.insert(format!("sid{index}"), json!(message.session_id.to_string()));
            vars.insert(format!("seq{index}"), json!(message.seq));
            vars.insert(format!("at{index}"), json!(message.created_at));
            sql.push_str(&format!(
                "CREATE type::record('message', $id{index}) CONTENT $doc{index};\n\
                 UPDATE type::record('conversation', $sid{index}) SET last_seq = $seq{index}, \
                 message_count += 1, updated_at = $at{index} WHERE tenant = $tenant;\n"
            ));
        }
        vars.insert("tenant".into(), json!(self.tenant));
        sql.push_str("COMMIT TRANSACTION;");
        let started = Instant::now();
        self.db
            .run(&sql, Value::Object(vars))
            .await
            .expect("the per-message batch commits");
        started.elapsed()
    }
}

impl StoreBench {
    /// `count` messages spread evenly over the last `days` days across the
    /// conversations, as a chat stores them: questions, and answers with
    /// their model, tokens and timings (one in fifty failed).
    pub fn history(&mut self, count: usize, days: i64) -> Vec<StoredMessage> {
        let now = chrono::Utc::now();
        let span = chrono::TimeDelta::days(days).num_milliseconds();
        (0..count)
            .map(|index| {
                let session = self.conversations[index % self.conversations.len()];
                self.next_seq += 1;
                let at = now
                    - chrono::TimeDelta::milliseconds(span - span * index as i64 / count as i64);
                let mut message = message(&self.tenant, session, self.next_seq);
                message.created_at = crate::model::stored_time(at);
                if index % 2 == 1 {
                    message.role = Role::Assistant;
                    message.direction = Role::Assistant.direction();
                    message.client_msg_id = None;
                    if index % 100 == 1 {
                        message.status = crate::model::MessageStatus::Failed;
                    }
                    message.agent = Some(Box::new(crate::model::AnswerMeta {
                        agent: Some("openai".into()),
                        model: Some(["gpt-4o-mini", "llama3.2"][index % 4 / 2].into()),
                        prompt_tokens: Some(300 + (index % 200) as u32),
                        completion_tokens: Some(40 + (index % 60) as u32),
                        time_to_first_token_ms: Some(200 + (index % 700) as u64),
                        total_ms: Some(900 + (index % 3000) as u64),
                        ..Default::default()
                    }));
                }
                if index % 3 == 0 {
                    message.channel = Some("webchat".into());
                }
                message
            })
            .collect()
    }

    /// One summary of the last `days` days by `bucket` (`day` or `hour`),
    /// as `GET /analytics/summary` computes it, timed; and its total of messages.
    pub async fn summary(&self, bucket: &str, days: i64) -> (Duration, u64) {
        use crate::model::analytics::{Summary, SummaryQuery};
        let now = chrono::Utc::now();
        let from = (now - chrono::TimeDelta::days(days)).to_rfc3339();
        let query = SummaryQuery::new(self.tenant.clone(), Some(&from), None, Some(bucket), now)
            .expect("a valid range");
        let started = Instant::now();
        let rows = self
            .storage
            .summary_rows(&query)
            .await
            .expect("the summary");
        let summary = Summary::assemble(&query, &rows);
        let elapsed = started.elapsed();
        let messages = summary
            .total
            .messages
            .values()
            .flat_map(|by| by.values())
            .sum();
        (elapsed, messages)
    }
}

impl StoreBench {
    /// Each statement of a summary alone, timed: where its time goes.
    pub async fn summary_statements(
        &self,
        bucket_len: usize,
        days: i64,
    ) -> Vec<(String, Duration)> {
        let now = chrono::Utc::now();
        let stored = crate::model::stored_time;
        let vars = json!({
            "tenant": self.tenant, "from": stored(now - chrono::TimeDelta::days(days)),
            "to": stored(now), "len": bucket_len, "band": 0.25,
        });
        let mut timed = Vec::new();
        for statement in super::analytics::QUERIES.split(";\n") {
            let started = Instant::now();
            self.db
                .select_each(statement, vars.clone(), 1)
                .await
                .expect("the statement runs");
            let name: String = statement.chars().take(70).collect();
            timed.push((name, started.elapsed()));
        }
        timed
    }
}

fn row(message: &StoredMessage) -> Value {
    let mut row = json!(message);
    row["id"] = json!(message.id.to_string());
    row
}

/// A user message of typical chat length.
fn message(tenant: &TenantId, session: SessionId, seq: u64) -> StoredMessage {
    let content = format!("Hello, I would like to know when my order {seq} will arrive.");
    StoredMessage {
        client_msg_id: Some(format!("c-{seq}")),
        ..StoredMessage::new(tenant.clone(), session, seq, Role::User, content)
    }
}

/// Stores `count` deliveries to `endpoint_id`, delivered `age_days` ago,
/// each with its own `message.created` event, as months of webhook traffic
/// leave them: what `benches/retention.rs` prunes. Opens the server's data
/// directory itself, once the server that used it has let go of it.
pub async fn seed_old_deliveries(
    data_dir: &std::path::Path,
    tenant: &str,
    endpoint_id: &str,
    count: usize,
    age_days: u64,
) {
    let endpoint = super::surrealkv_endpoint(data_dir).expect("a data directory");
    let opened = Instant::now();
    let db = loop {
        match Database::open(&endpoint, "tertulia", "main").await {
            Ok(db) => break db,
            Err(error) if opened.elapsed() < Duration::from_secs(10) => {
                tracing::debug!(%error, "the data directory is still locked");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("the database opens: {error}"),
        }
    };
    let start = chrono::Utc::now() - chrono::Duration::days(age_days as i64);
    let mut made = 0;
    while made < count {
        let take = (count - made).min(2_000);
        let (mut deliveries, mut events) = (Vec::new(), Vec::new());
        for index in made..made + take {
            let at = start + chrono::Duration::milliseconds(index as i64);
            let millis = at.timestamp_millis() as u64;
            let random: [u8; 10] = rand::random();
            let id = uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid();
            let (delivery_id, event_id) = (
                format!("dlv_{}", id.simple()),
                format!("evt_{}", id.simple()),
            );
            let when = crate::model::stored_time(at);
            events.push(json!({
                "id": event_id, "event_id": event_id, "tenant": tenant, "type": "message.created",
                "data": {"content": "an old message"}, "created_at": when, "dispatched": true,
            }));
            deliveries.push(json!({
                "id": delivery_id, "delivery_id": delivery_id, "tenant": tenant,
                "endpoint_id": endpoint_id, "event_id": event_id, "event_type": "message.created",
                "status": "delivered", "attempts": 1, "last_status_code": 200,
                "created_at": when, "delivered_at": when, "last_attempt_at": when,
            }));
        }
        db.run(
            "BEGIN TRANSACTION; INSERT INTO event $events; INSERT INTO delivery $deliveries; COMMIT TRANSACTION;",
            json!({"events": events, "deliveries": deliveries}),
        )
        .await
        .expect("old deliveries are stored");
        made += take;
    }
}
