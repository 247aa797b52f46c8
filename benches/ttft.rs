//! Time to first token added by tertulia.
//!
//! ```text
//! cargo bench --bench ttft
//! ```
//!
//! A fake OpenAI-compatible server (in this process, on loopback) answers
//! every chat completion with SSE at once. The same server is measured two
//! ways, 100 concurrent sessions each, in rounds:
//!
//! - directly: an HTTP client POSTs the request and times until the first
//!   `content` delta arrives;
//! - through tertulia: a WebSocket client sends `message` and times until
//!   the first `chunk` frame arrives (the message is stored first, with an
//!   in-memory database, then the `openai` agent streams from the fake).
//!
//! The difference of the two distributions is what tertulia adds. Bounded in
//! count and time.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tertulia_actors::model::TenantSettings;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

mod common;
#[path = "common/request.rs"]
mod request;
#[path = "common/stats.rs"]
mod stats;

use stats::Stats;

const KEY: &str = "tk_bench";
/// Concurrent sessions (`TTFT_SESSIONS` overrides) and measured rounds.
fn sessions() -> usize {
    std::env::var("TTFT_SESSIONS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(100)
}
const ROUNDS: usize = 10;
/// Nothing in this bench may run longer than this.
const LIMIT: Duration = Duration::from_secs(120);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        tokio::time::timeout(LIMIT, bench())
            .await
            .expect("the bench finishes within its limit");
    });
}

async fn bench() {
    let provider = start_provider().await;
    // Warm both paths (connections, JIT-free but caches), then measure.
    let _ = direct(&provider, 1).await;
    let direct_samples = direct(&provider, ROUNDS).await;
    let (acks, through) = through_tertulia(&provider).await;
    let direct_stats = Stats::of(direct_samples);
    let ack_stats = Stats::of(acks);
    let through_stats = Stats::of(through);
    println!(
        "time to first token, {} concurrent sessions × {ROUNDS} rounds:",
        sessions()
    );
    println!("  direct to the provider: {direct_stats}");
    println!("  through tertulia:       {through_stats}");
    println!("    of which until the message is stored (ack): {ack_stats}");
    println!(
        "  added by tertulia: median {:.2} ms, p99 {:.2} ms",
        through_stats.p50 - direct_stats.p50,
        through_stats.p99 - direct_stats.p99
    );
}

/// The fake provider's base URL.
async fn start_provider() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let _ = socket.set_nodelay(true);
            tokio::spawn(serve(socket));
        }
    });
    base
}

/// Answers requests on one keep-alive connection: SSE, first content at once.
async fn serve(mut socket: TcpStream) {
    let mut buffer = Vec::new();
    while request::read_request(&mut socket, &mut buffer).await {
        let event = |delta: Value, finish: Value, usage: Value| {
            let choices = if delta.is_null() {
                json!([])
            } else {
                json!([{"index": 0, "delta": delta, "finish_reason": finish}])
            };
            let body = json!({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1_763_000_000, "model": "bench", "choices": choices, "usage": usage});
            format!("data: {body}\n\n")
        };
        let body = [
            event(
                json!({"role": "assistant", "content": "Hi"}),
                Value::Null,
                Value::Null,
            ),
            event(json!({"content": " there"}), Value::Null, Value::Null),
            event(json!({}), json!("stop"), Value::Null),
            event(
                Value::Null,
                Value::Null,
                json!({"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}),
            ),
            "data: [DONE]\n\n".to_owned(),
        ]
        .concat();
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if socket.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Times `rounds` × sessions() direct requests (sessions() at a time).
async fn direct(base: &str, rounds: usize) -> Vec<Duration> {
    let client = reqwest::Client::new();
    let url = format!("{base}/chat/completions");
    let body = json!({"model": "bench", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "system", "content": "bench"}, {"role": "user", "content": "hello"}]});
    let mut samples = Vec::new();
    for _ in 0..rounds {
        let calls = (0..sessions()).map(|_| {
            let client = client.clone();
            let url = url.clone();
            let body = body.clone();
            async move {
                let started = Instant::now();
                let mut response = client.post(url).json(&body).send().await.unwrap();
                let mut seen = Vec::new();
                while let Some(piece) = response.chunk().await.unwrap() {
                    seen.extend_from_slice(&piece);
                    if seen.windows(11).any(|w| w == br#""content":""#) {
                        break;
                    }
                }
                let elapsed = started.elapsed();
                while response.chunk().await.unwrap().is_some() {}
                elapsed
            }
        });
        samples.extend(futures_util::future::join_all(calls).await);
    }
    samples
}

/// Times `ROUNDS` × sessions() messages through tertulia (one socket per session).
async fn through_tertulia(provider: &str) -> (Vec<Duration>, Vec<Duration>) {
    let mut config = tertulia::config::Config::default();
    config.server.bind = "127.0.0.1:0".into();
    config.storage.endpoint = Some("mem://".into());
    let mut tenant = TenantSettings {
        name: "Bench".into(),
        api_keys: vec![KEY.into()],
        greeting: "hi".into(),
        agent: "openai".into(),
        rate_limits: common::unlimited(),
        ..TenantSettings::default()
    };
    tenant.openai.base_url = provider.to_owned();
    tenant.openai.api_key = "sk-bench".into();
    tenant.openai.model = "bench".into();
    config.tenants.insert("bench".into(), tenant);
    // The fake provider listens on loopback.
    config.egress.allow = vec!["127.0.0.0/8".into()];
    // TTFT_WEBHOOK=1: every message.created also goes to a webhook endpoint
    // (the fake provider answers it 200), so the outbox is on the path.
    if std::env::var("TTFT_WEBHOOK").is_ok_and(|value| value == "1") {
        config
            .webhooks
            .endpoints
            .push(tertulia_actors::config::WebhookEndpointConfig {
                name: "bench".into(),
                tenant: "bench".into(),
                url: format!("{provider}/hooks"),
                secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
                events: vec!["message.created".into()],
                ..Default::default()
            });
    }
    let server = tertulia::start(config, Default::default()).await.unwrap();
    let addr = server.addr.to_string();
    let http = reqwest::Client::new();
    let mut sockets = Vec::new();
    for _ in 0..sessions() {
        let created: Value = http
            .post(format!("http://{addr}/chat/sessions"))
            .header("X-API-Key", KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let url = created["websocket_url"].as_str().unwrap().to_owned();
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(4096);
        let (mut socket, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
            .await
            .unwrap();
        next_of(&mut socket, "system").await;
        sockets.push(socket);
    }
    // One warm-up round, then the measured ones.
    let mut samples = Vec::new();
    for round in 0..=ROUNDS {
        let asks = sockets.iter_mut().map(|socket| async move {
            let frame = json!({"type": "message", "content": "hello"}).to_string();
            let started = Instant::now();
            socket.send(Message::Text(frame.into())).await.unwrap();
            next_of(socket, "ack").await;
            let acked = started.elapsed();
            next_of(socket, "chunk").await;
            let elapsed = started.elapsed();
            next_of(socket, "done").await;
            (acked, elapsed)
        });
        let round_samples = futures_util::future::join_all(asks).await;
        if round > 0 {
            samples.extend(round_samples);
        }
    }
    server.shutdown().await;
    samples.into_iter().unzip()
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Reads until a frame of this type.
async fn next_of(socket: &mut Socket, kind: &str) {
    let needle = format!(r#""type":"{kind}""#);
    while let Some(message) = socket.next().await {
        if let Message::Text(text) = message.unwrap()
            && text.contains(&needle)
        {
            return;
        }
    }
    panic!("the socket closed before a {kind} frame");
}
