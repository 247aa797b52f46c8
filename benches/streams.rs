//! Durable Streams against the WebSocket path, in one run.
//!
//! ```text
//! cargo bench --bench streams
//! ```
//!
//! The server runs in this process, storing in surrealkv in a temp dir
//! (group commit, synced), so an append waits for the disk as it would in
//! production.
//!
//! - Append: durable appends one after another, each waited for: a
//!   socket's `message` → its `ack` in a conversation, and a `POST` to a
//!   JSON stream → its 204. Both go through the same persistence actor.
//! - Tail: one conversation answered by the clock agent (each chunk is the
//!   time it was emitted), read at the same time by a WebSocket, a Durable
//!   Streams SSE reader and a long-poll reader of the conversation's stream:
//!   each measures every chunk's emission → receipt.
//!
//! Bounded: a fixed number of rounds, each phase under `LIMIT`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tertulia_actors::model::TenantSettings;
use tertulia_actors::runtime::AgentProvider;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

#[path = "common/clock.rs"]
mod clock;
mod common;
#[path = "common/socket.rs"]
mod socket;

use clock::{Clock, stamp_latencies, unix_micros};
use socket::Socket;

const KEY: &str = "tk_bench_echo";
const CLOCK_KEY: &str = "tk_bench_clock";
/// Appends measured on each path.
const APPENDS: usize = 500;
/// Answers tailed, each of `CHUNKS` chunks `PACE` apart (an LLM's pace).
const ANSWERS: usize = 10;
const CHUNKS: usize = 100;
const PACE: Duration = Duration::from_millis(20);
/// No phase may run longer than this.
const LIMIT: Duration = Duration::from_secs(120);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let server = tertulia::start(config(dir.path()), agents())
        .await
        .expect("server starts");
    let base = format!("http://{}", server.addr);
    println!("Durable Streams vs WebSocket: in-process server, surrealkv storage, one run");
    println!(
        "{:<44} {:>8} {:>10} {:>10}",
        "path", "samples", "p50 µs", "p99 µs"
    );
    let (socket_acks, stream_appends) = tokio::time::timeout(LIMIT, appends(&base))
        .await
        .expect("the append phase ends in time");
    report("append: WebSocket message → ack", socket_acks);
    report("append: POST to a JSON stream → 204", stream_appends);
    let tails = tokio::time::timeout(LIMIT, tails(&base))
        .await
        .expect("the tail phase ends in time");
    for (name, latencies) in tails {
        // Each chunk exactly once on every path, or the figures mean nothing.
        assert_eq!(latencies.len(), ANSWERS * CHUNKS, "{name}");
        report(name, latencies);
    }
    server.shutdown().await;
}

fn config(dir: &std::path::Path) -> tertulia::config::Config {
    let mut config = tertulia::config::Config::default();
    config.server.bind = "127.0.0.1:0".into();
    config.storage.data_dir = dir.display().to_string();
    config.agents.echo.word_delay_ms = 0;
    for (tenant, key, agent) in [("echo", KEY, "echo"), ("clock", CLOCK_KEY, "clock")] {
        config.tenants.insert(
            tenant.into(),
            TenantSettings {
                name: tenant.into(),
                api_keys: vec![key.into()],
                greeting: "hi".into(),
                agent: agent.into(),
                rate_limits: common::unlimited(),
                ..TenantSettings::default()
            },
        );
    }
    config
}

fn agents() -> HashMap<String, Arc<dyn AgentProvider>> {
    let clock = Clock {
        chunks: CHUNKS,
        interval: PACE,
    };
    HashMap::from([(
        "clock".to_owned(),
        Arc::new(clock) as Arc<dyn AgentProvider>,
    )])
}

