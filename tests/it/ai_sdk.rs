//! The Vercel AI SDK adapter, read by the SDK's own client code (the `ai`
//! package from the npm registry, in Node): text in order, tool parts, the
//! finished message equal to the stored one, and a stream resumed after a
//! dropped connection with nothing doubled. Then what it refuses.

use serde_json::{Value, json};

use crate::support::fake_llm::{FakeLlm, openai_config};
use crate::support::node::run_script;
use crate::support::receiver::Receiver;
use crate::support::server::*;

async fn sdk(server: &TestServer, mode: &str, chat: &str, message_id: &str, text: &str) -> Value {
    let vars = [
        ("BASE", server.url("")),
        ("KEY", KEY.to_owned()),
        ("CHAT_ID", chat.to_owned()),
        ("MESSAGE_ID", message_id.to_owned()),
        ("TEXT", text.to_owned()),
        ("MODE", mode.to_owned()),
    ];
    run_script("ai_sdk.mjs", &vars).await
}

/// The SDK's message as text: its text parts, joined.
fn text_of(message: &Value) -> String {
    message["parts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|part| part["type"] == "text")
        .map(|part| part["text"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn the_sdk_reads_the_answer_as_the_stored_message() {
    let server = TestServer::start(config()).await;
    let (session, _) = server.create_session().await;
    let result = sdk(&server, "send", &session, "m-1", "hola desde useChat").await;

    let history = server.history(&session).await;
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(history[0]["client_msg_id"], "m-1");
    let stored = &history[1];
    let message = &result["message"];
    assert_eq!(message["id"], stored["id"]);
    assert_eq!(message["role"], "assistant");
    assert_eq!(text_of(message), stored["content"].as_str().unwrap());
    assert_eq!(stored["content"], "You said: hola desde useChat");
    let types: Vec<&str> = result["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kind| kind.as_str().unwrap())
        .collect();
    assert_eq!(types[..2], ["start", "text-start"]);
    assert_eq!(types[types.len() - 2..], ["text-end", "finish"]);
    assert!(types.iter().filter(|kind| **kind == "text-delta").count() > 1);

    // The same message again (a retry): stored once, the same answer given.
    let again = sdk(&server, "send", &session, "m-1", "hola desde useChat").await;
    assert_eq!(again["message"]["id"], stored["id"]);
    assert_eq!(
        text_of(&again["message"]),
        stored["content"].as_str().unwrap()
    );
    assert_eq!(server.history(&session).await.len(), 2);

    // Regenerate: the same question answered again, the old answer kept.
    let fresh = sdk(&server, "regenerate", &session, "m-1", "hola desde useChat").await;
    let history = server.history(&session).await;
    assert_eq!(history.len(), 3, "{history:?}");
    assert_ne!(fresh["message"]["id"], stored["id"]);
    assert_eq!(fresh["message"]["id"], history[2]["id"]);
    assert_eq!(
        text_of(&fresh["message"]),
        history[2]["content"].as_str().unwrap()
    );
    server.stop().await;
}

#[tokio::test]
async fn tool_calls_arrive_as_tool_parts() {
    let tool = Receiver::start().await;
    let llm = FakeLlm::start().await;
    let mut config = openai_config(&llm);
    config.tenants.get_mut("acme").unwrap().tools = vec![tertulia_actors::model::ToolSettings {
        name: "create_estimate".into(),
        description: "Creates a repair estimate".into(),
        parameters: json!({"type": "object", "properties": {"problem": {"type": "string"}}}),
        url: tool.url("/estimate"),
        secret: "whsec_dG9vbC1zZWNyZXQtZm9yLXRoZS10ZXN0cw==".into(),
        ..Default::default()
    }];
    let server = TestServer::start(config).await;
    let (session, _) = server.create_session().await;
    let result = sdk(&server, "send", &session, "m-tool", "an estimate please").await;

    let parts = result["message"]["parts"].as_array().unwrap();
    let call = parts
        .iter()
        .find(|part| part["type"] == "dynamic-tool")
        .unwrap_or_else(|| panic!("no tool part in {parts:?}"));
    assert_eq!(call["toolName"], "create_estimate");
    assert_eq!(call["toolCallId"], "call_est_1");
    assert_eq!(call["state"], "output-available");
    assert_eq!(call["input"]["problem"], "fuga");
    assert_eq!(call["output"], "ok");
    let history = server.history(&session).await;
    assert_eq!(
        text_of(&result["message"]),
        history[1]["content"].as_str().unwrap()
    );
    assert_eq!(result["message"]["id"], history[1]["id"]);
    server.stop().await;
}

#[tokio::test]
async fn a_dropped_stream_resumes_with_nothing_doubled() {
    let llm = FakeLlm::start().await;
    let server = TestServer::start(openai_config(&llm)).await;
    let (session, _) = server.create_session().await;
    let result = sdk(
        &server,
        "drop-and-resume",
        &session,
        "m-slow",
        "answer slowly",
    )
    .await;

    let partial = text_of(&result["partial"]);
    assert!(partial.starts_with("w0 w1 "), "{partial}");
    let message = &result["message"];
    assert!(message.is_object(), "nothing to resume: {result}");
    let history = server.history(&session).await;
    let stored = history[1]["content"].as_str().unwrap();
    assert_eq!(stored.matches("w0 ").count(), 1);
    assert_eq!(text_of(message), stored);
    assert_eq!(message["id"], history[1]["id"]);

    // Nothing in progress any more: the SDK is told so (204) and gets no stream.
    let idle = sdk(&server, "resume", &session, "-", "-").await;
    assert_eq!(idle["message"], Value::Null);
    server.stop().await;
}

#[tokio::test]
async fn bad_chat_requests_get_clear_errors() {
    let mut config = config();
    config.server.max_body_bytes = 4096;
    let server = TestServer::start(config).await;
    let (session, _) = server.create_session().await;
    let user = |text: &str| json!([{"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}]);
    let cases = [
        (json!({"messages": user("hola")}), 400),
        (json!({"id": session, "messages": []}), 400),
        (json!({"id": session, "messages": user("  ")}), 400),
        (
            json!({"id": session, "messages": [{"role": "user", "parts": []}]}),
            400,
        ),
        (
            json!({"id": session, "messages": [{"id": "a", "role": "assistant", "parts": []}]}),
            400,
        ),
        (
            json!({"id": session, "messages": user("hola"), "trigger": "shout"}),
            400,
        ),
        (
            json!({"id": session, "messages": user(&"x".repeat(5000))}),
            413,
        ),
    ];
    for (body, status) in cases {
        let (got, answer) = server.post("/ai-sdk/chat", KEY, body.clone()).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert!(answer["code"].is_string(), "{answer}");
    }
    let not_json = server
        .http
        .post(server.url("/ai-sdk/chat"))
        .header("X-API-Key", KEY)
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);

    // No key, a wrong key, another tenant's conversation.
    let body = json!({"id": session, "messages": user("hola")});
    let anonymous = server
        .http
        .post(server.url("/ai-sdk/chat"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        server.post("/ai-sdk/chat", "tk_nope", body.clone()).await.0,
        401
    );
    let (status, answer) = server.post("/ai-sdk/chat", OTHER_KEY, body).await;
    // For globex the id names no conversation: a webchat one of its own is
    // opened, and acme's is untouched.
    assert_eq!(status, 200, "{answer}");
    assert_eq!(server.history(&session).await.len(), 0);
    let (status, _) = server
        .get(&format!("/ai-sdk/chat/{session}/stream"), Some(OTHER_KEY))
        .await;
    assert_eq!(status, 204);
    let (status, _) = server
        .get(&format!("/ai-sdk/chat/{session}/stream"), None)
        .await;
    assert_eq!(status, 401);
    server.stop().await;
}

#[tokio::test]
async fn a_widget_on_an_allowed_origin_chats_by_its_own_id() {
    let mut config = config();
    config.auth.admin_token = "adm".into();
    let shop = "https://shop.example";
    config.tenants.get_mut("acme").unwrap().allowed_origins = vec![shop.into()];
    let server = TestServer::start(config).await;
    let key = make_key(&server, "adm", "acme", "widget").await;
    let chat = |id: &str, origin: &str| {
        let body = json!({"id": id, "messages": [{"id": "w1", "role": "user",
            "parts": [{"type": "text", "text": "hola"}]}]});
        server
            .http
            .post(server.url("/ai-sdk/chat"))
            .header("X-API-Key", &key)
            .header("Origin", origin)
            .json(&body)
            .send()
    };
    let answered = chat("visitor-0123456789abcdef", shop).await.unwrap();
    assert_eq!(answered.status(), 200);
    assert_eq!(answered.headers()["access-control-allow-origin"], shop);
    assert_eq!(answered.headers()["x-vercel-ai-ui-message-stream"], "v1");
    let text = answered.text().await.unwrap();
    assert!(
        text.contains(r#""type":"finish""#) && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    // The widget's id is its visitor's only credential: a short one is refused,
    // and so is another origin.
    assert_eq!(chat("short", shop).await.unwrap().status(), 400);
    let elsewhere = chat("visitor-0123456789abcdef", "https://evil.example")
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 403);
    // The same id is the webchat conversation the other surfaces see.
    let (_, history) = server
        .get("/api/webchat/history/visitor-0123456789abcdef", Some(KEY))
        .await;
    assert_eq!(history["count"], 2, "{history}");
    server.stop().await;
}
