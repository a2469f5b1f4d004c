use super::*;

fn baseline() -> Baseline {
    Baseline {
        requests: 20_000,
        errors: 20,
        p50_ms: 10.0,
        p99_ms: 40.0,
    }
}

fn counts(requests: u64, errors: u64) -> Counts {
    Counts {
        requests,
        errors,
        ..Counts::default()
    }
}

#[test]
fn too_little_traffic_is_reported_as_not_enough_data() {
    let a = analyse(
        &AnalysisPolicy::default(),
        &baseline(),
        &counts(10, 0),
        &counts(90, 0),
    );
    assert_eq!(a.verdict, Verdict::Continue { waiting: true });
    assert!(a
        .reports
        .iter()
        .all(|r| r.status == RuleStatus::NotEnoughData));
}

#[test]
fn a_clear_error_regression_fails_the_right_rules_with_figures() {
    // 5% canary errors over 400 requests, stable at 0.1%.
    let a = analyse(
        &AnalysisPolicy::default(),
        &baseline(),
        &counts(400, 20),
        &counts(3600, 4),
    );
    let Verdict::Fail { rule, summary } = &a.verdict else {
        panic!("{:?}", a.verdict)
    };
    assert_eq!(*rule, RuleKind::ErrorRate);
    assert!(
        summary.contains("observed 5.00% (20 of 400) against 1.00%"),
        "{summary}"
    );
    let vs = a
        .reports
        .iter()
        .find(|r| r.rule == RuleKind::ErrorsVsStable)
        .unwrap();
    assert_eq!(vs.status, RuleStatus::Failing);
    assert_eq!((vs.events, vs.samples), (20, 24));
}

#[test]
fn a_healthy_canary_passes_and_is_eventually_called_no_worse() {
    let a = analyse(
        &AnalysisPolicy::default(),
        &baseline(),
        &counts(2_000, 2),
        &counts(18_000, 18),
    );
    assert!(
        a.reports.iter().all(|r| r.status != RuleStatus::Failing),
        "{:#?}",
        a.reports
    );
    assert_eq!(
        a.verdict,
        Verdict::Continue { waiting: false },
        "every rule judged; too few errors to prove no worse"
    );
    let slow = a
        .reports
        .iter()
        .find(|r| r.rule == RuleKind::SlowVsStable)
        .unwrap();
    assert_eq!(
        slow.status,
        RuleStatus::Passing,
        "no slow requests on either side is a pass"
    );
    // Equal error shares with plenty of errors: evidence of no worse.
    let a = analyse(
        &AnalysisPolicy {
            max_p50_factor: None,
            max_p99_factor: None,
            compare_slow_factor: None,
            ..Default::default()
        },
        &Baseline {
            requests: 20_000,
            errors: 200,
            p50_ms: 10.0,
            p99_ms: 40.0,
        },
        &counts(20_000, 200),
        &counts(180_000, 1_800),
    );
    assert!(
        matches!(a.verdict, Verdict::NoWorse { .. }),
        "{:?}",
        a.verdict
    );
}

#[test]
fn slow_canary_requests_fail_the_latency_rules() {
    let canary = Counts {
        requests: 400,
        errors: 0,
        over_p99_limit: 20,
        over_p50_limit: 30,
        over_compare_limit: 20,
    };
    let stable = Counts {
        requests: 3600,
        errors: 0,
        over_p99_limit: 1,
        over_p50_limit: 200,
        over_compare_limit: 1,
    };
    let a = analyse(&AnalysisPolicy::default(), &baseline(), &canary, &stable);
    let failing: Vec<RuleKind> = a
        .reports
        .iter()
        .filter(|r| r.status == RuleStatus::Failing)
        .map(|r| r.rule)
        .collect();
    assert_eq!(failing, [RuleKind::P99Latency, RuleKind::SlowVsStable]);
}

#[test]
fn without_a_baseline_the_relative_rules_are_off() {
    let a = analyse(
        &AnalysisPolicy::default(),
        &Baseline::default(),
        &counts(1000, 5),
        &counts(9000, 45),
    );
    let rules: Vec<RuleKind> = a.reports.iter().map(|r| r.rule).collect();
    assert_eq!(
        rules,
        [RuleKind::ErrorRate, RuleKind::ErrorsVsStable],
        "no baseline: no relative or latency rules"
    );
    assert_eq!(a.verdict, Verdict::Continue { waiting: false });
}

#[test]
fn upper_bound_is_above_the_rate_and_tightens_with_samples() {
    assert_eq!(upper_bound(0, 0), 1.0);
    let loose = upper_bound(1, 1000);
    let tight = upper_bound(10, 10_000);
    assert!(loose > 0.001 && tight > 0.001 && tight < loose);
}

#[test]
fn latency_limits_follow_the_baseline_above_a_floor() {
    let p = AnalysisPolicy::default();
    let l = latency_limits(&p, &baseline());
    assert_eq!(
        (l.p99_ms, l.p50_ms, l.compare_ms),
        (Some(120.0), Some(15.0), Some(120.0))
    );
    let fast = Baseline {
        requests: 1000,
        errors: 0,
        p50_ms: 0.4,
        p99_ms: 1.0,
    };
    let l = latency_limits(&p, &fast);
    assert_eq!(
        (l.p99_ms, l.p50_ms),
        (Some(LATENCY_FLOOR_MS), Some(LATENCY_FLOOR_MS))
    );
    assert_eq!(latency_limits(&p, &Baseline::default()).p99_ms, None);
}
