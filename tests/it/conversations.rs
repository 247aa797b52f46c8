//! The Conversation API (seed "Chat Endpoints"): conversations with titles,
//! statuses and versions, their messages, and optimistic concurrency.

use serde_json::{Value, json};

use crate::support::server::*;

async fn request(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = server
        .http
        .request(method, server.url(path))
        .header("X-API-Key", KEY);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_conversation_is_created_listed_renamed_and_archived_with_versions() {
    let server = TestServer::start(config()).await;
    let (status, created) = request(
        &server,
        reqwest::Method::POST,
        "/chat/conversation",
        Some(json!({"title": "Fuga en la cocina"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    for field in [
        "id",
        "title",
        "client_id",
        "status",
        "created_at",
        "updated_at",
        "version",
    ] {
        assert!(created.get(field).is_some(), "{field} missing: {created}");
    }
    assert_eq!(
        (created["status"].clone(), created["version"].clone()),
        (json!("active"), json!(1))
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let (_, untitled) = request(&server, reqwest::Method::POST, "/chat/conversation", None).await;

    // Newest first; filtered by status.
    let (status, listed) =
        request(&server, reqwest::Method::GET, "/chat/conversations", None).await;
    assert_eq!(status, 200, "{listed}");
    assert!(listed.is_array(), "{listed}");
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![untitled["id"].as_str().unwrap(), id.as_str()]);

    // PATCH with the current version: applied, version + 1.
    let path = format!("/chat/{id}");
    let (status, renamed) = request(
        &server,
        reqwest::Method::PATCH,
        &path,
        Some(json!({"title": "Fuga arreglada", "version": 1})),
    )
    .await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(
        (renamed["title"].clone(), renamed["version"].clone()),
        (json!("Fuga arreglada"), json!(2))
    );
    // A stale version: 409 with the current one, nothing changed.
    let (status, stale) = request(
        &server,
        reqwest::Method::PATCH,
        &path,
        Some(json!({"status": "archived", "version": 1})),
    )
    .await;
    assert_eq!(
        (
            status,
            stale["code"].clone(),
            stale["current_version"].clone()
        ),
        (409, json!("version_conflict"), json!(2))
    );
    let (status, archived) = request(
        &server,
        reqwest::Method::PATCH,
        &path,
        Some(json!({"status": "archived", "version": 2})),
    )
    .await;
    assert_eq!(
        (
            status,
            archived["status"].clone(),
            archived["version"].clone()
        ),
        (200, json!("archived"), json!(3))
    );

    let (_, active) = request(
        &server,
        reqwest::Method::GET,
        "/chat/conversations?status_filter=active",
        None,
    )
    .await;
    assert_eq!(active.as_array().unwrap().len(), 1);
    let (_, gone) = request(
        &server,
        reqwest::Method::GET,
        "/chat/conversations?status_filter=archived",
        None,
    )
    .await;
    assert_eq!(gone[0]["id"], id.as_str());
    let (_, one) = request(
        &server,
        reqwest::Method::GET,
        "/chat/conversations?limit=1",
        None,
    )
    .await;
    assert_eq!(one.as_array().unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_conversations_messages_are_chronological_and_limit_takes_the_latest() {
    let server = TestServer::start(config()).await;
    let (_, created) = request(&server, reqwest::Method::POST, "/chat/conversation", None).await;
    let id = created["id"].as_str().unwrap();
    // The same id works on the socket: a conversation is a session.
    let (status, ticket) = request(
        &server,
        reqwest::Method::POST,
        &format!("/chat/sessions/{id}/ticket"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{ticket}");
    let mut ws = server
        .connect(ticket["websocket_url"].as_str().unwrap())
        .await;
    for text in ["uno", "dos"] {
        say(&mut ws, text).await;
        frames_until(&mut ws, "done").await;
    }
    let (status, messages) = request(
        &server,
        reqwest::Method::GET,
        &format!("/chat/{id}/messages"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let contents: Vec<&str> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        vec!["uno", "You said: uno", "dos", "You said: dos"]
    );
    for field in [
        "id",
        "conversation_id",
        "role",
        "content",
        "created_at",
        "updated_at",
        "version",
    ] {
        assert!(messages[0].get(field).is_some(), "{field} missing");
    }
    assert_eq!(messages[0]["conversation_id"], id);
    let (_, latest) = request(
        &server,
        reqwest::Method::GET,
        &format!("/chat/{id}/messages?limit=2"),
        None,
    )
    .await;
    let contents: Vec<&str> = latest
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        vec!["dos", "You said: dos"],
        "the latest two, oldest first"
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_conversation_input_is_a_400_naming_the_field_and_changes_nothing() {
    let server = TestServer::start(config()).await;
    let (_, created) = request(
        &server,
        reqwest::Method::POST,
        "/chat/conversation",
        Some(json!({"title": "t"})),
    )
    .await;
    let path = format!("/chat/{}", created["id"].as_str().unwrap());
    for (method, path, body, needle) in [
        (
            reqwest::Method::POST,
            "/chat/conversation".to_owned(),
            json!({"title": 5}),
            "`title`",
        ),
        (
            reqwest::Method::POST,
            "/chat/conversation".to_owned(),
            json!({"title": "x".repeat(201)}),
            "`title`",
        ),
        (
            reqwest::Method::PATCH,
            path.clone(),
            json!({"title": "no version"}),
            "`version`",
        ),
        (
            reqwest::Method::PATCH,
            path.clone(),
            json!({"status": "deleted", "version": 1}),
            "`status`",
        ),
        (
            reqwest::Method::PATCH,
            path.clone(),
            json!({"colour": "red", "version": 1}),
            "colour",
        ),
    ] {
        let (status, error) = request(&server, method.clone(), &path, Some(body.clone())).await;
        assert_eq!(status, 400, "{method} {path} {body}: {error}");
        assert!(
            error["error"].as_str().unwrap().contains(needle),
            "{body}: {error}"
        );
    }
    for query in ["limit=0", "limit=abc", "status_filter=deleted"] {
        let (status, _) = request(
            &server,
            reqwest::Method::GET,
            &format!("/chat/conversations?{query}"),
            None,
        )
        .await;
        assert_eq!(status, 400, "{query}");
    }
    let (status, _) = request(
        &server,
        reqwest::Method::GET,
        "/chat/not-an-id/messages",
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (_, listed) = request(&server, reqwest::Method::GET, "/chat/conversations", None).await;
    assert_eq!(
        (listed[0]["title"].clone(), listed[0]["version"].clone()),
        (json!("t"), json!(1))
    );
    server.stop().await;
}

#[tokio::test]
async fn a_client_sees_and_changes_only_its_own_conversations() {
    let server = TestServer::start(config()).await;
    let as_client = |client: &str, method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut request = server
            .http
            .request(method, server.url(path))
            .header("X-API-Key", KEY)
            .bearer_auth(client_token(client));
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, mine) = as_client(
        "ana",
        reqwest::Method::POST,
        "/chat/conversation",
        Some(json!({"title": "mía"})),
    )
    .await;
    assert_eq!((status, mine["client_id"].clone()), (201, json!("ana")));
    let path = format!("/chat/{}", mine["id"].as_str().unwrap());
    let (status, _) = as_client(
        "beto",
        reqwest::Method::PATCH,
        &path,
        Some(json!({"title": "robada", "version": 1})),
    )
    .await;
    assert_eq!(status, 404);
    let (_, betos) = as_client("beto", reqwest::Method::GET, "/chat/conversations", None).await;
    assert_eq!(betos.as_array().unwrap().len(), 0);
    let (_, anas) = as_client("ana", reqwest::Method::GET, "/chat/conversations", None).await;
    assert_eq!(anas[0]["title"], "mía");
    server.stop().await;
}

#[tokio::test]
async fn a_posted_message_reaches_every_socket_and_only_user_messages_are_answered() {
    let server = TestServer::start(config()).await;
    let (_, created) = request(
        &server,
        reqwest::Method::POST,
        "/chat/conversation",
        Some(json!({"title": "live"})),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let (_, ticket) = request(
        &server,
        reqwest::Method::POST,
        &format!("/chat/sessions/{id}/ticket"),
        None,
    )
    .await;
    let url = ticket["websocket_url"].as_str().unwrap().to_owned();
    let mut alice = server.connect(&url).await;
    let mut bob = server.connect(&url).await;
    let path = format!("/chat/{id}/messages");

    // A user message from a back end: stored (201), seen by every socket, answered.
    let (status, posted) = request(
        &server,
        reqwest::Method::POST,
        &path,
        Some(json!({"role": "user", "content": "desde el CRM"})),
    )
    .await;
    assert_eq!(status, 201, "{posted}");
    for field in [
        "id",
        "conversation_id",
        "role",
        "content",
        "created_at",
        "updated_at",
        "version",
    ] {
        assert!(posted.get(field).is_some(), "{field} missing: {posted}");
    }
    for ws in [&mut alice, &mut bob] {
        let (done, before) = frames_until(ws, "done").await;
        assert_eq!(before[0]["message"]["id"], posted["id"]);
        assert_eq!(done["content"], "You said: desde el CRM");
    }

    // An assistant message (a workflow answering) and a user message with
    // "respond": false are broadcast and start no answer; the next user message does.
    let (status, _) = request(
        &server,
        reqwest::Method::POST,
        &path,
        Some(json!({"role": "assistant", "content": "Soy n8n"})),
    )
    .await;
    assert_eq!(status, 201);
    let (_, quiet) = request(
        &server,
        reqwest::Method::POST,
        &path,
        Some(json!({"role": "user", "content": "nota", "respond": false})),
    )
    .await;
    let (_, loud) = request(
        &server,
        reqwest::Method::POST,
        &path,
        Some(json!({"role": "user", "content": "¿hola?"})),
    )
    .await;
    let (done, before) = frames_until(&mut alice, "done").await;
    let roles: Vec<(&str, &str)> = before
        .iter()
        .filter(|frame| frame["type"] == "message")
        .map(|frame| {
            (
                frame["message"]["role"].as_str().unwrap(),
                frame["message"]["content"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        vec![
            ("assistant", "Soy n8n"),
            ("user", "nota"),
            ("user", "¿hola?")
        ]
    );
    assert_eq!(done["content"], "You said: ¿hola?");
    assert!(quiet["seq"].as_u64() < loud["seq"].as_u64());

    let (_, messages) = request(&server, reqwest::Method::GET, &path, None).await;
    let log: Vec<(&str, &str)> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(
        log,
        vec![
            ("user", "desde el CRM"),
            ("assistant", "You said: desde el CRM"),
            ("assistant", "Soy n8n"),
            ("user", "nota"),
            ("user", "¿hola?"),
            ("assistant", "You said: ¿hola?"),
        ]
    );
    // Posting bumped the conversation's updated_at.
    let (_, listed) = request(&server, reqwest::Method::GET, "/chat/conversations", None).await;
    assert!(listed[0]["updated_at"].as_str().unwrap() > created["updated_at"].as_str().unwrap());

    for (body, needle) in [
        (json!({"role": "robot", "content": "x"}), "`role`"),
        (json!({"content": "x"}), "`role`"),
        (json!({"role": "user", "content": ""}), "`content`"),
        (
            json!({"role": "user", "content": "x".repeat(17_000)}),
            "`content`",
        ),
        (
            json!({"role": "user", "content": "x", "respond": "yes"}),
            "`respond`",
        ),
        (
            json!({"role": "user", "content": "x", "mood": "happy"}),
            "mood",
        ),
    ] {
        let (status, error) =
            request(&server, reqwest::Method::POST, &path, Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {error}");
        assert!(
            error["error"].as_str().unwrap().contains(needle),
            "{body}: {error}"
        );
    }
    let (_, after) = request(&server, reqwest::Method::GET, &path, None).await;
    assert_eq!(after.as_array().unwrap().len(), 6, "nothing bad was stored");
    server.stop().await;
}
