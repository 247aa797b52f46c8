//! The tertulia runtime: the supervision tree, the actors and their messages,
//! storage and agent adapters. The edge (`src/` of the `tertulia` crate) uses
//! it only through [`Runtime`], the plain data of [`model`] and the settings
//! of [`config`].
//!
//! The folders are layers; each imports only the ones listed before it:
//!
//! ```text
//! model/          plain data, the wire protocol, validation
//! metrics.rs      the figures of /metrics, named in one place
//! config.rs       process settings
//! error.rs        the one error type
//! supervision.rs  restart backoff, the re-pointable actor slot
//! net/            egress guard, signing, the one signed POST
//! store/          Persistence: the only code that touches SurrealDB
//! agent/          providers and the Agent actor
//! conversation/   Session, Connection, outbound queues, the console feed
//! webhooks/       the webhook actor and its delivery workers
//! streams/        Durable Streams: one actor per live stream
//! insights/       the Analyst: conversations read by the tenant's model
//! tree/           Root and Tenant
//! runtime/        the API the edge calls
//! ```
//!
//! The supervision tree:
//!
//! ```text
//! Root (tree/root.rs)
//! ├── Persistence (store/)                the only code that queries SurrealDB
//! ├── Webhooks (webhooks/mod.rs)          fans the event outbox out to endpoints
//! │   └── Worker (webhooks/worker.rs)     one per endpoint: signs, sends, retries
//! ├── Analyst (insights/actor.rs)         insights: quiet conversations read by the model
//! └── Tenant (tree/tenant.rs)             one per tenant, started on first use
//!     └── Session (conversation/session/) one per live conversation; passivates when idle
//!         ├── Agent (agent/actor.rs)      one generation at a time
//!         └── Connection (conversation/connection.rs)  one per socket; owns its bounded queue
//!
//! Retention (runtime/retention.rs)        beside the tree: prunes, archives; started
//!                                         after Root, stopped first, holds the runtime weakly
//! Stream (streams/actor.rs)               beside the tree: one per live Durable Stream,
//!                                         started by name on first use, stops when idle
//! ```

pub mod config;
pub mod metrics;
pub mod model;
pub mod runtime;

mod error;

pub(crate) mod agent;
pub(crate) mod cluster;
pub(crate) mod conversation;
pub(crate) mod insights;
pub(crate) mod net;
pub(crate) mod store;
pub(crate) mod streams;
pub(crate) mod supervision;
pub(crate) mod tree;
pub(crate) mod webhooks;

pub use error::{Error, Result};
pub use runtime::Runtime;

/// The store's write path and SurrealDB's floor beside it, for
/// `benches/store.rs` (feature `bench-internals`; not an API).
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub use store::bench as store_bench;
