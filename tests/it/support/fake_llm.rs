//! A real OpenAI-compatible streaming server that the tests start on
//! loopback. The server is plain HTTP/1.1 over a TCP socket, written here so
//! every byte is ours: SSE `data:` lines of `chat.completion.chunk`, the
//! final usage chunk, `data: [DONE]`, JSON error bodies, 429 with
//! `Retry-After`, slow tokens and a connection dropped mid-stream. What it
//! does depends on the question it is asked.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::server::*;

/// The words of a normal answer.
pub const ANSWER: [&str; 6] = ["Hola", ",", " ¿en qué", " te", " ayudo", "?"];

/// A fake provider; counts requests and remembers their bodies.
#[derive(Clone)]
pub struct FakeLlm {
    pub base_url: String,
    pub requests: Arc<Mutex<Vec<Value>>>,
    /// Requests whose client went away before the answer ended.
    pub abandoned: Arc<AtomicUsize>,
}

impl FakeLlm {
    pub async fn start() -> FakeLlm {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let llm = FakeLlm {
            base_url: format!("http://{}/v1", listener.local_addr().unwrap()),
            requests: Arc::new(Mutex::new(Vec::new())),
            abandoned: Arc::new(AtomicUsize::new(0)),
        };
        let server = llm.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(server.clone().serve(socket));
            }
        });
        llm
    }

    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }

    async fn serve(self, mut socket: TcpStream) {
        let Some(body) = read_request(&mut socket)
            .await
            .and_then(|(_, body)| serde_json::from_slice::<Value>(&body).ok())
        else {
            return;
        };
        let question = question_of(&body);
        let attempt = {
            let mut requests = self.requests.lock().unwrap();
            requests.push(body.clone());
            requests
                .iter()
                .filter(|request| question_of(request) == question)
                .count()
        };
        if body_is_extraction(&self.requests.lock().unwrap()) {
            let found = if question.contains("Ana López") {
                json!({"name": "Ana López", "email": null, "phone": null})
            } else {
                json!({"name": null, "email": null, "phone": null})
            };
            let completion = json!({
                "id": "chatcmpl-extract",
                "object": "chat.completion",
                "created": 1_763_000_000,
                "model": "gpt-test-2026",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": found.to_string(), "refusal": null}, "logprobs": null, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42},
            });
            return respond(&mut socket, "200 OK", &[], &completion).await;
        }
        if body_is_analysis(&body) {
            return answer_analysis(&mut socket, &body, &question, attempt).await;
        }
        if question.contains("rate-limit-once") && attempt == 1 {
            let error = json!({"error": {"message": "Rate limit reached for gpt-test", "type": "requests", "param": null, "code": "rate_limit_exceeded"}});
            return respond(
                &mut socket,
                "429 Too Many Requests",
                &[("retry-after", "1")],
                &error,
            )
            .await;
        }
        if question.contains("server-error-once") && attempt == 1 {
            let error = json!({"error": {"message": "The server had an error", "type": "server_error", "param": null, "code": null}});
            return respond(&mut socket, "500 Internal Server Error", &[], &error).await;
        }
        if question.contains("no-such-model") {
            let error = json!({"error": {"message": "The model `nope` does not exist", "type": "invalid_request_error", "param": null, "code": "model_not_found"}});
            return respond(&mut socket, "404 Not Found", &[], &error).await;
        }
        if question.contains("estimate") || question.contains("need-a-person") {
            let last = self
                .requests
                .lock()
                .unwrap()
                .last()
                .cloned()
                .unwrap_or_default();
            let messages = last["messages"].as_array().cloned().unwrap_or_default();
            let result = messages
                .last()
                .filter(|message| message["role"] == "tool")
                .and_then(|message| message["content"].as_str().map(str::to_owned));
            let _ = match result {
                None if question.contains("need-a-person") => {
                    let arguments = ["{\"reason\": ", "\"wants a plumber on site\"}"];
                    stream_tool_call(&mut socket, "call_human_1", "request_human", arguments).await
                }
                None => {
                    let arguments = ["{\"problem\": \"fuga\", ", "\"address\": \"Calle 5\"}"];
                    stream_tool_call(&mut socket, "call_est_1", "create_estimate", arguments).await
                }
                Some(result) => {
                    let words = vec!["Presupuesto: ".to_owned(), result];
                    stream_answer(&mut socket, &words, Duration::ZERO, None).await
                }
            };
            return;
        }
        if question.contains("stall") {
            // Headers, then (after one word, or none) silence far longer than the deadlines.
            let mut events = vec![chunk(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
                Value::Null,
            )];
            if question.contains("after-a-word") {
                events.push(chunk(json!({"content": "Hola"}), Value::Null, Value::Null));
            }
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
                .await;
            for event in events {
                let _ = socket
                    .write_all(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes())
                    .await;
            }
            tokio::time::sleep(Duration::from_secs(30)).await;
            return;
        }
        let (words, pause, drop_after): (Vec<String>, Duration, Option<usize>) =
            if question.contains("slowly") {
                let words = (0..100).map(|n| format!("w{n} ")).collect();
                (words, Duration::from_millis(50), None)
            } else if question.contains("drop-mid-stream") {
                (ANSWER.map(str::to_owned).to_vec(), Duration::ZERO, Some(2))
            } else {
                (ANSWER.map(str::to_owned).to_vec(), Duration::ZERO, None)
            };
        if stream_answer(&mut socket, &words, pause, drop_after)
            .await
            .is_err()
        {
            self.abandoned.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Whether a request asks for a conversation's insights (non-streamed).
pub fn body_is_analysis(request: &Value) -> bool {
    request["stream"] != true
        && request["messages"][0]["content"]
            .as_str()
            .is_some_and(|prompt| prompt.starts_with("You analyse"))
}

/// The model's insights, by what the transcript (`question`) asks for:
/// `analysis-invalid-json`, `analysis-bad-intent`, `analysis-timeout` (an
/// answer later than any test's deadline), `analysis-no-structured` (a 400
/// for `json_schema`, as servers without structured output answer),
/// `analysis-fail-once` (invalid on the first attempt only).
async fn answer_analysis(socket: &mut TcpStream, body: &Value, question: &str, attempt: usize) {
    let structured = body["response_format"]["type"] == "json_schema";
    if question.contains("analysis-no-structured") && structured {
        let error = json!({"error": {"message": "response_format json_schema is not supported", "type": "invalid_request_error", "param": "response_format", "code": null}});
        return respond(socket, "400 Bad Request", &[], &error).await;
    }
    if question.contains("analysis-timeout") {
        tokio::time::sleep(Duration::from_secs(30)).await;
        return;
    }
    let intents = body["response_format"]["json_schema"]["schema"]["properties"]["intent"]["enum"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let intent = if intents.iter().any(|intent| intent == "estimate") || !structured {
        "estimate"
    } else {
        intents.first().and_then(Value::as_str).unwrap_or("other")
    };
    let intent = if question.contains("analysis-bad-intent") {
        "gossip"
    } else {
        intent
    };
    let insights = json!({
        "summary": "El cliente tiene una fuga y quiere un presupuesto.",
        "language": "es",
        "intent": intent,
        "sentiment": -0.3,
        "resolved": false,
        "lead_quality": "warm",
        "topics": ["fuga", "presupuesto"],
        "follow_up": "Llamar al cliente con un precio.",
    });
    let fails = question.contains("analysis-invalid-json")
        || (question.contains("analysis-fail-once") && attempt == 1);
    let content = if fails {
        "Claro, aquí tienes el análisis: el cliente está contento.".to_owned()
    } else {
        insights.to_string()
    };
    let completion = json!({
        "id": "chatcmpl-analysis",
        "object": "chat.completion",
        "created": 1_763_000_000,
        "model": "gpt-test-2026",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": null}, "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 40, "total_tokens": 160},
    });
    respond(socket, "200 OK", &[], &completion).await
}

/// Whether the newest request is a (non-streamed) contact extraction.
pub fn body_is_extraction(requests: &[Value]) -> bool {
    requests.last().is_some_and(|request| {
        request["stream"] != true
            && request["messages"][0]["content"]
                .as_str()
                .is_some_and(|prompt| prompt.starts_with("You extract"))
    })
}

/// The newest user message of a request: what is being answered.
pub fn question_of(request: &Value) -> String {
    request["messages"]
        .as_array()
        .and_then(|messages| messages.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|message| message["content"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Reads one HTTP/1.1 request: its head and its body.
pub async fn read_request(socket: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let read = socket.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(at) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).into_owned();
    let length: usize = head
        .to_lowercase()
        .lines()
        .find_map(|line| line.strip_prefix("content-length:").map(str::to_owned))
        .and_then(|value| value.trim().parse().ok())?;
    while buffer.len() < header_end + length {
        let read = socket.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    Some((head, buffer[header_end..header_end + length].to_vec()))
}

pub async fn respond(socket: &mut TcpStream, status: &str, headers: &[(&str, &str)], body: &Value) {
    respond_as(
        socket,
        status,
        "application/json",
        headers,
        &body.to_string(),
    )
    .await;
}

/// Writes a whole response and closes.
pub async fn respond_as(
    socket: &mut TcpStream,
    status: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: &str,
) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = socket.write_all(head.as_bytes()).await;
    let _ = socket.write_all(body.as_bytes()).await;
}

pub fn chunk(delta: Value, finish_reason: Value, usage: Value) -> String {
    let choices = if delta.is_null() {
        json!([])
    } else {
        json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}])
    };
    let event = json!({
        "id": "chatcmpl-test123",
        "object": "chat.completion.chunk",
        "created": 1_763_000_000,
        "model": "gpt-test-2026",
        "system_fingerprint": "fp_test",
        "choices": choices,
        "usage": usage,
    });
    format!("data: {event}\n\n")
}

/// Streams an answer as SSE in HTTP chunks; stops early (closing the socket)
/// after `drop_after` words. An error means the client went away.
pub async fn stream_answer(
    socket: &mut TcpStream,
    words: &[String],
    pause: Duration,
    drop_after: Option<usize>,
) -> std::io::Result<()> {
    socket
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
        .await?;
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
        Value::Null,
    )];
    for word in words {
        events.push(chunk(json!({"content": word}), Value::Null, Value::Null));
    }
    events.push(chunk(json!({}), json!("stop"), Value::Null));
    events.push(chunk(
        Value::Null,
        Value::Null,
        json!({"prompt_tokens": 42, "completion_tokens": words.len(), "total_tokens": 42 + words.len()}),
    ));
    events.push("data: [DONE]\n\n".to_owned());
    for (index, event) in events.iter().enumerate() {
        if drop_after.is_some_and(|limit| index > limit) {
            // Mid-stream: no final chunk, no [DONE]; the connection just ends.
            return socket.shutdown().await;
        }
        if index > 1 && !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        socket
            .write_all(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes())
            .await?;
        socket.flush().await?;
    }
    socket.write_all(b"0\r\n\r\n").await
}

