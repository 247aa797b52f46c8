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

/// A file's code before its unit tests.
fn code_of(text: &str) -> &str {
    text.find("#[cfg(test)]\nmod tests")
        .map_or(text, |at| &text[..at])
}

#[test]
fn no_source_file_is_over_600_lines() {
    for dir in ["src", "actors/src"] {
        for file in rust_files(dir) {
            let text = std::fs::read_to_string(&file).unwrap();
            let lines = code_of(&text).lines().count();
            assert!(
                lines <= 600,
                "{} has {lines} lines before its tests: split it along its seams",
                file.display()
            );
        }
    }
}

/// Each function's name and length in lines, found by its `fn` line and the
/// closing brace at the same indentation (rustfmt's layout).
fn function_lengths(code: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut found = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let signature = trimmed
            .trim_start_matches("pub ")
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("pub(super) ")
            .trim_start_matches("async ")
            .trim_start_matches("const ");
        let Some(rest) = signature.strip_prefix("fn ") else {
            continue;
        };
        if line.trim_end().ends_with(';') {
            continue; // a trait's declaration
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let closing = " ".repeat(indent) + "}";
        let end = (start..lines.len())
            .find(|&at| {
                lines[at].starts_with(&closing) && lines[at].trim() == "}" || {
                    at == start && lines[at].trim_end().ends_with('}')
                }
            })
            .unwrap_or(start);
        found.push((name, end - start + 1));
    }
    found
}

#[test]
fn no_function_is_over_80_lines() {
    for dir in ["src", "actors/src"] {
        for file in rust_files(dir) {
            if file.ends_with("tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            for (name, length) in function_lengths(code_of(&text)) {
                assert!(
                    length <= 80,
                    "{}: `{name}` is {length} lines: give its steps names",
                    file.display()
                );
            }
        }
    }
}

#[test]
fn function_lengths_are_measured() {
    let code = "fn short() {}\n\npub async fn long(\n    a: u8,\n) {\n    one();\n    two();\n}\n";
    assert_eq!(
        function_lengths(code),
        vec![("short".to_owned(), 1), ("long".to_owned(), 6)]
    );
}
