//! Starts the whole server on 127.0.0.1:0 with a real embedded database, and
//! talks to it as clients do: reqwest for REST, tokio-tungstenite for sockets.

use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tertulia::RunningServer;
use tertulia::config::Config;
use tertulia_actors::model::TenantSettings;
use tertulia_actors::runtime::AgentRegistry;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const KEY: &str = "tk_test_acme";
pub const OTHER_KEY: &str = "tk_test_globex";
/// Signs acme's client tokens in tests.
pub const ACME_CLIENT_SECRET: &str = "acme-client-token-secret-0123456789";
/// How long any single expectation may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Two tenants (`acme`, `globex`), the echo agent streaming with no pause,
/// in-memory storage. Tests adjust what they need.
pub fn config() -> Config {
    let mut config = Config::default();
    config.server.bind = "127.0.0.1:0".into();
    config.storage.endpoint = Some("mem://".into());
    config.agents.echo.word_delay_ms = 0;
    // Every test calls from 127.0.0.1, and some refuse many credentials on
    // purpose; `brute_force.rs` tests the limit itself.
    config.server.auth_failures_per_minute = 100_000;
    // The fake model, tools and receivers of the tests listen on loopback.
    config.egress.allow = vec!["127.0.0.0/8".into(), "::1".into()];
    config.tenants.clear();
    config.tenants.insert(
        "acme".into(),
        TenantSettings {
            name: "Acme".into(),
            api_keys: vec![KEY.into()],
            greeting: "Hola, ¿en qué te ayudo?".into(),
            agent: "echo".into(),
            client_token_secret: ACME_CLIENT_SECRET.into(),
            ..TenantSettings::default()
        },
    );
    config.tenants.insert(
        "globex".into(),
        TenantSettings {
            name: "Globex".into(),
            api_keys: vec![OTHER_KEY.into()],
            greeting: "Hi from Globex".into(),
            agent: "echo".into(),
            ..TenantSettings::default()
        },
    );
    config
}

/// A config storing in a surrealkv directory, for tests that restart.
pub fn durable_config(dir: &Path) -> Config {
    let mut config = config();
    config.storage.endpoint = None;
    config.storage.data_dir = dir.display().to_string();
    config
}

