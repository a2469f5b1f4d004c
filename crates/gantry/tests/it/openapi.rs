//! The API against its own OpenAPI document, with schemathesis (PyPI)
//! generating inputs: no 5xx and no undocumented status, on any input.

use crate::harness::*;

#[test]
fn the_api_holds_to_its_openapi_document() {
    let g = Gantry::start();
    g.register("1.0.0", "");
    g.gantry(&["deploy", "1.0.0", "--env", "development"]).ok();
    let url = g.api_url();

    // What is served is what is checked in.
    let (code, served) = http(&url, "GET", "/openapi.json", None, "");
    assert_eq!(code, 200);
    let served: serde_json::Value = serde_json::from_str(&served).unwrap();
    let checked_in: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/openapi.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(served, checked_in);

    let out = std::process::Command::new("schemathesis")
        .args(["run", &format!("{url}/openapi.json")])
        .args(["--url", &url])
        .args(["-H", &format!("Authorization: Bearer {}", g.token())])
        .args(["--checks", "not_a_server_error,status_code_conformance"])
        // Stopping the controller, or a stream that never ends, is not for fuzzing.
        .args([
            "--exclude-path",
            "/api/v1/shutdown",
            "--exclude-path",
            "/api/v1/events",
        ])
        .args([
            "--max-examples",
            "30",
            "--workers",
            "1",
            "--request-timeout",
            "10",
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        .env("NO_COLOR", "1")
        .output()
        .expect("schemathesis is installed (scripts/test installs it from PyPI)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}\n\ncontroller log:\n{}",
        g.controller_log()
    );
    eprintln!("{report}");
    // It really ran the operations.
    assert!(report.contains("passed"), "{report}");
}
