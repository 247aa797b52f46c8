//! The architecture, checked: no module of either crate imports another in
//! a circle, and each folder imports only the layers below it (in the style
//! of rust-analyzer's tidy tests). A new wrong-way import fails here, naming
//! the file and the module it should not reach.

use std::collections::BTreeSet;
use std::path::Path;

use crate::support::modules::{Crate, ModulePath};
use crate::support::source::rust_files;

/// The runtime's layers: each top-level module and what it may import.
const RUNTIME_LAYERS: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("metrics", &["model"]),
    ("config", &["model"]),
    ("error", &["model"]),
    ("supervision", &["model", "metrics", "config"]),
    ("net", &["model", "metrics", "config", "error"]),
    (
        "store",
        &["model", "metrics", "config", "error", "supervision"],
    ),
    ("agent", &["model", "metrics", "config", "error", "net"]),
    (
        "conversation",
        &[
            "model",
            "metrics",
            "config",
            "error",
            "supervision",
            "store",
            "agent",
        ],
    ),
    (
        "webhooks",
        &[
            "model",
            "metrics",
            "config",
            "error",
            "supervision",
            "net",
            "store",
        ],
    ),
    (
        "streams",
        &[
            "model",
            "metrics",
            "config",
            "error",
            "supervision",
            "store",
        ],
    ),
    (
        "insights",
        &[
            "model",
            "metrics",
            "config",
            "error",
            "supervision",
            "store",
            "agent",
        ],
    ),
    (
        "cluster",
        &[
            "model",
            "metrics",
            "config",
            "error",
            "supervision",
            "store",
            "conversation",
            "streams",
        ],
    ),
    (
        "tree",
        &[
            "model",
            "metrics",
            "config",
            "error",
            "supervision",
            "net",
            "store",
            "agent",
            "conversation",
            "webhooks",
            "insights",
        ],
    ),
    (
        "runtime",
        &[
            "model",
            "metrics",
            "config",
            "error",
            "supervision",
            "net",
            "store",
            "agent",
            "conversation",
            "webhooks",
            "insights",
            "streams",
            "tree",
            "cluster",
        ],
    ),
];

/// The edge's layers.
const EDGE_LAYERS: &[(&str, &[&str])] = &[
    ("config", &[]),
    ("geo", &["config"]),
    ("http", &[]),
    ("auth", &["http"]),
    ("app", &["config", "geo", "auth"]),
    ("server", &["config", "http", "auth", "app"]),
    ("adapters", &["config", "http", "auth", "app"]),
    (
        "api",
        &["config", "geo", "http", "auth", "app", "server", "adapters"],
    ),
    ("cli", &["config"]),
];

fn wrong_way_imports(krate: &Crate, layers: &[(&str, &[&str])]) -> Vec<String> {
    let mut wrong = Vec::new();
    for (module, targets) in &krate.edges {
        let Some(top) = module.first() else {
            continue; // the crate root wires everything together
        };
        let (_, allowed) = layers
            .iter()
            .find(|(layer, _)| layer == top)
            .unwrap_or_else(|| {
                panic!("`{top}` is in no layer: add it to the lists in layering.rs")
            });
        for target in targets {
            let Some(target_top) = target.first() else {
                wrong.push(format!("{} imports the crate root", module.join("::")));
                continue;
            };
            if target_top != top && !allowed.contains(&target_top.as_str()) {
                wrong.push(format!(
                    "{} imports {}",
                    module.join("::"),
                    target.join("::")
                ));
            }
        }
    }
    wrong
}

fn describe(cycles: Vec<Vec<ModulePath>>) -> Vec<String> {
    cycles
        .into_iter()
        .map(|group| {
            group
                .iter()
                .map(|module| module.join("::"))
                .collect::<Vec<_>>()
                .join(" ↔ ")
        })
        .collect()
}

#[test]
fn no_module_of_the_runtime_imports_another_in_a_circle() {
    let cycles = describe(Crate::read("actors/src").cycles());
    assert!(cycles.is_empty(), "import cycles: {cycles:#?}");
}

#[test]
fn no_module_of_the_edge_imports_another_in_a_circle() {
    let cycles = describe(Crate::read("src").cycles());
    assert!(cycles.is_empty(), "import cycles: {cycles:#?}");
}

#[test]
fn the_runtime_imports_only_downwards() {
    let wrong = wrong_way_imports(&Crate::read("actors/src"), RUNTIME_LAYERS);
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn the_edge_imports_only_downwards() {
    let wrong = wrong_way_imports(&Crate::read("src"), EDGE_LAYERS);
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    // The checks above pass vacuously if the reader finds no edges at all.
    let runtime = Crate::read("actors/src");
    let store = vec!["store".to_owned(), "actor".to_owned()];
    let names: BTreeSet<String> = runtime.edges[&store]
        .iter()
        .map(|module| module.join("::"))
        .collect();
    assert!(names.contains("store::write"), "{names:?}");
    assert!(names.contains("error"), "{names:?}");
}

#[test]
fn the_model_does_no_io_and_starts_no_actors() {
    for file in rust_files("actors/src/model") {
        let text = std::fs::read_to_string(&file).unwrap();
        for forbidden in [
            "ractor",
            "tokio::",
            "reqwest",
            "surrealdb",
            "std::fs",
            "std::net",
        ] {
            assert!(
                !text.contains(forbidden),
                "{} names `{forbidden}`",
                file.display()
            );
        }
    }
}

#[test]
fn the_edge_reaches_the_runtime_only_through_its_public_api() {
    let allowed = [
        "tertulia_actors::runtime",
        "tertulia_actors::model",
        "tertulia_actors::config",
        "tertulia_actors::metrics",
        "tertulia_actors::Runtime",
        "tertulia_actors::Error",
        "tertulia_actors::Result",
    ];
    for file in rust_files("src") {
        let text = std::fs::read_to_string(&file).unwrap();
        for (at, _) in text.match_indices("tertulia_actors::") {
            let rest = &text[at..];
            assert!(
                allowed.iter().any(|prefix| rest.starts_with(prefix))
                    || rest.starts_with("tertulia_actors::{"),
                "{} reaches `{}`",
                file.display(),
                rest.lines().next().unwrap_or_default()
            );
        }
    }
}

#[test]
fn test_modules_share_helpers_only_through_support() {
    let support = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/support");
    for file in rust_files("tests/it") {
        if file.starts_with(&support) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (at, _) in text.match_indices("crate::") {
            let rest = &text[at + "crate::".len()..];
            if !rest.starts_with(|c: char| c.is_ascii_lowercase()) {
                continue; // not a path (this test's own text)
            }
            assert!(
                rest.starts_with("support"),
                "{} imports `crate::{}`: move the helper to tests/it/support/",
                file.display(),
                rest.lines().next().unwrap_or_default()
            );
        }
    }
}
