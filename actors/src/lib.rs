//! The tertulia runtime: the supervision tree, the actors and their messages,
//! storage and agent adapters. The edge (`src/` of the `tertulia` crate) uses
//! it only through [`Runtime`] and the handles it returns.
//!
//! ```text
//! Root (root.rs)
//! ├── Persistence (persistence.rs)   the only code that queries SurrealDB
//! ├── Webhooks (webhooks.rs)         fans the event outbox out to endpoints
//! │   └── Worker (webhook_worker.rs) one per endpoint: signs, sends, retries
//! └── Tenant (tenant.rs)             one per tenant, started on first use
//!     └── Session (session.rs)       one per live conversation; passivates when idle
//!         ├── Agent (agent.rs)       one generation at a time
//!         └── Connection (connection.rs)  one per socket; owns its bounded queue
//! ```

pub mod agent;
pub mod config;
pub mod connection;
pub mod domain;
pub mod egress;
pub mod error;
pub mod events;
pub mod feed;
pub mod handoff;
pub mod leads;
pub mod openai;
pub mod outbound;
pub mod persistence;
pub mod protocol;
pub mod root;
pub mod runtime;
pub mod session;
pub mod signing;
pub mod supervision;
pub mod tenant;
pub mod webhook_agent;
pub mod webhook_worker;
pub mod webhooks;

pub use error::{Error, Result};
pub use runtime::Runtime;
