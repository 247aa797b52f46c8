//! `WS /chat/ws/{session_id}` and `WS /api/webchat/stream`: the socket side
//! of a `Connection`. Both speak the same frames; a webchat socket also
//! stamps its visitor's messages with their origin (address, user agent, locale).
//!
//! warp routes and authenticates the request, but the upgrade is done here
//! with tokio-tungstenite, because warp 0.4 neither lets us set tungstenite's
//! read buffer (128 KiB per socket by default) nor send shared bytes (its
//! `Message::text` copies each frame per socket). The server loop puts hyper's
//! upgrade handle in the request as an [`UpgradeSlot`].
//!
//! Each socket gets a reader (this task: parses frames, hands commands to the
//! `Connection` actor, answers bad frames with an `error` frame) and a writer
//! (a task: drains the bounded outbound queue, many frames per flush, pings a
//! quiet peer). If the session restarts under it, the writer re-attaches from
//! the last `seq` it delivered, so nothing is lost or doubled.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use ractor::ActorRef;
use tertulia_actors::model::protocol::{Frame, ServerFrame, parse_client_frame};
use tertulia_actors::model::{ClientCommand, Origin, Participant, Role, Scope, SessionId};
use tertulia_actors::runtime::Attached;
use tertulia_actors::runtime::ConnectionMsg;
use tertulia_actors::runtime::{CloseReason, OutboundReceiver, Outgoing};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use warp::Reply;

use super::upgrade::{Socket, websocket};
use crate::app::AppState;
use crate::http::error::ApiError;
use crate::http::{UpgradeSlot, switching_protocols};

/// Most frames written per flush: enough to batch a burst, small enough to
/// keep one socket from monopolising its task.
const MAX_FRAMES_PER_FLUSH: usize = 256;
/// Attempts to re-attach to a session that restarted, with a growing pause.
const REATTACH_ATTEMPTS: u32 = 8;

/// An authorised socket, ready to attach and upgrade.
pub struct SocketRequest {
    pub scope: Scope,
    pub session: SessionId,
    pub after_seq: Option<u64>,
    /// The visitor's language, for the greeting.
    pub locale: Option<String>,
    pub websocket_key: String,
    pub slot: UpgradeSlot,
    /// Stamped on every message the socket sends (webchat).
    pub origin: Option<Origin>,
    pub participant: Participant,
    /// This socket counted against its address's limit, while it is open.
    pub permit: Option<crate::auth::limits::SocketPermit>,
}

/// Attaches the socket to its session, then answers 101 and serves it.
pub async fn accept(app: AppState, request: SocketRequest) -> warp::reply::Response {
    let SocketRequest {
        scope,
        session,
        after_seq,
        locale,
        websocket_key,
        slot,
        origin,
        participant,
        permit,
    } = request;
    // Attach before answering 101, so a missing session is a plain 404.
    let attached = match app
        .runtime
        .connect(&scope, session, after_seq, participant.clone(), locale)
        .await
    {
        Ok(attached) => attached,
        Err(error) => return ApiError::from(error).into_response(),
    };
    let Some(on_upgrade) = slot.take() else {
        attached.connection.stop(None);
        return ApiError::NotWebSocket.into_response();
    };
    let settings = app.config.websocket.clone();
    // The socket is served in a task of its own, outside the request: it
    // keeps the id of the request that opened it for its messages.
    let request_id = crate::http::request_id();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let socket = websocket(upgraded, &settings).await;
                let peer = Peer {
                    scope,
                    session,
                    origin,
                    participant,
                    request_id,
                };
                serve_socket(app, peer, attached, socket).await;
                drop(permit);
            }
            Err(error) => {
                tracing::debug!(%error, "WebSocket upgrade failed");
                attached.connection.stop(None);
            }
        }
    });
    switching_protocols(&websocket_key)
}

/// Milliseconds since the socket opened at which the peer was last heard.
struct Heard {
    opened: Instant,
    at_ms: AtomicU64,
}

