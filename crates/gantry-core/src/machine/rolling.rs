//! Rolling updates: the old release's instances are replaced in batches,
//! each new batch healthy and taking traffic before the old ones it
//! replaces are stopped.
//!
//! ```text
//! Preparing → Rolling: for each batch
//!   [Unroute → Stop]   old instances, only when the surge leaves no room
//!   Start → Verify → [Smoke, first batch] → Route → [Judge] → [Stop]   surplus old instances
//! → Draining → Succeeded
//! ```
//!
//! `Judge` (with `rolling.analysis` set, while the old release still serves
//! beside the new) compares both releases' live counts for a window before
//! the old instances the batch replaced stop, so a batch that fails the
//! rules goes back with its old instances still warm.
//!
//! ```text
//! ```
//!
//! Kubernetes' two numbers bound each batch: at most `instances + max_surge`
//! instances run, and at least `instances - max_unavailable` serve. The
//! router's weights follow the instance counts, so every instance takes an
//! equal share whichever release it runs.
//!
//! A rollback routes traffic to the old instances still running, starts the
//! retired ones again with their old identities (`RestoreInstances`), routes
//! to all of them, then stops the new ones.

use super::fleet::{self, FleetProgress};
use super::judge::{self, BatchJudge, Judgement};
use super::{check_start_deadline, enter, on_health, roll_back, smoke, Effect, Event, Phase};
use super::{Deployment, StrategySettings, Transition};
use crate::analysis::queries::{self, QueryVerdict};
use crate::analysis::{Counts, LatencyLimits};
use crate::domain::{InstanceRef, Millis};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RollingSettings {
    /// Instances that may run above the configured count during the update.
    pub max_surge: u32,
    /// Instances that may be out of service below the configured count.
    pub max_unavailable: u32,
    /// How each batch is judged before the next; `None`: not judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<BatchJudge>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum RollStage {
    /// Taking old instances out of the routing to make room for a batch.
    Unroute { retire: Vec<InstanceRef> },
    /// Stopping old instances no longer routed.
    Stop { retire: Vec<InstanceRef> },
    /// Starting the batch: `count` new instances in all (on a fleet:
    /// `count` on each of `hosts`, the hosts begun so far).
    Start {
        count: u32,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        hosts: Vec<String>,
    },
    /// Waiting for the batch to answer healthy.
    Verify,
    /// Smoke checks on the first batch, before it takes traffic.
    Smoke,
    /// Giving the batch its share, and taking `retire` out of the routing.
    Route { retire: Vec<InstanceRef> },
    /// Judging the batch against the old release (`retire` still running,
    /// out of the routing); `start`: both releases' counts at the first look.
    Judge {
        retire: Vec<InstanceRef>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start: Option<(Counts, Counts)>,
    },
    /// Fleet: a wave is done; its hosts serve the new release through the
    /// bake (health still probed) before the next wave begins.
    Bake,
    /// Fleet: hosts failed within `max_failed`; they go back to the old
    /// release before `resume` goes on: `restore` (their stopped old
    /// instances) run again, `reroute` (their old instances) take their
    /// hosts' traffic back, then `stop` (their new instances) stop.
    Recover {
        restore: Vec<InstanceRef>,
        reroute: Vec<InstanceRef>,
        stop: Vec<InstanceRef>,
        resume: Box<RollStage>,
        resume_since: Millis,
    },
}

