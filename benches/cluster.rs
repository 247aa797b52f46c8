//! Several nodes, measured: release `tertulia` processes on one official
//! SurrealDB server (`tools/surrealdb-server`), every address on loopback,
//! every cell bounded in count and time.
//!
//! ```sh
//! scripts/test                       # builds the SurrealDB server once, cached
//! TERTULIA_SURREAL_BIN=$CARGO_TARGET_DIR/surrealdb-server/release/surreal \
//!   cargo bench --bench cluster      # every cell
//! cargo bench --bench cluster -- hop # only this cell (hop, store, rehome)
//! ```
//!
//! - `hop`: two nodes; one conversation owned by node 1; subscribers on
//!   node 1 and on node 2. A fake OpenAI-compatible provider (in this
//!   process) streams deltas whose text is the time they were sent, so every
//!   subscriber measures provider → owner → (relay) → socket on one clock.
//! - `store`: one node on embedded surrealkv and one on the SurrealDB server
//!   (no cluster), the echo agent; from a `message` frame sent to its `ack`
//!   (stored and committed), at 1 and at 100 concurrent sessions, rounds
//!   alternated between the two.
//! - `rehome`: three nodes with the default 5 s lease; ten times, the owner
//!   of a fresh conversation is killed with SIGKILL and a client on another
//!   node asks again (retrying as a browser would): from the kill to the
//!   first chunk of the answer. The killed node is started again each time.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

#[path = "common/request.rs"]
mod request;
#[path = "common/socket.rs"]
mod socket;
#[path = "common/stats.rs"]
mod stats;

use socket::Socket;
use stats::Stats;

const KEY: &str = "tk_cluster_bench";
const DB_USER: &str = "root";
const DB_PASSWORD: &str = "tertulia-bench-root-0123456789";
const COOKIE: &str = "tertulia-bench-cluster-cookie";
/// No cell may take longer than this.
const LIMIT: Duration = Duration::from_secs(300);
/// The fake provider's answer: this many deltas, this far apart.
const DELTAS: usize = 20;
const PACE: Duration = Duration::from_millis(20);

fn main() {
    let cells: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    let wants = |cell: &str| cells.is_empty() || cells.iter().any(|wanted| wanted == cell);
    if std::env::var_os("TERTULIA_SURREAL_BIN").is_none() {
        // `cargo bench` runs every bench: the others still run without it.
        eprintln!(
            "benches/cluster.rs skipped: it needs the SurrealDB server that scripts/test builds; \
             set TERTULIA_SURREAL_BIN=$CARGO_TARGET_DIR/surrealdb-server/release/surreal"
        );
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        if wants("hop") {
            bounded("hop", hop_cell()).await;
        }
        if wants("store") {
            bounded("store", store_cell()).await;
        }
        if wants("rehome") {
            bounded("rehome", rehome_cell()).await;
        }
    });
}

async fn bounded(cell: &str, run: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(LIMIT, run)
        .await
        .unwrap_or_else(|_| panic!("the {cell} cell took longer than {LIMIT:?}"));
}

