//! Abuse from one address: one whose requests are refused 401 more than
//! `server.auth_failures_per_minute` times is answered 429 with
//! `Retry-After` before its requests are routed, even with a good key,
//! while another address is served (addresses from `X-Forwarded-For`
//! through a trusted proxy on loopback); and one address holds at most
//! `websocket.max_per_address` sockets.

use serde_json::Value;

use crate::support::server::*;

const ATTACKER: &str = "203.0.113.7";
const NEIGHBOUR: &str = "203.0.113.8";

async fn sessions_from(server: &TestServer, address: &str, key: &str) -> reqwest::Response {
    server
        .http
        .get(server.url("/chat/sessions"))
        .header("X-API-Key", key)
        .header("X-Forwarded-For", address)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_address_that_keeps_guessing_keys_is_refused_and_others_are_not() {
    let mut config = config();
    config.server.auth_failures_per_minute = 5;
    config.server.trusted_proxies = vec!["127.0.0.1".into()];
    let server = TestServer::start(config).await;
    for guess in 0..5 {
        let refused = sessions_from(&server, ATTACKER, &format!("tk_guess_{guess}")).await;
        assert_eq!(refused.status(), 401, "guess {guess}");
    }
    // The sixth failure is over the quota: from now on, 429 unrouted.
    assert_eq!(
        sessions_from(&server, ATTACKER, "tk_guess_5")
            .await
            .status(),
        401
    );
    let blocked = sessions_from(&server, ATTACKER, KEY).await;
    assert_eq!(blocked.status(), 429);
    let retry: u64 = blocked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = blocked.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited", "{body}");
    // A socket's upgrade from there is refused too.
    let upgrade = server
        .http
        .get(server.url("/chat/ws/01a2376e-b84f-720a-8694-9faa16115d7f?ticket=guess"))
        .header("X-Forwarded-For", ATTACKER)
        .send()
        .await
        .unwrap();
    assert_eq!(upgrade.status(), 429);

    let served = sessions_from(&server, NEIGHBOUR, KEY).await;
    assert_eq!(served.status(), 200, "another address is not held to it");
}

#[tokio::test]
async fn a_quota_of_zero_is_refused() {
    let mut config = config();
    config.server.auth_failures_per_minute = 0;
    let refused = tertulia::start(config, Default::default())
        .await
        .err()
        .unwrap();
    assert!(
        refused.to_string().contains("auth_failures_per_minute"),
        "{refused}"
    );
}

#[tokio::test]
async fn an_address_holds_at_most_its_sockets_and_gets_one_back_when_one_closes() {
    use crate::support::sockets::{assert_http_status, socket_request};
    let mut config = config();
    config.websocket.max_per_address = 3;
    let server = TestServer::start(config).await;
    let (session, _) = server.create_session().await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let request = socket_request(&server, &session, KEY);
        open.push(tokio_tungstenite::connect_async(request).await.unwrap().0);
    }
    let refused = tokio_tungstenite::connect_async(socket_request(&server, &session, KEY))
        .await
        .unwrap_err();
    assert_http_status(refused, 429);
    // The webchat stream counts against the same address.
    let stream = format!(
        "ws://{}/api/webchat/stream?session_id=visitor-0123456789",
        server.server.addr
    );
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(stream)
            .unwrap();
    request
        .headers_mut()
        .insert("x-api-key", KEY.parse().unwrap());
    assert_http_status(
        tokio_tungstenite::connect_async(request).await.unwrap_err(),
        429,
    );

    let mut closing = open.pop().unwrap();
    closing.close(None).await.unwrap();
    drop(closing);
    eventually("a closed socket gives its place back", || async {
        tokio_tungstenite::connect_async(socket_request(&server, &session, KEY))
            .await
            .is_ok()
    })
    .await;
}
