//! The store: the only code that touches SurrealDB. The persistence actor
//! (`actor.rs`, supervised by `Root`) group-commits every write; reads run
//! on the database handle in the caller's task (`read.rs`); [`Storage`] is
//! the one handle the rest of the runtime holds.
//!
//! ```text
//! connect.rs   which endpoints are servers, connecting, signing in
//! database.rs  open, migrations, row shaping, the batch transaction
//! migrations.rs  the numbered migrations, compiled in
//! write.rs       Write (each change) and Durable (its callback)
//! statements.rs  each write as SurrealQL statements of a batch
//! actor.rs     Persistence: queues writes, one batch in flight at a time
//! read.rs      every read, as Storage methods
//! retention.rs   retention's batches, straight on the handle
//! sealing.rs   secrets sealed at rest with the operator's key
//! leases.rs    node, conversation and role leases, the fence on every batch (cluster)
//! fence.rs     Fence: a node's epoch and whether it is lost (cluster)
//! handle.rs    Storage
//! ```
//!
//! Architecture Invariant: the only folder that names `surrealdb`; imports
//! only `model/`, `config`, `error` and `supervision`.

mod actor;
mod analytics;
#[cfg(feature = "bench-internals")]
pub mod bench;
mod connect;
mod counters;
mod database;
mod fence;
mod handle;
mod leases;
mod migrations;
mod read;
mod retention;
mod sealing;
mod statements;
mod write;

#[cfg(test)]
mod tests;

pub use actor::{Persistence, PersistenceArgs, PersistenceMsg};
pub use connect::{is_server, surrealkv_endpoint};
pub use database::Database;
pub use fence::Fence;
pub use handle::Storage;
pub use leases::Holder;
pub use read::MessageQuery;
pub use sealing::Sealer;
pub use write::{Durable, Write};
