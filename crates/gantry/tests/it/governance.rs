//! Kept as one file though long: the governance stories share helpers
//! (tokens minted by the admin, calls as a user, the audit records, sample
//! reports); one file per concern would scatter those fixtures.
//!
//! Governance as a user meets it: users, roles and tokens; approvals and
//! change types; freezes; evidence, gates and the promotion path.

use crate::harness::*;
use gantry_api::EvidenceRecord;
use gantry_core::audit::AuditRecord;
use gantry_core::evidence::EvidenceKind;
use gantry_core::governance::ChangeType;
use gantry_core::DeploymentKind;
use serde_json::Value;
use std::time::Duration;

/// Adds a user with `roles` and returns a token they minted themselves
/// (with the one the admin minted for them, which that revokes).
/// A token the admin mints for `name`.
fn minted_by_admin(g: &Gantry, name: &str) -> String {
    let run = g.gantry(&["token", "create", "--user", name]).ok();
    let token = run.stdout.trim().to_owned();
    assert!(token.starts_with("gantry_"), "{}", run.stdout);
    token
}

fn as_user(g: &Gantry, token: &str, args: &[&str]) -> Run {
    g.gantry_env(args, &[("GANTRY_TOKEN", token)])
}

/// An audit record's `detail`: free-form JSON text, so read as a `Value`.
fn detail(r: &AuditRecord) -> Value {
    serde_json::from_str(&r.entry.detail).unwrap()
}

fn evidence(g: &Gantry, version: &str) -> Vec<EvidenceRecord> {
    g.call(g.client().evidence(version))
}

