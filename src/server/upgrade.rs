//! The WebSocket handshake's second half: an upgraded HTTP connection
//! becomes a tungstenite socket with our limits (tungstenite's read buffer,
//! which warp 0.4 does not let us set, and the message and frame sizes).

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::config::WebSocketSettings;

/// A server-side socket on a connection hyper has upgraded.
pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

pub async fn websocket(upgraded: Upgraded, settings: &WebSocketSettings) -> Socket {
    let config = WebSocketConfig::default()
        .read_buffer_size(settings.read_buffer_bytes)
        .max_message_size(Some(settings.max_message_bytes))
        .max_frame_size(Some(settings.max_message_bytes));
    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await
}
