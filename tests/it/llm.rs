//! The `openai` agent against a real OpenAI-compatible streaming server that
//! the test starts on loopback. The server is plain HTTP/1.1 over a TCP
//! socket, written here so every byte is ours: SSE `data:` lines of
//! `chat.completion.chunk`, the final usage chunk, `data: [DONE]`, JSON error
//! bodies, 429 with `Retry-After`, slow tokens and a connection dropped
//! mid-stream. What it does depends on the question it is asked.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::support::fake_llm::*;
use crate::support::server::*;

/// A provider, a server whose acme answers with it, and one socket on a new
/// conversation that has asked `question`.
async fn asked(question: &str) -> (FakeLlm, TestServer, String, Ws) {
    let llm = FakeLlm::start().await;
    let server = TestServer::start(openai_config(&llm)).await;
    let (session, url) = server.create_session().await;
    let mut ws = server.connect(&url).await;
    say(&mut ws, question).await;
    (llm, server, session, ws)
}

#[tokio::test]
async fn a_streamed_answer_reaches_two_subscribers_and_its_tokens_and_ids_are_stored() {
    let llm = FakeLlm::start().await;
    let server = TestServer::start(openai_config(&llm)).await;
    let (session, url) = server.create_session().await;
    let mut alice = server.connect(&url).await;
    let mut bob = server.connect(&url).await;
    say(&mut alice, "¿Cuánto he gastado?").await;
    let expected: String = ANSWER.concat();
    for socket in [&mut alice, &mut bob] {
        let (done, before) = frames_until(socket, "done").await;
        assert_eq!(done["content"], expected);
        assert_eq!(done["status"], "complete");
        let chunks: Vec<&Value> = before.iter().filter(|f| f["type"] == "chunk").collect();
        assert_eq!(chunks.len(), ANSWER.len(), "one chunk per delta");
        assert_eq!(chunk_text(&before), expected);
    }

    // What was sent: the rendered system prompt with the context, then the history.
    let request = &llm.requests()[0];
    assert_eq!(request["model"], "gpt-test");
    assert_eq!(request["stream"], true);
    assert_eq!(request["stream_options"]["include_usage"], true);
    assert_eq!(request["messages"][0]["role"], "system");
    assert_eq!(
        request["messages"][0]["content"],
        "Eres el asistente de Acme.\n- plan: pro"
    );
    assert_eq!(
        request["messages"][1],
        json!({"role": "user", "content": "¿Cuánto he gastado?"})
    );

    // What was recorded on the answer.
    let (_, messages) = server
        .get(&format!("/chat/{session}/messages"), Some(KEY))
        .await;
    let agent = &messages[1]["agent"];
    assert_eq!(agent["agent"], "openai");
    assert_eq!(agent["model"], "gpt-test-2026");
    assert_eq!(agent["response_id"], "chatcmpl-test123");
    assert_eq!(agent["prompt_tokens"], 42);
    assert_eq!(agent["completion_tokens"], ANSWER.len());
    assert_eq!(agent["finish_reason"], "stop");
    assert!(agent["time_to_first_token_ms"].is_u64(), "{agent}");
    assert!(agent["total_ms"].as_u64() >= agent["time_to_first_token_ms"].as_u64());
    server.stop().await;
}

#[tokio::test]
async fn the_webchat_reply_carries_the_providers_response_id() {
    let llm = FakeLlm::start().await;
    let server = TestServer::start(openai_config(&llm)).await;
    let body = json!({"session_id": "llm-visitor-0001", "author": "Ana", "content": "hola"});
    let (_, reply) = server.post("/api/webchat/messages", KEY, body).await;
    assert_eq!(reply["reply"], ANSWER.concat());
    assert_eq!(
        reply["metadata"]["assistant_response_id"],
        "chatcmpl-test123"
    );
    server.stop().await;
}

#[tokio::test]
async fn cancel_stops_the_upstream_request() {
    let (llm, server, session, mut ws) = asked("answer slowly please").await;
    frames_until(&mut ws, "chunk").await;
    send(&mut ws, json!({"type": "cancel"})).await;
    let (done, _) = frames_until(&mut ws, "done").await;
    assert_eq!(done["status"], "interrupted");
    // The provider sees its client go away long before its 100 words are out.
    eventually("the upstream request is dropped", || async {
        llm.abandoned.load(Ordering::SeqCst) == 1
    })
    .await;
    let history = server.history(&session).await;
    assert_eq!(history[1]["status"], "interrupted");
    server.stop().await;
}

