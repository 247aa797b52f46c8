//! The pages, driven in headless Chromium through ChromeDriver (WebDriver, the
//! fantoccini crate): the demo chat streams, stops, renders message text as
//! text and resumes across a SIGKILL of the server; the widget works from an
//! allowed origin and is refused from another; a person takes a conversation
//! over from the console and hands it back.
//!
//! These tests need Debian's `chromium` and `chromium-driver` (`.ci/run`
//! installs them). Without them they fail, saying how to install them: they
//! never skip. Each saves a screenshot of every page it drives under
//! `$CARGO_TARGET_TMPDIR/browser/`.

use serde_json::{Value, json};
use warp::Filter;

use crate::support::browser::*;
use crate::support::server::*;

/// Types into the demo page (or the console) and sends.
async fn say_on_page(browser: &Browser, text: &str) {
    browser
        .js(&format!(
            "const input = document.getElementById('text'); input.value = {}; \
             input.form.requestSubmit();",
            js_string(text)
        ))
        .await;
}

/// The demo page's socket is open.
const CONNECTED: &str = "document.getElementById('status').textContent === 'connected'";
/// The demo page's newest answer bubble.
const LAST_ANSWER: &str = "Array.from(document.querySelectorAll('#log .msg.assistant')).pop()";

/// Clicks "New conversation" on the demo page and waits for its socket.
async fn new_conversation(browser: &Browser) {
    browser.js("document.getElementById('new').click()").await;
    browser.until("connected", CONNECTED).await;
}

/// The conversation the demo page shows, from its address.
async fn conversation_in_address(browser: &Browser) -> String {
    let session = browser
        .js("return location.hash.slice('#session='.length)")
        .await;
    session.as_str().unwrap().to_owned()
}

/// What is stored of the conversation the demo page shows (the
/// development tenant's), oldest first.
async fn stored_on_page(server: &TestServer, browser: &Browser) -> Vec<serde_json::Value> {
    let session = conversation_in_address(browser).await;
    let (_, stored) = server
        .get(
            &format!("/chat/sessions/{session}/history"),
            Some(tertulia::api::pages::DEVELOPMENT_KEY),
        )
        .await;
    stored["history"].as_array().unwrap().clone()
}

/// The demo page's messages as `role: text`, in order.
const PAGE_MESSAGES: &str = "Array.from(document.querySelectorAll('#log .msg'))\
    .map(el => (el.classList.contains('user') ? 'user' : 'assistant') + ': ' + el.dataset.text)";

/// Whether the page shows a whole answer with this text.
fn answer_shown(text: &str) -> String {
    format!(
        "Array.from(document.querySelectorAll('#log .msg.assistant')).some(el => el.dataset.text === {})",
        js_string(text)
    )
}

/// The test config plus the `default` tenant on the development key, as a
/// fresh install has it, answering with a pause between words.
fn demo_config(word_delay_ms: u64) -> tertulia::config::Config {
    let mut config = config();
    config.agents.echo.word_delay_ms = word_delay_ms;
    config.tenants.insert(
        "default".into(),
        tertulia_actors::model::TenantSettings {
            agent: "echo".into(),
            ..Default::default()
        },
    );
    config
}

