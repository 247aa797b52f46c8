//! The edge of tertulia: configuration, the HTTP and WebSocket surfaces, auth,
//! and the mapping of errors to HTTP.
//!
//! ```text
//! config.rs  geo.rs    settings; IP geolocation for webchat
//! http/      extractors, parsing, replies, ApiError and the one recover
//! auth/      callers, client tokens, tickets, rate limits
//! app.rs     AppState: what every handler shares
//! server/    the accept loop, the WebSocket upgrade and pump (no routes)
//! adapters/  the client libraries' protocols (AI SDK, n8n chat, AG-UI)
//! api/       the router, then one module per surface
//! cli.rs     admin commands against a running server
//! ```
//!
//! Each folder imports only those above it in this list. It reaches the runtime
//! (`tertulia-actors`) only through [`Runtime`] and the handles it returns;
//! nothing here touches the database.

pub mod adapters;
pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod geo;
pub mod http;
pub mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tertulia_actors::Runtime;
use tertulia_actors::runtime::AgentRegistry;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::AppState;
use crate::auth::limits;
use crate::auth::tickets::Tickets;
use crate::config::Config;

/// The longest a socket ticket may live: it travels in a URL (proxy logs,
/// browser history), so a leaked one must be worthless soon.
pub const MAX_TICKET_TTL_SECS: u64 = 3_600;

/// A server that is accepting connections.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub runtime: Runtime,
    guards: Arc<server::Guards>,
    stop: watch::Sender<bool>,
    accept_loop: JoinHandle<()>,
    sweeper: JoinHandle<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid bind address `{0}`")]
    BindAddress(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Runtime(#[from] tertulia_actors::Error),
}

/// Starts the runtime and serves it on `config.server.bind`. `agents` adds
/// agent providers to the built-in ones (tests use this for fault injection).
pub async fn start(config: Config, agents: AgentRegistry) -> Result<RunningServer, StartError> {
    let addr: SocketAddr = config
        .server
        .bind
        .parse()
        .map_err(|_| StartError::BindAddress(config.server.bind.clone()))?;
    if config.server.header_timeout_ms == 0 || config.server.body_timeout_ms == 0 {
        return Err(StartError::Config(
            "`server.header_timeout_ms` and `server.body_timeout_ms` must be above 0".into(),
        ));
    }
    if !(1..=MAX_TICKET_TTL_SECS).contains(&config.auth.ticket_ttl_secs) {
        return Err(StartError::Config(format!(
            "`auth.ticket_ttl_secs` must be from 1 to {MAX_TICKET_TTL_SECS}: a ticket stands in for a key in a URL, so it must expire soon"
        )));
    }
    let auth_failures = std::num::NonZeroU32::new(config.server.auth_failures_per_minute)
        .ok_or_else(|| {
            StartError::Config("`server.auth_failures_per_minute` must be above 0".into())
        })?;
    let timeouts = server::Timeouts {
        header: Duration::from_millis(config.server.header_timeout_ms),
        body: Duration::from_millis(config.server.body_timeout_ms),
    };
    let proxies = server::TrustedProxies::parse(&config.server.trusted_proxies)
        .map_err(StartError::Config)?;
    let geo = geo::Geolocator::new(&config.webchat.geolocation).map_err(StartError::Config)?;
    let tls = tls_settings(&config.server)?;
    // Bind first: a port in use should fail before the database is opened.
    let listener = server::bind(addr, config.server.backlog, config.server.send_buffer_bytes)
        .map_err(|source| StartError::Listen { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| StartError::Listen { addr, source })?;
    // Before the runtime starts, so its first figures are kept.
    api::metrics::install(config.metrics.enabled);
    let runtime = Runtime::start(config.runtime(), agents).await?;
    let limiter = limits::Limiter::new(runtime.clone());
    let guards = Arc::new(server::Guards {
        proxies,
        timeouts,
        auth_failures: server::auth_failures::AuthFailures::new(auth_failures),
        tls,
    });
    let sweeper = {
        let (limiter, guards) = (limiter.clone(), guards.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(limits::SWEEP_EVERY);
            loop {
                every.tick().await;
                limiter.sweep();
                guards.auth_failures.sweep();
            }
        })
    };
    let app = AppState {
        limiter,
        geo,
        tickets: Tickets::new(
            runtime.ticket_secret(),
            Duration::from_secs(config.auth.ticket_ttl_secs),
        ),
        runtime: runtime.clone(),
        config: Arc::new(config),
        local_addr,
    };
    let (stop, stop_rx) = watch::channel(false);
    let routes = api::routes(app);
    let accept_loop = tokio::spawn(server::serve(listener, routes, guards.clone(), stop_rx));
    Ok(RunningServer {
        addr: local_addr,
        runtime,
        guards,
        stop,
        accept_loop,
        sweeper,
    })
}

/// The certificate to serve HTTPS with, if one is configured (both files or neither).
fn tls_settings(server: &config::ServerConfig) -> Result<Option<server::tls::Tls>, StartError> {
    match (server.tls_cert.is_empty(), server.tls_key.is_empty()) {
        (true, true) => Ok(None),
        (false, false) => server::tls::Tls::load(
            std::path::Path::new(&server.tls_cert),
            std::path::Path::new(&server.tls_key),
        )
        .map(Some)
        .map_err(StartError::Config),
        _ => Err(StartError::Config(
            "`server.tls_cert` and `server.tls_key` are set together or not at all".into(),
        )),
    }
}

impl RunningServer {
    /// Whether it serves HTTPS (and WSS) rather than plain HTTP.
    pub fn serves_tls(&self) -> bool {
        self.guards.tls.is_some()
    }

    /// Reads the TLS certificate and key again (on SIGHUP): new connections
    /// get the new one, open ones keep theirs. `Ok(false)`: no TLS to reload.
    pub fn reload_tls(&self) -> Result<bool, String> {
        match &self.guards.tls {
            Some(tls) => tls.reload().map(|()| true),
            None => Ok(false),
        }
    }

    /// Stops accepting, lets in-flight requests finish, then shuts the runtime
    /// down: sockets are closed with a reason, answers in progress are stored
    /// as `interrupted`, persistence drains.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.accept_loop.await;
        self.sweeper.abort();
        self.runtime.shutdown().await;
    }
}
