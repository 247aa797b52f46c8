//! Helpers the integration tests share: the server under test, the fake
//! model server, the webhook receiver, the binary as a child process, the
//! SurrealDB server, keeping clusters away from timing-sensitive tests, links
//! between cluster nodes a test can cut and a balancer over them, the Durable
//! Streams conformance suite, socket requests, the npm and PyPI tools, and reading the project's own source. Test modules import from
//! here, never from each other.

pub mod binary;
pub mod browser;
pub mod cluster;
pub mod conformance;
pub mod crowd;
pub mod fake_llm;
pub mod link;
pub mod modules;
pub mod node;
pub mod python;
pub mod receiver;
pub mod server;
pub mod soak;
pub mod sockets;
pub mod source;
pub mod surreal;
pub mod tmpfs;
