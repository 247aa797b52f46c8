//! Hostile OpenAI SSE streams, generated (proptest, 10,000 cases each),
//! through the real provider: async-openai's HTTP client and SSE parsing,
//! then our delta handling, against a raw HTTP server on loopback that
//! writes each case's body in the pieces it was cut into.
//!
//! - Any text deltas (any Unicode, NUL), in events cut at any byte, with
//!   comments, CRLF line ends and `[DONE]` or none: the text shown is the
//!   deltas joined, byte for byte, and no error.
//! - Any bytes as the body: the stream ends (text, an error, or both);
//!   never a panic, never a hang.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::agent::{AgentEvent, AgentProvider, AgentRequest, Turn};
use crate::model::{MessageId, Role, SessionId, TenantId, TenantSettings};
use crate::net::egress::EgressPolicy;

const CASES: u32 = 10_000;

/// Bodies to answer with, in order, each as the pieces it is written in.
type Plans = Arc<Mutex<VecDeque<Vec<Vec<u8>>>>>;

/// An HTTP server that answers each request with the next planned body,
/// piece by piece, then closes the connection.
async fn serve(plans: Plans) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                continue;
            };
            let plan = plans.lock().unwrap().pop_front().unwrap_or_default();
            tokio::spawn(async move {
                // The request head and a body of Content-Length bytes.
                let mut request = Vec::new();
                let mut buffer = [0u8; 8192];
                while let Ok(read) = socket.read(&mut buffer).await {
                    if read == 0 {
                        return;
                    }
                    request.extend_from_slice(&buffer[..read]);
                    let text = String::from_utf8_lossy(&request);
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let length = text[..head_end]
                            .lines()
                            .find_map(|line| {
                                let (name, value) = line.split_once(':')?;
                                name.eq_ignore_ascii_case("content-length")
                                    .then(|| value.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if request.len() >= head_end + 4 + length {
                            break;
                        }
                    }
                }
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for piece in plan {
                    if socket.write_all(&piece).await.is_err() || socket.flush().await.is_err() {
                        return;
                    }
                    tokio::task::yield_now().await;
                }
                let _ = socket.shutdown().await;
            });
        }
    });
    format!("http://{addr}/v1")
}

fn request(base_url: &str) -> AgentRequest {
    let settings = TenantSettings {
        agent: "openai".into(),
        openai: crate::model::OpenAiSettings {
            base_url: base_url.into(),
            api_key: "sk-properties".into(),
            model: "m".into(),
            max_retries: 0,
            first_token_timeout_ms: 5_000,
            idle_timeout_ms: 5_000,
            ..Default::default()
        },
        ..TenantSettings::default()
    };
    AgentRequest {
        tenant: TenantId("t".into()),
        session: SessionId::new(),
        history: vec![Turn {
            role: Role::User,
            content: "hola".into(),
        }],
        context: serde_json::Map::new(),
        settings: Arc::new(settings),
        question_id: MessageId::new(),
    }
}

/// A chunk event carrying `text` as its delta, ended with `end`.
fn event(text: &str, end: &str) -> String {
    let chunk = json!({
        "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}],
    });
    format!("data: {chunk}{end}{end}")
}

/// `body` cut at `cuts` (any points).
fn pieces(body: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|cut| cut % (body.len() + 1)).collect();
    points.sort();
    points.push(body.len());
    let mut from = 0;
    points
        .into_iter()
        .map(|point| {
            let piece = body[from..point].to_vec();
            from = point;
            piece
        })
        .collect()
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    plans: Plans,
    provider: Arc<dyn AgentProvider>,
    base_url: String,
}

impl Harness {
    fn new() -> Harness {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let plans: Plans = Arc::default();
        let base_url = runtime.block_on(serve(plans.clone()));
        let policy = EgressPolicy::new(&["127.0.0.0/8".into()]).unwrap();
        Harness {
            runtime,
            plans,
            provider: super::provider(policy),
            base_url,
        }
    }

    /// The text shown and the errors met for a body written in these pieces.
    fn answer(&self, plan: Vec<Vec<u8>>) -> (String, usize) {
        self.plans.lock().unwrap().push_back(plan);
        let stream = self.provider.answer(request(&self.base_url));
        let events = self.runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(20), stream.collect::<Vec<_>>())
                .await
                .expect("the stream ends")
        });
        let (mut text, mut errors) = (String::new(), 0);
        for event in events {
            match event {
                Ok(AgentEvent::Text(piece)) => text.push_str(&piece),
                Ok(_) => {}
                Err(_) => errors += 1,
            }
        }
        (text, errors)
    }
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn any_text_deltas_however_cut_are_shown_byte_for_byte() {
    let harness = Harness::new();
    let case = (
        prop::collection::vec(any::<String>(), 0..6),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(any::<usize>(), 0..6),
    );
    runner()
        .run(&case, |(texts, crlf, comments, done, cuts)| {
            let end = if crlf { "\r\n" } else { "\n" };
            let mut body = String::new();
            for text in &texts {
                if comments {
                    body.push_str(&format!(": keep-alive{end}"));
                }
                body.push_str(&event(text, end));
            }
            if done {
                body.push_str(&format!("data: [DONE]{end}{end}"));
            }
            let (text, errors) = harness.answer(pieces(body.as_bytes(), &cuts));
            prop_assert_eq!(errors, 0, "body: {:?}", body);
            prop_assert_eq!(text, texts.concat());
            Ok(())
        })
        .unwrap();
}

#[test]
fn any_bytes_as_a_stream_end_it_without_a_panic() {
    let harness = Harness::new();
    let byte = prop_oneof![any::<u8>(), Just(b'\n'), Just(b':'), Just(b'{'), Just(b'"')];
    let body = prop_oneof![
        prop::collection::vec(byte, 0..256),
        (any::<String>(), prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(text, tail)| {
            let mut body = event(&text, "\n").into_bytes();
            body.extend(b"data: ");
            body.extend(tail);
            body
        }),
    ];
    let case = (body, prop::collection::vec(any::<usize>(), 0..4));
    runner()
        .run(&case, |(body, cuts)| {
            harness.answer(pieces(&body, &cuts));
            Ok(())
        })
        .unwrap();
}
