//! The deployment state machine.
//!
//! `step(deployment, event, now)` returns the next deployment, the effects the
//! runtime must carry out, and the lines for the deployment log. The runtime
//! persists the event and the new state *before* it runs any effect, so every
//! effect here is written to be idempotent: after a crash the runtime calls
//! `step(.., Event::Resumed, ..)` and the machine re-emits whatever the
//! current phase still needs.
//!
//! The phases of one deployment (a rollback is a deployment of the previous
//! release, through the same phases):
//!
//! ```text
//! [AwaitingApproval →] Preparing → Starting → Verifying → Switching → Baking → Draining → Succeeded
//!     │           │          │           │          │
//!     ▼           └──────────┴─────┬─────┴──────────┘
//!   Failed                   RollingBack → RolledBack
//! ```
//!
//! While `Baking`, the new instances serve all traffic and the old ones stay
//! running, so returning to the previous release is one routing change.

use crate::analysis::{Baseline, Counts, LatencyLimits};
use crate::domain::{DeploymentId, EnvName, InstanceRef, Millis, Version};
use crate::governance::{active_freeze, Approval, ChangeControl, FreezeWindow};
use crate::time::rfc3339;
/// Kept here too for callers outside the core that name it by its old path.
pub use crate::time::seconds;

mod approval;
mod canary;
mod deployment;
mod events;
mod fleet;
pub mod hooks;
mod judge;
pub mod migrations;
mod requests;
mod resources;
mod rolling;
mod smoke;
mod watch;
pub mod waves;
pub use canary::{
    CanarySettings, CanaryState, CanaryStep, Pause, STANDARD_MAX_PAUSE_MS,
    STANDARD_PROMOTION_TOLERANCE,
};
#[cfg(test)]
pub(crate) use deployment::sample_deployment;
pub use deployment::{
    DeploySettings, Deployment, DeploymentKind, FleetSettings, FleetWave, HealthSettings,
    InstanceHealth, NewDeployment, Phase, StrategySettings,
};
pub use events::{Effect, Event, Probe, Transition};
pub use fleet::FleetProgress;
pub use judge::BatchJudge;
pub use requests::RequestRefusal;
pub use rolling::{RollStage, RollingSettings, RollingState, Strays};
use serde::{Deserialize, Serialize};
pub use smoke::{SmokeCheck, SmokeProbe, SmokeResult, SmokeSettings, SmokeState};
use std::collections::BTreeMap;
pub use watch::{WatchSettings, WatchState};

/// The metric query rules the deployment's analysis reads now, and its
/// look interval: the watch's while watching (or before, for the
/// baseline), else a canary's or a judged rolling update's.
pub fn query_rules(d: &Deployment) -> (Vec<crate::analysis::queries::QueryRule>, u64) {
    let watch = d
        .settings
        .watch
        .as_ref()
        .map(|w| (w.policy.queries.clone(), w.interval_ms));
    match (&d.settings.strategy, d.phase) {
        (_, Phase::Watching) => watch.unwrap_or_default(),
        (StrategySettings::Canary(c), _) => (c.analysis.queries.clone(), c.interval_ms),
        (StrategySettings::Rolling(r), Phase::Rolling) => match &r.judge {
            Some(j) => (j.policy.queries.clone(), j.interval_ms),
            None => watch.unwrap_or_default(),
        },
        _ => watch.unwrap_or_default(),
    }
}

/// The deployment log's line (and the notice's reason) for errors an
/// instance logged.
pub fn errors_logged_line(instance: &str, lines: u64, first: &str) -> String {
    format!("instance {instance} logged {lines} line(s) at ERROR level; the first: {first}")
}

/// Advance `deployment` by one event.
pub fn step(deployment: &Deployment, event: &Event, now: Millis) -> Transition {
    let mut t = Transition {
        deployment: deployment.clone(),
        effects: Vec::new(),
        log: Vec::new(),
    };
    if deployment.phase.is_terminal() {
        // A finished deployment never moves again; the hooks told of its
        // end still have their answers logged.
        hooks::log_late_answers(&mut t, event);
        return t;
    }
    if fleet::stray(&mut t, event) {
        return t;
    }
    let before = t.deployment.phase;
    // While hooks hold an increase, the strategies' timers wait with it.
    // So do they while a migration step runs.
    let held = (t.deployment.hooks.waiting.is_some() || t.deployment.migrations.running.is_some())
        && matches!(event, Event::Tick);
    if !hooks::on_event(&mut t, event, now) && !migrations::on_event(&mut t, event, now) && !held {
        on_event(&mut t, event, now);
    }
    hooks::intercept(&mut t, before, event, now);
    migrations::intercept(&mut t, event, now);
    t
}