impl Heard {
    fn now(&self) {
        self.at_ms
            .store(self.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        let at = Duration::from_millis(self.at_ms.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(at)
    }
}

/// Who is on a socket and which conversation it is attached to.
#[derive(Clone)]
struct Peer {
    scope: Scope,
    session: SessionId,
    /// Stamped on every message the socket sends (webchat).
    origin: Option<Origin>,
    participant: Participant,
    /// The request that opened the socket.
    request_id: Option<String>,
}

async fn serve_socket(app: AppState, peer: Peer, attached: Attached, socket: Socket) {
    let _open = OpenSocket::count(&peer.scope.tenant.0);
    let (sink, stream) = socket.split();
    let heard = Arc::new(Heard {
        opened: Instant::now(),
        at_ms: AtomicU64::new(0),
    });
    let (connection_tx, connection_rx) = watch::channel(attached.connection.clone());
    // What the edge itself answers with (bad input); bounded, dropped when full.
    let (local_tx, local_rx) = mpsc::channel::<Local>(32);
    let writer = Writer {
        app: app.clone(),
        peer: peer.clone(),
        sink,
        outbound: attached.outbound,
        last_seq: attached.last_seq,
        local: local_rx,
        connection: connection_tx,
        heard: heard.clone(),
    };
    let mut writer = tokio::spawn(writer.run());
    let reader = read_frames(&app, stream, &connection_rx, &local_tx, &heard, &peer);
    tokio::pin!(reader);
    tokio::select! {
        ended = &mut reader => match ended {
            Some(reason) => {
                // The reader refused the peer's input: the writer says why and closes.
                let _ = local_tx.send(Local::Close(reason)).await;
                let _ = tokio::time::timeout(Duration::from_secs(2), &mut writer).await;
            }
            None => writer.abort(),
        },
        _ = &mut writer => {
            // The writer sent a close frame; let the reader take the peer's reply.
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut reader).await;
        }
    }
    connection_rx.borrow().stop(None);
}

/// Counts a socket as open for as long as it is held, however its task ends.
struct OpenSocket(String);

impl OpenSocket {
    fn count(tenant: &str) -> Self {
        tertulia_actors::metrics::socket_opened(tenant);
        OpenSocket(tenant.to_owned())
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        tertulia_actors::metrics::socket_closed(&self.0);
    }
}

/// What the reader asks the writer to send.
enum Local {
    Frame(Frame),
    Close(CloseReason),
}

/// Reads until the peer closes or breaks the protocol; returns the close
/// reason to send when it is the peer's input that ended the socket.
async fn read_frames(
    app: &AppState,
    mut stream: SplitStream<Socket>,
    connection: &watch::Receiver<ActorRef<ConnectionMsg>>,
    local: &mpsc::Sender<Local>,
    heard: &Heard,
    peer: &Peer,
) -> Option<CloseReason> {
    let max_content = app.runtime.config().limits.max_content_bytes;
    while let Some(message) = stream.next().await {
        heard.now();
        let reply = match message {
            Ok(Message::Text(text)) => match parse_client_frame(&text, max_content) {
                Ok(mut command) => {
                    if let ClientCommand::Message(message) = &mut command {
                        message.origin = peer.origin.clone().map(Box::new);
                        message.request_id = peer.request_id.clone();
                        // Staff answer the visitor in their own name, and
                        // the AI does not answer them.
                        if let Participant::Staff { name } = &peer.participant {
                            message.role = Role::Assistant;
                            message.respond = false;
                            message.author = Some(name.clone());
                        }
                    }
                    let current = connection.borrow().clone();
                    match current.cast(ConnectionMsg::Client(command)) {
                        Ok(()) => None,
                        Err(_) => Some(ServerFrame::error(
                            "unavailable",
                            "the conversation is restarting; send that again in a moment",
                        )),
                    }
                }
                Err(error) => Some(ServerFrame::error(error.code, error.message)),
            },
            Ok(Message::Binary(_)) => Some(ServerFrame::error(
                "binary_not_supported",
                "frames are JSON text; binary frames are not accepted",
            )),
            Ok(Message::Close(_)) => return None,
            Ok(_) => None,
            Err(tokio_tungstenite::tungstenite::Error::Capacity(error)) => {
                return Some(CloseReason {
                    code: 1009,
                    reason: format!("message too big: {error}"),
                });
            }
            Err(error) => {
                tracing::debug!(%error, "socket read ended");
                return None;
            }
        };
        if let Some(frame) = reply {
            let _ = local.try_send(Local::Frame(frame.encode()));
        }
    }
    None
}

struct Writer {
    app: AppState,
    peer: Peer,
    sink: SplitSink<Socket, Message>,
    outbound: OutboundReceiver,
    /// The highest `seq` delivered to this socket: where a re-attach resumes.
    last_seq: u64,
    local: mpsc::Receiver<Local>,
    connection: watch::Sender<ActorRef<ConnectionMsg>>,
    heard: Arc<Heard>,
}

impl Writer {
    async fn run(mut self) {
        let ping_every = Duration::from_millis(self.app.config.websocket.ping_interval_ms.max(1));
        let dead_after =
            ping_every + Duration::from_millis(self.app.config.websocket.pong_timeout_ms);
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        loop {
            let step = tokio::select! {
                outgoing = self.outbound.next() => match outgoing {
                    Outgoing::Frame(frame) => self.write_batch(frame).await,
                    Outgoing::Close(reason) => {
                        self.close(reason).await;
                        return;
                    }
                    Outgoing::Detached => self.reattach().await,
                },
                Some(local) = self.local.recv() => match local {
                    Local::Frame(frame) => self.write_one(frame).await,
                    Local::Close(reason) => {
                        self.close(reason).await;
                        return;
                    }
                },
                _ = ping.tick() => {
                    if self.heard.silent_for() > dead_after {
                        self.close(CloseReason::idle_timeout()).await;
                        return;
                    }
                    self.sink.send(Message::Ping(Default::default())).await.map_err(|_| ())
                }
            };
            if step.is_err() {
                return;
            }
        }
    }

