//! Headless Chromium through ChromeDriver (WebDriver, the fantoccini crate):
//! a browser per test (at most two at once on this 2-core machine), scripts
//! run in the page, waits with a deadline, screenshots of every page driven
//! under `$CARGO_TARGET_TMPDIR/browser/`.
//!
//! They need Debian's `chromium` and `chromium-driver` (`.ci/run` installs
//! them). Without them a test fails, saying how to install them: it never
//! skips.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::server::*;

const CHROMIUM: &str = "/usr/bin/chromium";

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Browsers are heavy on a 2-core machine: at most this many at once.
const MAX_BROWSERS: usize = 2;

/// A headless Chromium session and the ChromeDriver behind it.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _permit: OwnedSemaphorePermit,
}

impl Browser {
    pub async fn start() -> Browser {
        Browser::start_with_args(&[]).await
    }

    /// A browser started with these extra Chromium switches (for example
    /// `--host-resolver-rules`, so a page can name `localhost:2000` verbatim
    /// while the server listens on an ephemeral port).
    pub async fn start_with_args(extra: &[String]) -> Browser {
        static SLOTS: OnceLock<Arc<Semaphore>> = OnceLock::new();
        let permit = SLOTS
            .get_or_init(|| Arc::new(Semaphore::new(MAX_BROWSERS)))
            .clone()
            .acquire_owned()
            .await
            .unwrap();
        for binary in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(binary).exists(),
                "{binary} is missing: the browser tests need headless Chromium. \
                 Install it with `apt-get install -y chromium chromium-driver` (.ci/run does this)."
            );
        }
        let port = crate::support::binary::free_port();
        let mut driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let client = match connect(port, extra).await {
            Some(client) => client,
            None => {
                let _ = driver.kill();
                let _ = driver.wait();
                panic!("chromedriver did not start a Chromium session on port {port}");
            }
        };
        Browser {
            client,
            driver,
            _permit: permit,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Runs `script` (a function body) in the page and returns its result.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|error| panic!("script failed: {error}\n{script}"))
    }

    /// Polls the expression (or a function body with `return`) until it is
    /// truthy; fails with `what` after the deadline.
    pub async fn until(&self, what: &str, expression: &str) -> Value {
        let script = if expression.contains("return ") {
            format!("return (() => {{ {expression} }})();")
        } else {
            format!("return ({expression});")
        };
        let started = tokio::time::Instant::now();
        loop {
            let value = self.js(&script).await;
            if !(value.is_null() || value == false || value == "" || value == 0) {
                return value;
            }
            if started.elapsed() > DEADLINE {
                self.screenshot(&format!("timeout-{}", what.replace(' ', "-")))
                    .await;
                panic!("timed out waiting for: {what} ({expression})");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A WebDriver session with headless Chromium, once ChromeDriver listens.
pub async fn connect(port: u16, extra: &[String]) -> Option<Client> {
    let mut args: Vec<String> = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--window-size=1100,800",
    ]
    .map(String::from)
    .to_vec();
    args.extend_from_slice(extra);
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({"binary": CHROMIUM, "args": args}),
    );
    let started = tokio::time::Instant::now();
    while started.elapsed() < DEADLINE * 2 {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let attempt = ClientBuilder::new(connector)
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        if let Ok(client) = attempt {
            return Some(client);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// A JavaScript string literal of `text`.
pub fn js_string(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}
