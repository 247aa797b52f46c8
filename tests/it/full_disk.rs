//! A disk that fills: the real binary's data directory sits on a tmpfs of a
//! few megabytes, and clients write until the kernel answers ENOSPC. While
//! it is full nothing is acknowledged, REST gets 503 `storage_unavailable`
//! with Retry-After, a socket gets an `error` frame with that code, `/readyz`
//! says why, and the process keeps running. When the filesystem grows again
//! the server is ready by itself (its probe write commits, no client needed)
//! and takes messages again; after a SIGKILL and restart every acknowledged
//! message is there once, in order, byte for byte.
//!
//! Where the test may not mount (no root), it says so and runs the same
//! checks against a storage fault that fails commits as ENOSPC does.

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::binary::{create_session, free_port, get_json, kill, start, write_config};
use crate::support::server::*;
use crate::support::tmpfs::Tmpfs;

/// The filesystem's size while it fills, and after space returns.
const FULL_MB: u32 = 3;
const ROOMY_MB: u32 = 64;
/// `storage.min_free_mb`: writes stop while less than this is free.
const RESERVE_MB: u32 = 1;

fn disk_config(dir: &std::path::Path) -> std::path::PathBuf {
    write_config(dir, &format!("[storage]\nmin_free_mb = {RESERVE_MB}\n"))
}

/// Content of message `number`: 8 KB with UTF-8 beyond ASCII, so a stored
/// byte can be compared with the one sent.
fn content(number: usize) -> String {
    format!("{number:05} ñandú 🦤 {}", "x".repeat(8_000))
}

async fn post(base: &str, session: &str, number: usize) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/chat/{session}/messages"))
        .header("X-API-Key", KEY)
        .json(&json!({"role": "user", "content": content(number), "respond": false}))
        .send()
        .await
        .unwrap()
}

async fn readyz(base: &str) -> (u16, Value) {
    let response = reqwest::get(format!("{base}/readyz")).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn a_full_disk_refuses_writes_clearly_loses_nothing_and_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let disk = match Tmpfs::mount(&dir.path().join("disk"), FULL_MB) {
        Ok(disk) => disk,
        Err(why) => {
            println!(
                "full disk: cannot mount a tmpfs ({why}); the injected storage fault is tested instead"
            );
            return injected_fault_refuses_and_recovers().await;
        }
    };
    let data = disk.path().join("data");
    let config = disk_config(dir.path());
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = start(&config, &data, port).await;
    let session = create_session(&base).await;

    // Fill it: every 201 is an acknowledgement that must survive.
    let mut acked = Vec::new();
    let refused = loop {
        let response = post(&base, &session, acked.len()).await;
        if response.status() != 201 {
            break response;
        }
        acked.push(acked.len());
        assert!(acked.len() < 2_000, "a {FULL_MB} MB disk fills");
    };
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "storage_unavailable", "{body}");
    assert!(
        !body["error"].as_str().unwrap().contains("os error"),
        "the device's words stay in the log: {body}"
    );

    // Then something else takes the rest: the filesystem is full to the byte.
    let filler = disk.path().join("filler");
    fill(&filler);
    full_disk_is_reported(&base, port, &session, acked.len()).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the process keeps running"
    );

    // Space returns: ready again with no client write, and writes are taken.
    std::fs::remove_file(&filler).unwrap();
    disk.resize(ROOMY_MB);
    eventually("ready once space returns", || async {
        readyz(&base).await.0 == 200
    })
    .await;
    let after = acked.len() + 1_000;
    assert_eq!(post(&base, &session, after).await.status(), 201);
    acked.push(after);

    kill(&mut child);
    let mut child = start(&config, &data, port).await;
    let stored = stored_contents(&base, &session).await;
    let numbers: Vec<&str> = stored.iter().map(|content| &content[..5]).collect();
    let sent: Vec<String> = acked.iter().map(|number| format!("{number:05}")).collect();
    assert_eq!(numbers, sent, "every acknowledged message once, in order");
    for (stored, number) in stored.iter().zip(&acked) {
        assert!(
            *stored == content(*number),
            "message {number} is stored byte for byte"
        );
    }
    println!(
        "full disk: {} messages acknowledged before a {FULL_MB} MB tmpfs reached its {RESERVE_MB} MB \
         reserve, then filled to the byte; refused with 503 storage_unavailable while full; ready \
         again after space returned; all {} stored once, in order, after a restart",
        acked.len() - 1,
        stored.len()
    );
    kill(&mut child);
}

/// While full: more posts and a socket message are refused, never acked, and
/// `/readyz` says why.
async fn full_disk_is_reported(base: &str, port: u16, session: &str, next: usize) {
    let (status, body) = readyz(base).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "storage_unavailable", "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("refuses writes"),
        "{body}"
    );
    for number in next..next + 3 {
        assert_eq!(post(base, session, number + 500).await.status(), 503);
    }
    let mut request = format!("ws://127.0.0.1:{port}/chat/ws/{session}")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("x-api-key", KEY.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(next_frame(&mut ws).await["type"], "system");
    send(&mut ws, json!({"type": "message", "content": "while full"})).await;
    let refused = next_frame(&mut ws).await;
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("storage_unavailable")),
        "{refused}"
    );
}

/// Writes to `path` until the filesystem has no byte left.
fn fill(path: &std::path::Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![7u8; 4096];
    while file
        .write_all(&block)
        .and_then(|()| file.sync_data())
        .is_ok()
    {}
    let error = file.write_all(&block[..1]).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(28), "ENOSPC: {error}");
}

async fn stored_contents(base: &str, session: &str) -> Vec<String> {
    let messages = get_json(&format!("{base}/chat/{session}/messages?limit=5000"), KEY).await;
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["content"].as_str().unwrap().to_owned())
        .collect()
}

/// The fallback where no tmpfs can be mounted: commits fail as ENOSPC makes
/// them fail, with the same promises.
async fn injected_fault_refuses_and_recovers() {
    let server = TestServer::start(config()).await;
    let (session, _) = server.create_session().await;
    let body = json!({"role": "user", "content": "kept", "respond": false});
    let (status, _) = server
        .post(&format!("/chat/{session}/messages"), KEY, body)
        .await;
    assert_eq!(status, 201);
    server.server.runtime.inject_storage_failures(1).await;
    let body = json!({"role": "user", "content": "lost", "respond": false});
    let (status, refused) = server
        .post(&format!("/chat/{session}/messages"), KEY, body)
        .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (503, Some("storage_unavailable"))
    );
    let (status, body) = server.get("/readyz", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("storage_unavailable"))
    );
    eventually("ready again", || async {
        server.get("/readyz", None).await.0 == 200
    })
    .await;
    let contents: Vec<Value> = server
        .history(&session)
        .await
        .iter()
        .map(|m| m["content"].clone())
        .collect();
    assert_eq!(contents, vec![json!("kept")]);
    server.stop().await;
}
