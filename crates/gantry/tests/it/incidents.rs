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
