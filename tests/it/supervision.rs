//! Crashes: a panicking agent or session is restarted by its supervisor and
//! the conversation carries on, with its sockets attached.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tertulia_actors::model::TenantId;
use tertulia_actors::runtime::{AgentEvent, AgentProvider, AgentRequest, AgentStream, EchoAgent};

use crate::support::server::*;

/// A test-only agent: echoes, except that "boom" panics inside the stream and
/// "kaboom" panics before it starts (inside the agent actor's handler).
struct Flaky(EchoAgent);

impl AgentProvider for Flaky {
    fn answer(&self, request: AgentRequest) -> AgentStream {
        let asked = request.question().to_owned();
        if asked == "kaboom" {
            panic!("the provider blew up before streaming");
        }
        if asked == "boom" {
            use futures_util::StreamExt;
            return futures_util::stream::iter(vec![Ok(AgentEvent::from("partial "))])
                .chain(futures_util::stream::once(async {
                    panic!("the provider blew up mid-stream")
                }))
                .boxed();
        }
        self.0.answer(request)
    }
}

fn flaky_server_config() -> (
    tertulia::config::Config,
    HashMap<String, Arc<dyn AgentProvider>>,
) {
    let mut config = config();
    config.tenants.get_mut("acme").unwrap().agent = "flaky".into();
    let mut agents: HashMap<String, Arc<dyn AgentProvider>> = HashMap::new();
    agents.insert(
        "flaky".into(),
        Arc::new(Flaky(EchoAgent {
            word_delay: Duration::ZERO,
        })),
    );
    (config, agents)
}

#[tokio::test]
async fn a_panicking_agent_is_restarted_and_the_conversation_continues() {
    let (config, agents) = flaky_server_config();
    let server = TestServer::start_with_agents(config, agents).await;
    let (session, url) = server.create_session().await;
    let mut ws = server.connect(&url).await;

    for trigger in ["boom", "kaboom"] {
        say(&mut ws, trigger).await;
        let (done, before) = frames_until(&mut ws, "done").await;
        assert_eq!(done["status"], "failed", "{trigger}");
        assert!(
            before
                .iter()
                .any(|frame| frame["type"] == "error" && frame["code"] == "agent_crashed"),
            "{trigger}: {before:?}"
        );
        say(&mut ws, "hello again").await;
        let (done, _) = frames_until(&mut ws, "done").await;
        assert_eq!(done["content"], "You said: hello again");
        assert_eq!(done["status"], "complete");
    }
    let statuses: Vec<_> = server
        .history(&session)
        .await
        .iter()
        .map(|m| m["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        vec![
            json!("complete"),
            json!("failed"),
            json!("complete"),
            json!("complete"),
            json!("complete"),
            json!("failed"),
            json!("complete"),
            json!("complete")
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn a_panicking_session_is_restarted_and_its_sockets_carry_on() {
    let server = TestServer::start(config()).await;
    let (session, url) = server.create_session().await;
    let mut alice = server.connect(&url).await;
    let mut bob = server.connect(&url).await;
    say(&mut alice, "before the crash").await;
    frames_until(&mut alice, "done").await;
    frames_until(&mut bob, "done").await;

    let tenant = TenantId("acme".into());
    server
        .server
        .runtime
        .inject_session_panic(&tenant, session.parse().unwrap())
        .await
        .unwrap();
    for ws in [&mut alice, &mut bob] {
        let (notice, _) = frames_until(ws, "error").await;
        assert_eq!(notice["code"], "session_restarted");
    }

    // Both sockets stay usable once the session is back; the log carries on.
    let ack = loop {
        send(
            &mut alice,
            json!({"type": "message", "content": "after the crash"}),
        )
        .await;
        let frame = next_frame(&mut alice).await;
        if frame["type"] == "ack" {
            break frame;
        }
        assert_eq!(frame["code"], "unavailable", "{frame}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(ack["seq"], 3);
    let (done, _) = frames_until(&mut alice, "done").await;
    assert_eq!(done["content"], "You said: after the crash");
    let (message, _) = frames_until(&mut bob, "message").await;
    assert_eq!(message["message"]["content"], "after the crash");
    frames_until(&mut bob, "done").await;
    assert_eq!(server.history(&session).await.len(), 4);
    server.stop().await;
}

/// The answer starts while its question is being written; when the write
/// fails, the client is told, and nothing of that answer is ever sent or
/// stored. The conversation carries on.
#[tokio::test]
async fn a_question_that_cannot_be_stored_is_refused_and_its_early_answer_dropped() {
    let server = TestServer::start(config()).await;
    let (session, url) = server.create_session().await;
    let mut ws = server.connect(&url).await;

    server.server.runtime.inject_storage_failures(1).await;
    send(&mut ws, json!({"type": "message", "content": "lost"})).await;
    let refused = next_frame(&mut ws).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "storage_unavailable", "{refused}");

    say(&mut ws, "kept").await;
    let (done, before) = frames_until(&mut ws, "done").await;
    assert_eq!(chunk_text(&before), "You said: kept", "{before:?}");
    assert_eq!(done["content"], "You said: kept");
    let history = server.history(&session).await;
    let contents: Vec<&str> = history
        .iter()
        .map(|message| message["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, vec!["kept", "You said: kept"]);
    server.stop().await;
}
