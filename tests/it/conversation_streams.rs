//! Conversations read as Durable Streams (`/ds/{tenant}/v1/conversation/{id}`),
//! on a real server: the log as JSON items from any offset, ETags, the
//! context whole whenever it changes, a long-poll woken by a message, an
//! answer streamed chunk by chunk over SSE, the `@durable-streams/client`
//! library cut off mid-answer and resuming with exactly the stored answer,
//! offsets across a restart, and bad offsets and callers refused.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::fake_llm::{FakeLlm, openai_config};
use crate::support::server::*;

fn stream_path(session: &str) -> String {
    format!("/ds/acme/v1/conversation/{session}")
}

/// A catch-up read: status, next offset, ETag and the items.
async fn read(server: &TestServer, session: &str, offset: &str) -> (u16, String, String, Value) {
    let response = server
        .http
        .get(server.url(&stream_path(session)))
        .header("X-API-Key", KEY)
        .query(&[("offset", offset)])
        .send()
        .await
        .unwrap();
    let (next, etag) = (
        header(&response, "stream-next-offset"),
        header(&response, "etag"),
    );
    let status = response.status().as_u16();
    (
        status,
        next,
        etag,
        response.json().await.unwrap_or(Value::Null),
    )
}

fn kinds(items: &Value) -> Vec<&str> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["type"].as_str().unwrap())
        .collect()
}

/// Posts a message that starts no answer, as a workflow answering would.
async fn note(server: &TestServer, session: &str, content: &str) -> Value {
    let body = json!({"role": "assistant", "content": content});
    let (status, stored) = server
        .post(&format!("/chat/{session}/messages"), KEY, body)
        .await;
    assert_eq!(status, 201, "{stored}");
    stored
}

/// Asks a question and waits until its answer is stored.
async fn ask(server: &TestServer, session: &str, question: &str) {
    let before = server.history(session).await.len();
    let body = json!({"role": "user", "content": question});
    let (status, _) = server
        .post(&format!("/chat/{session}/messages"), KEY, body)
        .await;
    assert_eq!(status, 201);
    eventually("the answer is stored", || async {
        server.history(session).await.len() == before + 2
    })
    .await;
}