/// Where a rolling update stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RollingState {
    /// Batches begun so far.
    pub batch: u32,
    /// How many of `new_instances` take traffic.
    pub routed: u32,
    /// Old instances already stopped.
    pub retired: Vec<InstanceRef>,
    pub stage: RollStage,
    pub stage_since: Millis,
    /// Rollback: retired instances run again but take no traffic yet.
    #[serde(default)]
    pub restored_unrouted: bool,
    /// Rollback: traffic went back to the old instances still running.
    #[serde(default)]
    pub rollback_routed: bool,
    /// Fleet: where the walk over waves and host batches stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetProgress>,
    /// Fleet: answers still due to effects of an interrupted stage, to be
    /// let pass so that they are not taken for the answers of the next.
    #[serde(default, skip_serializing_if = "Strays::is_none")]
    pub strays: Strays,
    /// The metric query rules' standing in the batch being judged.
    #[serde(default, skip_serializing_if = "is_default")]
    pub queries: crate::analysis::queries::QueryState,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Answers due to effects whose stage was interrupted (by a recovery or a
/// rollback): each effect answers once, so waiting for one answer more
/// means waiting until both are done. Forgotten on a restart, which loses
/// every effect in flight.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Strays {
    /// `InstancesStopped` answers to let pass.
    #[serde(default)]
    pub stopped: u32,
    /// `InstancesRestored` (or `RestoreFailed`) answers to let pass.
    #[serde(default)]
    pub restored: u32,
    /// `TrafficRouted { to_new: false }` answers to let pass.
    #[serde(default)]
    pub routed_back: u32,
}

impl Strays {
    pub fn is_none(&self) -> bool {
        *self == Strays::default()
    }
}

/// Old instances not retired yet.
pub(super) fn survivors(d: &Deployment) -> Vec<InstanceRef> {
    let retired = d
        .rolling
        .as_ref()
        .map(|r| r.retired.as_slice())
        .unwrap_or_default();
    d.old_instances
        .iter()
        .filter(|i| !retired.contains(i))
        .cloned()
        .collect()
}

pub(super) fn without(list: &[InstanceRef], remove: &[InstanceRef]) -> Vec<InstanceRef> {
    list.iter()
        .filter(|i| !remove.contains(i))
        .cloned()
        .collect()
}

/// Percent of traffic for `new` instances next to `old` ones: equal shares.
pub(super) fn weight(new: usize, old: usize) -> u32 {
    match (new, old) {
        (0, _) => 0,
        (_, 0) => 100,
        (n, o) => ((100 * n + (n + o) / 2) / (n + o)).clamp(1, 99) as u32,
    }
}

/// Enters the rolling phase from `Preparing`, with the deployment's own
/// rolling settings.
pub(super) fn begin(t: &mut Transition, s: &RollingSettings, now: Millis) {
    t.deployment.phase = Phase::Rolling;
    t.deployment.phase_since = now;
    t.log.push(format!(
        "phase rolling: {} instance(s), max surge {}, max unavailable {}",
        t.deployment.settings.instances, s.max_surge, s.max_unavailable
    ));
    t.deployment.rolling = Some(RollingState {
        batch: 0,
        routed: 0,
        retired: Vec::new(),
        stage: RollStage::Verify,
        stage_since: now,
        restored_unrouted: false,
        rollback_routed: false,
        fleet: None,
        strays: Strays::default(),
        queries: Default::default(),
    });
    if t.deployment.settings.fleet.is_some() {
        return fleet::begin(t, now);
    }
    plan_next(t, s, now);
}

pub(super) fn set_stage(t: &mut Transition, stage: RollStage, now: Millis) {
    if let Some(r) = t.deployment.rolling.as_mut() {
        r.stage = stage;
        r.stage_since = now;
    }
    emit_phase_effects(t, now);
}

/// The next batch, or the end of the update.
fn plan_next(t: &mut Transition, s: &RollingSettings, now: Millis) {
    if t.deployment.settings.fleet.is_some() {
        return fleet::plan_next(t, now);
    }
    let d = &t.deployment;
    let n = d.settings.instances as usize;
    let routed = d.rolling.as_ref().map_or(0, |r| r.routed) as usize;
    let old = survivors(d);
    if routed >= n {
        t.log.push(format!(
            "rolling update complete: {n} instance(s) of {} serve",
            d.version
        ));
        return enter(t, Phase::Draining, now);
    }
    let batch = (s.max_surge + s.max_unavailable).max(1) as usize;
    let k = batch.min(n - routed);
    let excess = (old.len() + routed + k).saturating_sub(n + s.max_surge as usize);
    if excess > 0 {
        // Retire from the end of the list, as Kubernetes scales down the newest first.
        let retire = old[old.len() - excess.min(old.len())..].to_vec();
        return set_stage(t, RollStage::Unroute { retire }, now);
    }
    if let Some(r) = t.deployment.rolling.as_mut() {
        r.batch += 1;
    }
    let count = (routed + k) as u32;
    let batch_no = t.deployment.rolling.as_ref().map_or(0, |r| r.batch);
    t.log.push(format!(
        "batch {batch_no}: starting {k} instance(s) of {} ({count} of {n})",
        t.deployment.version
    ));
    set_stage(
        t,
        RollStage::Start {
            count,
            hosts: Vec::new(),
        },
        now,
    );
}

