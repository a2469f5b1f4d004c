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

    // CI keeps to 30 examples per operation; a deeper hunt sets more.
    let examples = std::env::var("GANTRY_FUZZ_EXAMPLES").unwrap_or_else(|_| "30".into());
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
            &examples,
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

/// The router, the permission check and the document come from one route
/// table; this holds the served API to it from outside: every documented
/// operation is routed (no 404), asks for a token when the document says
/// so, refuses a viewer what the document says needs more than `read`, and
/// a documented path takes no method the document does not list.
#[test]
fn every_documented_operation_is_routed_behind_the_permission_it_names() {
    let g = Gantry::start();
    let viewer = g.enrol("vic", &["viewer"]);
    let url = g.api_url();
    let (code, doc) = http(&url, "GET", "/openapi.json", None, "");
    assert_eq!(code, 200);
    // The OpenAPI document itself: untyped JSON.
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() > 30, "{} paths", paths.len());
    for (path, ops) in paths {
        let concrete = path
            .replace("{id}", "1")
            .replace("{version}", "1.0.0")
            .replace("{action}", "pause")
            .replace("{kind}", "unit");
        let ops = ops.as_object().unwrap();
        for (method, op) in ops {
            let method = method.to_uppercase();
            let what = format!("{method} {path}");
            let (anonymous, body) = http(&url, &method, &concrete, None, "");
            match op["x-gantry-permission"].as_str() {
                Some(permission) => {
                    assert_eq!(anonymous, 401, "{what} without a token: {body}");
                    if path == "/api/v1/events" {
                        continue; // a stream that never ends
                    }
                    let (as_viewer, body) = http(&url, &method, &concrete, Some(&viewer), "");
                    if permission == "read" {
                        let routed = as_viewer != 405 && !body.contains("no such API route");
                        assert!(
                            routed && as_viewer != 401 && as_viewer != 403,
                            "{what} as a viewer: {as_viewer} {body}"
                        );
                    } else {
                        assert_eq!(as_viewer, 403, "{what} ({permission}) as a viewer: {body}");
                    }
                }
                None => assert_eq!(anonymous, 200, "{what} is public: {body}"),
            }
        }
        // A method the document does not list is not routed either.
        if !ops.contains_key("delete") {
            let (code, body) = http(&url, "DELETE", &concrete, Some(&g.token()), "");
            assert_eq!(code, 405, "DELETE {path}: {body}");
        }
    }
}

/// The typed answers the tests and the CLI read lose nothing the controller
/// sends: each read operation's answer, read through the typed client and
/// written back, is the very JSON the controller sent. A field the server
/// adds without adding it to `gantry-api` fails here, not silently.
#[test]
fn typed_answers_carry_every_field_the_controller_sends() {
    use gantry_api::{AuditQuery, DeliveryQuery, GatesQuery, ListQuery, TokenQuery, TrafficQuery};
    fn same(g: &Gantry, path: &str, typed: impl serde::Serialize) {
        let typed = serde_json::to_value(typed).unwrap();
        assert_eq!(
            typed,
            g.api_json(path),
            "{path}: typed (left), as sent (right)"
        );
    }
    let g = Gantry::start();
    g.register("1.0.0", "");
    g.gantry(&["deploy", "1.0.0", "--env", "development"]).ok();
    g.gantry(&["user", "add", "vic", "--role", "viewer"]).ok();
    g.gantry(&["token", "create", "--user", "vic"]).ok();
    let c = g.client();
    let gates = GatesQuery {
        version: "1.0.0".into(),
        env: "production".into(),
    };
    same(&g, "/releases", g.call(c.releases()));
    same(&g, "/releases/1.0.0", g.call(c.release("1.0.0")));
    same(&g, "/releases/1.0.0/evidence", g.call(c.evidence("1.0.0")));
    same(
        &g,
        "/deployments",
        g.call(c.deployments(&ListQuery::default())),
    );
    same(&g, "/deployments/1", g.call(c.deployment(1)));
    same(&g, "/deployments/1/log", g.call(c.deployment_log(1)));
    same(&g, "/status", g.call(c.status()));
    let traffic = TrafficQuery {
        env: "development".into(),
        above_ms: None,
    };
    same(&g, "/traffic?env=development", g.call(c.traffic(&traffic)));
    same(&g, "/audit", g.call(c.audit(&AuditQuery::default())));
    same(&g, "/audit/verify", g.call(c.audit_verify()));
    same(&g, "/audit/checkpoint", g.call(c.audit_checkpoint()));
    same(&g, "/audit/public-key", g.call(c.audit_public_key()));
    same(&g, "/whoami", g.call(c.whoami()));
    same(&g, "/users", g.call(c.users()));
    same(&g, "/tokens", g.call(c.tokens(&TokenQuery::default())));
    same(&g, "/approvals", g.call(c.approvals()));
    let notifications = DeliveryQuery::default();
    same(
        &g,
        "/notifications",
        g.call(c.notifications(&notifications)),
    );
    same(
        &g,
        "/gates?version=1.0.0&env=production",
        g.call(c.gates(&gates)),
    );
    same(
        &g,
        "/plans?version=1.0.0&env=production",
        g.call(c.plan(&gates)),
    );
    // The public status page, but for the moment it was made.
    let mut page = serde_json::to_value(g.call(c.status_page())).unwrap();
    let (_, body) = http(&g.api_url(), "GET", "/status.json", None, "");
    let mut sent: serde_json::Value = serde_json::from_str(&body).unwrap();
    page["generated_at"] = 0.into();
    sent["generated_at"] = 0.into();
    assert_eq!(page, sent, "/status.json: typed (left), as sent (right)");
}
