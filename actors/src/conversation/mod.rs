//! A conversation while it is live: the `Session` actor that owns its
//! ordered log, the `Connection` actor of each socket with its bounded
//! outbound queue, the tenant's console feed and the handoff phrases.
//!
//! Architecture Invariant: never queries SurrealDB (it asks `store/`), never
//! waits on the network (agents do), and imports nothing from `webhooks/`,
//! `tree/` or `runtime/`.

pub mod connection;
pub mod feed;
pub mod handoff;
pub mod outbound;
pub mod session;