pub(super) fn stage(t: &Transition) -> Option<RollStage> {
    t.deployment.rolling.as_ref().map(|r| r.stage.clone())
}

/// An event in the rolling phase. Only a rolling deployment enters it, so
/// any other is left alone.
pub(super) fn on_event(t: &mut Transition, event: &Event, now: Millis) {
    let StrategySettings::Rolling(s) = t.deployment.settings.strategy.clone() else {
        return;
    };
    let s = &s;
    let Some(current) = stage(t) else { return };
    let on_fleet = t.deployment.settings.fleet.is_some();
    match (current, event) {
        (RollStage::Unroute { retire }, Event::TrafficRouted { to_new: true }) => {
            let ids: Vec<&str> = retire.iter().map(|i| i.id.as_str()).collect();
            t.log
                .push(format!("took {} out of the routing", ids.join(", ")));
            set_stage(t, RollStage::Stop { retire }, now);
        }
        (RollStage::Stop { retire }, Event::InstancesStopped) => {
            let ids: Vec<&str> = retire.iter().map(|i| i.id.as_str()).collect();
            t.log.push(format!("stopped {}", ids.join(", ")));
            if let Some(r) = t.deployment.rolling.as_mut() {
                for i in retire {
                    if !r.retired.contains(&i) {
                        r.retired.push(i);
                    }
                }
            }
            plan_next(t, s, now);
        }
        (
            RollStage::Start { .. },
            Event::InstancesStarted {
                instances,
                failed_hosts,
            },
        ) if on_fleet => fleet::on_started(t, instances, failed_hosts, now),
        (RollStage::Start { .. }, Event::InstancesStarted { instances, .. }) => {
            let d = &mut t.deployment;
            let fresh: Vec<String> = instances
                .iter()
                .filter(|i| !d.health.contains_key(&i.id))
                .map(|i| format!("{} on port {}", i.id, i.port))
                .collect();
            for i in instances {
                d.health.entry(i.id.clone()).or_default();
            }
            d.new_instances = instances.clone();
            t.log.push(format!("started {}", fresh.join(", ")));
            set_stage(t, RollStage::Verify, now);
        }
        (RollStage::Start { .. }, Event::StartFailed { reason }) => {
            roll_back(t, format!("could not start instances: {reason}"), now)
        }
        (_, Event::HealthObserved { instance, probe }) => on_health(t, instance, probe, now),
        (_, Event::InstanceExited { instance, detail })
            if t.deployment.health.contains_key(instance) =>
        {
            let reason = format!("instance {instance} exited: {detail}");
            if on_fleet {
                fleet::instance_failed(t, instance, reason, now);
            } else {
                roll_back(t, reason, now);
            }
        }
        (RollStage::Verify, Event::Tick) if on_fleet => fleet::verify_deadline(t, now),
        (RollStage::Verify, Event::Tick) => {
            let d = &t.deployment;
            let since = d.rolling.as_ref().map_or(d.phase_since, |r| r.stage_since);
            check_start_deadline(t, since, now);
        }
        (RollStage::Smoke, Event::SmokeFinished { results }) => {
            // On a fleet, results for instances of hosts failed since are moot.
            let results: Vec<_> = results
                .iter()
                .filter(|r| !on_fleet || t.deployment.health.contains_key(&r.instance))
                .cloned()
                .collect();
            let passed = smoke::judge(t, &results, now) == smoke::SmokeOutcome::Pass;
            route_batch_if(t, passed, now);
        }
        (RollStage::Smoke, Event::PromoteRequested { by }) => {
            let released = smoke::release_hold(t, by);
            route_batch_if(t, released, now);
        }
        (RollStage::Smoke, Event::Tick) => {
            let since = t.deployment.rolling.as_ref().map_or(now, |r| r.stage_since);
            smoke::check_deadline(t, since, now);
        }
        (RollStage::Route { retire }, Event::TrafficRouted { to_new: true }) => {
            let d = &mut t.deployment;
            d.traffic_on_new = true;
            let n = d.new_instances.len();
            if let Some(r) = d.rolling.as_mut() {
                r.routed = n as u32;
            }
            let serving_old = survivors(d).len() - retire.len();
            t.log.push(format!(
                "traffic: {n} instance(s) of {} and {serving_old} of {} ({}% to the new release)",
                t.deployment.version,
                t.deployment
                    .previous_version
                    .as_ref()
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
                weight(n, serving_old)
            ));
            let judged =
                s.judge.is_some() && !without(&survivors(&t.deployment), &retire).is_empty();
            if judged {
                // Each batch's query rules count from its own start.
                if let Some(r) = t.deployment.rolling.as_mut() {
                    r.queries = Default::default();
                }
                set_stage(
                    t,
                    RollStage::Judge {
                        retire,
                        start: None,
                    },
                    now,
                );
            } else {
                after_batch(t, s, retire, now);
            }
        }
        (
            RollStage::Judge { retire, start },
            Event::MetricsObserved {
                canary,
                stable,
                queries,
                resources,
                ..
            },
        ) => {
            let Some(j) = s.judge.as_ref() else { return };
            let (batch, since) = t
                .deployment
                .rolling
                .as_ref()
                .map_or((0, now), |r| (r.batch, r.stage_since));
            let context = format!("analysis of batch {batch}");
            if super::resources::judge_look(t, resources, &context, now) {
                return;
            }
            // Query rules: gauges against their thresholds (a rolling update
            // takes no baseline), counts beside the router's counts.
            let mut qs = t
                .deployment
                .rolling
                .as_mut()
                .map(|r| std::mem::take(&mut r.queries))
                .unwrap_or_default();
            let verdict =
                queries::judge(&j.policy.queries, &BTreeMap::new(), queries, &mut qs, now);
            let counts = qs.count_series(&j.policy.queries);
            if let Some(r) = t.deployment.rolling.as_mut() {
                r.queries = qs;
            }
            let waiting = match verdict {
                QueryVerdict::Fail(why) => return roll_back(t, format!("{context}: {why}"), now),
                QueryVerdict::Continue { waiting, notes } => {
                    t.log.extend(notes);
                    waiting
                }
            };
            let share = judge_share(&t.deployment, s);
            let look_at = judge::Look {
                start,
                new: canary,
                old: stable,
                counts: &counts,
                queries_waiting: waiting,
            };
            match judge::judge(j, share, batch, &look_at, since, now) {
                Judgement::Look { start } => {
                    if let Some(r) = t.deployment.rolling.as_mut() {
                        r.stage = RollStage::Judge {
                            retire,
                            start: Some(start),
                        };
                    }
                    look(t, now + j.interval_ms as Millis);
                }
                Judgement::Pass(line) => {
                    t.log.push(line);
                    after_batch(t, s, retire, now);
                }
                Judgement::Fail(reason) => roll_back(t, reason, now),
            }
        }
        (RollStage::Judge { .. }, Event::MetricsUnavailable { reason }) => {
            let Some(j) = s.judge.as_ref() else { return };
            let since = t.deployment.rolling.as_ref().map_or(now, |r| r.stage_since);
            if (now - since).max(0) as u64 >= j.max_wait_ms() {
                return roll_back(
                    t,
                    format!(
                        "batch could not be judged within {}: metrics are unavailable: {reason}",
                        super::seconds(j.max_wait_ms())
                    ),
                    now,
                );
            }
            look(t, now + j.interval_ms as Millis);
        }
        (_, Event::RouteFailed { reason }) => {
            roll_back(t, format!("could not route traffic: {reason}"), now)
        }
        (RollStage::Bake, Event::Tick) => fleet::on_bake_tick(t, now),
        (stage @ RollStage::Recover { .. }, _) => fleet::on_recover_event(t, stage, event, now),
        _ => {}
    }
}

