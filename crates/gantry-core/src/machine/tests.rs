//! Kept as one file though long: every transcript builds on the same
//! fixtures (settings, deployments, event scripts); one test module per
//! concern would scatter them.
//!
//! Scripted transcripts of the state machine: events in, states and effects
//! out, checked as snapshots (`INSTA_UPDATE=always cargo test` rewrites them).

use super::*;
use std::fmt::Write;

fn settings() -> DeploySettings {
    DeploySettings {
        instances: 2,
        health: HealthSettings {
            interval_ms: 1000,
            startup_interval_ms: 100,
            failure_threshold: 3,
            start_timeout_ms: 5000,
        },
        bake_ms: 3000,
        strategy: StrategySettings::BlueGreen,
        smoke: None,
        freezes: Vec::new(),
        fleet: None,
        watch: None,
        resources: Default::default(),
        hooks: Vec::new(),
        migrations: Vec::new(),
    }
}

fn inst(n: u16) -> InstanceRef {
    InstanceRef {
        id: format!("i{n}"),
        port: 9000 + n,
        host: None,
    }
}

fn first_deploy() -> Deployment {
    Deployment::new(
        NewDeployment {
            id: 1,
            env: "production".parse().unwrap(),
            kind: DeploymentKind::Deploy,
            version: Version::new(1, 1, 0),
            previous_version: Some(Version::new(1, 0, 0)),
            old_instances: vec![inst(1)],
            settings: settings(),
            requested_by: "alice".into(),
        },
        0,
    )
}

/// Runs `script` and renders a transcript; also returns the last state.
fn run(mut d: Deployment, script: &[(Millis, Event)]) -> (String, Deployment) {
    let mut out = String::new();
    for (now, event) in script {
        let t = step(&d, event, *now);
        writeln!(out, "@{now} {}", serde_json::to_string(event).unwrap()).unwrap();
        writeln!(out, "  phase: {}", t.deployment.phase.as_str()).unwrap();
        for e in &t.effects {
            writeln!(out, "  effect: {}", serde_json::to_string(e).unwrap()).unwrap();
        }
        for l in &t.log {
            writeln!(out, "  log: {l}").unwrap();
        }
        d = t.deployment;
    }
    (out, d)
}

/// Created, prepared and started with instances `ids` (at 0, 10 and 20 ms), then `rest`.
fn started_then(ids: &[u16], rest: Vec<(Millis, Event)>) -> Vec<(Millis, Event)> {
    let instances = ids.iter().map(|n| inst(*n)).collect();
    let mut script = vec![
        (0, Event::Created),
        (10, Event::Prepared),
        (
            20,
            Event::InstancesStarted {
                instances,
                failed_hosts: Default::default(),
            },
        ),
    ];
    script.extend(rest);
    script
}

fn healthy(i: u16) -> Event {
    Event::HealthObserved {
        instance: format!("i{i}"),
        probe: Probe::Healthy,
    }
}

#[test]
fn successful_deployment() {
    let (transcript, d) = run(
        first_deploy(),
        &started_then(
            &[2, 3],
            vec![
                (
                    30,
                    Event::HealthObserved {
                        instance: "i2".into(),
                        probe: Probe::Unreachable("connection refused".into()),
                    },
                ),
                (130, healthy(2)),
                (140, healthy(3)),
                (150, Event::TrafficRouted { to_new: true }),
                (1150, healthy(2)),
                (3150, Event::Tick),
                (3160, Event::InstancesStopped),
            ],
        ),
    );
    insta::assert_snapshot!(transcript);
    assert_eq!(d.phase, Phase::Succeeded);
    assert_eq!(d.finished_at, Some(3160));
    assert!(d.reason.is_none());
}

#[test]
fn failing_health_after_switch_returns_traffic_then_stops_new() {
    let fail = || Event::HealthObserved {
        instance: "i2".into(),
        probe: Probe::Unhealthy("HTTP 500".into()),
    };
    let (transcript, d) = run(
        first_deploy(),
        &started_then(
            &[2, 3],
            vec![
                (30, healthy(2)),
                (40, healthy(3)),
                (50, Event::TrafficRouted { to_new: true }),
                (1050, fail()),
                (2050, fail()),
                (3050, fail()),
                (3060, Event::TrafficRouted { to_new: false }),
                (3070, Event::InstancesStopped),
            ],
        ),
    );
    insta::assert_snapshot!(transcript);
    assert_eq!(d.phase, Phase::RolledBack);
    assert!(!d.traffic_on_new);
    assert!(d.reason.unwrap().contains("3 consecutive times on i2"));
}

#[test]
fn instance_that_never_comes_up_times_out() {
    let (transcript, d) = run(
        first_deploy(),
        &started_then(
            &[2, 3],
            vec![
                (30, healthy(2)),
                (
                    40,
                    Event::HealthObserved {
                        instance: "i3".into(),
                        probe: Probe::Unreachable("connection refused".into()),
                    },
                ),
                (4000, Event::Tick),
                (5020, Event::Tick),
                (5030, Event::InstancesStopped),
            ],
        ),
    );
    insta::assert_snapshot!(transcript);
    assert_eq!(d.phase, Phase::RolledBack);
    assert!(d
        .reason
        .unwrap()
        .contains("within 5s: i3 (connection refused)"));
}

#[test]
fn warm_up_answers_do_not_count_until_healthy_once() {
    let (_, d) = run(first_deploy(), &started_then(&[2], vec![]));
    let probe = |p: Probe| Event::HealthObserved {
        instance: "i2".into(),
        probe: p,
    };
    // Not listening, then 503 while loading: 40 answers, far past the threshold of 3.
    let mut script: Vec<_> = (0..10)
        .map(|n| (100 + n * 50, probe(Probe::Unreachable("refused".into()))))
        .collect();
    script.extend((0..30).map(|n| (700 + n * 50, probe(Probe::Unhealthy("HTTP 503".into())))));
    let (_, warming) = run(d.clone(), &script);
    assert_eq!(warming.phase, Phase::Verifying, "warm-up is not failure");
    assert_eq!(warming.health["i2"].consecutive_failures, 0);
    assert_eq!(warming.health["i2"].last_detail, "HTTP 503");

    // Once healthy, the threshold applies to bad answers.
    let mut after = script.clone();
    after.push((2300, healthy(2)));
    after.push((2310, Event::TrafficRouted { to_new: true }));
    let (_, up) = run(d.clone(), &after);
    assert_eq!(up.phase, Phase::Baking);
    let bad = probe(Probe::Unhealthy("HTTP 500".into()));
    let (_, failed) = run(up, &[(3300, bad.clone()), (4300, bad.clone()), (5300, bad)]);
    assert_eq!(failed.phase, Phase::RollingBack);
    assert!(failed.reason.unwrap().contains("3 consecutive times on i2"));

    // An instance that never answers healthy fails at the start timeout, naming its last answer.
    let mut stuck = script;
    stuck.push((5100, Event::Tick));
    let (_, timed_out) = run(d, &stuck);
    assert_eq!(timed_out.phase, Phase::RollingBack);
    assert!(timed_out
        .reason
        .unwrap()
        .contains("did not become healthy within 5s: i2 (HTTP 503)"));
}

