//! Three (or more) real `tertulia` processes in a cluster on one real
//! SurrealDB server, every one on loopback: started with a `[cluster]`
//! section naming the others, killed with SIGKILL, paused with SIGSTOP.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::OwnedRwLockReadGuard;

use super::binary::{free_port, get_json, output, ready, write_config};
use super::server::KEY;
use super::surreal::{PASSWORD, SurrealServer, USER};

/// The lease of the test clusters: short, so a take-over is quick to wait for.
pub const LEASE_MS: u64 = 3000;
const COOKIE: &str = "tertulia-test-cluster-cookie";

/// One node: its process and HTTP port.
pub struct Node {
    child: Option<Child>,
    pub port: u16,
    /// The cluster keeps timing-sensitive tests waiting while it runs.
    _crowding: Arc<OwnedRwLockReadGuard<()>>,
}

impl Node {
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn ws(&self, session: &str, after_seq: Option<u64>) -> String {
        let after = after_seq
            .map(|seq| format!("?after_seq={seq}"))
            .unwrap_or_default();
        format!("ws://127.0.0.1:{}/chat/ws/{session}{after}", self.port)
    }

    /// The conversation's stored messages, read through this node.
    pub async fn history(&self, session: &str) -> Vec<Value> {
        let url = format!("{}/chat/sessions/{session}/history", self.base());
        get_json(&url, KEY).await["history"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// SIGKILL: no shutdown, no lease released.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: i32) {
        let pid = self.child.as_ref().expect("the node runs").id();
        // SAFETY: kill(2) with a pid this test spawned and still holds.
        assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.resume_if_paused();
        self.kill();
    }
}

impl Node {
    fn resume_if_paused(&self) {
        if let Some(child) = &self.child {
            // SAFETY: as in `signal`; a running process ignores SIGCONT.
            unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
        }
    }
}

/// Starts `count` nodes on `db`, one after another (the first one makes the
/// shared secrets the others read). `echo_delay_ms` paces the echo agent;
/// `extra` is added to every node's settings.
pub async fn start_nodes(
    dir: &Path,
    db: &SurrealServer,
    count: usize,
    echo_delay_ms: u64,
    extra: &str,
) -> Vec<Node> {
    let direct = |port| format!("127.0.0.1:{port}");
    start_nodes_via(dir, db, count, echo_delay_ms, extra, direct).await
}

/// As [`start_nodes`], but each node dials a peer at `via(its cluster
/// port)`: through a [`super::link::Link`], say.
pub async fn start_nodes_via(
    dir: &Path,
    db: &SurrealServer,
    count: usize,
    echo_delay_ms: u64,
    extra: &str,
    mut via: impl FnMut(u16) -> String,
) -> Vec<Node> {
    let crowding = Arc::new(super::crowd::crowding().await);
    let listen: Vec<u16> = (0..count).map(|_| free_port()).collect();
    let mut nodes = Vec::new();
    for (index, port) in listen.iter().enumerate() {
        let name = format!("node-{}", index + 1);
        let peers: Vec<String> = listen
            .iter()
            .filter(|other| *other != port)
            .map(|other| format!("\"{}\"", via(*other)))
            .collect();
        let folder = dir.join(&name);
        std::fs::create_dir_all(&folder).unwrap();
        let settings = format!(
            "[storage]\nendpoint = \"{}\"\n\n[agents.echo]\nword_delay_ms = {echo_delay_ms}\n\n\
             [cluster]\nnode = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\npeers = [{}]\nlease_ms = {LEASE_MS}\n\n{extra}",
            db.endpoint(),
            peers.join(", ")
        );
        let config = write_config(&folder, &settings);
        let data = folder.join("data");
        let http = free_port();
        let child = spawn(&config, &data, http);
        assert!(ready(http).await, "{name} did not start");
        nodes.push(Node {
            child: Some(child),
            port: http,
            _crowding: crowding.clone(),
        });
    }
    nodes
}

fn spawn(config: &Path, data: &Path, port: u16) -> Child {
    let log = std::env::var_os("TERTULIA_CLUSTER_LOG").map(PathBuf::from);
    Command::new(env!("CARGO_BIN_EXE_tertulia"))
        .args(["serve", "--bind", &format!("127.0.0.1:{port}"), "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", "info")
        .env("TERTULIA_DB_USER", USER)
        .env("TERTULIA_DB_PASSWORD", PASSWORD)
        .env("TERTULIA_CLUSTER_COOKIE", COOKIE)
        .stdout(output(log.as_deref()))
        .stderr(output(log.as_deref()))
        .spawn()
        .unwrap()
}

/// The `client_msg_id`s of a conversation's stored messages, after checking
/// that none is stored twice and that the seqs rise. (A write the store
/// refused may leave a gap: its message is stored later, under a new seq.)
pub fn stored_once_in_order(stored: &[Value]) -> Vec<&str> {
    let ids: Vec<&str> = stored
        .iter()
        .filter_map(|m| m["client_msg_id"].as_str())
        .collect();
    let unique: std::collections::HashSet<&&str> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "nothing stored twice: {ids:?}");
    let seqs: Vec<u64> = stored.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|pair| pair[0] < pair[1]),
        "seqs rise: {seqs:?}"
    );
    ids
}

/// The stored messages' seqs rise by one: no write was refused.
pub fn no_gaps(stored: &[Value]) {
    let seqs: Vec<u64> = stored.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "seqs rise by one: {seqs:?}"
    );
}
