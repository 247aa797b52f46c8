//! The load generator for the side-by-side table in BENCHMARKS.md: the
//! release `tertulia` binary pinned to core 0, this load generator pinned to
//! core 1, the seed protocol (REST to create a conversation, a WebSocket to
//! talk in it), every frame read.
//!
//! ```sh
//! cargo bench --bench load                      # every cell, surrealkv (fsync on every commit)
//! LOAD_STORAGE=mem cargo bench --bench load     # the same on mem://
//! LOAD_BINARY=/path/to/old/tertulia cargo bench --bench load   # another build, same load
//! cargo bench --bench load -- send idle         # only these cells
//! ```
//!
//! Cells (each on a freshly started server, bounded in count and time):
//! - `send`: 500 conversations, one socket each, all send at once; the echo
//!   agent answers with no delay. Time from send to the first chunk.
//! - `paced`: the same with a 20 ms pause between the echo's 20 words (400 ms
//!   of pacing): first chunk and whole answer (`done`).
//! - `fanout`: one conversation, 1,000 subscribers, 5 questions a second:
//!   from the question sent to each subscriber's `done`, and the server's CPU
//!   time (from /proc) per frame delivered.
//! - `burst`: the same conversation, 200 questions at once: frames delivered
//!   per second until every subscriber has the 200th answer.
//! - `idle`: 5,000 conversations, one idle socket each: resident memory per
//!   socket, and how fast the sockets are accepted.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::Barrier;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const KEY: &str = "tk_load";
/// No cell may take longer than this.
const LIMIT: Duration = Duration::from_secs(120);
const SENDERS: usize = 500;
const SUBSCRIBERS: usize = 1000;
const FANOUT_QUESTIONS: usize = 20;
const BURST_QUESTIONS: usize = 200;
/// Sockets of the `idle` cell (`LOAD_IDLE_SOCKETS` changes it).
const IDLE_SOCKETS: usize = 5000;

fn main() {
    let cells: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    let wants = |cell: &str| cells.is_empty() || cells.iter().any(|wanted| wanted == cell);
    pin_to_core(std::process::id(), "1");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let storage = std::env::var("LOAD_STORAGE").unwrap_or_else(|_| "surrealkv".into());
    println!(
        "server: {} on core 0, storage {storage}; load generator on core 1",
        binary()
    );
    runtime.block_on(async {
        if wants("send") {
            send_at_once(&storage).await;
        }
        if wants("paced") {
            paced(&storage).await;
        }
        if wants("fanout") {
            fanout(&storage).await;
        }
        if wants("burst") {
            burst(&storage).await;
        }
        if wants("idle") {
            idle(&storage).await;
        }
    });
}

/// The server under test: `LOAD_BINARY`, or this build's release binary.
fn binary() -> String {
    std::env::var("LOAD_BINARY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_tertulia").to_owned())
}

/// Pins a process (every thread of it) to `cores`, with util-linux's taskset.
fn pin_to_core(pid: u32, cores: &str) {
    let pinned = Command::new("taskset")
        .args(["-a", "-cp", cores, &pid.to_string()])
        .stdout(Stdio::null())
        .status();
    if !matches!(pinned, Ok(status) if status.success()) {
        eprintln!("warning: taskset failed; process {pid} is not pinned to core {cores}");
    }
}

