//! The map in ARCHITECTURE.md, checked: every Rust file says its role in a
//! `//!` doc, the edge never names the database, and only the persistence
//! actor runs queries.

use std::path::{Path, PathBuf};

fn rust_files(dir: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                files.push(path);
            }
        }
    }
    assert!(!files.is_empty(), "no Rust files under {dir}");
    files
}

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
fn only_persistence_runs_queries() {
    for file in rust_files("actors/src") {
        if file.ends_with("persistence.rs") {
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
