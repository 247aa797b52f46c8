//! What every handler shares ([`AppState`]): the runtime, ticket signing,
//! rate limiters, geolocation and the configuration, plus the URLs the
//! server hands out for sockets.

use std::net::SocketAddr;
use std::sync::Arc;

use tertulia_actors::Runtime;
use tertulia_actors::model::{Scope, SessionId};
use warp::Filter;
use warp::filters::BoxedFilter;

use crate::auth::limits::Limiter;
use crate::auth::tickets::Tickets;
use crate::config::Config;
use crate::geo::Geolocator;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub runtime: Runtime,
    pub tickets: Tickets,
    pub limiter: Limiter,
    pub geo: Geolocator,
    pub config: Arc<Config>,
    /// The address the server listens on (for URLs when a request has no `Host`).
    pub local_addr: SocketAddr,
}

impl AppState {
    /// A filter that hands every request this state.
    pub fn filter(&self) -> BoxedFilter<(AppState,)> {
        let app = self.clone();
        warp::any().map(move || app.clone()).boxed()
    }

    /// The `websocket_url` of a new or listed session: its socket with a ticket
    /// for `scope`, and when the ticket expires (Unix seconds).
    pub fn websocket_url(
        &self,
        host: Option<String>,
        scope: &Scope,
        session: SessionId,
        widget: bool,
    ) -> (String, u64) {
        let base = self.socket_base(host);
        let (ticket, expires) = self.tickets.issue(scope, session, widget);
        (format!("{base}/chat/ws/{session}?ticket={ticket}"), expires)
    }

    /// `http://host` (`https://` when this server serves TLS itself), or the
    /// configured public URL: the base of URLs handed out in headers.
    pub fn http_base(&self, host: Option<String>) -> String {
        self.socket_base(host)
            .replacen("wss://", "https://", 1)
            .replacen("ws://", "http://", 1)
    }

    /// `ws://host` (`wss://` when this server serves TLS itself, or the
    /// configured public URL as `wss://`) that sockets are opened on.
    pub fn socket_base(&self, host: Option<String>) -> String {
        if self.config.server.public_url.is_empty() {
            let scheme = match self.config.server.tls_cert.is_empty() {
                true => "ws",
                false => "wss",
            };
            format!(
                "{scheme}://{}",
                host.unwrap_or_else(|| self.local_addr.to_string())
            )
        } else {
            self.config
                .server
                .public_url
                .trim_end_matches('/')
                .replacen("https://", "wss://", 1)
                .replacen("http://", "ws://", 1)
        }
    }
}