#[test]
fn prepare_failure_changes_nothing() {
    let (transcript, d) = run(
        first_deploy(),
        &[
            (0, Event::Created),
            (
                5,
                Event::PrepareFailed {
                    reason: "checksum mismatch".into(),
                },
            ),
        ],
    );
    insta::assert_snapshot!(transcript);
    assert_eq!(d.phase, Phase::Failed);
}

#[test]
fn resumed_reemits_what_the_phase_still_needs() {
    let (_, d) = run(
        first_deploy(),
        &started_then(&[2, 3], vec![(30, healthy(2))]),
    );
    let t = step(&d, &Event::Resumed, 500);
    assert_eq!(
        t.effects,
        vec![
            Effect::ProbeHealth {
                instance: inst(3),
                at: 500
            },
            Effect::WakeAt { at: 5020 },
        ],
        "only the instance not yet up is probed, and the original deadline stands"
    );

    // Crash between routing back and stopping: resume re-issues the route back.
    let mut rolling = d.clone();
    rolling.phase = Phase::RollingBack;
    rolling.traffic_on_new = true;
    let t = step(&rolling, &Event::Resumed, 600);
    assert_eq!(
        t.effects,
        vec![Effect::RouteTraffic {
            instances: vec![inst(1)],
            to_new: false
        }]
    );
}

#[test]
fn abort_during_bake_routes_back() {
    let (_, d) = run(
        first_deploy(),
        &started_then(
            &[2],
            vec![
                (30, healthy(2)),
                (40, Event::TrafficRouted { to_new: true }),
                (50, Event::AbortRequested { by: "bob".into() }),
            ],
        ),
    );
    assert_eq!(d.phase, Phase::RollingBack);
    assert_eq!(d.reason.as_deref(), Some("aborted by bob"));
}

#[test]
fn first_ever_deployment_has_nothing_to_drain() {
    let mut d = first_deploy();
    d.old_instances.clear();
    d.previous_version = None;
    d.settings.bake_ms = 0;
    let (_, d) = run(
        d,
        &started_then(
            &[2],
            vec![
                (30, healthy(2)),
                (40, Event::TrafficRouted { to_new: true }),
            ],
        ),
    );
    assert_eq!(d.phase, Phase::Succeeded);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn any_event() -> impl Strategy<Value = Event> {
        let id = prop_oneof![
            Just("i1".to_owned()),
            Just("i2".to_owned()),
            Just("i3".to_owned())
        ];
        prop_oneof![
            Just(Event::Created),
            Just(Event::Resumed),
            Just(Event::Prepared),
            Just(Event::PrepareFailed { reason: "x".into() }),
            Just(Event::InstancesStarted {
                instances: vec![inst(2), inst(3)],
                failed_hosts: Default::default(),
            }),
            Just(Event::StartFailed { reason: "x".into() }),
            id.clone().prop_map(|i| Event::HealthObserved {
                instance: i,
                probe: Probe::Healthy
            }),
            id.clone().prop_map(|i| Event::HealthObserved {
                instance: i,
                probe: Probe::Unhealthy("500".into())
            }),
            id.clone().prop_map(|i| Event::HealthObserved {
                instance: i,
                probe: Probe::Unreachable("refused".into())
            }),
            id.prop_map(|i| Event::InstanceExited {
                instance: i,
                detail: "exit 1".into()
            }),
            any::<bool>().prop_map(|to_new| Event::TrafficRouted { to_new }),
            Just(Event::RouteFailed { reason: "x".into() }),
            Just(Event::InstancesStopped),
            Just(Event::Tick),
            Just(Event::AbortRequested { by: "bob".into() }),
            Just(Event::InstancesRestored),
            Just(Event::PromoteRequested { by: "bob".into() }),
            Just(Event::Approved {
                by: "carol".into(),
                comment: "ok".into()
            }),
            Just(Event::Rejected {
                by: "dave".into(),
                comment: "no".into()
            }),
            any::<bool>().prop_map(|passed| Event::SmokeFinished {
                results: vec![SmokeResult {
                    check: "home".into(),
                    instance: "i2".into(),
                    critical: true,
                    passed,
                    detail: String::new(),
                    elapsed_ms: 1,
                }]
            }),
        ]
    }

    /// A blue-green deployment, one with smoke checks, a rolling update, or
    /// a normal change that needs an approval and a lead time.
    fn any_deployment() -> impl Strategy<Value = Deployment> {
        (0..4u8).prop_map(|kind| {
            let mut d = first_deploy();
            match kind {
                3 => d = d.with_change(normal_change(1, 5000)),
                1 => {
                    d.settings.smoke = Some(SmokeSettings {
                        checks: vec![SmokeCheck {
                            name: "home".into(),
                            critical: true,
                            timeout_ms: 100,
                            probe: SmokeProbe::Command {
                                argv: vec!["true".into()],
                            },
                        }],
                        timeout_ms: 1000,
                        max_noncritical_failure_ratio: 0.1,
                    })
                }
                2 => {
                    d.old_instances = vec![inst(1), inst(4)];
                    d.settings.strategy = StrategySettings::Rolling(RollingSettings {
                        max_surge: 1,
                        max_unavailable: 0,
                        judge: None,
                    })
                }
                _ => {}
            }
            d
        })
    }

    proptest! {
        /// Whatever happens, in whatever order: a finished deployment never
        /// moves again, a rolled-back one sends no traffic to the new release,
        /// and a rollback always carries its reason.
        #[test]
        fn invariants_hold_for_any_event_sequence(
            start in any_deployment(),
            events in prop::collection::vec(any_event(), 0..60),
        ) {
            let mut d = start;
            let mut now = 0;
            for e in &events {
                now += 700;
                let t = step(&d, e, now);
                if d.phase.is_terminal() {
                    prop_assert_eq!(&t.deployment, &d);
                    prop_assert!(t.effects.is_empty());
                }
                if t.deployment.phase == Phase::RolledBack {
                    prop_assert!(!t.deployment.traffic_on_new);
                    prop_assert!(t.deployment.reason.is_some());
                    // Every retired old instance was started again.
                    prop_assert!(t.deployment.rolling.as_ref().is_none_or(|r| r.retired.is_empty()));
                }
                if t.deployment.phase == Phase::Succeeded {
                    prop_assert!(t.deployment.traffic_on_new);
                }
                // Nothing starts before its approvals and its lead time.
                if d.phase == Phase::AwaitingApproval && t.deployment.phase == Phase::Preparing {
                    let c = t.deployment.change.as_ref().unwrap();
                    let approved = c.approvals.iter().filter(|a| a.approved).count() as u32;
                    prop_assert!(approved >= c.required_before);
                    prop_assert!(c.start_after.is_none_or(|at| now >= at));
                }
                d = t.deployment;
            }
        }
    }
}

mod canary {
    use super::*;
    use crate::analysis::{AnalysisPolicy, Baseline, Counts};

