//! Secrets at rest: with `TERTULIA_SECRET_KEY` set, a webhook endpoint's
//! secret, a tenant's tool secret and client-token secret are in neither the
//! database's files nor a backup, and still sign and verify. Without a key
//! the same search finds them (so the search can fail). A rotation (new key,
//! old one as previous) reseals everything at start; then the old key alone
//! opens nothing, and a missing key stops the start with a clear error.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tertulia::config::Config;
use tertulia_actors::config::SealingKeys;

use crate::support::receiver::{Receiver, signed_with};
use crate::support::server::*;

const ADMIN: &str = "adm_secrets";
const KEY_A: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
const KEY_B: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const ENDPOINT_SECRET: &str = "whsec_ZW5kcG9pbnQtc2VjcmV0LW9mLWFjbWUtMDEyMzQ1Njc4OQ==";
const TOOL_SECRET: &str = "whsec_dG9vbC1zZWNyZXQtb2YtaW5pdGVjaC0wMTIzNDU2Nzg5";
const CLIENT_SECRET: &str = "initech-client-token-secret-7a1f0c9d2e8b4f6a";

fn keyed(data: &Path, current: Option<&str>, previous: &[&str]) -> Config {
    let mut config = durable_config(data);
    config.auth.admin_token = ADMIN.into();
    config.webhooks.retry_schedule = ["30ms", "60ms"].map(String::from).to_vec();
    config.storage.sealing = SealingKeys {
        current: current.map(str::to_owned),
        previous: previous.iter().map(|key| key.to_string()).collect(),
    };
    config
}

/// The id a sealed value names its key by.
fn key_id(key: &str) -> String {
    let digest = Sha256::digest(STANDARD.decode(key).unwrap());
    digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

async fn admin(server: &TestServer, path: &str, body: Value) -> Value {
    let (status, answer) = admin_post(server, ADMIN, path, body).await;
    assert_eq!(status, 201, "{path}: {answer}");
    answer
}

/// An endpoint of acme's with a known secret, and tenant initech with a
/// client-token secret and a signed tool; returns initech's API key.
async fn store_secrets(server: &TestServer, receiver: &Receiver) -> String {
    let endpoint = json!({"url": receiver.url("/hook"), "secret": ENDPOINT_SECRET, "events": ["message.created"]});
    admin(server, "/admin/tenants/acme/webhooks", endpoint).await;
    let tenant = json!({
        "id": "initech",
        "name": "Initech",
        "client_token_secret": CLIENT_SECRET,
        "tools": [{"name": "lookup", "url": "http://127.0.0.1:9/lookup", "secret": TOOL_SECRET}],
    });
    admin(server, "/admin/tenants", tenant).await;
    let key = admin(
        server,
        "/admin/tenants/initech/keys",
        json!({"kind": "api"}),
    )
    .await;
    key["key"].as_str().unwrap().to_owned()
}

/// A message in a new conversation of acme's, and its delivery, which must
/// be signed with the endpoint's secret.
async fn delivery_is_signed(server: &TestServer, receiver: &Receiver, content: &str) {
    let (session, _) = server.create_session().await;
    let body = json!({"role": "user", "content": content, "respond": false});
    let (status, posted) = server
        .post(&format!("/chat/{session}/messages"), KEY, body)
        .await;
    assert_eq!(status, 201, "{posted}");
    let received = receiver
        .wait_for("the message's delivery", |received| {
            received
                .iter()
                .any(|r| r.json()["data"]["content"] == content)
        })
        .await;
    let delivery = received
        .iter()
        .find(|r| r.json()["data"]["content"] == content)
        .unwrap();
    assert!(
        signed_with(ENDPOINT_SECRET, delivery),
        "signed with the stored secret"
    );
}

/// A client token signed with initech's stored secret is accepted.
async fn client_token_verifies(server: &TestServer, initech_key: &str) {
    let (token, _) = tertulia::auth::tokens::mint_client_token(
        CLIENT_SECRET,
        "cliente-7",
        Duration::from_secs(60),
    );
    let response = server
        .http
        .get(server.url("/chat/conversations"))
        .header("X-API-Key", initech_key)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// Whether any file under `dir` holds `needle`'s bytes.
fn files_hold(dir: &Path, needle: &str) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        let path = entry.unwrap().path();
        if path.is_dir() {
            return files_hold(&path, needle);
        }
        let bytes = std::fs::read(&path).unwrap_or_default();
        bytes
            .windows(needle.len())
            .any(|window| window == needle.as_bytes())
    })
}

