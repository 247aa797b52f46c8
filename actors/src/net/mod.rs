//! The network edge of the runtime's outgoing calls: the egress guard that
//! keeps agents, tools and webhooks off private addresses, and Standard
//! Webhooks signing. No actors.
//!
//! Architecture Invariant: imports only `model/` and `config`.

pub mod egress;
pub mod post;
pub mod signing;