/// The batch serves (and passed its judging, if any): the old instances it
/// replaced stop, or the next batch begins.
fn after_batch(t: &mut Transition, s: &RollingSettings, retire: Vec<InstanceRef>, now: Millis) {
    if retire.is_empty() {
        plan_next(t, s, now);
    } else {
        set_stage(t, RollStage::Stop { retire }, now);
    }
}

/// The part of the false-rollback budget one batch's judging may spend:
/// an equal share of every batch the update can judge (all but the last).
fn judge_share(d: &Deployment, s: &RollingSettings) -> f64 {
    let batches = match &d.settings.fleet {
        Some(f) => f.waves.iter().map(|w| w.batches.len()).sum::<usize>(),
        None => (d.settings.instances as usize)
            .div_ceil((s.max_surge + s.max_unavailable).max(1) as usize),
    };
    1.0 / batches.saturating_sub(1).max(1) as f64
}

/// A look at both releases' counts at `at` (no latency limits: a rolling
/// update takes no baseline).
fn look(t: &mut Transition, at: Millis) {
    t.effects.push(Effect::ObserveMetrics {
        limits: LatencyLimits::default(),
        at,
    });
}

fn route_batch_if(t: &mut Transition, go: bool, now: Millis) {
    if go {
        route_batch(t, now);
    }
}

