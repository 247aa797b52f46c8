//! Load generator for tertulia's WebSocket fan-out and per-socket memory.
//!
//! ```text
//! cargo bench --bench fanout                              # 1,000 subscribers: deliveries/s, chunk latency
//! ulimit -n 20000; cargo bench --bench fanout -- idle     # resident memory per idle socket (10,000 sockets)
//! ```
//!
//! Fan-out: the server runs in this process with an in-memory database and a
//! bench-only "clock" agent whose every chunk is the time it was emitted (µs
//! since the Unix epoch), so each client measures emission → receipt on the
//! same clock. One session, 1,000 subscribers, one asker.
//!
//! Idle: the release `tertulia` binary (and, as the baseline, a bare warp::ws
//! server in a child of this bench) gets N idle sockets; we read the server's
//! VmRSS from /proc before and after. Every loop is bounded in count and time.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tertulia_actors::model::TenantSettings;
use tertulia_actors::runtime::AgentProvider;
use tokio_tungstenite::tungstenite::Message;

#[path = "common/clock.rs"]
mod clock;
mod common;
#[path = "common/socket.rs"]
mod socket;

use clock::{Clock, stamp_latencies, unix_micros};
use socket::connect;

const KEY: &str = "tk_bench";
const SUBSCRIBERS: usize = 1000;
const IDLE_SOCKETS: usize = 10_000;
/// Nothing in this bench may run longer than this.
const LIMIT: Duration = Duration::from_secs(120);

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| arg != "--bench")
        .collect();
    if let Some(port) = args.iter().position(|arg| arg == "--warp-baseline-server") {
        return warp_baseline_server(args[port + 1].parse().unwrap());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if args.iter().any(|arg| arg == "idle") {
        let sockets = args
            .iter()
            .find_map(|arg| arg.parse::<usize>().ok())
            .unwrap_or(IDLE_SOCKETS);
        runtime.block_on(idle(sockets));
    } else {
        runtime.block_on(fanout());
    }
}

/// Just what a client needs of a frame, borrowed: the bench's clients share
/// the two cores with the server, so they should cost little.
#[derive(serde::Deserialize)]
struct FrameView<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(borrow)]
    content: Option<&'a str>,
}

struct Scenario {
    name: &'static str,
    chunks: usize,
    interval: Duration,
}

async fn fanout() {
    println!("fan-out: 1 session, {SUBSCRIBERS} subscribers, in-process server, mem:// storage");
    println!(
        "{:<28} {:>10} {:>14} {:>10} {:>10} {:>10} {:>8}",
        "scenario", "chunks", "deliveries/s", "p50 µs", "p99 µs", "max µs", "closed"
    );
    for scenario in [
        Scenario {
            name: "LLM pace (100 chunks, 20 ms)",
            chunks: 100,
            interval: Duration::from_millis(20),
        },
        Scenario {
            name: "paced (200 chunks, 5 ms)",
            chunks: 200,
            interval: Duration::from_millis(5),
        },
        Scenario {
            name: "burst (2000 chunks, 0 ms)",
            chunks: 2000,
            interval: Duration::ZERO,
        },
    ] {
        run_fanout(&scenario).await;
    }
}