#[tokio::test]
async fn rate_limits_and_server_errors_before_the_first_token_are_retried() {
    let llm = FakeLlm::start().await;
    let server = TestServer::start(openai_config(&llm)).await;
    let (_, url) = server.create_session().await;
    let mut ws = server.connect(&url).await;
    for question in ["rate-limit-once", "server-error-once"] {
        say(&mut ws, question).await;
        let (done, before) = frames_until(&mut ws, "done").await;
        assert_eq!(done["status"], "complete", "{question}: {before:?}");
        assert_eq!(done["content"], ANSWER.concat());
        assert!(
            before.iter().all(|frame| frame["type"] != "error"),
            "{before:?}"
        );
    }
    let attempts = |question: &str| {
        llm.requests()
            .iter()
            .filter(|request| question_of(request) == question)
            .count()
    };
    assert_eq!(
        attempts("rate-limit-once"),
        2,
        "429, then after Retry-After, 200"
    );
    assert_eq!(attempts("server-error-once"), 2);
    server.stop().await;
}

#[tokio::test]
async fn a_stream_dropped_mid_answer_is_stored_as_interrupted() {
    let (_llm, server, session, mut ws) = asked("drop-mid-stream").await;
    let (error, before) = frames_until(&mut ws, "error").await;
    assert_eq!(error["code"], "agent_interrupted");
    assert_eq!(chunk_text(&before), ANSWER[..2].concat());
    let (done, _) = frames_until(&mut ws, "done").await;
    assert_eq!(done["status"], "interrupted");
    assert_eq!(done["content"], ANSWER[..2].concat());
    let history = server.history(&session).await;
    assert_eq!(history[1]["status"], "interrupted");
    // Not a failure: no agent.failed event.
    let events = server.acme_events(&["agent.failed"]).await;
    assert!(events.is_empty(), "{events:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_provider_error_is_a_clear_error_frame_a_failed_message_and_an_event() {
    let (_llm, server, session, mut ws) = asked("no-such-model").await;
    let (error, _) = frames_until(&mut ws, "error").await;
    assert_eq!(error["code"], "agent_failed");
    let text = error["content"].as_str().unwrap();
    assert!(
        text.contains("404") && text.contains("does not exist"),
        "{text}"
    );
    assert!(!text.contains("sk-test-secret"), "{text}");
    let (done, _) = frames_until(&mut ws, "done").await;
    assert_eq!(done["status"], "failed");
    let history = server.history(&session).await;
    assert_eq!(history[1]["status"], "failed");
    let events = server.acme_events(&["agent.failed"]).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, "agent.failed");
    assert_eq!(events[0].data["message_id"], history[1]["id"]);
    assert!(
        events[0].data["error"]
            .as_str()
            .unwrap()
            .contains("does not exist")
    );
    server.stop().await;
}

#[tokio::test]
async fn an_unreachable_provider_fails_the_answer_without_leaking_the_key() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base_url = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    let llm = FakeLlm {
        base_url,
        requests: Default::default(),
        abandoned: Default::default(),
    };
    let server = TestServer::start(openai_config(&llm)).await;
    let (_, url) = server.create_session().await;
    let mut ws = server.connect(&url).await;
    say(&mut ws, "hola").await;
    let (error, _) = frames_until(&mut ws, "error").await;
    assert_eq!(error["code"], "agent_failed");
    let text = error["content"].as_str().unwrap();
    assert!(text.contains("cannot connect"), "{text}");
    assert!(!text.contains("sk-test"), "{text}");
    let (done, _) = frames_until(&mut ws, "done").await;
    assert_eq!(done["status"], "failed");
    server.stop().await;
}