/// Each path's append latencies, one append at a time, taking turns.
async fn appends(base: &str) -> (Vec<u64>, Vec<u64>) {
    let http = reqwest::Client::new();
    let session = create_session(&http, base, KEY).await;
    let mut socket = connect(base, &session, KEY).await;
    let stream = format!("{base}/ds/echo/v1/stream/bench-log");
    let created = http
        .put(&stream)
        .header("x-api-key", KEY)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let (mut acks, mut appends) = (Vec::new(), Vec::new());
    for round in 0..APPENDS {
        let frame = json!({"type": "message", "content": format!("note {round}")});
        let sent = Instant::now();
        socket
            .send(Message::Text(frame.to_string().into()))
            .await
            .unwrap();
        wait_for(&mut socket, "ack").await;
        acks.push(sent.elapsed().as_micros() as u64);
        // The echo answer is written before the next round, out of the way.
        wait_for(&mut socket, "done").await;
        let sent = Instant::now();
        let appended = http
            .post(&stream)
            .header("x-api-key", KEY)
            .header("content-type", "application/json")
            .body(json!({"note": round}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(appended.status(), 204);
        appends.push(sent.elapsed().as_micros() as u64);
    }
    (acks, appends)
}

/// One conversation's chunks, as a WebSocket, an SSE reader and a
/// long-poll reader received them.
async fn tails(base: &str) -> Vec<(&'static str, Vec<u64>)> {
    let http = reqwest::Client::new();
    let session = create_session(&http, base, CLOCK_KEY).await;
    let mut asker = connect(base, &session, CLOCK_KEY).await;
    let mut watcher = connect(base, &session, CLOCK_KEY).await;
    let url = format!("{base}/ds/clock/v1/conversation/{session}");
    let (sse_tx, mut sse_rx) = mpsc::unbounded_channel();
    let (poll_tx, mut poll_rx) = mpsc::unbounded_channel();
    let sse = tokio::spawn(read_sse(http.clone(), url.clone(), sse_tx));
    let poll = tokio::spawn(read_long_poll(http.clone(), url, poll_tx));
    // Both readers are attached before the first question.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut socket, mut by_sse, mut by_poll) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ANSWERS {
        let frame = json!({"type": "message", "content": format!("q{round}")});
        asker
            .send(Message::Text(frame.to_string().into()))
            .await
            .unwrap();
        socket.extend(chunks_until_done(&mut watcher).await);
        for (rx, into) in [(&mut sse_rx, &mut by_sse), (&mut poll_rx, &mut by_poll)] {
            // Each reader reports an answer's chunks once it has its stored message.
            into.extend(rx.recv().await.expect("the reader goes on"));
        }
    }
    sse.abort();
    poll.abort();
    vec![
        ("tail: WebSocket chunk", socket),
        ("tail: Durable Streams SSE chunk", by_sse),
        ("tail: Durable Streams long-poll chunk", by_poll),
    ]
}

/// The latencies of a stream reader's chunks in one body of items; sends
/// them on when an answer's stored message arrives.
struct Collector {
    latencies: Vec<u64>,
    out: mpsc::UnboundedSender<Vec<u64>>,
}

impl Collector {
    fn take(&mut self, items: &[Value], received: u64) {
        for item in items {
            match item["type"].as_str() {
                Some("chunk") => {
                    let content = item["content"].as_str().unwrap_or_default();
                    self.latencies.extend(stamp_latencies(content, received));
                }
                Some("message") if item["message"]["role"] == "assistant" => {
                    let _ = self.out.send(std::mem::take(&mut self.latencies));
                }
                _ => {}
            }
        }
    }
}

async fn read_sse(http: reqwest::Client, url: String, out: mpsc::UnboundedSender<Vec<u64>>) {
    let mut collector = Collector {
        latencies: Vec::new(),
        out,
    };
    let mut offset = "now".to_owned();
    // A response lasts a minute; the reader carries on from its offset.
    loop {
        let mut response = http
            .get(&url)
            .header("x-api-key", CLOCK_KEY)
            .query(&[("offset", offset.as_str()), ("live", "sse")])
            .send()
            .await
            .unwrap();
        let mut buffer = String::new();
        while let Ok(Some(piece)) = response.chunk().await {
            let received = unix_micros();
            buffer.push_str(std::str::from_utf8(&piece).unwrap());
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                let data: String = event
                    .lines()
                    .filter_map(|line| line.strip_prefix("data:"))
                    .collect();
                let value: Value = serde_json::from_str(&data).unwrap();
                match event.starts_with("event: data") {
                    true => collector.take(value.as_array().unwrap(), received),
                    false => offset = value["streamNextOffset"].as_str().unwrap().to_owned(),
                }
            }
        }
    }
}

async fn read_long_poll(http: reqwest::Client, url: String, out: mpsc::UnboundedSender<Vec<u64>>) {
    let mut collector = Collector {
        latencies: Vec::new(),
        out,
    };
    let mut offset = "now".to_owned();
    loop {
        let response = http
            .get(&url)
            .header("x-api-key", CLOCK_KEY)
            .query(&[("offset", offset.as_str()), ("live", "long-poll")])
            .send()
            .await
            .unwrap();
        offset = response.headers()["stream-next-offset"]
            .to_str()
            .unwrap()
            .to_owned();
        if response.status() == 200 {
            let body = response.bytes().await.unwrap();
            let received = unix_micros();
            let items: Value = serde_json::from_slice(&body).unwrap();
            collector.take(items.as_array().unwrap(), received);
        }
    }
}

/// A socket's chunk latencies up to its answer's `done`.
async fn chunks_until_done(socket: &mut Socket) -> Vec<u64> {
    let mut latencies = Vec::new();
    while let Some(Ok(message)) = socket.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let received = unix_micros();
        let frame: Value = serde_json::from_str(&text).unwrap();
        match frame["type"].as_str() {
            Some("chunk") => {
                let content = frame["content"].as_str().unwrap_or_default();
                latencies.extend(stamp_latencies(content, received));
            }
            Some("done") => return latencies,
            _ => {}
        }
    }
    panic!("the socket closed mid-answer")
}

async fn wait_for(socket: &mut Socket, kind: &str) {
    while let Some(Ok(message)) = socket.next().await {
        if let Message::Text(text) = message
            && serde_json::from_str::<Value>(&text).unwrap()["type"] == kind
        {
            return;
        }
    }
    panic!("the socket closed before `{kind}`")
}

fn report(name: &str, mut latencies: Vec<u64>) {
    latencies.sort_unstable();
    let at = |quantile: f64| latencies[((latencies.len() - 1) as f64 * quantile) as usize];
    println!(
        "{name:<44} {:>8} {:>10} {:>10}",
        latencies.len(),
        at(0.50),
        at(0.99)
    );
}

async fn create_session(http: &reqwest::Client, base: &str, key: &str) -> String {
    let body: Value = http
        .post(format!("{base}/chat/sessions"))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["session_id"].as_str().unwrap().to_owned()
}

async fn connect(base: &str, session: &str, key: &str) -> Socket {
    let url = format!("{}/chat/ws/{session}", base.replacen("http", "ws", 1));
    socket::connect(&url, key).await
}
