//! Durable Streams under a tenant (`/ds/{tenant}/v1/stream/{path}`), on a
//! real server: create, append and read back byte for byte (bytes and JSON
//! mode), offsets and content across a restart, a long-poll woken by an
//! append, idempotent producers, closure, the credential rules, and bad
//! input refused with nothing stored.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::server::*;

fn url(server: &TestServer, tenant: &str, path: &str) -> String {
    server.url(&format!("/ds/{tenant}/v1/stream/{path}"))
}

/// A request to acme's stream `path` with acme's key.
fn acme(server: &TestServer, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    server
        .http
        .request(method, url(server, "acme", path))
        .header("X-API-Key", KEY)
}

async fn put(server: &TestServer, path: &str, content_type: &str, body: &str) -> reqwest::Response {
    acme(server, reqwest::Method::PUT, path)
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn post(
    server: &TestServer,
    path: &str,
    content_type: &str,
    body: &str,
) -> reqwest::Response {
    acme(server, reqwest::Method::POST, path)
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn read(server: &TestServer, path: &str, offset: &str) -> (u16, String, String) {
    let response = acme(server, reqwest::Method::GET, path)
        .query(&[("offset", offset)])
        .send()
        .await
        .unwrap();
    let next = header(&response, "stream-next-offset");
    (
        response.status().as_u16(),
        next,
        response.text().await.unwrap(),
    )
}

#[tokio::test]
async fn appended_bytes_read_back_from_any_offset_given_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(durable_config(dir.path())).await;
    let created = put(&server, "chat/1", "text/plain", "ñandú ").await;
    assert_eq!(created.status(), 201);
    let after_create = header(&created, "stream-next-offset");
    let appended = post(&server, "chat/1", "text/plain", "\u{0}🦤 corre").await;
    assert_eq!(appended.status(), 204);
    let tail = header(&appended, "stream-next-offset");
    assert!(after_create < tail, "offsets sort in stream order");
    let (status, next, body) = read(&server, "chat/1", "-1").await;
    assert_eq!(
        (status, next.as_str(), body.as_str()),
        (200, tail.as_str(), "ñandú \u{0}🦤 corre")
    );
    server.stop().await;

    let server = TestServer::start(durable_config(dir.path())).await;
    let (_, next, body) = read(&server, "chat/1", &after_create).await;
    assert_eq!(
        (next.as_str(), body.as_str()),
        (tail.as_str(), "\u{0}🦤 corre")
    );
    let (_, next, body) = read(&server, "chat/1", &tail).await;
    assert_eq!((next, body.as_str()), (tail, ""));
    server.stop().await;
}

#[tokio::test]
async fn a_json_stream_keeps_each_message_and_flattens_one_array_level() {
    let server = TestServer::start(config()).await;
    assert_eq!(
        put(&server, "events", "application/json", "[]")
            .await
            .status(),
        201
    );
    assert_eq!(
        post(&server, "events", "application/json", r#"{"a": 1}"#)
            .await
            .status(),
        204
    );
    assert_eq!(
        post(
            &server,
            "events",
            "application/json",
            "[[1, 2], {\"b\": \"ñ\"}]"
        )
        .await
        .status(),
        204
    );
    let (_, _, body) = read(&server, "events", "-1").await;
    let messages: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(messages, json!([{"a": 1}, [1, 2], {"b": "ñ"}]));
    // Refused appends store nothing.
    assert_eq!(
        post(&server, "events", "application/json", "[]")
            .await
            .status(),
        400
    );
    assert_eq!(
        post(&server, "events", "application/json", "{nope")
            .await
            .status(),
        400
    );
    assert_eq!(
        post(&server, "events", "text/plain", "x").await.status(),
        409
    );
    let (_, _, again) = read(&server, "events", "-1").await;
    assert_eq!(again, body);
    server.stop().await;
}

#[tokio::test]
async fn a_long_poll_is_woken_by_an_append_and_a_closed_stream_ends() {
    let server = TestServer::start(config()).await;
    let created = put(&server, "live", "text/plain", "a").await;
    let tail = header(&created, "stream-next-offset");
    let waiting = acme(&server, reqwest::Method::GET, "live")
        .query(&[("offset", tail.as_str()), ("live", "long-poll")])
        .send();
    let (answer, _) = tokio::join!(waiting, async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        post(&server, "live", "text/plain", "b").await
    });
    let answer = answer.unwrap();
    assert_eq!(answer.status(), 200);
    assert!(!header(&answer, "stream-cursor").is_empty());
    let next = header(&answer, "stream-next-offset");
    assert_eq!(answer.text().await.unwrap(), "b");

    let closing = acme(&server, reqwest::Method::POST, "live")
        .header("stream-closed", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(closing.status(), 204);
    assert_eq!(header(&closing, "stream-closed"), "true");
    let ended = acme(&server, reqwest::Method::GET, "live")
        .query(&[("offset", next.as_str()), ("live", "long-poll")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        (ended.status().as_u16(), header(&ended, "stream-closed")),
        (204, "true".into())
    );
    assert_eq!(post(&server, "live", "text/plain", "c").await.status(), 409);
    server.stop().await;
}

#[tokio::test]
async fn an_idempotent_producer_is_deduplicated_kept_in_sequence_and_fenced() {
    let server = TestServer::start(config()).await;
    put(&server, "orders", "text/plain", "").await;
    let send = |epoch: u64, seq: u64, body: &'static str| {
        acme(&server, reqwest::Method::POST, "orders")
            .header("content-type", "text/plain")
            .header("producer-id", "svc-1")
            .header("producer-epoch", epoch.to_string())
            .header("producer-seq", seq.to_string())
            .body(body)
            .send()
    };
    assert_eq!(send(0, 0, "a").await.unwrap().status(), 200);
    assert_eq!(send(0, 1, "b").await.unwrap().status(), 200);
    let retry = send(0, 1, "b").await.unwrap();
    assert_eq!(
        (retry.status().as_u16(), header(&retry, "producer-seq")),
        (204, "1".into())
    );
    let gap = send(0, 5, "x").await.unwrap();
    assert_eq!(
        (gap.status().as_u16(), header(&gap, "producer-expected-seq")),
        (409, "2".into())
    );
    assert_eq!(send(1, 0, "c").await.unwrap().status(), 200);
    let zombie = send(0, 2, "z").await.unwrap();
    assert_eq!(
        (zombie.status().as_u16(), header(&zombie, "producer-epoch")),
        (403, "1".into())
    );
    let (_, _, body) = read(&server, "orders", "-1").await;
    assert_eq!(body, "abc");
    server.stop().await;
}

#[tokio::test]
async fn streams_need_the_tenants_key_unless_it_opened_them() {
    let mut config = config();
    config.tenants.get_mut("globex").unwrap().streams.anonymous = true;
    let server = TestServer::start(config).await;
    put(&server, "private", "text/plain", "acme only").await;
    let anonymous = server
        .http
        .get(url(&server, "acme", "private"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let other = server
        .http
        .get(url(&server, "acme", "private"))
        .header("X-API-Key", OTHER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    let open = server
        .http
        .put(url(&server, "globex", "public"))
        .header("content-type", "text/plain")
        .body("anyone")
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 201);
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_store_nothing() {
    let server = TestServer::start(config()).await;
    put(&server, "s", "text/plain", "ok").await;
    let both = acme(&server, reqwest::Method::PUT, "t")
        .header("stream-ttl", "60")
        .header("stream-expires-at", "2030-01-01T00:00:00Z")
        .send()
        .await
        .unwrap();
    assert_eq!(both.status(), 400);
    for ttl in ["+60", "060", "1.5", "abc"] {
        let bad = acme(&server, reqwest::Method::PUT, "t")
            .header("stream-ttl", ttl)
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400, "{ttl}");
    }
    assert_eq!(
        put(&server, "s", "application/json", "").await.status(),
        409
    );
    assert_eq!(post(&server, "s", "text/plain", "").await.status(), 400);
    assert_eq!(
        post(&server, "missing", "text/plain", "x").await.status(),
        404
    );
    let huge = "x".repeat(17 * 1024 * 1024);
    assert_eq!(post(&server, "s", "text/plain", &huge).await.status(), 413);
    for offset in ["abc", "12", "99999999999999999999"] {
        assert_eq!(read(&server, "s", offset).await.0, 400, "{offset}");
    }
    let partial = acme(&server, reqwest::Method::POST, "s")
        .header("content-type", "text/plain")
        .header("producer-id", "p")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(partial.status(), 400);
    let (_, _, body) = read(&server, "s", "-1").await;
    assert_eq!(body, "ok");
    server.stop().await;
}

#[tokio::test]
async fn a_stream_idle_past_its_ttl_is_gone_and_heads_do_not_keep_it() {
    let server = TestServer::start(config()).await;
    let created = acme(&server, reqwest::Method::PUT, "brief")
        .header("content-type", "text/plain")
        .header("stream-ttl", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    eventually("the idle stream expires", || async {
        let head = acme(&server, reqwest::Method::HEAD, "brief")
            .send()
            .await
            .unwrap();
        head.status() == 404
    })
    .await;
    assert_eq!(read(&server, "brief", "-1").await.0, 404);
    server.stop().await;
}

/// `@durable-streams/server-conformance-tests` (pinned in `tests/js`), run
/// with vitest against the real binary, whose tenant `acme` opens its
/// streams to callers with no credential (the suite sends none).
#[tokio::test]
async fn the_protocols_conformance_suite_passes_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::support::binary::write_config(dir.path(), "");
    let open = "\n[tenants.acme.streams]\nanonymous = true\n";
    std::fs::write(&config, std::fs::read_to_string(&config).unwrap() + open).unwrap();
    let port = crate::support::binary::free_port();
    let mut child = crate::support::binary::start(&config, &dir.path().join("data"), port).await;
    let base = format!("http://127.0.0.1:{port}/ds/acme");
    let outcome = crate::support::conformance::run(dir.path(), base).await;
    crate::support::binary::kill(&mut child);
    outcome.all_passed("on one node");
}

#[tokio::test]
async fn a_tenants_stream_count_and_stream_size_are_limited() {
    let mut config = config();
    let streams = &mut config.tenants.get_mut("acme").unwrap().streams;
    streams.max_streams = 2;
    streams.max_stream_bytes = 10;
    let server = TestServer::start(config).await;
    assert_eq!(
        put(&server, "one", "text/plain", "12345").await.status(),
        201
    );
    assert_eq!(put(&server, "two", "text/plain", "").await.status(), 201);
    let third = put(&server, "three", "text/plain", "").await;
    assert_eq!(third.status(), 403);
    let body: Value = third.json().await.unwrap();
    assert_eq!(body["code"], "quota_exceeded");
    // Asking again for one that exists is still fine.
    assert_eq!(put(&server, "one", "text/plain", "").await.status(), 200);
    assert_eq!(
        post(&server, "one", "text/plain", "67890").await.status(),
        204
    );
    assert_eq!(post(&server, "one", "text/plain", "x").await.status(), 413);
    let (_, _, body) = read(&server, "one", "-1").await;
    assert_eq!(body, "1234567890");
    // A deleted stream frees its place.
    let deleted = acme(&server, reqwest::Method::DELETE, "two")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(put(&server, "three", "text/plain", "").await.status(), 201);
    server.stop().await;
}