    fn canary_deploy(pause: Pause) -> Deployment {
        let mut d = first_deploy();
        d.settings.strategy = StrategySettings::Canary(CanarySettings {
            steps: vec![
                CanaryStep { weight: 10, pause },
                CanaryStep { weight: 50, pause },
                CanaryStep {
                    weight: 100,
                    pause: Pause::For { ms: 0 },
                },
            ],
            analysis: AnalysisPolicy::default(),
            interval_ms: 1000,
            max_wait_ms: 60_000,
            promotion_tolerance: STANDARD_PROMOTION_TOLERANCE,
            max_pause_ms: STANDARD_MAX_PAUSE_MS,
        });
        d
    }

    fn up(d: Deployment) -> Deployment {
        run(d, &started_then(&[2], vec![(30, healthy(2))])).1
    }

    fn baseline() -> Baseline {
        Baseline {
            requests: 10_000,
            errors: 10,
            p50_ms: 10.0,
            p99_ms: 40.0,
            queries: Default::default(),
        }
    }

    fn metrics(canary: (u64, u64), stable: (u64, u64)) -> Event {
        Event::MetricsObserved {
            canary: Counts {
                requests: canary.0,
                errors: canary.1,
                ..Counts::default()
            },
            stable: Counts {
                requests: stable.0,
                errors: stable.1,
                ..Counts::default()
            },
            hosts: Default::default(),
            queries: Default::default(),
            resources: Vec::new(),
        }
    }

    #[test]
    fn a_healthy_canary_walks_its_steps_and_completes() {
        let (transcript, d) = run(
            up(canary_deploy(Pause::For { ms: 2000 })),
            &[
                (
                    40,
                    Event::BaselineObserved {
                        baseline: baseline(),
                    },
                ),
                (50, Event::TrafficRouted { to_new: true }),
                (50, metrics((0, 0), (0, 0))),
                (1050, metrics((2_500, 1), (22_500, 20))),
                (2050, metrics((5_000, 2), (45_000, 45))),
                (2060, Event::TrafficRouted { to_new: true }),
                (2060, metrics((5_000, 2), (45_000, 45))),
                (4060, metrics((10_000, 5), (50_000, 50))),
                (4070, Event::TrafficRouted { to_new: true }),
                (4070, metrics((10_000, 5), (50_000, 50))),
                (4080, metrics((10_100, 5), (50_000, 50))),
                (4090, Event::InstancesStopped),
            ],
        );
        insta::assert_snapshot!(transcript);
        assert_eq!(d.phase, Phase::Succeeded);
    }

    fn fleet_metrics(hosts: &[(u64, u64)], stable: (u64, u64)) -> Event {
        let by_host: BTreeMap<String, Counts> = hosts
            .iter()
            .enumerate()
            .map(|(i, (r, e))| {
                (
                    format!("h{}", i + 1),
                    Counts {
                        requests: *r,
                        errors: *e,
                        ..Counts::default()
                    },
                )
            })
            .collect();
        let Event::MetricsObserved { stable, .. } = metrics((0, 0), stable) else {
            unreachable!()
        };
        Event::MetricsObserved {
            canary: Counts {
                requests: hosts.iter().map(|h| h.0).sum(),
                errors: hosts.iter().map(|h| h.1).sum(),
                ..Counts::default()
            },
            stable,
            hosts: by_host,
            queries: Default::default(),
            resources: Vec::new(),
        }
    }

    #[test]
    fn one_host_much_worse_than_the_rest_rolls_the_canary_back_named() {
        // The fleet's sum stays under every fleet-wide rule (0.9% errors
        // against a 1% limit and a stable at 0.9%), but h3 fails 4.5% of
        // its requests where the others fail none.
        let (transcript, d) = run(
            up(canary_deploy(Pause::For { ms: 600_000 })),
            &[
                (
                    40,
                    Event::BaselineObserved {
                        baseline: Baseline {
                            requests: 10_000,
                            errors: 90,
                            p50_ms: 10.0,
                            p99_ms: 40.0,
                            queries: Default::default(),
                        },
                    },
                ),
                (50, Event::TrafficRouted { to_new: true }),
                (50, fleet_metrics(&[(0, 0); 5], (0, 0))),
                (
                    1050,
                    fleet_metrics(
                        &[(400, 0), (400, 0), (400, 4), (400, 0), (400, 0)],
                        (18_000, 162),
                    ),
                ),
                (
                    2050,
                    fleet_metrics(
                        &[(1600, 0), (1600, 0), (1600, 72), (1600, 0), (1600, 0)],
                        (72_000, 648),
                    ),
                ),
            ],
        );
        assert_eq!(d.phase, Phase::RollingBack, "{transcript}");
        let reason = d.reason.unwrap();
        assert!(
            reason.contains("the canary on host h3 is much worse than on the rest of the fleet: 72 errors in 1600 requests"),
            "{reason}"
        );
    }

    #[test]
    fn a_fleet_wide_failure_names_the_worst_host_too() {
        let (_, d) = run(
            up(canary_deploy(Pause::For { ms: 600_000 })),
            &[
                (
                    40,
                    Event::BaselineObserved {
                        baseline: baseline(),
                    },
                ),
                (50, Event::TrafficRouted { to_new: true }),
                (50, fleet_metrics(&[(0, 0); 3], (0, 0))),
                (
                    1050,
                    fleet_metrics(&[(500, 25), (500, 30), (500, 27)], (13_500, 13)),
                ),
            ],
        );
        assert_eq!(d.phase, Phase::RollingBack);
        let reason = d.reason.unwrap();
        assert!(
            reason.contains("by host: h2 has the highest canary error rate, 30 of 500 (6.0%), the other 2 host(s) 52 of 1000 (5.2%)"),
            "{reason}"
        );
    }

    #[test]
    fn a_step_without_evidence_gathers_then_holds_for_a_person() {
        let mut d = canary_deploy(Pause::For { ms: 2000 });
        let StrategySettings::Canary(c) = &mut d.settings.strategy else {
            unreachable!("a canary deployment")
        };
        c.max_pause_ms = 10_000;
        let (transcript, d) = run(
            up(d),
            &[
                (
                    40,
                    Event::BaselineObserved {
                        baseline: baseline(),
                    },
                ),
                (50, Event::TrafficRouted { to_new: true }),
                (50, metrics((0, 0), (0, 0))),
                // The pause is over, nothing failed, but 200 requests prove little.
                (2050, metrics((200, 0), (1800, 2))),
                (6050, metrics((400, 0), (3600, 4))),
                // The cap: hold, saying what the data could rule out.
                (10_050, metrics((700, 0), (6300, 6))),
                (11_050, metrics((800, 0), (7200, 7))),
                (12_000, Event::PromoteRequested { by: "ana".into() }),
            ],
        );
        insta::assert_snapshot!(transcript);
        assert!(
            transcript.contains("not enough evidence to promote: 700 requests, could only rule out an error rate above"),
            "{transcript}"
        );
        assert_eq!(
            transcript.matches("gathering evidence").count(),
            1,
            "said once: {transcript}"
        );
        let c = d.canary.as_ref().unwrap();
        assert_eq!((c.step, c.held), (1, false), "moved on when promoted");
        assert_eq!(d.phase, Phase::Canary);
    }

