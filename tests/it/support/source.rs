//! Reading the project's own source, for the tests that check its shape
//! (layout, layering, route coverage).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir` (relative to the repository root), sorted.
pub fn rust_files(dir: &str) -> Vec<PathBuf> {
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
    files.sort();
    files
}

/// "METHOD /path" for every route declared in `src/` (routes live in
/// `src/api/`, but a route declared anywhere else must be covered too).
pub fn routes_in_source() -> BTreeSet<String> {
    let mut routes = BTreeSet::new();
    for path in rust_files("src") {
        let text = std::fs::read_to_string(&path).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest
            .find("warp::path!(")
            .map(|at| (at, "path!"))
            .into_iter()
            .chain(rest.find("warp::path::end()").map(|at| (at, "end")))
            .min_by_key(|(at, _)| *at)
        {
            let (start, kind) = at;
            let after = &rest[start..];
            let (route_path, consumed) = if kind == "end" {
                ("/".to_owned(), "warp::path::end()".len())
            } else {
                let close = after.find(')').unwrap();
                let inside = &after["warp::path!(".len()..close];
                let segments: Vec<String> = inside
                    .split('/')
                    .map(|segment| segment.trim())
                    .map(|segment| {
                        match segment.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                            Some(literal) => literal.to_owned(),
                            None => "{}".to_owned(),
                        }
                    })
                    .collect();
                (format!("/{}", segments.join("/")), close)
            };
            let method = ["get", "head", "post", "put", "patch", "delete", "options"]
                .iter()
                .filter_map(|method| {
                    after
                        .find(&format!("warp::{method}()"))
                        .map(|at| (at, method))
                })
                .min_by_key(|(at, _)| *at)
                .map(|(_, method)| method.to_uppercase())
                .unwrap_or_else(|| panic!("no method after {route_path} in {}", path.display()));
            routes.insert(format!("{method} {route_path}"));
            rest = &after[consumed..];
        }
    }
    routes
}
