//! Live, versioned context: every change (REST, a socket's `context` frame,
//! a message carrying context) gets the next version and reaches every
//! subscriber as a JSON Patch from the version before; conditional updates
//! (`If-Match`) refuse a stale version; a socket that missed versions gets
//! the whole context on `resume`; the version survives a restart.

use serde_json::{Value, json};

use crate::support::fake_llm::{FakeLlm, openai_config, read_request, respond_as};
use crate::support::server::*;

async fn post_context(
    server: &TestServer,
    session: &str,
    body: Value,
    if_match: Option<&str>,
) -> (u16, Value) {
    let mut request = server
        .http
        .post(server.url(&format!("/chat/sessions/{session}/context")))
        .header("X-API-Key", KEY)
        .json(&body);
    if let Some(version) = if_match {
        request = request.header("If-Match", version);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn every_change_reaches_every_subscriber_as_a_patch() {
    let server = TestServer::start(config()).await;
    let (session, url) = server.create_session().await;
    let mut visitor = server.connect(&url).await;
    let mut watcher = server.connect(&url).await;

    let (status, updated) = post_context(&server, &session, json!({"cart": 2}), None).await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["context_version"], 1);
    for socket in [&mut visitor, &mut watcher] {
        let (frame, _) = frames_until(socket, "context").await;
        assert_eq!(frame["version"], 1);
        assert_eq!(
            frame["patch"],
            json!([{"op": "add", "path": "/cart", "value": 2}])
        );
    }
    // From a socket: the others are told; removing a key is a `remove`.
    send(
        &mut visitor,
        json!({"type": "context", "context": {"plan": null}}),
    )
    .await;
    let (frame, _) = frames_until(&mut watcher, "context").await;
    assert_eq!(frame["version"], 2);
    assert_eq!(frame["patch"], json!([{"op": "remove", "path": "/plan"}]));
    // With a message; and a change that changes nothing is no new version.
    send(
        &mut visitor,
        json!({"type": "message", "content": "hola", "context": {"cart": 3}}),
    )
    .await;
    let (frame, _) = frames_until(&mut watcher, "context").await;
    assert_eq!(frame["version"], 3);
    assert_eq!(
        frame["patch"],
        json!([{"op": "replace", "path": "/cart", "value": 3}])
    );
    let (_, same) = post_context(&server, &session, json!({"cart": 3}), None).await;
    assert_eq!(same["context_version"], 3);
    server.stop().await;
}

#[tokio::test]
async fn a_stale_if_match_is_refused_and_changes_nothing() {
    let server = TestServer::start(config()).await;
    let (session, _) = server.create_session().await;
    let (status, first) = post_context(&server, &session, json!({"a": 1}), Some("0")).await;
    assert_eq!((status, first["context_version"].clone()), (200, json!(1)));
    // A second back end that also read version 0 loses, and is told the current one.
    let (status, stale) = post_context(&server, &session, json!({"a": 2}), Some("\"0\"")).await;
    assert_eq!(status, 412, "{stale}");
    assert_eq!(stale["code"], "stale_context");
    assert_eq!(stale["current_version"], 1);
    let (status, bad) = post_context(&server, &session, json!({"a": 2}), Some("latest")).await;
    assert_eq!(status, 400, "{bad}");
    let (status, retried) = post_context(&server, &session, json!({"a": 2}), Some("1")).await;
    assert_eq!(status, 200);
    assert_eq!(retried["context"], json!({"plan": "pro", "a": 2}));
    assert_eq!(retried["context_version"], 2);
    server.stop().await;
}

#[tokio::test]
async fn a_socket_that_missed_versions_gets_the_whole_context_on_resume() {
    let server = TestServer::start(config()).await;
    let (session, url) = server.create_session().await;
    let mut ws = server.connect(&url).await;
    post_context(&server, &session, json!({"a": 1}), None).await;
    post_context(&server, &session, json!({"b": 2}), None).await;
    frames_until(&mut ws, "context").await;
    // Up to date: no snapshot. Behind: the whole context at the current version.
    send(
        &mut ws,
        json!({"type": "resume", "after_seq": 0, "context_version": 2}),
    )
    .await;
    send(&mut ws, json!({"type": "ping"})).await;
    let (_, frames) = frames_until(&mut ws, "pong").await;
    assert!(
        frames.iter().all(|frame| frame["context"].is_null()),
        "{frames:?}"
    );
    send(
        &mut ws,
        json!({"type": "resume", "after_seq": 0, "context_version": 0}),
    )
    .await;
    let (snapshot, _) = frames_until(&mut ws, "context").await;
    assert_eq!(snapshot["version"], 2);
    assert_eq!(snapshot["context"], json!({"plan": "pro", "a": 1, "b": 2}));
    assert!(snapshot.get("patch").is_none());
    server.stop().await;
}

#[tokio::test]
async fn the_version_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(durable_config(dir.path())).await;
    let (session, _) = server.create_session().await;
    post_context(&server, &session, json!({"a": 1}), None).await;
    server.stop().await;
    let server = TestServer::start(durable_config(dir.path())).await;
    let (status, stale) = post_context(&server, &session, json!({"a": 2}), Some("0")).await;
    assert_eq!((status, stale["current_version"].clone()), (412, json!(1)));
    let (status, next) = post_context(&server, &session, json!({"a": 2}), Some("1")).await;
    assert_eq!((status, next["context_version"].clone()), (200, json!(2)));
    server.stop().await;
}

#[tokio::test]
async fn a_tools_answer_may_change_the_context() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tool_url = format!("http://{}/estimate", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            if read_request(&mut socket).await.is_some() {
                let answer = json!({"estimate_id": "E-17", "context": {"estimate": "E-17"}});
                respond_as(
                    &mut socket,
                    "200 OK",
                    "application/json",
                    &[],
                    &answer.to_string(),
                )
                .await;
            }
        }
    });
    let llm = FakeLlm::start().await;
    let mut config = openai_config(&llm);
    config.tenants.get_mut("acme").unwrap().tools = vec![tertulia_actors::model::ToolSettings {
        name: "create_estimate".into(),
        description: "Creates a repair estimate".into(),
        parameters: json!({"type": "object", "properties": {"problem": {"type": "string"}}}),
        url: tool_url,
        secret: "whsec_dG9vbC1zZWNyZXQtZm9yLXRoZS10ZXN0cw==".into(),
        ..Default::default()
    }];
    let server = TestServer::start(config).await;
    let (session, url) = server.create_session().await;
    let mut ws = server.connect(&url).await;
    say(&mut ws, "I need an estimate").await;
    let (frame, _) = frames_until(&mut ws, "context").await;
    assert_eq!(frame["version"], 1);
    assert_eq!(
        frame["patch"],
        json!([{"op": "add", "path": "/estimate", "value": "E-17"}])
    );
    frames_until(&mut ws, "done").await;
    let (_, same) = post_context(&server, &session, json!({}), Some("1")).await;
    assert_eq!(same["context"], json!({"plan": "pro", "estimate": "E-17"}));
    server.stop().await;
}