#[tokio::test]
async fn a_conversation_reads_as_json_items_from_any_offset_it_gave() {
    let server = TestServer::start(config()).await;
    let (session, _) = server.create_session().await;
    ask(&server, &session, "hola").await;

    let (status, next, etag, items) = read(&server, &session, "-1").await;
    assert_eq!(status, 200, "{items}");
    assert_eq!(kinds(&items), ["context", "message", "message"]);
    assert_eq!(
        items[0],
        json!({"type": "context", "version": 0, "context": {"plan": "pro"}})
    );
    let history = server.history(&session).await;
    for (item, stored) in items.as_array().unwrap()[1..].iter().zip(&history) {
        assert_eq!(item["message"]["content"], stored["content"]);
        assert_eq!(item["message"]["seq"], stored["seq"]);
    }
    assert_eq!(items[2]["message"]["role"], "assistant");

    // The same read again: its ETag says nothing changed.
    let again = server
        .http
        .get(server.url(&stream_path(&session)))
        .header("X-API-Key", KEY)
        .header("if-none-match", &etag)
        .query(&[("offset", "-1")])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    // At the end: nothing more, the same offset.
    let (status, at_end, _, items) = read(&server, &session, &next).await;
    assert_eq!(
        (status, at_end.as_str(), items),
        (200, next.as_str(), json!([]))
    );

    // A change of context reaches a reader whole, with its version.
    let (status, _) = server
        .post(
            &format!("/chat/sessions/{session}/context"),
            KEY,
            json!({"page": "/precios"}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, after_context, _, items) = read(&server, &session, &next).await;
    assert_eq!(
        items,
        json!([{"type": "context", "version": 1, "context": {"plan": "pro", "page": "/precios"}}])
    );
    assert!(next < after_context, "offsets sort in the stream's order");

    // A message, from the offset after the context: only it.
    note(&server, &session, "Un técnico va en camino.").await;
    let (_, last, _, items) = read(&server, &session, &after_context).await;
    assert_eq!(kinds(&items), ["message"]);
    assert_eq!(items[0]["message"]["content"], "Un técnico va en camino.");

    // HEAD and `now` name the end without sending anything.
    let head = server
        .http
        .head(server.url(&stream_path(&session)))
        .header("X-API-Key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (head.status().as_u16(), header(&head, "stream-next-offset")),
        (200, last.clone())
    );
    let (status, now, etag, items) = read(&server, &session, "now").await;
    assert_eq!(
        (status, now, etag, items),
        (200, last, String::new(), json!([]))
    );
}

#[tokio::test]
async fn a_long_poll_is_woken_by_a_message_and_waits_out_its_time_otherwise() {
    let server = TestServer::start(config()).await;
    let (session, _) = server.create_session().await;
    let (_, tail, _, _) = read(&server, &session, "-1").await;
    let poll = server
        .http
        .get(server.url(&stream_path(&session)))
        .header("X-API-Key", KEY)
        .query(&[("offset", tail.as_str()), ("live", "long-poll")])
        .send();
    let poll = tokio::spawn(poll);
    tokio::time::sleep(Duration::from_millis(300)).await;
    note(&server, &session, "¿Sigues ahí?").await;
    let woken = poll.await.unwrap().unwrap();
    assert_eq!(woken.status(), 200);
    assert!(!header(&woken, "stream-cursor").is_empty());
    let next = header(&woken, "stream-next-offset");
    let items: Value = woken.json().await.unwrap();
    assert_eq!(kinds(&items), ["message"]);
    assert_eq!(items[0]["message"]["content"], "¿Sigues ahí?");

    // Nothing new: 204 at the same offset once the long-poll's time is up.
    let quiet = server
        .http
        .get(server.url(&stream_path(&session)))
        .header("X-API-Key", KEY)
        .query(&[("offset", next.as_str()), ("live", "long-poll")])
        .send()
        .await
        .unwrap();
    assert_eq!(quiet.status(), 204);
    assert_eq!(header(&quiet, "stream-next-offset"), next);
    assert_eq!(header(&quiet, "stream-up-to-date"), "true");
}

/// The SSE events of a response until `until` says stop: each `data`
/// event's items, and each `control` event.
async fn sse_until(
    response: &mut reqwest::Response,
    until: impl Fn(&Value) -> bool,
) -> (Vec<Value>, Vec<Value>) {
    let (mut items, mut controls, mut buffer) = (Vec::new(), Vec::new(), String::new());
    loop {
        let piece = tokio::time::timeout(DEADLINE, response.chunk())
            .await
            .expect("an event within the deadline")
            .unwrap()
            .expect("the stream goes on");
        buffer.push_str(std::str::from_utf8(&piece).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let data: String = event
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .collect();
            let value: Value = serde_json::from_str(&data).unwrap();
            match event.starts_with("event: data") {
                true => items.extend(value.as_array().unwrap().iter().cloned()),
                false => controls.push(value),
            }
        }
        if items.iter().any(&until) && !buffer.contains("event: data") {
            return (items, controls);
        }
    }
}

#[tokio::test]
async fn sse_streams_an_answer_chunk_by_chunk_then_its_stored_message() {
    let llm = FakeLlm::start().await;
    let server = TestServer::start(openai_config(&llm)).await;
    let (session, _) = server.create_session().await;
    let (_, tail, _, _) = read(&server, &session, "-1").await;
    let mut response = server
        .http
        .get(server.url(&stream_path(&session)))
        .header("X-API-Key", KEY)
        .query(&[("offset", tail.as_str()), ("live", "sse")])
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "content-type"), "text/event-stream");
    let body = json!({"role": "user", "content": "answer slowly"});
    let (status, _) = server
        .post(&format!("/chat/{session}/messages"), KEY, body)
        .await;
    assert_eq!(status, 201);
    let is_answer =
        |item: &Value| item["type"] == "message" && item["message"]["role"] == "assistant";
    let (items, controls) = sse_until(&mut response, is_answer).await;

    let chunks: Vec<&Value> = items
        .iter()
        .filter(|item| item["type"] == "chunk")
        .collect();
    assert!(
        chunks.len() >= 10,
        "the answer came piece by piece: {}",
        chunks.len()
    );
    let streamed: String = chunks
        .iter()
        .map(|chunk| chunk["content"].as_str().unwrap())
        .collect();
    let answer = items.iter().find(|item| is_answer(item)).unwrap();
    assert_eq!(streamed, answer["message"]["content"].as_str().unwrap());
    assert_eq!(chunks[0]["message_id"], answer["message"]["id"]);
    assert_eq!(items[0]["message"]["content"], "answer slowly");
    let history = server.history(&session).await;
    assert_eq!(
        history.last().unwrap()["content"],
        answer["message"]["content"]
    );
    let offsets: Vec<&str> = controls
        .iter()
        .map(|control| control["streamNextOffset"].as_str().unwrap())
        .collect();
    assert!(
        offsets.windows(2).all(|pair| pair[0] <= pair[1]),
        "offsets only grow: {offsets:?}"
    );
}

#[tokio::test]
async fn the_durable_streams_client_cut_off_mid_answer_resumes_with_exactly_the_stored_answer() {
    let llm = FakeLlm::start().await;
    let server = TestServer::start(openai_config(&llm)).await;
    for live in ["true", "long-poll"] {
        let (session, _) = server.create_session().await;
        let vars = [
            ("STREAM_URL", server.url(&stream_path(&session))),
            (
                "MESSAGES_URL",
                server.url(&format!("/chat/{session}/messages")),
            ),
            ("KEY", KEY.to_owned()),
            ("CUT_AFTER", "20".to_owned()),
            ("QUESTION", "answer slowly".to_owned()),
            ("LIVE", live.to_owned()),
        ];
        let seen = crate::support::node::run_script("ds_tail.mjs", &vars).await;
        let stored = server.history(&session).await.last().unwrap().clone();
        let before = seen["before"].as_str().unwrap();
        let after = seen["after"].as_str().unwrap();
        assert!(
            seen["chunks_before"].as_u64().unwrap() >= 20 && !after.is_empty(),
            "{live}: cut off mid-answer: {seen}"
        );
        assert_eq!(
            format!("{before}{after}"),
            stored["content"].as_str().unwrap(),
            "{live}: {seen}"
        );
        assert_eq!(seen["stored"]["content"], stored["content"], "{live}");
        assert_eq!(seen["stored"]["seq"], stored["seq"], "{live}");
        assert_eq!(seen["stored"]["status"], "complete", "{live}");
        // Nothing twice: the second read starts where the first one stopped.
        let second = seen["second_items"].as_array().unwrap();
        let messages = second.iter().filter(|kind| *kind == "message").count();
        assert_eq!(messages, 1, "{live}: only the answer's message: {seen}");
    }
}

