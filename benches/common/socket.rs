//! A bench client's WebSocket: connected with an API key, its greeting
//! read, and a small read buffer. Benches that need it include this file
//! by path.

use std::time::Duration;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects to `url` with `key` and reads the greeting (or, for a baseline
/// server, its hello).
pub async fn connect(url: &str, key: &str) -> Socket {
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("x-api-key", key.parse().unwrap());
    // tungstenite zero-fills its read buffer up to capacity on every read; at
    // the default 128 KiB that memset was 30 % of the fan-out bench's CPU,
    // all of it on the client side. Browsers pay nothing like it, so neither
    // do the benches.
    let config =
        tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
    let (mut socket, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
        .await
        .expect("socket connects");
    let _ = tokio::time::timeout(Duration::from_secs(10), socket.next()).await;
    socket
}
