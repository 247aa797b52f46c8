//! The Frontend API seed's own Next.js code, run unchanged in headless
//! Chromium against the shipped development configuration: a page on
//! `http://localhost:3000` (a Next.js dev server's origin) calls
//! `fetch("http://localhost:2000/chat/sessions", {method: "POST"})` with no
//! key, opens `data.websocket_url` and chats.
//!
//! Both addresses are written in the page exactly as the seed writes them;
//! Chromium's `--host-resolver-rules` sends `localhost:3000` to the page's
//! ephemeral port and `localhost:2000` to the server's, so the browser sends
//! the same `Origin` and `Host` a developer's machine would.

use serde_json::Value;
use warp::Filter;

use crate::support::browser::*;
use crate::support::server::*;

/// The seed's calls, in a page of their own: create a session with a bare
/// POST, open its socket, send a message, read the frames. A second
/// creation sends a JSON body, so the CORS preflight is exercised too.
const SEED_PAGE: &str = r#"<!doctype html>
<html><head><title>Next.js seed page</title></head>
<body><h1>Chat</h1><pre id="out"></pre>
<script type="module">
window.frames_seen = [];
window.errors = [];
try {
  const response = await fetch("http://localhost:2000/chat/sessions", {
    method: "POST",
  });
  const data = await response.json();
  window.session = data;
  const ws = new WebSocket(data.websocket_url);
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    window.frames_seen.push(message);
    document.getElementById("out").textContent += event.data + "\n";
  };
  ws.onopen = () => {
    ws.send(JSON.stringify({ type: "message", content: "¿Cuánto he gastado?" }));
  };
  const withBody = await fetch("http://localhost:2000/chat/sessions", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ context: { total_spent: 120 } }),
  });
  window.with_body = { status: withBody.status, body: await withBody.json() };
} catch (error) {
  window.errors.push(String(error));
}
</script></body></html>"#;

/// Serves the seed page from a listener of its own (the second origin).
async fn serve_page() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let route = warp::any().map(|| warp::reply::html(SEED_PAGE));
    (
        port,
        tokio::spawn(warp::serve(route).incoming(listener).run()),
    )
}

#[tokio::test]
async fn the_seed_nextjs_snippet_chats_unchanged_with_the_development_config() {
    let mut config = tertulia::config::Config::default_with_tenant();
    config.server.bind = "127.0.0.1:0".into();
    config.storage.endpoint = Some("mem://".into());
    config.agents.echo.word_delay_ms = 0;
    let server = TestServer::start(config).await;
    let server_port = server.server.addr.port();
    let (page_port, page) = serve_page().await;
    let rules = format!(
        "--host-resolver-rules=MAP localhost:3000 127.0.0.1:{page_port}, \
         MAP localhost:2000 127.0.0.1:{server_port}"
    );
    let browser = Browser::start_with_args(&[rules]).await;
    browser.goto("http://localhost:3000/").await;

    let done = browser
        .until(
            "the answer's done frame",
            "return window.frames_seen?.find(f => f.type === 'done')",
        )
        .await;
    assert_eq!(done["content"], "You said: ¿Cuánto he gastado?", "{done}");
    browser.screenshot("seed-nextjs-snippet").await;
    let frames = browser.js("return window.frames_seen").await;
    let kinds: Vec<&str> = frames
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|frame| frame["type"].as_str())
        .collect();
    assert_eq!(kinds.first(), Some(&"system"), "greeting first: {frames}");
    assert!(
        kinds.contains(&"ack") && kinds.contains(&"chunk"),
        "{frames}"
    );
    assert_eq!(
        browser.js("return window.errors").await,
        Value::Array(vec![])
    );

    // The preflighted creation (a JSON body) succeeded too.
    let with_body = browser
        .until("the second creation", "return window.with_body")
        .await;
    assert_eq!(with_body["status"], 200, "{with_body}");
    assert_eq!(with_body["body"]["status"], "created", "{with_body}");

    // Stored under the development tenant, as the seed's own history call sees it.
    let session = browser.js("return window.session.session_id").await;
    let (status, history) = server
        .get(
            &format!("/chat/sessions/{}/history", session.as_str().unwrap()),
            Some(tertulia::api::pages::DEVELOPMENT_KEY),
        )
        .await;
    assert_eq!(status, 200, "{history}");
    let roles: Vec<&str> = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant"], "{history}");

    browser.close().await;
    page.abort();
    server.stop().await;
}