#[test]
fn roles_decide_what_each_token_may_do() {
    let g = Gantry::start();
    let viewer = g.enrol("vic", &["viewer"]);
    let deployer = g.enrol("alice", &["deployer"]);
    g.register("1.0.0", "");

    as_user(&g, &viewer, &["release", "list"]).ok();
    as_user(&g, &viewer, &["whoami"]).ok();
    as_user(&g, &viewer, &["deploy", "1.0.0", "--env", "development"])
        .fails_with(1, "vic (viewer) may not deploy");
    as_user(
        &g,
        &deployer,
        &["user", "add", "mallory", "--role", "admin"],
    )
    .fails_with(1, "alice (deployer) may not administer");
    assert!(
        !g.gantry(&["user", "list"]).ok().stdout.contains("mallory"),
        "a refused action changes nothing"
    );
    // The refusal is on the audit trail, with who was refused.
    let refused = g
        .audit_records()
        .into_iter()
        .find(|r| r.entry.actor == "vic" && r.entry.outcome == "refused 403")
        .expect("the refused deploy is audited");
    assert_eq!(refused.entry.action, "POST /api/v1/deployments");

    // The deployer deploys under their own name.
    let d = deploy_id(&as_user(
        &g,
        &deployer,
        &["deploy", "1.0.0", "--env", "development", "--detach"],
    ));
    assert_eq!(g.wait_finished(d).requested_by, "alice");

    // Only a hash of the secret is stored, and never shown.
    let tokens = g.gantry(&["token", "list"]).ok().stdout;
    let secret = deployer.rsplit('_').next().unwrap();
    assert!(!tokens.contains(secret));
    let db = std::fs::read(g.data().join("gantry.db")).unwrap();
    assert!(
        !db.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the token's secret is not in the database"
    );

    // Revoked: refused with the reason.
    let id = deployer.split('_').nth(1).unwrap();
    g.gantry(&["token", "revoke", id]).ok();
    as_user(&g, &deployer, &["release", "list"]).fails_with(1, &format!("token {id} was revoked"));
    g.gantry(&["token", "revoke", id])
        .fails_with(1, "already revoked");

    // Expired: refused with when.
    g.gantry(&["user", "add", "temp", "--role", "viewer"]).ok();
    let short = g
        .gantry(&["token", "create", "--user", "temp", "--expires", "300ms"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    as_user(&g, &short, &["release", "list"]).ok();
    let as_short = g.client().as_holder_of(&short);
    wait_until("the token to expire", Duration::from_secs(5), || {
        g.try_call(as_short.releases())
            .is_err_and(|e| e.status() == Some(401))
    });
    let refused = g.try_call(as_short.releases()).unwrap_err();
    assert!(refused.to_string().contains("expired at"), "{refused}");

    // Bad input: unknown role, duplicate user, token for nobody.
    g.gantry(&["user", "add", "x", "--role", "superuser"])
        .fails_with(1, "unknown role \"superuser\"");
    g.gantry(&["user", "add", "vic", "--role", "viewer"])
        .fails_with(1, "user vic already exists");
    g.gantry(&["token", "create", "--user", "nobody"])
        .fails_with(1, "user nobody does not exist");
}

#[test]
fn a_token_minted_for_someone_else_gives_no_verdicts_and_every_mint_is_audited() {
    let g = Gantry::start_with_tail("100ms", APPROVAL);
    let alice = g.enrol("alice", &["deployer"]);
    g.gantry(&["user", "add", "bob", "--role", "approver"]).ok();
    let for_bob = minted_by_admin(&g, "bob");
    g.register("1.0.0", "");
    let d = deploy_id(&as_user(
        &g,
        &alice,
        &["deploy", "1.0.0", "--env", "production", "--detach"],
    ));
    g.wait_phase(d, Phase::AwaitingApproval);

    // The admin who minted bob's token cannot approve as bob with it.
    let bob_id = for_bob.split('_').nth(1).unwrap().to_owned();
    as_user(&g, &for_bob, &["approve", &d.to_string()]).fails_with(
        1,
        &format!("bob may not give verdicts with token {bob_id}: admin minted it, not bob"),
    );
    // Minting for someone else is for admins only; for oneself, anyone may.
    as_user(&g, &alice, &["token", "create", "--user", "bob"])
        .fails_with(1, "a token for bob is minted by bob or by an admin");
    as_user(&g, &alice, &["token", "create", "--user", "alice"]).ok();
    // Bob mints his own with it, which revokes the one the admin minted.
    let run = as_user(&g, &for_bob, &["token", "create", "--user", "bob"]).ok();
    assert!(
        run.stderr.contains(&format!("token {bob_id}")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("is revoked"), "{}", run.stderr);
    let bob = run.stdout.trim().to_owned();
    as_user(&g, &for_bob, &["whoami"]).fails_with(1, &format!("token {bob_id} was revoked"));
    as_user(&g, &bob, &["approve", &d.to_string()]).ok();
    assert_eq!(g.wait_finished(d).phase, Phase::Succeeded);

    // The trail says who minted which token for whom, and with which.
    // (who minted, the record's free-form detail)
    let minted: Vec<(String, Value)> = g
        .audit_records()
        .into_iter()
        .filter(|r| r.entry.action == "token.created" && r.entry.subject.ends_with("for bob"))
        .map(|r| (r.entry.actor.clone(), detail(&r)))
        .collect();
    assert_eq!(minted.len(), 2, "{minted:?}");
    assert_eq!(minted[0].0, "admin");
    assert_eq!(minted[0].1["may_give_verdicts"], false);
    assert_eq!(minted[1].0, "bob");
    assert_eq!(minted[1].1["may_give_verdicts"], true);
    assert_eq!(minted[1].1["with_token"], bob_id.as_str());
    assert_eq!(minted[1].1["with_token_minted_by"], "admin");
    assert_eq!(minted[1].1["revoked"], bob_id.as_str());
    let bob_own_id = bob.split('_').nth(1).unwrap();
    let approval = g
        .audit_records()
        .into_iter()
        .find(|r| {
            r.entry.action == format!("POST /api/v1/deployments/{d}/approve")
                && r.entry.outcome == "done 202"
        })
        .unwrap();
    assert_eq!(
        detail(&approval)["token"],
        bob_own_id,
        "the verdict names the token it was given with"
    );
}

const APPROVAL: &str = r#"
[environments.production.approval]
required = 1
lead_time = "0s"
emergency_review = "2s"
"#;

#[test]
fn production_waits_for_an_approver_who_is_not_the_requester() {
    let g = Gantry::start_with_tail("100ms", APPROVAL);
    // Alice may approve others' changes, never her own.
    let alice = g.enrol("alice", &["deployer", "approver"]);
    let bob = g.enrol("bob", &["approver"]);
    g.register("1.0.0", "");
    g.register("1.1.0", "");

    // Standard changes need no approval in production only if allowed.
    as_user(
        &g,
        &alice,
        &[
            "deploy",
            "1.0.0",
            "--env",
            "production",
            "--change",
            "standard",
        ],
    )
    .fails_with(1, "standard changes are not allowed in production");
    let run = as_user(
        &g,
        &alice,
        &[
            "deploy",
            "1.0.0",
            "--env",
            "production",
            "--reason",
            "first release",
        ],
    )
    .ok();
    assert!(run.stdout.contains("awaits approval"), "{}", run.stdout);
    let d = g.call(g.client().approvals())[0].deployment;
    g.wait_phase(d, Phase::AwaitingApproval);
    assert!(
        g.running_instances().is_empty(),
        "nothing starts before approval"
    );

    as_user(&g, &alice, &["approve", &d.to_string()])
        .fails_with(1, "alice requested this deployment and cannot approve");
    as_user(&g, &alice, &["deploy", "1.1.0", "--env", "production"])
        .fails_with(1, "already has deployment");
    as_user(
        &g,
        &bob,
        &["approve", &d.to_string(), "--comment", "plan reviewed"],
    )
    .ok();
    as_user(&g, &bob, &["approve", &d.to_string()]).fails_with(1, "bob already gave a verdict");
    let done = g.wait_finished(d);
    assert_eq!(done.phase, Phase::Succeeded, "{done:?}");
    assert_eq!(done.change.as_ref().unwrap().change, ChangeType::Normal);
    let approvals = g.deployment(d).approvals;
    assert_eq!(approvals[0].by, "bob");
    assert_eq!(approvals[0].comment, "plan reviewed");
    let log = g.gantry(&["log", &d.to_string()]).ok().stdout;
    assert!(log.contains("approved by bob: plan reviewed"), "{log}");
    assert!(log.contains("(normal change: first release)"), "{log}");
    assert!(g.audit_records().iter().any(|r| r.entry.actor == "bob"
        && r.entry.action == format!("POST /api/v1/deployments/{d}/approve")
        && r.entry.outcome == "done 202"));

    // A rejection ends a waiting deployment before anything starts.
    let d2 = deploy_id(&as_user(
        &g,
        &alice,
        &["deploy", "1.1.0", "--env", "production", "--detach"],
    ));
    g.wait_phase(d2, Phase::AwaitingApproval);
    as_user(
        &g,
        &bob,
        &["reject", &d2.to_string(), "--comment", "not today"],
    )
    .ok();
    let rejected = g.wait_finished(d2);
    assert_eq!(rejected.phase, Phase::Failed);
    assert_eq!(
        rejected.reason.as_deref(),
        Some("rejected by bob: not today")
    );
    assert_eq!(g.get_env("production").1, "hello from 1.0.0\n");

    // An emergency goes at once, even past a change still waiting for approval,
    // and is owed its approval afterwards.
    let waiting = deploy_id(&as_user(
        &g,
        &alice,
        &["deploy", "1.1.0", "--env", "production", "--detach"],
    ));
    g.wait_phase(waiting, Phase::AwaitingApproval);
    let d3 = deploy_id(&as_user(
        &g,
        &alice,
        &[
            "deploy",
            "1.1.0",
            "--env",
            "production",
            "--change",
            "emergency",
            "--detach",
        ],
    ));
    assert_eq!(g.wait_finished(d3).phase, Phase::Succeeded);
    let superseded = g.deployment(waiting).deployment;
    assert_eq!(superseded.phase, Phase::Failed);
    assert_eq!(
        superseded.reason.as_deref(),
        Some("aborted by alice, superseded by an emergency change")
    );
    let owed = g.gantry(&["approvals"]).ok().stdout;
    assert!(owed.contains("emergency"), "{owed}");
    wait_until(
        "the emergency review to be overdue",
        Duration::from_secs(10),
        || {
            g.call(g.client().approvals())
                .iter()
                .any(|p| p.deployment == d3 && p.overdue)
        },
    );
    assert!(g.gantry(&["approvals"]).ok().stdout.contains("OVERDUE"));
    as_user(
        &g,
        &bob,
        &["approve", &d3.to_string(), "--comment", "hotfix ok"],
    )
    .ok();
    assert!(!g
        .call(g.client().approvals())
        .iter()
        .any(|p| p.deployment == d3));
    assert_eq!(g.deployment(d3).approvals[0].by, "bob");
}

#[test]
fn a_freeze_refuses_all_but_emergencies() {
    let g = Gantry::start_with_tail(
        "100ms",
        r#"
[[environments.production.freeze]]
name = "the long freeze"
from = "2000-01-01T00:00:00Z"
to = "2999-01-01T00:00:00Z"
"#,
    );
    g.register("1.0.0", "");
    g.gantry(&["deploy", "1.0.0", "--env", "production"])
        .fails_with(
            1,
            "production is frozen (the long freeze) until 2999-01-01T00:00:00Z",
        );
    assert!(g.deployments(None).is_empty());
    // Other environments are not frozen.
    g.gantry(&["deploy", "1.0.0", "--env", "staging"]).ok();
    let run = g
        .gantry(&[
            "deploy",
            "1.0.0",
            "--env",
            "production",
            "--change",
            "emergency",
            "--reason",
            "outage",
        ])
        .ok();
    assert!(run.stdout.contains("succeeded"), "{}", run.stdout);
}

fn write(g: &Gantry, name: &str, text: &str) -> String {
    let p = g.dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

fn junit(pass: u32, fail: u32) -> String {
    let mut s = String::from("<testsuites><testsuite name=\"t\">");
    for i in 0..pass {
        s.push_str(&format!("<testcase classname=\"t\" name=\"ok{i}\"/>"));
    }
    for i in 0..fail {
        s.push_str(&format!(
            "<testcase classname=\"t\" name=\"bad{i}\"><failure message=\"x\"/></testcase>"
        ));
    }
    s + "</testsuite></testsuites>"
}

const SARIF_CRITICAL: &str = r#"{"version":"2.1.0","runs":[{"tool":{"driver":{"name":"scanner"}},
 "results":[{"ruleId":"CVE-1","level":"error","properties":{"security-severity":"9.1"},"message":{"text":"remote code execution"}}]}]}"#;
const SARIF_CLEAN: &str = r#"{"version":"2.1.0","runs":[{"tool":{"driver":{"name":"scanner"}},
 "results":[{"ruleId":"style","level":"note","message":{"text":"long line"}}]}]}"#;

