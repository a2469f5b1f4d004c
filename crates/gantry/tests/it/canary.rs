//! Canary rollouts end to end: real router, real instances, constant load.

use crate::harness::*;
use gantry_core::analysis::{RuleKind, RuleStatus};
use gantry_core::Deployment;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The share of traffic the canary has now, if it is one.
fn canary_weight(d: &Deployment) -> Option<u32> {
    d.canary.as_ref().map(|c| c.weight)
}

const CANARY: &str = r#"strategy = "canary"
canary = { steps = [{ weight = 10, pause = "2s" }, { weight = 50, pause = "2s" }, { weight = 100 }], interval = "250ms", max_wait = "20s", promotion_tolerance = 0.1 }
"#;

#[test]
fn a_healthy_canary_is_promoted_step_by_step_without_failed_requests() {
    let (g, load) = serving(CANARY, &[("1.1.0", "")]);
    let run = g.gantry(&["deploy", "1.1.0", "--env", "production"]).ok();
    let (ok, failed) = load.finish();
    for line in [
        "health baseline of 1.0.0:",
        "traffic: 10% to 1.1.0",
        "step 10% passed: no rule failed",
        "traffic: 50% to 1.1.0",
        "traffic: 100% to 1.1.0",
        "canary complete",
        "1.1.0 is live in production",
    ] {
        assert!(
            run.stdout.contains(line),
            "missing {line:?} in:\n{}",
            run.stdout
        );
    }
    assert_eq!(failed, 0, "no user request failed ({ok} succeeded)");
    assert_eq!(g.get_env("production").1, "hello from 1.1.0\n");
    // The router counted both pools.
    let served: u64 = g
        .traffic("production", None)
        .iter()
        .map(|p| p.requests)
        .sum();
    assert!(served >= ok, "router saw {served}, users got {ok}");
}

#[test]
fn an_error_regression_in_the_canary_is_caught_and_rolled_back() {
    // 1.2.0 fails one request in ten.
    let (g, load) = serving(CANARY, &[("1.2.0", "\"error_rate\": 0.1")]);
    let run = g.gantry(&["deploy", "1.2.0", "--env", "production"]);
    let (_, failed) = load.finish();
    run.fails_with(3, "rolled_back");
    let d = g.latest("production");
    let reason = d.reason.as_deref().unwrap();
    assert!(reason.starts_with("canary analysis at 10%: "), "{reason}");
    assert!(
        reason.contains("observed") && reason.contains("evidence"),
        "the figures are recorded: {reason}"
    );
    assert_eq!(canary_weight(&d), Some(10), "caught before the 50% step");
    let last = &d.canary.as_ref().unwrap().last.as_ref().unwrap().reports;
    assert!(
        last.iter().any(|r| r.status == RuleStatus::Failing),
        "{last:?}"
    );
    assert_eq!(g.get_env("production").1, "hello from 1.0.0\n");
    // Only the canary's share of requests could fail: about 10% × 10%.
    assert!(failed > 0 && failed < 60, "{failed} user requests failed");
    let log = g.gantry(&["log", &d.id.to_string()]).ok();
    assert!(
        log.stdout.contains("rolling back: canary analysis at 10%"),
        "{}",
        log.stdout
    );
}