/// After the batch is healthy (and smoke-checked): its share of traffic.
fn route_batch(t: &mut Transition, now: Millis) {
    if t.deployment.settings.fleet.is_some() {
        return fleet::route_batch(t, now);
    }
    let d = &t.deployment;
    let n = d.settings.instances as usize;
    let old = survivors(d);
    let surplus = (old.len() + d.new_instances.len()).saturating_sub(n);
    let retire = old[old.len() - surplus.min(old.len())..].to_vec();
    set_stage(t, RollStage::Route { retire }, now);
}

/// Called by the shared health handling once an instance's probe is judged.
pub(super) fn after_probe(t: &mut Transition, inst: InstanceRef, up: bool, now: Millis) {
    let health = t.deployment.settings.health.clone();
    if stage(t) == Some(RollStage::Verify) {
        let all_up = t
            .deployment
            .new_instances
            .iter()
            .all(|i| t.deployment.health.get(&i.id).is_some_and(|h| h.up));
        if all_up {
            batch_verified(t, now);
        }
    }
    // Every new instance stays watched through the later batches.
    let wait = if up {
        health.interval_ms
    } else {
        health.startup_interval_ms
    };
    t.effects.push(Effect::ProbeHealth {
        instance: inst,
        at: now + wait as Millis,
    });
}

/// Every new instance of the batch answered healthy: smoke checks on the
/// first batch, else its share of traffic.
pub(super) fn batch_verified(t: &mut Transition, now: Millis) {
    t.log.push("batch healthy".to_owned());
    let first = t.deployment.rolling.as_ref().is_some_and(|r| r.routed == 0);
    if first && smoke::configured(t) {
        return set_stage(t, RollStage::Smoke, now);
    }
    route_batch(t, now);
}

/// After a restart: the probes of instances already up were lost with the
/// old process; the stage's own effects cover the rest.
pub(super) fn reprobe_up(t: &mut Transition, now: Millis) {
    let d = &t.deployment;
    for i in &d.new_instances {
        if d.health.get(&i.id).is_some_and(|h| h.up) {
            t.effects.push(Effect::ProbeHealth {
                instance: i.clone(),
                at: now,
            });
        }
    }
}

