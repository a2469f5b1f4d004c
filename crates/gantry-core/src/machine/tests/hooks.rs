//! Hooks held against a blue-green rollout and a canary's steps: what is
//! held back, asked, retried, and what a failure or a hold past its limit
//! does.

use super::*;
use crate::machine::hooks::{Hook, HookAnswer, HookCall, HookOutcome, HookPoint};

fn hook(name: &str, at: HookPoint) -> Hook {
    Hook {
        name: name.into(),
        at,
        call: HookCall::Command {
            argv: vec!["/bin/true".into()],
        },
        timeout_ms: 1_000,
        hold_ms: 10_000,
        retry_ms: 2_000,
    }
}

fn with_hooks(hooks: &[(&str, HookPoint)]) -> Deployment {
    let mut d = first_deploy();
    d.settings.hooks = hooks.iter().map(|(n, p)| hook(n, *p)).collect();
    d
}

/// The `RunHooks` effects of a transition.
fn asked(t: &Transition) -> Vec<(HookPoint, String)> {
    t.effects
        .iter()
        .filter_map(|e| match e {
            Effect::RunHooks { point, key } => Some((*point, key.clone())),
            _ => None,
        })
        .collect()
}

fn answered(point: HookPoint, key: &str, name: &str, answer: HookAnswer) -> Event {
    Event::HooksAnswered {
        point,
        key: key.to_owned(),
        outcomes: vec![HookOutcome {
            hook: name.into(),
            answer,
            took_ms: 12,
        }],
    }
}

/// Steps `d` through `events`, returning the last transition.
fn play(d: Deployment, events: &[(Millis, Event)]) -> Transition {
    let mut t = step(&d, &events[0].1, events[0].0);
    for (now, e) in &events[1..] {
        t = step(&t.deployment, e, *now);
    }
    t
}

fn routes(t: &Transition) -> bool {
    t.effects
        .iter()
        .any(|e| matches!(e, Effect::RouteTraffic { to_new: true, .. }))
}

#[test]
fn the_switch_waits_for_its_hook_and_goes_on_when_it_passes() {
    let d = with_hooks(&[("flags", HookPoint::BeforePromotion)]);
    let t = play(
        d,
        &started_then(&[2, 3], vec![(30, healthy(2)), (40, healthy(3))]),
    );
    // Healthy: the switch would route; it is held and the hook asked.
    assert_eq!(t.deployment.phase, Phase::Switching);
    assert!(!routes(&t), "{:?}", t.effects);
    let [(point, key)] = asked(&t).try_into().unwrap();
    assert_eq!(point, HookPoint::BeforePromotion);
    assert!(t
        .log
        .iter()
        .any(|l| l == "asking the before_promotion hook(s): flags"));
    // Passed: the switch goes out, from state.
    let t = step(
        &t.deployment,
        &answered(point, &key, "flags", HookAnswer::Pass),
        50,
    );
    assert!(routes(&t), "{:?}", t.effects);
    assert!(
        t.log
            .iter()
            .any(|l| l == "hook \"flags\" (before_promotion): passed in 12 ms"),
        "{:?}",
        t.log
    );
    // A restart re-emits the switch, which is not asked again.
    let t = step(&t.deployment, &Event::Resumed, 60);
    assert!(routes(&t) && asked(&t).is_empty(), "{:?}", t.effects);
}

#[test]
fn a_hold_asks_again_and_a_hold_past_its_limit_rolls_back_naming_the_hook() {
    let d = with_hooks(&[("review", HookPoint::BeforePromotion)]);
    let t = play(
        d,
        &started_then(&[2, 3], vec![(30, healthy(2)), (40, healthy(3))]),
    );
    let [(point, key)] = asked(&t).try_into().unwrap();
    let hold = || HookAnswer::Hold {
        detail: "HTTP 423 (hold): review pending".into(),
    };
    let t = step(&t.deployment, &answered(point, &key, "review", hold()), 50);
    assert!(
        t.effects.contains(&Effect::WakeAt { at: 2_050 }),
        "{:?}",
        t.effects
    );
    assert_eq!(t.deployment.phase, Phase::Switching);
    // A tick before the retry is the strategies' no more than the hooks'.
    let early = step(&t.deployment, &Event::Tick, 1_000);
    assert!(early.effects.is_empty(), "{:?}", early.effects);
    let t = step(&t.deployment, &Event::Tick, 2_050);
    assert_eq!(asked(&t), [(point, key.clone())]);
    // Still held at 10 s after the first ask (40 ms): a failure.
    let t = step(
        &t.deployment,
        &answered(point, &key, "review", hold()),
        10_040,
    );
    assert_eq!(t.deployment.phase, Phase::RollingBack);
    assert_eq!(
        t.deployment.reason.as_deref(),
        Some("hook \"review\" (before_promotion) held the rollout for 10s, its limit: HTTP 423 (hold): review pending")
    );
}

