//! Insights: the Analyst actor (`actor.rs`, supervised by `Root`, one per
//! node) has each conversation read by its tenant's model once it goes quiet
//! or when asked (`POST /chat/{id}/analyze`); one analysis (`analysis.rs`)
//! is a task that reads the log, asks the model, validates the answer and
//! stores it with its `conversation.analyzed` event.
//!
//! ```text
//! actor.rs     Analyst: who is being analysed, retries, the quiet sweep
//! analysis.rs  one analysis, start to stored
//! handle.rs    AnalystHandle, the runtime's way in
//! ```
//!
//! Architecture Invariant: imports only `model/`, `config`, `error`,
//! `supervision`, `store/` and `agent/`; never touches a session: the chat
//! goes on whatever an analysis does.

mod actor;
mod analysis;
mod handle;

pub use actor::{Analyst, AnalystArgs, AnalystMsg};
pub use handle::AnalystHandle;