#[tokio::test]
async fn a_conversation_can_override_the_model_and_prompt() {
    let llm = FakeLlm::start().await;
    let server = TestServer::start(openai_config(&llm)).await;
    let (session, url) = server.create_session().await;
    let overrides = json!({
        "_agent": {"model": "gpt-other", "system_prompt": "Sé breve.", "temperature": 0.2},
        "total_spent": 99,
    });
    let (status, _) = server
        .post(&format!("/chat/sessions/{session}/context"), KEY, overrides)
        .await;
    assert_eq!(status, 200);
    let mut ws = server.connect(&url).await;
    say(&mut ws, "hola").await;
    frames_until(&mut ws, "done").await;
    let request = &llm.requests()[0];
    assert_eq!(request["model"], "gpt-other");
    assert_eq!(request["messages"][0]["content"], "Sé breve.");
    assert!((request["temperature"].as_f64().unwrap() - 0.2).abs() < 1e-6);
    server.stop().await;
}

#[tokio::test]
async fn a_tool_call_round_trips_through_a_real_receiver() {
    // The tool: an n8n-like endpoint that makes an estimate.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tool_url = format!(
        "http://{}/webhook/create-estimate",
        listener.local_addr().unwrap()
    );
    let received = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn({
        let received = received.clone();
        async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                if let Some(request) = read_request(&mut socket).await {
                    received.lock().unwrap().push(request);
                    let answer = json!({"estimate_id": "E-17", "total_mxn": 1200}).to_string();
                    respond_as(&mut socket, "200 OK", "application/json", &[], &answer).await;
                }
            }
        }
    });
    let llm = FakeLlm::start().await;
    let mut config = openai_config(&llm);
    config.tenants.get_mut("acme").unwrap().tools = vec![tertulia_actors::model::ToolSettings {
        name: "create_estimate".into(),
        description: "Creates a repair estimate".into(),
        parameters: json!({"type": "object", "properties": {"problem": {"type": "string"}, "address": {"type": "string"}}, "required": ["problem"]}),
        url: tool_url,
        secret: "whsec_dG9vbC1zZWNyZXQtZm9yLXRoZS10ZXN0cw==".into(),
        ..Default::default()
    }];
    let server = TestServer::start(config).await;
    let (session, url) = server.create_session().await;
    let mut ws = server.connect(&url).await;
    let mut watcher = server.connect(&url).await;
    say(&mut ws, "I need an estimate for a leak").await;

    for socket in [&mut ws, &mut watcher] {
        let (call, _) = frames_until(socket, "tool_call").await;
        assert_eq!(call["name"], "create_estimate");
        assert_eq!(call["call_id"], "call_est_1");
        let arguments: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(arguments, json!({"problem": "fuga", "address": "Calle 5"}));
        let (result, _) = frames_until(socket, "tool_result").await;
        assert_eq!(result["call_id"], "call_est_1");
        assert_eq!(
            result["content"],
            r#"{"estimate_id":"E-17","total_mxn":1200}"#
        );
        let (done, _) = frames_until(socket, "done").await;
        assert_eq!(
            done["content"],
            r#"Presupuesto: {"estimate_id":"E-17","total_mxn":1200}"#
        );
    }

    // The tool got the arguments, signed, with the conversation.
    let (head, body) = received.lock().unwrap()[0].clone();
    assert!(
        head.to_lowercase().contains("webhook-signature: v1,"),
        "{head}"
    );
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["tool"], "create_estimate");
    assert_eq!(body["arguments"]["address"], "Calle 5");
    assert_eq!(body["conversation_id"], session.as_str());
    // The model was offered the tool, and got its answer back with the call.
    let requests = llm.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0]["tools"][0]["function"]["name"],
        "create_estimate"
    );
    let second = requests[1]["messages"].as_array().unwrap();
    assert_eq!(
        second[second.len() - 2]["tool_calls"][0]["id"],
        "call_est_1"
    );
    assert_eq!(second[second.len() - 1]["role"], "tool");
    // The call and its result are stored with the answer.
    let (_, messages) = server
        .get(&format!("/chat/{session}/messages"), Some(KEY))
        .await;
    let stored = &messages[1]["tool_calls"][0];
    assert_eq!(stored["name"], "create_estimate");
    assert_eq!(
        stored["result"],
        r#"{"estimate_id":"E-17","total_mxn":1200}"#
    );
    server.stop().await;
}

