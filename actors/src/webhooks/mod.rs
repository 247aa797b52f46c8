//! Webhooks: the durable outbox delivered to endpoints. The webhook actor
//! (`actor.rs`, supervised by `Root`) is the only writer of endpoints and
//! supervises one delivery worker per endpoint (`worker.rs`: signs, sends,
//! retries, dead-letters).
//!
//! The outbox: every event is stored in the same transaction as the change
//! that caused it (`Write::WithEvents`). When such a batch commits,
//! persistence wakes the actor, which fans the undispatched events out
//! (`fanout.rs`): one delivery per subscribed, enabled endpoint, created in
//! the same transaction that marks the events dispatched. Only then do the
//! workers hear of them. A crash anywhere in between leaves the events
//! undispatched (fanned out after the restart) or the deliveries pending
//! (sent after the restart): nothing is lost, and a duplicate carries the
//! same `webhook-id`.
//!
//! In a cluster, one node at a time fans out and delivers: the holder of
//! the `webhooks` role (`holding.rs`). The others tell it when they commit
//! events or change endpoints, over the cluster's gateways (the runtime
//! hands in the [`Nudger`]).
//!
//! Architecture Invariant: imports only `model/`, `config`, `error`,
//! `supervision`, `net/` and `store/`; nothing of the conversations.

mod actor;
mod admin;
mod attempt;
mod endpoints;
mod fanout;
mod handle;
mod holding;
mod worker;

pub use actor::{EndpointChange, Webhooks, WebhooksArgs, WebhooksMsg};
pub use endpoints::{endpoint_problem, from_config, later, new_secret};
pub use handle::WebhooksHandle;
pub use holding::NudgerSlot;
