//! Slow and hostile readers: 1,000 sockets on one conversation of the real
//! binary, 100 of which never read (a 2 KB receive buffer, never polled).
//! While answers stream, the server's resident memory (VmRSS from `/proc`)
//! stays under its stated bound, the 100 are closed as slow consumers, and
//! the other 900 receive every answer whole. Bounded: a fixed number of
//! answers, each expectation under a deadline.
//!
//! A reader keeps up only while the machine gives it, and the server's
//! writers, time: one that falls behind by a full queue is rightly closed.
//! The answers are small (about 11 KB each, with the question's own frame)
//! and slow (a word every 50 ms), and the queue (48 KB) holds about four,
//! besides the kernel's buffers: seconds of slack. The ones that never read
//! overflow whatever the pace: they can hold about 85 KB of the 130 KB.
//!
//! This test found that every join and leave sent every socket a
//! `presence` frame: its 1,000 joins alone made some 500,000 frames, and
//! as the first readers finished and left, the others were sent hundreds
//! of frames at once and dozens were closed one answer short. Joins and
//! leaves are now gathered into one frame per 100 ms.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::binary::{create_session, free_port, kill, start, write_config};
use crate::support::crowd::uncrowded;
use crate::support::server::*;

const SOCKETS: usize = 1_000;
const NEVER_READ: usize = 100;
const ANSWERS: usize = 12;
/// `limits.outbound_queue_bytes` for this run: about four answers.
const QUEUE_BYTES: u64 = 48 * 1024;
/// `server.send_buffer_bytes`: what the kernel may hold per socket.
const SEND_BUFFER: u32 = 16 * 1024;
/// What the process may add to its resident memory beyond the queues.
const CONSTANT_BYTES: u64 = 48 << 20;

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let settings = format!(
        r#"
[server]
send_buffer_bytes = {SEND_BUFFER}

# Keepalive would close a silent reader too; here the queue limit must.
[websocket]
max_per_address = 5000
ping_interval_ms = 600000

[limits]
outbound_queue_frames = 128
outbound_queue_bytes = {QUEUE_BYTES}

[agents.echo]
word_delay_ms = 50
"#
    );
    write_config(dir, &settings)
}

/// Sixteen words of two hundred bytes each: an answer of few, large chunks.
fn question(number: usize) -> String {
    (0..16)
        .map(|word| format!("{number:02}{word:02}{}", "x".repeat(196)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

async fn open(port: u16, session: &str, receive_buffer: Option<u32>) -> Ws {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(bytes) = receive_buffer {
        socket.set_recv_buffer_size(bytes).unwrap();
    }
    let stream = socket
        .connect(format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap();
    let mut request = format!("ws://127.0.0.1:{port}/chat/ws/{session}")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("x-api-key", KEY.parse().unwrap());
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap()
        .0
}

/// A reading subscriber: the `done` contents it saw, and how it ended early
/// if it did (a close frame, an error, or silence past the deadline).
async fn read_answers(mut ws: Ws) -> (Vec<String>, Option<String>) {
    let mut answers = Vec::new();
    while answers.len() < ANSWERS {
        let next = tokio::time::timeout(DEADLINE * 6, ws.next()).await;
        match next {
            Ok(Some(Ok(Message::Text(text)))) if text.contains(r#""type":"done""#) => {
                let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
                answers.push(frame["content"].as_str().unwrap().to_owned());
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                return (answers, Some(format!("closed: {frame:?}")));
            }
            Ok(Some(Ok(_))) => {}
            Ok(other) => return (answers, Some(format!("ended: {other:?}"))),
            Err(_) => return (answers, Some("silent past the deadline".into())),
        }
    }
    (answers, None)
}

enum Silent {
    /// Closed with 1008 (after whatever the kernel still held).
    Closed,
    /// Never closed, and every answer is there, whole.
    Buffered,
}

/// Reads a socket that never read until now: a 1008 close, or every answer.
async fn silent_outcome(mut ws: Ws) -> Silent {
    let mut answers = 0;
    loop {
        match tokio::time::timeout(DEADLINE, ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) if u16::from(frame.code) == 1008 => {
                return Silent::Closed;
            }
            Ok(Some(Ok(Message::Text(text)))) if text.contains(r#""type":"done""#) => {
                answers += 1;
                if answers == ANSWERS {
                    return Silent::Buffered;
                }
            }
            Ok(Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_)))) => {}
            other => panic!("a silent reader ends with a 1008 close or every answer: {other:?}"),
        }
    }
}