/// A running server and its data directory.
struct Server {
    /// None for a server started by hand (`LOAD_SERVER`).
    child: Option<Child>,
    pid: u32,
    addr: String,
    _data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Server {
    /// Starts the binary on core 0 with the echo agent pausing `word_delay_ms`;
    /// or, with `LOAD_SERVER=address,pid`, uses a server started by hand (under
    /// a profiler, say) with the same settings.
    async fn start(storage: &str, word_delay_ms: u64) -> Server {
        if let Ok(given) = std::env::var("LOAD_SERVER") {
            let (addr, pid) = given.split_once(',').expect("LOAD_SERVER=address,pid");
            return Server {
                child: None,
                pid: pid.parse().expect("a pid"),
                addr: addr.to_owned(),
                _data: tempfile::tempdir().expect("a directory"),
            };
        }
        let data = tempfile::tempdir().expect("a data directory");
        let mut command = Command::new("taskset");
        command
            .args(["-c", "0", &binary(), "serve", "--bind", "127.0.0.1:0"])
            .env("TERTULIA_TENANTS__LOAD__API_KEYS", format!("[\"{KEY}\"]"))
            .env("TERTULIA_TENANTS__LOAD__AGENT", "echo")
            .env(
                "TERTULIA_AGENTS__ECHO__WORD_DELAY_MS",
                word_delay_ms.to_string(),
            )
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (limit, value) in [
            ("IP_PER_MINUTE", "100000000"),
            ("API_KEY_PER_MINUTE", "100000000"),
            ("SESSION_MESSAGES_PER_MINUTE", "100000000"),
        ] {
            command.env(
                format!("TERTULIA_TENANTS__LOAD__RATE_LIMITS__{limit}"),
                value,
            );
        }
        match storage {
            "mem" => command.env("TERTULIA_STORAGE__ENDPOINT", "mem://"),
            _ => command.env("TERTULIA_STORAGE__DATA_DIR", data.path()),
        };
        let mut child = command.spawn().expect("the server starts");
        let stdout = child.stdout.take().expect("its stdout");
        let addr = tokio::task::spawn_blocking(move || {
            use std::io::BufRead;
            let mut lines = std::io::BufReader::new(stdout).lines();
            let first = lines.next().expect("a line").expect("readable");
            std::thread::spawn(move || lines.for_each(drop));
            first
                .rsplit("http://")
                .next()
                .expect("an address")
                .trim()
                .to_owned()
        })
        .await
        .expect("the address");
        Server {
            pid: child.id(),
            child: Some(child),
            addr,
            _data: data,
        }
    }

    fn pid(&self) -> u32 {
        self.pid
    }

    /// A new conversation's socket URL.
    async fn conversation(&self, http: &reqwest::Client) -> String {
        let body: Value = http
            .post(format!("http://{}/chat/sessions", self.addr))
            .header("X-API-Key", KEY)
            .send()
            .await
            .expect("the session API answers")
            .json()
            .await
            .expect("JSON");
        body["session_id"]
            .as_str()
            .expect("a session id")
            .to_owned()
    }

    fn socket_url(&self, session: &str) -> String {
        format!("ws://{}/chat/ws/{session}", self.addr)
    }

    /// `count` new conversations, created a few at a time.
    async fn conversations(&self, count: usize) -> Vec<String> {
        let http = reqwest::Client::new();
        futures_util::stream::iter(0..count)
            .map(|_| self.conversation(&http))
            .buffered(32)
            .collect()
            .await
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Socket {
    let mut request = url.into_client_request().expect("a URL");
    request
        .headers_mut()
        .insert("x-api-key", KEY.parse().expect("a header"));
    // A 4 KiB read buffer: tungstenite zero-fills its whole buffer on every
    // read, and the default 128 KiB would make the clients the bottleneck.
    let config =
        tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
    let (socket, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
        .await
        .expect("the socket connects");
    socket
}

/// The frame's type, read from its text without parsing the rest.
fn kind(text: &str) -> &str {
    let Some(start) = text.find("\"type\":\"") else {
        return "";
    };
    let rest = &text[start + 8..];
    &rest[..rest.find('"').unwrap_or(0)]
}

/// Reads frames until one of type `wanted`; None if the socket ends first.
async fn until(socket: &mut Socket, wanted: &str) -> Option<()> {
    while let Some(frame) = socket.next().await {
        if let Ok(Message::Text(text)) = frame
            && kind(&text) == wanted
        {
            return Some(());
        }
    }
    None
}

fn question(words: usize) -> String {
    let text: Vec<String> = (0..words).map(|index| format!("w{index}")).collect();
    serde_json::json!({"type": "message", "content": text.join(" ")}).to_string()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn millis(mut samples: Vec<Duration>) -> Vec<f64> {
    samples.sort();
    samples.iter().map(|d| d.as_secs_f64() * 1e3).collect()
}

/// `SENDERS` conversations send at once; each measures its first chunk and
/// its `done`.
async fn conversations_send_at_once(server: &Server) -> (Vec<f64>, Vec<f64>) {
    let sessions = server.conversations(SENDERS).await;
    let mut sockets = Vec::new();
    for session in &sessions {
        let mut socket = connect(&server.socket_url(session)).await;
        until(&mut socket, "system").await;
        sockets.push(socket);
    }
    let start = Arc::new(Barrier::new(SENDERS));
    let askers: Vec<_> = sockets
        .into_iter()
        .map(|mut socket| {
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                let sent = Instant::now();
                socket.send(Message::text(question(18))).await.ok()?;
                until(&mut socket, "chunk").await?;
                let first = sent.elapsed();
                until(&mut socket, "done").await?;
                Some((first, sent.elapsed()))
            })
        })
        .collect();
    let mut first = Vec::new();
    let mut done = Vec::new();
    for asker in askers {
        if let Ok(Ok(Some((chunk, whole)))) = tokio::time::timeout(LIMIT, asker).await {
            first.push(chunk);
            done.push(whole);
        }
    }
    assert_eq!(first.len(), SENDERS, "every asker got its answer");
    (millis(first), millis(done))
}

async fn send_at_once(storage: &str) {
    let server = Server::start(storage, 0).await;
    let (first, _) = conversations_send_at_once(&server).await;
    println!(
        "send: {SENDERS} conversations send at once, first chunk p50 {:.1} ms, p99 {:.1} ms",
        percentile(&first, 50.0),
        percentile(&first, 99.0)
    );
}

async fn paced(storage: &str) {
    let server = Server::start(storage, 20).await;
    let (first, done) = conversations_send_at_once(&server).await;
    println!(
        "paced: {SENDERS} at once, 20 words 20 ms apart: first chunk p99 {:.1} ms, whole answer p50 {:.1} ms, p99 {:.1} ms",
        percentile(&first, 99.0),
        percentile(&done, 50.0),
        percentile(&done, 99.0)
    );
}

/// One conversation with `SUBSCRIBERS` sockets (all reading) and one asker.
struct Audience {
    asker: Socket,
    /// Frames every subscriber has read, and each `done`'s receipt time.
    frames: Arc<AtomicU64>,
    readers: Vec<tokio::task::JoinHandle<Vec<Instant>>>,
}

async fn audience(server: &Server, answers: usize) -> Audience {
    let session = server.conversations(1).await.remove(0);
    let url = server.socket_url(&session);
    let frames = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut socket = connect(&url).await;
        until(&mut socket, "system").await;
        let frames = frames.clone();
        readers.push(tokio::spawn(async move {
            let mut done = Vec::with_capacity(answers);
            let deadline = tokio::time::Instant::now() + LIMIT;
            while done.len() < answers {
                let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, socket.next()).await
                else {
                    break;
                };
                frames.fetch_add(1, Ordering::Relaxed);
                if let Message::Text(text) = frame
                    && kind(&text) == "done"
                {
                    done.push(Instant::now());
                }
            }
            done
        }));
    }
    let mut asker = connect(&url).await;
    until(&mut asker, "system").await;
    Audience {
        asker,
        frames,
        readers,
    }
}

/// The server's CPU time so far (user + system), from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the server's stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("a stat line")
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // Linux reports in USER_HZ, 100 per second on every supported platform.
    Duration::from_millis(ticks * 10)
}

