//! Webhook delivery, end to end: real receivers on loopback, signatures
//! checked from the specification, the event schemas, retries, dead letters
//! and replays, `410 Gone`, a slow endpoint beside a fast one, delivery
//! across a restart, secret rotation, the Slack format and the SSRF guard.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde_json::{Value, json};
use tertulia::config::Config;
use tertulia_actors::config::WebhookEndpointConfig;
use tertulia_actors::model::TenantSettings;
use tertulia_actors::model::{EVENT_TYPES, WebhookFormat};

use crate::support::receiver::{Received, Receiver, assert_matches_schema, schema, signed_with};
use crate::support::server::*;

const ADMIN: &str = "adm_webhooks";
const FAILING_KEY: &str = "tk_test_failing";
const CONFIG_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The test config with an admin token and retries in milliseconds.
fn webhook_config() -> Config {
    let mut config = config();
    config.auth.admin_token = ADMIN.into();
    config.webhooks.retry_schedule = ["30ms", "60ms", "120ms"].map(String::from).to_vec();
    config.webhooks.timeout_ms = 5_000;
    config
}

async fn admin(server: &TestServer, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = server
        .http
        .request(method.parse().unwrap(), server.url(path))
        .bearer_auth(ADMIN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Makes an endpoint of acme's; returns it (with its secret).
async fn endpoint(server: &TestServer, body: Value) -> Value {
    let (status, created) = admin(server, "POST", "/admin/tenants/acme/webhooks", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    created
}

/// A receiver, a server, and an endpoint of acme's sending there (`body`
/// without the URL); the endpoint's URL path is `path`.
async fn receiving(path: &str, mut body: Value) -> (Receiver, TestServer, Value) {
    let receiver = Receiver::start().await;
    let server = TestServer::start(webhook_config()).await;
    body["url"] = json!(receiver.url(path));
    let created = endpoint(&server, body).await;
    (receiver, server, created)
}

/// POSTs to one of acme's endpoint routes, with no body.
async fn admin_post(server: &TestServer, endpoint_id: &str, suffix: &str) -> (u16, Value) {
    let path = format!("/admin/tenants/acme/webhooks/{endpoint_id}{suffix}");
    admin(server, "POST", &path, None).await
}

async fn deliveries(server: &TestServer, endpoint: &Value, query: &str) -> Vec<Value> {
    let id = endpoint["endpoint_id"].as_str().unwrap();
    let (status, body) = admin(
        server,
        "GET",
        &format!("/admin/tenants/acme/webhooks/{id}/deliveries{query}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["deliveries"].as_array().unwrap().clone()
}

async fn conversation(server: &TestServer) -> String {
    let (status, body) = server
        .post("/chat/sessions", KEY, json!({"context": {"plan": "pro"}}))
        .await;
    assert_eq!(status, 200, "{body}");
    body["session_id"].as_str().unwrap().to_owned()
}

async fn post_message(
    server: &TestServer,
    conversation: &str,
    content: &str,
    respond: bool,
) -> Value {
    let (status, body) = server
        .post(
            &format!("/chat/{conversation}/messages"),
            KEY,
            json!({"role": "user", "content": content, "respond": respond}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body
}

fn of_type<'a>(received: &'a [Received], kind: &str) -> Vec<&'a Received> {
    received
        .iter()
        .filter(|request| request.delivered() && request.json()["type"] == kind)
        .collect()
}

#[tokio::test]
async fn every_event_type_is_delivered_signed_and_as_its_schema_says() {
    let receiver = Receiver::start().await;
    let mut config = webhook_config();
    // A tenant whose model cannot be reached, for `agent.failed`, with an
    // endpoint from the config file.
    let mut failing = TenantSettings {
        name: "Failing".into(),
        api_keys: vec![FAILING_KEY.into()],
        agent: "openai".into(),
        ..TenantSettings::default()
    };
    failing.openai.base_url = "http://127.0.0.1:1/v1".into();
    failing.openai.api_key = "sk-test-unreachable".into();
    failing.openai.max_retries = 0;
    config.tenants.insert("failing".into(), failing);
    config.webhooks.endpoints.push(WebhookEndpointConfig {
        name: "alerts".into(),
        tenant: "failing".into(),
        url: receiver.url("/failing"),
        secret: CONFIG_SECRET.into(),
        events: vec!["agent.*".into()],
        ..WebhookEndpointConfig::default()
    });
    let server = TestServer::start(config).await;
    let created = endpoint(
        &server,
        json!({
            "url": receiver.url("/acme"),
            "header_name": "X-N8N-Auth",
            "header_value": "let-me-in",
            "description": "everything",
        }),
    )
    .await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{created}");
    assert_eq!(created["events"], json!([]));

    // conversation.created, message.created (user and assistant), conversation.updated
    let id = conversation(&server).await;
    post_message(&server, &id, "hola", true).await;
    let (status, body) = server
        .http
        .patch(server.url(&format!("/chat/{id}")))
        .header("X-API-Key", KEY)
        .json(&json!({"title": "Fuga en la cocina", "version": 1}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(status, 200, "{:?}", body.text().await);
    // handoff.requested, once: an open request is not repeated.
    let (status, first) = server
        .post(
            &format!("/chat/{id}/handoff"),
            KEY,
            json!({"reason": "quiere hablar con un técnico"}),
        )
        .await;
    assert_eq!(
        (status, first["new"].clone()),
        (201, json!(true)),
        "{first}"
    );
    let (status, again) = server
        .post(&format!("/chat/{id}/handoff"), KEY, json!({}))
        .await;
    assert_eq!(
        (status, again["new"].clone()),
        (200, json!(false)),
        "{again}"
    );
    // lead.captured (and a webchat conversation's events)
    let visitor = "visitor-webhooks-0123456789";
    let (status, _) = server
        .post(
            "/api/webchat/consent",
            KEY,
            json!({"session_id": visitor, "granted": true, "text_version": "v1"}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, reply) = server
        .post(
            "/api/webchat/messages",
            KEY,
            json!({"session_id": visitor, "author": "Ana", "content": "soy Ana, ana@example.com"}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    // handoff.taken: a person takes the conversation over from the console.
    let staff = make_key(&server, ADMIN, "acme", "staff").await;
    let taken = server
        .http
        .post(server.url(&format!("/console/api/conversations/{id}/takeover")))
        .header("X-API-Key", &staff)
        .send()
        .await
        .unwrap();
    assert!(taken.status().is_success(), "{:?}", taken.text().await);
    // contact.erased: a conversation is erased once its own events have gone out.
    let gone = conversation(&server).await;
    receiver
        .wait_for("the erased conversation's creation", |received| {
            of_type(received, "conversation.created")
                .iter()
                .any(|request| request.json()["data"]["conversation_id"] == gone.as_str())
        })
        .await;
    let (status, erased) = admin(
        &server,
        "POST",
        "/admin/tenants/acme/erase",
        Some(json!({"conversation_id": gone})),
    )
    .await;
    assert_eq!(status, 200, "{erased}");
    // conversation.deleted
    let response = server
        .http
        .delete(server.url(&format!("/chat/sessions/{id}")))
        .header("X-API-Key", KEY)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    // agent.failed, on the other tenant's endpoint
    let (status, failing_session) = server.post("/chat/sessions", FAILING_KEY, json!({})).await;
    assert_eq!(status, 200, "{failing_session}");
    let failing_id = failing_session["session_id"].as_str().unwrap();
    let (status, _) = server
        .post(
            &format!("/chat/{failing_id}/messages"),
            FAILING_KEY,
            json!({"role": "user", "content": "¿hay alguien?"}),
        )
        .await;
    assert_eq!(status, 201);

    // conversation.analyzed needs a model: tests/it/insights.rs checks it
    // against its schema.
    let acme_types: Vec<&str> = EVENT_TYPES
        .iter()
        .copied()
        .filter(|kind| !["agent.failed", "conversation.analyzed"].contains(kind))
        .collect();
    let received = receiver
        .wait_for("every event type", |received| {
            acme_types.iter().all(|kind| {
                of_type(received, kind)
                    .iter()
                    .any(|request| request.path == "/acme")
            }) && !of_type(received, "agent.failed").is_empty()
        })
        .await;
    for request in received.iter().filter(|request| request.delivered()) {
        let payload = request.json();
        assert_matches_schema(&payload);
        assert_eq!(request.header("webhook-id"), payload["id"], "{payload}");
        assert_eq!(request.header("content-type"), "application/json");
        if request.path == "/acme" {
            assert!(signed_with(&secret, request), "{payload}");
            assert!(!signed_with(CONFIG_SECRET, request));
            assert_eq!(request.header("x-n8n-auth"), "let-me-in");
            assert_eq!(payload["tenant"], "acme");
        } else {
            assert!(signed_with(CONFIG_SECRET, request), "{payload}");
            assert_eq!(payload["type"], "agent.failed", "the filter holds");
            assert_eq!(payload["tenant"], "failing");
        }
    }
    let failed = &of_type(&received, "agent.failed")[0].json()["data"];
    assert_eq!(failed["conversation_id"], failing_id);
    assert!(
        !failed["error"].as_str().unwrap().contains("sk-test"),
        "{failed}"
    );
    assert_eq!(of_type(&received, "handoff.requested").len(), 1);
    let lead = &of_type(&received, "lead.captured")[0].json()["data"];
    assert_eq!(
        (lead["email"].clone(), lead["external_id"].clone()),
        (json!("ana@example.com"), json!(visitor))
    );
    let messages: Vec<Value> = of_type(&received, "message.created")
        .iter()
        .map(|request| request.json()["data"].clone())
        .filter(|data| data["conversation_id"] == id)
        .collect();
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    // The last is the take-over's announcement.
    assert_eq!(roles, ["user", "assistant", "system"], "in order");
    assert_eq!(messages[0]["content"], "hola");
    assert_eq!(messages[0]["context"]["plan"], "pro");
    server.stop().await;
}

#[tokio::test]
async fn failed_attempts_are_retried_in_order_with_the_same_webhook_id() {
    let (receiver, server, created) = receiving("/", json!({"events": ["message.created"]})).await;
    receiver.fail_next(2);
    let id = conversation(&server).await;
    for text in ["uno", "dos", "tres"] {
        post_message(&server, &id, text, false).await;
    }
    let received = receiver
        .wait_for("three messages delivered", |received| {
            received.iter().filter(|r| r.delivered()).count() == 3
        })
        .await;
    // The first event failed twice, then arrived: three attempts, one id;
    // the others waited behind it (one conversation, one at a time).
    assert_eq!(received.len(), 5);
    let ids: Vec<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    assert!(ids[0] == ids[1] && ids[1] == ids[2], "{ids:?}");
    let contents: Vec<Value> = received
        .iter()
        .filter(|r| r.delivered())
        .map(|r| r.json()["data"]["content"].clone())
        .collect();
    assert_eq!(contents, [json!("uno"), json!("dos"), json!("tres")]);
    eventually("the attempts are recorded", || async {
        let listed = deliveries(&server, &created, "?status=delivered").await;
        listed.len() == 3 && listed.iter().any(|d| d["attempts"] == 3)
    })
    .await;
    let listed = deliveries(&server, &created, "").await;
    let first = listed.iter().find(|d| d["attempts"] == 3).unwrap();
    assert_eq!(first["last_status_code"], 200);
    assert_eq!(first["event_id"], ids[0]);
    server.stop().await;
}

#[tokio::test]
async fn after_the_last_attempt_a_delivery_is_dead_kept_and_replayable() {
    let (receiver, server, created) =
        receiving("/", json!({"events": ["conversation.created"]})).await;
    receiver.answer(503);
    conversation(&server).await;
    // The first attempt and three retries.
    receiver.wait_for("four attempts", |r| r.len() == 4).await;
    eventually("the delivery is dead", || async {
        deliveries(&server, &created, "?status=dead").await.len() == 1
    })
    .await;
    let dead = deliveries(&server, &created, "?status=dead")
        .await
        .remove(0);
    assert_eq!(dead["attempts"], 4);
    assert_eq!(dead["last_status_code"], 503);
    assert!(
        dead["last_error"].as_str().unwrap().contains("503"),
        "{dead}"
    );

    receiver.answer(200);
    let endpoint_id = created["endpoint_id"].as_str().unwrap();
    let (status, body) = admin_post(&server, endpoint_id, "/replay-dead").await;
    assert_eq!(
        (status, body["replayed"].clone()),
        (202, json!(1)),
        "{body}"
    );
    let received = receiver
        .wait_for("the replay", |r| r.iter().any(Received::delivered))
        .await;
    assert_eq!(received[4].header("webhook-id"), dead["event_id"]);
    eventually("the replayed delivery is delivered", || async {
        deliveries(&server, &created, "?status=delivered")
            .await
            .len()
            == 1
    })
    .await;

    // One delivery, by id: sent again, with the same id.
    let delivery_id = dead["delivery_id"].as_str().unwrap();
    let (status, body) = admin_post(
        &server,
        endpoint_id,
        &format!("/deliveries/{delivery_id}/replay"),
    )
    .await;
    assert_eq!(
        (status, body["replayed"].clone()),
        (202, json!(1)),
        "{body}"
    );
    let received = receiver
        .wait_for("the second replay", |r| {
            r.iter().filter(|r| r.delivered()).count() == 2
        })
        .await;
    assert_eq!(received[5].header("webhook-id"), dead["event_id"]);
    let (status, body) = admin_post(&server, endpoint_id, "/deliveries/dlv_nope/replay").await;
    assert_eq!(
        (status, body["code"].clone()),
        (404, json!("delivery_not_found"))
    );
    server.stop().await;
}

#[tokio::test]
async fn gone_disables_the_endpoint_until_it_is_enabled_again() {
    let gone = Receiver::start().await;
    let healthy = Receiver::start().await;
    let server = TestServer::start(webhook_config()).await;
    let filter = json!(["conversation.created"]);
    let disabled = endpoint(&server, json!({"url": gone.url("/"), "events": filter})).await;
    endpoint(&server, json!({"url": healthy.url("/"), "events": filter})).await;
    gone.answer(410);
    let first = conversation(&server).await;
    gone.wait_for("the 410", |r| r.len() == 1).await;
    let path = format!(
        "/admin/tenants/acme/webhooks/{}",
        disabled["endpoint_id"].as_str().unwrap()
    );
    eventually("the endpoint is disabled", || async {
        admin(&server, "GET", &path, None).await.1["enabled"] == false
    })
    .await;
    let (_, view) = admin(&server, "GET", &path, None).await;
    assert!(
        view["disabled_reason"].as_str().unwrap().contains("410"),
        "{view}"
    );
    assert_eq!(view["secret"], "[set]", "never shown again");

    // A disabled endpoint gets nothing new: the healthy one is the witness.
    let second = conversation(&server).await;
    healthy
        .wait_for("both conversations", |r| r.len() == 2)
        .await;
    assert_eq!(gone.received().len(), 1);

    // Enabled again: the delivery it refused goes out; the event made while
    // it was disabled was never its to deliver.
    gone.answer(200);
    let (status, view) = admin(&server, "PATCH", &path, Some(json!({"enabled": true}))).await;
    assert_eq!(status, 200, "{view}");
    assert!(view.get("disabled_reason").is_none(), "{view}");
    let received = gone
        .wait_for("the held delivery", |r| r.iter().any(Received::delivered))
        .await;
    assert_eq!(received[1].json()["data"]["conversation_id"], first);
    assert!(
        received
            .iter()
            .all(|r| r.json()["data"]["conversation_id"] != second)
    );
    server.stop().await;
}

#[tokio::test]
async fn a_slow_endpoint_does_not_delay_another() {
    let slow = Receiver::start().await;
    let fast = Receiver::start().await;
    let server = TestServer::start(webhook_config()).await;
    let filter = json!(["message.created"]);
    endpoint(&server, json!({"url": slow.url("/"), "events": filter})).await;
    endpoint(&server, json!({"url": fast.url("/"), "events": filter})).await;
    slow.hold();
    for _ in 0..3 {
        let id = conversation(&server).await;
        for text in ["a", "b", "c"] {
            post_message(&server, &id, text, false).await;
        }
    }
    fast.wait_for("all nine on the fast endpoint", |r| r.len() == 9)
        .await;
    assert!(slow.received().is_empty(), "the slow one is still holding");
    slow.release();
    let received = slow
        .wait_for("all nine on the slow endpoint", |r| r.len() == 9)
        .await;
    // Per conversation, still in order.
    let mut by_conversation: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for request in &received {
        let data = request.json()["data"].clone();
        by_conversation
            .entry(data["conversation_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(data["content"].as_str().unwrap().to_owned());
    }
    for contents in by_conversation.values() {
        assert_eq!(contents, &["a", "b", "c"]);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_receiver_down_across_a_restart_gets_every_event_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start().await;
    receiver.stop().await;
    let mut config = webhook_config();
    config.storage = durable_config(dir.path()).storage;
    config.webhooks.retry_schedule = vec!["50ms".into(); 400];
    config.webhooks.endpoints.push(WebhookEndpointConfig {
        name: "crm".into(),
        tenant: "acme".into(),
        url: receiver.url("/crm"),
        secret: CONFIG_SECRET.into(),
        events: vec!["message.created".into()],
        ..WebhookEndpointConfig::default()
    });
    let server = TestServer::start(config.clone()).await;
    let id = conversation(&server).await;
    let mut sent = Vec::new();
    for n in 0..5 {
        let ack = post_message(&server, &id, &format!("mensaje {n}"), false).await;
        sent.push(ack["id"].as_str().unwrap().to_owned());
    }
    server.stop().await;

    receiver.restart().await;
    let server = TestServer::start(config).await;
    let received = receiver
        .wait_for("every message after the restart", |received| {
            let ids: BTreeSet<String> = received
                .iter()
                .filter(|r| r.delivered())
                .map(|r| r.json()["data"]["message_id"].as_str().unwrap().to_owned())
                .collect();
            sent.iter().all(|id| ids.contains(id))
        })
        .await;
    // Duplicates, if any, carry the same webhook-id; and the order held.
    let mut ids_of: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut order = Vec::new();
    for request in received.iter().filter(|r| r.delivered()) {
        assert!(signed_with(CONFIG_SECRET, request));
        let message = request.json()["data"]["message_id"]
            .as_str()
            .unwrap()
            .to_owned();
        ids_of
            .entry(message.clone())
            .or_default()
            .insert(request.header("webhook-id").to_owned());
        if !order.contains(&message) {
            order.push(message);
        }
    }
    assert!(ids_of.values().all(|ids| ids.len() == 1), "{ids_of:?}");
    assert_eq!(order, sent);
    server.stop().await;
}

#[tokio::test]
async fn test_events_are_signed_and_a_rotated_secret_overlaps_the_old_one() {
    let (receiver, server, created) = receiving("/hook", json!({})).await;
    let old = created["secret"].as_str().unwrap().to_owned();
    let id = created["endpoint_id"].as_str().unwrap();
    let (status, delivery) = admin_post(&server, id, "/test").await;
    assert_eq!(status, 202, "{delivery}");
    assert_eq!(delivery["event_type"], "webhook.test");
    let received = receiver.wait_for("the test event", |r| r.len() == 1).await;
    assert_matches_schema(&received[0].json());
    assert!(signed_with(&old, &received[0]));

    let (status, rotated) = admin_post(&server, id, "/rotate-secret").await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(
        rotated["previous_secret_expires_at"].is_string(),
        "{rotated}"
    );
    assert!(rotated.get("previous_secret").is_none(), "{rotated}");
    admin_post(&server, id, "/test").await;
    let received = receiver
        .wait_for("the second test event", |r| r.len() == 2)
        .await;
    let signatures: Vec<&str> = received[1].header("webhook-signature").split(' ').collect();
    assert_eq!(signatures.len(), 2, "both during the overlap");
    assert!(signed_with(&new, &received[1]) && signed_with(&old, &received[1]));
    server.stop().await;
}

#[tokio::test]
async fn the_slack_format_is_an_incoming_webhook_message() {
    let slack = json!({"format": "slack", "events": ["lead.captured", "handoff.requested"]});
    let (receiver, server, _) = receiving("/services/T000/B000/XXXX", slack).await;
    let visitor = "visitor-slack-0123456789";
    server
        .post(
            "/api/webchat/consent",
            KEY,
            json!({"session_id": visitor, "granted": true, "text_version": "v1"}),
        )
        .await;
    let (status, reply) = server
        .post(
            "/api/webchat/messages",
            KEY,
            json!({"session_id": visitor, "author": "Ana <b>", "content": "Me llamo Ana, ana@example.com"}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let conversation = reply["metadata"]["conversation_id"].as_str().unwrap();
    server
        .post(
            &format!("/chat/{conversation}/handoff"),
            KEY,
            json!({"reason": "cliente molesto"}),
        )
        .await;
    let received = receiver
        .wait_for("two notifications", |r| r.len() == 2)
        .await;
    // Events no endpoint wants are not stored for delivery at all.
    assert!(server.acme_events(&["message.created"]).await.is_empty());
    let texts: Vec<Value> = received.iter().map(Received::json).collect();
    assert_eq!(
        texts,
        [
            json!({"text": format!("New lead: Ana (ana@example.com) in conversation {visitor}")}),
            json!({"text": format!("Handoff requested in conversation {visitor}: cliente molesto")}),
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let redirecting = Receiver::start().await;
    let elsewhere = Receiver::start().await;
    redirecting.redirect_to(Some(elsewhere.url("/stolen")));
    let server = TestServer::start(webhook_config()).await;
    let created = endpoint(
        &server,
        json!({"url": redirecting.url("/"), "events": ["conversation.created"]}),
    )
    .await;
    conversation(&server).await;
    eventually("the redirect is recorded as a failure", || async {
        deliveries(&server, &created, "")
            .await
            .first()
            .is_some_and(|d| d["last_status_code"] == 302)
    })
    .await;
    let delivery = deliveries(&server, &created, "").await.remove(0);
    assert!(
        delivery["last_error"]
            .as_str()
            .unwrap()
            .contains("redirects are not followed"),
        "{delivery}"
    );
    assert!(elsewhere.received().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn private_addresses_are_refused_unless_the_operator_allows_them() {
    let mut config = webhook_config();
    config.egress.allow.clear();
    let server = TestServer::start(config.clone()).await;
    for url in [
        "http://127.0.0.1:5678/webhook",
        "http://localhost:5678/webhook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.7/hook",
        "http://[::1]:8080/",
    ] {
        let (status, body) = admin(
            &server,
            "POST",
            "/admin/tenants/acme/webhooks",
            Some(json!({"url": url})),
        )
        .await;
        assert_eq!(
            (status, body["code"].clone()),
            (422, json!("url_not_allowed")),
            "{url}: {body}"
        );
    }
    // Tools and agents too.
    for settings in [
        json!({"id": "probe", "agent": "webhook", "webhook_agent": {"url": "http://127.0.0.1:9/agent"}}),
        json!({"id": "probe", "tools": [{"name": "estimate", "url": "http://192.168.1.20/estimate"}]}),
    ] {
        let (status, body) = admin(&server, "POST", "/admin/tenants", Some(settings)).await;
        assert_eq!(
            (status, body["code"].clone()),
            (422, json!("url_not_allowed")),
            "{body}"
        );
    }
    let (status, body) = admin(&server, "GET", "/admin/tenants/acme/webhooks", None).await;
    assert_eq!((status, body["count"].clone()), (200, json!(0)), "{body}");
    server.stop().await;

    // A config file that points an agent at a private address does not start.
    config.tenants.get_mut("acme").unwrap().openai.base_url = "http://10.1.2.3/v1".into();
    let error = tertulia::start(config, Default::default())
        .await
        .err()
        .expect("refused");
    assert!(error.to_string().contains("egress.allow"), "{error}");
}

#[tokio::test]
async fn bad_endpoint_input_is_refused_with_the_field_named() {
    let server = TestServer::start(webhook_config()).await;
    let cases = [
        (json!({}), 400, "`url` is required"),
        (json!({"url": "ftp://example.com/"}), 400, "http(s)"),
        (
            json!({"url": "https://example.com/", "events": ["message.sent"]}),
            400,
            "`events`",
        ),
        (
            json!({"url": "https://example.com/", "secret": "hunter2"}),
            400,
            "`secret`",
        ),
        (
            json!({"url": "https://example.com/", "format": "xml"}),
            400,
            "`json` or `slack`",
        ),
        (
            json!({"url": "https://example.com/", "colour": "red"}),
            400,
            "colour",
        ),
        (
            json!({"url": "https://example.com/", "header_name": "webhook-id", "header_value": "x"}),
            400,
            "header",
        ),
        (
            json!({"url": format!("https://example.com/{}", "a".repeat(3000))}),
            400,
            "2048",
        ),
    ];
    for (body, status, says) in cases {
        let (got, answer) = admin(
            &server,
            "POST",
            "/admin/tenants/acme/webhooks",
            Some(body.clone()),
        )
        .await;
        assert_eq!(got, status, "{body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(says),
            "{body}: {answer}"
        );
    }
    let response = server
        .http
        .post(server.url("/admin/tenants/acme/webhooks"))
        .bearer_auth(ADMIN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = server
        .http
        .post(server.url("/admin/tenants/acme/webhooks"))
        .bearer_auth(ADMIN)
        .body("x".repeat(100_000))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);

    // Another tenant's endpoint is not found, and nothing was made above.
    let created = endpoint(&server, json!({"url": "https://example.com/hook"})).await;
    let id = created["endpoint_id"].as_str().unwrap();
    for (method, path) in [
        ("GET", format!("/admin/tenants/globex/webhooks/{id}")),
        ("PATCH", format!("/admin/tenants/globex/webhooks/{id}")),
        ("DELETE", format!("/admin/tenants/globex/webhooks/{id}")),
        ("POST", format!("/admin/tenants/globex/webhooks/{id}/test")),
        (
            "GET",
            format!("/admin/tenants/globex/webhooks/{id}/deliveries"),
        ),
    ] {
        let (status, body) = admin(&server, method, &path, Some(json!({}))).await;
        assert_eq!(
            (status, body["code"].clone()),
            (404, json!("webhook_not_found")),
            "{method} {path}"
        );
    }
    let (status, body) = admin(&server, "GET", "/admin/tenants/nobody/webhooks", None).await;
    assert_eq!(
        (status, body["code"].clone()),
        (404, json!("tenant_not_found"))
    );
    let (status, body) = admin(
        &server,
        "GET",
        &format!("/admin/tenants/acme/webhooks/{id}/deliveries?status=lost"),
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = admin(
        &server,
        "PATCH",
        &format!("/admin/tenants/acme/webhooks/{id}"),
        Some(json!({"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})),
    )
    .await;
    assert!(
        status == 400 && body["error"].as_str().unwrap().contains("rotate"),
        "{body}"
    );
    let (_, listed) = admin(&server, "GET", "/admin/tenants/acme/webhooks", None).await;
    assert_eq!(listed["count"], 1);
    assert_eq!(listed["webhooks"][0]["secret"], "[set]");
    let (status, _) = admin(
        &server,
        "DELETE",
        &format!("/admin/tenants/acme/webhooks/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (_, listed) = admin(&server, "GET", "/admin/tenants/acme/webhooks", None).await;
    assert_eq!(listed["count"], 0);
    // The format enum the admin API takes is the one the runtime knows.
    assert_eq!(serde_json::to_value(WebhookFormat::Slack).unwrap(), "slack");
    server.stop().await;
}

#[tokio::test]
async fn the_n8n_loop_answers_through_the_conversation_api_and_reaches_the_browser_live() {
    let receiver = Receiver::start().await;
    let mut config = webhook_config();
    // Replies come from the workflow; tertulia's own agent stays silent.
    config.tenants.get_mut("acme").unwrap().agent = "external".into();
    let server = TestServer::start(config).await;
    endpoint(
        &server,
        json!({
            "url": receiver.url("/webhook/tertulia-events"),
            "events": ["message.created"],
            "header_name": "X-N8N-Auth",
            "header_value": "from-tertulia",
        }),
    )
    .await;
    let (conversation, websocket_url) = server.create_session().await;
    let mut browser = server.connect(&websocket_url).await;
    say(&mut browser, "Tengo una fuga en el baño").await;
    let received = receiver
        .wait_for("the visitor's message", |r| r.len() == 1)
        .await;
    let event = received[0].json();

    // What examples/n8n/answer-message-created.json does with it: the IF
    // node passes a visitor's message, the HTTP Request node answers.
    assert_eq!(
        (event["type"].clone(), event["data"]["role"].clone()),
        (json!("message.created"), json!("user"))
    );
    let data = &event["data"];
    let answer = json!({
        "role": "assistant",
        "author": "Soporte",
        "content": format!("Gracias. Un técnico revisa tu consulta: \"{}\"", data["content"].as_str().unwrap()),
        "client_msg_id": format!("n8n-{}", event["id"].as_str().unwrap()),
    });
    let path = format!(
        "/chat/{}/messages",
        data["conversation_id"].as_str().unwrap()
    );
    let (status, posted) = server.post(&path, KEY, answer.clone()).await;
    assert_eq!(status, 201, "{posted}");
    let (frame, _) = frames_until(&mut browser, "message").await;
    assert_eq!(frame["message"]["role"], "assistant");
    assert_eq!(frame["message"]["author"], "Soporte");
    assert_eq!(frame["message"]["content"], answer["content"]);

    // A duplicate delivery makes the workflow answer again: the same
    // client_msg_id makes it the same message.
    let (_, again) = server.post(&path, KEY, answer).await;
    assert_eq!(again["id"], posted["id"]);
    let history = server.history(&conversation).await;
    let roles: Vec<&str> = history
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant"], "{history:?}");
    // The answer's own event reaches the workflow too; its IF node stops there.
    let received = receiver
        .wait_for("the answer's event", |r| r.len() == 2)
        .await;
    assert_eq!(received[1].json()["data"]["role"], "assistant");
    server.stop().await;
}

#[test]
fn the_n8n_example_is_a_workflow_using_only_fields_the_event_has() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/n8n/answer-message-created.json");
    let text = std::fs::read_to_string(path).unwrap();
    let workflow: Value = serde_json::from_str(&text).unwrap();
    let names: BTreeSet<&str> = workflow["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| node["name"].as_str().unwrap())
        .collect();
    for (from, outputs) in workflow["connections"].as_object().unwrap() {
        assert!(names.contains(from.as_str()), "{from}");
        for link in outputs["main"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|o| o.as_array().unwrap())
        {
            assert!(names.contains(link["node"].as_str().unwrap()), "{link}");
        }
    }
    let schema = schema("message.created");
    let field = |rest: &str| -> String {
        rest.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut used = 0;
    for piece in text.split("$json.body.").skip(1) {
        used += 1;
        match piece.strip_prefix("data.") {
            Some(rest) => assert!(
                schema["properties"]["data"]["properties"]
                    .get(field(rest))
                    .is_some(),
                "data.{}",
                field(rest)
            ),
            None => assert!(
                schema["properties"].get(field(piece)).is_some(),
                "{}",
                field(piece)
            ),
        }
    }
    assert!(used >= 5, "the workflow reads the event");
    // n8n 2.x blocks `$env` in nodes by default (N8N_BLOCK_ENV_ACCESS_IN_NODE):
    // the key must come from a credential, never from the environment.
    assert!(!text.contains("$env"), "the workflow reads no $env");
    assert!(!text.contains("X-API-Key"), "no key typed into a node");
    let answer = workflow["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|node| node["type"] == "n8n-nodes-base.httpRequest")
        .unwrap();
    assert_eq!(answer["parameters"]["genericAuthType"], "httpHeaderAuth");
    assert_eq!(
        answer["credentials"]["httpHeaderAuth"]["name"],
        "tertulia API key"
    );
}