#[test]
fn evidence_gates_and_the_promotion_path() {
    let g = Gantry::start_governed(Lifecycle::Strict, "\n[environments.production.gates]\n");
    g.register("1.0.0", "");

    // Bad evidence is refused and nothing is attached.
    let bad_xml = write(
        &g,
        "bad.xml",
        "<testsuites><testsuite><testcase name=\"a\">",
    );
    g.gantry(&["evidence", "add", "1.0.0", "--kind", "unit", &bad_xml])
        .fails_with(
            1,
            "bad.xml: not a valid unit report: JUnit XML: malformed XML",
        );
    let cut = write(&g, "cut.info", "SF:src/lib.rs\nDA:1,1\n");
    g.gantry(&["evidence", "add", "1.0.0", "--kind", "coverage", &cut])
        .fails_with(
            1,
            "truncated: the record for src/lib.rs has no end_of_record",
        );
    let sarif_cut = write(&g, "cut.sarif", &SARIF_CLEAN[..40]);
    g.gantry(&["evidence", "add", "1.0.0", "--kind", "security", &sarif_cut])
        .fails_with(1, "SARIF: malformed JSON");
    let good = write(&g, "unit.xml", &junit(10, 0));
    g.gantry(&["evidence", "add", "9.9.9", "--kind", "unit", &good])
        .fails_with(1, "release 9.9.9 is not registered");
    g.gantry(&["evidence", "add", "1.0.0", "--kind", "rehearsal", &good])
        .fails_with(1, "recorded by Gantry itself");
    assert!(evidence(&g, "1.0.0").is_empty());

    // Evidence that fails the standards' numbers.
    let failing_unit = write(&g, "unit-fail.xml", &junit(99, 1));
    g.gantry(&["evidence", "add", "1.0.0", "--kind", "unit", &failing_unit])
        .ok();
    let integration = write(&g, "integration.xml", &junit(96, 4));
    g.gantry(&[
        "evidence",
        "add",
        "1.0.0",
        "--kind",
        "integration",
        &integration,
    ])
    .ok();
    let critical = write(&g, "scan.sarif", SARIF_CRITICAL);
    g.gantry(&["evidence", "add", "1.0.0", "--kind", "security", &critical])
        .ok();
    let da: String = (1..=100)
        .map(|n| format!("DA:{n},{}\n", u32::from(n <= 85)))
        .collect();
    let lcov = write(
        &g,
        "lcov.info",
        &format!("SF:a.rs\n{da}LF:100\nLH:85\nend_of_record\n"),
    );
    g.gantry(&["evidence", "add", "1.0.0", "--kind", "coverage", &lcov])
        .ok();

    let gates = g
        .gantry(&["gates", "1.0.0", "--env", "production"])
        .fails_with(6, "may not enter production");
    for line in [
        "FAIL promotion path",
        "has not succeeded in development, integration, staging yet",
        "FAIL unit tests",
        "PASS integration tests",
        "PASS coverage",
        "FAIL security findings",
        "CVE-1: remote code execution",
    ] {
        assert!(
            gates.stdout.contains(line),
            "{line:?} in:\n{}",
            gates.stdout
        );
    }
    g.gantry(&["deploy", "1.0.0", "--env", "production"])
        .fails_with(1, "failed gate(s)");
    // The promotion path holds for environments without gates too.
    g.gantry(&["deploy", "1.0.0", "--env", "staging"])
        .fails_with(1, "has not succeeded in development, integration yet");

    // Newer, passing evidence, and the path walked in order.
    g.gantry(&["evidence", "add", "1.0.0", "--kind", "unit", &good])
        .ok();
    let clean = write(&g, "clean.sarif", SARIF_CLEAN);
    g.gantry(&["evidence", "add", "1.0.0", "--kind", "security", &clean])
        .ok();
    for env in ["development", "integration", "staging"] {
        g.gantry(&["deploy", "1.0.0", "--env", env]).ok();
    }
    g.gantry(&["gates", "1.0.0", "--env", "production"]).ok();
    g.gantry(&["deploy", "1.0.0", "--env", "production"]).ok();
    let listed = g.gantry(&["evidence", "list", "1.0.0"]).ok().stdout;
    assert!(
        listed.contains("100 tests: 99 passed, 1 failed"),
        "{listed}"
    );
    assert!(listed.contains("85.0% line coverage"), "{listed}");
}

