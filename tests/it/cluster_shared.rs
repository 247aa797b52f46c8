//! What a cluster shares besides conversations, and what it survives: a
//! webhook endpoint delivered by one node at a time (every event once, in
//! order per conversation, from conversations owned by either node; still
//! delivered after the delivering node is killed); a staff key made on one
//! node opening a console on another, which follows conversations owned by
//! the first; a key revoked while two nodes were cut off from each other
//! refused by both once they meet again; a conversation made on one node
//! and first written on another, numbered on when it moves back; and the
//! database server
//! restarted under writers on two nodes (`/readyz` 503 while it is gone and
//! 200 after on both; every acknowledged message stored once, in order).
//! Real processes on loopback (`support/cluster.rs`).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::binary::create_session;
use crate::support::cluster::{Node, start_nodes, start_nodes_via, stored_once_in_order};
use crate::support::link::Link;
use crate::support::receiver::{Receiver, signed_with};
use crate::support::server::{DEADLINE, KEY};
use crate::support::surreal::SurrealServer;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Posts a message through `node` (no answer); the status and body.
async fn post(node: &Node, session: &str, content: &str, id: &str) -> (u16, Value) {
    let body = json!({"role": "user", "content": content, "respond": false, "client_msg_id": id});
    let request = reqwest::Client::new()
        .post(format!("{}/chat/{session}/messages", node.base()))
        .header("X-API-Key", KEY)
        .json(&body)
        .send();
    match tokio::time::timeout(DEADLINE, request).await {
        Ok(Ok(response)) => {
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        }
        Ok(Err(error)) => (0, json!({"code": error.to_string()})),
        Err(_) => (0, json!({"code": "timeout"})),
    }
}

/// Posts until acknowledged, retrying with the same `client_msg_id`.
async fn post_until_stored(node: &Node, session: &str, content: &str) {
    let started = Instant::now();
    while post(node, session, content, content).await.0 != 201 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{content} never stored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `message.created` events received, each once (the first arrival of
/// its `webhook-id`): their contents by conversation, in arrival order; and
/// how many requests came in all.
fn by_conversation(receiver: &Receiver) -> (BTreeMap<String, Vec<String>>, usize) {
    let mut contents: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut ids = HashSet::new();
    let received: Vec<_> = (receiver.received().into_iter())
        .filter(|request| request.delivered())
        .collect();
    for request in &received {
        assert!(signed_with(SECRET, request), "signed");
        if !ids.insert(request.header("webhook-id").to_owned()) {
            continue;
        }
        let payload = request.json();
        let conversation = payload["data"]["conversation_id"].as_str().unwrap_or("?");
        let content = payload["data"]["content"]
            .as_str()
            .unwrap_or("?")
            .to_owned();
        contents
            .entry(conversation.to_owned())
            .or_default()
            .push(content);
    }
    (contents, received.len())
}

/// How many webhooks `node` delivered, from its `/metrics`.
async fn delivered_by(node: &Node) -> u64 {
    let url = format!("{}/metrics", node.base());
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|line| line.starts_with("tertulia_webhook_deliveries_total{"))
        .filter(|line| line.contains("outcome=\"delivered\""))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn one_node_delivers_each_webhook_once_in_order_and_another_takes_over_when_it_dies() {
    let receiver = Receiver::start().await;
    let endpoint = format!(
        "[egress]\nallow = [\"127.0.0.0/8\"]\n\n[[webhooks.endpoints]]\nname = \"crm\"\n\
         tenant = \"acme\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\nevents = [\"message.created\"]\n",
        receiver.url("/crm")
    );
    let dir = tempfile::tempdir().unwrap();
    let db = SurrealServer::start(&dir.path().join("db")).await;
    let mut nodes = start_nodes(dir.path(), &db, 2, 0, &endpoint).await;
    // One conversation owned by each node: its first use is there.
    let first = create_session(&nodes[0].base()).await;
    let second = create_session(&nodes[1].base()).await;
    for n in 0..5 {
        post_until_stored(&nodes[0], &first, &format!("a{n}")).await;
        post_until_stored(&nodes[1], &second, &format!("b{n}")).await;
    }
    receiver.wait_for("ten events", |all| all.len() >= 10).await;
    // Anything sent twice while both nodes live would have arrived by now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (contents, requests) = by_conversation(&receiver);
    assert_eq!(requests, 10, "each event once: {contents:?}");
    let counts = [delivered_by(&nodes[0]).await, delivered_by(&nodes[1]).await];
    assert_eq!(counts, [10, 0], "node 1 delivers them all, node 2 none");

    // Node 1 started first and took the role; node 2 delivers once it is gone.
    nodes[0].kill();
    for n in 5..8 {
        post_until_stored(&nodes[1], &second, &format!("b{n}")).await;
    }
    receiver
        .wait_for("b7", |all| {
            all.iter()
                .any(|r| r.delivered() && r.json()["data"]["content"] == "b7")
        })
        .await;
    // The new holder sends again what the dead one sent without recording
    // it (at least once, the same `webhook-id`); each event is there, in order.
    let (contents, _) = by_conversation(&receiver);
    let a: Vec<String> = (0..5).map(|n| format!("a{n}")).collect();
    let b: Vec<String> = (0..8).map(|n| format!("b{n}")).collect();
    assert_eq!(contents.get(&first), Some(&a), "in order: {contents:?}");
    assert_eq!(contents.get(&second), Some(&b), "in order: {contents:?}");
}

/// The next text frame of a socket, as JSON; None after 1 s of silence.
async fn next_frame(ws: &mut crate::support::server::Ws) -> Option<Value> {
    use futures_util::StreamExt;
    loop {
        match tokio::time::timeout(Duration::from_secs(1), ws.next()).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text)))) => {
                return serde_json::from_str(&text).ok();
            }
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

