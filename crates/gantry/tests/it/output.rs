//! `--output json` on the read commands: the answer is the API's own type
//! (it parses as the `gantry-api` type and equals what the API sends), and
//! values the CLI puts in a path cannot change which route it calls.

use crate::harness::*;
use gantry_api::{AuditPage, Identity, ReleaseRecord, StatusView, TokenRecord, User};
use gantry_core::{Deployment, Phase};
use serde::de::DeserializeOwned;

/// Runs `gantry ARGS --output json` and parses its standard output as `T`.
#[track_caller]
fn json<T: DeserializeOwned>(g: &Gantry, args: &[&str]) -> T {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let run = g.gantry(&all).ok();
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "gantry {all:?} printed no {}: {e}\n{}",
            std::any::type_name::<T>(),
            run.stdout
        )
    })
}

#[test]
fn read_commands_print_the_api_answer_as_json() {
    let g = Gantry::start();
    g.register("1.0.0", "");
    let id = deploy_id(
        &g.gantry(&["deploy", "1.0.0", "--env", "staging", "--detach"])
            .ok(),
    );
    g.wait_finished(id);

    let releases: Vec<ReleaseRecord> = json(&g, &["release", "list"]);
    assert_eq!(releases.len(), 1);
    assert_eq!(releases[0].version.to_string(), "1.0.0");
    assert_eq!(
        serde_json::to_value(&releases).unwrap(),
        g.api_json("/releases")
    );
    let one: ReleaseRecord = json(&g, &["release", "show", "1.0.0"]);
    assert_eq!(one, releases[0]);

    let status: StatusView = json(&g, &["status"]);
    let staging = status
        .environments
        .iter()
        .find(|e| e.name == "staging")
        .unwrap();
    assert_eq!(staging.version.as_deref(), Some("1.0.0"));

    let history: Vec<Deployment> = json(&g, &["history", "--env", "staging"]);
    assert_eq!(history.len(), 1);
    assert_eq!((history[0].id, history[0].phase), (id, Phase::Succeeded));

    let log: gantry_api::DeploymentLog = json(&g, &["log", &id.to_string()]);
    assert_eq!(log.deployment.id, id);
    assert!(!log.log.is_empty(), "a finished deployment has a log");

    let me: Identity = json(&g, &["whoami"]);
    assert_eq!(me.user, "admin");
    let users: Vec<User> = json(&g, &["user", "list"]);
    assert_eq!(serde_json::to_value(&users).unwrap(), g.api_json("/users"));
    let tokens: Vec<TokenRecord> = json(&g, &["token", "list"]);
    assert_eq!(
        serde_json::to_value(&tokens).unwrap(),
        g.api_json("/tokens")
    );
    let audit: AuditPage = json(&g, &["audit", "list"]);
    assert!(
        audit
            .records
            .iter()
            .any(|r| r.entry.action.contains("deployments")),
        "{audit:?}"
    );
    let verified: Vec<gantry_api::VerifyResult> = json(&g, &["release", "verify"]);
    assert!(verified.iter().all(|v| v.ok), "{verified:?}");
    let approvals: Vec<gantry_api::PendingApproval> = json(&g, &["approvals"]);
    assert!(approvals.is_empty());
    let gates: gantry_api::GatesView = json(&g, &["gates", "1.0.0", "--env", "staging"]);
    assert_eq!(gates.env, "staging");
    let notices: Vec<gantry_api::Delivery> = json(&g, &["notifications"]);
    assert_eq!(
        serde_json::to_value(&notices).unwrap(),
        g.api_json("/notifications?limit=50")
    );

    // The same commands print tables by default.
    let table = g.gantry(&["release", "list"]).ok().stdout;
    assert!(table.starts_with("VERSION"), "{table}");
    let table = g
        .gantry(&["history", "--env", "staging", "-o", "table"])
        .ok()
        .stdout;
    assert!(table.contains("succeeded"), "{table}");
    // A format that does not exist is a usage error naming the ones that do.
    g.gantry(&["status", "--output", "yaml"])
        .fails_with(2, "[possible values: table, json]");
}

#[test]
fn a_value_in_a_path_is_one_segment_and_cannot_reach_another_route() {
    let g = Gantry::start();
    // Unencoded, `/releases/../tokens` is `/tokens` (the token list) and
    // `?` starts a query: both stay inside the one segment.
    for name in ["../tokens", "..", "1.0.0?x=1", "a/b"] {
        let run = g.gantry(&["release", "show", name]);
        assert_eq!(
            run.code, 1,
            "gantry release show {name:?}: {}{}",
            run.stdout, run.stderr
        );
        assert!(
            !run.stdout.contains("admin"),
            "{name:?} reached another route: {}",
            run.stdout
        );
    }
    g.gantry(&["release", "show", "../tokens"])
        .fails_with(1, "../tokens");
}