/// acme answers with the fake provider.
pub fn openai_config(llm: &FakeLlm) -> tertulia::config::Config {
    let mut config = config();
    let acme = config.tenants.get_mut("acme").unwrap();
    acme.agent = "openai".into();
    acme.openai.base_url = llm.base_url.clone();
    acme.openai.api_key = "sk-test-secret-key-0123456789".into();
    acme.openai.model = "gpt-test".into();
    acme.openai.system_prompt = "Eres el asistente de Acme.\n{{context}}".into();
    acme.openai.max_retries = 2;
    config
}

/// A model calling a tool, its name and two halves of its arguments in three chunks.
pub async fn stream_tool_call(
    socket: &mut TcpStream,
    id: &str,
    name: &str,
    arguments: [&str; 2],
) -> std::io::Result<()> {
    socket
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
        .await?;
    let call = |function: Value, first: bool| {
        let mut call = json!({"index": 0, "function": function});
        if first {
            call["id"] = json!(id);
            call["type"] = json!("function");
        }
        json!({"tool_calls": [call]})
    };
    let events = [
        chunk(
            json!({"role": "assistant", "content": null}),
            Value::Null,
            Value::Null,
        ),
        chunk(
            call(json!({"name": name, "arguments": ""}), true),
            Value::Null,
            Value::Null,
        ),
        chunk(
            call(json!({"arguments": arguments[0]}), false),
            Value::Null,
            Value::Null,
        ),
        chunk(
            call(json!({"arguments": arguments[1]}), false),
            Value::Null,
            Value::Null,
        ),
        chunk(json!({}), json!("tool_calls"), Value::Null),
        "data: [DONE]\n\n".to_owned(),
    ];
    for event in events {
        socket
            .write_all(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes())
            .await?;
    }
    socket.write_all(b"0\r\n\r\n").await
}