// Two workers: against the other tests' processes, two runnable threads
// get this test's readers a larger share of the two cores than one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_that_never_read_are_closed_and_memory_stays_bounded() {
    // 900 readers in this test's one thread must keep up with 64-frame
    // queues; the one time a reader fell behind was in a full run beside
    // the cluster tests.
    let _alone = uncrowded().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let port = free_port();
    let mut child = start(&config, &dir.path().join("data"), port).await;
    let base = format!("http://127.0.0.1:{port}");
    let session = create_session(&base).await;

    let mut silent = Vec::new();
    for _ in 0..NEVER_READ {
        silent.push(open(port, &session, Some(2048)).await);
    }
    let mut readers = Vec::new();
    for _ in 0..SOCKETS - NEVER_READ {
        let ws = open(port, &session, None).await;
        readers.push(tokio::spawn(read_answers(ws)));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = rss_bytes(child.id());

    // The peak resident memory while the answers stream, sampled every 50 ms.
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampling = {
        let (pid, peak) = (child.id(), peak.clone());
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_bytes(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let http = reqwest::Client::new();
    for number in 0..ANSWERS {
        let status = http
            .post(format!("{base}/chat/{session}/messages"))
            .header("X-API-Key", KEY)
            .json(&json!({"role": "user", "content": question(number)}))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 201);
    }
    let expected: Vec<String> = (0..ANSWERS)
        .map(|number| tertulia_actors::runtime::EchoAgent::reply_to(&question(number)))
        .collect();
    let mut ended_early = Vec::new();
    for reader in readers {
        let (answers, ended) = reader.await.unwrap();
        match ended {
            Some(how) => ended_early.push(format!("{how} after {} answers", answers.len())),
            None => assert_eq!(answers, expected, "every answer, whole, in order"),
        }
    }
    assert!(
        ended_early.is_empty(),
        "a reading subscriber is never closed, yet {} of {} were: {:?}",
        ended_early.len(),
        SOCKETS - NEVER_READ,
        &ended_early[..ended_early.len().min(3)]
    );
    sampling.abort();
    let peak = peak.load(Ordering::Relaxed).max(rss_bytes(child.id()));

    // The ones that never read were closed as slow, or (if the kernel's
    // buffers held everything) have every answer waiting, whole.
    let (mut slow_closed, mut buffered) = (0, 0);
    for ws in silent {
        match silent_outcome(ws).await {
            Silent::Closed => slow_closed += 1,
            Silent::Buffered => buffered += 1,
        }
    }
    let bound = NEVER_READ as u64 * QUEUE_BYTES + CONSTANT_BYTES;
    println!(
        "slow readers: {SOCKETS} sockets, {NEVER_READ} never read; {slow_closed} closed with 1008 \
         ({buffered} held every answer in kernel buffers), \
         all {ANSWERS} answers whole at the {} readers; RSS {} MB \
         before the answers, peak growth {} MB (bound {} MB = {NEVER_READ} x {} KB queue + {} MB)",
        SOCKETS - NEVER_READ,
        baseline >> 20,
        peak.saturating_sub(baseline) >> 20,
        bound >> 20,
        QUEUE_BYTES >> 10,
        CONSTANT_BYTES >> 20,
    );
    assert_eq!(
        slow_closed, NEVER_READ,
        "every reader that never read is closed as slow"
    );
    assert!(
        peak.saturating_sub(baseline) <= bound,
        "resident memory stays bounded"
    );
    kill(&mut child);
}