pub struct TestServer {
    pub server: RunningServer,
    pub http: reqwest::Client,
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        TestServer::start_with_agents(config, AgentRegistry::new()).await
    }

    pub async fn start_with_agents(config: Config, agents: AgentRegistry) -> TestServer {
        // A server stopped earlier in this process releases its surrealkv lock
        // once the engine's own task has shut the store down: poll for that.
        // (Between processes the OS releases it at exit.)
        let started = tokio::time::Instant::now();
        let server = loop {
            match tertulia::start(config.clone(), agents.clone()).await {
                Ok(server) => break server,
                Err(error)
                    if error.to_string().contains("locked") && started.elapsed() < DEADLINE =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => panic!("server starts: {error}"),
            }
        };
        TestServer {
            server,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.addr)
    }

    /// Creates a conversation as `acme`; returns `(session_id, websocket_url)`.
    pub async fn create_session(&self) -> (String, String) {
        let body: Value = self
            .http
            .post(self.url("/chat/sessions"))
            .header("X-API-Key", KEY)
            .json(&json!({"context": {"plan": "pro"}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (
            body["session_id"].as_str().unwrap().to_owned(),
            body["websocket_url"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn get(&self, path: &str, key: Option<&str>) -> (u16, Value) {
        let mut request = self.http.get(self.url(path));
        if let Some(key) = key {
            request = request.header("X-API-Key", key);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// POSTs `body` as JSON with this key; the status and the JSON answer.
    pub async fn post(&self, path: &str, key: &str, body: Value) -> (u16, Value) {
        status_and_json(
            self.http
                .post(self.url(path))
                .header("X-API-Key", key)
                .json(&body),
        )
        .await
    }

    /// acme's newest recorded events of these types (in the outbox), newest first.
    pub async fn acme_events(&self, kinds: &[&str]) -> Vec<tertulia_actors::model::EventRecord> {
        let acme = tertulia_actors::model::TenantId("acme".into());
        let mut events = self.server.runtime.events(&acme, None, 100).await.unwrap();
        events.retain(|event| kinds.contains(&event.kind.as_str()));
        events
    }

    pub async fn history(&self, session: &str) -> Vec<Value> {
        let (status, body) = self
            .get(&format!("/chat/sessions/{session}/history"), Some(KEY))
            .await;
        assert_eq!(status, 200, "{body}");
        body["history"].as_array().unwrap().clone()
    }

    /// Connects with the `websocket_url` as a browser would (ticket, no header),
    /// and reads the greeting.
    pub async fn connect(&self, websocket_url: &str) -> Ws {
        let mut ws = self.connect_raw(websocket_url).await;
        let greeting = next_frame(&mut ws).await;
        assert_eq!(greeting["type"], "system", "{greeting}");
        ws
    }

    pub async fn connect_raw(&self, websocket_url: &str) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(websocket_url)
            .await
            .expect("socket connects");
        ws
    }

    pub async fn stop(self) {
        self.server.shutdown().await;
    }
}

/// A response header's text, or empty when it is absent.
pub fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// POSTs `body` to `path` with `token` as the admin bearer; status and JSON answer.
pub async fn admin_post(server: &TestServer, token: &str, path: &str, body: Value) -> (u16, Value) {
    status_and_json(
        server
            .http
            .post(server.url(path))
            .bearer_auth(token)
            .json(&body),
    )
    .await
}

/// Sends `request`; its status and JSON answer (`null` when it is not JSON).
async fn status_and_json(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `GET /admin/backup` with `token`: the whole database as SurrealQL.
pub async fn admin_backup(server: &TestServer, token: &str) -> String {
    let response = server
        .http
        .get(server.url("/admin/backup"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// Makes a key of `kind` (`api`, `widget`) for `tenant` through the admin API.
pub async fn make_key(server: &TestServer, admin_token: &str, tenant: &str, kind: &str) -> String {
    let response = server
        .http
        .post(server.url(&format!("/admin/tenants/{tenant}/keys")))
        .bearer_auth(admin_token)
        .json(&if kind == "staff" {
            json!({"kind": kind, "name": format!("{tenant} staff")})
        } else {
            json!({"kind": kind})
        })
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    body["key"].as_str().unwrap().to_owned()
}

/// A client token for one of acme's end users.
pub fn client_token(client_id: &str) -> String {
    tertulia::auth::tokens::mint_client_token(
        ACME_CLIENT_SECRET,
        client_id,
        Duration::from_secs(600),
    )
    .0
}

pub async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
}

/// The next JSON text frame other than `presence` (sent whenever anyone joins
/// or leaves; `presence.rs` tests those); fails the test on anything else or
/// after the deadline.
pub async fn next_frame(ws: &mut Ws) -> Value {
    loop {
        let frame = next_any_frame(ws).await;
        if frame["type"] != "presence" {
            return frame;
        }
    }
}

/// The next JSON text frame, whatever its type.
pub async fn next_any_frame(ws: &mut Ws) -> Value {
    loop {
        let message = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("a frame arrives before the deadline")
            .expect("the socket is open")
            .expect("the socket reads cleanly");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Reads frames until one has this `type`; returns it and everything before it.
pub async fn frames_until(ws: &mut Ws, kind: &str) -> (Value, Vec<Value>) {
    let mut before = Vec::new();
    loop {
        let frame = next_frame(ws).await;
        if frame["type"] == kind {
            return (frame, before);
        }
        before.push(frame);
    }
}

/// Sends a message and returns its `ack`.
pub async fn say(ws: &mut Ws, content: &str) -> Value {
    send(ws, json!({"type": "message", "content": content})).await;
    let (ack, _) = frames_until(ws, "ack").await;
    ack
}

/// The full text of the chunks in `frames`, honouring `snapshot` chunks.
pub fn chunk_text(frames: &[Value]) -> String {
    let mut text = String::new();
    for frame in frames.iter().filter(|frame| frame["type"] == "chunk") {
        if frame["snapshot"] == true {
            text.clear();
        }
        text.push_str(frame["content"].as_str().unwrap());
    }
    text
}

/// The close frame the server sent, waiting past any other frames.
pub async fn close_of(ws: &mut Ws) -> (u16, String) {
    loop {
        let message = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("the socket closes before the deadline");
        match message {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.to_string());
            }
            Some(Ok(Message::Close(None))) | None => return (1005, String::new()),
            Some(Ok(_)) => continue,
            Some(Err(error)) => panic!("socket failed before a close frame: {error}"),
        }
    }
}

/// Polls `check` until it holds or the deadline passes.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = tokio::time::Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < DEADLINE,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
