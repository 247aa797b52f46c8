//! The accept loop. We bind the listener ourselves (socket2, so the accept
//! backlog is ours to set: tokio's 128 gave a 1 s connect p99 under 256
//! simultaneous handshakes) and serve each connection with hyper, warp's
//! filters as the service. Serving it ourselves is also what lets `socket.rs` do
//! its own WebSocket upgrade: each request carries its upgrade handle and its
//! client's address as extensions.
//!
//! The client's address is the socket's peer, unless that peer is one of the
//! configured trusted proxies: then it is the nearest address in
//! `X-Forwarded-For` that is not itself a trusted proxy. Anyone else's
//! `X-Forwarded-For` is ignored, so a client cannot pick its own address
//! (and with it, its rate-limit bucket or the address recorded with its messages).
//!
//! Every request runs in a `request` span carrying its `X-Request-Id`
//! (`request_id.rs`), so every log line it causes names it.

pub mod auth_failures;
pub mod feed;
pub mod request_id;
pub mod socket;
pub mod tls;
pub mod upgrade;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::watch;
use warp::Filter;

use crate::http::deadline::TimedBody;
use crate::http::{ClientIp, UpgradeSlot};

/// The proxies whose `X-Forwarded-For` is believed (`server.trusted_proxies`).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    /// Addresses (`10.0.0.7`) and networks (`10.0.0.0/8`); the error names the bad entry.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        entries
            .iter()
            .map(|entry| {
                entry
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        format!("server.trusted_proxies: `{entry}` is not an IP address or network")
                    })
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|network| network.contains(&ip))
    }

    /// Who the client is, given the socket's peer and the `X-Forwarded-For` header(s).
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: &[&str]) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        // Each proxy appends the address it saw: read from the nearest hop back,
        // stopping at the first one that is not ours (or cannot be read).
        let hops = forwarded_for
            .iter()
            .flat_map(|header| header.split(','))
            .collect::<Vec<_>>();
        let mut client = peer;
        for hop in hops.into_iter().rev() {
            let hop = hop.trim();
            let Some(ip) = hop
                .parse::<IpAddr>()
                .ok()
                .or_else(|| hop.parse::<SocketAddr>().ok().map(|addr| addr.ip()))
            else {
                break;
            };
            client = ip.to_canonical();
            if !self.contains(client) {
                break;
            }
        }
        client
    }
}

/// How long in-flight HTTP requests get to finish once we stop accepting.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `addr` with `SO_REUSEADDR` and an accept backlog of `backlog`;
/// accepted connections inherit a `send_buffer` (bytes) unless it is 0.
pub fn bind(addr: SocketAddr, backlog: u32, send_buffer: u32) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if send_buffer > 0 {
        socket.set_send_buffer_size(send_buffer as usize)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.clamp(1, i32::MAX as u32) as i32)?;
    TcpListener::from_std(socket.into())
}

