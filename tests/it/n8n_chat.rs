//! n8n's chat widget protocol: the webhook calls as `@n8n/chat` makes them,
//! then the real widget bundle (from the npm registry) in headless Chromium,
//! and one conversation continued across protocols and watched on a socket.

use fantoccini::Locator;
use serde_json::{Value, json};

use crate::support::browser::Browser;
use crate::support::node::{n8n_chat_dist, run_script};
use crate::support::server::*;

const SHOP: &str = "https://shop.example";
const VISITOR: &str = "5f0c2a52-8d1e-4f43-9a57-0e6f3f1b2c3d";

async fn widget_server(origin: &str) -> (TestServer, String) {
    let mut config = config();
    config.auth.admin_token = "adm".into();
    config.server.max_body_bytes = 4096;
    config.tenants.get_mut("acme").unwrap().allowed_origins = vec![origin.into()];
    let server = TestServer::start(config).await;
    let key = make_key(&server, "adm", "acme", "widget").await;
    (server, key)
}

/// One call as the widget makes it: JSON, from the shop's origin; with
/// `streaming`, asking for `text/plain` as its streaming mode does.
async fn call(server: &TestServer, key: &str, body: Value, streaming: bool) -> reqwest::Response {
    let mut request = server
        .http
        .post(server.url(&format!("/n8n-chat/{key}")))
        .header("Origin", SHOP)
        .json(&body);
    if streaming {
        request = request.header("Accept", "text/plain");
    }
    request.send().await.unwrap()
}

fn send(session: &str, text: &str) -> Value {
    json!({"action": "sendMessage", "sessionId": session, "chatInput": text, "metadata": {}})
}

#[tokio::test]
async fn the_widget_protocol_answers_streams_and_restores() {
    let (server, key) = widget_server(SHOP).await;
    let load = json!({"action": "loadPreviousSession", "sessionId": VISITOR});
    let fresh: Value = call(&server, &key, load.clone(), false)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fresh, json!({"data": []}));

    let answered = call(&server, &key, send(VISITOR, "hola"), false).await;
    assert_eq!(answered.status(), 200);
    assert_eq!(answered.headers()["access-control-allow-origin"], SHOP);
    let answered: Value = answered.json().await.unwrap();
    assert_eq!(answered, json!({"output": "You said: hola"}));

    let streamed = call(&server, &key, send(VISITOR, "y ahora en trozos"), true).await;
    assert_eq!(streamed.status(), 200);
    let text = streamed.text().await.unwrap();
    let chunks: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(chunks.first().unwrap()["type"], "begin");
    assert_eq!(chunks.last().unwrap()["type"], "end");
    let items: String = chunks
        .iter()
        .filter(|chunk| chunk["type"] == "item")
        .map(|chunk| chunk["content"].as_str().unwrap())
        .collect();
    assert_eq!(items, "You said: y ahora en trozos");
    assert!(
        chunks
            .iter()
            .all(|chunk| chunk["metadata"]["nodeId"] == "tertulia")
    );

    let previous: Value = call(&server, &key, load, false).await.json().await.unwrap();
    let kinds: Vec<&str> = previous["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["id"][2].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["HumanMessage", "AIMessage", "HumanMessage", "AIMessage"]
    );
    assert_eq!(
        previous["data"][3]["kwargs"]["content"],
        "You said: y ahora en trozos"
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_widget_calls_get_clear_errors() {
    let (server, key) = widget_server(SHOP).await;
    let status_of = |response: reqwest::Response| response.status().as_u16();
    // An API key must not be in a URL; an unknown key; another origin.
    let in_url = call(&server, KEY, send(VISITOR, "hola"), false).await;
    assert_eq!(in_url.status(), 403);
    let in_url: Value = in_url.json().await.unwrap();
    assert_eq!(in_url["code"], "api_key_in_url");
    assert_eq!(
        status_of(call(&server, "wk_nope", send(VISITOR, "x"), false).await),
        401
    );
    let elsewhere = server
        .http
        .post(server.url(&format!("/n8n-chat/{key}")))
        .header("Origin", "https://evil.example")
        .json(&send(VISITOR, "hola"))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 403);

    let cases = [
        (json!({"sessionId": VISITOR, "chatInput": "x"}), 400),
        (json!({"action": "shout", "sessionId": VISITOR}), 400),
        (json!({"action": "sendMessage", "chatInput": "x"}), 400),
        (send("short", "x"), 400),
        (send(VISITOR, "  "), 400),
        (send(VISITOR, &"x".repeat(5000)), 413),
    ];
    for (body, status) in cases {
        let response = call(&server, &key, body.clone(), false).await;
        assert_eq!(response.status(), status, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert!(answer["code"].is_string(), "{answer}");
    }
    let upload = server
        .http
        .post(server.url(&format!("/n8n-chat/{key}")))
        .header("Origin", SHOP)
        .header("Content-Type", "multipart/form-data; boundary=x")
        .body("--x--")
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 415);

    let preflight = server
        .http
        .request(
            reqwest::Method::OPTIONS,
            server.url(&format!("/n8n-chat/{key}")),
        )
        .header("Origin", SHOP)
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    // Nothing was stored by any of it.
    let (_, sessions) = server.get("/chat/sessions?detail=true", Some(KEY)).await;
    assert_eq!(sessions["count"], 0, "{sessions}");
    server.stop().await;
}