/// PUTs a report to the API as CI would, as XML (the test harness's `http`
/// sends JSON, whose bodies the audit layer caps at 64 KB).
fn put_report(g: &Gantry, path: &str, report: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let url = g.api_url();
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "PUT /api/v1{path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{report}",
        g.token(),
        report.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        status,
        resp.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default(),
    )
}

#[test]
fn hostile_reports_are_refused_and_the_controller_keeps_answering() {
    let g = Gantry::start();
    g.register("1.0.0", "");
    // A 1.4 MB JUnit file nested 200,000 deep, straight at the API: it used
    // to overflow the stack of an async worker and abort the controller.
    let deep_junit = format!(
        r#"<testsuites>{}<testcase name="t"/>{}</testsuites>"#,
        "<testsuite>".repeat(200_000),
        "</testsuite>".repeat(200_000)
    );
    let (status, body) = put_report(
        &g,
        "/releases/1.0.0/evidence/unit?file=deep.xml",
        &deep_junit,
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains(
            "deep.xml: not a valid unit report: JUnit XML: line 1: elements are nested more than 256 levels deep"
        ),
        "{body}"
    );
    // A 21 KB Cobertura file nested 3,070 deep, through the CLI.
    let deep_cobertura = format!(
        r#"<coverage>{}<class><lines><line number="1" hits="1"/></lines></class>{}</coverage>"#,
        "<a>".repeat(3_070),
        "</a>".repeat(3_070)
    );
    let path = write(&g, "coverage.xml", &deep_cobertura);
    g.gantry(&["evidence", "add", "1.0.0", "--kind", "coverage", &path])
        .fails_with(
            1,
            "coverage.xml: not a valid coverage report: Cobertura XML: line 1: elements are nested more than 256 levels deep",
        );
    // The controller is still there, nothing was attached, and a sound
    // report is still taken.
    assert!(evidence(&g, "1.0.0").is_empty());
    let good = write(&g, "unit.xml", &junit(3, 0));
    g.gantry(&["evidence", "add", "1.0.0", "--kind", "unit", &good])
        .ok();
    assert_eq!(evidence(&g, "1.0.0").len(), 1);
}

