//! Rolling updates, smoke checks, sticky routing and a router that dies
//! mid-rollout, end to end: real router, real instances, constant load.

use crate::harness::*;
use gantry_router::{AdminInfo, Affinity, Routing};
use std::time::Duration;

fn assert_lines(text: &str, lines: &[&str]) {
    for line in lines {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}

#[test]
fn a_rolling_update_replaces_instances_one_by_one_without_failed_requests() {
    let tail = "strategy = \"rolling\"\nrolling = { max_surge = 1, max_unavailable = 0 }\nsticky = { cookie = \"sid\" }\n";
    let (g, load) = serving(tail, &[("1.1.0", "")]);
    g.gantry(&["deploy", "1.1.0", "--env", "production"]).ok();
    let (ok, failed) = load.finish();
    assert_eq!(failed, 0, "no user request failed ({ok} succeeded)");
    let id = g.latest("production").id;
    assert_lines(
        &g.log_of(id),
        &[
            "phase rolling: 2 instance(s), max surge 1, max unavailable 0",
            "batch 1: starting 1 instance(s) of 1.1.0 (1 of 2)",
            "traffic: 1 instance(s) of 1.1.0 and 1 of 1.0.0 (50% to the new release)",
            "stopped production-d1-2",
            "batch 2: starting 1 instance(s) of 1.1.0 (2 of 2)",
            "traffic: 2 instance(s) of 1.1.0 and 0 of 1.0.0",
            "rolling update complete",
            "1.1.0 is live in production",
        ],
    );
    assert_eq!(
        g.running_instances(),
        [format!("production-d{id}-1"), format!("production-d{id}-2")]
    );
    assert_eq!(g.get_env("production").1, "hello from 1.1.0\n");
    // The sticky setting reached the router with the routing.
    let routing: Routing = serde_json::from_slice(
        &std::fs::read(g.data().join("routers/production/routing.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(routing.affinity, Some(Affinity::Cookie("sid".into())));
}

#[test]
fn a_failed_rolling_batch_restarts_the_retired_instances_and_rolls_back() {
    // No surge: an old instance makes room first; the new one never gets healthy.
    let tail = "strategy = \"rolling\"\nrolling = { max_surge = 0, max_unavailable = 1 }\n";
    let (g, load) = serving(tail, &[("1.2.0", "\"unhealthy\": true")]);
    let before = g.running_instances();
    let run = g.gantry(&["deploy", "1.2.0", "--env", "production"]);
    let (ok, failed) = load.finish();
    run.fails_with(3, "rolled_back");
    assert_eq!(
        failed, 0,
        "the remaining old instance served alone ({ok} succeeded)"
    );
    let d = g.latest("production");
    assert!(
        d.reason
            .as_deref()
            .unwrap()
            .contains("did not become healthy within 5s: production-d2-1"),
        "{d:?}"
    );
    assert_lines(
        &g.log_of(d.id),
        &[
            "took production-d1-2 out of the routing",
            "stopped production-d1-2",
            "restarted production-d1-2 of the previous release",
            "rolled back: 1.0.0 serves production",
        ],
    );
    assert_eq!(
        g.running_instances(),
        before,
        "both old instances run again"
    );
    assert_eq!(g.get_env("production").1, "hello from 1.0.0\n");
}

#[test]
fn a_judged_rolling_update_compares_each_batch_with_the_old_release_and_rolls_back_a_worse_one() {
    let tail = "strategy = \"rolling\"\nrolling = { max_surge = 1, max_unavailable = 0, analysis = \"2s\" }\n";
    let (g, load) = serving(tail, &[("1.1.0", ""), ("1.2.0", "\"error_rate\": 0.3")]);
    // Healthy: the first batch is judged beside the old release, then the second goes.
    g.gantry(&["deploy", "1.1.0", "--env", "production"]).ok();
    let id = g.latest("production").id;
    let log = g.log_of(id);
    let judged = log
        .find("batch 1 judged over")
        .unwrap_or_else(|| panic!("{log}"));
    let second = log
        .find("batch 2: starting")
        .unwrap_or_else(|| panic!("{log}"));
    assert!(judged < second, "judged before the next batch:\n{log}");
    assert!(
        !log.contains("batch 2 judged"),
        "the last batch has no old release beside it:\n{log}"
    );

    // 30% errors on the new release's half: rolled back, its old instance still warm.
    g.gantry(&["deploy", "1.2.0", "--env", "production"])
        .fails_with(3, "rolled_back");
    let d = g.latest("production");
    let reason = d.reason.clone().unwrap();
    assert!(reason.starts_with("analysis of batch 1: "), "{reason}");
    let log = g.log_of(d.id);
    assert!(!log.contains("batch 2: starting"), "{log}");
    assert!(
        !log.contains("restarted"),
        "nothing had to be restarted:\n{log}"
    );
    assert_eq!(g.get_env("production").1, "hello from 1.1.0\n");
    let (ok, failed) = load.finish();
    assert!(
        failed * 10 < ok,
        "only the judged batch's share failed: {failed} of {ok}"
    );
}

const SMOKE: &str = r#"
[environments.production.smoke]
timeout = "20s"

[[environments.production.smoke.checks]]
name = "home"
path = "/"
body_contains = "hello from 1."

[[environments.production.smoke.checks]]
name = "script-sees-the-instance"
command = ["sh", "-c", "case \"$GANTRY_SMOKE_URL\" in http://127.0.0.1:*) exit 0;; *) exit 1;; esac"]
"#;

#[test]
fn blue_green_smoke_checks_run_before_traffic_and_a_critical_failure_rolls_back() {
    let failing = format!(
        "{SMOKE}\n[[environments.production.smoke.checks]]\nname = \"still-on-1.0\"\npath = \"/\"\nbody_contains = \"from 1.0\"\n"
    );
    let (g, load) = serving(&failing, &[("1.1.0", "")]);
    let run = g.gantry(&["deploy", "1.1.0", "--env", "production"]);
    let (_, failed) = load.finish();
    run.fails_with(3, "rolled_back");
    assert_eq!(failed, 0);
    let d = g.latest("production");
    let reason = d.reason.as_deref().unwrap();
    assert!(
        reason.starts_with("critical smoke check failed: still-on-1.0 on production-d2-"),
        "{reason}"
    );
    assert!(
        reason.contains(r#"body does not contain "from 1.0""#),
        "{reason}"
    );
    let results = &d.smoke.as_ref().unwrap().results;
    assert_eq!(results.len(), 6, "3 checks × 2 instances: {results:?}");
    assert_eq!(results.iter().filter(|r| r.passed).count(), 4);
    // The new release never took a user request.
    let pools = g.traffic("production", None);
    let new_pool = pools.iter().find(|p| p.name == "1.1.0");
    assert!(
        new_pool.is_none_or(|p| p.requests == 0),
        "1.1.0 got traffic: {pools:?}"
    );
}

#[test]
fn failed_noncritical_smoke_checks_wait_for_a_decision() {
    let noncritical = format!(
        "{SMOKE}\n[[environments.production.smoke.checks]]\nname = \"still-on-1.0\"\npath = \"/\"\nbody_contains = \"from 1.0\"\ncritical = false\n"
    );
    let (g, load) = serving(&noncritical, &[("1.1.0", "")]);
    let id = deploy_id(
        &g.gantry(&["deploy", "1.1.0", "--env", "production", "--detach"])
            .ok(),
    );
    wait_until("the smoke hold", Duration::from_secs(20), || {
        g.deployment(id).deployment.smoke.is_some_and(|s| s.held)
    });
    assert_eq!(g.deployment(id).deployment.phase, Phase::Smoke);
    assert_eq!(g.get_env("production").1, "hello from 1.0.0\n");
    g.gantry(&["pause", &id.to_string()])
        .fails_with(1, "pause and resume act on canary steps");
    g.gantry(&["promote", &id.to_string()]).ok();
    let d = g.wait_finished(id);
    let (_, failed) = load.finish();
    assert_eq!(d.phase, Phase::Succeeded, "{d:?}");
    assert_eq!(failed, 0);
    assert_lines(
        &g.log_of(id),
        &[
            "smoke checks: 4 of 6 passed",
            "warning: smoke check still-on-1.0 failed on production-d2-1: body does not contain",
            "paused for a decision: 2 of 2 non-critical smoke checks failed",
            "admin accepted the failed non-critical smoke checks",
        ],
    );
}

#[test]
fn a_router_killed_mid_canary_is_restarted_and_the_rollout_finishes() {
    let tail = r#"strategy = "canary"
canary = { steps = [{ weight = 10, pause = "3s" }, { weight = 50, pause = "2s" }, { weight = 100 }], interval = "250ms", max_wait = "20s", promotion_tolerance = 0.1 }
"#;
    let (g, load) = serving(tail, &[("1.1.0", "")]);
    let id = deploy_id(
        &g.gantry(&["deploy", "1.1.0", "--env", "production", "--detach"])
            .ok(),
    );
    wait_until("the 10% step", Duration::from_secs(20), || {
        g.deployment(id)
            .deployment
            .canary
            .is_some_and(|c| c.weight == 10)
    });
    let admin = g.data().join("routers/production/admin.json");
    let info: AdminInfo = serde_json::from_slice(&std::fs::read(&admin).unwrap()).unwrap();
    let pid = info.pid as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // The watchdog looks every 500 ms: users see the router back within 3 s.
    wait_until(
        "the environment to serve again",
        Duration::from_secs(3),
        || {
            try_http(
                &format!("http://127.0.0.1:{}", g.port("production")),
                "GET",
                "/",
                None,
                "",
            )
            .is_ok_and(|(status, _)| status == 200)
        },
    );
    wait_until("a new router", Duration::from_secs(10), || {
        std::fs::read(&admin)
            .ok()
            .and_then(|b| serde_json::from_slice::<AdminInfo>(&b).ok())
            .is_some_and(|v| v.pid as i32 != pid)
    });
    let d = g.wait_finished(id);
    let (ok, _failed) = load.finish();
    assert!(
        d.phase == Phase::Succeeded || d.phase == Phase::RolledBack,
        "ends promoted or rolled back: {d:?}"
    );
    assert!(ok > 0);
    assert!(g
        .controller_log()
        .contains("router was not running; started it again"));
    let (status, _) = g.get_env("production");
    assert_eq!(status, 200, "the environment serves after the rollout");
}

#[test]
fn the_watch_after_a_full_rollout_catches_a_late_regression_and_promote_ends_it_early() {
    // 1.1.0 starts failing a fifth of its requests 3 s after it starts:
    // after the switch, during the watch.
    let (g, load) = serving(
        "watch = \"30s\"\n",
        &[
            ("1.1.0", "\"error_rate\": 0.2, \"errors_after_ms\": 3000"),
            ("1.2.0", ""),
        ],
    );
    g.gantry(&["deploy", "1.1.0", "--env", "production"])
        .fails_with(3, "rolled_back");
    let d = g.latest("production");
    let reason = d.reason.clone().unwrap();
    assert!(
        reason.starts_with("watch after the full rollout, "),
        "{reason}"
    );
    let log = g.log_of(d.id);
    assert_lines(
        &log,
        &[
            "traffic switched to 1.1.0",
            "watching 1.1.0 for 30s against the baseline of 1.0.0",
            "rolled back: 1.0.0 serves production",
        ],
    );
    assert_eq!(g.get_env("production").1, "hello from 1.0.0\n");

    // A healthy release: `gantry promote` ends its watch early.
    let id = deploy_id(
        &g.gantry(&["deploy", "1.2.0", "--env", "production", "--detach"])
            .ok(),
    );
    g.wait_phase(id, gantry_core::Phase::Watching);
    g.gantry(&["promote", &id.to_string()]).ok();
    let d = g.wait_finished(id);
    assert_eq!(d.phase, gantry_core::Phase::Succeeded);
    assert_lines(
        &g.log_of(id),
        &["watch ended early by", "1.2.0 is live in production"],
    );
    assert_eq!(g.get_env("production").1, "hello from 1.2.0\n");
    let (ok, failed) = load.finish();
    assert!(failed * 10 < ok, "{failed} failed of {ok}");
}