/// Serves the page with the widget bundle, from its own origin (bound
/// beforehand: the origin must be allowed before the server starts).
fn widget_page(listener: std::net::TcpListener, webhook: String) {
    use warp::Filter;
    let dist = n8n_chat_dist();
    let page = format!(
        r#"<!doctype html><html><head><link href="/dist/style.css" rel="stylesheet"></head>
<body><div id="n8n-chat"></div><script type="module">
import {{ createChat }} from '/dist/chat.bundle.es.js';
createChat({{ webhookUrl: '{webhook}', mode: 'fullscreen', target: '#n8n-chat',
  enableStreaming: true, loadPreviousSession: true, showWelcomeScreen: false,
  initialMessages: [] }});
</script></body></html>"#
    );
    let routes = warp::path::end()
        .map(move || warp::reply::html(page.clone()))
        .or(warp::path("dist").and(warp::fs::dir(dist)));
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    tokio::spawn(warp::serve(routes).incoming(listener).run());
}

#[tokio::test]
async fn the_real_widget_chats_streams_and_restores_after_a_reload() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let origin = format!("http://127.0.0.1:{port}");
    let (server, key) = widget_server(&origin).await;
    widget_page(listener, server.url(&format!("/n8n-chat/{key}")));
    let browser = Browser::start().await;
    browser.goto(&format!("http://127.0.0.1:{port}/")).await;
    browser
        .until("the widget's input", "document.querySelector('textarea')")
        .await;
    let input = browser.client.find(Locator::Css("textarea")).await.unwrap();
    input
        .send_keys("hola desde el widget\u{E007}")
        .await
        .unwrap();
    let answer = "You said: hola desde el widget";
    let bot = "[...document.querySelectorAll('.chat-message-from-bot')].map(m => m.textContent).join('|')";
    let shown = browser
        .until(
            "the streamed answer",
            &format!("{bot}.includes('{answer}') && {bot}"),
        )
        .await;
    assert!(shown.as_str().unwrap().contains(answer));

    browser.goto(&format!("http://127.0.0.1:{port}/")).await;
    let user = "[...document.querySelectorAll('.chat-message-from-user')].map(m => m.textContent).join('|')";
    browser
        .until(
            "the restored question",
            &format!("{user}.includes('hola desde el widget')"),
        )
        .await;
    browser
        .until(
            "the restored answer",
            &format!("{bot}.includes('{answer}')"),
        )
        .await;
    let (_, sessions) = server.get("/chat/sessions?detail=true", Some(KEY)).await;
    assert_eq!(
        sessions["count"], 1,
        "one conversation across the reload: {sessions}"
    );
    browser.close().await;
    server.stop().await;
}

#[tokio::test]
async fn one_conversation_across_protocols_in_one_seq_order() {
    let (server, key) = widget_server(SHOP).await;
    let answered: Value = call(&server, &key, send(VISITOR, "empiezo en el widget"), false)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answered["output"], "You said: empiezo en el widget");
    let (_, sessions) = server.get("/chat/sessions?detail=true", Some(KEY)).await;
    let conversation = sessions["sessions"][0]["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, ticket) = server
        .post(
            &format!("/chat/sessions/{conversation}/ticket"),
            KEY,
            json!({}),
        )
        .await;
    let mut watcher = server
        .connect(ticket["websocket_url"].as_str().unwrap())
        .await;

    // useChat continues it, naming the widget's session id.
    let vars = [
        ("BASE", server.url("")),
        ("KEY", KEY.to_owned()),
        ("CHAT_ID", VISITOR.to_owned()),
        ("MESSAGE_ID", "sdk-1".to_owned()),
        ("TEXT", "sigo con useChat".to_owned()),
        ("MODE", "send".to_owned()),
    ];
    let sdk = run_script("ai_sdk.mjs", &vars).await;
    let (seen_user, _) = frames_until(&mut watcher, "message").await;
    assert_eq!(seen_user["message"]["content"], "sigo con useChat");
    let (done, _) = frames_until(&mut watcher, "done").await;
    assert_eq!(done["message_id"], sdk["message"]["id"]);
    // An AG-UI client takes the same thread.
    let vars = [
        ("BASE", server.url("")),
        ("KEY", KEY.to_owned()),
        ("THREAD_ID", VISITOR.to_owned()),
        ("MESSAGE_ID", "agui-1".to_owned()),
        ("TEXT", "y por AG-UI".to_owned()),
        ("STATE", "{}".to_owned()),
    ];
    let run = run_script("ag_ui.mjs", &vars).await;
    assert_eq!(run["error"], Value::Null, "{run}");
    let (seen, _) = frames_until(&mut watcher, "message").await;
    assert_eq!(seen["message"]["content"], "y por AG-UI");
    frames_until(&mut watcher, "done").await;
    let again = call(&server, &key, send(VISITOR, "y vuelvo al widget"), false).await;
    assert_eq!(again.status(), 200);
    let (back, _) = frames_until(&mut watcher, "message").await;
    assert_eq!(back["message"]["content"], "y vuelvo al widget");
    let (last, _) = frames_until(&mut watcher, "done").await;

    let history = server.history(&conversation).await;
    let seqs: Vec<u64> = history
        .iter()
        .map(|message| message["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(history[2]["content"], "sigo con useChat");
    assert_eq!(history[3]["seq"], done["seq"]);
    assert_eq!(history[4]["content"], "y por AG-UI");
    assert_eq!(history[7]["seq"], last["seq"]);
    server.stop().await;
}
