//! Slow clients cannot hold connections: many connections that send a
//! request line and one header, then nothing, are closed once
//! `server.header_timeout_ms` passes (a stalled WebSocket handshake too),
//! while a real client is served all along; a body that stalls is refused
//! with 408 once `server.body_timeout_ms` passes.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::server::*;

/// Half-open connections the test holds (the file limit bounds the count).
const STALLED: usize = 300;

/// Opens a connection and sends the start of a request head, never its end.
async fn stall(server: &TestServer, head: &str) -> TcpStream {
    let mut stream = TcpStream::connect(server.server.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Whether the server closed the connection within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buffer = [0u8; 512];
    match tokio::time::timeout(within, stream.read(&mut buffer)).await {
        // A 408 (hyper answers a timed-out head with one) or a plain close.
        Ok(Ok(_) | Err(_)) => true,
        Err(_) => false,
    }
}

#[tokio::test]
async fn connections_that_never_finish_their_headers_are_closed_and_others_are_served() {
    let mut config = config();
    config.server.header_timeout_ms = 1_000;
    let server = TestServer::start(config).await;
    let mut stalled = Vec::new();
    for index in 0..STALLED {
        let head = match index % 2 {
            0 => "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_owned(),
            _ => format!(
                "GET /chat/ws/{index} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            ),
        };
        stalled.push(stall(&server, &head).await);
    }
    // Not closed before its time…
    assert!(
        !closed_within(&mut stalled[0], Duration::from_millis(300)).await,
        "closed before the timeout"
    );
    // …and while they hang, a real client is served.
    let (status, body) = server.get("/healthz", None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));

    let mut closed = 0;
    for stream in &mut stalled {
        if closed_within(stream, Duration::from_secs(5)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, STALLED, "every stalled connection is closed");
    let (status, _) = server.get("/healthz", None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_connection_that_sends_its_head_in_time_is_kept() {
    let mut config = config();
    config.server.header_timeout_ms = 1_000;
    let server = TestServer::start(config).await;
    let mut stream = stall(&server, "GET /healthz HTTP/1.1\r\n").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(b"Host: 127.0.0.1\r\n\r\n").await.unwrap();
    let mut answer = vec![0u8; 1024];
    let read = stream.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_timeout_of_zero_is_refused() {
    for field in ["header", "body"] {
        let mut config = config();
        match field {
            "header" => config.server.header_timeout_ms = 0,
            _ => config.server.body_timeout_ms = 0,
        }
        let refused = tertulia::start(config, Default::default())
            .await
            .err()
            .unwrap();
        assert!(refused.to_string().contains("timeout_ms"), "{refused}");
    }
}

#[tokio::test]
async fn a_body_that_stalls_is_refused_with_408_and_nothing_is_stored() {
    let mut config = config();
    config.server.body_timeout_ms = 500;
    let server = TestServer::start(config).await;
    let before = server.get("/chat/sessions", Some(KEY)).await.1["count"].clone();
    let head = format!(
        "POST /chat/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"context\": {{"
    );
    let mut stream = stall(&server, &head).await;
    let mut answer = vec![0u8; 2048];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("answered before the test gives up")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"body_timeout\""), "{answer}");
    let after = server.get("/chat/sessions", Some(KEY)).await.1["count"].clone();
    assert_eq!(before, after, "nothing was created");
}
