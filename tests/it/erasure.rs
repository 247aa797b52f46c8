//! Erasure (`POST /admin/tenants/{t}/erase`): a webchat visitor who gave
//! their name, email and phone is forgotten, then SurrealDB's own export of
//! the whole database is scanned for every piece of them; another visitor
//! and the statistics are untouched; bad requests get clear errors.

use serde_json::{Value, json};

use crate::support::receiver::Receiver;
use crate::support::server::*;

const ADMIN: &str = "adm_erasure";
const VISITOR: &str = "ximena-0123456789abcdef";
const OTHER_VISITOR: &str = "bruno-0123456789abcdef";

async fn admin(server: &TestServer, path: &str, body: Value) -> (u16, Value) {
    admin_post(server, ADMIN, path, body).await
}

/// A visitor who consents and says who they are; returns their conversation.
async fn visit(server: &TestServer, session_id: &str, author: &str, text: &str) -> String {
    let consent = json!({"session_id": session_id, "granted": true, "text_version": "v1"});
    let (status, body) = server.post("/api/webchat/consent", KEY, consent).await;
    assert_eq!(status, 201, "{body}");
    let message =
        json!({"session_id": session_id, "author": author, "content": text, "locale": "es-ES"});
    let (status, reply) = server.post("/api/webchat/messages", KEY, message).await;
    assert_eq!(status, 200, "{reply}");
    reply["metadata"]["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn an_erased_visitor_is_nowhere_in_the_database_export() {
    let receiver = Receiver::start().await;
    let mut config = config();
    config.auth.admin_token = ADMIN.into();
    let server = TestServer::start(config).await;
    // Every event goes to a receiver, so events and deliveries hold payloads too.
    let endpoint = json!({"url": receiver.url("/hook"), "events": ["*"]});
    let (status, body) = admin(&server, "/admin/tenants/acme/webhooks", endpoint).await;
    assert_eq!(status, 201, "{body}");

    let secret_text = "Tengo una fuga debajo del fregadero azul";
    let said = format!(
        "Me llamo Ximena Quintanilla, mi correo es Ximena.Q@example.com y mi teléfono es +34 612 345 678. {secret_text}"
    );
    let erased = visit(&server, VISITOR, "Ximena Quintanilla", &said).await;
    let kept = visit(
        &server,
        OTHER_VISITOR,
        "Bruno",
        "Soy Bruno, bruno@example.com",
    )
    .await;
    let (_, contact) = server
        .get(&format!("/chat/{erased}/contact"), Some(KEY))
        .await;
    assert_eq!(contact["email"], "Ximena.Q@example.com", "{contact}");
    // A socket open on the conversation is closed when it is erased.
    let (status, ticket) = server
        .post(&format!("/chat/sessions/{erased}/ticket"), KEY, json!({}))
        .await;
    assert_eq!(status, 200, "{ticket}");
    let mut ws = server
        .connect(ticket["websocket_url"].as_str().unwrap())
        .await;
    receiver
        .wait_for("the events delivered", |received| received.len() >= 6)
        .await;

    let (status, done) = admin(
        &server,
        "/admin/tenants/acme/erase",
        json!({"email": " XIMENA.Q@example.com "}),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["conversation_ids"], json!([erased]), "{done}");
    assert_eq!(done["erased_by"], "email");
    assert_eq!(close_of(&mut ws).await.0, 4010);

    let export = server.server.runtime.export_database().await.unwrap();
    for piece in [
        "Ximena",
        "Quintanilla",
        "ximena.q@example.com",
        "Ximena.Q@example.com",
        "612 345 678",
        "+34612345678",
        "612345678",
        secret_text,
        VISITOR,
    ] {
        assert!(!export.contains(piece), "`{piece}` is still in the export");
    }
    assert!(
        export.contains("bruno@example.com"),
        "the other visitor is kept"
    );
    assert!(export.contains(&kept));

    // What statistics count stays: both visitors' messages and both leads.
    let (_, summary) = server.get("/analytics/summary", Some(KEY)).await;
    assert_eq!(
        summary["total"]["messages"]["user"]["webchat"], 2,
        "{summary}"
    );
    assert_eq!(summary["total"]["leads_captured"], 2, "{summary}");
    // The erasure is an event that names no one.
    let events = server.acme_events(&["contact.erased"]).await;
    assert_eq!(events.len(), 1);
    let data = serde_json::to_string(&events[0].data).unwrap();
    assert!(data.contains(&erased) && !data.contains("ximena"), "{data}");
    // The visitor's webchat id no longer finds anything; the log keeps its shape.
    let (status, _) = server
        .get(&format!("/api/webchat/history/{VISITOR}"), Some(KEY))
        .await;
    assert_eq!(status, 404);
    let history = server.history(&erased).await;
    assert_eq!(history.len(), 2);
    assert!(
        history.iter().all(|message| message["content"] == ""),
        "{history:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_erasure_requests_get_clear_errors_and_erase_nothing() {
    let mut config = config();
    config.auth.admin_token = ADMIN.into();
    let server = TestServer::start(config).await;
    let conversation = visit(&server, VISITOR, "Ximena", "ximena@example.com").await;
    for (body, status, code) in [
        (json!({}), 400, "bad_request"),
        (
            json!({"email": "a@b.c", "phone": "+34600000000"}),
            400,
            "bad_request",
        ),
        (json!({"name": "Ximena"}), 400, "bad_request"),
        (json!({"email": ""}), 400, "bad_request"),
        (json!({"email": "x".repeat(400)}), 400, "bad_request"),
        (json!({"email": 42}), 400, "bad_request"),
        (
            json!({"conversation_id": "not-a-uuid"}),
            404,
            "session_not_found",
        ),
        (
            json!({"conversation_id": uuid_v7()}),
            404,
            "session_not_found",
        ),
        (
            json!({"session_id": "never-seen-0123456789"}),
            404,
            "session_not_found",
        ),
    ] {
        let (got, answer) = admin(&server, "/admin/tenants/acme/erase", body.clone()).await;
        assert_eq!(
            (got, answer["code"].clone()),
            (status, json!(code)),
            "{body}: {answer}"
        );
    }
    // Malformed JSON, another tenant's conversation, no admin token, unknown tenant.
    let response = server
        .http
        .post(server.url("/admin/tenants/acme/erase"))
        .bearer_auth(ADMIN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let (status, body) = admin(
        &server,
        "/admin/tenants/globex/erase",
        json!({"conversation_id": conversation}),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (404, json!("session_not_found"))
    );
    let (status, body) = admin(
        &server,
        "/admin/tenants/nobody/erase",
        json!({"email": "a@b.c"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (404, json!("tenant_not_found")),
        "{body}"
    );
    let response = server
        .http
        .post(server.url("/admin/tenants/acme/erase"))
        .header("X-API-Key", KEY)
        .json(&json!({"conversation_id": conversation}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // An email found nowhere erases nothing, and says so.
    let (status, body) = admin(
        &server,
        "/admin/tenants/acme/erase",
        json!({"email": "nobody@example.com"}),
    )
    .await;
    assert_eq!(
        (status, body["conversation_ids"].clone()),
        (200, json!([])),
        "{body}"
    );
    assert!(server.acme_events(&["contact.erased"]).await.is_empty());
    let history = server.history(&conversation).await;
    assert_eq!(
        history[0]["content"], "ximena@example.com",
        "nothing was erased"
    );
    server.stop().await;
}

/// A conversation id that was never made.
fn uuid_v7() -> String {
    uuid::Uuid::now_v7().to_string()
}
