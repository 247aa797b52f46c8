//! `surreal`, as the official binary runs it: the server's own command
//! line (`surreal start --bind … --user … --pass … surrealkv://DIR`),
//! with the community edition's composer. Nothing of tertulia is in it.

// The server crate's async code needs the deeper limit.
#![recursion_limit = "256"]

fn main() -> std::process::ExitCode {
    surrealdb_server::init(surrealdb_server::core::CommunityComposer())
}
