//! Backup and restore with the real binary: `tertulia backup` while a
//! client keeps writing, `tertulia restore` into a new data directory, and
//! a server on it that serves every message acknowledged before the backup.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

use crate::support::server::*;

const ADMIN: &str = "adm_backup";

#[tokio::test]
async fn a_backup_taken_under_writes_restores_every_message_acknowledged_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = durable_config(&dir.path().join("data"));
    config.auth.admin_token = ADMIN.into();
    config
        .tenants
        .get_mut("acme")
        .unwrap()
        .rate_limits
        .session_messages_per_minute = 100_000;
    config
        .tenants
        .get_mut("acme")
        .unwrap()
        .rate_limits
        .api_key_per_minute = 100_000;
    let server = TestServer::start(config.clone()).await;
    let (session, _) = server.create_session().await;

    // A back end writes without pause; each acknowledged message is noted.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (http, url, writing) = (
            server.http.clone(),
            server.url(&format!("/chat/{session}/messages")),
            writing.clone(),
        );
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut turn = 0;
            while writing.load(Ordering::SeqCst) {
                let body =
                    json!({"role": "user", "content": format!("nota {turn}"), "respond": false});
                let response = http
                    .post(&url)
                    .header("X-API-Key", KEY)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 201);
                let posted: Value = response.json().await.unwrap();
                acknowledged.push((
                    tokio::time::Instant::now(),
                    posted["content"].as_str().unwrap().to_owned(),
                ));
                turn += 1;
            }
            acknowledged
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let backup_started = tokio::time::Instant::now();
    let file = dir.path().join("backup.surql");
    let backup = tokio::task::spawn_blocking({
        let (file, url) = (file.clone(), server.url(""));
        move || {
            Command::new(env!("CARGO_BIN_EXE_tertulia"))
                .args(["backup", "--to"])
                .arg(&file)
                .args(["--url", &url, "--admin-token", ADMIN])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        backup.status.success(),
        "{}",
        String::from_utf8_lossy(&backup.stderr)
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    writing.store(false, Ordering::SeqCst);
    let acknowledged = writer.await.unwrap();
    let before: Vec<&String> = acknowledged
        .iter()
        .filter(|(at, _)| *at < backup_started)
        .map(|(_, content)| content)
        .collect();
    let during = acknowledged.len() - before.len();
    assert!(
        before.len() > 10 && during > 0,
        "{} before, {during} during",
        before.len()
    );

    // Into a new directory, never over one in use.
    let restore = |data: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_tertulia"))
            .args(["restore", "--from"])
            .arg(&file)
            .arg("--data-dir")
            .arg(data)
            .output()
            .unwrap()
    };
    let refused = restore(&dir.path().join("data"));
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not empty"));
    let restored_dir = dir.path().join("restored");
    let restored = restore(&restored_dir);
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    server.stop().await;

    let mut config = durable_config(&restored_dir);
    config.auth.admin_token = ADMIN.into();
    let server = TestServer::start(config).await;
    let (status, history) = server
        .get(&format!("/chat/{session}/messages"), Some(KEY))
        .await;
    assert_eq!(status, 200, "{history}");
    let stored: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|message| message["content"].as_str())
        .collect();
    for content in &before {
        assert!(
            stored.contains(&content.as_str()),
            "{content} is missing from the restore"
        );
    }
    assert!(stored.len() <= acknowledged.len());
    // The restored server takes new messages after the old ones.
    let (status, posted) = server
        .post(
            &format!("/chat/{session}/messages"),
            KEY,
            json!({"role": "user", "content": "después", "respond": false}),
        )
        .await;
    assert_eq!(status, 201, "{posted}");
    eprintln!(
        "{} acknowledged before the backup, {during} during it; {} restored",
        before.len(),
        stored.len()
    );
}

#[tokio::test]
async fn a_backup_needs_the_admin_token() {
    let mut config = config();
    config.auth.admin_token = ADMIN.into();
    let server = TestServer::start(config).await;
    for token in [None, Some(KEY), Some("adm_wrong")] {
        let mut request = server.http.get(server.url("/admin/backup"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{token:?}");
    }
    assert!(admin_backup(&server, ADMIN).await.contains("DEFINE TABLE"));
}