#[test]
fn a_failed_before_rollout_hook_ends_the_deployment_before_anything_starts() {
    let d = with_hooks(&[("ready", HookPoint::BeforeRollout)]);
    let t = play(d, &[(0, Event::Created), (10, Event::Prepared)]);
    assert_eq!(t.deployment.phase, Phase::Starting);
    assert!(
        !t.effects
            .iter()
            .any(|e| matches!(e, Effect::StartInstances { .. })),
        "{:?}",
        t.effects
    );
    let [(point, key)] = asked(&t).try_into().unwrap();
    assert_eq!(point, HookPoint::BeforeRollout);
    let t = step(
        &t.deployment,
        &answered(
            point,
            &key,
            "ready",
            HookAnswer::Fail {
                detail: "/usr/local/bin/ready failed (exit status: 1): migrations pending".into(),
            },
        ),
        20,
    );
    assert_eq!(t.deployment.phase, Phase::Failed);
    assert_eq!(
        t.deployment.reason.as_deref(),
        Some("hook \"ready\" (before_rollout) failed: /usr/local/bin/ready failed (exit status: 1): migrations pending")
    );
    assert!(t.effects.is_empty(), "nothing to undo: {:?}", t.effects);
}

#[test]
fn a_restart_while_held_asks_the_hooks_again() {
    let d = with_hooks(&[("ready", HookPoint::BeforeRollout)]);
    let t = play(d, &[(0, Event::Created), (10, Event::Prepared)]);
    let [(_, key)] = asked(&t).try_into().unwrap();
    let t = step(&t.deployment, &Event::Resumed, 5_000);
    assert_eq!(asked(&t), [(HookPoint::BeforeRollout, key.clone())]);
    // Passed: the instances start, and the start's deadline counts from now.
    let t = step(
        &t.deployment,
        &answered(HookPoint::BeforeRollout, &key, "ready", HookAnswer::Pass),
        6_000,
    );
    assert!(t
        .effects
        .iter()
        .any(|e| matches!(e, Effect::StartInstances { .. })));
    assert_eq!(t.deployment.phase_since, 6_000);
}

#[test]
fn the_end_and_a_rollback_are_told_without_waiting() {
    let d = with_hooks(&[
        ("done", HookPoint::AfterRollout),
        ("undo", HookPoint::OnRollback),
    ]);
    let t = play(
        d.clone(),
        &started_then(
            &[2, 3],
            vec![
                (30, healthy(2)),
                (40, healthy(3)),
                (50, Event::TrafficRouted { to_new: true }),
                (3_050, Event::Tick),
                (3_060, Event::InstancesStopped),
            ],
        ),
    );
    assert_eq!(t.deployment.phase, Phase::Succeeded);
    assert_eq!(
        asked(&t),
        [(HookPoint::AfterRollout, "after_rollout".to_owned())]
    );
    // Their answer, arriving after the end, is logged.
    let late = step(
        &t.deployment,
        &answered(
            HookPoint::AfterRollout,
            "after_rollout",
            "done",
            HookAnswer::Pass,
        ),
        3_100,
    );
    assert_eq!(late.log, ["hook \"done\" (after_rollout): passed in 12 ms"]);
    assert_eq!(late.deployment.phase, Phase::Succeeded);

    let t = play(
        d,
        &started_then(
            &[2, 3],
            vec![(
                30,
                Event::InstanceExited {
                    instance: "i2".into(),
                    detail: "exit status 1".into(),
                },
            )],
        ),
    );
    assert_eq!(t.deployment.phase, Phase::RollingBack);
    assert_eq!(
        asked(&t),
        [(HookPoint::OnRollback, "on_rollback".to_owned())]
    );
}

