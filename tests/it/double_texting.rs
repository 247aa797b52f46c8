//! Double texting, over sockets against the fake model: what a message
//! written while the answer to the last one is still streaming does under
//! each policy (queue is every other test's default), the conversation's
//! own policy over its tenant's, an adapter following the same policy, and
//! a cancel racing a merge.

use std::time::Duration;

use serde_json::{Value, json};
use tertulia_actors::model::DoubleTexting;

use crate::support::fake_llm::{FakeLlm, openai_config, question_of};
use crate::support::server::*;

async fn server_with(policy: DoubleTexting, window_ms: u64) -> (TestServer, FakeLlm) {
    let llm = FakeLlm::start().await;
    let mut config = openai_config(&llm);
    let acme = config.tenants.get_mut("acme").unwrap();
    acme.double_texting.policy = policy;
    acme.double_texting.merge_window_ms = window_ms;
    (TestServer::start(config).await, llm)
}

/// The user messages the model was sent in its request number `index`.
fn asked(llm: &FakeLlm, index: usize) -> Vec<String> {
    llm.requests()[index]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|message| message["role"] == "user")
        .map(|message| message["content"].as_str().unwrap().to_owned())
        .collect()
}

fn message(content: &str, id: &str) -> Value {
    json!({"type": "message", "content": content, "client_msg_id": id})
}

#[tokio::test]
async fn reject_refuses_a_second_message_and_stores_nothing() {
    let (server, _llm) = server_with(DoubleTexting::Reject, 1500).await;
    let (session, url) = server.create_session().await;
    let mut ws = server.connect(&url).await;
    say(&mut ws, "answer slowly").await;
    frames_until(&mut ws, "chunk").await;
    send(&mut ws, message("¿sigues ahí?", "second")).await;
    let (refused, _) = frames_until(&mut ws, "error").await;
    assert_eq!(refused["code"], "busy", "{refused}");
    // Every protocol follows it: the AI SDK's call gets 409 busy too.
    let body = json!({"id": session, "messages": [{"id": "sdk", "role": "user",
        "parts": [{"type": "text", "text": "¿y ahora?"}]}]});
    let (status, answer) = server.post("/ai-sdk/chat", KEY, body).await;
    assert_eq!((status, answer["code"].clone()), (409, json!("busy")));
    let (done, _) = frames_until(&mut ws, "done").await;
    assert_eq!(done["status"], "complete");
    let history = server.history(&session).await;
    assert_eq!(history.len(), 2, "{history:?}");
    server.stop().await;
}

