//! Durable Streams: one actor per live stream (`actor.rs`), the only writer
//! of its stream, what a `POST` does, decided without I/O (`append.rs`), and
//! forks with the deletes they outlive (`fork.rs`).
//! The runtime's registry (`runtime/streams.rs`) starts them by name on
//! first use; readers read units from the store and watch an actor's tail.
//!
//! Architecture Invariant: imports only `model/`, `config`, `error`,
//! `supervision` and `store/`; never a conversation.

pub mod actor;
pub mod append;
pub mod fork;
pub mod state;

pub use actor::{StreamActor, StreamArgs, StreamMsg};
pub use append::{Append, Appended, ProducerHeaders};
pub use fork::ForkRequest;
pub use state::{Release, Tail};
