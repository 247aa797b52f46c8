//! The WebSocket protocol: frames, streaming, fan-out, cancel, resume, queues
//! and the limits that keep a bad client from hurting the others.

use std::time::Duration;

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tertulia_actors::runtime::{AgentEvent, AgentProvider, AgentRequest, AgentStream};
use tokio_tungstenite::tungstenite::Message;

use crate::support::server::*;

/// A message whose echo streams in many pieces.
fn long_message(words: usize) -> String {
    (0..words)
        .map(|index| format!("w{index}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Echo streaming slowly enough to act in the middle of an answer.
fn slow_echo() -> tertulia::config::Config {
    let mut config = config();
    config.agents.echo.word_delay_ms = 5;
    config
}

#[tokio::test]
async fn every_bad_frame_gets_its_error_frame_and_the_socket_stays_open() {
    let mut config = config();
    config.limits.max_content_bytes = 100;
    let server = TestServer::start(config).await;
    let (_, url) = server.create_session().await;
    let mut ws = server.connect(&url).await;

    let cases = [
        ("{not json".to_string(), "invalid_json"),
        (json!({"content": "hi"}).to_string(), "missing_type"),
        (
            json!({"type": "shout", "content": "hi"}).to_string(),
            "unknown_type",
        ),
        (json!({"type": "message"}).to_string(), "missing_content"),
        (
            json!({"type": "message", "content": ""}).to_string(),
            "empty_content",
        ),
        (
            json!({"type": "message", "content": "   "}).to_string(),
            "empty_content",
        ),
        (
            json!({"type": "message", "content": "x".repeat(101)}).to_string(),
            "content_too_large",
        ),
        (
            json!({"type": "message", "content": 42}).to_string(),
            "invalid_frame",
        ),
        (
            json!({"type": "resume", "after_seq": "soon"}).to_string(),
            "invalid_frame",
        ),
    ];
    for (text, code) in cases {
        ws.send(Message::Text(text.clone().into())).await.unwrap();
        let error = next_frame(&mut ws).await;
        assert_eq!(error["type"], "error", "{text}");
        assert_eq!(error["code"], code, "{text}: {error}");
        assert!(!error["content"].as_str().unwrap().is_empty());
    }
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(next_frame(&mut ws).await["code"], "binary_not_supported");

    // Still open and working; nothing bad was stored.
    let ack = say(&mut ws, "still here").await;
    assert_eq!(ack["seq"], 1);
    server.stop().await;
}

#[tokio::test]
async fn a_message_over_the_socket_limit_closes_it_with_1009() {
    let mut config = config();
    config.websocket.max_message_bytes = 1024;
    let server = TestServer::start(config).await;
    let (session, url) = server.create_session().await;
    let mut ws = server.connect(&url).await;
    send(
        &mut ws,
        json!({"type": "message", "content": "y".repeat(4096)}),
    )
    .await;
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, 1009, "{reason}");
    assert!(server.history(&session).await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_context_frame_merges_into_the_conversations_context() {
    let server = TestServer::start(config()).await;
    let (session, url) = server.create_session().await;
    let mut ws = server.connect(&url).await;
    send(
        &mut ws,
        json!({"type": "context", "context": {"total_invoices": 4, "plan": null}}),
    )
    .await;
    send(
        &mut ws,
        json!({"type": "message", "content": "hi", "context": {"locale": "es"}}),
    )
    .await;
    frames_until(&mut ws, "done").await;
    let (_, listed) = server.get("/chat/sessions?detail=true", Some(KEY)).await;
    assert_eq!(listed["sessions"][0]["session_id"], session.as_str());
    assert_eq!(
        listed["sessions"][0]["context"],
        json!({"total_invoices": 4, "locale": "es"})
    );
    server.stop().await;
}

#[tokio::test]
async fn ping_gets_pong() {
    let server = TestServer::start(config()).await;
    let (_, url) = server.create_session().await;
    let mut ws = server.connect(&url).await;
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next_frame(&mut ws).await, json!({"type": "pong"}));
    server.stop().await;
}

#[tokio::test]
async fn two_subscribers_receive_the_same_stream() {
    let server = TestServer::start(config()).await;
    let (_, url) = server.create_session().await;
    let mut alice = server.connect(&url).await;
    let mut bob = server.connect(&url).await;

    let ack = say(&mut alice, "hello there friend").await;
    let (done_alice, frames_alice) = frames_until(&mut alice, "done").await;
    let (done_bob, frames_bob) = frames_until(&mut bob, "done").await;

    // Bob sees Alice's message as a `message` frame, then the same chunks.
    assert_eq!(frames_bob[0]["type"], "message");
    assert_eq!(frames_bob[0]["message"]["content"], "hello there friend");
    assert_eq!(frames_bob[0]["message"]["role"], "user");
    assert_eq!(frames_bob[0]["message"]["id"], ack["message_id"]);
    assert_eq!(&frames_bob[1..], &frames_alice[..]);
    assert_eq!(done_alice, done_bob);
    assert_eq!(chunk_text(&frames_bob), "You said: hello there friend");

    // Typing reaches the other subscriber only.
    send(&mut bob, json!({"type": "typing"})).await;
    assert_eq!(next_frame(&mut alice).await, json!({"type": "typing"}));
    send(&mut bob, json!({"type": "ping"})).await;
    assert_eq!(
        next_frame(&mut bob).await,
        json!({"type": "pong"}),
        "bob gets no typing echo"
    );
    server.stop().await;
}

#[tokio::test]
async fn cancel_stops_the_answer_and_stores_it_as_interrupted() {
    let server = TestServer::start(slow_echo()).await;
    let (session, url) = server.create_session().await;
    let mut ws = server.connect(&url).await;

    send(&mut ws, json!({"type": "cancel"})).await;
    assert_eq!(next_frame(&mut ws).await["code"], "nothing_to_cancel");

    let question = long_message(400);
    say(&mut ws, &question).await;
    let (_, _) = frames_until(&mut ws, "chunk").await;
    send(&mut ws, json!({"type": "cancel"})).await;
    let (done, _) = frames_until(&mut ws, "done").await;
    assert_eq!(done["status"], "interrupted");
    let partial = done["content"].as_str().unwrap();
    let full = format!("You said: {question}");
    assert!(partial.len() < full.len(), "the answer was cut short");
    assert!(full.starts_with(partial));

    let history = server.history(&session).await;
    assert_eq!(history[1]["status"], "interrupted");
    assert_eq!(history[1]["content"], partial);

    // The conversation carries on.
    say(&mut ws, "next").await;
    let (done, _) = frames_until(&mut ws, "done").await;
    assert_eq!(
        (done["content"].clone(), done["status"].clone()),
        (json!("You said: next"), json!("complete"))
    );
    server.stop().await;
}

#[tokio::test]
async fn resume_replays_exactly_the_missed_messages_in_order() {
    let server = TestServer::start(config()).await;
    let (_, url) = server.create_session().await;
    let mut alice = server.connect(&url).await;
    let mut bob = server.connect(&url).await;

    say(&mut alice, "one").await;
    let (done, _) = frames_until(&mut alice, "done").await;
    let seen = done["seq"].as_u64().unwrap();
    frames_until(&mut bob, "done").await;
    drop(alice);

    for text in ["two", "three"] {
        say(&mut bob, text).await;
        frames_until(&mut bob, "done").await;
    }

    // On connect, with ?after_seq=.
    let mut alice = server.connect(&format!("{url}&after_seq={seen}")).await;
    let mut replayed = Vec::new();
    for _ in 0..4 {
        replayed.push(next_frame(&mut alice).await);
    }
    let summary: Vec<(Value, Value, Value)> = replayed
        .iter()
        .map(|frame| {
            (
                frame["type"].clone(),
                frame["message"]["seq"].clone(),
                frame["message"]["content"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (json!("message"), json!(3), json!("two")),
            (json!("message"), json!(4), json!("You said: two")),
            (json!("message"), json!(5), json!("three")),
            (json!("message"), json!(6), json!("You said: three")),
        ]
    );
    // Nothing else was queued.
    send(&mut alice, json!({"type": "ping"})).await;
    assert_eq!(next_frame(&mut alice).await["type"], "pong");

    // With a `resume` frame on an open socket.
    send(&mut alice, json!({"type": "resume", "after_seq": 5})).await;
    let frame = next_frame(&mut alice).await;
    assert_eq!(frame["message"]["seq"], 6);
    send(&mut alice, json!({"type": "ping"})).await;
    assert_eq!(next_frame(&mut alice).await["type"], "pong");

    // A resume point past the end is reported, not silently ignored.
    send(&mut alice, json!({"type": "resume", "after_seq": 99})).await;
    assert_eq!(next_frame(&mut alice).await["code"], "resume_out_of_range");
    server.stop().await;
}

#[tokio::test]
async fn joining_mid_answer_gets_the_text_so_far_then_the_live_chunks() {
    let server = TestServer::start(slow_echo()).await;
    let (_, url) = server.create_session().await;
    let mut alice = server.connect(&url).await;
    say(&mut alice, &long_message(200)).await;
    // Let a few words through before the second tab opens.
    for _ in 0..5 {
        frames_until(&mut alice, "chunk").await;
    }
    let mut bob = server.connect(&url).await;
    let (done_bob, frames_bob) = frames_until(&mut bob, "done").await;
    let (done_alice, _) = frames_until(&mut alice, "done").await;

    assert_eq!(frames_bob[0]["type"], "chunk");
    assert_eq!(
        frames_bob[0]["snapshot"], true,
        "the first frame is the text so far"
    );
    assert!(
        frames_bob[0]["content"]
            .as_str()
            .unwrap()
            .starts_with("You said: w0")
    );
    assert_eq!(
        chunk_text(&frames_bob),
        done_bob["content"],
        "nothing lost or doubled"
    );
    assert_eq!(done_alice, done_bob);
    server.stop().await;
}

#[tokio::test]
async fn an_answer_keeps_generating_after_its_asker_disconnects() {
    let server = TestServer::start(slow_echo()).await;
    let (session, url) = server.create_session().await;
    let mut ws = server.connect(&url).await;
    let question = long_message(60);
    say(&mut ws, &question).await;
    frames_until(&mut ws, "chunk").await;
    drop(ws);

    let expected = format!("You said: {question}");
    eventually("the answer is stored in full", || async {
        let history = server.history(&session).await;
        history.len() == 2
            && history[1]["content"] == expected.as_str()
            && history[1]["status"] == "complete"
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn messages_sent_during_an_answer_are_queued_and_answered_in_order() {
    let server = TestServer::start(slow_echo()).await;
    let (session, url) = server.create_session().await;
    let mut ws = server.connect(&url).await;
    let first = long_message(30);
    say(&mut ws, &first).await;
    say(&mut ws, "second").await;
    let (done_1, _) = frames_until(&mut ws, "done").await;
    let (done_2, _) = frames_until(&mut ws, "done").await;
    assert_eq!(done_1["content"], format!("You said: {first}"));
    assert_eq!(done_2["content"], "You said: second");

    let history = server.history(&session).await;
    let log: Vec<(u64, &str)> = history
        .iter()
        .map(|message| {
            (
                message["seq"].as_u64().unwrap(),
                message["role"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        log,
        vec![(1, "user"), (2, "user"), (3, "assistant"), (4, "assistant")]
    );
    server.stop().await;
}

#[tokio::test]
async fn a_repeated_client_msg_id_is_acknowledged_again_but_stored_once() {
    let server = TestServer::start(config()).await;
    let (session, url) = server.create_session().await;
    let mut ws = server.connect(&url).await;
    let message = json!({"type": "message", "content": "only once", "client_msg_id": "c-1"});
    send(&mut ws, message.clone()).await;
    let (first, _) = frames_until(&mut ws, "ack").await;
    frames_until(&mut ws, "done").await;
    send(&mut ws, message).await;
    let second = next_frame(&mut ws).await;
    assert_eq!(second, first);

    let history = server.history(&session).await;
    assert_eq!(history.len(), 2, "one question, one answer: {history:?}");
    assert_eq!(history[0]["client_msg_id"], "c-1");
    server.stop().await;
}

/// A test-only agent that streams `chunks` pieces of `size` bytes, one per
/// millisecond: a model far faster than a real one, still one a reading client
/// keeps up with.
struct Firehose {
    chunks: usize,
    size: usize,
}

impl AgentProvider for Firehose {
    fn answer(&self, _request: AgentRequest) -> AgentStream {
        let piece = "x".repeat(self.size);
        futures_util::stream::iter(0..self.chunks)
            .then(move |_| {
                let piece = piece.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    Ok(AgentEvent::Text(piece))
                }
            })
            .boxed()
    }
}

#[tokio::test]
async fn a_slow_consumer_is_disconnected_while_a_fast_one_keeps_receiving() {
    let mut config = config();
    config.tenants.get_mut("acme").unwrap().agent = "firehose".into();
    config.limits.outbound_queue_bytes = 256 * 1024;
    let mut agents: HashMap<String, Arc<dyn AgentProvider>> = HashMap::new();
    // 12 MB: more than the kernel buffers a socket that is never read.
    agents.insert(
        "firehose".into(),
        Arc::new(Firehose {
            chunks: 1500,
            size: 8192,
        }),
    );
    let server = TestServer::start_with_agents(config, agents).await;
    let (_, url) = server.create_session().await;
    let mut slow = server.connect(&url).await;
    let mut fast = server.connect(&url).await;

    say(&mut fast, "go").await;
    let (done, frames) = frames_until(&mut fast, "done").await;
    assert_eq!(done["status"], "complete");
    assert_eq!(
        chunk_text(&frames).len(),
        1500 * 8192,
        "the fast subscriber got every byte"
    );

    let (code, reason) = close_of(&mut slow).await;
    assert_eq!(code, 1008);
    assert!(reason.contains("slow consumer"), "{reason}");
    server.stop().await;
}

#[tokio::test]
async fn a_silent_peer_is_dropped_after_the_keepalive_timeout() {
    let mut config = config();
    config.websocket.ping_interval_ms = 50;
    config.websocket.pong_timeout_ms = 50;
    let server = TestServer::start(config).await;
    let (_, url) = server.create_session().await;
    let mut ws = server.connect(&url).await;
    // Not reading is what makes this peer silent: its pongs are never sent.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, 1001);
    assert!(reason.contains("keepalive"), "{reason}");

    // A peer that keeps reading answers the pings and stays.
    let mut live = server.connect(&url).await;
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_millis(400) {
        let _ = tokio::time::timeout(Duration::from_millis(20), live.next()).await;
    }
    send(&mut live, json!({"type": "ping"})).await;
    assert_eq!(next_frame(&mut live).await["type"], "pong");
    server.stop().await;
}

#[tokio::test]
async fn a_message_posted_by_a_back_end_reaches_every_socket_and_is_answered() {
    use tertulia_actors::model::{NewMessage, Scope, TenantId};
    let server = TestServer::start(config()).await;
    let (session, url) = server.create_session().await;
    let mut alice = server.connect(&url).await;
    let mut bob = server.connect(&url).await;
    let tenant = Scope::tenant(TenantId("acme".into()));
    let runtime = &server.server.runtime;
    let post = |content: &str, client_msg_id: Option<&str>| NewMessage {
        client_msg_id: client_msg_id.map(str::to_owned),
        ..NewMessage::user(content)
    };

    let ack = runtime
        .post_message(
            &tenant,
            session.parse().unwrap(),
            post("from the CRM", Some("crm-1")),
        )
        .await
        .unwrap();
    assert_eq!(ack.seq, 1);
    for ws in [&mut alice, &mut bob] {
        let (done, before) = frames_until(ws, "done").await;
        assert_eq!(before[0]["message"]["content"], "from the CRM");
        assert_eq!(done["content"], "You said: from the CRM");
    }
    // A repeat is acknowledged again, not stored twice; bad input and other
    // tenants are refused without touching the log.
    let again = runtime
        .post_message(
            &tenant,
            session.parse().unwrap(),
            post("from the CRM", Some("crm-1")),
        )
        .await
        .unwrap();
    assert_eq!(again, ack);
    let empty = runtime
        .post_message(&tenant, session.parse().unwrap(), post("  ", None))
        .await;
    assert_eq!(empty.unwrap_err().code(), "invalid_input");
    let foreign = runtime
        .post_message(
            &Scope::tenant(TenantId("globex".into())),
            session.parse().unwrap(),
            post("hi", None),
        )
        .await;
    assert_eq!(foreign.unwrap_err().code(), "session_not_found");
    assert_eq!(server.history(&session).await.len(), 2);
    server.stop().await;
}

/// A tenant that greets by language greets each socket in its own: the
/// `locale` in the socket's query, else its `Accept-Language`, else English.
#[tokio::test]
async fn the_greeting_follows_the_sockets_language() {
    let mut config = config();
    config.tenants.get_mut("acme").unwrap().greeting = serde_json::from_value(json!({
        "es": "¡Hola! ¿En qué te ayudo?",
        "en": "Hello! How can I help?",
    }))
    .unwrap();
    let server = TestServer::start(config).await;
    let (_, url) = server.create_session().await;
    let greeting = |url: String, language: Option<&'static str>| async move {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().unwrap();
        if let Some(language) = language {
            request
                .headers_mut()
                .insert("accept-language", language.parse().unwrap());
        }
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let frame = next_frame(&mut ws).await;
        assert_eq!(frame["type"], "system");
        frame["content"].as_str().unwrap().to_owned()
    };
    let spanish = "¡Hola! ¿En qué te ayudo?";
    let english = "Hello! How can I help?";
    assert_eq!(greeting(url.clone(), Some("es-MX,es;q=0.9")).await, spanish);
    assert_eq!(greeting(url.clone(), Some("de-DE")).await, english);
    assert_eq!(greeting(url.clone(), None).await, english);
    assert_eq!(
        greeting(format!("{url}&locale=es"), Some("en")).await,
        spanish
    );
    let refused = tokio_tungstenite::connect_async(format!("{url}&locale=%3Cscript%3E")).await;
    assert!(refused.is_err(), "a malformed locale is a 400");
    server.stop().await;
}