fn on_event(t: &mut Transition, event: &Event, now: Millis) {
    let phase = t.deployment.phase;
    if let Event::BaselineObserved { baseline } = event {
        // Asked for while preparing (for the watch), or by a canary.
        watch::keep_baseline(t, baseline);
        if phase != Phase::Baselining {
            return;
        }
    }
    match (phase, event) {
        (Phase::Preparing, Event::Created) => {
            let d = &t.deployment;
            let change = d
                .change
                .as_ref()
                .map(|c| {
                    let why = c
                        .reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default();
                    format!(" ({} change{why})", c.change.as_str())
                })
                .unwrap_or_default();
            t.log.push(format!(
                "{} of {} to {} requested by {}{change}",
                match d.kind {
                    DeploymentKind::Deploy => "deployment",
                    DeploymentKind::Rollback => "rollback",
                },
                d.version,
                d.env,
                d.requested_by
            ));
            if let Some(c) = &d.change {
                if c.required_after > 0 {
                    t.log.push(format!(
                        "emergency change: needs {} approval(s) afterwards, by {}",
                        c.required_after,
                        c.review_by.map(rfc3339).unwrap_or_default()
                    ));
                }
            }
            if approval::waits(&t.deployment, now).is_some() {
                enter(t, Phase::AwaitingApproval, now);
            } else {
                emit_phase_effects(t, now);
            }
        }
        (Phase::AwaitingApproval, Event::Tick) => emit_phase_effects(t, now),
        (_, Event::Approved { by, comment }) => {
            approval::record(t, by, comment, true, now);
            if phase == Phase::AwaitingApproval {
                emit_phase_effects(t, now);
            }
        }
        (_, Event::Rejected { by, comment }) => {
            approval::record(t, by, comment, false, now);
            let reason = format!("rejected by {by}: {comment}");
            if phase == Phase::AwaitingApproval {
                fail(t, reason, now);
            } else if phase != Phase::RollingBack {
                roll_back(t, reason, now);
            }
        }
        (_, Event::Resumed) => {
            t.log.push(format!(
                "controller restarted; resuming in phase {}",
                phase.as_str()
            ));
            fleet::forget_strays(t);
            emit_phase_effects(t, now);
            if phase == Phase::Rolling {
                rolling::reprobe_up(t, now);
            }
        }
        (_, Event::AbortRequested { by }) => {
            let reason = format!("aborted by {by}");
            if matches!(phase, Phase::Preparing | Phase::AwaitingApproval) {
                fail(t, reason, now);
            } else if phase != Phase::RollingBack {
                roll_back(t, reason, now);
            }
        }

        (Phase::Preparing, Event::Prepared) => {
            t.log.push(format!(
                "release {} verified and unpacked",
                t.deployment.version
            ));
            let d = &t.deployment;
            if let (StrategySettings::Rolling(s), false) =
                (&d.settings.strategy, d.old_instances.is_empty())
            {
                let s = s.clone();
                rolling::begin(t, &s, now);
            } else {
                enter(t, Phase::Starting, now);
            }
        }
        (Phase::Preparing, Event::PrepareFailed { reason }) => fail(t, reason.clone(), now),

        (
            Phase::Starting,
            Event::InstancesStarted {
                instances,
                failed_hosts,
            },
        ) => {
            waves::add_started(&mut t.deployment, instances);
            let list: Vec<String> = instances
                .iter()
                .map(|i| format!("{} on port {}", i.id, i.port))
                .collect();
            t.log.push(format!(
                "started {} instance(s): {}",
                instances.len(),
                list.join(", ")
            ));
            if fleet::start_failures(t, failed_hosts, now) {
                enter(t, Phase::Verifying, now);
            }
        }
        (Phase::Starting, Event::StartFailed { reason }) => {
            roll_back(t, format!("could not start instances: {reason}"), now)
        }

        (Phase::Verifying | Phase::Baking, Event::HealthObserved { instance, probe }) => {
            on_health(t, instance, probe, now)
        }
        (Phase::Verifying | Phase::Baking, Event::InstanceExited { instance, detail })
            if t.deployment.health.contains_key(instance) =>
        {
            roll_back(t, format!("instance {instance} exited: {detail}"), now);
        }
        (Phase::Verifying, Event::Tick) => {
            let since = t.deployment.phase_since;
            check_start_deadline(t, since, now);
        }

        (Phase::Rolling, _) => rolling::on_event(t, event, now),
        (Phase::Watching, _) => watch::on_event(t, event, now),
        (Phase::Smoke, Event::SmokeFinished { results }) => {
            let passed = smoke::judge(t, results, now) == smoke::SmokeOutcome::Pass;
            go_on_after_smoke(t, passed, now);
        }
        (Phase::Smoke, Event::PromoteRequested { by }) => {
            let released = smoke::release_hold(t, by);
            go_on_after_smoke(t, released, now);
        }
        (Phase::Smoke, Event::Tick) => {
            let since = t.deployment.phase_since;
            smoke::check_deadline(t, since, now);
        }
        (Phase::Baselining | Phase::Canary, _) if canary::handles(event) => {
            canary::on_event(t, event, now)
        }
        (Phase::Canary, Event::HealthObserved { instance, probe }) => {
            on_health(t, instance, probe, now)
        }
        (Phase::Canary, Event::InstanceExited { instance, detail })
            if t.deployment.health.contains_key(instance) =>
        {
            roll_back(t, format!("instance {instance} exited: {detail}"), now);
        }
        (Phase::Switching, Event::TrafficRouted { to_new: true }) => {
            t.deployment.traffic_on_new = true;
            t.log
                .push(format!("traffic switched to {}", t.deployment.version));
            enter(t, Phase::Baking, now);
        }
        (Phase::Switching, Event::RouteFailed { reason }) => {
            roll_back(t, format!("could not switch traffic: {reason}"), now)
        }

        (Phase::Baking, Event::ResourcesObserved { resources }) => {
            resources::on_bake_look(t, resources, now)
        }
        (Phase::Baking, Event::Tick) => {
            let d = &t.deployment;
            if now >= d.phase_since + d.settings.bake_ms as Millis && !waves::next(t, now) {
                t.log.push(format!(
                    "healthy through the {} bake",
                    seconds(t.deployment.settings.bake_ms)
                ));
                enter(t, Phase::Draining, now);
            }
        }

        (Phase::Draining, Event::InstancesStopped) => {
            t.log.push("previous instances stopped".to_owned());
            enter(t, Phase::Succeeded, now);
        }

        (Phase::RollingBack, Event::TrafficRouted { to_new: false }) => {
            t.deployment.traffic_on_new = false;
            rolling::on_rolled_back_traffic(t);
            match &t.deployment.previous_version {
                Some(v) => t.log.push(format!("traffic returned to {v}")),
                None => t
                    .log
                    .push("traffic withdrawn (no previous release)".to_owned()),
            }
            emit_phase_effects(t, now);
        }
        (Phase::RollingBack, Event::RouteFailed { reason }) => fail(
            t,
            format!("rollback could not restore routing: {reason}"),
            now,
        ),
        (Phase::RollingBack, Event::InstancesRestored) => rolling::on_restored(t),
        (Phase::RollingBack, Event::InstancesStarted { instances, .. }) => {
            fleet::stop_late_starts(t, instances)
        }
        (Phase::RollingBack, Event::RestoreFailed { reason }) => fail(
            t,
            format!("rollback could not restart the previous instances: {reason}"),
            now,
        ),
        (Phase::RollingBack, Event::InstancesStopped) => {
            t.log.push("new instances stopped".to_owned());
            t.deployment.new_instances.clear();
            if !migrations::back_out(t) {
                enter(t, Phase::RolledBack, now);
            }
        }

        (
            _,
            Event::ErrorsLogged {
                instance,
                lines,
                first,
            },
        ) => t.log.push(errors_logged_line(instance, *lines, first)),

        // Anything else is stale (a probe answered after the phase moved on,
        // a tick for an old deadline): ignored on purpose.
        _ => {}
    }
}

