//! What the live reads of every stream share: the protocol's cursor, and
//! the SSE events (`data`, then `control` with the next offset).

use bytes::Bytes;
use serde_json::json;

/// The protocol's cursor: 20-second intervals since 2024-10-09T00:00:00Z,
/// always past the client's own (with jitter), so caches never cycle.
pub fn cursor(client: Option<&String>) -> u64 {
    const EPOCH: u64 = 1_728_432_000;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let interval = now.saturating_sub(EPOCH) / 20;
    match client.and_then(|cursor| cursor.parse::<u64>().ok()) {
        Some(client) if client >= interval => client + 1 + rand_jitter(),
        _ => interval,
    }
}

/// 0 to 179 intervals (up to an hour).
fn rand_jitter() -> u64 {
    u64::from(uuid::Uuid::now_v7().as_bytes()[15]) % 180
}

/// A `data` event: each line of the text its own `data:` line. CR, LF and
/// CRLF all end a line in SSE, so all three are split on here: a payload
/// cannot end the event early or forge another one.
pub fn data_event(text: &str) -> Bytes {
    let text = text.replace("\r\n", "\n");
    let mut event = String::from("event: data\n");
    for line in text.split(['\n', '\r']) {
        // One space after the colon is dropped by readers: keep a leading one.
        event.push_str(if line.starts_with(' ') {
            "data: "
        } else {
            "data:"
        });
        event.push_str(line);
        event.push('\n');
    }
    event.push('\n');
    Bytes::from(event)
}

/// A `control` event: the next offset, and whether the reader is up to
/// date, at a closed stream's end (`end`: up to date, closed).
pub fn control_event(next: &str, end: (bool, bool), cursor: u64) -> Bytes {
    let mut control = json!({"streamNextOffset": next});
    match end {
        // The end: no cursor, nothing more will come to cache.
        (true, true) => {
            control["upToDate"] = json!(true);
            control["streamClosed"] = json!(true);
        }
        (true, false) => {
            control["upToDate"] = json!(true);
            control["streamCursor"] = json!(cursor.to_string());
        }
        _ => control["streamCursor"] = json!(cursor.to_string()),
    }
    Bytes::from(format!("event: control\ndata:{control}\n\n"))
}