#[test]
fn new_releases_deploy_themselves_along_the_automatic_part_of_the_path() {
    let g = Gantry::start_governed(Lifecycle::Automatic, "");
    g.register("1.0.0", "");
    wait_until(
        "1.0.0 to reach integration by itself",
        Duration::from_secs(30),
        || g.status().environments[1].version.as_deref() == Some("1.0.0"),
    );
    let history = g.deployments(None);
    let envs: Vec<&str> = history.iter().rev().map(|d| d.env.as_str()).collect();
    assert_eq!(
        envs,
        ["development", "integration"],
        "staging never deploys by itself"
    );
    assert!(history.iter().all(|d| d.requested_by == "gantry"));
    assert!(g
        .audit_records()
        .iter()
        .any(|r| r.entry.action == "deployment.auto"
            && r.entry.subject == "release 1.0.0 to integration"));
}

#[test]
fn a_rollback_rehearsal_is_recorded_and_opens_its_gate() {
    let g = Gantry::start_with_tail(
        "100ms",
        r#"
[environments.production.gates]
unit = false
integration = false
coverage = false
max_severity = false
rehearsal_in = "staging"
"#,
    );
    g.register("1.0.0", "");
    g.register("1.1.0", "");
    g.register("1.2.0", "\"unhealthy\": true");
    g.gantry(&["rehearse", "1.1.0", "--env", "staging"])
        .fails_with(1, "nothing serves staging yet");
    g.gantry(&["deploy", "1.0.0", "--env", "staging"]).ok();
    g.gantry(&["rehearse", "1.0.0", "--env", "staging"])
        .fails_with(1, "staging already serves 1.0.0");
    g.gantry(&["gates", "1.1.0", "--env", "production"])
        .fails_with(6, "no rollback rehearsal in staging evidence attached");

    let run = g.gantry(&["rehearse", "1.1.0", "--env", "staging"]).ok();
    assert!(
        run.stdout.contains("rollback rehearsal in staging passed"),
        "{}",
        run.stdout
    );
    let history = g.deployments(Some("staging"));
    let kinds: Vec<(DeploymentKind, String)> = history
        .iter()
        .take(3)
        .rev()
        .map(|d| (d.kind, d.version.to_string()))
        .collect();
    assert_eq!(
        kinds,
        [
            (DeploymentKind::Deploy, "1.1.0".to_owned()),
            (DeploymentKind::Rollback, "1.0.0".to_owned()),
            (DeploymentKind::Deploy, "1.1.0".to_owned())
        ]
    );
    assert_eq!(g.get_env("staging").1, "hello from 1.1.0\n");
    g.gantry(&["gates", "1.1.0", "--env", "production"]).ok();
    g.gantry(&["deploy", "1.1.0", "--env", "production"]).ok();

    // A release that cannot even deploy fails its rehearsal, and its gate says why.
    g.gantry(&["rehearse", "1.2.0", "--env", "staging"])
        .fails_with(3, "rollback rehearsal in staging failed");
    let gates = g
        .gantry(&["gates", "1.2.0", "--env", "production"])
        .fails_with(6, "FAIL rollback rehearsal");
    assert!(
        gates.stdout.contains("did not become healthy"),
        "{}",
        gates.stdout
    );
    assert_eq!(g.get_env("staging").1, "hello from 1.1.0\n");
}