/// The `surreal` binary `scripts/test` builds.
fn surreal_binary() -> PathBuf {
    match std::env::var_os("TERTULIA_SURREAL_BIN").map(PathBuf::from) {
        Some(path) if path.is_file() => path,
        _ => panic!(
            "set TERTULIA_SURREAL_BIN to the SurrealDB server `scripts/test` builds \
             ($CARGO_TARGET_DIR/surrealdb-server/release/surreal)"
        ),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port()
}

/// A child process killed when dropped.
struct Process(Option<Child>);

impl Process {
    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `url` answers 2xx.
async fn healthy(url: &str) {
    let http = reqwest::Client::new();
    for _ in 0..1200 {
        let up = http
            .get(url)
            .send()
            .await
            .is_ok_and(|response| response.status().is_success());
        if up {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{url} did not answer in 30 s");
}

/// The SurrealDB server, storing with surrealkv in `dir`.
async fn database(dir: &Path) -> (Process, String) {
    let port = free_port();
    let child = Command::new(surreal_binary())
        .args(["start", "--log", "warn", "--bind"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--user", DB_USER, "--pass", DB_PASSWORD])
        .arg(format!("surrealkv://{}", dir.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the SurrealDB server starts");
    let process = Process(Some(child));
    healthy(&format!("http://127.0.0.1:{port}/health")).await;
    (process, format!("ws://127.0.0.1:{port}"))
}

/// One tertulia process: its settings file, data folder and HTTP port, and
/// whether it stores on the SurrealDB server (then it signs in).
struct Node {
    process: Process,
    config: PathBuf,
    data: PathBuf,
    port: u16,
    remote: bool,
}

impl Node {
    /// Writes `settings` (with the bench tenant, answered by `agent`) and
    /// starts the node.
    async fn start(dir: &Path, settings: &str, agent: &str) -> Node {
        std::fs::create_dir_all(dir).expect("the node's folder");
        let config = dir.join("tertulia.toml");
        std::fs::write(&config, format!("{settings}\n{}", tenant(agent))).expect("written");
        let mut node = Node {
            process: Process(None),
            config,
            data: dir.join("data"),
            port: free_port(),
            remote: settings.contains("ws://"),
        };
        node.restart().await;
        node
    }

    async fn restart(&mut self) {
        self.process.kill();
        let mut command = Command::new(env!("CARGO_BIN_EXE_tertulia"));
        command
            .args(["serve", "--bind", &format!("127.0.0.1:{}", self.port)])
            .arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&self.data)
            .env("RUST_LOG", "error")
            .env("TERTULIA_CLUSTER_COOKIE", COOKIE)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if self.remote {
            command
                .env("TERTULIA_DB_USER", DB_USER)
                .env("TERTULIA_DB_PASSWORD", DB_PASSWORD);
        }
        self.process = Process(Some(command.spawn().expect("tertulia starts")));
        healthy(&format!("http://127.0.0.1:{}/readyz", self.port)).await;
    }

    /// A new conversation, created through this node.
    async fn conversation(&self, http: &reqwest::Client) -> String {
        let created: Value = http
            .post(format!("http://127.0.0.1:{}/chat/sessions", self.port))
            .header("X-API-Key", KEY)
            .send()
            .await
            .expect("the session API answers")
            .json()
            .await
            .expect("JSON");
        created["session_id"].as_str().expect("an id").to_owned()
    }

    fn socket_url(&self, session: &str) -> String {
        format!("ws://127.0.0.1:{}/chat/ws/{session}", self.port)
    }
}

/// The bench tenant, its rate limits out of reach.
fn tenant(agent: &str) -> String {
    let unlimited = 100_000_000;
    format!(
        "[tenants.bench]\nname = \"Bench\"\napi_keys = [\"{KEY}\"]\nagent = \"{agent}\"\n\n\
         [tenants.bench.rate_limits]\napi_key_per_minute = {unlimited}\nip_per_minute = {unlimited}\n\
         session_messages_per_minute = {unlimited}\nwebchat_session_per_minute = {unlimited}\n\
         webchat_ip_per_minute = {unlimited}\n"
    )
}

/// The `[cluster]` settings of node `index` of `listen`.
fn cluster_settings(endpoint: &str, listen: &[u16], index: usize) -> String {
    let peers: Vec<String> = listen
        .iter()
        .enumerate()
        .filter(|(other, _)| *other != index)
        .map(|(_, port)| format!("\"127.0.0.1:{port}\""))
        .collect();
    format!(
        "[storage]\nendpoint = \"{endpoint}\"\n\n[agents.echo]\nword_delay_ms = 0\n\n\
         [cluster]\nnode = \"node-{}\"\nlisten = \"127.0.0.1:{}\"\npeers = [{}]\n",
        index + 1,
        listen[index],
        peers.join(", ")
    )
}

/// `count` clustered nodes on the database at `endpoint`, started in turn.
async fn cluster(dir: &Path, endpoint: &str, count: usize, extra: &str, agent: &str) -> Vec<Node> {
    let listen: Vec<u16> = (0..count).map(|_| free_port()).collect();
    let mut nodes = Vec::new();
    for index in 0..count {
        let settings = format!("{}{extra}", cluster_settings(endpoint, &listen, index));
        let folder = dir.join(format!("node-{}", index + 1));
        nodes.push(Node::start(&folder, &settings, agent).await);
    }
    nodes
}

/// Reads frames until one of type `kind`; None if the socket ends or an
/// `error` frame comes first, or nothing arrives for 5 s.
async fn until(socket: &mut Socket, kind: &str) -> Option<Value> {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), socket.next()).await;
        let Ok(Some(Ok(message))) = next else {
            return None;
        };
        let Message::Text(text) = message else {
            continue;
        };
        let frame: Value = serde_json::from_str(&text).ok()?;
        match frame["type"].as_str() {
            Some(found) if found == kind => return Some(frame),
            Some("error") => return None,
            _ => {}
        }
    }
}

async fn say(socket: &mut Socket, content: &str) {
    let frame = json!({"type": "message", "content": content}).to_string();
    socket
        .send(Message::Text(frame.into()))
        .await
        .expect("sent");
}

fn micros_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as u64
}

/// The fake provider's base URL: every answer is `DELTAS` deltas, `PACE`
/// apart, each the time (µs since 1970) it was written.
async fn start_provider() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let base = format!("http://{}/v1", listener.local_addr().expect("bound"));
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let _ = socket.set_nodelay(true);
            tokio::spawn(stream_times(socket));
        }
    });
    base
}

