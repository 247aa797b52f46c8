//! Statistics per tenant (`GET /analytics/summary`): counted by the database
//! from what was really stored over sockets, REST and webchat, per bucket
//! and in total, as JSON and CSV; refused with a clear error for bad ranges,
//! client tokens and missing keys.

use serde_json::{Value, json};

use crate::support::server::*;

/// Two socket exchanges and one webchat exchange in acme, one exchange in globex.
async fn some_traffic(server: &TestServer) {
    let (_, url) = server.create_session().await;
    let mut ws = server.connect(&url).await;
    for text in ["uno", "dos"] {
        say(&mut ws, text).await;
        frames_until(&mut ws, "done").await;
    }
    let visit =
        json!({"session_id": "visitor-0123456789abcdef", "author": "Ana", "content": "hola"});
    let (status, reply) = server.post("/api/webchat/messages", KEY, visit).await;
    assert_eq!(status, 200, "{reply}");
    let visit = json!({"session_id": "globex-0123456789abcdef", "author": "Gus", "content": "hi"});
    let (status, reply) = server.post("/api/webchat/messages", OTHER_KEY, visit).await;
    assert_eq!(status, 200, "{reply}");
}

#[tokio::test]
async fn the_summary_counts_a_tenants_messages_by_role_channel_and_hour() {
    let mut config = config();
    config.auth.admin_token = "adm".into();
    let server = TestServer::start(config).await;
    some_traffic(&server).await;

    let (status, summary) = server
        .get("/analytics/summary?bucket=hour", Some(KEY))
        .await;
    assert_eq!(status, 200, "{summary}");
    let total = &summary["total"];
    assert_eq!(total["conversations_started"], 2, "{total}");
    assert_eq!(
        total["messages"]["user"],
        json!({"api": 2, "webchat": 1}),
        "{total}"
    );
    assert_eq!(
        total["messages"]["assistant"],
        json!({"api": 2, "webchat": 1})
    );
    assert_eq!(
        total["answers"],
        json!({"complete": 3, "interrupted": 0, "failed": 0})
    );
    assert!(
        total["time_to_first_token_ms"]["p50"].is_number(),
        "{total}"
    );
    assert!(total["full_answer_ms"]["p95"].is_number(), "{total}");
    let buckets = summary["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 49, "48 hours, cut at the hour");
    let now = &buckets[48];
    assert_eq!(now["messages"]["user"]["api"], 2, "{now}");
    assert_eq!(buckets[0]["conversations_started"], 0);

    // The same figures for the console's staff key, and as CSV.
    let staff = make_key(&server, "adm", "acme", "staff").await;
    let (status, for_staff) = server
        .get("/analytics/summary?bucket=hour", Some(&staff))
        .await;
    assert_eq!(status, 200, "{for_staff}");
    assert_eq!(for_staff["total"], summary["total"]);
    let csv = server
        .http
        .get(server.url("/analytics/summary?bucket=day&format=csv"))
        .header("X-API-Key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let text = csv.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("bucket_start,conversations_started,messages_user"),
        "{text}"
    );
    assert_eq!(
        lines.len(),
        1 + 31,
        "a header and 30 days, cut at the day: {text}"
    );
    assert!(lines.last().unwrap().contains(",2,3,3,0,3,0,0,"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn bad_summary_requests_get_clear_errors() {
    let mut config = config();
    config.auth.admin_token = "adm".into();
    let server = TestServer::start(config).await;
    for (query, field) in [
        ("bucket=week", "`bucket`"),
        ("from=yesterday", "`from`"),
        ("to=2026-13-45", "`to`"),
        ("from=2026-12-02&to=2026-12-01", "before"),
        ("from=2000-01-01&bucket=hour", "buckets"),
        ("format=xml", "`format`"),
        ("tenant=globex", "`tenant`"),
    ] {
        let (status, body) = server
            .get(&format!("/analytics/summary?{query}"), Some(KEY))
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(field),
            "{query}: {body}"
        );
        assert!(body["code"].is_string(), "{body}");
    }
    let (status, body) = server.get("/analytics/summary", None).await;
    assert_eq!(
        (status, body["code"].clone()),
        (401, json!("missing_api_key"))
    );
    let (status, body) = server.get("/analytics/summary", Some("tk_nope")).await;
    assert_eq!(
        (status, body["code"].clone()),
        (401, json!("invalid_api_key"))
    );
    let widget = make_key(&server, "adm", "acme", "widget").await;
    let (status, body) = server.get("/analytics/summary", Some(&widget)).await;
    assert_eq!(
        (status, body["code"].clone()),
        (403, json!("widget_key_not_allowed"))
    );
    let response = server
        .http
        .get(server.url("/analytics/summary"))
        .header("X-API-Key", KEY)
        .bearer_auth(client_token("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "client_token_not_allowed");
    server.stop().await;
}
