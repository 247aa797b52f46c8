//! Helpers the integration tests share: the server under test, the fake
//! model server, the webhook receiver, processes, browsers, and reading the
//! project's own source. Test modules import from here, never from each other.

pub mod modules;
pub mod source;
