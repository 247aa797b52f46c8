//! The Durable Streams protocol's own conformance suite
//! (`@durable-streams/server-conformance-tests`, from the npm registry via
//! `support/node.rs`), run with vitest against a base URL.

use std::path::Path;

use serde_json::Value;

/// How a run of the suite ended.
pub struct Outcome {
    pub total: usize,
    pub passed: usize,
    /// Skipped by the suite itself (its opt-in tests).
    pub skipped: usize,
    /// The failed tests' full names.
    pub failed: Vec<String>,
}

impl Outcome {
    /// Prints the counts and fails unless the whole suite ran and passed.
    pub fn all_passed(&self, how: &str) {
        println!(
            "durable streams conformance {how}: {} passed, {} failed, {} skipped by the suite (its opt-in subscription tests), of {}",
            self.passed,
            self.failed.len(),
            self.skipped,
            self.total
        );
        assert!(self.total > 300, "the suite ran: {} tests", self.total);
        assert!(self.failed.is_empty(), "failed: {:#?}", self.failed);
    }
}

/// Runs the whole suite against `base` (`http://…/ds/{tenant}`), writing
/// its files under `dir`.
pub async fn run(dir: &Path, base: String) -> Outcome {
    let results = dir.join("results.json");
    let vitest = dir.join("vitest.config.mjs");
    let js = super::node::installed().to_owned();
    std::fs::write(
        &vitest,
        format!(
            "export default {{ test: {{ root: {js:?}, include: [\"node_modules/@durable-streams/server-conformance-tests/dist/test-runner.js\"], exclude: [], testTimeout: 30000 }} }}\n"
        ),
    )
    .unwrap();
    let run = {
        let (vitest, results) = (vitest.clone(), results.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("npx")
                .args(["vitest", "run", "--config"])
                .arg(&vitest)
                .args(["--reporter=json", "--outputFile"])
                .arg(&results)
                .env("CONFORMANCE_TEST_URL", base)
                .current_dir(&js)
                .output()
                .unwrap()
        })
    };
    let output = run.await.unwrap();
    let report: Value = serde_json::from_slice(&std::fs::read(&results).unwrap_or_else(|_| {
        panic!(
            "vitest wrote no report: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    }))
    .unwrap();
    outcome(&report)
}

fn outcome(report: &Value) -> Outcome {
    let tests: Vec<&Value> = report["testResults"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|file| file["assertionResults"].as_array().unwrap())
        .collect();
    let count = |status: &str| tests.iter().filter(|test| test["status"] == status).count();
    Outcome {
        total: tests.len(),
        passed: count("passed"),
        skipped: count("skipped") + count("pending"),
        failed: tests
            .iter()
            .filter(|test| test["status"] == "failed")
            .map(|test| test["fullName"].as_str().unwrap_or("").to_owned())
            .collect(),
    }
}