/// A key of tenant `acme`, made through `node`'s admin API (token `adm`).
async fn make_key(node: &Node, body: Value) -> Value {
    reqwest::Client::new()
        .post(format!("{}/admin/tenants/acme/keys", node.base()))
        .bearer_auth("adm")
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_console_on_one_node_follows_conversations_owned_by_another() {
    let dir = tempfile::tempdir().unwrap();
    let db = SurrealServer::start(&dir.path().join("db")).await;
    let nodes = start_nodes(dir.path(), &db, 2, 0, "[auth]\nadmin_token = \"adm\"\n").await;
    let http = reqwest::Client::new();
    let staff = make_key(&nodes[0], json!({"kind": "staff", "name": "Ana"})).await;
    // The key was made on node 1; node 2 hears of it and lets it in.
    let key = staff["key"].as_str().unwrap();
    let started = Instant::now();
    let ticket = loop {
        let answer = http
            .post(format!("{}/console/api/feed", nodes[1].base()))
            .header("X-API-Key", key)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        if answer.status() == 200 || answer.status() == 201 {
            break answer.json::<Value>().await.unwrap();
        }
        assert!(
            [401, 403].contains(&answer.status().as_u16()),
            "refused only until node 2 knows the key: {}",
            answer.status()
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "node 2 never knew the key"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let url = ticket["websocket_url"].as_str().unwrap();
    let (mut feed, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    // Node 1 learns that node 2 has a console as the process group spreads:
    // conversations are created there until the console sees one.
    let started = Instant::now();
    let session = loop {
        create_session(&nodes[0].base()).await;
        if let Some(frame) = next_frame(&mut feed).await {
            assert_eq!(frame["change"], "created", "{frame}");
            break frame["conversation"]["session_id"]
                .as_str()
                .unwrap()
                .to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no frame from node 1"
        );
    };
    post_until_stored(&nodes[0], &session, "hola desde el nodo 1").await;
    let frame = loop {
        let frame = next_frame(&mut feed).await.expect("the message's frame");
        if frame["conversation"]["session_id"] == session.as_str() && frame["change"] == "message" {
            break frame;
        }
    };
    let preview = &frame["conversation"]["last_message"];
    assert_eq!(preview["content"], "hola desde el nodo 1", "{frame}");
}

/// The status of a request that needs a valid API key, through `node`.
async fn listed_with(node: &Node, key: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{}/chat/sessions", node.base()))
        .header("X-API-Key", key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_key_revoked_while_two_nodes_were_apart_is_refused_by_both_once_they_meet_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = SurrealServer::start(&dir.path().join("db")).await;
    let mut links = Vec::new();
    let through_a_link = |port| {
        let link = Link::open(port);
        let address = link.address();
        links.push(link);
        address
    };
    let admin = "[auth]\nadmin_token = \"adm\"\n";
    let nodes = start_nodes_via(dir.path(), &db, 2, 0, admin, through_a_link).await;
    let made = make_key(&nodes[0], json!({"kind": "api"})).await;
    let (key, key_id) = (made["key"].as_str().unwrap(), &made["key_id"]);
    eventually("node 2 knows the new key", || async {
        listed_with(&nodes[1], key).await == 200
    })
    .await;

    links.iter().for_each(Link::cut);
    let revoked = reqwest::Client::new()
        .delete(format!(
            "{}/admin/keys/{}",
            nodes[0].base(),
            key_id.as_str().unwrap()
        ))
        .bearer_auth("adm")
        .send()
        .await
        .unwrap()
        .status();
    assert!(revoked.is_success(), "revoked: {revoked}");
    assert_eq!(
        listed_with(&nodes[0], key).await,
        401,
        "refused at once where revoked"
    );
    // The premise: apart, node 2 cannot hear of it (it reads keys again
    // only when told, or when it meets a peer).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        listed_with(&nodes[1], key).await,
        200,
        "node 2 was not told"
    );

    links.iter().for_each(Link::mend);
    eventually(
        "node 2 refuses the key once the nodes meet again",
        || async { listed_with(&nodes[1], key).await == 401 },
    )
    .await;
}

#[tokio::test]
async fn a_conversation_made_on_one_node_keeps_its_seqs_when_it_moves_there_from_another() {
    let dir = tempfile::tempdir().unwrap();
    let db = SurrealServer::start(&dir.path().join("db")).await;
    let mut nodes = start_nodes(dir.path(), &db, 2, 0, "").await;
    let session = create_session(&nodes[0].base()).await;
    // Node 2 owns it first: the first message reaches it there.
    for content in ["uno", "dos", "tres"] {
        post_until_stored(&nodes[1], &session, content).await;
    }
    nodes[1].kill();
    // Node 1, where it was made, takes it over once node 2's lease is out.
    for content in ["cuatro", "cinco"] {
        post_until_stored(&nodes[0], &session, content).await;
    }
    let stored = nodes[0].history(&session).await;
    let ids = stored_once_in_order(&stored);
    assert_eq!(ids, ["uno", "dos", "tres", "cuatro", "cinco"]);
}

async fn readyz(node: &Node) -> u16 {
    let url = format!("{}/readyz", node.base());
    match reqwest::Client::new()
        .get(url)
        .timeout(DEADLINE)
        .send()
        .await
    {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A writer through one node: posts `w{k}-{n}` one after another, each
/// retried with its `client_msg_id` until acknowledged.
async fn writer(node: Arc<Node>, session: String, k: usize, acked: Arc<Mutex<Vec<String>>>) {
    for n in 0.. {
        let id = format!("w{k}-{n:04}");
        while post(&node, &session, &id, &id).await.0 != 201 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        acked.lock().unwrap().push(id);
    }
}

#[tokio::test]
async fn a_database_restart_under_writers_on_two_nodes_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = SurrealServer::start(&dir.path().join("db")).await;
    let nodes: Vec<Arc<Node>> = start_nodes(dir.path(), &db, 2, 0, "")
        .await
        .into_iter()
        .map(Arc::new)
        .collect();
    let session = create_session(&nodes[0].base()).await;
    let acked: Vec<Arc<Mutex<Vec<String>>>> = (0..2).map(|_| Arc::default()).collect();
    let writers: Vec<_> = (0..2)
        .map(|k| {
            tokio::spawn(writer(
                nodes[k].clone(),
                session.clone(),
                k,
                acked[k].clone(),
            ))
        })
        .collect();
    let count = || acked.iter().map(|a| a.lock().unwrap().len()).sum::<usize>();
    eventually("20 acknowledged", || async { count() >= 20 }).await;

    db.kill();
    for node in &nodes {
        eventually("/readyz 503 while the database is gone", || async {
            readyz(node).await == 503
        })
        .await;
    }
    let before = count();
    db.restart().await;
    for node in &nodes {
        eventually("/readyz 200 once it is back", || async {
            readyz(node).await == 200
        })
        .await;
    }
    eventually("20 more acknowledged after the restart", || async {
        count() >= before + 20
    })
    .await;
    for writer in writers {
        writer.abort();
    }

    let stored = nodes[1].history(&session).await;
    let ids = stored_once_in_order(&stored);
    for acked in &acked {
        let acked = acked.lock().unwrap();
        let in_store: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| acked.iter().any(|a| a == id))
            .collect();
        assert_eq!(
            in_store, *acked,
            "every acknowledged message stored, in its writer's order"
        );
    }
}
