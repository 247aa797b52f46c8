//! The agent console's API and feed, over real sockets: staff keys, take-over
//! and hand-back, presence, handoff by phrase, and a feed that carries only
//! its own tenant. (`browser.rs` drives the same flow through the page.)

use serde_json::{Value, json};

use crate::support::server::*;

async fn console_server() -> TestServer {
    let mut config = config();
    config.auth.admin_token = "adm".into();
    TestServer::start(config).await
}

async fn make_staff(server: &TestServer, tenant: &str, name: &str) -> (u16, Value) {
    let response = server
        .http
        .post(server.url(&format!("/admin/tenants/{tenant}/keys")))
        .bearer_auth("adm")
        .json(&json!({"kind": "staff", "name": name}))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// The next `presence` frame.
async fn presence(ws: &mut Ws) -> Value {
    loop {
        let frame = next_any_frame(ws).await;
        if frame["type"] == "presence" {
            return frame;
        }
    }
}

#[tokio::test]
async fn staff_keys_need_a_name_and_open_only_the_console() {
    let server = console_server().await;
    let admin = |body: Value| {
        server
            .http
            .post(server.url("/admin/tenants/acme/keys"))
            .bearer_auth("adm")
            .json(&body)
            .send()
    };
    for (body, why) in [
        (json!({"kind": "staff"}), "no name"),
        (json!({"kind": "staff", "name": "  "}), "blank name"),
        (
            json!({"kind": "staff", "name": "x".repeat(101)}),
            "long name",
        ),
        (
            json!({"kind": "api", "name": "Ana"}),
            "a name on an API key",
        ),
    ] {
        let response = admin(body).await.unwrap();
        assert_eq!(response.status(), 400, "{why}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "bad_request", "{why}: {body}");
    }
    let (status, key) = make_staff(&server, "acme", "Ana Ruiz").await;
    assert_eq!(status, 201, "{key}");
    assert_eq!(key["name"], "Ana Ruiz");
    let key = key["key"].as_str().unwrap().to_owned();
    let (status, me) = server.get("/console/api/me", Some(&key)).await;
    assert_eq!((status, me["name"].clone()), (200, json!("Ana Ruiz")));
    assert_eq!(me["tenant"], "acme");

    // Not an API key, nor a widget key.
    let (status, body) = server.post("/chat/sessions", &key, json!({})).await;
    assert_eq!(
        (status, body["code"].clone()),
        (403, json!("staff_key_not_allowed"))
    );
    let visit = json!({"session_id": "visitor-0123456789abcdef", "author": "x", "content": "hola"});
    let (status, body) = server.post("/api/webchat/messages", &key, visit).await;
    assert_eq!(
        (status, body["code"].clone()),
        (403, json!("staff_key_not_allowed"))
    );
    let (status, body) = server.get("/console/api/me", Some("sk_forged")).await;
    assert_eq!(
        (status, body["code"].clone()),
        (401, json!("invalid_api_key"))
    );
    let (status, _) = server.get("/console/api/me", None).await;
    assert_eq!(status, 401);

    // A bad or oversized answer is refused and stores nothing.
    let (session, _) = server.create_session().await;
    let path = format!("/console/api/conversations/{session}/messages");
    for (body, status) in [
        (json!({}), 400),
        (json!({"content": ""}), 400),
        (json!({"content": 5}), 400),
        (json!({"content": "hi", "client_msg_id": ""}), 400),
        (json!({"content": "x".repeat(70_000)}), 413),
    ] {
        let (got, answer) = server.post(&path, &key, body.clone()).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert!(answer["code"].is_string(), "{answer}");
    }
    let response = server
        .http
        .post(server.url(&path))
        .header("X-API-Key", &key)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(server.history(&session).await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_take_over_silences_the_ai_until_hand_back_and_everyone_sees_who_is_here() {
    let server = console_server().await;
    let (_, ana) = make_staff(&server, "acme", "Ana").await;
    let ana = ana["key"].as_str().unwrap().to_owned();
    let (_, luis) = make_staff(&server, "acme", "Luis").await;
    let luis = luis["key"].as_str().unwrap().to_owned();
    let (session, url) = server.create_session().await;
    let mut visitor = server.connect(&url).await;
    let alone = presence(&mut visitor).await;
    assert_eq!(
        alone,
        json!({"type": "presence", "visitors": 1, "staff": [], "agent": {"kind": "ai"}, "handoff_requested": false})
    );

    // Ana watches: the visitor sees her arrive.
    let (_, ticket) = server
        .post(
            &format!("/console/api/conversations/{session}/socket"),
            &ana,
            json!({}),
        )
        .await;
    let mut console = server
        .connect(ticket["websocket_url"].as_str().unwrap())
        .await;
    assert_eq!(presence(&mut visitor).await["staff"], json!(["Ana"]));

    let take_over = format!("/console/api/conversations/{session}/takeover");
    let (status, body) = server.post(&take_over, &ana, json!({})).await;
    assert_eq!(
        (status, body["agent"].clone()),
        (200, json!({"kind": "human", "name": "Ana"}))
    );
    let (status, body) = server.post(&take_over, &luis, json!({})).await;
    assert_eq!(
        (status, body["code"].clone()),
        (409, json!("already_taken_over")),
        "{body}"
    );
    let (status, _) = server.post(&take_over, &ana, json!({})).await;
    assert_eq!(status, 200, "taking over again is harmless");

    // Presence at once; the announcement once it is stored.
    let now = presence(&mut visitor).await;
    assert_eq!(now["agent"], json!({"kind": "human", "name": "Ana"}));
    let (joined, _) = frames_until(&mut visitor, "message").await;
    assert_eq!(joined["message"]["role"], "system");
    assert_eq!(joined["message"]["content"], "Ana joined the conversation");

    // The visitor writes; only Ana answers, in her own name.
    say(&mut visitor, "is anyone there?").await;
    let (seen, _) = frames_until(&mut console, "message").await;
    let seen = if seen["message"]["role"] == "system" {
        frames_until(&mut console, "message").await.0
    } else {
        seen
    };
    assert_eq!(seen["message"]["content"], "is anyone there?");
    send(&mut console, json!({"type": "typing"})).await;
    assert_eq!(
        frames_until(&mut visitor, "typing").await.0["type"],
        "typing"
    );
    send(
        &mut console,
        json!({"type": "message", "content": "Sí, soy Ana", "client_msg_id": "c1"}),
    )
    .await;
    frames_until(&mut console, "ack").await;
    let (answer, before) = frames_until(&mut visitor, "message").await;
    assert_eq!(answer["message"]["role"], "assistant");
    assert_eq!(answer["message"]["author"], "Ana");
    assert_eq!(answer["message"]["content"], "Sí, soy Ana");
    assert!(
        before.iter().all(|frame| frame["type"] != "chunk"),
        "the AI stayed silent: {before:?}"
    );

    // Handed back: the AI answers the next message.
    let hand_back = format!("/console/api/conversations/{session}/handback");
    let (status, _) = server.post(&hand_back, &luis, json!({})).await;
    assert_eq!(status, 200);
    let (status, body) = server.post(&hand_back, &ana, json!({})).await;
    assert_eq!(
        (status, body["code"].clone()),
        (409, json!("not_taken_over"))
    );
    assert_eq!(presence(&mut visitor).await["agent"], json!({"kind": "ai"}));
    let (back, _) = frames_until(&mut visitor, "message").await;
    assert_eq!(
        back["message"]["content"],
        "Luis handed the conversation back to the assistant"
    );
    say(&mut visitor, "gracias").await;
    let (done, _) = frames_until(&mut visitor, "done").await;
    assert_eq!(done["content"], "You said: gracias");

    let contents: Vec<String> = server
        .history(&session)
        .await
        .iter()
        .map(|m| {
            format!(
                "{} {}",
                m["role"].as_str().unwrap(),
                m["content"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        contents,
        vec![
            "system Ana joined the conversation",
            "user is anyone there?",
            "assistant Sí, soy Ana",
            "system Luis handed the conversation back to the assistant",
            "user gracias",
            "assistant You said: gracias",
        ]
    );
    // The console leaving is seen too.
    drop(console);
    assert_eq!(presence(&mut visitor).await["staff"], json!([]));
    server.stop().await;
}

#[tokio::test]
async fn the_feed_carries_its_own_tenants_conversations_messages_and_handoff_requests() {
    let server = console_server().await;
    let (_, acme) = make_staff(&server, "acme", "Ana").await;
    let acme = acme["key"].as_str().unwrap().to_owned();
    let (_, globex) = make_staff(&server, "globex", "Gus").await;
    let globex = globex["key"].as_str().unwrap().to_owned();
    let feed_of = |key: String| {
        let server = &server;
        async move {
            let (_, ticket) = server.post("/console/api/feed", &key, json!({})).await;
            tokio_tungstenite::connect_async(ticket["websocket_url"].as_str().unwrap())
                .await
                .unwrap()
                .0
        }
    };
    let mut acme_feed = feed_of(acme.clone()).await;
    let mut globex_feed = feed_of(globex.clone()).await;

    let (session, _) = server.create_session().await;
    let created = next_any_frame(&mut acme_feed).await;
    assert_eq!(created["change"], "created", "{created}");
    assert_eq!(created["conversation"]["session_id"], session.as_str());

    // A clear request for a person flags the conversation.
    let (status, _) = server
        .post(
            &format!("/chat/{session}/messages"),
            KEY,
            json!({"role": "user", "content": "Quiero hablar con una persona, por favor"}),
        )
        .await;
    assert_eq!(status, 201);
    let mut changes = Vec::new();
    while !changes.contains(&"handoff_requested".to_owned()) {
        let frame = next_any_frame(&mut acme_feed).await;
        changes.push(frame["change"].as_str().unwrap().to_owned());
        if frame["change"] == "handoff_requested" {
            assert_eq!(frame["conversation"]["handoff"]["requested_by"], "visitor");
        }
    }
    assert_eq!(changes[0], "message", "{changes:?}");
    let handoffs = server.acme_events(&["handoff.requested"]).await;
    assert_eq!(handoffs.len(), 1);
    let (_, listed) = server.get("/console/api/conversations", Some(&acme)).await;
    let row = listed["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["session_id"] == session.as_str())
        .cloned()
        .unwrap();
    assert_eq!(row["handoff"]["requested_by"], "visitor", "{row}");

    // Globex's feed saw none of that: its first frame is its own conversation.
    let (_, own) = server
        .post(
            "/chat/conversation",
            OTHER_KEY,
            json!({"title": "globex's own"}),
        )
        .await;
    let first = next_any_frame(&mut globex_feed).await;
    assert_eq!(first["conversation"]["session_id"], own["id"], "{first}");
    let (_, listed) = server
        .get("/console/api/conversations", Some(&globex))
        .await;
    assert!(!listed.to_string().contains(&session), "{listed}");

    // A bad feed ticket is refused.
    let url = server
        .url("/console/ws?ticket=forged.ticket")
        .replacen("http", "ws", 1);
    let refused = tokio_tungstenite::connect_async(url).await.unwrap_err();
    crate::support::sockets::assert_http_status(refused, 401);
    server.stop().await;
}