    /// Writes this frame and everything else already queued, then flushes once.
    async fn write_batch(&mut self, first: Frame) -> Result<(), ()> {
        self.feed(first).await?;
        for _ in 1..MAX_FRAMES_PER_FLUSH {
            match self.outbound.try_next_frame() {
                Some(frame) => self.feed(frame).await?,
                None => break,
            }
        }
        self.sink.flush().await.map_err(|_| ())
    }

    async fn write_one(&mut self, frame: Frame) -> Result<(), ()> {
        self.feed(frame).await?;
        self.sink.flush().await.map_err(|_| ())
    }

    async fn feed(&mut self, frame: Frame) -> Result<(), ()> {
        if let Some(seq) = frame.seq {
            self.last_seq = self.last_seq.max(seq);
        }
        let text = Utf8Bytes::try_from(frame.bytes().clone()).map_err(|_| ())?;
        self.sink.feed(Message::Text(text)).await.map_err(|_| ())
    }

    async fn close(&mut self, reason: CloseReason) {
        let frame = CloseFrame {
            code: CloseCode::from(reason.code),
            reason: Utf8Bytes::from(reason.reason),
        };
        let _ = self.sink.send(Message::Close(Some(frame))).await;
    }

    /// The session stopped without closing this socket (it crashed): tell the
    /// client, then attach to its restarted self from the last delivered `seq`.
    async fn reattach(&mut self) -> Result<(), ()> {
        let notice = ServerFrame::error(
            "session_restarted",
            "the conversation restarted after an internal error; anything missed follows",
        );
        self.write_one(notice.encode()).await?;
        for attempt in 0..REATTACH_ATTEMPTS {
            tokio::time::sleep(Duration::from_millis(25 << attempt.min(6))).await;
            match self
                .app
                .runtime
                .reattach(
                    &self.peer.scope,
                    self.peer.session,
                    self.last_seq,
                    self.peer.participant.clone(),
                )
                .await
            {
                Ok(attached) => {
                    self.outbound = attached.outbound;
                    let _ = self.connection.send(attached.connection);
                    return Ok(());
                }
                Err(tertulia_actors::Error::ShuttingDown) => break,
                Err(tertulia_actors::Error::SessionNotFound { .. }) => {
                    self.close(CloseReason::session_deleted()).await;
                    return Err(());
                }
                Err(error) => tracing::warn!(%error, attempt, "re-attach failed"),
            }
        }
        self.close(CloseReason {
            code: 1011,
            reason: "the conversation is unavailable; reconnect later".into(),
        })
        .await;
        Err(())
    }
}