pub(crate) fn on_health(t: &mut Transition, instance: &str, probe: &Probe, now: Millis) {
    let phase = t.deployment.phase;
    let settings = t.deployment.settings.health.clone();
    let Some(inst) = t
        .deployment
        .new_instances
        .iter()
        .find(|i| i.id == instance)
        .cloned()
    else {
        return;
    };
    let Some(h) = t.deployment.health.get_mut(instance) else {
        return;
    };
    match probe {
        Probe::Healthy => {
            if !h.up {
                t.log.push(format!("instance {instance} is healthy"));
            } else if h.consecutive_failures > 0 {
                t.log.push(format!(
                    "instance {instance} recovered after {} failed probe(s)",
                    h.consecutive_failures
                ));
            }
            h.up = true;
            h.consecutive_failures = 0;
            h.last_detail = "healthy".to_owned();
        }
        Probe::Unhealthy(detail) | Probe::Unreachable(detail) => {
            // Warm-up is not failure: until an instance has answered healthy
            // once, only the start timeout (or its exit) fails it. Many real
            // services answer 503 while they load.
            let counts = h.up;
            h.last_detail = detail.clone();
            if counts {
                h.consecutive_failures += 1;
                t.log.push(format!(
                    "health check failed on {instance} ({}/{}): {detail}",
                    h.consecutive_failures, settings.failure_threshold
                ));
                if h.consecutive_failures >= settings.failure_threshold {
                    let reason = format!(
                        "health check failed {} consecutive times on {instance} (threshold {}): {detail}",
                        h.consecutive_failures, settings.failure_threshold
                    );
                    if phase == Phase::Rolling && t.deployment.settings.fleet.is_some() {
                        fleet::instance_failed(t, instance, reason, now);
                    } else {
                        roll_back(t, reason, now);
                    }
                    return;
                }
            }
        }
    }
    let up = t.deployment.health.get(instance).is_some_and(|h| h.up);
    match phase {
        Phase::Verifying if t.deployment.health.values().all(|h| h.up) => {
            t.log.push("all new instances healthy".to_owned());
            let next = if smoke::configured(t) {
                Phase::Smoke
            } else {
                after_verified(&t.deployment)
            };
            enter(t, next, now);
        }
        Phase::Rolling => rolling::after_probe(t, inst, up, now),
        Phase::Verifying => {
            if !up {
                t.effects.push(Effect::ProbeHealth {
                    instance: inst,
                    at: now + settings.startup_interval_ms as Millis,
                });
            }
        }
        _ => t.effects.push(Effect::ProbeHealth {
            instance: inst,
            at: now + settings.interval_ms as Millis,
        }),
    }
}

