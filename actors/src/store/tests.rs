//! The store's tests against the real embedded SurrealDB (`mem://`): group
//! commit, a change and its events in one transaction, the migrations.

use std::path::Path;
use std::sync::Arc;

use ractor::Actor;
use ractor::rpc::CallResult;
use serde_json::json;
use tokio::sync::{Notify, oneshot};

use super::migrations::MIGRATIONS;
use super::*;
use crate::model::{EventRecord, Role, SessionId, SessionRecord, StoredMessage, TenantId};
use std::sync::Mutex;

#[tokio::test]
async fn concurrent_writes_share_batches_and_complete_in_order() {
    let db = Database::open("mem://", "test", "test").await.unwrap();
    let args = PersistenceArgs {
        db: db.clone(),
        events_committed: Arc::new(Notify::new()),
        subscriptions: Default::default(),
    };
    let (actor, _) = Actor::spawn(None, Persistence, args).await.unwrap();
    let storage = Storage::new(actor.clone(), db);
    let tenant = TenantId("t".into());
    let session = SessionId::new();
    let completed = Arc::new(Mutex::new(Vec::new()));
    let writes = 200u64;
    let mut outcomes = Vec::new();
    for seq in 1..=writes {
        let message = message(&tenant, session, seq);
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
    let record = conversation(&tenant);
    let event = crate::model::events::conversation_created(&record);
    db.write_batch(
        &[Write::WithEvents(
            Box::new(Write::CreateSession(Box::new(record))),
            vec![event.clone()],
        )],
        None,
    )
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
    db.write_batch(
        &[Write::FanOut {
            event_ids: vec![event.event_id.clone()],
            deliveries: Vec::new(),
        }],
        None,
    )
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

fn message(tenant: &TenantId, session: SessionId, seq: u64) -> StoredMessage {
    StoredMessage::new(
        tenant.clone(),
        session,
        seq,
        Role::User,
        format!("message {seq}"),
    )
}

fn conversation(tenant: &TenantId) -> SessionRecord {
    SessionRecord::new(tenant.clone())
}

async fn persistence(db: &Database) -> (ractor::ActorRef<PersistenceMsg>, Storage) {
    let args = PersistenceArgs {
        db: db.clone(),
        events_committed: Arc::new(Notify::new()),
        subscriptions: Default::default(),
    };
    let (actor, _) = Actor::spawn(None, Persistence, args).await.unwrap();
    (actor.clone(), Storage::new(actor, db.clone()))
}

/// Counters written lazily: a flush writes them; a persistence actor that
/// stops owing them leaves markers, and its successor recomputes them from
/// the log before anything else.
#[tokio::test]
async fn counters_follow_the_log_lazily_and_are_repaired_after_a_crash() {
    let db = Database::open("mem://", "test", "test").await.unwrap();
    let tenant = TenantId("t".into());
    let (first, storage) = persistence(&db).await;
    let record = conversation(&tenant);
    let session = record.id;
    storage
        .write_and_wait(Write::CreateSession(Box::new(record)))
        .await
        .unwrap();
    for seq in 1..=3 {
        storage
            .write_and_wait(Write::AppendMessage(message(&tenant, session, seq)))
            .await
            .unwrap();
    }
    let settled = storage
        .load_settled_session(&tenant, session)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((settled.last_seq, settled.message_count), (3, 3));

    let newest = message(&tenant, session, 5);
    for message in [message(&tenant, session, 4), newest.clone()] {
        storage
            .write_and_wait(Write::AppendMessage(message))
            .await
            .unwrap();
    }
    // Stopped at once, within the delay before it writes what it owes.
    first.stop(None);
    let owed = storage
        .load_session(&tenant, session)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (owed.last_seq, owed.message_count),
        (3, 3),
        "owed, not yet written"
    );

    let (_second, storage) = persistence(&db).await;
    let repaired = storage
        .load_session(&tenant, session)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((repaired.last_seq, repaired.message_count), (5, 5));
    assert_eq!(repaired.updated_at, newest.created_at);
    let markers: Vec<serde_json::Value> = db
        .select("SELECT * FROM pending_count;", json!({}))
        .await
        .unwrap();
    assert!(
        markers.is_empty(),
        "repaired markers are dropped: {markers:?}"
    );
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

#[tokio::test]
async fn the_summary_is_counted_by_the_database_per_bucket() {
    use crate::model::analytics::{Summary, SummaryQuery};
    use crate::model::{AnswerMeta, MessageStatus};
    let db = Database::open("mem://", "test", "test").await.unwrap();
    let (_actor, storage) = persistence(&db).await;
    let tenant = TenantId("t".into());
    let other = TenantId("other".into());
    let record = conversation(&tenant);
    let session = record.id;
    storage
        .write_and_wait(Write::CreateSession(Box::new(record)))
        .await
        .unwrap();
    let answer = |seq: u64, ttft: u64, status: MessageStatus| StoredMessage {
        status,
        channel: Some("webchat".into()),
        agent: Some(Box::new(AnswerMeta {
            model: Some("m1".into()),
            prompt_tokens: Some(10),
            completion_tokens: Some(5),
            time_to_first_token_ms: Some(ttft),
            total_ms: Some(ttft * 10),
            ..AnswerMeta::default()
        })),
        ..StoredMessage::new(tenant.clone(), session, seq, Role::Assistant, "a".into())
    };
    let writes = vec![
        Write::AppendMessage(message(&tenant, session, 1)),
        Write::AppendMessage(answer(2, 100, MessageStatus::Complete)),
        Write::AppendMessage(message(&tenant, session, 3)),
        Write::AppendMessage(answer(4, 300, MessageStatus::Failed)),
        // The same latency twice: a percentile over distinct values would miss it.
        Write::AppendMessage(answer(6, 100, MessageStatus::Complete)),
        Write::AppendMessage(message(&other, SessionId::new(), 1)),
        Write::WithEvents(
            Box::new(Write::AppendMessage(message(&tenant, session, 5))),
            vec![EventRecord::new(
                tenant.clone(),
                "lead.captured",
                Some(session),
                Default::default(),
            )],
        ),
    ];
    for write in writes {
        storage.write_and_wait(write).await.unwrap();
    }
    let now = chrono::Utc::now();
    let query = SummaryQuery::new(tenant.clone(), None, None, Some("hour"), now).unwrap();
    let rows = storage.summary_rows(&query).await.unwrap();
    let summary = Summary::assemble(&query, &rows);
    let total = &summary.total;
    assert_eq!(total.conversations_started, 1, "{rows:?}");
    assert_eq!(total.messages["user"]["api"], 3, "{rows:?}");
    assert_eq!(total.messages["assistant"]["webchat"], 3, "{rows:?}");
    assert_eq!(total.answers.failed, 1);
    assert_eq!(total.answers.complete, 2);
    assert_eq!(total.tokens["m1"].prompt, 30, "{rows:?}");
    assert_eq!(total.leads_captured, 1);
    assert_eq!(total.time_to_first_token_ms.p50, Some(100.0), "{rows:?}");
    assert_eq!(total.time_to_first_token_ms.p95, Some(280.0), "{rows:?}");
    let last = summary.buckets.last().unwrap();
    assert_eq!(last.stats.messages["user"]["api"], 3, "{summary:?}");
    assert_eq!(summary.buckets.len(), 49, "48 hours, cut at the hour");
}

/// Two nodes claiming the same conversations at the same moment: exactly
/// one takes each, the other finds it held (never both taken).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_claims_give_each_conversation_one_owner() {
    let dir = std::env::temp_dir().join(format!("tertulia-claims-{}", SessionId::new()));
    let endpoint = surrealkv_endpoint(&dir).unwrap();
    let db = Database::open(&endpoint, "test", "test").await.unwrap();
    let lease = std::time::Duration::from_secs(60);
    let a = db.renew_node("a", "127.0.0.1:1", 0, lease).await.unwrap();
    let b = db.renew_node("b", "127.0.0.1:2", 0, lease).await.unwrap();
    let tenant = TenantId("t".into());
    let mut both = 0;
    for _ in 0..200 {
        let session = SessionId::new();
        let (first, second) = tokio::join!(
            db.claim_conversation(&tenant, session, "a", a.epoch),
            db.claim_conversation(&tenant, session, "b", b.epoch),
        );
        let taken = |claim: &crate::error::Result<leases::Claim>| matches!(claim, Ok(claim) if claim.held_by.is_none());
        both += usize::from(taken(&first) && taken(&second));
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(both, 0, "conversations both nodes took");
}
