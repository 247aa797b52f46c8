//! Schemathesis, the property-based API fuzzer from PyPI, in a virtual
//! environment of its own under the target directory (kept between runs
//! like the build): created and installed by the first test that needs it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The release the contract test runs.
pub const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// The `st` command, installed once per test process.
pub fn schemathesis() -> &'static Path {
    static DONE: OnceLock<PathBuf> = OnceLock::new();
    DONE.get_or_init(|| {
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("schemathesis-4.32.5");
        let st = venv.join("bin/st");
        if !st.exists() {
            run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
            run(Command::new(venv.join("bin/pip")).args(["install", "--quiet", SCHEMATHESIS]));
        }
        st
    })
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .expect("python3 (with venv and pip) is on the PATH");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