async fn run_fanout(scenario: &Scenario) {
    let mut config = tertulia::config::Config::default();
    config.server.bind = "127.0.0.1:0".into();
    config.storage.endpoint = Some("mem://".into());
    config.tenants.insert(
        "bench".into(),
        TenantSettings {
            name: "Bench".into(),
            api_keys: vec![KEY.into()],
            greeting: "hi".into(),
            agent: "clock".into(),
            // Every client connects from 127.0.0.1: lift the per-IP limit.
            rate_limits: common::unlimited(),
            ..TenantSettings::default()
        },
    );
    let mut agents: HashMap<String, Arc<dyn AgentProvider>> = HashMap::new();
    agents.insert(
        "clock".into(),
        Arc::new(Clock {
            chunks: scenario.chunks,
            interval: scenario.interval,
        }),
    );
    let server = tertulia::start(config, agents)
        .await
        .expect("server starts");
    let addr = server.addr;
    let session = create_session(&addr.to_string()).await;
    let url = format!("ws://{addr}/chat/ws/{session}");

    // Connect everyone (100 at a time), each reading its greeting.
    let mut sockets = Vec::with_capacity(SUBSCRIBERS + 1);
    for batch in 0..=(SUBSCRIBERS / 100) {
        let wanted = (SUBSCRIBERS + 1 - batch * 100).min(100);
        let connects = (0..wanted).map(|_| connect(&url, KEY));
        sockets.extend(futures_util::future::join_all(connects).await);
    }
    let mut asker = sockets.pop().unwrap();

    let (results_tx, mut results_rx) = tokio::sync::mpsc::unbounded_channel();
    for mut socket in sockets {
        let results = results_tx.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(4096);
            let mut last_receipt = 0;
            let outcome = tokio::time::timeout(LIMIT, async {
                while let Some(Ok(message)) = socket.next().await {
                    let Message::Text(text) = message else {
                        continue;
                    };
                    let received = unix_micros();
                    let frame: FrameView = serde_json::from_str(&text).unwrap();
                    match frame.kind {
                        "chunk" => {
                            let content = frame.content.unwrap_or_default();
                            latencies.extend(stamp_latencies(content, received));
                            last_receipt = received;
                        }
                        "done" => return true,
                        _ => {}
                    }
                }
                false
            })
            .await;
            let _ = results.send((outcome.unwrap_or(false), latencies, last_receipt));
        });
    }
    drop(results_tx);

    let started = unix_micros();
    asker
        .send(Message::Text(
            json!({"type": "message", "content": "go"})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();

    let mut latencies = Vec::with_capacity(SUBSCRIBERS * scenario.chunks);
    let mut finished = 0;
    let mut closed = 0;
    let mut last = started;
    while let Some((complete, mut mine, last_receipt)) = results_rx.recv().await {
        if complete {
            finished += 1;
        } else {
            closed += 1;
        }
        last = last.max(last_receipt);
        latencies.append(&mut mine);
    }
    latencies.sort_unstable();
    let at = |quantile: f64| latencies[((latencies.len() - 1) as f64 * quantile) as usize];
    let seconds = (last - started) as f64 / 1e6;
    println!(
        "{:<28} {:>10} {:>14.0} {:>10} {:>10} {:>10} {:>8}",
        scenario.name,
        scenario.chunks,
        latencies.len() as f64 / seconds,
        at(0.50),
        at(0.99),
        latencies.last().unwrap(),
        closed
    );
    assert_eq!(finished + closed, SUBSCRIBERS);
    drop(asker);
    server.shutdown().await;
}

async fn create_session(addr: &str) -> String {
    let body: Value = reqwest::Client::new()
        .post(format!("http://{addr}/chat/sessions"))
        .header("X-API-Key", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["session_id"].as_str().unwrap().to_owned()
}

async fn idle(sockets: usize) {
    // Client and server are separate processes: each holds one end of every socket.
    let open_files_needed = sockets + 512;
    let limit = std::fs::read_to_string("/proc/self/limits")
        .unwrap()
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| {
            line.split_whitespace()
                .nth(3)
                .and_then(|soft| soft.parse::<usize>().ok())
        })
        .unwrap_or(0);
    if limit < open_files_needed {
        eprintln!(
            "idle: {sockets} sockets need {open_files_needed} open files; raise it with `ulimit -n 20000` first (now {limit})"
        );
        std::process::exit(2);
    }
    println!(
        "idle: {sockets} idle WebSocket connections, server resident memory (VmRSS) from /proc"
    );
    println!(
        "{:<44} {:>12} {:>12} {:>14}",
        "server", "before KiB", "after KiB", "per socket KiB"
    );
    for (name, read_buffer) in [
        ("tertulia (read buffer 4 KiB, the default)", Some(4096)),
        ("tertulia (read buffer 128 KiB)", Some(128 * 1024)),
        ("bare warp::ws 0.4.3 (baseline)", None),
    ] {
        let (mut child, ws_url) = match read_buffer {
            Some(bytes) => spawn_tertulia(bytes).await,
            None => spawn_warp_baseline(),
        };
        // One socket first, so lazily allocated per-process state is not counted per socket.
        let warm = connect(&ws_url, KEY).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = rss_kib(child.id());
        let mut open = Vec::with_capacity(sockets);
        let deadline = Instant::now() + LIMIT;
        while open.len() < sockets && Instant::now() < deadline {
            let wanted = (sockets - open.len()).min(200);
            let batch =
                futures_util::future::join_all((0..wanted).map(|_| connect(&ws_url, KEY))).await;
            open.extend(batch);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = rss_kib(child.id());
        println!(
            "{:<44} {:>12} {:>12} {:>14.1}",
            name,
            before,
            after,
            (after.saturating_sub(before)) as f64 / open.len() as f64
        );
        drop(open);
        drop(warm);
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
        .unwrap()
}

/// The release binary, in-memory storage, with this read buffer.
async fn spawn_tertulia(read_buffer: usize) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tertulia"))
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("TERTULIA_STORAGE__ENDPOINT", "mem://")
        .env(
            "TERTULIA_WEBSOCKET__READ_BUFFER_BYTES",
            read_buffer.to_string(),
        )
        .env("TERTULIA_TENANTS__BENCH__API_KEYS", format!("[\"{KEY}\"]"))
        .env(
            "TERTULIA_TENANTS__BENCH__RATE_LIMITS__IP_PER_MINUTE",
            "1000000",
        )
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let addr = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let first = lines.next().unwrap().unwrap();
        std::thread::spawn(move || lines.for_each(drop));
        first.rsplit("http://").next().unwrap().trim().to_owned()
    })
    .await
    .unwrap();
    let session = create_session(&addr).await;
    (child, format!("ws://{addr}/chat/ws/{session}"))
}

fn spawn_warp_baseline() -> (Child, String) {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--warp-baseline-server", &port.to_string()])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the baseline server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, format!("ws://127.0.0.1:{port}/ws"))
}

/// The baseline: warp's own WebSocket filter with its defaults, holding each
/// socket open and reading from it, as an idle chat connection would be.
fn warp_baseline_server(port: u16) {
    use warp::Filter;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let route = warp::path("ws").and(warp::ws()).map(|ws: warp::ws::Ws| {
            ws.on_upgrade(|mut socket| async move {
                let _ = socket.send(warp::ws::Message::text("hello")).await;
                while let Some(Ok(_)) = socket.next().await {}
            })
        });
        let server = warp::serve(route).run(([127, 0, 0, 1], port));
        let _ = tokio::time::timeout(LIMIT * 2, server).await;
    });
}