/// Rolls back when new instances waiting since `since` are still not all up
/// after the start timeout, naming those that are not.
pub(crate) fn check_start_deadline(t: &mut Transition, since: Millis, now: Millis) {
    let d = &t.deployment;
    if now < since + d.settings.health.start_timeout_ms as Millis {
        return;
    }
    let waiting: Vec<String> = d
        .health
        .iter()
        .filter(|(_, h)| !h.up)
        .map(|(id, h)| format!("{id} ({})", h.last_detail))
        .collect();
    let reason = format!(
        "instances did not become healthy within {}: {}",
        seconds(d.settings.health.start_timeout_ms),
        waiting.join(", ")
    );
    roll_back(t, reason, now);
}

fn go_on_after_smoke(t: &mut Transition, passed: bool, now: Millis) {
    if passed {
        let next = after_verified(&t.deployment);
        enter(t, next, now);
    }
}

/// Where a deployment goes once its new instances are healthy and smoke-checked.
fn after_verified(d: &Deployment) -> Phase {
    if matches!(d.settings.strategy, StrategySettings::Canary(_)) && !d.old_instances.is_empty() {
        Phase::Baselining
    } else {
        Phase::Switching
    }
}

pub(crate) fn enter(t: &mut Transition, phase: Phase, now: Millis) {
    // Every strategy ends its rollout by draining: a watched one watches first.
    let phase = if phase == Phase::Draining && watch::due(&t.deployment) {
        Phase::Watching
    } else {
        phase
    };
    let d = &mut t.deployment;
    d.phase = phase;
    d.phase_since = now;
    if phase.is_terminal() {
        d.finished_at = Some(now);
    }
    match phase {
        Phase::Succeeded => t.log.push(format!("{} is live in {}", d.version, d.env)),
        Phase::RolledBack => t.log.push(match &d.previous_version {
            Some(v) => format!("rolled back: {v} serves {}", d.env),
            None => format!("rolled back: nothing serves {}", d.env),
        }),
        Phase::Failed => {}
        _ => t.log.push(format!("phase {}", phase.as_str())),
    }
    emit_phase_effects(t, now);
}

