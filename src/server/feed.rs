//! The console feed's socket: after the route has checked the staff
//! ticket, the upgrade, then every frame of the tenant's feed until the
//! console goes away. A console sends nothing but pongs and its close; one
//! that fell behind is told to reload.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use tertulia_actors::model::protocol::{Frame, ServerFrame};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::upgrade::websocket;
use crate::config::WebSocketSettings;

/// Upgrades the connection and streams `feed` to it, in its own task.
pub fn serve(on_upgrade: OnUpgrade, settings: WebSocketSettings, feed: broadcast::Receiver<Frame>) {
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let socket = websocket(upgraded, &settings).await;
        let ping_every = Duration::from_millis(settings.ping_interval_ms.max(1));
        serve_feed(socket, feed, ping_every).await;
    });
}

/// Writes every feed frame until the console goes away; it sends nothing
/// but pongs and its close. A console that fell behind is told to reload.
async fn serve_feed<S>(
    socket: WebSocketStream<S>,
    mut feed: broadcast::Receiver<Frame>,
    ping_every: Duration,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = socket.split();
    let mut ping = tokio::time::interval(ping_every);
    ping.tick().await;
    loop {
        let sent = tokio::select! {
            frame = feed.recv() => match frame {
                Ok(frame) => match Utf8Bytes::try_from(frame.bytes().clone()) {
                    Ok(text) => sink.send(Message::Text(text)).await,
                    Err(_) => continue,
                },
                Err(RecvError::Lagged(missed)) => {
                    let frame = ServerFrame::error(
                        "feed_lagged",
                        format!("{missed} changes were missed; reload the list"),
                    );
                    sink.send(Message::Text(frame.encode().as_str().into())).await
                }
                Err(RecvError::Closed) => return,
            },
            read = stream.next() => match read {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => Ok(()),
            },
            _ = ping.tick() => sink.send(Message::Ping(Default::default())).await,
        };
        if sent.is_err() {
            return;
        }
    }
}
