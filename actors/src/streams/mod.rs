//! Durable Streams: one actor per live stream (`actor.rs`), the only writer
//! of its stream, and what a `POST` does, decided without I/O (`append.rs`).
//! The runtime's registry (`runtime/streams.rs`) starts them by name on
//! first use; readers read units from the store and watch an actor's tail.
//!
//! Architecture Invariant: imports only `model/`, `config`, `error`,
//! `supervision` and `store/`; never a conversation.

pub mod actor;
pub mod append;

pub use actor::{StreamActor, StreamArgs, StreamMsg, Tail};
pub use append::{Append, Appended, ProducerHeaders};
