//! The client libraries from the npm registry, for tests that drive
//! tertulia with them: `tests/js/package.json` installed once per run with
//! `npm ci` (its lock pins every version), and `@n8n/chat`'s browser bundle
//! fetched with `npm pack` (its package names a dependency version the
//! registry does not have, so it cannot be installed; the bundle needs none).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

/// The `@n8n/chat` release the widget test loads.
pub const N8N_CHAT: &str = "@n8n/chat@1.37.0";

pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

/// Installs the packages once per test process; later callers wait for it.
pub fn installed() -> &'static Path {
    static DONE: OnceLock<PathBuf> = OnceLock::new();
    DONE.get_or_init(|| {
        let dir = js_dir();
        // Installed, and with every package `package.json` names now.
        let manifest: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("package.json")).unwrap())
                .unwrap();
        let complete = manifest["dependencies"]
            .as_object()
            .unwrap()
            .keys()
            .all(|name| dir.join("node_modules").join(name).exists());
        if !complete || !dir.join("node_modules/.package-lock.json").exists() {
            run(Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir));
        }
        let vendor = dir.join("vendor");
        if !vendor.join("package/dist/chat.bundle.es.js").exists() {
            std::fs::create_dir_all(&vendor).unwrap();
            run(Command::new("npm")
                .args(["pack", N8N_CHAT, "--pack-destination", "."])
                .current_dir(&vendor));
            let tarball = std::fs::read_dir(&vendor)
                .unwrap()
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .find(|path| path.extension().is_some_and(|ext| ext == "tgz"))
                .expect("npm pack wrote a tarball");
            run(Command::new("tar")
                .arg("xzf")
                .arg(&tarball)
                .current_dir(&vendor));
        }
        dir
    })
}

/// The `@n8n/chat` bundle and its stylesheet.
pub fn n8n_chat_dist() -> PathBuf {
    installed().join("vendor/package/dist")
}

fn run(command: &mut Command) {
    let output = command.output().expect("npm and tar are on the PATH");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `tests/js/{script}` with Node and these variables; its last stdout
/// line is its JSON result.
pub async fn run_script(script: &str, vars: &[(&str, String)]) -> Value {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(name, value)| (name.to_string(), value.clone()))
        .collect();
    let script_path = js_dir().join(script);
    let run = tokio::task::spawn_blocking(move || {
        let dir = installed();
        Command::new("node")
            .arg(script_path)
            .current_dir(dir)
            .envs(vars)
            .output()
    });
    let output = tokio::time::timeout(std::time::Duration::from_secs(90), run)
        .await
        .expect("the script finished within 90 s")
        .unwrap()
        .expect("node is on the PATH");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{script} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|_| panic!("{script} printed no JSON: {stdout}"))
}
