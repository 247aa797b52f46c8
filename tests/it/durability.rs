//! What survives: restarts on the embedded surrealkv store, shutdown in the
//! middle of an answer, passivation of idle sessions, and a refused write
//! retried with its `client_msg_id`.

use serde_json::json;

use crate::support::server::*;

#[tokio::test]
async fn history_survives_a_full_server_restart_on_surrealkv() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(durable_config(dir.path())).await;
    let (session, url) = server.create_session().await;
    let mut ws = server.connect(&url).await;
    for text in ["primero", "segundo"] {
        say(&mut ws, text).await;
        frames_until(&mut ws, "done").await;
    }
    let before = server.history(&session).await;
    let addr = server.server.addr;
    drop(ws);
    server.stop().await;

    // Same address, as a restarted process would have.
    let mut config = durable_config(dir.path());
    config.server.bind = addr.to_string();
    let server = TestServer::start(config).await;
    assert_eq!(server.history(&session).await, before);
    // The ticket issued before the restart still opens the socket (the signing
    // secret is stored), and the log carries on from where it was.
    let mut ws = server.connect(&url).await;
    let ack = say(&mut ws, "tercero").await;
    assert_eq!(ack["seq"], 5);
    let (_, listed) = server.get("/chat/sessions?detail=true", Some(KEY)).await;
    assert_eq!(listed["sessions"][0]["context"], json!({"plan": "pro"}));
    server.stop().await;
}

#[tokio::test]
async fn shutdown_stores_the_answer_in_progress_as_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = durable_config(dir.path());
    config.agents.echo.word_delay_ms = 20;
    let server = TestServer::start(config.clone()).await;
    let (session, url) = server.create_session().await;
    let mut ws = server.connect(&url).await;
    let question = (0..200)
        .map(|i| format!("palabra{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    say(&mut ws, &question).await;
    frames_until(&mut ws, "chunk").await;

    let stopping = tokio::spawn(server.stop());
    let (done, _) = frames_until(&mut ws, "done").await;
    assert_eq!(done["status"], "interrupted");
    assert_eq!(close_of(&mut ws).await.0, 1001);
    stopping.await.unwrap();

    let server = TestServer::start(config).await;
    let history = server.history(&session).await;
    assert_eq!(history.len(), 2);
    assert_eq!(history[1]["status"], "interrupted");
    assert_eq!(history[1]["content"], done["content"]);
    assert!(!history[1]["content"].as_str().unwrap().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn an_idle_session_passivates_and_is_rehydrated_on_next_use() {
    let mut config = config();
    config.sessions.idle_timeout_ms = 50;
    let server = TestServer::start(config).await;
    let (_, url) = server.create_session().await;
    let mut ws = server.connect(&url).await;
    say(&mut ws, "antes").await;
    frames_until(&mut ws, "done").await;
    assert_eq!(server.server.runtime.live_sessions(), 1);
    drop(ws);

    eventually("the idle session leaves memory", || async {
        server.server.runtime.live_sessions() == 0
    })
    .await;

    let mut ws = server.connect(&format!("{url}&after_seq=0")).await;
    assert_eq!(next_frame(&mut ws).await["message"]["content"], "antes");
    assert_eq!(
        next_frame(&mut ws).await["message"]["content"],
        "You said: antes"
    );
    let ack = say(&mut ws, "después").await;
    assert_eq!(ack["seq"], 3);
    server.stop().await;
}

#[tokio::test]
async fn a_refused_write_retried_with_its_client_msg_id_is_stored_once() {
    let server = TestServer::start(config()).await;
    let (session, _) = server.create_session().await;
    let path = format!("/chat/{session}/messages");
    let body =
        json!({"role": "user", "content": "otra vez", "respond": false, "client_msg_id": "c-1"});
    server.server.runtime.inject_storage_failures(1).await;
    let (status, refused) = server.post(&path, KEY, body.clone()).await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (503, Some("storage_unavailable"))
    );
    // The failed write is in doubt: the retry looks in the store, finds
    // nothing there (this fault stored nothing), and stores it.
    let (status, stored) = server.post(&path, KEY, body.clone()).await;
    assert_eq!(status, 201, "{stored}");
    let (status, repeated) = server.post(&path, KEY, body).await;
    assert!((200..300).contains(&status), "{repeated}");
    assert_eq!(
        repeated["id"], stored["id"],
        "the same message, acknowledged again"
    );
    assert!(stored["id"].is_string(), "{stored}");
    let history = server.history(&session).await;
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0]["client_msg_id"], "c-1");
}
