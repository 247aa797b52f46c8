//! The clients of the crash soak (`reliability.rs`): writers that post
//! numbered messages over REST, a WebSocket and webchat until the server goes
//! away, a console attendant who takes a conversation over and hands it back,
//! and the seeded random numbers that choose when each kill lands.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::server::KEY;

/// A small seeded generator (SplitMix64): a failing run can be replayed with
/// its printed seed, and no dependency is needed for a handful of delays.
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Prng {
        Prng(seed)
    }

    /// A number in `low..high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        low + (z ^ (z >> 31)) % (high - low)
    }
}

/// One acknowledged message: its number and the ids the server gave back
/// (the message's own; for webchat, then the answer's).
#[derive(Debug, Clone)]
pub struct Acked {
    pub number: usize,
    pub ids: Vec<String>,
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Posts numbered messages to `POST /chat/{id}/messages` (no answer) until
/// the server goes away.
pub async fn rest_writer(base: String, conversation: String, first: usize) -> Vec<Acked> {
    let http = http();
    let mut acked = Vec::new();
    for number in first.. {
        let response = http
            .post(format!("{base}/chat/{conversation}/messages"))
            .header("X-API-Key", KEY)
            .json(&json!({
                "role": "user",
                "content": format!("message {number}"),
                "respond": false,
                "client_msg_id": format!("{conversation}-{number}"),
            }))
            .send()
            .await;
        let Ok(response) = response else { break };
        if response.status() != 201 {
            break;
        }
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let Some(id) = body["id"].as_str() else { break };
        acked.push(Acked {
            number,
            ids: vec![id.to_owned()],
        });
    }
    acked
}

/// Sends numbered messages over `WS /chat/ws/{id}` (each answered by the
/// echo agent, so kills land mid answer) and counts those whose `ack` came.
pub async fn socket_writer(port: u16, conversation: String, first: usize) -> Vec<Acked> {
    let mut request = format!("ws://127.0.0.1:{port}/chat/ws/{conversation}")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("x-api-key", KEY.parse().unwrap());
    let mut acked = Vec::new();
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(request).await else {
        return acked;
    };
    for number in first.. {
        let client_msg_id = format!("{conversation}-{number}");
        let frame = json!({"type": "message", "content": format!("socket {number}"),
            "client_msg_id": client_msg_id});
        if ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .is_err()
        {
            break;
        }
        match ack_of(&mut ws, &client_msg_id).await {
            Some(id) => acked.push(Acked {
                number,
                ids: vec![id],
            }),
            None => break,
        }
    }
    acked
}

/// Reads frames until the `ack` of `client_msg_id`; `None` once the socket
/// ends, fails or stays quiet.
async fn ack_of<S>(ws: &mut S, client_msg_id: &str) -> Option<String>
where
    S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .ok()??
            .ok()?;
        let Message::Text(text) = message else {
            continue;
        };
        let frame: Value = serde_json::from_str(&text).ok()?;
        match frame["type"].as_str() {
            Some("ack") if frame["client_msg_id"] == client_msg_id => {
                return frame["message_id"].as_str().map(str::to_owned);
            }
            Some("error") => return None,
            _ => {}
        }
    }
}

/// Calls `POST /api/webchat/messages` (it answers once the echo agent has)
/// until the server goes away; an acknowledged call carries the ids of the
/// stored message and of its stored answer.
pub async fn webchat_writer(base: String, session_id: String, first: usize) -> Vec<Acked> {
    let http = http();
    let mut acked = Vec::new();
    for number in first.. {
        let response = http
            .post(format!("{base}/api/webchat/messages"))
            .header("X-API-Key", KEY)
            .json(&json!({"session_id": session_id, "author": "Ana",
                "content": format!("webchat {number}")}))
            .send()
            .await;
        let Ok(response) = response else { break };
        if response.status() != 200 {
            break;
        }
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let metadata = &body["metadata"];
        let (Some(question), Some(answer)) = (
            metadata["last_message_id"].as_str(),
            metadata["assistant_message_id"].as_str(),
        ) else {
            break;
        };
        acked.push(Acked {
            number,
            ids: vec![question.to_owned(), answer.to_owned()],
        });
    }
    acked
}

/// What the attendant last had acknowledged, and whether a request was still
/// unanswered when the server went away (then either state may hold).
#[derive(Debug, Clone, Copy, Default)]
pub struct Attended {
    pub taken_over: Option<bool>,
    pub in_flight: bool,
    pub switches: usize,
}

/// Takes `conversation` over and hands it back, again and again, until the
/// server goes away.
pub async fn attendant(base: String, conversation: String, staff_key: String) -> Attended {
    let http = http();
    let mut attended = Attended::default();
    loop {
        let take_over = attended.taken_over != Some(true);
        let action = if take_over { "takeover" } else { "handback" };
        attended.in_flight = true;
        let response = http
            .post(format!(
                "{base}/console/api/conversations/{conversation}/{action}"
            ))
            .header("X-API-Key", &staff_key)
            .send()
            .await;
        match response {
            Ok(response) if response.status() == 200 => {
                attended.taken_over = Some(take_over);
                attended.in_flight = false;
                attended.switches += 1;
            }
            Ok(response) => {
                let status = response.status();
                panic!("{action} was refused: {status} {:?}", response.text().await);
            }
            Err(_) => return attended,
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}
