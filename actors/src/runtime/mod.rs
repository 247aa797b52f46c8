//! The runtime's public API: what the edge (`src/`) may call. It starts the
//! supervision tree and turns each request into actor messages; it never gives
//! out the database handle.
//!
//! ```text
//! handle.rs         Runtime, its shared state, reaching tenant and session actors
//! start.rs          config checks, start-up wiring, shutdown
//! access.rs         tenants and keys
//! backup.rs         restoring a backup into a new data directory
//! analysis.rs       statistics (and insights) of a tenant's conversations
//! conversations.rs  conversations, messages, sockets
//! console.rs        the agent console
//! erasure.rs        forgetting a person
//! retention.rs      Retention: the actor that prunes and archives
//! streams.rs        Durable Streams: the stream actors and catch-up reads
//! tail.rs           a conversation tailed as a Durable Stream
//! webhooks.rs       webhook endpoints and deliveries
//! ```
//!
//! Architecture Invariant: the edge reaches nothing of this crate but what
//! is `pub` here, in `model/` and in `config`.

mod access;
mod analysis;
mod backup;
mod console;
mod conversations;
mod erasure;
mod handle;
mod retention;
mod start;
mod streams;
mod tail;
mod webhooks;

pub use crate::streams::{Append, Appended, ForkRequest, ProducerHeaders, Tail};
pub use backup::restore;
pub use handle::{MAX_LIST, Runtime, WEBCHAT};
pub use start::check_config;
pub use streams::{ReadBody, StreamRead};
pub use tail::{ConversationTail, TailBatch};
pub use webhooks::{EndpointInput, MAX_DELIVERIES};

// What the edge needs of the layers below, and nothing more: the agent
// provider plug-in (tests add their own), a socket's handle on its session,
// and the console's view of a conversation.
pub use crate::agent::builtin::EchoAgent;
pub use crate::agent::{
    AgentError, AgentEvent, AgentProvider, AgentRegistry, AgentRequest, AgentStream, Turn,
};
pub use crate::conversation::connection::ConnectionMsg;
pub use crate::conversation::feed::ConversationSummary;
pub use crate::conversation::outbound::{CloseReason, OutboundReceiver, Outgoing};
pub use crate::conversation::session::Attached;