#[tokio::test]
async fn offsets_and_the_log_behind_them_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(durable_config(dir.path())).await;
    let (session, _) = server.create_session().await;
    note(&server, &session, "primero").await;
    let (_, offset, _, before) = read(&server, &session, "-1").await;
    server.stop().await;

    let server = TestServer::start(durable_config(dir.path())).await;
    let (status, same, _, items) = read(&server, &session, &offset).await;
    assert_eq!(
        (status, same.as_str(), items),
        (200, offset.as_str(), json!([]))
    );
    note(&server, &session, "segundo").await;
    let (_, _, _, items) = read(&server, &session, &offset).await;
    assert_eq!(kinds(&items), ["message"]);
    assert_eq!(items[0]["message"]["content"], "segundo");
    let (_, _, _, whole) = read(&server, &session, "-1").await;
    let mut expected = before.as_array().unwrap().clone();
    expected.push(items[0].clone());
    assert_eq!(whole, Value::Array(expected));
}

/// A read's query parameters.
type Query<'a> = &'a [(&'a str, &'a str)];

#[tokio::test]
async fn bad_offsets_and_callers_are_refused_clearly() {
    let server = TestServer::start(config()).await;
    let (session, _) = server.create_session().await;
    let (_, tail, _, _) = read(&server, &session, "-1").await;
    let past_end = format!("{:016}{}", 99, &tail[16..]);
    let path = stream_path(&session);
    let url = server.url(&path);
    let cases: [(Query, u16, &str); 5] = [
        (&[("offset", "banana")], 400, "bad_request"),
        (
            &[("offset", "0000000000000000_0000000000000000")],
            400,
            "bad_request",
        ),
        (&[("offset", &past_end)], 400, "invalid_input"),
        (
            &[("offset", &tail), ("live", "carrier-pigeon")],
            400,
            "bad_request",
        ),
        (&[("live", "sse")], 400, "bad_request"),
    ];
    for (query, status, code) in cases {
        let response = server
            .http
            .get(&url)
            .header("X-API-Key", KEY)
            .query(&query)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{query:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], code, "{query:?}: {body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|error| !error.is_empty())
        );
    }

    let refusals = [
        (server.http.get(&url), 401, "missing_api_key"),
        (
            server.http.get(&url).header("X-API-Key", "nope"),
            401,
            "invalid_api_key",
        ),
        (
            server.http.get(&url).header("X-API-Key", OTHER_KEY),
            404,
            "session_not_found",
        ),
        (
            server
                .http
                .get(server.url(&format!("/ds/globex/v1/conversation/{session}")))
                .header("X-API-Key", KEY),
            404,
            "session_not_found",
        ),
        (
            server
                .http
                .get(&url)
                .header("X-API-Key", KEY)
                .bearer_auth(client_token("bob")),
            404,
            "session_not_found",
        ),
        (
            server
                .http
                .get(server.url("/ds/acme/v1/conversation/not-a-conversation"))
                .header("X-API-Key", KEY),
            404,
            "session_not_found",
        ),
        (
            server
                .http
                .get(server.url(&stream_path(&uuid::Uuid::now_v7().to_string())))
                .header("X-API-Key", KEY),
            404,
            "session_not_found",
        ),
        // Read-only: a conversation is written through its own API.
        (
            server.http.post(&url).header("X-API-Key", KEY).body("[1]"),
            405,
            "method_not_allowed",
        ),
        (
            server.http.delete(&url).header("X-API-Key", KEY),
            405,
            "method_not_allowed",
        ),
    ];
    for (request, status, code) in refusals {
        let response = request.send().await.unwrap();
        let seen = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            (seen, body["code"].as_str().unwrap()),
            (status, code),
            "{body}"
        );
    }

    // Nothing was changed by any of it; a client reads its own conversation.
    assert_eq!(server.history(&session).await.len(), 0);
    let alice = client_token("alice");
    let created: Value = server
        .http
        .post(server.url("/chat/sessions"))
        .header("X-API-Key", KEY)
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hers = stream_path(created["session_id"].as_str().unwrap());
    let read = server
        .http
        .get(server.url(&hers))
        .header("X-API-Key", KEY)
        .bearer_auth(&alice);
    assert_eq!(read.send().await.unwrap().status(), 200);
}