    #[test]
    fn a_held_step_still_rolls_back_a_regression() {
        let mut d = canary_deploy(Pause::For { ms: 2000 });
        let StrategySettings::Canary(c) = &mut d.settings.strategy else {
            unreachable!("a canary deployment")
        };
        c.max_pause_ms = 4000;
        let (_, d) = run(
            up(d),
            &[
                (
                    40,
                    Event::BaselineObserved {
                        baseline: baseline(),
                    },
                ),
                (50, Event::TrafficRouted { to_new: true }),
                (50, metrics((0, 0), (0, 0))),
                (4050, metrics((400, 0), (3600, 4))),
                (5050, metrics((800, 40), (7200, 7))),
            ],
        );
        assert_eq!(d.phase, Phase::RollingBack);
        assert!(d.reason.unwrap().starts_with("canary analysis at 10%"));
    }

    #[test]
    fn evidence_carries_from_one_step_to_the_next() {
        // Neither step's counts alone fail the comparison; together they do.
        let (_, d) = run(
            up(canary_deploy(Pause::UntilPromoted)),
            &[
                (
                    40,
                    Event::BaselineObserved {
                        baseline: baseline(),
                    },
                ),
                (50, Event::TrafficRouted { to_new: true }),
                (50, metrics((0, 0), (0, 0))),
                (5050, metrics((400, 3), (3600, 1))),
                (5060, Event::PromoteRequested { by: "ana".into() }),
                (5070, Event::TrafficRouted { to_new: true }),
                (5070, metrics((400, 3), (3600, 1))),
                (9070, metrics((800, 6), (4000, 1))),
            ],
        );
        assert_eq!(d.phase, Phase::RollingBack);
        let reason = d.reason.unwrap();
        assert!(
            reason.contains("canary analysis at 50%: canary's share of errors above its share of traffic (50.00%): observed 85.71% (6 of 7)"),
            "{reason}"
        );
    }

    #[test]
    fn an_error_regression_rolls_back_with_the_figures() {
        let (transcript, d) = run(
            up(canary_deploy(Pause::For { ms: 60_000 })),
            &[
                (
                    40,
                    Event::BaselineObserved {
                        baseline: baseline(),
                    },
                ),
                (50, Event::TrafficRouted { to_new: true }),
                (50, metrics((0, 0), (0, 0))),
                (1050, metrics((100, 0), (900, 1))),
                (5050, metrics((400, 20), (3600, 4))),
                (5060, Event::TrafficRouted { to_new: false }),
                (5070, Event::InstancesStopped),
            ],
        );
        insta::assert_snapshot!(transcript);
        assert_eq!(d.phase, Phase::RolledBack);
        let reason = d.reason.unwrap();
        assert!(
            reason.starts_with(
                "canary analysis at 10%: canary error rate above 1.00%: observed 5.00% (20 of 400)"
            ),
            "{reason}"
        );
    }

    /// A count rule's counters (checkouts failed, all checkouts) for the
    /// new release and the old, with router traffic no built-in rule minds.
    fn with_checkouts(router: (u64, u64), new: (f64, f64), old: (f64, f64)) -> Event {
        use crate::analysis::queries::{QueryReading, Reading, Tally};
        let Event::MetricsObserved { canary, stable, .. } = metrics((router.0, 0), (router.1, 0))
        else {
            unreachable!()
        };
        Event::MetricsObserved {
            canary,
            stable,
            hosts: Default::default(),
            queries: vec![QueryReading {
                rule: "checkout".into(),
                resolved: "sum(checkout_failed_total{release=\"1.1.0\"})".into(),
                reading: Reading::Counts {
                    new: Tally {
                        errors: new.0,
                        total: new.1,
                    },
                    old: Tally {
                        errors: old.0,
                        total: old.1,
                    },
                },
            }],
            resources: Vec::new(),
        }
    }

    #[test]
    fn a_count_rule_rolls_back_a_canary_whose_checkouts_fail_more_naming_the_rule() {
        use crate::analysis::queries::{Condition, CountCondition, NoData, QueryRule};
        let mut d = canary_deploy(Pause::For { ms: 60_000 });
        if let StrategySettings::Canary(c) = &mut d.settings.strategy {
            c.analysis.queries = vec![QueryRule {
                name: "checkout".into(),
                query: "sum(checkout_failed_total{release=\"{release}\"})".into(),
                condition: Condition::Counts(CountCondition {
                    total: "sum(checkout_total{release=\"{release}\"})".into(),
                    successes: false,
                    max_ratio: None,
                    compare: true,
                }),
                consecutive: 1,
                no_data: NoData::Wait,
                no_data_ms: 60_000,
            }];
        }
        let (_, d) = run(
            up(d),
            &[
                (
                    40,
                    Event::BaselineObserved {
                        baseline: baseline(),
                    },
                ),
                (50, Event::TrafficRouted { to_new: true }),
                // Counters since each process started: only their rise counts.
                (50, with_checkouts((0, 0), (3.0, 50.0), (80.0, 9_000.0))),
                (
                    1050,
                    with_checkouts((100, 900), (6.0, 100.0), (84.0, 9_450.0)),
                ),
                (
                    2050,
                    with_checkouts((200, 1800), (25.0, 250.0), (89.0, 9_900.0)),
                ),
                (2060, Event::TrafficRouted { to_new: false }),
                (2070, Event::InstancesStopped),
            ],
        );
        assert_eq!(d.phase, Phase::RolledBack);
        let reason = d.reason.unwrap();
        assert!(
            reason.starts_with(
                "canary analysis at 10%: query rule \"checkout\": new release's share of errors above its share of events (18.18%)"
            ),
            "{reason}"
        );
        assert!(reason.contains("(22 of 31)"), "{reason}");
    }

    #[test]
    fn a_step_that_waits_for_promotion_moves_only_when_promoted() {
        let (_, d) = run(
            up(canary_deploy(Pause::UntilPromoted)),
            &[
                (
                    40,
                    Event::BaselineObserved {
                        baseline: baseline(),
                    },
                ),
                (50, Event::TrafficRouted { to_new: true }),
                (50, metrics((0, 0), (0, 0))),
                (100_000, metrics((10_000, 0), (90_000, 9))),
            ],
        );
        assert_eq!(
            d.canary.as_ref().unwrap().weight,
            10,
            "time alone does not move it"
        );
        let t = step(&d, &Event::PromoteRequested { by: "carol".into() }, 100_010);
        assert_eq!(t.log, ["promoted by carol at 10%"]);
        assert!(
            matches!(t.effects[..], [Effect::ShiftTraffic { weight: 50, .. }]),
            "{:?}",
            t.effects
        );
    }

    #[test]
    fn a_pause_stops_the_clock_but_not_the_analysis() {
        let (_, d) = run(
            up(canary_deploy(Pause::For { ms: 2000 })),
            &[
                (
                    40,
                    Event::BaselineObserved {
                        baseline: baseline(),
                    },
                ),
                (50, Event::TrafficRouted { to_new: true }),
                (50, metrics((0, 0), (0, 0))),
                (60, Event::PauseRequested { by: "dan".into() }),
                (5000, metrics((500, 0), (4500, 4))),
            ],
        );
        assert_eq!(
            d.canary.as_ref().unwrap().weight,
            10,
            "paused: no promotion by time"
        );
        let t = step(&d, &metrics((600, 30), (5400, 5)), 6000);
        assert_eq!(
            t.deployment.phase,
            Phase::RollingBack,
            "a paused canary is still rolled back"
        );
    }

