//! Does retention keep messages waiting? 100,000 delivered deliveries (and
//! their events) a month old are stored in a surrealkv data directory; a
//! server starts on it with a retention pass due after one second, while
//! sockets send messages without pause. The acknowledgement time of every
//! message (its `message` frame to its `ack`) is kept with whether a prune
//! was running then; the same load then runs again with nothing to prune.
//!
//! ```text
//! cargo bench --bench retention
//! RETENTION_ROWS=20000 cargo bench --bench retention
//! ```
//!
//! The echo agent answers with no pause, so each socket's next message
//! waits for the answer to its last. Bounded in rows and in time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tertulia_actors::model::TenantSettings;
use tokio_tungstenite::tungstenite::Message;

mod common;

const KEY: &str = "tk_bench";
const ADMIN: &str = "adm_bench";
const SOCKETS: usize = 20;
/// Nothing in this bench may run longer than this.
const LIMIT: Duration = Duration::from_secs(1500);
/// How long the same load runs with nothing to prune.
const QUIET: Duration = Duration::from_secs(30);

fn rows() -> usize {
    std::env::var("RETENTION_ROWS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(100_000)
}

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

fn config(dir: &std::path::Path, interval: &str) -> tertulia::config::Config {
    let mut config = tertulia::config::Config::default();
    config.server.bind = "127.0.0.1:0".into();
    config.storage.endpoint = None;
    config.storage.data_dir = dir.display().to_string();
    config.agents.echo.word_delay_ms = 0;
    config.auth.admin_token = ADMIN.into();
    config.egress.allow = vec!["127.0.0.0/8".into()];
    config.retention.interval = interval.into();
    config.tenants.clear();
    config.tenants.insert(
        "bench".into(),
        TenantSettings {
            api_keys: vec![KEY.into()],
            rate_limits: common::unlimited(),
            ..TenantSettings::default()
        },
    );
    config
}

async fn bench() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows();
    // An endpoint whose old deliveries are to be pruned; it wants no event
    // the load makes, so the load adds no deliveries.
    let server = tertulia::start(config(dir.path(), "1h"), Default::default())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://{}", server.addr);
    let created: Value = http
        .post(format!("{base}/admin/tenants/bench/webhooks"))
        .bearer_auth(ADMIN)
        .json(&json!({"url": "http://127.0.0.1:9/hook", "events": ["lead.captured"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let endpoint = created["endpoint_id"]
        .as_str()
        .expect("an endpoint")
        .to_owned();
    server.shutdown().await;
    let seeding = Instant::now();
    tertulia_actors::store_bench::seed_old_deliveries(dir.path(), "bench", &endpoint, rows, 30)
        .await;
    println!(
        "{rows} delivered deliveries and their events, 30 days old, stored in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );

    let server = start_when_unlocked(config(dir.path(), "1s")).await;
    let base = format!("http://{}", server.addr);
    let pruning = Arc::new(AtomicBool::new(true));
    let watcher = tokio::spawn(watch_prune(base.clone(), rows, pruning.clone()));
    let during = load(&base, || pruning.load(Ordering::SeqCst)).await;
    let prune_took = watcher.await.unwrap();
    let quiet_until = Instant::now() + QUIET;
    let after = load(&base, || Instant::now() < quiet_until).await;
    println!(
        "pruned in {:.1} s from start ({:.0} deliveries/s)",
        prune_took.as_secs_f64(),
        rows as f64
            / prune_took
                .saturating_sub(Duration::from_secs(1))
                .as_secs_f64()
    );
    report("while pruning", &during);
    report("nothing to prune", &after);
    let ratio = percentile(&during, 0.99).as_secs_f64() / percentile(&after, 0.99).as_secs_f64();
    println!("ack p99 while pruning / ack p99 without: {ratio:.2}x");
    server.shutdown().await;
}

/// Starts once the seeding's handle on the data directory is let go (the
/// engine releases its lock in a task of its own).
async fn start_when_unlocked(config: tertulia::config::Config) -> tertulia::RunningServer {
    let started = Instant::now();
    loop {
        match tertulia::start(config.clone(), Default::default()).await {
            Ok(server) => return server,
            Err(error) if error.to_string().contains("locked") && started.elapsed() < LIMIT => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("the server starts: {error}"),
        }
    }
}

/// Until retention has removed `rows` deliveries (read from `/metrics`,
/// which costs the database nothing); how long that took.
async fn watch_prune(base: String, rows: usize, pruning: Arc<AtomicBool>) -> Duration {
    let started = Instant::now();
    let http = reqwest::Client::new();
    loop {
        let scrape = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let pruned: f64 = scrape
            .lines()
            .find(|line| line.starts_with("tertulia_pruned_total{kind=\"delivery\"}"))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0.0);
        if pruned >= rows as f64 {
            pruning.store(false, Ordering::SeqCst);
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `SOCKETS` sockets send messages one after another while `go` holds;
/// every message's time to its ack.
async fn load(base: &str, go: impl Fn() -> bool + Send + Sync) -> Vec<Duration> {
    let http = reqwest::Client::new();
    let mut sockets = Vec::new();
    for _ in 0..SOCKETS {
        let created: Value = http
            .post(format!("{base}/chat/sessions"))
            .header("X-API-Key", KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let url = created["websocket_url"].as_str().unwrap().to_owned();
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        ws.next().await.unwrap().unwrap();
        sockets.push(ws);
    }
    let go = &go;
    let talkers = sockets.into_iter().map(|mut ws| async move {
        let mut acks = Vec::new();
        while go() {
            let sent = Instant::now();
            let frame = json!({"type": "message", "content": "¿dónde está mi pedido?"});
            ws.send(Message::text(frame.to_string())).await.unwrap();
            loop {
                let message = ws.next().await.unwrap().unwrap();
                let text = message.to_text().unwrap_or_default();
                if text.contains("\"type\":\"ack\"") {
                    acks.push(sent.elapsed());
                } else if text.contains("\"type\":\"done\"") {
                    break;
                }
            }
        }
        acks
    });
    futures_util::future::join_all(talkers)
        .await
        .into_iter()
        .flatten()
        .collect()
}

fn percentile(samples: &[Duration], at: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[((sorted.len() as f64 * at) as usize).min(sorted.len() - 1)]
}

fn report(label: &str, samples: &[Duration]) {
    println!(
        "{label:<18} {:>6} acks  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
        samples.len(),
        percentile(samples, 0.5).as_secs_f64() * 1000.0,
        percentile(samples, 0.99).as_secs_f64() * 1000.0,
        percentile(samples, 1.0).as_secs_f64() * 1000.0,
    );
}
