use super::*;

fn baseline() -> Baseline {
    Baseline {
        requests: 20_000,
        errors: 20,
        p50_ms: 10.0,
        p99_ms: 40.0,
        queries: Default::default(),
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
            queries: Default::default(),
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
        ..Counts::default()
    };
    let stable = Counts {
        requests: 3600,
        errors: 0,
        over_p99_limit: 1,
        over_p50_limit: 200,
        over_compare_limit: 1,
        ..Counts::default()
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
        [
            RuleKind::ErrorRate,
            RuleKind::ErrorsVsStable,
            RuleKind::ClientErrorsVsStable
        ],
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
        queries: Default::default(),
    };
    let l = latency_limits(&p, &fast);
    assert_eq!(
        (l.p99_ms, l.p50_ms),
        (Some(LATENCY_FLOOR_MS), Some(LATENCY_FLOOR_MS))
    );
    assert_eq!(latency_limits(&p, &Baseline::default()).p99_ms, None);
}

fn with_client_errors(requests: u64, client_errors: u64) -> Counts {
    Counts {
        requests,
        client_errors,
        ..Counts::default()
    }
}

fn report(a: &Analysis, rule: RuleKind) -> &RuleReport {
    a.reports
        .iter()
        .find(|r| r.rule == rule)
        .unwrap_or_else(|| panic!("no {rule:?} in {:#?}", a.reports))
}

#[test]
fn a_canary_answering_404_to_a_fifth_of_its_requests_fails_the_client_error_rule() {
    // 10% of traffic; the canary answers 80 of its 400 requests with a 4xx, stable none.
    let a = analyse(
        &AnalysisPolicy::default(),
        &baseline(),
        &with_client_errors(400, 80),
        &with_client_errors(3600, 0),
    );
    let Verdict::Fail { rule, summary } = &a.verdict else {
        panic!("{:?}", a.verdict)
    };
    assert_eq!(*rule, RuleKind::ClientErrorsVsStable);
    assert!(
        summary.starts_with("canary's share of 4xx answers above its share of traffic (10.00%): observed 100.00% (80 of 80) against 10.00%, evidence"),
        "{summary}"
    );
    // 4xx answers are not errors for the absolute rules.
    for rule in [
        RuleKind::ErrorRate,
        RuleKind::ErrorRateIncrease,
        RuleKind::ErrorRateRatio,
        RuleKind::ErrorsVsStable,
    ] {
        let r = report(&a, rule);
        assert_eq!((r.status, r.events), (RuleStatus::Passing, 0), "{r:?}");
    }
}

#[test]
fn equal_shares_of_4xx_pass_and_the_switch_turns_the_rule_off() {
    // Both answer 5% of requests with a 4xx (clients asking for what is not there).
    let (canary, stable) = (
        with_client_errors(2_000, 100),
        with_client_errors(18_000, 900),
    );
    let a = analyse(&AnalysisPolicy::default(), &baseline(), &canary, &stable);
    let r = report(&a, RuleKind::ClientErrorsVsStable);
    assert_eq!(r.status, RuleStatus::Passing, "{r:?}");
    assert_eq!((r.events, r.samples), (100, 1_000));
    assert!((r.observed - 0.1).abs() < 1e-9 && (r.threshold - 0.1).abs() < 1e-9);
    assert!(
        !matches!(a.verdict, Verdict::Fail { .. }),
        "{:?}",
        a.verdict
    );
    // None on either side: judged (a pass), not waiting for data.
    let a = analyse(
        &AnalysisPolicy::default(),
        &baseline(),
        &with_client_errors(2_000, 0),
        &with_client_errors(18_000, 0),
    );
    assert_eq!(
        report(&a, RuleKind::ClientErrorsVsStable).status,
        RuleStatus::Passing
    );
    // Off: the same 404-answering canary is not judged on its 4xx.
    let off = AnalysisPolicy {
        compare_client_errors: false,
        ..Default::default()
    };
    let a = analyse(
        &off,
        &baseline(),
        &with_client_errors(400, 80),
        &with_client_errors(3600, 0),
    );
    assert!(a
        .reports
        .iter()
        .all(|r| r.rule != RuleKind::ClientErrorsVsStable));
    assert!(
        !matches!(a.verdict, Verdict::Fail { .. }),
        "{:?}",
        a.verdict
    );
}

