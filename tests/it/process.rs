//! The real binary, as an operator runs it: it starts with no config file,
//! prints its URL and development key, and on SIGTERM stops accepting, stores
//! the answer in progress, closes sockets with a reason and exits 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::support::server::*;

#[tokio::test]
async fn the_binary_serves_and_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, banner) = start_binary(
        dir.path(),
        &[("TERTULIA_AGENTS__ECHO__WORD_DELAY_MS", "20")],
    )
    .await;
    let addr = address_in(&banner);
    assert!(
        banner
            .iter()
            .any(|line| line.contains("tk_dev_default_change_me")),
        "{banner:?}"
    );
    // The console works on a first run: the development staff key is let in.
    assert!(
        banner
            .iter()
            .any(|line| line.contains("sk_dev_default_change_me")),
        "{banner:?}"
    );
    let me: Value = reqwest::Client::new()
        .get(format!("http://{addr}/console/api/me"))
        .header("X-API-Key", "sk_dev_default_change_me")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["name"], "Developer", "{me}");

    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("http://{addr}/chat/sessions"))
        .header("X-API-Key", "tk_dev_default_change_me")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(created["websocket_url"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(next_frame(&mut ws).await["type"], "system");
    let question = (0..100)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    send(&mut ws, json!({"type": "message", "content": question})).await;
    frames_until(&mut ws, "chunk").await;

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (done, _) = frames_until(&mut ws, "done").await;
    assert_eq!(done["status"], "interrupted");
    assert_eq!(
        close_of(&mut ws).await,
        (1001, "server shutting down".to_owned())
    );
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap());
    let exit = tokio::time::timeout(DEADLINE, exit)
        .await
        .expect("the server exits")
        .unwrap();
    assert!(exit.success(), "exit status {exit}");
}

/// Starts `tertulia serve` on a free port with a data folder and these
/// variables; returns it and its output up to the development key's line
/// (the end of its start-up banner).
async fn start_binary(
    data: &std::path::Path,
    variables: &[(&str, &str)],
) -> (std::process::Child, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tertulia"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("RUST_LOG", "warn")
        .envs(variables.iter().copied())
        .stdout(Stdio::piped())
        // The log (warnings only): a test reads it once the child is gone.
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let banner = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let mut banner = Vec::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            let done = line.contains("development API key");
            banner.push(line);
            if done {
                break;
            }
        }
        // Keep draining so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        banner
    });
    let banner = tokio::time::timeout(DEADLINE, banner)
        .await
        .expect("the server starts")
        .unwrap();
    (child, banner)
}

/// The `host:port` the banner says the server listens on.
fn address_in(banner: &[String]) -> String {
    let line = banner.iter().find(|line| line.contains("is listening"));
    let url = line.unwrap().rsplit("http://").next().unwrap();
    url.trim().to_owned()
}

/// Runs the CLI with these arguments; returns its exit success, stdout and stderr.
async fn cli(args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let output = Command::new(env!("CARGO_BIN_EXE_tertulia"))
            .args(&args)
            .env_remove("TERTULIA_AUTH__ADMIN_TOKEN")
            .env_remove("TERTULIA_URL")
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_cli_creates_a_tenant_and_a_key_that_work_against_a_running_server() {
    let mut config = config();
    config.auth.admin_token = "adm_cli".into();
    let server = TestServer::start(config).await;
    let url = server.url("");
    let connection = |args: Vec<&str>| {
        let mut args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        args.extend([
            "--url".into(),
            url.clone(),
            "--admin-token".into(),
            "adm_cli".into(),
        ]);
        args
    };

    let (ok, out, err) = cli(connection(vec![
        "tenant",
        "create",
        "plomeria",
        "--greeting",
        "¿Qué fuga?",
    ]))
    .await;
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["id"],
        "plomeria"
    );
    let (ok, out, err) = cli(connection(vec!["key", "create", "--tenant", "plomeria"])).await;
    assert!(ok, "{err}");
    let key: Value = serde_json::from_str(&out).unwrap();
    let secret = key["key"].as_str().unwrap();

    let created = server
        .http
        .post(server.url("/chat/sessions"))
        .header("X-API-Key", secret)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);

    let (ok, out, _) = cli(connection(vec!["tenant", "list"])).await;
    assert!(ok && out.contains("plomeria"));
    let (ok, out, _) = cli(connection(vec!["key", "list", "--tenant", "plomeria"])).await;
    assert!(ok && out.contains(key["key_id"].as_str().unwrap()) && !out.contains(secret));
    let (ok, _, err) = cli(connection(vec![
        "key",
        "revoke",
        key["key_id"].as_str().unwrap(),
    ]))
    .await;
    assert!(ok, "{err}");
    let refused = server
        .http
        .post(server.url("/chat/sessions"))
        .header("X-API-Key", secret)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    // Webhooks: an endpoint made, tested and listed from the command line.
    let receiver = crate::support::receiver::Receiver::start().await;
    let hook_url = receiver.url("/hook");
    let (ok, out, err) = cli(connection(vec![
        "webhook",
        "create",
        "--tenant",
        "plomeria",
        "--to",
        &hook_url,
        "--events",
        "message.created,lead.captured",
    ]))
    .await;
    assert!(ok, "{err}");
    let endpoint: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        endpoint["events"],
        json!(["message.created", "lead.captured"])
    );
    let endpoint_id = endpoint["endpoint_id"].as_str().unwrap();
    let hook_secret = endpoint["secret"].as_str().unwrap();
    let (ok, _, err) = cli(connection(vec![
        "webhook",
        "test",
        "--tenant",
        "plomeria",
        endpoint_id,
    ]))
    .await;
    assert!(ok, "{err}");
    let received = receiver.wait_for("the test event", |r| r.len() == 1).await;
    assert!(crate::support::receiver::signed_with(
        hook_secret,
        &received[0]
    ));
    let (ok, out, _) = cli(connection(vec![
        "webhook",
        "deliveries",
        "--tenant",
        "plomeria",
        endpoint_id,
    ]))
    .await;
    assert!(ok && out.contains("webhook.test"), "{out}");
    let (ok, out, _) = cli(connection(vec!["webhook", "list", "--tenant", "plomeria"])).await;
    assert!(
        ok && out.contains(endpoint_id) && !out.contains(hook_secret),
        "{out}"
    );

    // Errors are the server's words on stderr, with a failing exit status.
    let wrong = vec!["tenant", "list", "--url", &url, "--admin-token", "nope"];
    let (ok, _, err) = cli(wrong.into_iter().map(str::to_owned).collect()).await;
    assert!(!ok && err.contains("401"), "{err}");
    let (ok, _, err) = cli(connection(vec!["tenant", "create", "Bad Id"])).await;
    assert!(!ok && err.contains("`id`"), "{err}");

    // `tertulia erase`: a conversation of the new tenant, then two people at once (refused).
    let conversation: Value = created.json().await.unwrap();
    let id = conversation["session_id"].as_str().unwrap();
    let erase = vec!["erase", "--tenant", "plomeria", "--conversation-id", id];
    let (ok, out, err) = cli(connection(erase)).await;
    assert!(ok, "{err}");
    let erased: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(erased["conversation_ids"], serde_json::json!([id]), "{out}");
    let both = vec![
        "erase",
        "--tenant",
        "plomeria",
        "--email",
        "a@b.c",
        "--phone",
        "+34600000000",
    ];
    let (ok, _, err) = cli(connection(both)).await;
    assert!(!ok && err.contains("cannot be used with"), "{err}");
    let (ok, _, err) = cli(connection(vec!["erase", "--tenant", "plomeria"])).await;
    assert!(!ok && err.contains("--conversation-id"), "{err}");
    server.stop().await;
}

