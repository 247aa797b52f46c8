//! The top of the supervision tree: `Root`, which starts persistence, the
//! webhook actor and one `Tenant` per tenant, and `Tenant`, which starts one
//! `Session` per live conversation.
//!
//! Architecture Invariant: imports nothing from `runtime/`.

pub mod root;
pub mod tenant;
