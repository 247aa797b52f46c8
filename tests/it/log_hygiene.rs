//! Secrets and personal data never reach the log, even at `RUST_LOG=trace`
//! (SurrealDB's, hyper's and reqwest's own tracing included): the real binary
//! runs a whole conversation with a known API key, socket ticket, client
//! token, webhook secret, model key, email address and phone number, and
//! none of them appears in what it printed.

use std::time::Duration;

use serde_json::json;

use crate::support::binary::{created_session, free_port, kill, start_logging};
use crate::support::fake_llm::FakeLlm;
use crate::support::receiver::Receiver;
use crate::support::server::*;

const WEBHOOK_SECRET: &str = "whsec_LoGhYgIeNe0123456789abcdefABCDEF";
const MODEL_KEY: &str = "sk-model-log-hygiene-5c1f9e7a3b";
const EMAIL: &str = "ximena.quiroga@example.org";
const PHONE: &str = "+52 55 8123 4567";

fn write_config(dir: &std::path::Path, llm: &FakeLlm, receiver: &Receiver) -> std::path::PathBuf {
    let config = dir.join("tertulia.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[egress]
allow = ["127.0.0.0/8"]

[[webhooks.endpoints]]
name = "crm"
tenant = "acme"
url = "{url}"
secret = "{WEBHOOK_SECRET}"
events = ["message.created"]

[tenants.acme]
name = "Acme"
api_keys = ["{KEY}"]
agent = "openai"
client_token_secret = "{ACME_CLIENT_SECRET}"

[tenants.acme.openai]
base_url = "{base_url}"
api_key = "{MODEL_KEY}"
api_key_env = ""
"#,
            url = receiver.url("/crm"),
            base_url = llm.base_url,
        ),
    )
    .unwrap();
    config
}

/// Every way a secret or a person's data reaches the server in one
/// conversation; returns the ticket the socket used.
async fn converse(port: u16, token: &str) -> String {
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let created = created_session(&http, &base).await;
    let url = created["websocket_url"].as_str().unwrap().to_owned();
    let ticket = url.split("ticket=").nth(1).unwrap();
    let ticket = ticket.split('&').next().unwrap().to_owned();
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let content = format!("Soy Ximena, escríbeme a {EMAIL} o llámame al {PHONE}");
    send(&mut ws, json!({"type": "message", "content": content})).await;
    let (done, _) = frames_until(&mut ws, "done").await;
    assert!(done["content"].is_string(), "{done}");

    // A client token on REST, and a wrong key (a refusal logs, too).
    let status = http
        .get(format!("{base}/chat/conversations"))
        .header("X-API-Key", KEY)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let refused = http
        .get(format!("{base}/chat/conversations"))
        .header("X-API-Key", format!("{KEY}-wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    ticket
}

#[tokio::test]
async fn nothing_secret_or_personal_is_logged_at_trace() {
    let dir = tempfile::tempdir().unwrap();
    let (llm, receiver) = (FakeLlm::start().await, Receiver::start().await);
    let config = write_config(dir.path(), &llm, &receiver);
    let log = dir.path().join("log");
    let port = free_port();
    let (mut child, _) =
        start_logging(&config, &dir.path().join("data"), port, "trace", Some(&log)).await;
    let token = client_token("ximena");
    let ticket = converse(port, &token).await;
    receiver
        .wait_for("message.created, signed", |received| {
            received
                .iter()
                .filter(|request| request.delivered())
                .count()
                >= 2
        })
        .await;
    assert!(!llm.requests().is_empty(), "the model was asked");
    tokio::time::sleep(Duration::from_millis(300)).await;
    kill(&mut child);

    let printed = std::fs::read_to_string(&log).unwrap();
    let lines = printed.lines().count();
    assert!(
        printed.contains("TRACE"),
        "the log is at trace: {lines} lines"
    );
    let secrets = [
        ("API key", KEY),
        ("socket ticket", ticket.as_str()),
        ("client token", token.as_str()),
        ("client token secret", ACME_CLIENT_SECRET),
        ("webhook secret", WEBHOOK_SECRET),
        ("model key", MODEL_KEY),
        ("email", EMAIL),
        ("phone", PHONE),
    ];
    for (what, secret) in secrets {
        let at = printed.lines().position(|line| line.contains(secret));
        assert!(
            at.is_none(),
            "the {what} is in line {} of the log: {}",
            at.unwrap_or_default() + 1,
            printed
                .lines()
                .nth(at.unwrap_or_default())
                .unwrap_or_default()
                .chars()
                .take(400)
                .collect::<String>()
        );
    }
    println!(
        "log hygiene: {lines} lines at RUST_LOG=trace, none with any of {} secrets",
        secrets.len()
    );
}
