//! The accept loop. We bind the listener ourselves (socket2, so the accept
//! backlog is ours to set: tokio's 128 gave a 1 s connect p99 under 256
//! simultaneous handshakes) and serve each connection with hyper, warp's
//! filters as the service. Serving it ourselves is also what lets `ws.rs` do
//! its own WebSocket upgrade: each request carries its upgrade handle and its
//! peer address as extensions.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_service::Service;
use warp::{Filter, Reply};

use crate::ws::UpgradeSlot;

/// The client's address, as the socket reports it.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// How long in-flight HTTP requests get to finish once we stop accepting.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `addr` with `SO_REUSEADDR` and an accept backlog of `backlog`.
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.clamp(1, i32::MAX as u32) as i32)?;
    TcpListener::from_std(socket.into())
}

/// Serves `filter` on `listener` until `stop` turns true, then stops accepting
/// and gives in-flight requests `DRAIN_TIMEOUT` to finish. Upgraded sockets are
/// not waited for here: the runtime closes them with a reason.
pub async fn serve<F>(listener: TcpListener, filter: F, mut stop: watch::Receiver<bool>)
where
    F: Filter<Extract = (warp::reply::Response,), Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
{
    let service = warp::service(filter);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let handler = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(PeerAddr(peer));
            if request.headers().contains_key(hyper::header::UPGRADE) {
                let upgrade = hyper::upgrade::on(&mut request);
                request.extensions_mut().insert(UpgradeSlot::new(upgrade));
            }
            let mut service = service.clone();
            async move { service.call(request).await.map(Reply::into_response) }
        });
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), handler);
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some HTTP requests were still running at shutdown");
    }
}
