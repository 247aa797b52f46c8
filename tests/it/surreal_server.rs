//! tertulia on the official SurrealDB server (`storage.endpoint =
//! "ws://…"`, the root user from the environment), both real processes on
//! loopback: messages stored there and read back, the server killed under
//! load and started again (`/readyz` 503 while it is gone, 200 after; every
//! acknowledged message stored once, in order), and refused credentials
//! stopping the start with the variable to set.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tertulia_actors::config::DbCredentials;
use tertulia_actors::runtime::AgentRegistry;

use crate::support::server::*;
use crate::support::surreal::{PASSWORD, SurrealServer, USER};

fn on(db: &SurrealServer, password: &str) -> tertulia::config::Config {
    let mut config = config();
    // The writer retries as fast as a client would; the limits are not under test.
    let acme = config.tenants.get_mut("acme").unwrap();
    acme.rate_limits.session_messages_per_minute = 100_000;
    acme.rate_limits.api_key_per_minute = 100_000;
    config.storage.endpoint = Some(db.endpoint());
    config.storage.credentials = Some(DbCredentials {
        user: USER.into(),
        password: password.into(),
    });
    config
}

async fn readyz(server: &TestServer) -> u16 {
    server.get("/readyz", None).await.0
}

/// What the writer saw: acknowledged ids in order, and refusals by code.
#[derive(Default)]
struct Seen {
    acked: Vec<String>,
    refused: Vec<String>,
}

/// Posts messages one after another, each retried with its
/// `client_msg_id` until acknowledged, as a client that must not lose one
/// would; stops when `stop` is set.
async fn write(
    server: Arc<TestServer>,
    session: String,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<tokio::sync::Notify>,
) {
    let path = format!("/chat/{session}/messages");
    for n in 0.. {
        let id = format!("m{n:05}");
        loop {
            let body =
                json!({"role": "assistant", "content": format!("nota {n}"), "client_msg_id": id});
            let request = server.post(&path, KEY, body);
            tokio::select! {
                () = stop.notified() => return,
                answer = tokio::time::timeout(DEADLINE, request) => match answer {
                    Ok((201, _)) => {
                        seen.lock().unwrap().acked.push(id.clone());
                        break;
                    }
                    Ok((_, body)) => seen.lock().unwrap().refused.push(body["code"].as_str().unwrap_or("?").to_owned()),
                    Err(_) => seen.lock().unwrap().refused.push("timeout".into()),
                },
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn a_database_server_killed_under_load_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = SurrealServer::start(dir.path()).await;
    let server = Arc::new(TestServer::start(on(&db, PASSWORD)).await);
    assert_eq!(readyz(&server).await, 200);
    let (session, _) = server.create_session().await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(tokio::sync::Notify::new());
    let writer = tokio::spawn(write(
        server.clone(),
        session.clone(),
        seen.clone(),
        stop.clone(),
    ));
    let acked = || seen.lock().unwrap().acked.len();
    eventually("30 messages acknowledged", || async { acked() >= 30 }).await;

    db.kill();
    eventually("/readyz says 503 while the database is gone", || async {
        readyz(&server).await == 503
    })
    .await;
    let before_restart = acked();
    tokio::time::sleep(Duration::from_secs(1)).await;
    db.restart().await;
    eventually("/readyz says 200 once it is back", || async {
        readyz(&server).await == 200
    })
    .await;
    eventually("30 more acknowledged after the restart", || async {
        acked() >= before_restart + 30
    })
    .await;
    stop.notify_waiters();
    writer.abort();

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let stored = server.history(&session).await;
    let ids: Vec<&str> = stored
        .iter()
        .filter_map(|message| message["client_msg_id"].as_str())
        .collect();
    let unique: HashSet<&&str> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "nothing stored twice: {ids:?}");
    let in_store: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|id| seen.acked.iter().any(|acked| acked == id))
        .collect();
    assert_eq!(
        in_store, seen.acked,
        "every acknowledged message stored, in order"
    );
    let seqs: Vec<u64> = stored
        .iter()
        .map(|message| message["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "{seqs:?}");
    eprintln!(
        "{} acknowledged, {} refused or timed out while the database was gone: {:?}",
        seen.acked.len(),
        seen.refused.len(),
        seen.refused.iter().collect::<HashSet<_>>()
    );
}

#[tokio::test]
async fn what_is_stored_in_the_server_outlives_a_restart_of_tertulia() {
    let dir = tempfile::tempdir().unwrap();
    let db = SurrealServer::start(dir.path()).await;
    let server = TestServer::start(on(&db, PASSWORD)).await;
    let (session, _) = server.create_session().await;
    let (status, _) = server
        .post(
            &format!("/chat/{session}/messages"),
            KEY,
            json!({"role": "user", "content": "hola"}),
        )
        .await;
    assert_eq!(status, 201);
    eventually("answered", || async {
        server.history(&session).await.len() == 2
    })
    .await;
    server.stop().await;

    let server = TestServer::start(on(&db, PASSWORD)).await;
    let history = server.history(&session).await;
    let contents: Vec<&Value> = history.iter().map(|message| &message["content"]).collect();
    assert_eq!(contents.len(), 2);
    assert_eq!(contents[0], "hola");
}

#[tokio::test]
async fn credentials_the_server_refuses_stop_the_start_naming_the_variables() {
    let dir = tempfile::tempdir().unwrap();
    let db = SurrealServer::start(dir.path()).await;
    let error = tertulia::start(on(&db, "not-the-password"), AgentRegistry::new())
        .await
        .err()
        .expect("the start is refused")
        .to_string();
    assert!(error.contains("refused user `root`"), "{error}");
    assert!(error.contains("TERTULIA_DB_PASSWORD"), "{error}");
    assert!(
        !error.contains("not-the-password"),
        "the password is not shown: {error}"
    );

    let mut config = on(&db, PASSWORD);
    config.storage.namespace = "bad name; REMOVE".into();
    let error = tertulia::start(config, AgentRegistry::new())
        .await
        .err()
        .expect("a bad namespace is refused")
        .to_string();
    assert!(error.contains("storage.namespace"), "{error}");
}