#[test]
fn each_canary_increase_is_asked_once_and_the_last_is_the_promotion() {
    let mut d = with_hooks(&[
        ("more", HookPoint::BeforeTrafficIncrease),
        ("all", HookPoint::BeforePromotion),
    ]);
    d.settings.strategy = StrategySettings::Canary(CanarySettings {
        steps: vec![
            CanaryStep {
                weight: 10,
                pause: Pause::UntilPromoted,
            },
            CanaryStep {
                weight: 100,
                pause: Pause::For { ms: 0 },
            },
        ],
        analysis: crate::analysis::AnalysisPolicy::default(),
        interval_ms: 1000,
        max_wait_ms: 60_000,
        promotion_tolerance: STANDARD_PROMOTION_TOLERANCE,
        max_pause_ms: STANDARD_MAX_PAUSE_MS,
    });
    let t = play(
        d,
        &started_then(
            &[2],
            vec![
                (30, healthy(2)),
                (
                    40,
                    Event::BaselineObserved {
                        baseline: Default::default(),
                    },
                ),
            ],
        ),
    );
    let shifts = |t: &Transition| {
        t.effects
            .iter()
            .filter_map(|e| match e {
                Effect::ShiftTraffic { weight, .. } => Some(*weight),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert!(shifts(&t).is_empty(), "{:?}", t.effects);
    let [(point, key)] = asked(&t).try_into().unwrap();
    assert_eq!(point, HookPoint::BeforeTrafficIncrease);
    let t = step(
        &t.deployment,
        &answered(point, &key, "more", HookAnswer::Pass),
        50,
    );
    assert_eq!(shifts(&t), [10]);
    let t = step(&t.deployment, &Event::TrafficRouted { to_new: true }, 60);
    let t = step(
        &t.deployment,
        &Event::PromoteRequested { by: "ann".into() },
        70,
    );
    assert!(shifts(&t).is_empty(), "{:?}", t.effects);
    let [(point, key)] = asked(&t).try_into().unwrap();
    assert_eq!(point, HookPoint::BeforePromotion);
    let t = step(
        &t.deployment,
        &answered(
            point,
            &key,
            "all",
            HookAnswer::Fail {
                detail: "HTTP 500: flag service down".into(),
            },
        ),
        80,
    );
    assert_eq!(t.deployment.phase, Phase::RollingBack);
    assert_eq!(
        t.deployment.reason.as_deref(),
        Some("hook \"all\" (before_promotion) failed: HTTP 500: flag service down")
    );
}

#[test]
fn a_rollback_deployment_is_never_held_and_tells_its_hooks_at_once() {
    let mut d = with_hooks(&[
        ("ready", HookPoint::BeforeRollout),
        ("undo", HookPoint::OnRollback),
    ]);
    d.kind = DeploymentKind::Rollback;
    let t = step(&d, &Event::Created, 0);
    assert_eq!(
        asked(&t),
        [(HookPoint::OnRollback, "on_rollback".to_owned())]
    );
    let t = step(&t.deployment, &Event::Prepared, 10);
    assert!(asked(&t).is_empty());
    assert!(t
        .effects
        .iter()
        .any(|e| matches!(e, Effect::StartInstances { .. })));
}

/// Plays `d` to its end, every effect answered as a healthy runtime would
/// and every hook passing; returns the points asked, in order, and the end.
fn drive(mut d: Deployment) -> (Vec<HookPoint>, Deployment) {
    let mut asked_points = Vec::new();
    let mut queue: std::collections::VecDeque<Event> = [Event::Created].into();
    let mut next_new = 10u16;
    let mut now = 0;
    while let Some(event) = queue.pop_front() {
        now += 10;
        let t = step(&d, &event, now);
        for e in &t.effects {
            queue.push_back(match e {
                Effect::PrepareRelease { .. } => Event::Prepared,
                Effect::StartInstances { count, .. } => {
                    let instances: Vec<InstanceRef> = (0..*count)
                        .map(|_| {
                            next_new += 1;
                            inst(next_new)
                        })
                        .collect();
                    Event::InstancesStarted {
                        instances,
                        failed_hosts: Default::default(),
                    }
                }
                Effect::ProbeHealth { instance, .. } => Event::HealthObserved {
                    instance: instance.id.clone(),
                    probe: Probe::Healthy,
                },
                Effect::ShiftTraffic { .. } | Effect::RouteTraffic { to_new: true, .. } => {
                    Event::TrafficRouted { to_new: true }
                }
                Effect::RouteTraffic { to_new: false, .. } => {
                    Event::TrafficRouted { to_new: false }
                }
                Effect::StopInstances { .. } => Event::InstancesStopped,
                Effect::WakeAt { .. } => {
                    now += 10_000;
                    Event::Tick
                }
                Effect::RunHooks { point, key } => {
                    asked_points.push(*point);
                    answered(*point, key, "h", HookAnswer::Pass)
                }
                Effect::ObserveResources { .. } => Event::ResourcesObserved {
                    resources: Vec::new(),
                },
                other => panic!("not expected here: {other:?}"),
            });
        }
        d = t.deployment;
        if d.phase.is_terminal() || asked_points.len() > 20 {
            break;
        }
    }
    (asked_points, d)
}

#[test]
fn each_rolling_batch_is_an_increase_and_the_last_one_the_promotion() {
    let mut d = with_hooks(&[
        ("start", HookPoint::BeforeRollout),
        ("more", HookPoint::BeforeTrafficIncrease),
        ("all", HookPoint::BeforePromotion),
        ("done", HookPoint::AfterRollout),
    ]);
    d.settings.instances = 3;
    d.old_instances = vec![inst(1), inst(2), inst(3)];
    d.settings.strategy = StrategySettings::Rolling(RollingSettings {
        max_surge: 1,
        max_unavailable: 0,
        judge: None,
    });
    let (points, d) = drive(d);
    assert_eq!(d.phase, Phase::Succeeded, "{:?}", d.reason);
    assert_eq!(
        points,
        [
            HookPoint::BeforeRollout,
            HookPoint::BeforeTrafficIncrease,
            HookPoint::BeforeTrafficIncrease,
            HookPoint::BeforePromotion,
            HookPoint::AfterRollout,
        ]
    );
    // And blue-green: the switch is the promotion, the start asked first.
    let (points, d) = drive(with_hooks(&[
        ("start", HookPoint::BeforeRollout),
        ("more", HookPoint::BeforeTrafficIncrease),
        ("all", HookPoint::BeforePromotion),
    ]));
    assert_eq!(d.phase, Phase::Succeeded, "{:?}", d.reason);
    assert_eq!(
        points,
        [HookPoint::BeforeRollout, HookPoint::BeforePromotion]
    );
}
