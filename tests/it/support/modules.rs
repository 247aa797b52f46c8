//! The module graph of one crate, read from its source: which module each
//! file is, and which modules each file names in its paths (`crate::…`,
//! `super::…`, `self::…`, in `use` trees and in expressions). `mod x;`
//! declarations are not dependencies; a path names the deepest module it
//! reaches. Good enough to check layering and find cycles, with no parser.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::source::rust_files;

/// A module path inside its crate: `["store", "actor"]`; the root is `[]`.
pub type ModulePath = Vec<String>;

pub struct Crate {
    /// Each module, the modules its file names (never itself).
    pub edges: BTreeMap<ModulePath, BTreeSet<ModulePath>>,
}

impl Crate {
    /// Reads the crate whose root (`lib.rs`) is in `dir`, relative to the repository.
    pub fn read(dir: &str) -> Crate {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let files: BTreeMap<PathBuf, ModulePath> = rust_files(dir)
            .into_iter()
            .filter(|file| !file.ends_with("main.rs"))
            .map(|file| {
                let module = module_of(&root, &file);
                (file, module)
            })
            .collect();
        let modules: BTreeSet<ModulePath> = files.values().cloned().collect();
        let mut edges = BTreeMap::new();
        for (file, module) in &files {
            let text = strip_comments(&without_tests(&std::fs::read_to_string(file).unwrap()));
            let named: BTreeSet<ModulePath> = paths_in(&text)
                .into_iter()
                .filter_map(|path| resolve(module, &path))
                .filter_map(|path| deepest_module(&modules, &path))
                .filter(|target| target != module)
                .collect();
            edges.insert(module.clone(), named);
        }
        Crate { edges }
    }

    /// Every group of modules that name each other in a circle.
    pub fn cycles(&self) -> Vec<Vec<ModulePath>> {
        strongly_connected(&self.edges)
            .into_iter()
            .filter(|group| group.len() > 1)
            .collect()
    }
}

fn module_of(root: &Path, file: &Path) -> ModulePath {
    let relative = file.strip_prefix(root).unwrap();
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The text before its `#[cfg(test)] mod tests` (unit tests sit at the end
/// of a file, one module deeper, and may import whatever they test).
fn without_tests(text: &str) -> String {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => text[..at].to_owned(),
        None => text.to_owned(),
    }
}

/// The text without `//` comments (doc comments name paths in prose).
fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path that starts with `crate`, `super` or `self`, with `use` trees
/// expanded (`use crate::a::{b, c::d}` names `crate::a::b` and `crate::a::c::d`).
fn paths_in(text: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while at < text.len() {
        if !text.is_char_boundary(at) {
            at += 1;
            continue;
        }
        let starts_word = at == 0 || !is_ident(bytes[at - 1] as char) && bytes[at - 1] != b':';
        let head = ["crate::", "super::", "self::"]
            .into_iter()
            .find(|head| text[at..].starts_with(head));
        match head {
            Some(_) if starts_word => {
                let (tree, used) = use_tree(&text[at..]);
                expand(&tree, &mut Vec::new(), &mut paths);
                at += used.max(1);
            }
            _ => at += 1,
        }
    }
    paths
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// A path segment sequence, possibly ending in a `{…}` group.
enum Tree {
    Path(Vec<String>, Vec<Tree>),
}

/// Reads a path (with any brace groups) from the start of `text`; returns it
/// and how many bytes it took.
fn use_tree(text: &str) -> (Tree, usize) {
    let mut segments = Vec::new();
    let mut at = 0;
    loop {
        let rest = &text[at..];
        let trimmed = rest.trim_start();
        at += rest.len() - trimmed.len();
        if trimmed.starts_with('{') {
            let mut children = Vec::new();
            at += 1;
            loop {
                let rest = &text[at..];
                let trimmed = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
                at += rest.len() - trimmed.len();
                if trimmed.starts_with('}') || trimmed.is_empty() {
                    at += 1;
                    break;
                }
                let (child, used) = use_tree(trimmed);
                children.push(child);
                at += used.max(1);
            }
            return (Tree::Path(segments, children), at);
        }
        let word: String = trimmed.chars().take_while(|c| is_ident(*c)).collect();
        if word.is_empty() {
            return (Tree::Path(segments, Vec::new()), at);
        }
        at += word.len();
        segments.push(word);
        if text[at..].starts_with("::") {
            at += 2;
        } else {
            return (Tree::Path(segments, Vec::new()), at);
        }
    }
}

fn expand(tree: &Tree, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let Tree::Path(segments, children) = tree;
    let depth = prefix.len();
    prefix.extend(segments.iter().cloned());
    if children.is_empty() {
        out.push(prefix.clone());
    }
    for child in children {
        expand(child, prefix, out);
    }
    prefix.truncate(depth);
}

/// The path as seen from the crate root.
fn resolve(module: &ModulePath, path: &[String]) -> Option<ModulePath> {
    let mut base: ModulePath = match path.first()?.as_str() {
        "crate" => Vec::new(),
        "self" | "super" => module.clone(),
        _ => return None,
    };
    let mut rest = &path[1..];
    if path[0] == "super" {
        base.pop()?;
    }
    while rest.first().is_some_and(|segment| segment == "super") {
        base.pop()?;
        rest = &rest[1..];
    }
    // `self` inside a `use` group names the group's own path.
    let rest: Vec<String> = rest.iter().filter(|s| *s != "self").cloned().collect();
    base.extend(rest);
    Some(base)
}

fn deepest_module(modules: &BTreeSet<ModulePath>, path: &[String]) -> Option<ModulePath> {
    (0..=path.len())
        .rev()
        .map(|length| path[..length].to_vec())
        .find(|prefix| modules.contains(prefix))
}

/// Tarjan's strongly connected components.
fn strongly_connected(edges: &BTreeMap<ModulePath, BTreeSet<ModulePath>>) -> Vec<Vec<ModulePath>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<ModulePath, BTreeSet<ModulePath>>,
        index: BTreeMap<&'a ModulePath, usize>,
        low: BTreeMap<&'a ModulePath, usize>,
        stack: Vec<&'a ModulePath>,
        on_stack: BTreeSet<&'a ModulePath>,
        groups: Vec<Vec<ModulePath>>,
    }
    fn visit<'a>(walk: &mut Walk<'a>, node: &'a ModulePath) {
        let next = walk.index.len();
        walk.index.insert(node, next);
        walk.low.insert(node, next);
        walk.stack.push(node);
        walk.on_stack.insert(node);
        for target in walk.edges.get(node).into_iter().flatten() {
            if !walk.index.contains_key(target) {
                visit(walk, target);
                let low = walk.low[node].min(walk.low[target]);
                walk.low.insert(node, low);
            } else if walk.on_stack.contains(target) {
                let low = walk.low[node].min(walk.index[target]);
                walk.low.insert(node, low);
            }
        }
        if walk.low[node] == walk.index[node] {
            let mut group = Vec::new();
            while let Some(member) = walk.stack.pop() {
                walk.on_stack.remove(member);
                group.push(member.clone());
                if member == node {
                    break;
                }
            }
            walk.groups.push(group);
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        groups: Vec::new(),
    };
    for node in edges.keys() {
        if !walk.index.contains_key(node) {
            visit(&mut walk, node);
        }
    }
    walk.groups
}