/// One answer, then the connection closes (the body ends with it).
async fn stream_times(mut socket: TcpStream) {
    let mut buffer = Vec::new();
    if !request::read_request(&mut socket, &mut buffer).await {
        return;
    }
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
    if socket.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let event = |delta: Value, finish: Value| {
        let body = json!({"id": "chatcmpl-bench", "object": "chat.completion.chunk",
            "created": 1_763_000_000, "model": "bench",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {body}\n\n")
    };
    for index in 0..DELTAS {
        if index > 0 {
            tokio::time::sleep(PACE).await;
        }
        let delta = json!({"role": "assistant", "content": format!("{} ", micros_now())});
        let sent = socket.write_all(event(delta, Value::Null).as_bytes()).await;
        if sent.is_err() {
            return;
        }
    }
    let end = format!("{}data: [DONE]\n\n", event(json!({}), json!("stop")));
    let _ = socket.write_all(end.as_bytes()).await;
    let _ = socket.shutdown().await;
}

/// Reads `answers` answers on `socket`: for every timestamp in every chunk,
/// how long ago the provider wrote it.
async fn chunk_latencies(mut socket: Socket, answers: usize) -> Vec<Duration> {
    let mut samples = Vec::new();
    let mut done = 0;
    while done < answers {
        let Some(Ok(Message::Text(text))) = socket.next().await else {
            panic!("a subscriber's socket ended");
        };
        let now = micros_now();
        let frame: Value = serde_json::from_str(&text).expect("JSON");
        match frame["type"].as_str() {
            Some("chunk") => {
                let content = frame["content"].as_str().unwrap_or_default();
                samples.extend(
                    content
                        .split_whitespace()
                        .filter_map(|word| word.parse::<u64>().ok())
                        .map(|sent| Duration::from_micros(now.saturating_sub(sent))),
                );
            }
            Some("done") => done += 1,
            _ => {}
        }
    }
    samples
}

/// Subscribers on the owner node and on another node of one conversation.
async fn hop_cell() {
    const SUBSCRIBERS: usize = 20;
    const QUESTIONS: usize = 20;
    let dir = tempfile::tempdir().expect("a folder");
    let (_db, endpoint) = database(&dir.path().join("db")).await;
    let provider = start_provider().await;
    let openai = format!(
        "[egress]\nallow = [\"127.0.0.0/8\"]\n\n[tenants.bench.openai]\nbase_url = \"{provider}\"\n\
         api_key = \"sk-bench\"\nmodel = \"bench\"\n"
    );
    let nodes = cluster(dir.path(), &endpoint, 2, &openai, "openai").await;
    let http = reqwest::Client::new();
    let session = nodes[0].conversation(&http).await;
    // Its first use is on node 1, which therefore owns it.
    let mut speaker = socket::connect(&nodes[0].socket_url(&session), KEY).await;
    say(&mut speaker, "warm up").await;
    until(&mut speaker, "done").await.expect("an answer");
    let mut listeners = Vec::new();
    for node in &nodes {
        let mut sockets = Vec::new();
        for _ in 0..SUBSCRIBERS {
            sockets.push(socket::connect(&node.socket_url(&session), KEY).await);
        }
        listeners.push(tokio::spawn(async move {
            let reading = sockets
                .into_iter()
                .map(|socket| chunk_latencies(socket, QUESTIONS));
            futures_util::future::join_all(reading).await.concat()
        }));
    }
    for question in 0..QUESTIONS {
        say(&mut speaker, &format!("question {question}")).await;
        until(&mut speaker, "done").await.expect("an answer");
    }
    println!(
        "fan-out latency, provider → socket, {SUBSCRIBERS} subscribers per node, \
         {QUESTIONS} answers of {DELTAS} deltas {PACE:?} apart:"
    );
    for (listener, name) in listeners.into_iter().zip(["owner node", "other node"]) {
        let samples = listener.await.expect("the subscribers read");
        println!("  subscribers on the {name}: {}", Stats::of(samples));
    }
}

/// Ack latency on embedded surrealkv and on the SurrealDB server.
async fn store_cell() {
    // About 1,000 samples for each engine at each concurrency.
    let dir = tempfile::tempdir().expect("a folder");
    let (_db, endpoint) = database(&dir.path().join("db")).await;
    let word_delay = "[agents.echo]\nword_delay_ms = 0\n";
    let embedded = Node::start(&dir.path().join("embedded"), word_delay, "echo").await;
    let remote = format!("[storage]\nendpoint = \"{endpoint}\"\n\n{word_delay}");
    let server = Node::start(&dir.path().join("server"), &remote, "echo").await;
    let http = reqwest::Client::new();
    for (sessions, rounds) in [(1, 1000), (100, 10)] {
        let mut sockets = Vec::new();
        for node in [&embedded, &server] {
            let mut mine = Vec::new();
            for _ in 0..sessions {
                let session = node.conversation(&http).await;
                mine.push(socket::connect(&node.socket_url(&session), KEY).await);
            }
            sockets.push(mine);
        }
        let mut samples = [Vec::new(), Vec::new()];
        // One warm-up round, then the measured ones, alternating engines.
        for round in 0..=rounds {
            for (engine, mine) in sockets.iter_mut().enumerate() {
                let asks = mine.iter_mut().map(|socket| async move {
                    let started = Instant::now();
                    say(socket, "a note to store").await;
                    until(socket, "ack").await.expect("acknowledged");
                    let acked = started.elapsed();
                    until(socket, "done").await.expect("answered");
                    acked
                });
                let acks = futures_util::future::join_all(asks).await;
                if round > 0 {
                    samples[engine].extend(acks);
                }
            }
        }
        println!("ack latency, {sessions} concurrent session(s) × {rounds} rounds:");
        let [embedded_acks, server_acks] = samples;
        println!("  embedded surrealkv:     {}", Stats::of(embedded_acks));
        println!("  SurrealDB server (ws):  {}", Stats::of(server_acks));
    }
}

/// Ten kills of a conversation's owner: from the kill to the first chunk.
async fn rehome_cell() {
    const KILLS: usize = 10;
    let dir = tempfile::tempdir().expect("a folder");
    let (_db, endpoint) = database(&dir.path().join("db")).await;
    let mut nodes = cluster(dir.path(), &endpoint, 3, "", "echo").await;
    let http = reqwest::Client::new();
    let mut samples = Vec::new();
    for kill in 0..KILLS {
        let (owner, asker) = (kill % 3, (kill + 1) % 3);
        let session = nodes[owner].conversation(&http).await;
        let mut first = socket::connect(&nodes[owner].socket_url(&session), KEY).await;
        say(&mut first, "hola").await;
        until(&mut first, "done").await.expect("an answer");
        // Each round takes about as long as three renewals, so without a
        // random pause every kill would land at the same point of the
        // owner's renewal cycle (a third of the lease).
        tokio::time::sleep(Duration::from_micros(micros_now() % 1_700_000)).await;
        nodes[owner].process.kill();
        let killed = Instant::now();
        let url = nodes[asker].socket_url(&session);
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Some(elapsed) = ask_once(&url, &format!("k{kill}"), killed).await {
                println!("  kill {kill}: answered after {elapsed:?} ({attempt} attempts)");
                samples.push(elapsed);
                break;
            }
            assert!(killed.elapsed() < Duration::from_secs(30), "never re-homed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        nodes[owner].restart().await;
    }
    println!("re-home, kill → first chunk of the next answer, 5 s lease, {KILLS} kills:");
    println!("  {}", Stats::of(samples));
}

/// One try, as a browser retrying would: a socket, a message with its
/// `client_msg_id`, its first chunk. None if any step fails.
async fn ask_once(url: &str, id: &str, since: Instant) -> Option<Duration> {
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url).ok()?;
    request.headers_mut().insert("x-api-key", KEY.parse().ok()?);
    let connecting = tokio_tungstenite::connect_async(request);
    let (mut socket, _) = tokio::time::timeout(Duration::from_secs(2), connecting)
        .await
        .ok()?
        .ok()?;
    let frame = json!({"type": "message", "content": "are you there", "client_msg_id": id});
    socket
        .send(Message::Text(frame.to_string().into()))
        .await
        .ok()?;
    until(&mut socket, "chunk").await?;
    Some(since.elapsed())
}