/// `TERTULIA_URL` is the CLI's (the README tells CLI users to set it), and a
/// misspelt variable is a mistake to point out, not a reason to refuse to
/// start: the server warns, naming each, and serves. A misspelt key in a
/// config file is still refused.
#[tokio::test]
async fn unknown_tertulia_variables_are_warned_about_and_a_misspelt_file_key_refused() {
    let dir = tempfile::tempdir().unwrap();
    let variables = [
        ("TERTULIA_URL", "http://127.0.0.1:2000"),
        ("TERTULIA_SERVER__BINDD", "0.0.0.0:1"),
    ];
    let (mut child, _) = start_binary(dir.path(), &variables).await;
    child.kill().unwrap();
    let log = child.wait_with_output().unwrap().stderr;
    let lines: Vec<&str> = std::str::from_utf8(&log).unwrap().lines().collect();
    for variable in ["TERTULIA_URL", "TERTULIA_SERVER__BINDD"] {
        assert!(
            lines
                .iter()
                .any(|line| line.contains(variable) && line.contains("WARN")),
            "{variable}: {lines:?}"
        );
    }

    let file = dir.path().join("misspelt.toml");
    std::fs::write(&file, "[server]\nbindd = \"127.0.0.1:0\"\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tertulia"))
        .args(["serve", "--config"])
        .arg(&file)
        .env_remove("TERTULIA_URL")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bindd"), "{stderr}");
}

/// Once tenants are configured, the development staff key opens nothing.
#[tokio::test]
async fn the_development_staff_key_is_refused_once_tenants_are_configured() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tenants.toml");
    std::fs::write(
        &config,
        "[tenants.acme]\nname = \"Acme\"\napi_keys = [\"tk_acme_configured\"]\n",
    )
    .unwrap();
    let port = crate::support::binary::free_port();
    let mut server = crate::support::binary::start(&config, &dir.path().join("data"), port).await;
    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/console/api/me"))
        .header("X-API-Key", "sk_dev_default_change_me")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    crate::support::binary::kill(&mut server);
}

#[tokio::test]
async fn json_logs_name_each_request_by_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let variables = [
        ("TERTULIA_LOG__FORMAT", "json"),
        ("RUST_LOG", "warn,tertulia=debug"),
    ];
    let (child, banner) = start_binary(dir.path(), &variables).await;
    let addr = address_in(&banner);
    let http = reqwest::Client::new();
    let traced = http
        .get(format!("http://{addr}/healthz"))
        .header("X-Request-Id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(traced.headers()["x-request-id"], "trace-me-123");
    let refused = http
        .post(format!("http://{addr}/chat/sessions"))
        .header("X-Request-Id", "not a sane id")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let generated = refused.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(generated.len(), 36, "a new id: {generated}");
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let served = |id: &str| {
        lines.iter().any(|line| {
            line["fields"]["message"] == "request served" && line["span"]["request_id"] == id
        })
    };
    assert!(served("trace-me-123"), "{stderr}");
    assert!(served(&generated), "{stderr}");
}