#[tokio::test]
async fn the_demo_page_streams_stops_and_shows_message_text_as_text() {
    let server = TestServer::start(demo_config(40)).await;
    let browser = Browser::start().await;
    browser.goto(&server.url("/")).await;
    let key = browser
        .js("return document.getElementById('key').value")
        .await;
    assert_eq!(
        key,
        tertulia::api::pages::DEVELOPMENT_KEY,
        "the dev key is filled in"
    );
    browser
        .js("window.alerted = false; window.alert = () => { window.alerted = true; };")
        .await;
    new_conversation(&browser).await;
    browser
        .until("the greeting", "document.querySelector('#log .system')")
        .await;

    // Streaming: record every text the answer's bubble shows on its way.
    browser
        .js("window.states = new Set(); new MutationObserver(() => \
               document.querySelectorAll('#log .msg.assistant').forEach(el => states.add(el.dataset.text))\
             ).observe(document.getElementById('log'), {subtree: true, childList: true, attributes: true});")
        .await;
    say_on_page(&browser, "tell me **something** about `pipes`").await;
    browser
        .until(
            "the whole answer",
            &answer_shown("You said: tell me **something** about `pipes`"),
        )
        .await;
    let states = browser.js("return Array.from(states)").await;
    assert!(
        states.as_array().unwrap().len() >= 4,
        "the answer grew word by word: {states}"
    );
    // Markdown is rendered: bold and code are elements, not asterisks.
    let rendered = browser
        .js(&format!(
            "const el = {LAST_ANSWER}; \
             return [el.querySelector('strong')?.textContent, el.querySelector('code')?.textContent]"
        ))
        .await;
    assert_eq!(rendered, json!(["something", "pipes"]));

    // Message text never becomes HTML.
    let attack = "<img src=x onerror=alert(1)> <script>alert(2)</script> [x](javascript:alert(3))";
    say_on_page(&browser, attack).await;
    browser
        .until(
            "the attack echoed",
            &answer_shown(&format!("You said: {attack}")),
        )
        .await;
    let safe = browser
        .js("const log = document.getElementById('log'); return { \
               images: log.querySelectorAll('img').length, scripts: log.querySelectorAll('script').length, \
               links: Array.from(log.querySelectorAll('a')).map(a => a.href), alerted: window.alerted, \
               shown: Array.from(log.querySelectorAll('.msg.user')).pop().textContent }")
        .await;
    assert_eq!(safe["images"], 0, "{safe}");
    assert_eq!(safe["scripts"], 0, "{safe}");
    assert_eq!(safe["links"], json!([]), "no javascript: link: {safe}");
    assert_eq!(safe["alerted"], false, "{safe}");
    assert_eq!(safe["shown"], attack, "shown as typed: {safe}");

    // Stop mid-answer.
    let long: Vec<String> = (1..=60).map(|i| format!("word{i}")).collect();
    let long = long.join(" ");
    say_on_page(&browser, &long).await;
    browser
        .until(
            "the long answer starts",
            &format!("{LAST_ANSWER}.dataset.text.includes('word1')"),
        )
        .await;
    browser.js("document.getElementById('stop').click()").await;
    browser
        .until(
            "the answer marked stopped",
            &format!("{LAST_ANSWER}.classList.contains('interrupted')"),
        )
        .await;
    let stopped = browser
        .js(&format!("return {LAST_ANSWER}.dataset.text"))
        .await;
    let stopped = stopped.as_str().unwrap().to_owned();
    assert!(
        stopped.len() < format!("You said: {long}").len(),
        "cut short: {stopped}"
    );
    browser.screenshot("demo-page").await;

    // What the page shows is what was stored.
    let stored = stored_on_page(&server, &browser).await;
    assert_eq!(stored.len(), 6, "{stored:?}");
    assert_eq!(stored[5]["status"], "interrupted");
    assert_eq!(stored[5]["content"], stopped.as_str());
    browser.close().await;
    server.stop().await;
}