    /// (requests, 4xx answers) of each pool.
    fn client_error_metrics(canary: (u64, u64), stable: (u64, u64)) -> Event {
        Event::MetricsObserved {
            canary: Counts {
                requests: canary.0,
                client_errors: canary.1,
                ..Counts::default()
            },
            stable: Counts {
                requests: stable.0,
                client_errors: stable.1,
                ..Counts::default()
            },
            hosts: Default::default(),
            queries: Default::default(),
            resources: Vec::new(),
        }
    }

    #[test]
    fn a_canary_answering_404_out_of_proportion_rolls_back_naming_the_rule() {
        let (_, d) = run(
            up(canary_deploy(Pause::For { ms: 60_000 })),
            &[
                (
                    40,
                    Event::BaselineObserved {
                        baseline: baseline(),
                    },
                ),
                (50, Event::TrafficRouted { to_new: true }),
                // The step starts with 4xx already counted on both sides: only what follows counts.
                (50, client_error_metrics((1000, 300), (9000, 300))),
                (1050, client_error_metrics((1100, 300), (9900, 330))),
                (5050, client_error_metrics((1400, 380), (12_600, 390))),
            ],
        );
        assert_eq!(d.phase, Phase::RollingBack);
        let reason = d.reason.unwrap();
        assert!(
            reason.starts_with(
                "canary analysis at 10%: canary's share of 4xx answers above its share of traffic (10.00%): observed 47.06% (80 of 170) against 10.00%"
            ),
            "{reason}"
        );
    }

    #[test]
    fn at_the_last_step_there_is_no_stable_traffic_to_compare_4xx_with() {
        let mut d = up(canary_deploy(Pause::For { ms: 60_000 }));
        let StrategySettings::Canary(c) = &mut d.settings.strategy else {
            panic!("a canary deployment")
        };
        c.steps = vec![CanaryStep {
            weight: 100,
            pause: Pause::For { ms: 60_000 },
        }];
        let (_, d) = run(
            d,
            &[
                (
                    40,
                    Event::BaselineObserved {
                        baseline: baseline(),
                    },
                ),
                (50, Event::TrafficRouted { to_new: true }),
                (50, client_error_metrics((0, 0), (9000, 0))),
                (5050, client_error_metrics((400, 80), (9000, 0))),
            ],
        );
        assert_eq!(d.phase, Phase::Canary, "{:?}", d.reason);
        let last = d.canary.unwrap().last.unwrap();
        assert!(
            last.reports
                .iter()
                .all(|r| r.rule != crate::analysis::RuleKind::ClientErrorsVsStable),
            "{:#?}",
            last.reports
        );
    }

    #[test]
    fn no_traffic_rolls_back_after_the_longest_wait() {
        let (_, d) = run(
            up(canary_deploy(Pause::For { ms: 2000 })),
            &[
                (
                    40,
                    Event::BaselineObserved {
                        baseline: baseline(),
                    },
                ),
                (50, Event::TrafficRouted { to_new: true }),
                (50, metrics((0, 0), (0, 0))),
                (30_000, metrics((3, 0), (27, 0))),
                (60_100, metrics((5, 0), (45, 0))),
            ],
        );
        assert_eq!(d.phase, Phase::RollingBack);
        assert!(d
            .reason
            .unwrap()
            .contains("could not be judged within 60s: not enough data"));
    }

    #[test]
    fn a_restart_mid_step_keeps_the_step_start() {
        let (_, d) = run(
            up(canary_deploy(Pause::For { ms: 2000 })),
            &[
                (
                    40,
                    Event::BaselineObserved {
                        baseline: baseline(),
                    },
                ),
                (50, Event::TrafficRouted { to_new: true }),
                (50, metrics((7, 0), (63, 0))),
            ],
        );
        let t = step(&d, &Event::Resumed, 500);
        assert_eq!(
            t.deployment
                .canary
                .as_ref()
                .unwrap()
                .step_start
                .unwrap()
                .0
                .requests,
            7
        );
        assert!(
            t.effects
                .iter()
                .any(|e| matches!(e, Effect::ObserveMetrics { at: 500, .. })),
            "{:?}",
            t.effects
        );
        assert!(
            !t.effects
                .iter()
                .any(|e| matches!(e, Effect::ShiftTraffic { .. })),
            "weights already applied"
        );
    }
}

mod rolling {
    use super::*;

    fn rolling_deploy(old: &[u16], surge: u32, unavailable: u32) -> Deployment {
        let mut s = settings();
        s.instances = old.len() as u32;
        s.strategy = StrategySettings::Rolling(RollingSettings {
            max_surge: surge,
            max_unavailable: unavailable,
            judge: None,
        });
        Deployment::new(
            NewDeployment {
                id: 3,
                env: "production".parse().unwrap(),
                kind: DeploymentKind::Deploy,
                version: Version::new(1, 1, 0),
                previous_version: Some(Version::new(1, 0, 0)),
                old_instances: old.iter().map(|n| inst(*n)).collect(),
                settings: s,
                requested_by: "alice".into(),
            },
            0,
        )
    }

    fn started(ids: &[u16]) -> Event {
        Event::InstancesStarted {
            instances: ids.iter().map(|n| inst(*n)).collect(),
            failed_hosts: Default::default(),
        }
    }

    /// Routing of one effect as (new, old) instance ids, if it routes.
    fn routing(e: &Effect) -> Option<(Vec<String>, Vec<String>)> {
        match e {
            Effect::ShiftTraffic { stable, canary, .. } => Some((
                canary.iter().map(|i| i.id.clone()).collect(),
                stable.iter().map(|i| i.id.clone()).collect(),
            )),
            _ => None,
        }
    }

    #[test]
    fn surge_one_replaces_each_instance_after_its_successor_serves() {
        let (transcript, d) = run(
            rolling_deploy(&[1, 2], 1, 0),
            &[
                (0, Event::Created),
                (10, Event::Prepared),
                (20, started(&[11])),
                (30, healthy(11)),
                (40, Event::TrafficRouted { to_new: true }),
                (50, Event::InstancesStopped),
                (60, started(&[11, 12])),
                (70, healthy(12)),
                (80, Event::TrafficRouted { to_new: true }),
                (90, Event::InstancesStopped),
                (100, Event::InstancesStopped),
            ],
        );
        insta::assert_snapshot!(transcript);
        assert_eq!(d.phase, Phase::Succeeded);
        assert!(d.traffic_on_new);
    }

