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
        canary: None,
    }
}

fn inst(n: u16) -> InstanceRef {
    InstanceRef {
        id: format!("i{n}"),
        port: 9000 + n,
    }
}

fn first_deploy() -> Deployment {
    Deployment::new(
        1,
        "production".parse().unwrap(),
        DeploymentKind::Deploy,
        Version::new(1, 1, 0),
        Some(Version::new(1, 0, 0)),
        vec![inst(1)],
        settings(),
        "alice".into(),
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
        (20, Event::InstancesStarted { instances }),
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
fn unreachable_during_startup_does_not_count_but_bad_answers_do() {
    let (_, d) = run(first_deploy(), &started_then(&[2], vec![]));
    let unreachable = Event::HealthObserved {
        instance: "i2".into(),
        probe: Probe::Unreachable("refused".into()),
    };
    let script: Vec<_> = (0..10)
        .map(|n| (100 + n * 100, unreachable.clone()))
        .collect();
    let (_, d2) = run(d.clone(), &script);
    assert_eq!(
        d2.phase,
        Phase::Verifying,
        "not listening yet is not a failure"
    );
    let bad = Event::HealthObserved {
        instance: "i2".into(),
        probe: Probe::Unhealthy("HTTP 503".into()),
    };
    let (_, d3) = run(d, &[(100, bad.clone()), (200, bad.clone()), (300, bad)]);
    assert_eq!(d3.phase, Phase::RollingBack);
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
                instances: vec![inst(2), inst(3)]
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
        ]
    }

    proptest! {
        /// Whatever happens, in whatever order: a finished deployment never
        /// moves again, a rolled-back one sends no traffic to the new release,
        /// and a rollback always carries its reason.
        #[test]
        fn invariants_hold_for_any_event_sequence(events in prop::collection::vec(any_event(), 0..60)) {
            let mut d = first_deploy();
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
                }
                if t.deployment.phase == Phase::Succeeded {
                    prop_assert!(t.deployment.traffic_on_new);
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
        d.settings.canary = Some(CanarySettings {
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
                (1050, metrics((100, 0), (900, 1))),
                (2050, metrics((200, 0), (1800, 2))),
                (2060, Event::TrafficRouted { to_new: true }),
                (2060, metrics((200, 0), (1800, 2))),
                (4060, metrics((1200, 1), (2800, 3))),
                (4070, Event::TrafficRouted { to_new: true }),
                (4070, metrics((1200, 1), (2800, 3))),
                (4080, metrics((1300, 1), (2800, 3))),
                (4090, Event::InstancesStopped),
            ],
        );
        insta::assert_snapshot!(transcript);
        assert_eq!(d.phase, Phase::Succeeded);
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