#[test]
fn a_deployment_plan_is_rendered_approved_and_gates_production() {
    let g = Gantry::start_with_tail(
        "100ms",
        r#"
[environments.production.gates]
unit = false
integration = false
coverage = false
max_severity = false
plan = true

[environments.production.approval]
required = 1
lead_time = "0s"
"#,
    );
    let alice = g.enrol("alice", &["deployer"]);
    let bob = g.enrol("bob", &["approver"]);
    g.register("1.0.0", "");
    let plan = g
        .gantry(&["plan", "1.0.0", "--env", "production"])
        .ok()
        .stdout;
    for needle in [
        "# Deployment plan: sample 1.0.0 to production",
        "## Purpose",
        "## Scope",
        "## Preconditions",
        "## Deployment Steps",
        "## Validation",
        "## Rollback Plan",
        "## Communications",
        "## Review and Approval",
        "- [ ] deployment plan: no approved deployment plan for production evidence attached",
        "1. Verify the artifact of 1.0.0 against its SHA-256",
        "3. Wait until every new instance is healthy, with no user traffic on them",
        "a normal change needs 1 approval(s)",
        "- Currently serving: nothing",
        "This plan has not been approved yet",
    ] {
        assert!(plan.contains(needle), "{needle:?} in:\n{plan}");
    }
    g.gantry(&["gates", "1.0.0", "--env", "production"])
        .fails_with(6, "FAIL deployment plan");

    as_user(
        &g,
        &alice,
        &["plan", "1.0.0", "--env", "production", "--approve"],
    )
    .fails_with(1, "alice (deployer) may not approve");
    as_user(
        &g,
        &bob,
        &[
            "plan",
            "1.0.0",
            "--env",
            "production",
            "--approve",
            "--comment",
            "reviewed with ops",
        ],
    )
    .ok();
    g.gantry(&["gates", "1.0.0", "--env", "production"]).ok();
    let out = g.dir.path().join("plan.md");
    g.gantry(&[
        "plan",
        "1.0.0",
        "--env",
        "production",
        "--write",
        out.to_str().unwrap(),
    ])
    .ok();
    let written = std::fs::read_to_string(&out).unwrap();
    assert!(
        written.contains("Plan approved by bob at ") && written.contains(": reviewed with ops"),
        "{written}"
    );
    assert!(
        written.contains("- [x] deployment plan: deployment plan for production approved by bob"),
        "{written}"
    );
    // The approved text itself is kept, checksummed, as evidence.
    let evidence = evidence(&g, "1.0.0");
    let plan_evidence = evidence
        .iter()
        .find(|e| e.kind == EvidenceKind::Plan)
        .unwrap();
    assert_eq!(plan_evidence.added_by, "bob");
    assert_eq!(plan_evidence.file_name, "plan-production-1.0.0.md");
}