    #[test]
    fn with_no_surge_an_old_instance_leaves_the_routing_before_a_new_one_starts() {
        let d = rolling_deploy(&[1, 2], 0, 1);
        let t = step(&d, &Event::Created, 0);
        let t = step(&t.deployment, &Event::Prepared, 10);
        // Room first: i2 out of the routing, i1 alone serves.
        let route = t.effects.iter().find_map(routing).expect("routes first");
        assert_eq!(route, (vec![], vec!["i1".to_owned()]));
        assert!(!t
            .effects
            .iter()
            .any(|e| matches!(e, Effect::StartInstances { .. })));
        let t = step(&t.deployment, &Event::TrafficRouted { to_new: true }, 20);
        assert!(t.effects.contains(&Effect::StopInstances {
            instances: vec![inst(2)]
        }));
        let t = step(&t.deployment, &Event::InstancesStopped, 30);
        assert!(t.effects.contains(&Effect::StartInstances {
            version: Version::new(1, 1, 0),
            count: 1,
            hosts: Vec::new(),
        }));
    }

    #[test]
    fn a_failing_batch_rolls_back_by_restarting_the_retired_instances() {
        let (transcript, d) = run(
            rolling_deploy(&[1, 2], 1, 0),
            &[
                (0, Event::Created),
                (10, Event::Prepared),
                (20, started(&[11])),
                (30, healthy(11)),
                (40, Event::TrafficRouted { to_new: true }),
                (50, Event::InstancesStopped),
                (60, started(&[11, 12])),
                (
                    70,
                    Event::InstanceExited {
                        instance: "i12".into(),
                        detail: "exit status 3".into(),
                    },
                ),
                // Traffic back on i1, the old instance still running.
                (80, Event::TrafficRouted { to_new: false }),
                (90, Event::InstancesRestored),
                (100, Event::TrafficRouted { to_new: false }),
                (110, Event::InstancesStopped),
            ],
        );
        insta::assert_snapshot!(transcript);
        assert_eq!(d.phase, Phase::RolledBack);
        assert!(!d.traffic_on_new);
        assert!(d.reason.as_deref().unwrap().contains("i12 exited"));
    }

    /// A rolling update stored at its smoke stage without checks routes the
    /// batch instead of waiting for a `RunSmoke` answer.
    #[test]
    fn resumed_at_the_smoke_stage_without_checks_routes_the_batch() {
        let mut d = rolling_deploy(&[1, 2], 1, 0);
        d.settings.smoke = Some(SmokeSettings {
            checks: vec![SmokeCheck {
                name: "home".into(),
                critical: true,
                timeout_ms: 100,
                probe: SmokeProbe::Command {
                    argv: vec!["true".into()],
                },
            }],
            timeout_ms: 1000,
            max_noncritical_failure_ratio: 0.1,
        });
        for (now, e) in [
            (0, Event::Created),
            (10, Event::Prepared),
            (20, started(&[11])),
            (30, healthy(11)),
        ] {
            d = step(&d, &e, now).deployment;
        }
        assert_eq!(d.rolling.as_ref().unwrap().stage, RollStage::Smoke);
        d.settings.smoke = None;
        let t = step(&d, &Event::Resumed, 500);
        assert!(
            !t.effects
                .iter()
                .any(|e| matches!(e, Effect::RunSmoke { .. })),
            "{:?}",
            t.effects
        );
        assert_eq!(
            t.effects.iter().find_map(routing),
            Some((vec!["i11".to_owned()], vec!["i1".to_owned()]))
        );
    }

    #[test]
    fn a_restart_mid_batch_resumes_the_stage() {
        let d = rolling_deploy(&[1, 2], 1, 0);
        let mut d2 = d.clone();
        for (now, e) in [
            (0, Event::Created),
            (10, Event::Prepared),
            (20, started(&[11])),
        ] {
            d2 = step(&d2, &e, now).deployment;
        }
        let t = step(&d2, &Event::Resumed, 500);
        assert!(t.effects.contains(&Effect::ProbeHealth {
            instance: inst(11),
            at: 500
        }));
        assert!(t.effects.iter().any(|e| matches!(e, Effect::WakeAt { .. })));
    }
}

mod smoke_checks {
    use super::*;

    fn check(name: &str, critical: bool) -> SmokeCheck {
        SmokeCheck {
            name: name.into(),
            critical,
            timeout_ms: 1000,
            probe: SmokeProbe::Http {
                method: "GET".into(),
                path: "/".into(),
                expect_status: 200,
                body_contains: None,
                json_pointer: None,
                json_equals: None,
            },
        }
    }

    fn with_smoke(checks: Vec<SmokeCheck>) -> Deployment {
        let mut d = first_deploy();
        d.settings.smoke = Some(SmokeSettings {
            checks,
            timeout_ms: 60_000,
            max_noncritical_failure_ratio: 0.1,
        });
        d
    }

    fn result(check: &str, critical: bool, passed: bool) -> SmokeResult {
        SmokeResult {
            check: check.into(),
            instance: "i2".into(),
            critical,
            passed,
            detail: if passed { "HTTP 200" } else { "HTTP 500" }.into(),
            elapsed_ms: 3,
        }
    }

    fn healthy_script(rest: Vec<(Millis, Event)>) -> Vec<(Millis, Event)> {
        let mut s = started_then(&[2], vec![(30, healthy(2))]);
        s.extend(rest);
        s
    }

    #[test]
    fn smoke_runs_before_any_traffic_and_passing_goes_on_to_switch() {
        let (transcript, d) = run(
            with_smoke(vec![check("home", true)]),
            &healthy_script(vec![(
                40,
                Event::SmokeFinished {
                    results: vec![result("home", true, true)],
                },
            )]),
        );
        insta::assert_snapshot!(transcript);
        assert_eq!(d.phase, Phase::Switching);
        assert!(!d.traffic_on_new);
    }

    #[test]
    fn a_critical_failure_rolls_back_without_touching_traffic() {
        let (_, d) = run(
            with_smoke(vec![check("home", true)]),
            &healthy_script(vec![(
                40,
                Event::SmokeFinished {
                    results: vec![result("home", true, false)],
                },
            )]),
        );
        assert_eq!(d.phase, Phase::RollingBack);
        assert!(!d.traffic_on_new);
        assert!(d
            .reason
            .unwrap()
            .contains("critical smoke check failed: home on i2"));
    }

    #[test]
    fn many_noncritical_failures_wait_for_a_person_few_only_warn() {
        let checks: Vec<SmokeCheck> = (0..10).map(|n| check(&format!("c{n}"), false)).collect();
        let results = |failed: usize| -> Vec<SmokeResult> {
            (0..10)
                .map(|n| result(&format!("c{n}"), false, n >= failed))
                .collect()
        };
        // 1 of 10 (10%) is not above the limit: go on, with a warning.
        let (_, d) = run(
            with_smoke(checks.clone()),
            &healthy_script(vec![(
                40,
                Event::SmokeFinished {
                    results: results(1),
                },
            )]),
        );
        assert_eq!(d.phase, Phase::Switching);
        // 2 of 10: held, the deadline no longer applies, promote goes on.
        let (_, d) = run(
            with_smoke(checks),
            &healthy_script(vec![
                (
                    40,
                    Event::SmokeFinished {
                        results: results(2),
                    },
                ),
                (120_000, Event::Tick),
            ]),
        );
        assert_eq!(d.phase, Phase::Smoke);
        assert!(d.smoke.as_ref().unwrap().held);
        let t = step(&d, &Event::PromoteRequested { by: "carol".into() }, 130_000);
        assert_eq!(t.deployment.phase, Phase::Switching);
        let t = step(&d, &Event::AbortRequested { by: "carol".into() }, 130_000);
        assert_eq!(t.deployment.phase, Phase::RollingBack);
    }

