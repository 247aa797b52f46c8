//! The AG-UI adapter, driven by AG-UI's own `HttpAgent` (from the npm
//! registry, in Node): the event sequence of one run, its text equal to the
//! stored answer, and the conversation's context as the run's state.

use serde_json::{Value, json};

use crate::support::node::run_script;
use crate::support::server::*;

async fn run(
    server: &TestServer,
    thread: &str,
    message_id: &str,
    text: &str,
    state: Value,
) -> Value {
    let vars = [
        ("BASE", server.url("")),
        ("KEY", KEY.to_owned()),
        ("THREAD_ID", thread.to_owned()),
        ("MESSAGE_ID", message_id.to_owned()),
        ("TEXT", text.to_owned()),
        ("STATE", state.to_string()),
    ];
    run_script("ag_ui.mjs", &vars).await
}

fn types(result: &Value) -> Vec<String> {
    result["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_run_streams_the_answer_and_the_state() {
    let server = TestServer::start(config()).await;
    let (session, _) = server.create_session().await;
    let state = json!({"cart": "3 tuberías"});
    let result = run(&server, &session, "u-1", "hola desde AG-UI", state).await;
    assert_eq!(result["error"], Value::Null, "{result}");

    let types = types(&result);
    assert_eq!(
        types[..5],
        [
            "RUN_STARTED",
            "STATE_SNAPSHOT",
            "STATE_DELTA",
            "TEXT_MESSAGE_START",
            "TEXT_MESSAGE_CONTENT"
        ]
    );
    assert_eq!(
        types[types.len() - 2..],
        ["TEXT_MESSAGE_END", "RUN_FINISHED"]
    );
    let events = result["events"].as_array().unwrap();
    assert_eq!(events[0]["threadId"], session.as_str());
    assert_eq!(events[0]["runId"], "run-u-1");
    // The conversation's context, then the client's state merged into it,
    // as the same JSON Patch a socket's `context` frame carries.
    assert_eq!(events[1]["snapshot"], json!({"plan": "pro"}));
    assert_eq!(
        events[2]["delta"],
        json!([{"op": "add", "path": "/cart", "value": "3 tuberías"}])
    );
    assert_eq!(
        result["state"],
        json!({"plan": "pro", "cart": "3 tuberías"})
    );
    let (_, listed) = server.get("/chat/conversations", Some(KEY)).await;
    let conversation = &listed[0];
    assert_eq!(conversation["context"], result["state"]);
    assert_eq!(conversation["context_version"], 1);

    let history = server.history(&session).await;
    assert_eq!(history[0]["client_msg_id"], "u-1");
    let answer = result["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|message| message["role"] == "assistant")
        .unwrap()
        .clone();
    assert_eq!(answer["id"], history[1]["id"]);
    assert_eq!(answer["content"], history[1]["content"]);
    assert_eq!(answer["content"], "You said: hola desde AG-UI");
    server.stop().await;
}

#[tokio::test]
async fn bad_runs_get_clear_errors() {
    let mut config = config();
    config.server.max_body_bytes = 4096;
    let server = TestServer::start(config).await;
    let (session, _) = server.create_session().await;
    let user = json!([{"id": "u1", "role": "user", "content": "hola"}]);
    let cases = [
        json!({"runId": "r", "messages": user}),
        json!({"threadId": session, "messages": user}),
        json!({"threadId": session, "runId": "r", "messages": []}),
        json!({"threadId": session, "runId": "r", "messages": [{"role": "user", "content": "x"}]}),
        json!({"threadId": session, "runId": "r", "messages": user, "state": [1]}),
    ];
    for body in cases {
        let (status, answer) = server.post("/ag-ui", KEY, body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
    }
    let body = json!({"threadId": session, "runId": "r", "messages": user});
    assert_eq!(server.post("/ag-ui", "tk_nope", body.clone()).await.0, 401);
    let anonymous = server
        .http
        .post(server.url("/ag-ui"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let huge = json!({"threadId": session, "runId": "r",
        "messages": [{"id": "u1", "role": "user", "content": "x".repeat(5000)}]});
    let (status, answer) = server.post("/ag-ui", KEY, huge).await;
    assert_eq!(
        (status, answer["code"].clone()),
        (413, json!("payload_too_large"))
    );
    // Nothing of any of it was stored.
    assert_eq!(server.history(&session).await.len(), 0);
    server.stop().await;
}
