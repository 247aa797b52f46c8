//! The map in ARCHITECTURE.md, checked: every Rust file says its role in a
//! `//!` doc, the edge never names the database, and only the persistence
//! actor runs queries.

use std::path::Path;

use crate::support::source::rust_files;

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    for dir in ["src", "actors/src", "tests", "benches"] {
        for file in rust_files(dir) {
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(
                text.starts_with("//!"),
                "{} does not start with a //! doc",
                file.display()
            );
        }
    }
}

#[test]
fn nothing_in_the_edge_touches_the_database() {
    for file in rust_files("src") {
        let text = std::fs::read_to_string(&file).unwrap();
        // Naming its log target (main.rs) is fine; using its API is not.
        for forbidden in ["surrealdb::", "use surrealdb", "Surreal<"] {
            assert!(
                !text.contains(forbidden),
                "{} contains `{forbidden}`",
                file.display()
            );
        }
    }
}

#[test]
fn only_the_store_runs_queries() {
    let store = Path::new(env!("CARGO_MANIFEST_DIR")).join("actors/src/store");
    for file in rust_files("actors/src") {
        if file.starts_with(&store) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for forbidden in ["surrealdb::", ".query(", "Surreal<"] {
            assert!(
                !text.contains(forbidden),
                "{} contains `{forbidden}`",
                file.display()
            );
        }
    }
}
