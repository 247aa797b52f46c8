//! `GET /metrics`: a scrape taken while sockets and REST clients talk and a
//! webhook receiver fails once is valid Prometheus text (`promtool check
//! metrics`), names every figure, and carries no conversation id.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::receiver::Receiver;
use crate::support::server::*;

const ADMIN: &str = "adm_metrics";

/// The figures a scrape after this traffic must name.
const EXPECTED: &[&str] = &[
    "tertulia_sockets_open{tenant=\"acme\"}",
    "tertulia_sessions_live{tenant=\"acme\"}",
    "tertulia_messages_stored_total{role=\"user\"}",
    "tertulia_messages_stored_total{role=\"assistant\"}",
    "tertulia_commit_batch_size_bucket",
    "tertulia_commit_seconds_bucket",
    "tertulia_first_token_seconds_bucket{agent=\"echo\"",
    "tertulia_answer_seconds_bucket{agent=\"echo\"",
    "tertulia_webhook_deliveries_total{endpoint=",
    "outcome=\"failed\"",
    "outcome=\"delivered\"",
    "tertulia_webhook_queue_depth{endpoint=",
    "tertulia_webhook_oldest_pending_seconds{endpoint=",
    "tertulia_rate_limited_total{limit=\"conversation_messages\"}",
    "tertulia_build_info{version=",
];

#[tokio::test]
async fn a_scrape_under_load_is_valid_prometheus_text_without_conversation_ids() {
    let receiver = Receiver::start().await;
    receiver.fail_next(1);
    let mut config = config();
    config.auth.admin_token = ADMIN.into();
    config.webhooks.retry_schedule = vec!["50ms".into()];
    let limits = &mut config.tenants.get_mut("acme").unwrap().rate_limits;
    limits.session_messages_per_minute = 5;
    let server = TestServer::start(config).await;
    let endpoint = json!({"url": receiver.url("/hook"), "events": ["*"]});
    let created = server
        .http
        .post(server.url("/admin/tenants/acme/webhooks"))
        .bearer_auth(ADMIN)
        .json(&endpoint)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    // Twenty sockets talk while scrapes are taken.
    let mut sessions = Vec::new();
    let mut talkers = Vec::new();
    for _ in 0..20 {
        let (session, url) = server.create_session().await;
        sessions.push(session);
        let mut ws = server.connect(&url).await;
        talkers.push(tokio::spawn(async move {
            for turn in 0..3 {
                say(&mut ws, &format!("pregunta {turn}")).await;
                frames_until(&mut ws, "done").await;
            }
            ws
        }));
    }
    let mut scrapes = Vec::new();
    while talkers.iter().any(|talker| !talker.is_finished()) {
        scrapes.push(scrape(&server).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut open = Vec::new();
    for talker in talkers {
        open.push(talker.await.unwrap());
    }
    // One conversation goes past its message limit.
    let mut ws = server.connect(&server.create_session().await.1).await;
    for turn in 0..7 {
        send(
            &mut ws,
            json!({"type": "message", "content": format!("{turn}")}),
        )
        .await;
    }
    frames_until(&mut ws, "error").await;
    receiver
        .wait_for("a delivery after the failed one", |received| {
            received.iter().any(|hook| hook.answered == 500)
                && received.iter().any(|hook| hook.delivered())
        })
        .await;

    let (text, took) = scrape(&server).await;
    let largest = scrapes
        .iter()
        .map(|(text, _)| text.len())
        .max()
        .unwrap_or(0);
    let slowest = scrapes
        .iter()
        .map(|(_, took)| *took)
        .max()
        .unwrap_or_default();
    eprintln!(
        "{} scrapes under load: largest {largest} bytes, slowest {slowest:?}; final {} bytes in {took:?}",
        scrapes.len(),
        text.len()
    );
    promtool_accepts(&text);
    for expected in EXPECTED {
        assert!(
            text.contains(expected),
            "the scrape lacks {expected}:\n{text}"
        );
    }
    for session in &sessions {
        assert!(
            !text.contains(session.as_str()),
            "a conversation id is a label"
        );
    }
    drop(open);
}

#[tokio::test]
async fn a_scrape_needs_the_token_when_one_is_set_and_is_404_when_metrics_are_off() {
    let mut guarded = config();
    guarded.metrics.token = "scrape-secret".into();
    let server = TestServer::start(guarded).await;
    for (authorization, status) in [
        (None, 401),
        (Some("Bearer wrong"), 401),
        (Some("scrape-secret"), 401),
        (Some("Bearer scrape-secret"), 200),
    ] {
        let mut request = server.http.get(server.url("/metrics"));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{authorization:?}");
        if status == 401 {
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["code"], "unauthorized", "{body}");
        }
    }
    server.stop().await;

    let mut off = config();
    off.metrics.enabled = false;
    let server = TestServer::start(off).await;
    let (status, body) = server.get("/metrics", None).await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "metrics_disabled", "{body}");
}

async fn scrape(server: &TestServer) -> (String, Duration) {
    let started = Instant::now();
    let response = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    (text, started.elapsed())
}

/// `promtool check metrics` reads the scrape on stdin and lints it.
fn promtool_accepts(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian's `prometheus` package; scripts/test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