/// On `/`, typing a first message starts a conversation by itself: no
/// "New conversation" click needed.
#[tokio::test]
async fn the_first_message_on_the_demo_page_starts_a_conversation() {
    let server = TestServer::start(demo_config(0)).await;
    let browser = Browser::start().await;
    browser.goto(&server.url("/")).await;
    say_on_page(&browser, "hola sin pulsar nada").await;
    browser
        .until(
            "the answer",
            &answer_shown("You said: hola sin pulsar nada"),
        )
        .await;
    let stored = stored_on_page(&server, &browser).await;
    let contents: Vec<&str> = stored
        .iter()
        .map(|message| message["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        vec!["hola sin pulsar nada", "You said: hola sin pulsar nada"]
    );
    browser.close().await;
    server.stop().await;
}

#[tokio::test]
async fn the_demo_page_resumes_after_a_sigkill_without_losing_or_doubling_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tertulia.toml");
    std::fs::write(&config, "[agents.echo]\nword_delay_ms = 40\n").unwrap();
    let data = dir.path().join("data");
    let port = crate::support::binary::free_port();
    let mut server = crate::support::binary::start(&config, &data, port).await;
    let browser = Browser::start().await;
    let outcome = async {
        browser.goto(&format!("http://127.0.0.1:{port}/")).await;
        new_conversation(&browser).await;
        say_on_page(&browser, "first").await;
        browser
            .until("the first answer", &answer_shown("You said: first"))
            .await;

        // Killed while the second answer streams: it was never stored.
        let long: Vec<String> = (1..=40).map(|i| format!("w{i}")).collect();
        let second = long.join(" ");
        say_on_page(&browser, &second).await;
        browser
            .until(
                "the second answer starts",
                &format!("{LAST_ANSWER}.dataset.text.includes('w1')"),
            )
            .await;
        crate::support::binary::kill(&mut server);
        browser
            .until(
                "the page notices",
                "document.getElementById('status').textContent.includes('reconnecting')",
            )
            .await;
        server = crate::support::binary::start(&config, &data, port).await;
        browser.until("reconnected", CONNECTED).await;
        // The restarted server answers the stored question again, from scratch.
        browser
            .until(
                "the second answer, whole",
                &answer_shown(&format!("You said: {second}")),
            )
            .await;
        say_on_page(&browser, "third").await;
        browser
            .until("the third answer", &answer_shown("You said: third"))
            .await;
        browser.screenshot("demo-page-after-restart").await;

        let shown = browser.js(&format!("return {PAGE_MESSAGES}")).await;
        let expected = json!([
            "user: first",
            "assistant: You said: first",
            format!("user: {second}"),
            format!("assistant: You said: {second}"),
            "user: third",
            "assistant: You said: third",
        ]);
        assert_eq!(shown, expected, "nothing lost, nothing doubled");
        let session = conversation_in_address(&browser).await;
        let stored: Value = reqwest::Client::new()
            .get(format!(
                "http://127.0.0.1:{port}/chat/sessions/{session}/history"
            ))
            .header("X-API-Key", tertulia::api::pages::DEVELOPMENT_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let stored: Vec<String> = stored["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                format!(
                    "{}: {}",
                    m["role"].as_str().unwrap(),
                    m["content"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(json!(stored), expected, "the page shows what is stored");
    };
    // The server is a child process: stop it whatever the outcome.
    let result = tokio::time::timeout(DEADLINE * 6, outcome).await;
    crate::support::binary::kill(&mut server);
    browser.close().await;
    result.expect("the resume test finishes in time");
}

/// A landing page's own origin: bound now, served once the chat server runs.
async fn landing_listener() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    (listener, origin)
}

/// Serves a landing page that embeds the widget with this key.
fn serve_landing(
    listener: tokio::net::TcpListener,
    server: &TestServer,
    key: &str,
) -> tokio::task::JoinHandle<()> {
    let html = format!(
        "<!doctype html><html lang=\"es\"><head><title>Fontanería Ana</title></head>\
         <body><h1>Fontanería Ana</h1><p>Reparaciones 24 h.</p>\
         <script src=\"{}\" data-key=\"{key}\" data-title=\"Ayuda\"></script></body></html>",
        server.url("/widget.js")
    );
    let route = warp::any().map(move || warp::reply::html(html.clone()));
    tokio::spawn(warp::serve(route).incoming(listener).run())
}

/// Runs `body` in the widget's shadow root (as `root`).
fn in_widget(body: &str) -> String {
    format!("const root = document.getElementById('tertulia-widget').shadowRoot; {body}")
}

#[tokio::test]
async fn the_widget_chats_from_an_allowed_origin_and_is_refused_elsewhere() {
    let (allowed_listener, allowed) = landing_listener().await;
    let (refused_listener, refused) = landing_listener().await;
    let mut config = demo_config(0);
    config.auth.admin_token = "adm".into();
    config.tenants.get_mut("acme").unwrap().allowed_origins = vec![allowed.clone()];
    let server = TestServer::start(config).await;
    let key = make_key(&server, "adm", "acme", "widget").await;
    let allowed_task = serve_landing(allowed_listener, &server, &key);
    let refused_task = serve_landing(refused_listener, &server, &key);

    let browser = Browser::start().await;
    browser.goto(&allowed).await;
    browser
        .until(
            "the bubble",
            &in_widget("return root.querySelector('.bubble')"),
        )
        .await;
    browser
        .js(&in_widget("root.querySelector('.bubble').click()"))
        .await;
    // Consent first: nothing can be typed before the visitor decides.
    browser
        .until(
            "the consent question",
            &in_widget("return !root.querySelector('.consent').hidden"),
        )
        .await;
    assert_eq!(
        browser
            .js(&in_widget("return root.querySelector('.text').disabled"))
            .await,
        true
    );
    browser
        .js(&in_widget("root.querySelector('.yes').click()"))
        .await;
    browser
        .until(
            "the input enabled",
            &in_widget("return !root.querySelector('.text').disabled"),
        )
        .await;
    browser
        .js(&in_widget(
            "const input = root.querySelector('.text'); input.value = 'Soy Ana, ana@example.com'; \
             input.form.requestSubmit();",
        ))
        .await;
    browser
        .until(
            "the answer in the widget",
            &in_widget(
                "return Array.from(root.querySelectorAll('.msg.assistant')).some(el => el.dataset.text === 'You said: Soy Ana, ana@example.com')",
            ),
        )
        .await;
    browser
        .js(&in_widget("root.querySelector('.person').click()"))
        .await;
    browser
        .until(
            "the handoff noted",
            &in_widget("return root.querySelector('.presence').textContent"),
        )
        .await;
    browser.screenshot("widget-allowed-origin").await;

    // The server saw all of it: consent, the page's locale, the lead and the handoff.
    let session_id = browser
        .js("return Object.entries(localStorage).find(([k]) => k.endsWith(':session'))[1]")
        .await;
    let locale = browser.js("return navigator.language").await;
    let (status, history) = server
        .get(
            &format!("/api/webchat/history/{}", session_id.as_str().unwrap()),
            Some(KEY),
        )
        .await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["messages"][0]["locale"], locale, "{history}");
    let conversation = history["conversation_id"].as_str().unwrap();
    let (_, contact) = server
        .get(&format!("/chat/{conversation}/contact"), Some(KEY))
        .await;
    assert_eq!(
        contact["email"], "ana@example.com",
        "consent was recorded: {contact}"
    );
    let handoffs = server.acme_events(&["handoff.requested"]).await;
    assert_eq!(handoffs.len(), 1);
    assert_eq!(handoffs[0].data["requested_by"], "visitor");

    // Another origin: the widget says it is unavailable, and nothing was opened.
    browser.goto(&refused).await;
    browser
        .js(&in_widget("root.querySelector('.bubble').click()"))
        .await;
    browser
        .until(
            "the refusal",
            &in_widget("return root.querySelector('.log .error')?.textContent"),
        )
        .await;
    assert_eq!(
        browser
            .js(&in_widget("return root.querySelector('.consent').hidden"))
            .await,
        true,
        "no consent asked on a refused origin"
    );
    browser.screenshot("widget-refused-origin").await;
    let refused_id = browser
        .js("return Object.entries(localStorage).find(([k]) => k.endsWith(':session'))[1]")
        .await;
    let (status, _) = server
        .get(
            &format!("/api/webchat/history/{}", refused_id.as_str().unwrap()),
            Some(KEY),
        )
        .await;
    assert_eq!(
        status, 404,
        "no conversation was opened from the refused origin"
    );
    browser.close().await;
    allowed_task.abort();
    refused_task.abort();
    server.stop().await;
}

#[tokio::test]
async fn a_person_takes_over_from_the_console_and_hands_back() {
    let mut config = demo_config(0);
    config.auth.admin_token = "adm".into();
    let server = TestServer::start(config).await;
    let staff_key = make_key(&server, "adm", "acme", "staff").await;
    assert!(staff_key.starts_with("sk_"), "{staff_key}");

    let browser = Browser::start().await;
    // The visitor, on the demo page with acme's key.
    browser.goto(&server.url("/")).await;
    let visitor = browser.client.window().await.unwrap();
    browser
        .js(&format!(
            "document.getElementById('key').value = {};",
            js_string(KEY)
        ))
        .await;
    new_conversation(&browser).await;
    say_on_page(&browser, "my boiler leaks").await;
    browser
        .until("the AI answers", &answer_shown("You said: my boiler leaks"))
        .await;
    let session = conversation_in_address(&browser).await;

    // The console, in a second tab.
    let console = browser.client.new_window(true).await.unwrap().handle;
    browser
        .client
        .switch_to_window(console.clone())
        .await
        .unwrap();
    browser.goto(&server.url("/console")).await;
    browser
        .js(&format!(
            "document.getElementById('key').value = {}; document.getElementById('signin').requestSubmit();",
            js_string(&staff_key)
        ))
        .await;
    let row = format!("document.querySelector('#list li[data-id=\"{session}\"]')");
    browser.until("the conversation listed", &row).await;
    browser.js(&format!("{row}.click()")).await;
    browser
        .until(
            "the history",
            "Array.from(document.querySelectorAll('#log .msg')).length >= 2",
        )
        .await;
    browser
        .until(
            "the visitor is present",
            "document.getElementById('presence').textContent.includes('1 visitor')",
        )
        .await;
    browser
        .js("document.getElementById('takeover').click()")
        .await;
    browser
        .until("taken over", "!document.getElementById('handback').hidden")
        .await;

    // The visitor sees a person join; the AI does not answer them any more.
    browser
        .client
        .switch_to_window(visitor.clone())
        .await
        .unwrap();
    browser
        .until(
            "the visitor sees the person",
            "document.getElementById('presence').textContent.includes('acme staff (a person)')",
        )
        .await;
    browser
        .until(
            "the join notice",
            "Array.from(document.querySelectorAll('#log .system')).some(el => el.textContent.includes('acme staff joined'))",
        )
        .await;
    say_on_page(&browser, "hello? is anyone there").await;
    browser
        .until(
            "the message stored",
            "document.querySelectorAll('#log .msg.user.pending').length === 0",
        )
        .await;

    browser
        .client
        .switch_to_window(console.clone())
        .await
        .unwrap();
    browser
        .until(
            "the console shows the visitor's message",
            "Array.from(document.querySelectorAll('#log .msg.user')).some(el => el.dataset.text === 'hello? is anyone there')",
        )
        .await;
    say_on_page(&browser, "Hola, soy de soporte. ¿Dónde está la fuga?").await;
    browser.screenshot("console-taken-over").await;

    browser
        .client
        .switch_to_window(visitor.clone())
        .await
        .unwrap();
    browser
        .until(
            "the staff reply, live, with its author",
            "Array.from(document.querySelectorAll('#log .msg.assistant.human')).some(el => \
               el.dataset.text === 'Hola, soy de soporte. ¿Dónde está la fuga?' \
               && el.querySelector('.author').textContent === 'acme staff')",
        )
        .await;
    // The AI stayed silent: the person's reply is the only answer to the question.
    let history = server.history(&session).await;
    let after_question: Vec<String> = history
        .iter()
        .skip_while(|m| m["content"] != "hello? is anyone there")
        .map(|m| {
            format!(
                "{}: {}",
                m["role"].as_str().unwrap(),
                m["content"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        after_question,
        vec![
            "user: hello? is anyone there",
            "assistant: Hola, soy de soporte. ¿Dónde está la fuga?",
        ]
    );
    browser.screenshot("visitor-with-a-person").await;

    // Handed back: the AI answers again.
    browser.client.switch_to_window(console).await.unwrap();
    browser
        .js("document.getElementById('handback').click()")
        .await;
    browser
        .until("handed back", "!document.getElementById('takeover').hidden")
        .await;
    browser.client.switch_to_window(visitor).await.unwrap();
    browser
        .until(
            "the AI is back",
            "document.getElementById('presence').textContent.includes('The AI assistant')",
        )
        .await;
    say_on_page(&browser, "thanks").await;
    browser
        .until("the AI answers again", &answer_shown("You said: thanks"))
        .await;
    browser.close().await;
    server.stop().await;
}
