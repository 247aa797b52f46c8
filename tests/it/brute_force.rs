//! Brute force on credentials: an address whose requests are refused 401
//! more than `server.auth_failures_per_minute` times is answered 429 with
//! `Retry-After` before its requests are routed, even with a good key,
//! while another address is served. Addresses come from `X-Forwarded-For`
//! through a trusted proxy on loopback.

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
