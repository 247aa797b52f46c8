//! Retention, with days shortened to seconds: delivered deliveries and the
//! events only they needed go; dead deliveries, the events they need and
//! the events kept for ever stay; a tenant's idle conversations are
//! archived and then deleted while a busy one is left alone.

use std::time::Duration;

use serde_json::{Value, json};
use tertulia::config::Config;

use crate::support::receiver::Receiver;
use crate::support::server::*;

const ADMIN: &str = "adm_retention";
/// About 0.9 s, in days.
const A_SECOND: f64 = 1.0 / 86_400.0;

fn retention_config() -> Config {
    let mut config = config();
    config.auth.admin_token = ADMIN.into();
    config.retention.interval = "200ms".into();
    config.retention.batch = 3;
    config.retention.pause = "1ms".into();
    config.webhooks.retry_schedule = vec!["20ms".into()];
    config
}

async fn admin(server: &TestServer, method: &str, path: &str, body: Option<Value>) -> Value {
    let mut request = server
        .http
        .request(method.parse().unwrap(), server.url(path))
        .bearer_auth(ADMIN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    assert!(response.status().is_success(), "{path}");
    response.json().await.unwrap()
}

async fn deliveries(server: &TestServer, endpoint: &str) -> Vec<Value> {
    let path = format!("/admin/tenants/acme/webhooks/{endpoint}/deliveries?limit=500");
    let listed = admin(server, "GET", &path, None).await;
    listed["deliveries"].as_array().unwrap().clone()
}

#[tokio::test]
async fn delivered_deliveries_and_their_events_are_pruned_and_dead_ones_kept() {
    let (ok, failing) = (Receiver::start().await, Receiver::start().await);
    failing.answer(500);
    let mut config = retention_config();
    config.webhooks.retention_days = 3.0 * A_SECOND;
    let server = TestServer::start(config).await;
    let everything = json!({"url": ok.url("/all"), "events": ["*"]});
    let all = admin(
        &server,
        "POST",
        "/admin/tenants/acme/webhooks",
        Some(everything),
    )
    .await;
    let handoffs = json!({"url": failing.url("/handoffs"), "events": ["handoff.requested"]});
    let dead = admin(
        &server,
        "POST",
        "/admin/tenants/acme/webhooks",
        Some(handoffs),
    )
    .await;
    let (all, dead) = (
        all["endpoint_id"].as_str().unwrap(),
        dead["endpoint_id"].as_str().unwrap(),
    );

    let (session, url) = server.create_session().await;
    let mut ws = server.connect(&url).await;
    for turn in 0..4 {
        say(&mut ws, &format!("mensaje {turn}")).await;
        frames_until(&mut ws, "done").await;
    }
    let (status, body) = server
        .post(
            &format!("/chat/{session}/handoff"),
            KEY,
            json!({"reason": "a person, please"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    eventually("the failing endpoint's delivery is dead", || async {
        deliveries(&server, dead)
            .await
            .iter()
            .any(|d| d["status"] == "dead")
    })
    .await;
    assert!(
        deliveries(&server, all).await.len() >= 9,
        "8 messages and a handoff"
    );

    eventually("the delivered deliveries are pruned", || async {
        deliveries(&server, all).await.is_empty()
    })
    .await;
    let kept = deliveries(&server, dead).await;
    assert_eq!(kept.len(), 1, "the dead delivery stays: {kept:?}");
    assert!(
        server.acme_events(&["message.created"]).await.is_empty(),
        "no delivery needs the message events"
    );
    assert_eq!(server.acme_events(&["handoff.requested"]).await.len(), 1);
    // Retention never touches the conversation itself.
    assert_eq!(
        server.history(&session).await.len(),
        8,
        "4 questions, 4 answers"
    );
}

#[tokio::test]
async fn a_tenants_idle_conversations_are_archived_then_deleted() {
    let mut config = retention_config();
    let acme = config.tenants.get_mut("acme").unwrap();
    acme.retention.archive_after_days = Some(1.5 * A_SECOND);
    acme.retention.delete_after_days = Some(4.0 * A_SECOND);
    let server = TestServer::start(config).await;
    let (idle, _) = server.create_session().await;
    let (busy, busy_url) = server.create_session().await;
    let mut ws = server.connect(&busy_url).await;

    let listed = |status: &'static str| {
        let server = &server;
        async move {
            let path = format!("/chat/conversations?status_filter={status}");
            let (code, body) = server.get(&path, Some(KEY)).await;
            assert_eq!(code, 200, "{body}");
            body.as_array()
                .unwrap()
                .iter()
                .map(|conversation| conversation["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let mut archived_seen = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        say(&mut ws, "sigo aquí").await;
        frames_until(&mut ws, "done").await;
        let archived = listed("archived").await;
        assert!(!archived.contains(&busy), "a busy conversation is archived");
        archived_seen |= archived.contains(&idle);
        let (status, _) = server
            .get(&format!("/chat/{idle}/messages"), Some(KEY))
            .await;
        if status == 404 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the idle one is never deleted"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(archived_seen, "archived before it was deleted");
    assert!(listed("active").await.contains(&busy));
}

#[tokio::test]
async fn bad_retention_settings_are_refused_by_name() {
    let mut config = retention_config();
    config
        .tenants
        .get_mut("acme")
        .unwrap()
        .retention
        .delete_after_days = Some(0.0);
    let refused = tertulia::start(config, Default::default())
        .await
        .err()
        .unwrap();
    assert!(
        refused.to_string().contains("retention.delete_after_days"),
        "{refused}"
    );

    let mut config = retention_config();
    config.webhooks.retention_days = -1.0;
    let refused = tertulia::start(config, Default::default())
        .await
        .err()
        .unwrap();
    assert!(
        refused.to_string().contains("webhooks.retention_days"),
        "{refused}"
    );

    let server = TestServer::start(retention_config()).await;
    let retention = json!({"archive_after_days": 30.0, "delete_after_days": 7.0});
    let response = server
        .http
        .post(server.url("/admin/tenants"))
        .bearer_auth(ADMIN)
        .json(&json!({"id": "keeper", "retention": retention}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("delete_after_days"),
        "{body}"
    );
}
