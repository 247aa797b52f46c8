//! The real `tertulia` binary as a child process on a loopback port: started
//! with a config file and a data folder, waited for until it answers, and
//! killed with SIGKILL.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::server::DEADLINE;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the binary and waits until it answers `/readyz`.
pub async fn start(config: &std::path::Path, data: &std::path::Path, port: u16) -> Child {
    start_timed(config, data, port).await.0
}

/// Starts the binary; returns it and how long it took to answer `/readyz`.
pub async fn start_timed(
    config: &std::path::Path,
    data: &std::path::Path,
    port: u16,
) -> (Child, Duration) {
    start_logging(config, data, port, "error", None).await
}

/// Starts the binary at log level `rust_log`, its output (stdout and stderr)
/// into `log` if given; returns it and how long it took to answer `/readyz`.
pub async fn start_logging(
    config: &std::path::Path,
    data: &std::path::Path,
    port: u16,
    rust_log: &str,
    log: Option<&std::path::Path>,
) -> (Child, Duration) {
    let started = std::time::Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tertulia"))
        .args(["serve", "--bind", &format!("127.0.0.1:{port}"), "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", rust_log)
        .stdout(output(log))
        .stderr(output(log))
        .spawn()
        .unwrap();
    if !ready(port).await {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the server did not start");
    }
    (child, started.elapsed())
}

/// A child's stdout or stderr: appended to `log`, or dropped.
pub fn output(log: Option<&std::path::Path>) -> Stdio {
    match log {
        Some(path) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap(),
        ),
        None => Stdio::null(),
    }
}

pub async fn ready(port: u16) -> bool {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + DEADLINE * 3;
    while tokio::time::Instant::now() < deadline {
        let answered = http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .is_ok_and(|response| response.status().is_success());
        if answered {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

pub fn kill(child: &mut Child) {
    // SIGKILL: no shutdown, no flush; only what was acknowledged as durable counts.
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Creates a conversation of acme's on the binary at `base`; returns its id.
pub async fn create_session(base: &str) -> String {
    let created = created_session(&reqwest::Client::new(), base).await;
    created["session_id"].as_str().unwrap().to_owned()
}

/// `POST /chat/sessions` as acme with `http` (which may be an HTTPS client
/// trusting a test certificate); the answer, with its `websocket_url`.
pub async fn created_session(http: &reqwest::Client, base: &str) -> serde_json::Value {
    http.post(format!("{base}/chat/sessions"))
        .header("X-API-Key", super::server::KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Writes `tertulia.toml` in `dir`: `settings` (TOML), then tenant acme with
/// the echo agent and rate limits too high to matter. Returns its path.
pub fn write_config(dir: &std::path::Path, settings: &str) -> std::path::PathBuf {
    let config = dir.join("tertulia.toml");
    let unlimited = 10_000_000;
    let key = super::server::KEY;
    let tenant = format!(
        r#"
[tenants.acme]
name = "Acme"
api_keys = ["{key}"]
agent = "echo"

[tenants.acme.rate_limits]
api_key_per_minute = {unlimited}
ip_per_minute = {unlimited}
session_messages_per_minute = {unlimited}
webchat_session_per_minute = {unlimited}
webchat_ip_per_minute = {unlimited}
"#
    );
    std::fs::write(&config, format!("{settings}\n{tenant}")).unwrap();
    config
}

/// GET `url` with `key` in `X-API-Key`; the JSON answer.
pub async fn get_json(url: &str, key: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(url)
        .header("X-API-Key", key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
