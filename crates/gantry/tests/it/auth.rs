use crate::harness::*;

#[test]
fn api_requires_the_bearer_token() {
    let g = Gantry::start();
    let url = g.api_url();
    let (status, body) = http(&url, "GET", "/api/v1/releases", None, "");
    assert_eq!(status, 401);
    assert!(
        body.contains("\"code\":\"unauthorized\"") && body.contains("missing bearer token"),
        "{body}"
    );
    let (status, body) = http(&url, "GET", "/api/v1/releases", Some("not-the-token"), "");
    assert_eq!(status, 401);
    assert!(body.contains("the bearer token is not valid"), "{body}");
    let (status, _) = http(&url, "POST", "/api/v1/shutdown", Some("wrong"), "{}");
    assert_eq!(status, 401, "a refused shutdown changes nothing");
    assert_eq!(
        http(&url, "GET", "/api/v1/releases", Some(&g.token()), "").0,
        200
    );
    // The CLI with a wrong token says so.
    g.gantry_env(&["release", "list"], &[("GANTRY_TOKEN", "wrong")])
        .fails_with(1, "the bearer token is not valid");
    // The token file is private to the controller's user.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(g.data().join("admin.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn malformed_requests_get_clear_errors() {
    let g = Gantry::start();
    let url = g.api_url();
    let t = g.token();
    let (status, body) = http(
        &url,
        "POST",
        "/api/v1/deployments",
        Some(&t),
        "{\"env\": \"staging\"}",
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("\"code\":\"invalid_body\"") && body.contains("missing field `version`"),
        "{body}"
    );
    let (status, body) = http(
        &url,
        "POST",
        "/api/v1/deployments",
        Some(&t),
        "{\"env\": \"staging\", \"version\": \"1.0.0\", \"force\": true}",
    );
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("unknown field `force`"), "{body}");
    let (status, body) = http(&url, "POST", "/api/v1/deployments", Some(&t), "{not json");
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("\"code\":\"invalid_body\""), "{body}");
    let (status, body) = http(
        &url,
        "POST",
        "/api/v1/deployments/1/explode",
        Some(&t),
        "{}",
    );
    assert_eq!(status, 404, "{body}");
    // Error answers are read raw: their shape is what is tested.
    let message: gantry_api::ErrorBody = serde_json::from_str(&body).unwrap();
    assert_eq!(
        message.error.message,
        "no action \"explode\" on a deployment; known: abort, promote, pause, resume"
    );
    let (status, body) = http(&url, "GET", "/api/v1/nope", Some(&t), "");
    assert_eq!(status, 404);
    assert!(body.contains("\"code\":\"not_found\""), "{body}");
}

#[test]
fn a_second_controller_on_the_same_data_dir_is_refused() {
    let g = Gantry::start();
    let out = std::process::Command::new(GANTRY)
        .arg("--data-dir")
        .arg(g.data())
        .args(["server", "--listen", "127.0.0.1:0", "--config"])
        .arg(g.config_path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("another controller is already using data directory"));
}

#[test]
fn every_refusal_is_json_and_changes_nothing() {
    let g = Gantry::start();
    let url = g.api_url();
    let t = g.token();
    let error_of = |(code, body): (u16, String)| -> (u16, String) {
        let v: gantry_api::ErrorBody = serde_json::from_str(&body)
            .unwrap_or_else(|_| panic!("not the API's error shape ({code}): {body}"));
        (code, v.error.message)
    };
    let (code, msg) = error_of(http(
        &url,
        "GET",
        "/api/v1/deployments/not-a-number",
        Some(&t),
        "",
    ));
    assert_eq!(code, 400);
    assert!(msg.starts_with("path:"), "{msg}");
    let (code, msg) = error_of(http(
        &url,
        "GET",
        "/api/v1/deployments?limit=lots",
        Some(&t),
        "",
    ));
    assert_eq!(code, 400);
    assert!(msg.starts_with("query:"), "{msg}");
    let (code, msg) = error_of(http(&url, "DELETE", "/api/v1/releases", Some(&t), ""));
    assert_eq!(code, 405);
    assert!(msg.contains("does not take that method"), "{msg}");
    // An oversized JSON body is refused before anything reads it.
    let huge = format!(
        "{{\"env\": \"staging\", \"version\": \"{}\"}}",
        "9".repeat(100_000)
    );
    let (code, msg) = error_of(http(&url, "POST", "/api/v1/deployments", Some(&t), &huge));
    assert_eq!(code, 413);
    assert!(msg.contains("request body is over"), "{msg}");
    assert!(g.deployments(None).is_empty());
    // A viewer may look, not approve.
    g.gantry(&["user", "add", "vera", "--role", "viewer"]).ok();
    let viewer = g
        .gantry(&["token", "create", "--user", "vera"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    let (code, msg) = error_of(http(
        &url,
        "POST",
        "/api/v1/deployments/1/approve",
        Some(&viewer),
        "{}",
    ));
    assert_eq!(code, 403);
    assert!(msg.contains("vera (viewer) may not approve"), "{msg}");
}

/// A real store failure: the tokens table is renamed away under the running
/// controller, so looking up a user's token fails inside SQLite.
#[test]
fn a_token_the_store_cannot_check_is_a_server_error_on_the_trail() {
    let g = Gantry::start();
    let url = g.api_url();
    let bob = g.enrol("bob", &["viewer"]);
    assert_eq!(http(&url, "GET", "/api/v1/whoami", Some(&bob), "").0, 200);
    let db = rusqlite::Connection::open(g.data().join("gantry.db")).unwrap();
    db.execute_batch("ALTER TABLE tokens RENAME TO tokens_away")
        .unwrap();
    let (status, body) = http(&url, "GET", "/api/v1/whoami", Some(&bob), "");
    assert_eq!(status, 500, "the token may be good: {body}");
    assert!(
        body.contains("\"code\":\"internal\"") && body.contains("cannot check the bearer token"),
        "{body}"
    );
    assert!(
        !body.contains("tokens"),
        "SQLite's words stay in the log: {body}"
    );
    db.execute_batch("ALTER TABLE tokens_away RENAME TO tokens")
        .unwrap();
    assert_eq!(http(&url, "GET", "/api/v1/whoami", Some(&bob), "").0, 200);
    // The failure is on the trail, though the request only read.
    let page = g.audit_page(Some(10_000));
    let failed: Vec<_> = page
        .records
        .iter()
        .filter(|r| r.entry.action == "GET /api/v1/whoami")
        .collect();
    assert_eq!(failed.len(), 1, "{:?}", page.records);
    assert_eq!(failed[0].entry.outcome, "failed 500");
    assert!(
        g.controller_log().contains("no such table: tokens"),
        "the cause is in the controller's log"
    );
}
