//! The `webhook` agent (n8n as the brain) against a real HTTP receiver on
//! loopback: JSON, n8n's array form, plain text, newline-delimited chunks
//! streamed as they arrive, a failing workflow; the request's Standard
//! Webhooks signature checked independently, from the specification.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::support::fake_llm::{read_request, respond_as};
use crate::support::server::*;

const SECRET_BYTES: &[u8] = b"a-32-byte-secret-for-the-tests!!";

/// Each request the workflow received: its head and its body.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A workflow that answers as the question asks; remembers each request.
#[derive(Clone)]
struct Workflow {
    url: String,
    requests: Received,
}

impl Workflow {
    async fn start() -> Workflow {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let workflow = Workflow {
            url: format!("http://{}/webhook/plomeros", listener.local_addr().unwrap()),
            requests: Arc::new(Mutex::new(Vec::new())),
        };
        let requests = workflow.requests.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(answer(socket, requests.clone()));
            }
        });
        workflow
    }
}

async fn answer(mut socket: TcpStream, requests: Received) {
    let Some((head, body)) = read_request(&mut socket).await else {
        return;
    };
    let question = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|body| body["content"].as_str().map(str::to_owned))
        .unwrap_or_default();
    requests.lock().unwrap().push((head, body));
    match question.as_str() {
        "json" => {
            let reply = json!({"reply": "Claro, mañana a las 9."}).to_string();
            respond_as(&mut socket, "200 OK", "application/json", &[], &reply).await
        }
        "n8n" => {
            let reply = json!([{"output": "Desde n8n"}]).to_string();
            respond_as(
                &mut socket,
                "200 OK",
                "application/json; charset=utf-8",
                &[],
                &reply,
            )
            .await
        }
        "text" => {
            respond_as(
                &mut socket,
                "200 OK",
                "text/plain; charset=utf-8",
                &[],
                "Respuesta en texto",
            )
            .await
        }
        "fail" => {
            let reply = json!({"code": 0, "message": "Workflow could not be started!"}).to_string();
            respond_as(
                &mut socket,
                "500 Internal Server Error",
                "application/json",
                &[],
                &reply,
            )
            .await
        }
        _ => {
            // Streamed: one JSON line per piece, with pauses, in HTTP chunks.
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
                .await;
            for piece in ["Uno, ", "dos ", "y tres."] {
                let line = format!("{}\n", json!({"delta": piece}));
                let _ = socket
                    .write_all(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes())
                    .await;
                let _ = socket.flush().await;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            let _ = socket.write_all(b"0\r\n\r\n").await;
        }
    }
}

fn webhook_config(workflow: &Workflow) -> tertulia::config::Config {
    let mut config = config();
    let acme = config.tenants.get_mut("acme").unwrap();
    acme.agent = "webhook".into();
    acme.webhook_agent.url = workflow.url.clone();
    acme.webhook_agent.secret = format!("whsec_{}", STANDARD.encode(SECRET_BYTES));
    acme.webhook_agent.header_name = "X-Tertulia-Token".into();
    acme.webhook_agent.header_value = "n8n-header-secret".into();
    config
}

fn header<'a>(head: &'a str, name: &str) -> &'a str {
    head.lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then_some(value)
        })
        .unwrap_or_else(|| panic!("no {name} in {head}"))
        .trim()
}

#[tokio::test]
async fn the_workflow_answers_in_json_text_and_streamed_lines() {
    let workflow = Workflow::start().await;
    let server = TestServer::start(webhook_config(&workflow)).await;
    let (session, url) = server.create_session().await;
    let mut alice = server.connect(&url).await;
    let mut bob = server.connect(&url).await;
    for (question, expected, pieces) in [
        ("json", "Claro, mañana a las 9.", 1),
        ("n8n", "Desde n8n", 1),
        ("text", "Respuesta en texto", 1),
        ("stream", "Uno, dos y tres.", 3),
    ] {
        say(&mut alice, question).await;
        for socket in [&mut alice, &mut bob] {
            let (done, before) = frames_until(socket, "done").await;
            assert_eq!(done["status"], "complete", "{question}: {before:?}");
            assert_eq!(done["content"], expected, "{question}");
            let chunks = before
                .iter()
                .filter(|frame| frame["type"] == "chunk")
                .count();
            assert_eq!(chunks, pieces, "{question}: {before:?}");
        }
    }

    // The request: signed per Standard Webhooks, with n8n's header, the question, context and history.
    let (head, body) = workflow.requests.lock().unwrap()[1].clone();
    let id = header(&head, "webhook-id");
    let timestamp = header(&head, "webhook-timestamp");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET_BYTES).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(header(&head, "webhook-signature"), expected);
    assert_eq!(header(&head, "x-tertulia-token"), "n8n-header-secret");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["type"], "agent.request");
    assert_eq!(body["conversation_id"], session.as_str());
    assert_eq!(body["content"], "n8n");
    assert_eq!(body["context"], json!({"plan": "pro"}));
    let history: Vec<&str> = body["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|turn| turn["content"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["json", "Claro, mañana a las 9.", "n8n"]);
    let stored = server.history(&session).await;
    assert_eq!(body["message_id"], stored[2]["id"], "the question's id");
    server.stop().await;
}

#[tokio::test]
async fn a_failing_workflow_is_a_clear_error_and_a_failed_message() {
    let workflow = Workflow::start().await;
    let server = TestServer::start(webhook_config(&workflow)).await;
    let (session, url) = server.create_session().await;
    let mut ws = server.connect(&url).await;
    say(&mut ws, "fail").await;
    let (error, _) = frames_until(&mut ws, "error").await;
    assert_eq!(error["code"], "agent_failed");
    let text = error["content"].as_str().unwrap();
    assert!(
        text.contains("500") && text.contains("could not be started"),
        "{text}"
    );
    let (done, _) = frames_until(&mut ws, "done").await;
    assert_eq!(done["status"], "failed");
    assert_eq!(server.history(&session).await[1]["status"], "failed");
    server.stop().await;
}