#[tokio::test]
async fn with_consent_the_model_finds_names_that_no_phrase_gives_away() {
    let llm = FakeLlm::start().await;
    let server = TestServer::start(openai_config(&llm)).await;
    let visit = |content: &str| json!({"session_id": "model-lead-visitor-01", "author": "visitor", "content": content});
    let extractions = || {
        llm.requests()
            .iter()
            .filter(|request| body_is_extraction(std::slice::from_ref(request)))
            .count()
    };
    // Without consent the model is not asked.
    let (_, reply) = server
        .post(
            "/api/webchat/messages",
            KEY,
            visit("Pueden llamarme Ana López"),
        )
        .await;
    let conversation = reply["metadata"]["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(extractions(), 0);
    let consent =
        json!({"session_id": "model-lead-visitor-01", "granted": true, "text_version": "v1"});
    assert_eq!(
        server.post("/api/webchat/consent", KEY, consent).await.0,
        201
    );
    server
        .post(
            "/api/webchat/messages",
            KEY,
            visit("De nuevo: pueden llamarme Ana López"),
        )
        .await;
    eventually("the model's name is on the contact", || async {
        let (status, contact) = server
            .get(&format!("/chat/{conversation}/contact"), Some(KEY))
            .await;
        status == 200 && contact["name"] == "Ana López"
    })
    .await;
    assert_eq!(extractions(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_silent_model_runs_into_its_first_token_and_idle_deadlines() {
    let llm = FakeLlm::start().await;
    let mut config = openai_config(&llm);
    let openai = &mut config.tenants.get_mut("acme").unwrap().openai;
    openai.first_token_timeout_ms = 300;
    openai.idle_timeout_ms = 300;
    let server = TestServer::start(config).await;
    let (session, url) = server.create_session().await;
    let mut ws = server.connect(&url).await;

    say(&mut ws, "stall").await;
    let (error, _) = frames_until(&mut ws, "error").await;
    assert_eq!(error["code"], "agent_failed");
    assert!(
        error["content"]
            .as_str()
            .unwrap()
            .contains("did not start answering"),
        "{error}"
    );
    let (done, _) = frames_until(&mut ws, "done").await;
    assert_eq!(done["status"], "failed");

    say(&mut ws, "stall after-a-word").await;
    let (error, before) = frames_until(&mut ws, "error").await;
    assert_eq!(error["code"], "agent_interrupted");
    assert!(
        error["content"].as_str().unwrap().contains("sent nothing"),
        "{error}"
    );
    assert_eq!(chunk_text(&before), "Hola");
    let (done, _) = frames_until(&mut ws, "done").await;
    assert_eq!(done["status"], "interrupted");
    let history = server.history(&session).await;
    assert_eq!(history[3]["content"], "Hola");
    server.stop().await;
}

#[tokio::test]
async fn the_model_asks_for_a_person_with_the_built_in_request_human_tool() {
    let (llm, server, session, mut ws) = asked("need-a-person: my basement is flooding").await;
    let (call, _) = frames_until(&mut ws, "tool_call").await;
    assert_eq!(call["name"], "request_human");
    let (result, _) = frames_until(&mut ws, "tool_result").await;
    assert_eq!(
        result["is_error"],
        Value::Null,
        "the built-in tool answers: {result}"
    );
    // The conversation is flagged and everyone connected sees it.
    let mut presence = next_any_frame(&mut ws).await;
    while presence["type"] != "presence" {
        presence = next_any_frame(&mut ws).await;
    }
    assert_eq!(presence["handoff_requested"], true, "{presence}");
    let (done, _) = frames_until(&mut ws, "done").await;
    assert!(
        done["content"]
            .as_str()
            .unwrap()
            .starts_with("Presupuesto: A person"),
        "{done}"
    );
    let handoffs = server.acme_events(&["handoff.requested"]).await;
    assert_eq!(handoffs.len(), 1);
    assert_eq!(handoffs[0].data["requested_by"], "agent");
    assert_eq!(handoffs[0].data["reason"], "wants a plumber on site");
    assert_eq!(handoffs[0].data["conversation_id"], session.as_str());
    // The model was offered the tool, described.
    let offered = &llm.requests()[0]["tools"];
    assert!(
        offered
            .as_array()
            .unwrap()
            .iter()
            .any(|tool| tool["function"]["name"] == "request_human"),
        "{offered}"
    );
    server.stop().await;
}
