//! The official SurrealDB server (`tools/surrealdb-server`, the
//! `surrealdb-server` crate's own `init`) as a child process on a loopback
//! port, storing with surrealkv in a folder the test owns. `scripts/test`
//! builds it (release, into its own target folder beside the suite's) and
//! names it in `TERTULIA_SURREAL_BIN`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::binary::free_port;

/// The root user of every test server.
pub const USER: &str = "root";
pub const PASSWORD: &str = "tertulia-test-root-0123456789";

/// The `surreal` binary `scripts/test` built.
pub fn binary() -> PathBuf {
    let named = std::env::var_os("TERTULIA_SURREAL_BIN").map(PathBuf::from);
    match named {
        Some(path) if path.is_file() => path,
        _ => panic!(
            "the SurrealDB server is not built: run the suite with scripts/test, or build it with \
             `cargo build --release --manifest-path tools/surrealdb-server/Cargo.toml --target-dir \
             $CARGO_TARGET_DIR/surrealdb-server` and set TERTULIA_SURREAL_BIN to its `surreal`"
        ),
    }
}

/// A running SurrealDB server.
pub struct SurrealServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl SurrealServer {
    /// Starts a server storing in `dir`, and waits until it is healthy.
    pub async fn start(dir: &Path) -> SurrealServer {
        let binary = binary();
        let mut server = SurrealServer {
            child: None,
            port: free_port(),
            dir: dir.to_owned(),
        };
        server.child = Some(spawn(&binary, server.port, &server.dir));
        server.wait_healthy().await;
        server
    }

    /// The endpoint tertulia is given.
    pub fn endpoint(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and folder.
    pub async fn restart(&mut self) {
        self.kill();
        self.child = Some(spawn(&binary(), self.port, &self.dir));
        self.wait_healthy().await;
    }

    async fn wait_healthy(&self) {
        let http = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{}/health", self.port);
        for _ in 0..600 {
            let healthy = http
                .get(&url)
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if healthy {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the SurrealDB server did not become healthy in 30 s");
    }
}

impl Drop for SurrealServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(binary: &Path, port: u16, dir: &Path) -> Child {
    Command::new(binary)
        .args(["start", "--log", "warn", "--bind"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--user", USER, "--pass", PASSWORD])
        .arg(format!("surrealkv://{}", dir.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the SurrealDB server starts")
}