/// Serves `filter` on `listener` until `stop` turns true, then stops accepting
/// and gives in-flight requests `DRAIN_TIMEOUT` to finish. Upgraded sockets are
/// not waited for here: the runtime closes them with a reason.
pub async fn serve<F>(
    listener: TcpListener,
    filter: F,
    guards: Arc<Guards>,
    mut stop: watch::Receiver<bool>,
) where
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
        let (service, guards) = (service.clone(), guards.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let header_timeout = guards.timeouts.header;
            let tls = guards.tls.as_ref().map(|tls| tls.acceptor());
            let handler = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                serve_request(service.clone(), guards.clone(), peer, request)
            });
            let builder = connection_builder(header_timeout);
            let served = match tls {
                None => {
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), handler);
                    watcher.watch(connection).await
                }
                // The handshake is held to the same deadline as a request
                // head: a client that stalls in it cannot hold the connection.
                Some(acceptor) => {
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let connection = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), handler);
                            watcher.watch(connection).await
                        }
                        Ok(Err(error)) => return tracing::debug!(%error, "TLS handshake failed"),
                        Err(_) => return tracing::debug!("TLS handshake timed out"),
                    }
                }
            };
            if let Err(error) = served {
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

/// What the accept loop checks of every connection and request.
pub struct Guards {
    pub proxies: TrustedProxies,
    pub timeouts: Timeouts,
    pub auth_failures: auth_failures::AuthFailures,
    /// HTTPS and WSS, when a certificate is configured.
    pub tls: Option<tls::Tls>,
}

/// One request: its client's address and upgrade handle put in it, its
/// body given a deadline, its id given and echoed, served in its span; an
/// address that failed to authenticate too often is answered 429 unrouted.
async fn serve_request<S>(
    mut service: S,
    guards: Arc<Guards>,
    peer: SocketAddr,
    mut request: hyper::Request<Incoming>,
) -> Result<warp::reply::Response, Infallible>
where
    S: tower_service::Service<
            hyper::Request<TimedBody<Incoming>>,
            Response = warp::reply::Response,
            Error = Infallible,
        >,
{
    let forwarded: Vec<&str> = request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    let client = guards.proxies.client_ip(peer.ip(), &forwarded);
    request.extensions_mut().insert(ClientIp(client));
    if request.headers().contains_key(hyper::header::UPGRADE) {
        let upgrade = hyper::upgrade::on(&mut request);
        request.extensions_mut().insert(UpgradeSlot::new(upgrade));
    }
    let mut request = request.map(|body| TimedBody::new(body, guards.timeouts.body));
    let id = request_id::of(request.headers_mut());
    let span = tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path());
    let serving = async move {
        let mut response = match guards.auth_failures.refused_for(client) {
            Some(wait) => too_many_failures(wait),
            None => {
                let serving = tower_service::Service::call(&mut service, request);
                crate::http::serving_request(id.clone(), serving).await?
            }
        };
        if response.status() == hyper::StatusCode::UNAUTHORIZED {
            guards.auth_failures.failed(client);
        }
        tracing::debug!(status = response.status().as_u16(), "request served");
        request_id::echo(response.headers_mut(), &id);
        Ok(response)
    };
    tracing::Instrument::instrument(serving, span).await
}

/// The answer to an address over its quota of failed authentications.
fn too_many_failures(wait: Duration) -> warp::reply::Response {
    let mut response = crate::http::error::json_error(
        hyper::StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "too many failed authentications from this address; try again later".into(),
    );
    let seconds = wait.as_secs().max(1).to_string();
    if let Ok(value) = hyper::header::HeaderValue::from_str(&seconds) {
        response
            .headers_mut()
            .insert(hyper::header::RETRY_AFTER, value);
    }
    response
}

/// How long a client may take to send what it promised.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// The whole request head, from the connection's opening (or its last request).
    pub header: Duration,
    /// The whole body, from its head.
    pub body: Duration,
}

/// How each connection is served: HTTP/1 or 2, and a request head that
/// does not arrive within `header_timeout` closes the connection.
fn connection_builder(header_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8".into(), "192.0.2.1".into()]).unwrap();
        // Not a proxy: the header is the client's own claim, ignored.
        assert_eq!(
            proxies.client_ip(ip("198.51.100.9"), &["203.0.113.7"]),
            ip("198.51.100.9")
        );
        // A proxy: the nearest hop that is not one of ours.
        assert_eq!(
            proxies.client_ip(ip("10.1.2.3"), &["1.1.1.1, 203.0.113.7, 10.9.9.9"]),
            ip("203.0.113.7")
        );
        assert_eq!(
            proxies.client_ip(ip("192.0.2.1"), &["203.0.113.7:5555"]),
            ip("203.0.113.7")
        );
        // A proxy with no header, or garbage in it: the proxy itself.
        assert_eq!(proxies.client_ip(ip("10.1.2.3"), &[]), ip("10.1.2.3"));
        assert_eq!(
            proxies.client_ip(ip("10.1.2.3"), &["unknown"]),
            ip("10.1.2.3")
        );
        // IPv4-mapped IPv6 peers match IPv4 networks.
        assert_eq!(
            proxies.client_ip(ip("::ffff:10.0.0.1"), &["203.0.113.7"]),
            ip("203.0.113.7")
        );
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
    }
}