#[test]
fn the_false_rollback_budget_is_shared_by_weight_across_every_rule_including_client_errors() {
    let policy = AnalysisPolicy::default();
    let a = analyse(&policy, &baseline(), &counts(2_000, 2), &counts(18_000, 18));
    assert_eq!(a.reports.len(), 8, "{:#?}", a.reports);
    // A rule alone fires at 1/(alpha·w); the weights over the rules that run sum to one.
    let shares: f64 = a
        .reports
        .iter()
        .map(|r| 1.0 / (r.needed * policy.alpha))
        .sum();
    assert!((shares - 1.0).abs() < 1e-9, "{shares}");
    let comparison = report(&a, RuleKind::ErrorsVsStable).needed;
    let absolute = report(&a, RuleKind::ErrorRate).needed;
    assert!(
        comparison < 8.0 / policy.alpha && absolute > comparison,
        "the live comparison gets a larger share than an even split: {comparison} vs {absolute}"
    );
    let off = AnalysisPolicy {
        compare_client_errors: false,
        ..policy.clone()
    };
    let b = analyse(&off, &baseline(), &counts(2_000, 2), &counts(18_000, 18));
    assert_eq!(b.reports.len(), 7);
    assert!(
        report(&b, RuleKind::ErrorsVsStable).needed < comparison,
        "a rule turned off leaves its share to the others"
    );
}

#[test]
fn rules_rising_together_fail_on_their_combined_evidence() {
    // A 5% canary with two errors, two slow requests and two 4xx answers,
    // every one of them the canary's: no rule is past its own share of the
    // budget, but their weighted evidence together is past 1/alpha.
    let policy = AnalysisPolicy::default();
    let canary = Counts {
        requests: 100,
        errors: 2,
        client_errors: 2,
        over_p99_limit: 2,
        over_compare_limit: 2,
        ..Counts::default()
    };
    let a = analyse(&policy, &baseline(), &canary, &counts(1_900, 0));
    let alone = a.reports.iter().filter(|r| r.evidence >= r.needed).count();
    // Σ w·E ≥ 1/alpha, with w = 1/(alpha·needed): Σ E/needed ≥ 1.
    let combined: f64 = a.reports.iter().map(|r| r.evidence / r.needed).sum();
    assert_eq!(alone, 0, "{:#?}", a.reports);
    assert!(combined >= 1.0, "{combined}");
    let Verdict::Fail { rule, summary } = &a.verdict else {
        panic!("{:?}", a.verdict)
    };
    // Named: the rule closest to firing alone.
    assert_eq!(*rule, RuleKind::ErrorsVsStable, "{summary}");
    assert!(summary.contains("combined"), "{summary}");
    // One kind alone is not enough.
    let errors_only = Counts {
        client_errors: 0,
        over_p99_limit: 0,
        over_compare_limit: 0,
        ..canary
    };
    let a = analyse(&policy, &baseline(), &errors_only, &counts(1_900, 0));
    assert!(
        !matches!(a.verdict, Verdict::Fail { .. }),
        "{:?}",
        a.verdict
    );
}

/// Canary and stable answer 4xx alike (a fixed share of requests); the
/// canary takes 10% of 200 requests/s, judged every second for two minutes
/// on the counts since it started, with the seeds fixed so the figure repeats.
fn simulated_client_error_alarms(canary_rate: f64, stable_rate: f64, runs: u64) -> u64 {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    let policy = AnalysisPolicy::default();
    let mut alarms = 0;
    for seed in 0..runs {
        let mut rng = SmallRng::seed_from_u64(seed);
        let (mut c, mut s) = (Counts::default(), Counts::default());
        for _second in 0..120 {
            for (n, rate, pool) in [(20, canary_rate, &mut c), (180, stable_rate, &mut s)] {
                pool.requests += n;
                pool.client_errors += (0..n).filter(|_| rng.random::<f64>() < rate).count() as u64;
            }
            let a = analyse(&policy, &baseline(), &c, &s);
            if report(&a, RuleKind::ClientErrorsVsStable).status == RuleStatus::Failing {
                alarms += 1;
                break;
            }
        }
    }
    alarms
}

