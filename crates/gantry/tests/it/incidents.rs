//! Incidents and DORA figures against a real controller: a release the
//! analysis rolls back opens an incident with its verdict; an approver
//! closes it (a viewer may not); `gantry dora` computes the figures from
//! the same records.

use crate::harness::*;
use gantry_core::Phase;

const CANARY: &str = "strategy = \"canary\"\ncanary = { steps = [{ weight = 50, pause = \"2s\" }, { weight = 100 }], interval = \"250ms\", max_wait = \"30s\" }\n";

#[test]
fn a_rollback_opens_an_incident_an_approver_closes_it_and_dora_counts_it() {
    let (g, load) = serving(CANARY, &[("1.1.0", ""), ("1.2.0", "\"error_rate\": 0.5")]);
    g.gantry(&["deploy", "1.1.0", "--env", "production"]).ok();
    g.gantry(&["deploy", "1.2.0", "--env", "production"])
        .fails_with(3, "rolled_back");
    let bad = g.latest("production");
    assert_eq!(bad.phase, Phase::RolledBack);

    // One incident, the change record named, the verdict with its figures.
    let listed = g
        .gantry(&["incidents", "--env", "production", "-o", "json"])
        .ok()
        .stdout;
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let incidents = listed.as_array().unwrap();
    assert_eq!(incidents.len(), 1, "{listed}");
    let i = &incidents[0];
    assert_eq!(i["deployment"], bad.id);
    assert_eq!(i["kind"], "automatic");
    assert_eq!(i["release"], "1.2.0");
    assert_eq!(i["restored_to"], "1.1.0");
    assert_eq!(i["reason"], bad.reason.clone().unwrap());
    assert!(i["restored_at"].as_i64().unwrap() >= i["opened_at"].as_i64().unwrap());
    let id = i["id"].as_i64().unwrap().to_string();
    assert!(g
        .gantry(&["incidents", "--open"])
        .ok()
        .stdout
        .contains("open"));

    // A viewer may read it but not close it; an approver closes it, once.
    let viewer = g.enrol("vic", &["viewer"]);
    let as_viewer = [("GANTRY_TOKEN", viewer.as_str())];
    let run = g.gantry_env(
        &[
            "incident",
            "close",
            &id,
            "--summary",
            "s",
            "--follow-up",
            "f",
        ],
        &as_viewer,
    );
    assert!(
        run.code != 0 && run.stderr.contains("approve"),
        "{}",
        run.stderr
    );
    let approver = g.enrol("ann", &["approver"]);
    let as_approver = [("GANTRY_TOKEN", approver.as_str())];
    let run = g.gantry_env(
        &[
            "incident",
            "close",
            &id,
            "--summary",
            "",
            "--follow-up",
            "f",
        ],
        &as_approver,
    );
    assert!(run.stderr.contains("summary: empty"), "{}", run.stderr);
    g.gantry_env(
        &[
            "incident",
            "close",
            &id,
            "--summary",
            "1.2.0 failed half its requests: a broken index",
            "--follow-up",
            "an integration test for the index",
        ],
        &as_approver,
    )
    .ok();
    let shown = g.gantry(&["incident", "show", &id]).ok().stdout;
    assert!(
        shown.contains("closed:") && shown.contains("by ann") && shown.contains("a broken index"),
        "{shown}"
    );
    let again = g.gantry_env(
        &[
            "incident",
            "close",
            &id,
            "--summary",
            "x",
            "--follow-up",
            "y",
        ],
        &as_approver,
    );
    assert!(
        again.stderr.contains("already closed by ann"),
        "{}",
        again.stderr
    );
    assert!(g
        .gantry(&["incidents", "--open"])
        .ok()
        .stdout
        .contains("no incident"));
    // Closing is on the audit trail.
    let audit = g.gantry(&["audit", "list"]).ok().stdout;
    assert!(audit.contains(&format!("incident {id}")), "{audit}");

    // DORA from the same records: 1.0.0 and 1.1.0 went live, 1.2.0 failed.
    let f = g
        .gantry(&["dora", "--env", "production", "--since", "1d", "-o", "json"])
        .ok()
        .stdout;
    let f: serde_json::Value = serde_json::from_str(&f).unwrap();
    assert_eq!(f["deployments"], 2, "{f}");
    assert_eq!(
        (f["changes"].as_u64(), f["failed_changes"].as_u64()),
        (Some(3), Some(1))
    );
    assert!((f["change_failure_rate"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
    assert_eq!(f["time_to_restore"]["count"], 1);
    assert_eq!(f["lead_time"]["count"], 2);
    assert_eq!(f["rework"], 0);
    let table = g.gantry(&["dora", "--env", "production"]).ok().stdout;
    assert!(
        table.contains("change failure rate    33.3% (1 of 3 changes)"),
        "{table}"
    );
    // The same figures, over 30 days, on the controller's /metrics.
    let (code, metrics) = http(&g.api_url(), "GET", "/metrics", Some(&g.token()), "");
    assert_eq!(code, 200);
    let line = metrics
        .lines()
        .find(|l| l.starts_with("gantry_dora_change_failure_rate{env=\"production\"}"))
        .unwrap_or_else(|| panic!("{metrics}"));
    let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((value - 1.0 / 3.0).abs() < 1e-9, "{line}");
    assert!(metrics.contains("gantry_dora_deployments_per_day{env=\"production\"}"));
    let bad_since = g.gantry(&["dora", "--env", "production", "--since", "soon"]);
    assert!(
        bad_since
            .stderr
            .contains("since: \"soon\" is not a duration"),
        "{}",
        bad_since.stderr
    );
    let (ok, failed) = load.finish();
    assert!(failed * 5 < ok, "{failed} of {ok}");
}

#[test]
fn a_manual_rollback_is_an_incident_restored_when_it_succeeds() {
    let (g, _load) = serving("", &[("1.1.0", "")]);
    g.gantry(&["deploy", "1.1.0", "--env", "production"]).ok();
    g.gantry(&["rollback", "--env", "production"]).ok();
    let back = g.latest("production");
    let listed = g.gantry(&["incidents", "-o", "json"]).ok().stdout;
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let i = &listed[0];
    assert_eq!(i["deployment"], back.id);
    assert_eq!(i["kind"], "manual");
    assert_eq!(i["release"], "1.1.0");
    assert_eq!(i["restored_to"], "1.0.0");
    assert!(i["restored_at"].is_number(), "{i}");
    let f = g
        .gantry(&["dora", "--env", "production", "-o", "json"])
        .ok()
        .stdout;
    let f: serde_json::Value = serde_json::from_str(&f).unwrap();
    // 1.1.0 went live and was withdrawn by a person: a failed change; the rollback is rework.
    assert_eq!(
        (f["failed_changes"].as_u64(), f["rework"].as_u64()),
        (Some(1), Some(1)),
        "{f}"
    );
}

/// The runbook's close-out: a finished deployment's change record closed
/// once with its final status, a summary and evidence files kept as
/// uploaded; a running one cannot be, nor a closed one again.
#[test]
fn a_finished_deployment_is_closed_once_with_its_status_summary_and_evidence() {
    let g = Gantry::start();
    g.register("1.0.0", "");
    let id = deploy_id(
        &g.gantry(&["deploy", "1.0.0", "--env", "production", "--detach"])
            .ok(),
    );
    g.wait_finished(id);
    let shot = g.dir.path().join("dashboard.png");
    let png: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    std::fs::write(&shot, &png).unwrap();
    let smoke = g.dir.path().join("smoke.log");
    std::fs::write(&smoke, "GET /orders 200\nGET /pay 200\n").unwrap();
    let out = g
        .gantry(&[
            "close",
            &id.to_string(),
            "--summary",
            "orders and payments checked by hand; dashboards green",
            "--evidence",
            shot.to_str().unwrap(),
            "--evidence",
            smoke.to_str().unwrap(),
        ])
        .ok()
        .stdout;
    assert!(
        out.contains(&format!(
            "deployment {id} closed (succeeded) with 2 evidence file(s)"
        )),
        "{out}"
    );
    let closure = g.deployment(id).closure.expect("closed");
    assert_eq!(closure.status, "succeeded");
    assert_eq!(closure.closed_by, "admin");
    let names: Vec<&str> = closure.evidence.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["dashboard.png", "smoke.log"]);
    // The file comes back as it went in.
    let (status, body) = http_bytes(
        &g.api_url(),
        &format!(
            "/api/v1/deployments/{id}/evidence/{}",
            closure.evidence[0].digest
        ),
        &g.token(),
    );
    assert_eq!((status, body.len()), (200, png.len()));
    assert_eq!(body, png);
    // Once only; and the record says so.
    g.gantry(&["close", &id.to_string(), "--summary", "again"])
        .fails_with(1, "was closed by admin");
    g.gantry(&["close", "999", "--summary", "x"])
        .fails_with(1, "deployment 999 does not exist");
    // A running deployment is closed once it has finished.
    g.register("1.1.0", "");
    let running = deploy_id(
        &g.gantry(&["deploy", "1.1.0", "--env", "staging", "--detach"])
            .ok(),
    );
    let early = g.gantry(&["close", &running.to_string(), "--summary", "too soon"]);
    if g.deployment(running).phase.is_terminal() {
        // It finished first: closing it is allowed, and says so.
        assert_eq!(early.code, 0, "{}", early.stderr);
    } else {
        assert!(
            early
                .stderr
                .contains("its change record is closed once it has finished"),
            "{}",
            early.stderr
        );
    }
    // Bad names and empty summaries are refused, naming the field.
    g.wait_finished(running);
    let other = deploy_id(
        &g.gantry(&["deploy", "1.0.0", "--env", "development", "--detach"])
            .ok(),
    );
    g.wait_finished(other);
    let hidden = g.dir.path().join(".env");
    std::fs::write(&hidden, "x").unwrap();
    g.gantry(&[
        "close",
        &other.to_string(),
        "--summary",
        "ok",
        "--evidence",
        hidden.to_str().unwrap(),
    ])
    .fails_with(1, "name: \".env\"");
    g.gantry(&["close", &other.to_string(), "--summary", " "])
        .fails_with(1, "summary: empty");
    assert!(
        g.deployment(other).closure.is_none(),
        "nothing half-applied"
    );
    let audit = g.gantry(&["audit", "list"]).ok().stdout;
    assert!(
        audit.contains(&format!("deployment {id} closed (succeeded)")),
        "{audit}"
    );
}

/// GET `path` with `token`: the status and the body's bytes (the answer
/// carries its length; it is not chunked).
fn http_bytes(base: &str, path: &str, token: &str) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let end = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&resp[..end]).to_ascii_lowercase();
    assert!(!head.contains("chunked"), "{head}");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, resp[end + 4..].to_vec())
}