#[tokio::test]
async fn interrupt_stops_the_answer_and_answers_both_messages() {
    let (server, llm) = server_with(DoubleTexting::Interrupt, 1500).await;
    let (session, url) = server.create_session().await;
    let mut ws = server.connect(&url).await;
    say(&mut ws, "answer slowly").await;
    frames_until(&mut ws, "chunk").await;
    say(&mut ws, "mejor dime el precio").await;
    let (first, _) = frames_until(&mut ws, "done").await;
    assert_eq!(first["status"], "interrupted", "{first}");
    let (second, _) = frames_until(&mut ws, "done").await;
    assert_eq!(second["status"], "complete", "{second}");
    assert_eq!(asked(&llm, 1), ["answer slowly", "mejor dime el precio"]);
    let roles: Vec<(String, String)> = server
        .history(&session)
        .await
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().into(),
                m["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    // The cut answer takes its seq when it is stored: after the message that cut it.
    let expected = [
        ("user", "complete"),
        ("user", "complete"),
        ("assistant", "interrupted"),
        ("assistant", "complete"),
    ];
    assert_eq!(
        roles,
        expected.map(|(role, status)| (role.to_owned(), status.to_owned()))
    );
    server.stop().await;
}

#[tokio::test]
async fn merge_answers_messages_within_the_window_as_one_turn() {
    let (server, llm) = server_with(DoubleTexting::Merge, 300).await;
    let (session, url) = server.create_session().await;
    let mut ws = server.connect(&url).await;
    let first = say(&mut ws, "hola").await;
    let second = say(&mut ws, "tengo una fuga").await;
    let (done, frames) = frames_until(&mut ws, "done").await;
    assert_eq!(done["reply_to"], second["message_id"]);
    assert_eq!(done["merged"], json!([first["message_id"]]));
    let opening = frames
        .iter()
        .find(|frame| frame["type"] == "chunk")
        .unwrap();
    assert_eq!(opening["merged"], json!([first["message_id"]]));
    assert_eq!(llm.requests().len(), 1);
    assert_eq!(asked(&llm, 0), ["hola", "tengo una fuga"]);
    assert_eq!(server.history(&session).await.len(), 3);

    // A message while the answer still waits for its first token: that
    // answer is dropped (nothing stored) and both are answered together.
    say(&mut ws, "stall then").await;
    tokio::time::timeout(DEADLINE, async {
        while llm.requests().len() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the model was asked");
    let again = say(&mut ws, "perdón, era otra cosa").await;
    let (done, _) = frames_until(&mut ws, "done").await;
    assert_eq!(done["reply_to"], again["message_id"]);
    assert_eq!(done["status"], "complete");
    assert_eq!(question_of(&llm.requests()[2]), "perdón, era otra cosa");
    let history = server.history(&session).await;
    assert_eq!(history.len(), 6, "{history:?}");
    assert_eq!(history[5]["role"], "assistant");
    server.stop().await;
}

#[tokio::test]
async fn a_cancel_racing_a_merge_stops_the_turn_before_it_starts() {
    let (server, llm) = server_with(DoubleTexting::Merge, 400).await;
    let (session, url) = server.create_session().await;
    let mut ws = server.connect(&url).await;
    say(&mut ws, "hola").await;
    send(&mut ws, json!({"type": "cancel"})).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    send(&mut ws, json!({"type": "ping"})).await;
    let (_, before) = frames_until(&mut ws, "pong").await;
    assert!(
        before
            .iter()
            .all(|frame| frame["type"] != "error" && frame["type"] != "chunk"),
        "{before:?}"
    );
    assert!(llm.requests().is_empty(), "the model was never asked");
    assert_eq!(server.history(&session).await.len(), 1);

    // The next message is answered as usual.
    say(&mut ws, "¿me ayudas?").await;
    let (done, _) = frames_until(&mut ws, "done").await;
    assert_eq!(done["status"], "complete");
    assert_eq!(llm.requests().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_conversation_overrides_its_tenants_policy() {
    let (server, _llm) = server_with(DoubleTexting::Queue, 1500).await;
    let (session, url) = server.create_session().await;
    let patch = |body: Value| {
        server
            .http
            .patch(server.url(&format!("/chat/{session}")))
            .header("X-API-Key", KEY)
            .json(&body)
            .send()
    };
    let bad = patch(json!({"version": 1, "double_texting": "later"}))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let set: Value = patch(json!({"version": 1, "double_texting": "reject"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(set["double_texting"], "reject", "{set}");
    let mut ws = server.connect(&url).await;
    say(&mut ws, "answer slowly").await;
    frames_until(&mut ws, "chunk").await;
    send(&mut ws, message("otra", "o1")).await;
    let (refused, _) = frames_until(&mut ws, "error").await;
    assert_eq!(refused["code"], "busy");
    frames_until(&mut ws, "done").await;
    // Back to the tenant's (queue): a second message waits its turn.
    let back: Value = patch(json!({"version": 2, "double_texting": null}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(back.get("double_texting").is_none(), "{back}");
    say(&mut ws, "answer slowly").await;
    frames_until(&mut ws, "chunk").await;
    say(&mut ws, "y otra").await;
    let (first, _) = frames_until(&mut ws, "done").await;
    let (second, _) = frames_until(&mut ws, "done").await;
    assert_eq!(
        (first["status"].clone(), second["status"].clone()),
        (json!("complete"), json!("complete"))
    );
    server.stop().await;
}