/// What the current stage needs, from state alone (also after a restart).
pub(super) fn emit_phase_effects(t: &mut Transition, now: Millis) {
    let Some(r) = t.deployment.rolling.clone() else {
        return;
    };
    let d = &t.deployment;
    let routed: Vec<InstanceRef> = d
        .new_instances
        .iter()
        .take(r.routed as usize)
        .cloned()
        .collect();
    match r.stage {
        RollStage::Unroute { retire } => {
            let stable = without(&survivors(d), &retire);
            t.effects.push(Effect::ShiftTraffic {
                weight: weight(routed.len(), stable.len()),
                stable,
                canary: routed,
            });
        }
        RollStage::Stop { retire } => t.effects.push(Effect::StopInstances { instances: retire }),
        RollStage::Start { count, hosts } => t.effects.push(Effect::StartInstances {
            version: d.version.clone(),
            count,
            hosts,
        }),
        RollStage::Verify => {
            // Instances already up keep their own chain of probes.
            for i in &d.new_instances {
                if !d.health.get(&i.id).is_some_and(|h| h.up) {
                    t.effects.push(Effect::ProbeHealth {
                        instance: i.clone(),
                        at: now,
                    });
                }
            }
            t.effects.push(Effect::WakeAt {
                at: r.stage_since + d.settings.health.start_timeout_ms as Millis,
            });
        }
        RollStage::Smoke => {
            if smoke::emit(t, r.stage_since) == smoke::SmokeStart::NothingToRun {
                route_batch(t, now);
            }
        }
        RollStage::Route { retire } => {
            let stable = without(&survivors(d), &retire);
            t.effects.push(Effect::ShiftTraffic {
                weight: weight(d.new_instances.len(), stable.len()),
                stable,
                canary: d.new_instances.clone(),
            });
        }
        RollStage::Judge { .. } => look(t, now),
        RollStage::Bake => t.effects.push(Effect::WakeAt {
            at: r.stage_since + d.settings.bake_ms as Millis,
        }),
        RollStage::Recover {
            restore,
            reroute,
            stop,
            ..
        } => fleet::emit_recover(t, restore, reroute, stop),
    }
}

/// The rollback's next effect when old instances were retired, or `None`
/// to go on as for any other strategy.
pub(super) fn rollback_effect(t: &Transition) -> Option<Effect> {
    let d = &t.deployment;
    let r = d.rolling.as_ref()?;
    let old_version = d.previous_version.clone()?;
    if r.restored_unrouted {
        return Some(Effect::RouteTraffic {
            instances: d.old_instances.clone(),
            to_new: false,
        });
    }
    let alive = survivors(d);
    if !r.rollback_routed && !alive.is_empty() {
        // Off the new release first, onto every old instance still running
        // (also those taken out of the routing for a batch).
        return Some(Effect::RouteTraffic {
            instances: alive,
            to_new: false,
        });
    }
    if r.retired.is_empty() {
        return None;
    }
    // With no old instance left, the new ones serve until the old return.
    Some(Effect::RestoreInstances {
        version: old_version,
        instances: r.retired.clone(),
    })
}

/// Rollback: the retired instances run again.
pub(super) fn on_restored(t: &mut Transition) {
    if let Some(r) = t.deployment.rolling.as_mut() {
        let ids: Vec<&str> = r.retired.iter().map(|i| i.id.as_str()).collect();
        t.log.push(format!(
            "restarted {} of the previous release",
            ids.join(", ")
        ));
        r.retired.clear();
        r.restored_unrouted = true;
    }
    if let Some(e) = rollback_effect(t) {
        t.effects.push(e);
    }
}

/// Rollback: traffic is on the old instances named in the last routing.
pub(super) fn on_rolled_back_traffic(t: &mut Transition) {
    if let Some(r) = t.deployment.rolling.as_mut() {
        r.restored_unrouted = false;
        r.rollback_routed = true;
    }
}