    /// A deployment stored in the smoke phase whose settings carry no checks
    /// (none at all, or an empty list) must not wait for a `RunSmoke` answer:
    /// the machine goes on as it does when no checks are configured.
    #[test]
    fn resumed_in_smoke_without_checks_goes_on_instead_of_waiting() {
        let (_, in_smoke) = run(
            with_smoke(vec![check("home", true)]),
            &healthy_script(vec![]),
        );
        assert_eq!(in_smoke.phase, Phase::Smoke);
        for settings in [
            None,
            Some(SmokeSettings {
                checks: Vec::new(),
                timeout_ms: 60_000,
                max_noncritical_failure_ratio: 0.1,
            }),
        ] {
            let mut d = in_smoke.clone();
            d.settings.smoke = settings;
            let t = step(&d, &Event::Resumed, 100);
            assert!(
                !t.effects
                    .iter()
                    .any(|e| matches!(e, Effect::RunSmoke { .. })),
                "{:?}",
                t.effects
            );
            assert_eq!(t.deployment.phase, Phase::Switching, "{:?}", t.log);
            assert!(t.deployment.reason.is_none());
            assert!(t
                .log
                .iter()
                .any(|l| l.contains("no smoke checks configured")));
        }
    }

    /// The runtime's defensive answer to a `RunSmoke` it cannot run (an
    /// empty suite) passes: nothing failed.
    #[test]
    fn an_empty_suite_passes() {
        let (_, d) = run(
            with_smoke(vec![check("home", true)]),
            &healthy_script(vec![(
                40,
                Event::SmokeFinished {
                    results: Vec::new(),
                },
            )]),
        );
        assert_eq!(d.phase, Phase::Switching);
    }

    /// Every `RunSmoke` the machine emits comes with checks to run.
    #[test]
    fn run_smoke_is_emitted_only_with_checks_configured() {
        let (transcript, _) = run(first_deploy(), &healthy_script(vec![]));
        assert!(!transcript.contains("run_smoke"), "{transcript}");
        let (transcript, _) = run(
            with_smoke(vec![check("home", true)]),
            &healthy_script(vec![]),
        );
        assert!(transcript.contains("run_smoke"), "{transcript}");
    }

    #[test]
    fn a_suite_past_its_time_limit_rolls_back() {
        let (_, d) = run(
            with_smoke(vec![check("home", true)]),
            &healthy_script(vec![(30 + 60_000, Event::Tick)]),
        );
        assert_eq!(d.phase, Phase::RollingBack);
        assert!(d.reason.unwrap().contains("did not finish within 60s"));
    }
}

#[test]
fn counters_that_start_again_at_zero_restart_the_step_judgement() {
    use crate::analysis::{AnalysisPolicy, Counts};
    let mut d = first_deploy();
    d.settings.strategy = StrategySettings::Canary(CanarySettings {
        steps: vec![
            CanaryStep {
                weight: 10,
                pause: Pause::For { ms: 60_000 },
            },
            CanaryStep {
                weight: 100,
                pause: Pause::For { ms: 0 },
            },
        ],
        analysis: AnalysisPolicy::default(),
        interval_ms: 1000,
        max_wait_ms: 120_000,
        promotion_tolerance: STANDARD_PROMOTION_TOLERANCE,
        max_pause_ms: STANDARD_MAX_PAUSE_MS,
    });
    d.phase = Phase::Canary;
    d.traffic_on_new = true;
    d.canary = Some(CanaryState {
        weight: 10,
        step_start: Some((
            Counts {
                requests: 500,
                ..Counts::default()
            },
            Counts {
                requests: 4500,
                ..Counts::default()
            },
        )),
        ..CanaryState::default()
    });
    let t = step(
        &d,
        &Event::MetricsObserved {
            canary: Counts {
                requests: 3,
                ..Counts::default()
            },
            stable: Counts {
                requests: 30,
                ..Counts::default()
            },
            hosts: Default::default(),
            queries: Default::default(),
            resources: Vec::new(),
        },
        5000,
    );
    let start = t.deployment.canary.unwrap().step_start.unwrap();
    assert_eq!((start.0.requests, start.1.requests), (3, 30));
    assert!(t.log[0].contains("counters restarted"));
}

fn normal_change(required: u32, lead_ms: u64) -> crate::governance::ChangeControl {
    use crate::governance::*;
    let policy = ApprovalPolicy {
        required,
        lead_time: LeadTime::Ms(lead_ms),
        emergency_review_ms: 60_000,
        allow_standard: false,
    };
    plan_change(
        "production",
        &policy,
        ChangeType::Normal,
        Some("new search".into()),
        &[],
        None,
        0,
    )
    .unwrap()
}

#[test]
fn a_normal_change_waits_for_its_approvals_and_lead_time() {
    let d = first_deploy().with_change(normal_change(2, 5000));
    let approve = |by: &str| Event::Approved {
        by: by.into(),
        comment: "looks fine".into(),
    };
    let (transcript, d) = run(
        d,
        &[
            (0, Event::Created),
            (100, approve("bob")),
            (200, Event::Resumed),
            (300, approve("carol")),
            (5000, Event::Tick),
        ],
    );
    insta::assert_snapshot!(transcript);
    assert_eq!(d.phase, Phase::Preparing);
}

const HOUR: Millis = 3_600_000;

fn scheduled_change(
    required: u32,
    at: Millis,
    until: Option<Millis>,
) -> crate::governance::ChangeControl {
    use crate::governance::*;
    let policy = ApprovalPolicy {
        required,
        lead_time: LeadTime::Ms(0),
        emergency_review_ms: 60_000,
        allow_standard: true,
    };
    let change = if required > 0 {
        ChangeType::Normal
    } else {
        ChangeType::Standard
    };
    plan_change(
        "production",
        &policy,
        change,
        None,
        &[],
        Some(Schedule { at, until }),
        0,
    )
    .unwrap()
}

#[test]
fn a_scheduled_change_is_announced_a_day_before_and_starts_at_its_time() {
    let d = first_deploy().with_change(scheduled_change(0, 48 * HOUR, Some(50 * HOUR)));
    let t = step(&d, &Event::Created, 0);
    assert_eq!(t.deployment.phase, Phase::AwaitingApproval);
    // First woken for the announcement, a day before the start.
    assert_eq!(t.effects, [Effect::WakeAt { at: 24 * HOUR }]);
    assert!(t
        .log
        .iter()
        .any(|l| l == "waiting: scheduled to start at 1970-01-03T00:00:00Z"));
    let kinds = |before: &Deployment, t: &Transition, ev: &Event, now| {
        crate::notify::notices(ev, before, &t.deployment, now)
            .into_iter()
            .map(|n| n.kind)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        kinds(&d, &t, &Event::Created, 0),
        [crate::notify::NoticeKind::Scheduled]
    );
    let before = t.deployment.clone();
    let t = step(&before, &Event::Tick, 24 * HOUR);
    assert!(t
        .log
        .iter()
        .any(|l| l == "announced: the change starts at 1970-01-03T00:00:00Z"));
    assert_eq!(
        kinds(&before, &t, &Event::Tick, 24 * HOUR),
        [crate::notify::NoticeKind::Scheduled],
        "announced again a day before"
    );
    assert_eq!(t.effects, [Effect::WakeAt { at: 48 * HOUR }]);
    // A restart in between announces nothing twice.
    let again = step(&t.deployment, &Event::Resumed, 30 * HOUR);
    assert!(!again.log.iter().any(|l| l.starts_with("announced")));
    let t = step(&t.deployment, &Event::Tick, 48 * HOUR);
    assert_eq!(t.deployment.phase, Phase::Preparing);
}