/// The start's error (the store's lock from the last stop may linger a moment).
async fn start_error(config: Config) -> String {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match tertulia::start(config.clone(), Default::default()).await {
            Ok(server) => {
                server.shutdown().await;
                panic!("the server started");
            }
            Err(error) if error.to_string().contains("locked") => {
                assert!(tokio::time::Instant::now() < deadline, "{error}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => return error.to_string(),
        }
    }
}

const SECRETS: [&str; 3] = [ENDPOINT_SECRET, TOOL_SECRET, CLIENT_SECRET];

#[tokio::test]
async fn sealed_secrets_are_in_neither_the_files_nor_a_backup_and_still_sign() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();

    // Without a key, the search finds every secret in the store's files.
    let plain_dir = dir.path().join("plain");
    let server = TestServer::start(keyed(&plain_dir, None, &[])).await;
    store_secrets(&server, &receiver).await;
    server.stop().await;
    for secret in SECRETS {
        assert!(
            files_hold(&plain_dir, secret),
            "plain text is found: {secret}"
        );
    }

    let sealed_dir = dir.path().join("sealed");
    let server = TestServer::start(keyed(&sealed_dir, Some(KEY_A), &[])).await;
    let initech = store_secrets(&server, &receiver).await;
    delivery_is_signed(&server, &receiver, "sellado").await;
    client_token_verifies(&server, &initech).await;
    let copy = admin_backup(&server, ADMIN).await;
    assert!(copy.contains(&format!("sealed:v1:{}:", key_id(KEY_A))));
    for secret in SECRETS {
        assert!(!copy.contains(secret), "a backup holds {secret}");
    }
    server.stop().await;
    for secret in SECRETS {
        assert!(!files_hold(&sealed_dir, secret), "the files hold {secret}");
    }
}

#[tokio::test]
async fn a_rotation_reseals_every_secret_and_the_old_key_alone_opens_nothing() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = TestServer::start(keyed(&data, Some(KEY_A), &[])).await;
    let initech = store_secrets(&server, &receiver).await;
    server.stop().await;

    // The new key alone, or none: the start stops and says which variable to set.
    let error = start_error(keyed(&data, Some(KEY_B), &[])).await;
    assert!(
        error.contains(&format!("sealed with key {}", key_id(KEY_A)))
            && error.contains("TERTULIA_SECRET_KEY_PREVIOUS"),
        "{error}"
    );
    let error = start_error(keyed(&data, None, &[])).await;
    assert!(error.contains("TERTULIA_SECRET_KEY"), "{error}");

    // The new key with the old one as previous: resealed at start, and
    // every secret still does its job.
    let server = TestServer::start(keyed(&data, Some(KEY_B), &[KEY_A])).await;
    delivery_is_signed(&server, &receiver, "rotada").await;
    client_token_verifies(&server, &initech).await;
    let copy = admin_backup(&server, ADMIN).await;
    assert!(copy.contains(&format!("sealed:v1:{}:", key_id(KEY_B))));
    assert!(!copy.contains(&format!("sealed:v1:{}:", key_id(KEY_A))));
    server.stop().await;

    // The old key can go now; on its own it opens nothing.
    let server = TestServer::start(keyed(&data, Some(KEY_B), &[])).await;
    delivery_is_signed(&server, &receiver, "sin la vieja").await;
    client_token_verifies(&server, &initech).await;
    server.stop().await;
    let error = start_error(keyed(&data, Some(KEY_A), &[])).await;
    assert!(
        error.contains(&format!("sealed with key {}", key_id(KEY_B))),
        "{error}"
    );
}

#[tokio::test]
async fn a_key_that_is_not_32_bytes_of_base64_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let error = start_error(keyed(dir.path(), Some("not-a-key"), &[])).await;
    assert!(
        error.contains("TERTULIA_SECRET_KEY must be 32 bytes in base64"),
        "{error}"
    );
    let error = start_error(keyed(dir.path(), Some(KEY_A), &["c2hvcnQ="])).await;
    assert!(
        error.contains("TERTULIA_SECRET_KEY_PREVIOUS must be 32 bytes"),
        "{error}"
    );
}