async fn fanout(storage: &str) {
    let server = Server::start(storage, 0).await;
    let mut audience = audience(&server, FANOUT_QUESTIONS).await;
    let cpu_before = cpu_time(server.pid());
    let mut sent = Vec::new();
    let mut pace = tokio::time::interval(Duration::from_millis(200));
    for _ in 0..FANOUT_QUESTIONS {
        pace.tick().await;
        sent.push(Instant::now());
        audience
            .asker
            .send(Message::text(question(8)))
            .await
            .expect("the question is sent");
        until(&mut audience.asker, "done").await;
    }
    let mut latencies = Vec::new();
    for reader in audience.readers {
        let done = reader.await.expect("a reader");
        latencies.extend(done.iter().zip(&sent).map(|(at, sent)| *at - *sent));
    }
    let cpu = cpu_time(server.pid()) - cpu_before;
    let frames = audience.frames.load(Ordering::Relaxed);
    let latencies = millis(latencies);
    println!(
        "fanout: 1 conversation × {SUBSCRIBERS} subscribers, 5 answers/s: done p50 {:.1} ms, p99 {:.1} ms; \
         server CPU {:.2} µs per frame delivered ({frames} frames, {} answers seen of {})",
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        cpu.as_secs_f64() * 1e6 / frames.max(1) as f64,
        latencies.len(),
        SUBSCRIBERS * FANOUT_QUESTIONS
    );
}

async fn burst(storage: &str) {
    let server = Server::start(storage, 0).await;
    let mut audience = audience(&server, BURST_QUESTIONS).await;
    let started = Instant::now();
    for _ in 0..BURST_QUESTIONS {
        audience
            .asker
            .send(Message::text(question(8)))
            .await
            .expect("a question is sent");
    }
    let mut last = started;
    let mut complete = 0;
    for reader in audience.readers {
        let done = reader.await.expect("a reader");
        if done.len() == BURST_QUESTIONS {
            complete += 1;
        }
        last = done.last().copied().unwrap_or(last).max(last);
    }
    let frames = audience.frames.load(Ordering::Relaxed);
    println!(
        "burst: {BURST_QUESTIONS} questions at once to {SUBSCRIBERS} subscribers: {:.0} deliveries/s \
         ({frames} frames in {:.0} ms; {complete} subscribers saw every answer)",
        frames as f64 / (last - started).as_secs_f64(),
        (last - started).as_secs_f64() * 1e3
    );
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("the server's status")
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
        .expect("VmRSS")
}

async fn idle(storage: &str) {
    let server = Server::start(storage, 0).await;
    // One conversation and socket first, so what is measured is per socket,
    // not the first use of every code path.
    let warm = server.conversations(1).await;
    let mut warm_socket = connect(&server.socket_url(&warm[0])).await;
    until(&mut warm_socket, "system").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(server.pid());
    let count = std::env::var("LOAD_IDLE_SOCKETS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(IDLE_SOCKETS);
    let sessions = server.conversations(count).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let created = rss_kib(server.pid());
    let started = Instant::now();
    let sockets: Vec<Socket> = futures_util::stream::iter(&sessions)
        .map(|session| async {
            let mut socket = connect(&server.socket_url(session)).await;
            until(&mut socket, "system").await;
            socket
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let accepting = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(server.pid());
    let per = |from: u64| after.saturating_sub(from) as f64 / sockets.len() as f64;
    println!(
        "idle: {count} sockets, one conversation each: {:.1} KiB per socket and its live \
         conversation ({:.1} KiB counting the conversations' creation; RSS {before} → {created} → {after} KiB); \
         {:.0} connections accepted per second",
        per(created),
        per(before),
        sockets.len() as f64 / accepting.as_secs_f64()
    );
}