#[test]
fn a_canary_answering_404_to_a_fifth_of_its_requests_is_rolled_back_by_the_4xx_rule() {
    // 1.2.0 answers one request in five with 404 and never with a 5xx.
    let (g, load) = serving(CANARY, &[("1.2.0", "\"client_error_rate\": 0.2")]);
    let plan = g
        .gantry(&["plan", "1.2.0", "--env", "production"])
        .ok()
        .stdout;
    assert!(
        plan.contains("the canary's share of 4xx answers above its share of traffic rolls back"),
        "the plan says what counts:\n{plan}"
    );
    let run = g.gantry(&["deploy", "1.2.0", "--env", "production"]);
    let (_, failed) = load.finish();
    run.fails_with(3, "rolled_back");
    let d = g.latest("production");
    let reason = d.reason.as_deref().unwrap();
    assert!(
        reason.starts_with(
            "canary analysis at 10%: canary's share of 4xx answers above its share of traffic ("
        ),
        "{reason}"
    );
    assert!(
        reason.contains("observed") && reason.contains("evidence"),
        "the figures are recorded: {reason}"
    );
    assert_eq!(canary_weight(&d), Some(10), "caught before the 50% step");
    let reports = &d.canary.as_ref().unwrap().last.as_ref().unwrap().reports;
    let status = |rule: RuleKind| {
        reports
            .iter()
            .find(|r| r.rule == rule)
            .unwrap_or_else(|| panic!("no {rule:?} in {reports:?}"))
            .status
    };
    assert_eq!(status(RuleKind::ClientErrorsVsStable), RuleStatus::Failing);
    // A 404 is no error for the absolute rules.
    assert_eq!(status(RuleKind::ErrorRate), RuleStatus::Passing);
    assert_eq!(status(RuleKind::ErrorsVsStable), RuleStatus::Passing);
    assert_eq!(g.get_env("production").1, "hello from 1.0.0\n");
    // Only the canary's 404s reached users: about a fifth of its 10%.
    assert!(
        failed > 0 && failed < 100,
        "{failed} user requests got no 200"
    );
    // The router counted them per pool, apart from errors.
    let pools = g.traffic("production", None);
    let canary = pools
        .iter()
        .find(|p| p.name == "1.2.0")
        .unwrap_or_else(|| panic!("{pools:?}"));
    assert!(canary.client_errors > 0, "{canary:?}");
    assert_eq!(canary.errors, 0, "{canary:?}");
    let log = g.gantry(&["log", &d.id.to_string()]).ok();
    assert!(
        log.stdout
            .contains("rolling back: canary analysis at 10%: canary's share of 4xx answers"),
        "{}",
        log.stdout
    );
}

#[test]
fn a_step_held_for_promotion_waits_for_gantry_promote() {
    let tail = CANARY.replace(
        r#"{ weight = 50, pause = "2s" }"#,
        r#"{ weight = 50, pause = "until-promoted" }"#,
    );
    let (g, load) = serving(&tail, &[("1.1.0", "")]);
    let id = deploy_id(
        &g.gantry(&["deploy", "1.1.0", "--env", "production", "--detach"])
            .ok(),
    );
    wait_until("the 50% step", Duration::from_secs(20), || {
        canary_weight(&g.deployment(id).deployment) == Some(50)
    });
    // A property over a window, not a wait: for longer than any timed step
    // (2 s here) the step must not move; checked at every poll of the window.
    holds_throughout(
        "the held step to stay at 50%",
        Duration::from_secs(3),
        || {
            let d = g.deployment(id).deployment;
            d.phase == Phase::Canary && canary_weight(&d) == Some(50)
        },
    );
    g.gantry(&["pause", &id.to_string()]).ok();
    g.gantry(&["resume", &id.to_string()]).ok();
    g.gantry(&["promote", &id.to_string()]).ok();
    let d = g.wait_finished(id);
    let (_, failed) = load.finish();
    assert_eq!(d.phase, Phase::Succeeded, "{d:?}");
    assert_eq!(failed, 0);
    let log = g.gantry(&["log", &id.to_string()]).ok();
    for line in [
        "paused by admin",
        "resumed by admin",
        "promoted by admin at 50%",
    ] {
        assert!(
            log.stdout.contains(line),
            "missing {line:?}:\n{}",
            log.stdout
        );
    }
    g.gantry(&["promote", &id.to_string()])
        .fails_with(1, "already finished");
}

