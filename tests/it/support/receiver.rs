//! A real HTTP receiver for webhook deliveries, on a loopback port: it
//! records every request and answers as a test tells it (fail the next N,
//! a fixed status, hold requests until released), and can be stopped and
//! started again on the same port. Signatures are checked here from the
//! Standard Webhooks specification, independently of `signing.rs`, and
//! payloads against `schemas/events/`.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::{Notify, oneshot, watch};
use warp::Filter;
use warp::http::HeaderMap;

use crate::support::server::DEADLINE;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The status the receiver answered.
    pub answered: u16,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|value| value.to_str().unwrap())
            .unwrap_or("")
    }

    pub fn delivered(&self) -> bool {
        (200..300).contains(&self.answered)
    }
}

struct Shared {
    received: Mutex<Vec<Received>>,
    arrived: Notify,
    /// Answer 500 to this many more requests.
    fail_next: AtomicUsize,
    /// The status of every other answer.
    status: AtomicU16,
    /// A `Location` to redirect to (with status 302) when set.
    redirect: Mutex<Option<String>>,
    /// While true, requests wait before being answered.
    hold: watch::Sender<bool>,
}

pub struct Receiver {
    pub port: u16,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        Receiver::start_on(0).await
    }

    /// A receiver on this port (0: any free one).
    pub async fn start_on(port: u16) -> Receiver {
        let (hold, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            received: Mutex::new(Vec::new()),
            arrived: Notify::new(),
            fail_next: AtomicUsize::new(0),
            status: AtomicU16::new(200),
            redirect: Mutex::new(None),
            hold,
        });
        let mut receiver = Receiver {
            port,
            shared,
            stop: None,
        };
        receiver.serve().await;
        receiver
    }

    async fn serve(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        self.port = listener.local_addr().unwrap().port();
        let shared = self.shared.clone();
        let route = warp::post()
            .and(warp::path::full())
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .then(
                move |path: warp::path::FullPath, headers: HeaderMap, body: Bytes| {
                    let shared = shared.clone();
                    async move {
                        let mut held = shared.hold.subscribe();
                        while *held.borrow_and_update() {
                            if held.changed().await.is_err() {
                                break;
                            }
                        }
                        let redirect = shared.redirect.lock().unwrap().clone();
                        let answered = if redirect.is_some() {
                            302
                        } else if shared
                            .fail_next
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok()
                        {
                            500
                        } else {
                            shared.status.load(Ordering::SeqCst)
                        };
                        shared.received.lock().unwrap().push(Received {
                            path: path.as_str().to_owned(),
                            headers,
                            body,
                            answered,
                        });
                        shared.arrived.notify_waiters();
                        let status = warp::http::StatusCode::from_u16(answered).unwrap();
                        let mut reply = warp::http::Response::builder().status(status);
                        if let Some(location) = redirect {
                            reply = reply.header("location", location);
                        }
                        reply.body(String::from("ok")).unwrap()
                    }
                },
            );
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(
            warp::serve(route)
                .incoming(listener)
                .graceful(async move {
                    let _ = stopped.await;
                })
                .run(),
        );
        self.stop = Some(stop);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Stops listening (connections are refused) until `restart`.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // The listener closes once the server task has seen the signal.
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_ok()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "receiver did not stop"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Listens again on the same port (if stopped).
    pub async fn restart(&mut self) {
        if self.stop.is_none() {
            self.serve().await;
        }
    }

    pub fn fail_next(&self, count: usize) {
        self.shared.fail_next.store(count, Ordering::SeqCst);
    }

    pub fn answer(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    pub fn redirect_to(&self, location: Option<String>) {
        *self.shared.redirect.lock().unwrap() = location;
    }

    /// Holds every request until `release`.
    pub fn hold(&self) {
        self.shared.hold.send_replace(true);
    }

    pub fn release(&self) {
        self.shared.hold.send_replace(false);
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Waits until `check` holds for what has arrived.
    pub async fn wait_for(&self, what: &str, check: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        self.wait_for_within(what, DEADLINE, check).await
    }

    pub async fn wait_for_within(
        &self,
        what: &str,
        within: Duration,
        check: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let arrived = self.shared.arrived.notified();
            let received = self.received();
            if check(&received) {
                return received;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for: {what}; got {received:#?}"
            );
            let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), arrived).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Whether `header` (space-separated `v1,<base64>` entries) holds a valid
/// signature of `id.timestamp.body` with `secret` (`whsec_<base64>`),
/// computed here from the specification.
pub fn signed_with(secret: &str, received: &Received) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    let signed = format!(
        "{}.{}.",
        received.header("webhook-id"),
        received.header("webhook-timestamp")
    );
    mac.update(signed.as_bytes());
    mac.update(&received.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    received
        .header("webhook-signature")
        .split(' ')
        .any(|entry| entry == expected)
}

/// The schema of an event type, from `schemas/events/`.
pub fn schema(kind: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas/events")
        .join(format!("{kind}.schema.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The JSON type names a value has (`integer` is also a `number`).
fn json_types(value: &Value) -> Vec<&'static str> {
    match value {
        Value::Null => vec!["null"],
        Value::Bool(_) => vec!["boolean"],
        Value::Number(number) if number.is_u64() || number.is_i64() => vec!["integer", "number"],
        Value::Number(_) => vec!["number"],
        Value::String(_) => vec!["string"],
        Value::Array(_) => vec!["array"],
        Value::Object(_) => vec!["object"],
    }
}

/// The payload has exactly the envelope and `data` keys its schema lists,
/// each of an allowed type (and in its `enum`, if any).
pub fn assert_matches_schema(payload: &Value) {
    let kind = payload["type"].as_str().unwrap();
    let schema = schema(kind);
    let keys = |value: &Value| -> BTreeSet<String> {
        value.as_object().unwrap().keys().cloned().collect()
    };
    assert_eq!(
        keys(payload),
        keys(&schema["properties"]),
        "{kind} envelope"
    );
    let data_schema = &schema["properties"]["data"]["properties"];
    assert_eq!(
        keys(&payload["data"]),
        keys(data_schema),
        "{kind} data keys"
    );
    for (key, value) in payload["data"].as_object().unwrap() {
        let allowed: Vec<&str> = match &data_schema[key]["type"] {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().map(|t| t.as_str().unwrap()).collect(),
            other => panic!("{kind}.{key}: type {other}"),
        };
        assert!(
            json_types(value).iter().any(|t| allowed.contains(t)),
            "{kind}.{key} = {value} is not {allowed:?}"
        );
        if let Some(options) = data_schema[key]["enum"].as_array() {
            assert!(options.contains(value), "{kind}.{key} = {value}");
        }
    }
    assert!(
        payload["id"].as_str().unwrap().starts_with("evt_"),
        "{payload}"
    );
}
