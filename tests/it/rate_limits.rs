//! Rate limits per API key, per client address and per conversation, with
//! each tenant's own quotas: 429 with `Retry-After` (or an `error` frame on a
//! socket), and service again once the bucket refills.

use serde_json::json;

use crate::support::server::*;

fn limited(api_key: u32, ip: u32, messages: u32) -> tertulia::config::Config {
    let mut config = config();
    let limits = &mut config.tenants.get_mut("acme").unwrap().rate_limits;
    limits.api_key_per_minute = api_key;
    limits.ip_per_minute = ip;
    limits.session_messages_per_minute = messages;
    config
}

async fn list(server: &TestServer, key: &str) -> reqwest::Response {
    server
        .http
        .get(server.url("/chat/sessions"))
        .header("X-API-Key", key)
        .send()
        .await
        .unwrap()
}

/// Requests until the first 429, checking GCRA's promise for `per_minute`: at
/// least the burst is served (less the `spent` requests made before), and no
/// more than that plus what refilled meanwhile. Returns the refusal.
async fn until_refused(
    server: &TestServer,
    key: &str,
    per_minute: u32,
    spent: usize,
) -> reqwest::Response {
    let started = std::time::Instant::now();
    let burst = per_minute as usize - spent;
    for served in 0..10_000 {
        let response = list(server, key).await;
        if response.status() == 429 {
            let refilled =
                (started.elapsed().as_secs_f64() * f64::from(per_minute) / 60.0).ceil() as usize;
            assert!(
                served >= burst,
                "only {served} served of a burst of {burst}"
            );
            assert!(
                served <= burst + refilled + 1,
                "{served} served: burst {burst} + {refilled} refilled"
            );
            return response;
        }
        assert_eq!(response.status(), 200);
    }
    panic!("no 429 at all");
}

#[tokio::test]
async fn over_the_key_limit_is_429_with_retry_after_and_it_recovers() {
    let server = TestServer::start(limited(60, 10_000, 60)).await;
    let refused = until_refused(&server, KEY, 60, 0).await;
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");

    // Another tenant is not affected; acme recovers once the bucket refills.
    assert_eq!(list(&server, OTHER_KEY).await.status(), 200);
    eventually("acme is served again", || async {
        list(&server, KEY).await.status() == 200
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn over_the_address_limit_refuses_requests_and_sockets() {
    let server = TestServer::start(limited(10_000, 30, 60)).await;
    let (_, url) = server.create_session().await;
    // Creating the session spent one of the 30.
    until_refused(&server, KEY, 30, 1).await;
    let refused = tokio_tungstenite::connect_async(url).await.unwrap_err();
    crate::support::sockets::assert_http_status(refused, 429);
    server.stop().await;
}

#[tokio::test]
async fn a_conversation_over_its_message_limit_gets_a_rate_limited_frame() {
    let server = TestServer::start(limited(10_000, 10_000, 3)).await;
    let (session, url) = server.create_session().await;
    let mut ws = server.connect(&url).await;
    for index in 0..3 {
        send(&mut ws, json!({"type": "message", "content": format!("m{index}"), "client_msg_id": format!("c{index}")})).await;
        frames_until(&mut ws, "ack").await;
    }
    send(
        &mut ws,
        json!({"type": "message", "content": "one too many"}),
    )
    .await;
    let (error, _) = frames_until(&mut ws, "error").await;
    assert_eq!(error["code"], "rate_limited");
    // A repeat of a stored message is still acknowledged, and the socket works.
    send(
        &mut ws,
        json!({"type": "message", "content": "m0", "client_msg_id": "c0"}),
    )
    .await;
    let (ack, _) = frames_until(&mut ws, "ack").await;
    assert_eq!(ack["seq"], 1);
    send(&mut ws, json!({"type": "ping"})).await;
    frames_until(&mut ws, "pong").await;
    eventually("three questions, three answers", || async {
        server.history(&session).await.len() == 6
    })
    .await;
    let history = server.history(&session).await;
    assert!(
        history
            .iter()
            .all(|message| message["content"] != "one too many")
    );
    server.stop().await;
}

#[tokio::test]
async fn limits_set_through_the_admin_api_are_validated_and_applied() {
    let mut config = config();
    config.auth.admin_token = "adm".into();
    let server = TestServer::start(config).await;
    let post = |body: serde_json::Value| {
        server
            .http
            .post(server.url("/admin/tenants"))
            .bearer_auth("adm")
            .json(&body)
            .send()
    };
    let refused = post(json!({"id": "zero", "rate_limits": {"ip_per_minute": 0}}))
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("rate_limits.ip_per_minute"),
        "{body}"
    );

    let created = post(json!({"id": "tight", "rate_limits": {"api_key_per_minute": 2}}))
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let key = make_key(&server, "adm", "tight", "api").await;
    assert_eq!(list(&server, &key).await.status(), 200);
    assert_eq!(list(&server, &key).await.status(), 200);
    assert_eq!(list(&server, &key).await.status(), 429);
    server.stop().await;
}