#[test]
fn equal_4xx_shares_stay_within_the_rules_false_alarm_budget_in_a_seeded_simulation() {
    // The rule's share of the budget is alpha·w per rollout (w its weight
    // among the eight rules), so over 1,000 two-minute rollouts at most
    // 1,000·alpha·w alarms are allowed.
    let runs = 1000;
    let policy = AnalysisPolicy::default();
    let needed = report(
        &analyse(&policy, &baseline(), &counts(2_000, 2), &counts(18_000, 18)),
        RuleKind::ClientErrorsVsStable,
    )
    .needed;
    let budget = runs as f64 / needed;
    let alarms = simulated_client_error_alarms(0.05, 0.05, runs);
    assert!(
        alarms as f64 <= budget,
        "{alarms} of {runs} healthy rollouts rolled back; budget {budget}"
    );
    // The same simulation catches every canary answering a fifth of its requests with 404.
    assert_eq!(simulated_client_error_alarms(0.20, 0.05, 50), 50);
}
#[test]
fn evidence_carries_across_windows_with_different_splits() {
    // 3 of 4 errors the canary's at a 10% split, then 3 of 3 at 50%: neither
    // window alone is enough, both together are.
    let p = AnalysisPolicy::default();
    let at_10 = Window {
        canary: counts(400, 3),
        stable: counts(3_600, 1),
    };
    let at_50 = Window {
        canary: counts(400, 3),
        stable: counts(400, 0),
    };
    for alone in [at_10, at_50] {
        let a = analyse_windows(&p, &baseline(), &[alone]);
        assert!(
            !matches!(a.verdict, Verdict::Fail { .. }),
            "{:?}",
            a.verdict
        );
    }
    let a = analyse_windows(&p, &baseline(), &[at_10, at_50]);
    let Verdict::Fail { rule, summary } = &a.verdict else {
        panic!("{:?}", a.verdict)
    };
    assert_eq!(*rule, RuleKind::ErrorsVsStable);
    assert!(
        summary.contains("observed 85.71% (6 of 7) against 50.00%"),
        "{summary}"
    );
}

#[test]
fn bounds_show_how_much_the_data_rules_out() {
    let p = AnalysisPolicy::default();
    let thin = bounds(
        &p,
        &baseline(),
        &[Window {
            canary: counts(200, 0),
            stable: counts(1_800, 2),
        }],
    );
    let ample = bounds(
        &p,
        &baseline(),
        &[Window {
            canary: counts(20_000, 20),
            stable: counts(180_000, 180),
        }],
    );
    assert_eq!(thin.canary_requests, 200);
    // 200 requests without an error cannot rule out a rate of 1%.
    assert!(thin.error_rate_upper > 0.01, "{thin:?}");
    assert!(thin.excess() > 0.005, "{thin:?}");
    // 20,000 at stable's 0.1% bound the excess well within half a point.
    assert!(ample.error_rate_upper > 0.001 && ample.stable_error_rate_lower < 0.001);
    assert!(ample.excess() < 0.005, "{ample:?}");
    assert!(ample.slow_rate_upper.is_some());
}

/// Healthy rollouts through every rule: 60 s at 10% then 60 s at 50% of 200
/// requests/s, judged every second with the evidence carried across the two
/// windows (as the canary machine does), seeds fixed. The benchmark runs
/// 10,000 of these in release; here a few hundred, against the same 1% budget.
#[test]
fn healthy_rollouts_over_two_steps_stay_within_the_false_rollback_budget() {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    let policy = AnalysisPolicy::default();
    let base = baseline();
    let limits = latency_limits(&policy, &base);
    let runs = 400u64;
    let mut alarms = 0;
    for seed in 0..runs {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut windows: Vec<Window> = Vec::new();
        'rollout: for share in [0.1, 0.5] {
            windows.push(Window::default());
            for _second in 0..60 {
                let canary_requests = (200.0 * share) as u64;
                let w = windows.last_mut().unwrap();
                for (n, pool) in [
                    (canary_requests, &mut w.canary),
                    (200 - canary_requests, &mut w.stable),
                ] {
                    for _ in 0..n {
                        pool.requests += 1;
                        if rng.random::<f64>() < 0.001 {
                            pool.errors += 1;
                        } else if rng.random::<f64>() < 0.02 {
                            pool.client_errors += 1;
                        }
                        let ms = if rng.random::<f64>() < 0.99 {
                            rng.random_range(5.0..20.0)
                        } else {
                            rng.random_range(20.0..40.0)
                        };
                        let over = |l: Option<f64>| u64::from(l.is_some_and(|l| ms > l));
                        pool.over_p99_limit += over(limits.p99_ms);
                        pool.over_p50_limit += over(limits.p50_ms);
                        pool.over_compare_limit += over(limits.compare_ms);
                    }
                }
                if matches!(
                    analyse_windows(&policy, &base, &windows).verdict,
                    Verdict::Fail { .. }
                ) {
                    alarms += 1;
                    break 'rollout;
                }
            }
        }
    }
    let budget = runs as f64 * policy.alpha;
    assert!(
        alarms as f64 <= budget,
        "{alarms} of {runs} healthy rollouts rolled back; budget {budget}"
    );
}

