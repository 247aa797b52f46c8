//! TLS served directly, on the real binary: HTTPS and WSS with a
//! certificate made here (rcgen), checked by clients that trust only that
//! certificate; plain HTTP is not answered on the TLS port; a SIGHUP after
//! the files were replaced shows new connections the new certificate while
//! an open WSS socket goes on; a broken file on reload keeps the old one; a
//! client that never starts its handshake is closed. Bad settings stop the
//! start with the file named.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::aws_lc_rs};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::binary::{created_session, free_port, write_config};
use crate::support::server::DEADLINE;

type Wss = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// A self-signed certificate for 127.0.0.1 and localhost: (certificate PEM, key PEM).
fn certificate() -> (String, String) {
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    (made.cert.pem(), made.signing_key.serialize_pem())
}

fn install(dir: &Path, (cert, key): &(String, String)) {
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
}

/// An HTTPS client that trusts `cert` alone.
fn trusting(cert: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert.as_bytes()).unwrap()])
        .timeout(DEADLINE)
        .build()
        .unwrap()
}

/// Waits until a client trusting `cert` alone gets an answer from `url`.
async fn until_answered(cert: &str, url: &str, what: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE * 3;
    while !answers(cert, url).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a new connection that trusts `cert` alone gets an answer from
/// `url` (a new client each time: a pooled connection keeps the
/// certificate it was opened with).
async fn answers(cert: &str, url: &str) -> bool {
    trusting(cert)
        .get(url)
        .send()
        .await
        .is_ok_and(|response| response.status().is_success())
}

/// A WSS socket to `url` that trusts `cert` alone.
async fn wss(url: &str, cert: &str) -> Wss {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(cert.as_bytes()).unwrap())
        .unwrap();
    let config = ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let authority = url.trim_start_matches("wss://").split('/').next().unwrap();
    let tcp = TcpStream::connect(authority).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let (ws, _) = tokio_tungstenite::client_async(url, tls).await.unwrap();
    ws
}

async fn next_text(ws: &mut Wss) -> Value {
    loop {
        let message = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("a frame before the deadline")
            .expect("the socket is open")
            .expect("the socket reads cleanly");
        if let Message::Text(text) = message {
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame["type"] != "presence" {
                return frame;
            }
        }
    }
}

/// Sends `content` and waits for the answer's `done`.
async fn ask(ws: &mut Wss, content: &str) -> Value {
    let frame = json!({"type": "message", "content": content});
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
    loop {
        let frame = next_text(ws).await;
        if frame["type"] == "done" {
            return frame;
        }
        assert_ne!(frame["type"], "error", "{frame}");
    }
}

fn hang_up(child: &Child) {
    // SAFETY: kill(2) on our own child's pid; no memory is touched.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGHUP) };
    assert_eq!(sent, 0, "SIGHUP is sent");
}

struct Stopping(Child);

impl Drop for Stopping {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn https_and_wss_use_the_certificate_and_a_sighup_swaps_it_without_dropping_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (certificate(), certificate());
    install(dir.path(), &first);
    let settings = format!(
        "[server]\ntls_cert = {:?}\ntls_key = {:?}\nheader_timeout_ms = 1000\n",
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
    );
    let config = write_config(dir.path(), &settings);
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_tertulia"))
        .args(["serve", "--bind", &format!("127.0.0.1:{port}"), "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = Stopping(child);
    let base = format!("https://127.0.0.1:{port}");
    let ready = format!("{base}/readyz");
    until_answered(&first.0, &ready, "the server answers over HTTPS").await;
    assert!(
        !answers(&second.0, &ready).await,
        "a client that does not trust the certificate is refused"
    );
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP is not served on the TLS port");

    // A conversation over HTTPS hands out a wss:// URL, and it works.
    let created = created_session(&trusting(&first.0), &base).await;
    let url = created["websocket_url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!("wss://127.0.0.1:{port}/")),
        "{url}"
    );
    let mut socket = wss(&url, &first.0).await;
    assert_eq!(next_text(&mut socket).await["type"], "system");
    assert_eq!(ask(&mut socket, "uno").await["content"], "You said: uno");

    // Renewed files and a SIGHUP: new connections see the new certificate.
    install(dir.path(), &second);
    hang_up(&child.0);
    until_answered(&second.0, &ready, "new connections get the new certificate").await;
    assert!(!answers(&first.0, &ready).await);
    // The socket opened before goes on as it was.
    assert_eq!(ask(&mut socket, "dos").await["content"], "You said: dos");

    // A broken file on reload: the certificate in use stays.
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    hang_up(&child.0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(answers(&second.0, &ready).await);
    assert_eq!(ask(&mut socket, "tres").await["content"], "You said: tres");

    // A client that never sends its ClientHello is closed after the header timeout.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(DEADLINE, silent.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a stalled handshake is closed"
    );
}

#[tokio::test]
async fn tls_settings_that_cannot_work_stop_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let start = |cert: &str, key: &str| {
        let mut config = crate::support::server::config();
        config.server.tls_cert = cert.into();
        config.server.tls_key = key.into();
        async move {
            match tertulia::start(config, Default::default()).await {
                Ok(server) => {
                    server.shutdown().await;
                    panic!("the server started");
                }
                Err(error) => error.to_string(),
            }
        }
    };
    let error = start("/nonexistent/cert.pem", "").await;
    assert!(error.contains("set together"), "{error}");
    let missing = dir.path().join("missing.pem").display().to_string();
    let error = start(&missing, &missing).await;
    assert!(
        error.contains("server.tls_cert") && error.contains("missing.pem"),
        "{error}"
    );
    let (one, other) = (certificate(), certificate());
    std::fs::write(dir.path().join("cert.pem"), &one.0).unwrap();
    std::fs::write(dir.path().join("key.pem"), &other.1).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let error = start(&cert.display().to_string(), &key.display().to_string()).await;
    assert!(error.contains("do not make a usable pair"), "{error}");
}