#[test]
fn a_scheduled_change_still_waiting_at_its_window_end_does_not_start() {
    // It needs an approval nobody gives before the window closes.
    let d = first_deploy().with_change(scheduled_change(1, HOUR, Some(2 * HOUR)));
    let t = step(&d, &Event::Created, 0);
    assert_eq!(t.effects, [Effect::WakeAt { at: HOUR }]);
    let t = step(&t.deployment, &Event::Tick, HOUR);
    assert_eq!(t.deployment.phase, Phase::AwaitingApproval);
    assert_eq!(t.effects, [Effect::WakeAt { at: 2 * HOUR }]);
    let t = step(&t.deployment, &Event::Tick, 2 * HOUR);
    assert_eq!(t.deployment.phase, Phase::Failed);
    assert_eq!(
        t.deployment.reason.as_deref(),
        Some("its window ended at 1970-01-01T02:00:00Z before it could start (waiting for: 0 of 1 approval(s) from the approver role)")
    );
}

#[test]
fn a_schedule_in_the_past_empty_or_in_a_freeze_is_refused_and_a_freeze_now_is_not() {
    use crate::governance::*;
    let freeze = FreezeWindow {
        name: "year-end".into(),
        when: FreezeSpan::Once {
            from: 10 * HOUR,
            to: 20 * HOUR,
        },
    };
    let plan = |at, until, now| {
        plan_change(
            "production",
            &ApprovalPolicy::none(),
            ChangeType::Standard,
            None,
            std::slice::from_ref(&freeze),
            Some(Schedule { at, until }),
            now,
        )
    };
    assert_eq!(
        plan(HOUR, None, 2 * HOUR).unwrap_err().to_string(),
        "at: 1970-01-01T01:00:00Z is in the past; schedule a change for later, or deploy now without --at"
    );
    assert!(plan(3 * HOUR, Some(3 * HOUR), 0)
        .unwrap_err()
        .to_string()
        .starts_with("until: 1970-01-01T03:00:00Z is not after the start"));
    assert_eq!(
        plan(12 * HOUR, None, 0).unwrap_err().to_string(),
        "at: production is frozen (year-end) at 1970-01-01T12:00:00Z, until 1970-01-01T20:00:00Z; schedule the change outside the freeze, or as an emergency"
    );
    // Asked during the freeze for after it: fine.
    let c = plan(21 * HOUR, None, 11 * HOUR).unwrap();
    assert_eq!(c.start_after, Some(21 * HOUR));
    assert_eq!(
        c.announce_at, None,
        "less than a day ahead: announced at the request only"
    );
}

#[test]
fn a_rejection_ends_a_waiting_change_and_rolls_back_a_running_emergency() {
    let d = first_deploy().with_change(normal_change(1, 0));
    let reject = Event::Rejected {
        by: "bob".into(),
        comment: "not this week".into(),
    };
    let (_, waiting) = run(d, &[(0, Event::Created), (10, reject.clone())]);
    assert_eq!(waiting.phase, Phase::Failed);
    assert_eq!(
        waiting.reason.as_deref(),
        Some("rejected by bob: not this week")
    );
    assert!(waiting.new_instances.is_empty());

    use crate::governance::*;
    let policy = ApprovalPolicy {
        required: 1,
        ..ApprovalPolicy::none()
    };
    let emergency = plan_change(
        "production",
        &policy,
        ChangeType::Emergency,
        None,
        &[],
        None,
        0,
    )
    .unwrap();
    let d = first_deploy().with_change(emergency);
    let (_, running) = run(d, &started_then(&[2, 3], vec![(30, reject)]));
    assert_eq!(running.phase, Phase::RollingBack);
}

#[test]
fn an_approved_change_waits_out_a_freeze() {
    use crate::governance::*;
    let mut d = first_deploy().with_change(normal_change(0, 0));
    d.settings.freezes = vec![FreezeWindow {
        name: "launch".into(),
        when: FreezeSpan::Once {
            from: 0,
            to: 60_000,
        },
    }];
    let t = step(&d, &Event::Created, 10);
    assert_eq!(t.deployment.phase, Phase::AwaitingApproval);
    assert!(
        t.effects.contains(&Effect::WakeAt { at: 60_000 }),
        "{:?}",
        t.effects
    );
    let t = step(&t.deployment, &Event::Tick, 60_000);
    assert_eq!(t.deployment.phase, Phase::Preparing);
}

/// The strategy's settings are one value, so the canary and rolling phases
/// find their own or none; a deployment stored in a phase of another
/// strategy (a hand-edited row) is left as it is instead of panicking.
#[test]
fn a_phase_of_another_strategy_is_left_alone_without_panicking() {
    for phase in [Phase::Baselining, Phase::Canary, Phase::Rolling] {
        let mut d = first_deploy();
        d.old_instances = vec![inst(1)];
        d.phase = phase;
        for event in [
            Event::Resumed,
            Event::TrafficRouted { to_new: true },
            Event::InstancesStopped,
            Event::PromoteRequested { by: "bob".into() },
        ] {
            let t = step(&d, &event, 10);
            assert_eq!(t.deployment.phase, phase, "{phase:?} {event:?}");
            assert!(
                !t.effects.iter().any(|e| matches!(
                    e,
                    Effect::ShiftTraffic { .. } | Effect::ObserveMetrics { .. }
                )),
                "{phase:?} {event:?}: {:?}",
                t.effects
            );
        }
    }
}

#[test]
fn the_strategy_is_one_tagged_value_in_the_stored_state() {
    let mut d = first_deploy();
    let json = serde_json::to_value(&d.settings).unwrap();
    assert_eq!(json["strategy"], serde_json::json!({"kind": "blue-green"}));
    assert!(json.get("canary").is_none() && json.get("rolling").is_none());
    d.settings.strategy = StrategySettings::Rolling(RollingSettings {
        max_surge: 2,
        max_unavailable: 1,
        judge: None,
    });
    let json = serde_json::to_value(&d.settings).unwrap();
    assert_eq!(
        json["strategy"],
        serde_json::json!({"kind": "rolling", "max_surge": 2, "max_unavailable": 1})
    );
    let back: DeploySettings = serde_json::from_value(json).unwrap();
    assert_eq!(back, d.settings);
    assert_eq!(d.settings.strategy.name(), "rolling");
}

mod fleet;
mod hooks;
mod migrations;
