//! The resource rules in a rollout: each look's readings of the instances
//! judged by [`crate::analysis::resources`]; a failure rolls back like any
//! other rule, with `context` ("canary analysis at 10%") before the reason.

use super::{roll_back, Effect, Transition};
use crate::analysis::resources::{judge, InstanceUsage};
use crate::domain::Millis;

/// The next look at the instances' resources during a bake, one health
/// interval (at least [`LOOK_EVERY_MS`]) from now, if any rule is on.
pub(super) fn schedule_look(t: &mut Transition, now: Millis) {
    let s = &t.deployment.settings;
    if s.resources.is_on() {
        let every = s.health.interval_ms.max(LOOK_EVERY_MS);
        t.effects.push(Effect::ObserveResources {
            at: now + every as Millis,
        });
    }
}

/// A look during a bake: judged, and the next one scheduled unless it
/// rolled back.
pub(super) fn on_bake_look(t: &mut Transition, readings: &[InstanceUsage], now: Millis) {
    if !judge_look(t, readings, "resource rules during the bake", now) {
        schedule_look(t, now);
    }
}

/// The shortest time between two looks: shorter windows make the CPU rate
/// a count of a few clock ticks.
pub const LOOK_EVERY_MS: u64 = 250;

/// Judges one look; true when it rolled the deployment back.
pub(super) fn judge_look(
    t: &mut Transition,
    readings: &[InstanceUsage],
    context: &str,
    now: Millis,
) -> bool {
    let policy = t.deployment.settings.resources.clone();
    if readings.is_empty() || !policy.is_on() {
        return false;
    }
    let ids = |v: &[crate::InstanceRef]| v.iter().map(|i| i.id.clone()).collect::<Vec<_>>();
    let new = ids(&t.deployment.new_instances);
    let old = ids(&t.deployment.old_instances);
    let watch = t.deployment.resources.get_or_insert_with(Default::default);
    let judged = judge(&policy, watch, readings, &new, &old);
    t.log.extend(judged.notes);
    match judged.failure {
        Some(why) => {
            roll_back(t, format!("{context}: {why}"), now);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use crate::analysis::resources::{InstanceUsage, ResourcePolicy};
    use crate::analysis::{AnalysisPolicy, Counts};

    fn inst(id: &str) -> InstanceRef {
        InstanceRef {
            id: id.into(),
            port: 9000,
            host: None,
        }
    }

    /// A canary at 10%, its new instance `new-1` beside the old `old-1`.
    fn canary_at_10() -> Deployment {
        let settings = DeploySettings {
            instances: 1,
            health: HealthSettings {
                interval_ms: 1000,
                startup_interval_ms: 100,
                failure_threshold: 3,
                start_timeout_ms: 5000,
            },
            bake_ms: 0,
            strategy: StrategySettings::Canary(CanarySettings {
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
                max_wait_ms: 600_000,
                promotion_tolerance: STANDARD_PROMOTION_TOLERANCE,
                max_pause_ms: STANDARD_MAX_PAUSE_MS,
            }),
            smoke: None,
            freezes: Vec::new(),
            fleet: None,
            watch: None,
            resources: ResourcePolicy {
                cpu_cores: Some(0.5),
                ..ResourcePolicy::default()
            },
            hooks: Vec::new(),
            migrations: Vec::new(),
        };
        let mut d = Deployment::new(
            NewDeployment {
                id: 7,
                env: "production".parse().unwrap(),
                kind: DeploymentKind::Deploy,
                version: Version::new(1, 2, 0),
                previous_version: Some(Version::new(1, 1, 0)),
                old_instances: vec![inst("old-1")],
                settings,
                requested_by: "alice".into(),
            },
            0,
        );
        d.phase = Phase::Canary;
        d.new_instances = vec![inst("new-1")];
        d.traffic_on_new = true;
        d.canary = Some(CanaryState {
            weight: 10,
            ..CanaryState::default()
        });
        d
    }

    /// A look at `t` seconds: new has used `new_cpu` CPU seconds, old `old_cpu`.
    fn look(t: f64, new_cpu: f64, old_cpu: f64) -> Event {
        let usage = |id: &str, cpu: f64| InstanceUsage {
            instance: id.into(),
            pid: 42,
            processes: 1,
            cpu_seconds: cpu,
            taken_at: t,
            memory_bytes: 10 << 20,
            host_cpu_cores: 2.0,
            host_memory_bytes: 1 << 33,
            unavailable: None,
        };
        Event::MetricsObserved {
            canary: Counts::default(),
            stable: Counts::default(),
            hosts: Default::default(),
            queries: Vec::new(),
            resources: vec![usage("new-1", new_cpu), usage("old-1", old_cpu)],
        }
    }

    #[test]
    fn a_canary_burning_its_cpu_limit_is_rolled_back_saying_which_instance_and_how_much() {
        let mut d = canary_at_10();
        let mut log = Vec::new();
        // 0.5 cores used of a 0.5-core limit from the second look on.
        for (i, now) in [1000, 2000, 3000, 4000].into_iter().enumerate() {
            let t = step(&d, &look(i as f64, 0.5 * i as f64, 0.01 * i as f64), now);
            log.extend(t.log);
            d = t.deployment;
            if i < 3 {
                assert_eq!(d.phase, Phase::Canary, "look {i}: {log:?}");
            }
        }
        assert_eq!(d.phase, Phase::RollingBack);
        let reason = d.reason.as_deref().unwrap();
        assert_eq!(
            reason,
            "canary analysis at 10%: resource exhaustion: CPU of new-1 at 100% of its limit (0.50 of its 0.50 cores), above 90%, for 3 readings in a row; the old release's instances at most 2%"
        );
        assert!(log.iter().any(|l| l == &format!("rolling back: {reason}")));
        let watch = d.resources.as_ref().unwrap();
        assert_eq!(watch.latest.len(), 2, "both releases' figures are kept");
    }

    #[test]
    fn a_quiet_canary_is_not_rolled_back_by_the_resource_rules() {
        let mut d = canary_at_10();
        for (i, now) in [1000, 2000, 3000, 4000, 5000].into_iter().enumerate() {
            let t = step(&d, &look(i as f64, 0.05 * i as f64, 0.3 * i as f64), now);
            d = t.deployment;
        }
        assert_eq!(d.phase, Phase::Canary);
        assert_eq!(d.reason, None);
    }

    /// A blue-green deployment baking: `new-1` serves, `old-1` is warm.
    fn baking() -> Deployment {
        let mut d = canary_at_10();
        d.settings.strategy = StrategySettings::BlueGreen;
        d.settings.bake_ms = 10_000;
        d.canary = None;
        d.phase = Phase::Baking;
        d
    }

    fn observed(t: f64, new_cpu: f64) -> Event {
        let Event::MetricsObserved { resources, .. } = look(t, new_cpu, 0.0) else {
            unreachable!()
        };
        Event::ResourcesObserved { resources }
    }

    #[test]
    fn a_release_burning_its_cpu_through_the_bake_is_rolled_back() {
        let mut d = baking();
        // Entering the bake schedules the first look.
        let entered = step(&d, &Event::Resumed, 0);
        assert!(
            entered
                .effects
                .contains(&Effect::ObserveResources { at: 1000 }),
            "{:?}",
            entered.effects
        );
        for (i, now) in [1000, 2000, 3000].into_iter().enumerate() {
            let t = step(&d, &observed(i as f64, 0.425 * i as f64), now);
            assert_eq!(t.deployment.phase, Phase::Baking);
            assert_eq!(
                t.effects,
                [Effect::ObserveResources { at: now + 1000 }],
                "the next look"
            );
            d = t.deployment;
        }
        let t = step(&d, &observed(3.0, 1.275), 4000);
        assert_eq!(t.deployment.phase, Phase::RollingBack);
        assert_eq!(
            t.deployment.reason.as_deref(),
            Some("resource rules during the bake: CPU of new-1 at 85% of its limit (0.42 of its 0.50 cores), above 80%, for 3 readings in a row; the old release's instances at most 0%")
        );
    }

    #[test]
    fn a_look_answered_after_the_bake_changes_nothing() {
        let mut d = baking();
        d.phase = Phase::Draining;
        let t = step(&d, &observed(1.0, 5.0), 1000);
        assert_eq!(t.deployment, d);
        assert!(t.effects.is_empty() && t.log.is_empty());
    }
}
