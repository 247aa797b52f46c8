//! Reliability under crashes, bounded in time: the real binary is killed with
//! SIGKILL again and again while clients post messages and the webhook
//! receiver goes up and down. After the last restart, every acknowledged
//! message is in its conversation's history exactly once and in order, and
//! every one has had its `message.created` delivered at least once (copies
//! only with the same `webhook-id`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::binary::{free_port, kill, start};
use crate::support::receiver::Receiver;
use crate::support::server::*;

/// Kill-and-restart rounds before the final start.
const ROUNDS: usize = 5;
/// Conversations written to at once.
const CLIENTS: usize = 3;
/// How long clients write in each round before the kill.
const ROUND_TIME: Duration = Duration::from_millis(700);

/// Posts numbered messages into one conversation until the server goes away;
/// returns the acknowledged ones as (number, message id).
async fn write_until_gone(
    base: String,
    conversation: String,
    first: usize,
) -> Vec<(usize, String)> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
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
        match response {
            Ok(response) if response.status() == 201 => {
                let body: Value = response.json().await.unwrap_or(Value::Null);
                match body["id"].as_str() {
                    Some(id) => acked.push((number, id.to_owned())),
                    None => break,
                }
            }
            _ => break,
        }
    }
    acked
}

#[tokio::test]
async fn acknowledged_messages_and_their_events_survive_repeated_sigkills() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut receiver = Receiver::start().await;
    let config = dir.path().join("tertulia.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[egress]
allow = ["127.0.0.0/8"]

[webhooks]
retry_schedule = [{schedule}]
timeout_ms = 2000

[[webhooks.endpoints]]
name = "crm"
tenant = "acme"
url = "{url}"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
events = ["message.created"]

[tenants.acme]
name = "Acme"
api_keys = ["{KEY}"]
agent = "echo"
"#,
            schedule = vec!["\"100ms\""; 600].join(", "),
            url = receiver.url("/crm"),
        ),
    )
    .unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    let mut child = start(&config, &data, port).await;
    let mut conversations = Vec::new();
    for _ in 0..CLIENTS {
        let created: Value = http
            .post(format!("{base}/chat/sessions"))
            .header("X-API-Key", KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        conversations.push(created["session_id"].as_str().unwrap().to_owned());
    }
    let mut acked: BTreeMap<String, Vec<(usize, String)>> = BTreeMap::new();
    for round in 0..ROUNDS {
        // The receiver flaps: down in every other round.
        if round % 2 == 1 {
            receiver.stop().await;
        } else if round > 0 {
            receiver.restart().await;
        }
        let writers: Vec<_> = conversations
            .iter()
            .map(|conversation| {
                let first = acked.get(conversation).map_or(0, Vec::len) + round * 10_000;
                tokio::spawn(write_until_gone(base.clone(), conversation.clone(), first))
            })
            .collect();
        tokio::time::sleep(ROUND_TIME).await;
        kill(&mut child);
        for (conversation, writer) in conversations.iter().zip(writers) {
            acked
                .entry(conversation.clone())
                .or_default()
                .extend(writer.await.unwrap());
        }
        child = start(&config, &data, port).await;
    }
    receiver.restart().await;

    // Every acknowledged message is stored once, in the order it was sent.
    let total: usize = acked.values().map(Vec::len).sum();
    assert!(
        total >= ROUNDS * CLIENTS,
        "clients were acknowledged: {total}"
    );
    for (conversation, sent) in &acked {
        let body: Value = http
            .get(format!("{base}/chat/{conversation}/messages?limit=5000"))
            .header("X-API-Key", KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let stored: Vec<String> = body
            .as_array()
            .unwrap()
            .iter()
            .map(|message| message["id"].as_str().unwrap().to_owned())
            .collect();
        let unique: BTreeSet<&String> = stored.iter().collect();
        assert_eq!(unique.len(), stored.len(), "no message is stored twice");
        let positions: Vec<usize> = sent
            .iter()
            .map(|(number, id)| {
                stored
                    .iter()
                    .position(|stored| stored == id)
                    .unwrap_or_else(|| panic!("acknowledged message {number} ({id}) is missing"))
            })
            .collect();
        assert!(
            positions.windows(2).all(|pair| pair[0] < pair[1]),
            "in the order they were sent"
        );
    }

    // And every one's message.created reached the receiver, under one id.
    let wanted: BTreeSet<String> = acked.values().flatten().map(|(_, id)| id.clone()).collect();
    let received = receiver
        .wait_for_within("every message.created", DEADLINE * 4, |received| {
            let delivered: BTreeSet<String> = received
                .iter()
                .filter(|request| request.delivered())
                .map(|request| {
                    request.json()["data"]["message_id"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
                .collect();
            wanted.is_subset(&delivered)
        })
        .await;
    let mut webhook_ids: HashMap<String, BTreeSet<String>> = HashMap::new();
    for request in received.iter().filter(|request| request.delivered()) {
        let message = request.json()["data"]["message_id"]
            .as_str()
            .unwrap()
            .to_owned();
        webhook_ids
            .entry(message)
            .or_default()
            .insert(request.header("webhook-id").to_owned());
    }
    assert!(
        webhook_ids.values().all(|ids| ids.len() == 1),
        "a copy carries the same webhook-id"
    );
    let delivered = received
        .iter()
        .filter(|request| request.delivered())
        .count();
    println!(
        "reliability: {ROUNDS} SIGKILLs, {total} acknowledged messages in {CLIENTS} conversations, \
         all stored once and in order; {} message.created events delivered in {delivered} \
         deliveries ({} copies, each with its event's webhook-id)",
        webhook_ids.len(),
        delivered - webhook_ids.len(),
    );
    kill(&mut child);
}
