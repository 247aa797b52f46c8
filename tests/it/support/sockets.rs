//! WebSocket requests to the server under test, and what a refused upgrade
//! must look like.

use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::server::*;

/// A socket request for `session` that carries `key` in `X-API-Key`.
pub fn socket_request(
    server: &TestServer,
    session: &str,
    key: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("ws://{}/chat/ws/{session}", server.server.addr);
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("x-api-key", key.parse().unwrap());
    request
}

pub fn assert_http_status(error: tokio_tungstenite::tungstenite::Error, expected: u16) {
    match error {
        tokio_tungstenite::tungstenite::Error::Http(response) => {
            assert_eq!(response.status().as_u16(), expected);
            let body: Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            assert!(body["code"].is_string(), "{body}");
        }
        other => panic!("expected an HTTP {expected}, got {other}"),
    }
}

/// A request for `/api/webchat/stream?{query}` with these headers.
pub fn stream_request(
    server: &TestServer,
    query: &str,
    headers: &[(&'static str, &str)],
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let url = format!("ws://{}/api/webchat/stream?{query}", server.server.addr);
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    request
}
