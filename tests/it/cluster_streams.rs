//! Generic Durable Streams on two nodes: a stream has one owner, and every
//! request made through the other node reaches it. A long-poll on the node
//! that does not own the stream is woken by an append made through either
//! node; catch-up reads, a producer's retried append, a fork owned by the
//! other node, a closed stream and deletes behave as on one node; and the
//! protocol's conformance suite passes through a load balancer that sends
//! each connection to the next of two nodes. Real processes on one
//! SurrealDB server (`support/cluster.rs`).

use std::time::Duration;

use reqwest::Method;

use crate::support::cluster::{Node, start_nodes};
use crate::support::link::Balancer;
use crate::support::server::{DEADLINE, KEY};
use crate::support::surreal::SurrealServer;

fn request(node: &Node, method: Method, path: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .request(method, format!("{}/ds/acme/v1/stream/{path}", node.base()))
        .header("X-API-Key", KEY)
        .timeout(DEADLINE * 3)
}

async fn append(node: &Node, path: &str, body: &str) -> reqwest::Response {
    request(node, Method::POST, path)
        .header("content-type", "text/plain")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

/// A catch-up read from `offset`: status, next offset, body.
async fn read(node: &Node, path: &str, offset: &str) -> (u16, String, String) {
    let response = request(node, Method::GET, path)
        .query(&[("offset", offset)])
        .send()
        .await
        .unwrap();
    let next = header(&response, "stream-next-offset");
    let status = response.status().as_u16();
    (status, next, response.text().await.unwrap())
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_stream_is_written_and_read_alike_through_either_node() {
    let dir = tempfile::tempdir().unwrap();
    let db = SurrealServer::start(&dir.path().join("db")).await;
    let nodes = start_nodes(dir.path(), &db, 2, 0, "").await;
    let (owner, other) = (&nodes[0], &nodes[1]);
    let created = request(owner, Method::PUT, "notes")
        .header("content-type", "text/plain")
        .body("a")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let tail = header(&created, "stream-next-offset");

    // A live read on the other node, woken by appends through both.
    for (through, body) in [(other, "b"), (owner, "c")] {
        let from = read(other, "notes", "-1").await.1;
        let waiting = request(other, Method::GET, "notes")
            .query(&[("offset", from.as_str()), ("live", "long-poll")])
            .send();
        let (answer, appended) = tokio::join!(waiting, async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            append(through, "notes", body).await
        });
        assert_eq!(appended.status(), 204, "appended through either node");
        let answer = answer.unwrap();
        assert_eq!(answer.status(), 200, "the long-poll is woken");
        assert_eq!(answer.text().await.unwrap(), body);
    }
    for node in [owner, other] {
        let (status, _, body) = read(node, "notes", "-1").await;
        assert_eq!(
            (status, body.as_str()),
            (200, "abc"),
            "the same stream on both"
        );
    }
    let (_, _, after_create) = read(other, "notes", &tail).await;
    assert_eq!(after_create, "bc", "read from an offset the owner gave");

    producer_retries_through_the_other_node(owner, other).await;
    forks_and_deletes_across_nodes(owner, other).await;
}

/// A producer's append retried through the other node is a duplicate; a
/// gap in its sequence is refused with the seq expected.
async fn producer_retries_through_the_other_node(owner: &Node, other: &Node) {
    let produce = |node: &Node, seq: u64| {
        request(node, Method::POST, "notes")
            .header("content-type", "text/plain")
            .header("producer-id", "svc-1")
            .header("producer-epoch", "0")
            .header("producer-seq", seq.to_string())
            .body(format!("p{seq}"))
            .send()
    };
    assert_eq!(produce(owner, 0).await.unwrap().status(), 200);
    let retried = produce(other, 0).await.unwrap();
    assert_eq!(
        retried.status(),
        204,
        "a duplicate is answered, not appended"
    );
    let gap = produce(other, 5).await.unwrap();
    assert_eq!(
        (gap.status().as_u16(), header(&gap, "producer-expected-seq")),
        (409, "1".into())
    );
    assert_eq!(read(other, "notes", "-1").await.2, "abcp0");
}

/// A fork made through the other node (which then owns it) of a stream
/// the first owns; reads through both; a closed stream refuses appends
/// through either; deletes through the node that owns neither.
async fn forks_and_deletes_across_nodes(owner: &Node, other: &Node) {
    let forked = request(other, Method::PUT, "branch")
        .header("content-type", "text/plain")
        .header("stream-forked-from", "/v1/stream/notes")
        .send()
        .await
        .unwrap();
    assert_eq!(forked.status(), 201);
    assert_eq!(append(owner, "branch", "+").await.status(), 204);
    assert_eq!(read(owner, "branch", "-1").await.2, "abcp0+");
    assert_eq!(
        read(other, "notes", "-1").await.2,
        "abcp0",
        "the source as it was"
    );

    let closing = request(other, Method::POST, "notes")
        .header("stream-closed", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(closing.status(), 204);
    for node in [owner, other] {
        assert_eq!(append(node, "notes", "late").await.status(), 409, "closed");
    }

    for (node, path) in [(owner, "branch"), (other, "notes")] {
        let deleted = request(node, Method::DELETE, path).send().await.unwrap();
        assert_eq!(deleted.status(), 204, "{path} deleted");
    }
    for node in [owner, other] {
        assert_eq!(read(node, "notes", "-1").await.0, 404);
        assert_eq!(read(node, "branch", "-1").await.0, 404);
    }
}

/// How many stream calls `node` served for the other, from its `/metrics`.
async fn stream_calls_served(node: &Node) -> u64 {
    let url = format!("{}/metrics", node.base());
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    text.lines()
        .find(|line| line.starts_with("tertulia_stream_calls_served_total"))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_protocols_conformance_suite_passes_through_a_balancer_over_two_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let db = SurrealServer::start(&dir.path().join("db")).await;
    let open = "[tenants.acme.streams]\nanonymous = true\n";
    let nodes = start_nodes(dir.path(), &db, 2, 0, open).await;
    let balancer = Balancer::open(nodes.iter().map(|node| node.port).collect());
    let base = format!("{}/ds/acme", balancer.base());
    let outcome = crate::support::conformance::run(dir.path(), base).await;
    let mut served = Vec::new();
    for node in &nodes {
        served.push(stream_calls_served(node).await);
    }
    println!("stream calls each node served for the other: {served:?}");
    outcome.all_passed("through two nodes");
    assert!(
        served.iter().all(|&count| count > 0),
        "each node served the other's calls: {served:?}"
    );
}