#[test]
fn a_step_without_evidence_enough_holds_for_a_person_instead_of_passing_on_silence() {
    // Half a point of tolerance needs about a thousand canary requests; a 1 s
    // pause capped at 2 s sees far fewer, so the 10% step must hold.
    let tail = CANARY
        .replace(
            r#"{ weight = 10, pause = "2s" }"#,
            r#"{ weight = 10, pause = "1s" }"#,
        )
        .replace(
            "promotion_tolerance = 0.1 }",
            r#"promotion_tolerance = 0.005, max_pause = "2s" }"#,
        );
    let (g, load) = serving(&tail, &[("1.1.0", "")]);
    let id = deploy_id(
        &g.gantry(&["deploy", "1.1.0", "--env", "production", "--detach"])
            .ok(),
    );
    wait_until("the 10% step to hold", Duration::from_secs(20), || {
        g.deployment(id).canary.as_ref().is_some_and(|c| c.held)
    });
    let d = g.deployment(id);
    let canary = d.canary.as_ref().expect("canary progress");
    assert_eq!((d.phase, canary.weight), (Phase::Canary, 10), "{d:?}");
    let bounds = canary
        .last
        .as_ref()
        .and_then(|a| a.bounds.as_ref())
        .expect("the last look's bounds");
    assert!(
        bounds.error_rate_upper > 0.005,
        "the data could not rule out half a point: {d:?}"
    );
    holds_throughout(
        "the held step to stay at 10%",
        Duration::from_secs(2),
        || {
            let d = g.deployment(id);
            d.phase == Phase::Canary && d.canary.as_ref().is_some_and(|c| c.weight == 10)
        },
    );
    g.gantry(&["promote", &id.to_string()]).ok();
    wait_until("the 50% step", Duration::from_secs(20), || {
        g.deployment(id)
            .canary
            .as_ref()
            .is_some_and(|c| c.weight == 50)
    });
    g.gantry(&["promote", &id.to_string()]).ok();
    let d = g.wait_finished(id);
    let (_, failed) = load.finish();
    assert_eq!(d.phase, Phase::Succeeded, "{d:?}");
    assert_eq!(failed, 0);
    let log = g.gantry(&["log", &id.to_string()]).ok();
    for line in [
        "not enough evidence to promote: ",
        "requests, could only rule out an error rate above ",
        "promoted by admin at 10%",
    ] {
        assert!(
            log.stdout.contains(line),
            "missing {line:?}:\n{}",
            log.stdout
        );
    }
}

#[test]
fn a_controller_killed_mid_canary_resumes_and_no_user_request_fails() {
    let tail = CANARY.replace(
        r#"pause = "2s" }, { weight = 50"#,
        r#"pause = "4s" }, { weight = 50"#,
    );
    let (mut g, load) = serving(&tail, &[("1.1.0", "")]);
    let id = deploy_id(
        &g.gantry(&["deploy", "1.1.0", "--env", "production", "--detach"])
            .ok(),
    );
    wait_until("the 10% step", Duration::from_secs(20), || {
        canary_weight(&g.deployment(id).deployment) == Some(10)
    });
    g.kill_server();
    // With the controller down the router keeps serving both pools: users
    // keep getting answers, and both releases answer.
    let served_before = load.ok.load(Ordering::Relaxed);
    wait_until(
        "100 more user requests served with the controller down",
        Duration::from_secs(20),
        || load.ok.load(Ordering::Relaxed) >= served_before + 100,
    );
    let mut answered = std::collections::BTreeSet::new();
    wait_until(
        "both pools to answer with the controller down",
        Duration::from_secs(20),
        || {
            let (status, body) = g.get_env("production");
            assert_eq!(status, 200, "{body}");
            answered.insert(body);
            answered.len() == 2
        },
    );
    assert_eq!(
        answered.into_iter().collect::<Vec<_>>(),
        ["hello from 1.0.0\n", "hello from 1.1.0\n"]
    );
    g.start_server();
    let d = g.wait_finished(id);
    let (ok, failed) = load.finish();
    assert_eq!(d.phase, Phase::Succeeded, "{d:?}");
    assert_eq!(failed, 0, "no user request failed ({ok} succeeded)");
    let log = g.gantry(&["log", &id.to_string()]).ok();
    assert!(
        log.stdout
            .contains("controller restarted; resuming in phase canary"),
        "{}",
        log.stdout
    );
    assert!(
        log.stdout.contains("traffic: 50% to 1.1.0"),
        "{}",
        log.stdout
    );
    assert_eq!(
        g.running_instances(),
        ["production-d2-1", "production-d2-2"]
    );
}