mod count_rules {
    use super::super::queries::{CountSeries, CountWindow};
    use super::*;

    fn series(max_ratio: Option<f64>, compare: bool, windows: &[CountWindow]) -> CountSeries {
        CountSeries {
            rule: "checkout".into(),
            max_ratio,
            compare,
            windows: windows.to_vec(),
        }
    }

    fn window(errors: u64, total: u64, old_errors: u64, old_total: u64) -> CountWindow {
        CountWindow {
            errors,
            total,
            old_errors,
            old_total,
        }
    }

    /// Router traffic that no built-in rule objects to.
    fn quiet() -> Vec<Window> {
        vec![Window {
            canary: counts(1_000, 1),
            stable: counts(9_000, 9),
        }]
    }

    #[test]
    fn a_new_release_failing_checkouts_ten_times_as_often_is_named_by_its_query_rule() {
        // 10% of the canary's checkouts fail against 1% of stable's, under a 10% split.
        let s = series(None, true, &[window(20, 200, 18, 1_800)]);
        let a = analyse_with_counts(&AnalysisPolicy::default(), &baseline(), &quiet(), &[s]);
        let Verdict::Fail { rule, summary } = &a.verdict else {
            panic!("{:?}", a.verdict)
        };
        assert_eq!(*rule, RuleKind::QueryErrorsVsStable);
        assert!(
            summary.starts_with("query rule \"checkout\": new release's share of errors above its share of events (10.00%): observed 52.63% (20 of 38)"),
            "{summary}"
        );
    }

    #[test]
    fn the_same_error_ratio_on_both_releases_passes_and_counts_toward_nothing_bad() {
        let s = series(Some(0.05), true, &[window(2, 200, 18, 1_800)]);
        let a = analyse_with_counts(&AnalysisPolicy::default(), &baseline(), &quiet(), &[s]);
        assert!(
            !matches!(a.verdict, Verdict::Fail { .. }),
            "{:?}",
            a.verdict
        );
        let r = report(&a, RuleKind::QueryErrorsVsStable);
        assert_eq!(r.status, RuleStatus::Passing);
        assert_eq!((r.events, r.samples), (2, 20));
        assert_eq!(
            report(&a, RuleKind::QueryErrorRatio).status,
            RuleStatus::Passing
        );
    }

    #[test]
    fn an_error_ratio_above_its_bound_fails_without_an_old_release() {
        // No old release to compare with: the bound still judges.
        let s = series(Some(0.01), false, &[window(30, 600, 0, 0)]);
        let a = analyse_with_counts(&AnalysisPolicy::default(), &baseline(), &quiet(), &[s]);
        let Verdict::Fail { rule, summary } = &a.verdict else {
            panic!("{:?}", a.verdict)
        };
        assert_eq!(*rule, RuleKind::QueryErrorRatio);
        assert!(summary.contains("error ratio above 1.00%"), "{summary}");
        assert!(summary.contains("(30 of 600)"), "{summary}");
    }

    #[test]
    fn too_few_events_wait_instead_of_passing_on_silence() {
        let s = series(Some(0.01), true, &[window(0, 20, 0, 180)]);
        let a = analyse_with_counts(&AnalysisPolicy::default(), &baseline(), &quiet(), &[s]);
        assert_eq!(a.verdict, Verdict::Continue { waiting: true });
        assert_eq!(
            report(&a, RuleKind::QueryErrorRatio).status,
            RuleStatus::NotEnoughData
        );
    }

    #[test]
    fn each_window_is_compared_under_its_own_split() {
        // 10% then 50% of the events on the new release, with the same
        // error ratio as the old one in both: pooled, the new release's
        // share of errors (51/102) would look far above its share of the
        // events in the first window; per window it is exactly its share.
        let windows = [window(1, 100, 9, 900), window(50, 5_000, 50, 5_000)];
        let s = series(None, true, &windows);
        let a = analyse_with_counts(&AnalysisPolicy::default(), &baseline(), &quiet(), &[s]);
        assert_eq!(
            report(&a, RuleKind::QueryErrorsVsStable).status,
            RuleStatus::Passing
        );
    }
}