fn fail(t: &mut Transition, reason: String, now: Millis) {
    t.log.push(format!("failed: {reason}"));
    t.deployment.reason = Some(reason);
    enter(t, Phase::Failed, now);
}

pub(crate) fn roll_back(t: &mut Transition, reason: String, now: Millis) {
    fleet::before_rollback(t);
    t.log.push(format!("rolling back: {reason}"));
    if t.deployment.reason.is_none() {
        t.deployment.reason = Some(reason);
    }
    enter(t, Phase::RollingBack, now);
}

/// The effects a phase needs, derived from state alone so that a resumed
/// deployment re-emits exactly what is still outstanding.
fn emit_phase_effects(t: &mut Transition, now: Millis) {
    let rollback_step = match t.deployment.phase {
        Phase::RollingBack => rolling::rollback_effect(t),
        _ => None,
    };
    let d = &t.deployment;
    let effects = &mut t.effects;
    match d.phase {
        Phase::AwaitingApproval => match approval::waits(d, now) {
            Some(_) if approval::expired(d, now).is_some() => {
                let reason = approval::expired(d, now).unwrap_or_default();
                fail(t, reason, now);
            }
            Some((why, until)) => {
                let wake = approval::wake_at(d, until, now);
                approval::announce(t, now);
                t.log.push(format!("waiting: {why}"));
                if let Some(at) = wake {
                    t.effects.push(Effect::WakeAt { at });
                }
            }
            None => {
                t.log.push("approved; starting".to_owned());
                enter(t, Phase::Preparing, now);
            }
        },
        Phase::Preparing => {
            effects.push(Effect::PrepareRelease {
                version: d.version.clone(),
            });
            // The watch's baseline, before anything changes.
            if watch::wants_baseline(d) {
                effects.push(Effect::ObserveBaseline);
            }
        }
        Phase::Starting => effects.push(Effect::StartInstances {
            version: d.version.clone(),
            count: d.settings.instances,
            hosts: waves::start_hosts(d),
        }),
        Phase::Verifying => {
            for i in &d.new_instances {
                if !d.health.get(&i.id).is_some_and(|h| h.up) {
                    effects.push(Effect::ProbeHealth {
                        instance: i.clone(),
                        at: now,
                    });
                }
            }
            effects.push(Effect::WakeAt {
                at: d.phase_since + d.settings.health.start_timeout_ms as Millis,
            });
        }
        Phase::Smoke => {
            if smoke::emit(t, d.phase_since) == smoke::SmokeStart::NothingToRun {
                let next = after_verified(&t.deployment);
                enter(t, next, now);
            }
        }
        Phase::Rolling => rolling::emit_phase_effects(t, now),
        Phase::Watching => watch::emit(t, now),
        Phase::Baselining | Phase::Canary => canary::emit_phase_effects(t, now),
        Phase::Switching => effects.push(Effect::RouteTraffic {
            instances: d.new_instances.clone(),
            to_new: true,
        }),
        Phase::Baking => {
            if d.settings.bake_ms == 0 {
                if !waves::next(t, now) {
                    enter(t, Phase::Draining, now);
                }
                return;
            }
            for i in &d.new_instances {
                effects.push(Effect::ProbeHealth {
                    instance: i.clone(),
                    at: now + d.settings.health.interval_ms as Millis,
                });
            }
            effects.push(Effect::WakeAt {
                at: d.phase_since + d.settings.bake_ms as Millis,
            });
            resources::schedule_look(t, now);
        }
        Phase::Draining => {
            if d.old_instances.is_empty() {
                enter(t, Phase::Succeeded, now);
                return;
            }
            effects.push(Effect::StopInstances {
                instances: fleet::drained(d),
            });
        }
        Phase::RollingBack => {
            if let Some(e) = rollback_step {
                effects.push(e);
            } else if d.traffic_on_new {
                effects.push(Effect::RouteTraffic {
                    instances: d.old_instances.clone(),
                    to_new: false,
                });
            } else if !d.new_instances.is_empty() {
                effects.push(Effect::StopInstances {
                    instances: d.new_instances.clone(),
                });
            } else if !migrations::back_out(t) {
                enter(t, Phase::RolledBack, now);
            }
        }
        Phase::Succeeded | Phase::RolledBack | Phase::Failed => {}
    }
}

#[cfg(test)]
mod tests;
