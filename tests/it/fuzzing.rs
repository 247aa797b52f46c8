//! Schemathesis against a live server, over every documented operation:
//! with an API key (sessions, conversations, webchat, analysis, client
//! libraries), a staff key (console), the admin token (admin) and nothing
//! (health, pages). No 5xx, and every answer conforms to the document:
//! status code, content type and body schema.

use std::process::Command;

use crate::support::python::schemathesis;
use crate::support::server::*;

const ADMIN: &str = "adm_fuzzing";
/// Examples per operation and phase: the four runs stay well under three
/// minutes on two cores.
const EXAMPLES: &str = "25";
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_answer_off_the_document() {
    let st = schemathesis();
    let mut config = config();
    config.auth.admin_token = ADMIN.into();
    let server = TestServer::start(config).await;
    let staff = make_key(&server, ADMIN, "acme", "staff").await;
    let document = server.url("/openapi.json");
    let runs: [(&[&str], Option<String>); 4] = [
        (
            &[
                "sessions",
                "conversations",
                "webchat",
                "analysis",
                "client libraries",
            ],
            Some(format!("X-API-Key: {KEY}")),
        ),
        (&["console"], Some(format!("X-API-Key: {staff}"))),
        (&["admin"], Some(format!("Authorization: Bearer {ADMIN}"))),
        (&["operations", "pages"], None),
    ];
    let mut report = Vec::new();
    for (tags, header) in runs {
        let mut command = Command::new(st);
        command
            .args([
                "run",
                &document,
                "--max-examples",
                EXAMPLES,
                "--checks",
                CHECKS,
            ])
            .args(["--seed", "17", "--no-color"])
            // It keeps a cache of what it found in its working directory.
            .current_dir(env!("CARGO_TARGET_TMPDIR"));
        for tag in tags {
            command.args(["--include-tag", tag]);
        }
        if let Some(header) = header {
            command.args(["-H", &header]);
        }
        let output = tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "schemathesis over {tags:?} found problems:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let cases = stdout
            .lines()
            .skip_while(|line| !line.contains("Test cases:"))
            .nth(1)
            .unwrap_or_default()
            .trim()
            .to_owned();
        report.push(format!("{tags:?}: {cases}"));
    }
    eprintln!("schemathesis: {}", report.join("; "));
}
