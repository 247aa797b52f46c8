//! Time to first token of one streamed answer through each protocol, in
//! one run against one server: the WebSocket (the baseline), the Vercel AI
//! SDK's UI message stream, n8n's chat widget (streaming) and AG-UI.
//!
//! ```text
//! cargo bench --bench adapters
//! ```
//!
//! The echo agent answers with no pause, storage is in memory, everything
//! is on loopback. Each round asks once through each protocol, in turn, on
//! a fresh conversation (the widget's is opened by an untimed first
//! message, as a visitor's first message opens it); the clock runs from the request (the socket's
//! `message` frame, the HTTP POST on a kept-alive connection) to the first
//! piece of answer text. What an adapter adds over the socket is the
//! difference of the medians: its HTTP request, the listener it attaches
//! and its translation. Bounded in count and time.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tertulia_actors::model::TenantSettings;
use tokio_tungstenite::tungstenite::Message;

mod common;

const KEY: &str = "tk_bench";
const ORIGIN: &str = "https://shop.example";
/// Measured rounds (`ADAPTERS_ROUNDS` overrides).
fn rounds() -> usize {
    std::env::var("ADAPTERS_ROUNDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(200)
}
/// Nothing in this bench may run longer than this.
const LIMIT: Duration = Duration::from_secs(300);

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

struct Bench {
    base: String,
    http: reqwest::Client,
    widget_key: String,
}

async fn bench() {
    let mut config = tertulia::config::Config::default();
    config.server.bind = "127.0.0.1:0".into();
    config.storage.endpoint = Some("mem://".into());
    config.agents.echo.word_delay_ms = 0;
    config.auth.admin_token = "adm_bench".into();
    config.tenants.clear();
    config.tenants.insert(
        "bench".into(),
        TenantSettings {
            api_keys: vec![KEY.into()],
            allowed_origins: vec![ORIGIN.into()],
            rate_limits: common::unlimited(),
            ..TenantSettings::default()
        },
    );
    let server = tertulia::start(config, Default::default()).await.unwrap();
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{base}/admin/tenants/bench/keys"))
        .bearer_auth("adm_bench")
        .json(&json!({"kind": "widget"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let widget_key = created["key"].as_str().unwrap().to_owned();
    let bench = Bench {
        base,
        http,
        widget_key,
    };
    let names = ["websocket", "ai-sdk", "n8n-chat", "ag-ui"];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); names.len()];
    for round in 0..rounds() + 5 {
        for (index, sample) in samples.iter_mut().enumerate() {
            let took = bench.first_token(index, round).await;
            // The first rounds warm connections and caches.
            if round >= 5 {
                sample.push(took);
            }
        }
    }
    println!(
        "time to first token, one streamed answer, {} rounds:",
        rounds()
    );
    let baseline = median(&mut samples[0].clone());
    for (name, sample) in names.iter().zip(&mut samples) {
        let p50 = median(sample);
        let p99 = quantile(sample, 0.99);
        println!(
            "  {name:<10} p50 {:.3} ms  p99 {:.3} ms  (x{:.2} the socket's median, +{:.3} ms)",
            ms(p50),
            ms(p99),
            ms(p50) / ms(baseline),
            ms(p50) - ms(baseline)
        );
    }
    server.shutdown().await;
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn median(samples: &mut [Duration]) -> Duration {
    quantile(samples, 0.5)
}

fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * q).round() as usize]
}

impl Bench {
    async fn first_token(&self, protocol: usize, round: usize) -> Duration {
        let session = self.conversation().await;
        let text = format!("hola {round}");
        match protocol {
            0 => self.websocket(&session, &text).await,
            1 => {
                let body = json!({"id": session, "trigger": "submit-message", "messages": [
                    {"id": format!("m{round}"), "role": "user", "parts": [{"type": "text", "text": text}]}]});
                let request = self
                    .http
                    .post(format!("{}/ai-sdk/chat", self.base))
                    .header("X-API-Key", KEY);
                until(request.json(&body), "\"text-delta\"").await
            }
            2 => {
                // The widget's visitor is a webchat conversation, opened by
                // its first message: that one is not timed, the second is.
                let url = format!("{}/n8n-chat/{}", self.base, self.widget_key);
                let visitor = format!("bench-visitor-{round:08}");
                let send = |text: &str| {
                    let body =
                        json!({"action": "sendMessage", "sessionId": visitor, "chatInput": text});
                    let request = self.http.post(&url).header("Origin", ORIGIN);
                    request.header("Accept", "text/plain").json(&body)
                };
                until(send("abro"), "\"item\"").await;
                until(send(&text), "\"item\"").await
            }
            _ => {
                let body = json!({"threadId": session, "runId": format!("r{round}"), "messages": [
                    {"id": format!("m{round}"), "role": "user", "content": text}]});
                let request = self
                    .http
                    .post(format!("{}/ag-ui", self.base))
                    .header("X-API-Key", KEY);
                until(request.json(&body), "TEXT_MESSAGE_CONTENT").await
            }
        }
    }

    /// POSTs to `path` with the API key; its JSON answer.
    async fn post(&self, path: &str) -> Value {
        let request = self.http.post(format!("{}{path}", self.base));
        let response = request.header("X-API-Key", KEY).send().await.unwrap();
        response.json().await.unwrap()
    }

    async fn conversation(&self) -> String {
        let created = self.post("/chat/sessions").await;
        created["session_id"].as_str().unwrap().to_owned()
    }

    /// Connects (untimed, greeting read), then times message → first chunk.
    async fn websocket(&self, session: &str, text: &str) -> Duration {
        let ticket = self.post(&format!("/chat/sessions/{session}/ticket")).await;
        let url = ticket["websocket_url"].as_str().unwrap();
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        ws.next().await.unwrap().unwrap();
        let started = Instant::now();
        let frame = json!({"type": "message", "content": text}).to_string();
        ws.send(Message::text(frame)).await.unwrap();
        while let Some(Ok(message)) = ws.next().await {
            if message
                .to_text()
                .unwrap_or_default()
                .contains("\"type\":\"chunk\"")
            {
                let took = started.elapsed();
                let _ = ws.close(None).await;
                return took;
            }
        }
        panic!("the socket closed before the first chunk");
    }
}

/// Times a streamed POST until `marker` appears in its body, then reads the
/// rest (so the connection is reused).
async fn until(request: reqwest::RequestBuilder, marker: &str) -> Duration {
    let started = Instant::now();
    let mut response = request.send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let mut seen = Vec::new();
    let mut took = None;
    while let Some(piece) = response.chunk().await.unwrap() {
        seen.extend_from_slice(&piece);
        if took.is_none() && String::from_utf8_lossy(&seen).contains(marker) {
            took = Some(started.elapsed());
        }
    }
    took.unwrap_or_else(|| panic!("no {marker} in {}", String::from_utf8_lossy(&seen)))
}
