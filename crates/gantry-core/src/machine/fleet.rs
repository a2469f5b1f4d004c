//! Rolling over a fleet: waves of host batches, a failure budget, and
//! failed hosts taken back to the old release while the others go on.
//!
//! ```text
//! for each wave, for each batch of hosts:
//!   Start (every live host begun so far) → Verify → [Smoke, first batch]
//!   → Route (the batch's hosts onto the new release) → Stop (their old instances)
//! between waves: Bake (health still probed)
//! a host failing within max_failed: Recover (restore → reroute → stop) → the stage it interrupted
//! ```
//!
//! The fleet router splits every routing by host and leaves a host that
//! has no instance in it untouched, so a routing can name just the hosts it
//! changes. Each host serves one release at a time: a batch's hosts move
//! all at once, the others keep the old release until their batch.
//!
//! A host fails when it cannot start, when one of its new instances exits,
//! turns unhealthy or is not healthy by the start deadline. Within
//! `max_failed` it keeps (or goes back to) the old release and is left out
//! of the later batches; one more failure rolls the whole fleet back.

use super::rolling::{self, set_stage, stage, survivors, RollStage};
use super::{enter, roll_back, seconds, Effect, Event, Phase, Transition};
use crate::domain::{InstanceRef, Millis};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where a rolling update over a fleet stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FleetProgress {
    /// The wave under way (an index into the fleet's waves).
    pub wave: u32,
    /// Batches of that wave begun so far.
    pub batch: u32,
    /// Hosts begun so far, in rollout order (failed ones too).
    pub begun: Vec<String>,
    /// Hosts whose traffic was given to the new release.
    pub switched: Vec<String>,
}

fn host_of(i: &InstanceRef) -> &str {
    i.host.as_deref().unwrap_or("")
}

fn on_hosts(list: &[InstanceRef], hosts: &[String]) -> Vec<InstanceRef> {
    list.iter()
        .filter(|i| hosts.iter().any(|h| h == host_of(i)))
        .cloned()
        .collect()
}

fn ids(list: &[InstanceRef]) -> String {
    list.iter()
        .map(|i| i.id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn push_new<T: PartialEq + Clone>(into: &mut Vec<T>, items: &[T]) {
    for i in items {
        if !into.contains(i) {
            into.push(i.clone());
        }
    }
}

fn progress(t: &Transition) -> FleetProgress {
    t.deployment
        .rolling
        .as_ref()
        .and_then(|r| r.fleet.clone())
        .unwrap_or_default()
}

fn set_progress(t: &mut Transition, p: FleetProgress) {
    if let Some(r) = t.deployment.rolling.as_mut() {
        r.fleet = Some(p);
    }
}

/// Hosts that failed in this deployment, in name order.
fn failed(t: &Transition) -> Vec<String> {
    t.deployment.failed_hosts.keys().cloned().collect()
}

/// Enters the walk over the fleet (the rolling state is already set up).
pub(super) fn begin(t: &mut Transition, now: Millis) {
    let Some(fleet) = t.deployment.settings.fleet.clone() else {
        return;
    };
    t.log.push(format!(
        "fleet: {} host(s) in {} wave(s), {} instance(s) per host; at most {} host(s) may fail",
        fleet.hosts().count(),
        fleet.waves.len(),
        t.deployment.settings.instances,
        fleet.max_failed
    ));
    set_progress(t, FleetProgress::default());
    plan_next(t, now);
}

/// The next batch of hosts, the end of a wave, or the end of the update.
pub(super) fn plan_next(t: &mut Transition, now: Millis) {
    let Some(fleet) = t.deployment.settings.fleet.clone() else {
        return;
    };
    let mut p = progress(t);
    let Some(wave) = fleet.waves.get(p.wave as usize) else {
        return complete(t, now);
    };
    let next = (p.batch as usize..wave.batches.len()).find(|&b| !wave.batches[b].is_empty());
    let Some(b) = next else {
        return wave_done(t, now);
    };
    let hosts = &wave.batches[b];
    if p.batch == 0 {
        t.log.push(format!(
            "wave {} ({}/{}) begins: {} host(s) in {} batch(es)",
            wave.name,
            p.wave + 1,
            fleet.waves.len(),
            wave.batches.iter().map(Vec::len).sum::<usize>(),
            wave.batches.len()
        ));
    }
    t.log.push(format!(
        "wave {}: batch {}/{}: hosts {}",
        wave.name,
        b + 1,
        wave.batches.len(),
        hosts.join(", ")
    ));
    p.batch = b as u32 + 1;
    push_new(&mut p.begun, hosts);
    let live: Vec<String> = p
        .begun
        .iter()
        .filter(|h| !t.deployment.failed_hosts.contains_key(*h))
        .cloned()
        .collect();
    set_progress(t, p);
    if let Some(r) = t.deployment.rolling.as_mut() {
        r.batch += 1;
    }
    let count = t.deployment.settings.instances;
    set_stage(t, RollStage::Start { count, hosts: live }, now);
}

fn wave_done(t: &mut Transition, now: Millis) {
    let Some(fleet) = t.deployment.settings.fleet.clone() else {
        return;
    };
    let p = progress(t);
    let Some(wave) = fleet.waves.get(p.wave as usize) else {
        return;
    };
    let hosts: Vec<&String> = wave.batches.iter().flatten().collect();
    let failed: Vec<&str> = hosts
        .iter()
        .filter(|h| t.deployment.failed_hosts.contains_key(**h))
        .map(|h| h.as_str())
        .collect();
    t.log.push(format!(
        "wave {} done: {} of {} host(s) serve {}{}",
        wave.name,
        hosts.len() - failed.len(),
        hosts.len(),
        t.deployment.version,
        if failed.is_empty() {
            String::new()
        } else {
            format!(" (failed: {})", failed.join(", "))
        }
    ));
    if p.wave as usize + 1 >= fleet.waves.len() {
        return complete(t, now);
    }
    let bake = t.deployment.settings.bake_ms;
    if bake == 0 {
        return next_wave(t, now);
    }
    t.log.push(format!(
        "wave {}: baking {} before the next wave",
        wave.name,
        seconds(bake)
    ));
    set_stage(t, RollStage::Bake, now);
}

fn next_wave(t: &mut Transition, now: Millis) {
    let mut p = progress(t);
    p.wave += 1;
    p.batch = 0;
    set_progress(t, p);
    plan_next(t, now);
}

/// A tick while a wave bakes: the next wave once the bake is over.
pub(super) fn on_bake_tick(t: &mut Transition, now: Millis) {
    let d = &t.deployment;
    let since = d.rolling.as_ref().map_or(now, |r| r.stage_since);
    if now < since + d.settings.bake_ms as Millis {
        return;
    }
    let name = d
        .settings
        .fleet
        .as_ref()
        .and_then(|f| f.waves.get(progress(t).wave as usize))
        .map(|w| w.name.clone())
        .unwrap_or_default();
    t.log.push(format!(
        "wave {name}: healthy through the {} bake",
        seconds(d.settings.bake_ms)
    ));
    next_wave(t, now);
}

fn complete(t: &mut Transition, now: Millis) {
    let d = &t.deployment;
    let hosts = d.settings.fleet.as_ref().map_or(0, |f| f.hosts().count());
    let failed = failed(t);
    t.log.push(format!(
        "rolling update complete: {} of {hosts} host(s) serve {}{}",
        hosts - failed.len(),
        d.version,
        if failed.is_empty() {
            String::new()
        } else {
            format!(
                "; {} keep{} {}",
                failed.join(", "),
                if failed.len() == 1 { "s" } else { "" },
                d.previous_version
                    .as_ref()
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "the previous release".to_owned())
            )
        }
    ));
    enter(t, Phase::Draining, now);
}

/// The batch's instances started (and some hosts perhaps did not).
pub(super) fn on_started(
    t: &mut Transition,
    instances: &[InstanceRef],
    failures: &BTreeMap<String, String>,
    now: Millis,
) {
    let d = &mut t.deployment;
    let fresh: Vec<String> = instances
        .iter()
        .filter(|i| !d.health.contains_key(&i.id))
        .map(|i| format!("{} on {} port {}", i.id, host_of(i), i.port))
        .collect();
    for i in instances {
        d.health.entry(i.id.clone()).or_default();
    }
    d.new_instances = instances.to_vec();
    if !fresh.is_empty() {
        t.log.push(format!("started {}", fresh.join(", ")));
    }
    if let Some(r) = t.deployment.rolling.as_mut() {
        r.stage = RollStage::Verify;
        r.stage_since = now;
    }
    // Instances on a host that failed earlier (a late answer) are stopped too.
    let mut hosts: Vec<(String, String)> = failures
        .iter()
        .map(|(h, why)| (h.clone(), format!("could not start: {why}")))
        .collect();
    for i in instances {
        let h = host_of(i);
        if let Some(why) = t.deployment.failed_hosts.get(h) {
            if !hosts.iter().any(|(f, _)| f == h) {
                hosts.push((h.to_owned(), why.clone()));
            }
        }
    }
    if hosts_failed(t, hosts, now) == Outcome::GoOn {
        verify_or_wait(t, now);
    }
}

/// In `Verify`: on to the routing when every new instance is up, else wait
/// for the probes.
fn verify_or_wait(t: &mut Transition, now: Millis) {
    let d = &t.deployment;
    if d.new_instances
        .iter()
        .all(|i| d.health.get(&i.id).is_some_and(|h| h.up))
    {
        rolling::batch_verified(t, now);
    } else {
        rolling::emit_phase_effects(t, now);
    }
}

/// The start deadline of the batch: every host with an instance not yet
/// healthy fails.
pub(super) fn verify_deadline(t: &mut Transition, now: Millis) {
    let d = &t.deployment;
    let since = d.rolling.as_ref().map_or(d.phase_since, |r| r.stage_since);
    let timeout = d.settings.health.start_timeout_ms;
    if now < since + timeout as Millis {
        return;
    }
    let mut hosts: Vec<(String, String)> = Vec::new();
    for i in &d.new_instances {
        let Some(h) = d.health.get(&i.id).filter(|h| !h.up) else {
            continue;
        };
        if !hosts.iter().any(|(f, _)| f == host_of(i)) {
            hosts.push((
                host_of(i).to_owned(),
                format!(
                    "instance {} did not become healthy within {} ({})",
                    i.id,
                    seconds(timeout),
                    h.last_detail
                ),
            ));
        }
    }
    hosts_failed(t, hosts, now);
}

/// One new instance failed (exited, or unhealthy past the threshold): its host fails.
pub(super) fn instance_failed(t: &mut Transition, instance: &str, reason: String, now: Millis) {
    let host = t
        .deployment
        .new_instances
        .iter()
        .find(|i| i.id == instance)
        .map(|i| host_of(i).to_owned());
    match host {
        Some(h) => {
            hosts_failed(t, vec![(h, reason)], now);
        }
        None => roll_back(t, reason, now),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Nothing to undo: the caller goes on with its stage.
    GoOn,
    /// The failed hosts are being recovered, or the deployment rolls back.
    Handled,
}

/// Records `failures` against the budget: over it the deployment rolls back,
/// within it the hosts are taken back to the old release.
fn hosts_failed(t: &mut Transition, failures: Vec<(String, String)>, now: Millis) -> Outcome {
    let max = t
        .deployment
        .settings
        .fleet
        .as_ref()
        .map_or(0, |f| f.max_failed);
    let mut newly = Vec::new();
    let mut hosts = Vec::new();
    for (h, why) in failures {
        if !t.deployment.failed_hosts.contains_key(&h) {
            t.log.push(format!("host {h} failed: {why}"));
            t.deployment.failed_hosts.insert(h.clone(), why);
            newly.push(h.clone());
        }
        hosts.push(h);
    }
    if hosts.is_empty() {
        return Outcome::GoOn;
    }
    let n = t.deployment.failed_hosts.len();
    if n > max as usize {
        let list: Vec<String> = t
            .deployment
            .failed_hosts
            .iter()
            .map(|(h, why)| format!("{h} ({why})"))
            .collect();
        roll_back(
            t,
            format!(
                "{n} host(s) failed, more than max_failed ({max}) allows: {}",
                list.join("; ")
            ),
            now,
        );
        return Outcome::Handled;
    }
    if !newly.is_empty() {
        t.log.push(format!(
            "{n} of at most {max} host(s) failed; going on without {}",
            newly.join(", ")
        ));
    }
    recover(t, &hosts, now)
}

/// Blue-green and canary on a fleet: hosts that did not start count against
/// the budget; within it the deployment goes on without them (they keep the
/// old release, as the fleet router leaves a host no routing names alone).
/// `false` when the deployment rolled back.
pub(super) fn start_failures(
    t: &mut Transition,
    failures: &BTreeMap<String, String>,
    now: Millis,
) -> bool {
    let Some(max) = t.deployment.settings.fleet.as_ref().map(|f| f.max_failed) else {
        return true;
    };
    if failures.is_empty() {
        return true;
    }
    for (h, why) in failures {
        t.log
            .push(format!("host {h} failed: could not start: {why}"));
        t.deployment
            .failed_hosts
            .insert(h.clone(), format!("could not start: {why}"));
    }
    let n = t.deployment.failed_hosts.len();
    let list: Vec<String> = t
        .deployment
        .failed_hosts
        .iter()
        .map(|(h, why)| format!("{h} ({why})"))
        .collect();
    if n > max as usize {
        roll_back(
            t,
            format!(
                "{n} host(s) failed, more than max_failed ({max}) allows: {}",
                list.join("; ")
            ),
            now,
        );
        return false;
    }
    let names: Vec<&str> = failures.keys().map(String::as_str).collect();
    t.log.push(format!(
        "{n} of at most {max} host(s) failed; going on without {}",
        names.join(", ")
    ));
    let d = &mut t.deployment;
    d.new_instances
        .retain(|i| !failures.contains_key(host_of(i)));
    let keep: Vec<String> = d.new_instances.iter().map(|i| i.id.clone()).collect();
    d.health.retain(|id, _| keep.contains(id));
    true
}

/// Takes failed `hosts` out of the rollout: their new instances leave the
/// routing and stop, their old ones run (again) and serve; the interrupted
/// stage goes on afterwards without them.
fn recover(t: &mut Transition, hosts: &[String], now: Millis) -> Outcome {
    let Some(r) = t.deployment.rolling.clone() else {
        return Outcome::GoOn;
    };
    let p = r.fleet.clone().unwrap_or_default();
    // The answer the interrupted stage (or recovery) waits for still comes.
    let mut strays = r.clone();
    count_strays(&mut strays);
    let strays = strays.strays;
    let (mut restore, mut reroute, mut stop, mut resume, resume_since) = match r.stage {
        RollStage::Recover {
            restore,
            reroute,
            stop,
            resume,
            resume_since,
        } => (restore, reroute, stop, *resume, resume_since),
        other => (Vec::new(), Vec::new(), Vec::new(), other, r.stage_since),
    };
    let mut retired = r.retired.clone();
    // The interrupted stage no longer touches these hosts.
    resume = match resume {
        RollStage::Route { retire } => RollStage::Route {
            retire: retire
                .into_iter()
                .filter(|i| !hosts.iter().any(|h| h == host_of(i)))
                .collect(),
        },
        RollStage::Stop { retire } => {
            // Perhaps stopped already: they count as retired, to restore.
            push_new(&mut retired, &on_hosts(&retire, hosts));
            RollStage::Stop {
                retire: retire
                    .into_iter()
                    .filter(|i| !hosts.iter().any(|h| h == host_of(i)))
                    .collect(),
            }
        }
        RollStage::Start { count, hosts: on } => {
            let on: Vec<String> = on.into_iter().filter(|h| !hosts.contains(h)).collect();
            if on.is_empty() {
                RollStage::Verify
            } else {
                RollStage::Start { count, hosts: on }
            }
        }
        other => other,
    };
    let d = &mut t.deployment;
    let dropped = on_hosts(&d.new_instances, hosts);
    d.new_instances
        .retain(|i| !hosts.iter().any(|h| h == host_of(i)));
    for i in &dropped {
        d.health.remove(&i.id);
    }
    push_new(&mut stop, &dropped);
    if d.previous_version.is_some() {
        push_new(&mut restore, &on_hosts(&retired, hosts));
    }
    let switched: Vec<String> = hosts
        .iter()
        .filter(|h| p.switched.contains(h))
        .cloned()
        .collect();
    push_new(&mut reroute, &on_hosts(&d.old_instances, &switched));
    if let Some(r) = d.rolling.as_mut() {
        r.retired = retired;
        r.routed = r.routed.min(d.new_instances.len() as u32);
    }
    let recovering = !(restore.is_empty() && reroute.is_empty() && stop.is_empty());
    if let (true, Some(r)) = (recovering, d.rolling.as_mut()) {
        r.strays = strays;
    }
    if !recovering {
        if let Some(r) = t.deployment.rolling.as_mut() {
            r.stage = resume;
            r.stage_since = resume_since;
        }
        return Outcome::GoOn;
    }
    let hosts_list = hosts.join(", ");
    t.log.push(format!(
        "returning {hosts_list} to {}",
        t.deployment
            .previous_version
            .as_ref()
            .map(|v| v.to_string())
            .unwrap_or_else(|| "the previous release".to_owned())
    ));
    set_stage(
        t,
        RollStage::Recover {
            restore,
            reroute,
            stop,
            resume: Box::new(resume),
            resume_since,
        },
        now,
    );
    Outcome::Handled
}

/// What a recovery still needs, in order: restore, reroute, stop.
pub(super) fn emit_recover(
    t: &mut Transition,
    restore: Vec<InstanceRef>,
    reroute: Vec<InstanceRef>,
    stop: Vec<InstanceRef>,
) {
    let version = t.deployment.previous_version.clone();
    let effect = if let (false, Some(version)) = (restore.is_empty(), version) {
        Effect::RestoreInstances {
            version,
            instances: restore,
        }
    } else if !reroute.is_empty() {
        Effect::RouteTraffic {
            instances: reroute,
            to_new: false,
        }
    } else {
        Effect::StopInstances { instances: stop }
    };
    t.effects.push(effect);
}

/// The answers a recovery waits for.
pub(super) fn on_recover_event(t: &mut Transition, current: RollStage, event: &Event, now: Millis) {
    let RollStage::Recover {
        mut restore,
        mut reroute,
        mut stop,
        resume,
        resume_since,
    } = current
    else {
        return;
    };
    match event {
        Event::InstancesRestored if !restore.is_empty() => {
            t.log.push(format!("restarted {}", ids(&restore)));
            if let Some(r) = t.deployment.rolling.as_mut() {
                r.retired.retain(|i| !restore.contains(i));
            }
            restore.clear();
        }
        Event::RestoreFailed { reason } if !restore.is_empty() => {
            return roll_back(
                t,
                format!(
                    "could not restart the previous release's {} on a failed host: {reason}",
                    ids(&restore)
                ),
                now,
            );
        }
        Event::TrafficRouted { to_new: false } if restore.is_empty() && !reroute.is_empty() => {
            t.log.push(format!(
                "traffic of {} returned to {}",
                ids(&reroute),
                t.deployment
                    .previous_version
                    .as_ref()
                    .map(|v| v.to_string())
                    .unwrap_or_default()
            ));
            reroute.clear();
        }
        Event::InstancesStopped if restore.is_empty() && reroute.is_empty() => {
            t.log
                .push(format!("stopped {} on failed host(s)", ids(&stop)));
            stop.clear();
        }
        _ => return,
    }
    if restore.is_empty() && reroute.is_empty() && stop.is_empty() {
        if let Some(r) = t.deployment.rolling.as_mut() {
            r.stage = *resume;
            r.stage_since = resume_since;
        }
        if stage(t) == Some(RollStage::Verify) {
            verify_or_wait(t, now);
        } else {
            rolling::emit_phase_effects(t, now);
        }
        return;
    }
    let since = t.deployment.rolling.as_ref().map_or(now, |r| r.stage_since);
    if let Some(r) = t.deployment.rolling.as_mut() {
        r.stage = RollStage::Recover {
            restore,
            reroute,
            stop,
            resume,
            resume_since,
        };
        r.stage_since = since;
    }
    rolling::emit_phase_effects(t, now);
}

/// The batch is healthy: its hosts take the new release's traffic, and
/// their old instances leave the routing (then stop).
pub(super) fn route_batch(t: &mut Transition, now: Millis) {
    let Some(fleet) = t.deployment.settings.fleet.clone() else {
        return;
    };
    let mut p = progress(t);
    let batch: Vec<String> = fleet
        .waves
        .get(p.wave as usize)
        .and_then(|w| w.batches.get((p.batch as usize).saturating_sub(1)))
        .map(|hosts| {
            hosts
                .iter()
                .filter(|h| !t.deployment.failed_hosts.contains_key(*h))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    if batch.is_empty() {
        // Every host of the batch failed: nothing moves.
        return plan_next(t, now);
    }
    let retire = on_hosts(&survivors(&t.deployment), &batch);
    push_new(&mut p.switched, &batch);
    set_progress(t, p);
    set_stage(t, RollStage::Route { retire }, now);
}

/// Before a fleet rollback: new instances a recovery had yet to stop are
/// stopped with the others.
pub(super) fn before_rollback(t: &mut Transition) {
    if t.deployment.settings.fleet.is_none() || t.deployment.phase != Phase::Rolling {
        return;
    }
    let Some(r) = t.deployment.rolling.as_mut() else {
        return;
    };
    count_strays(r);
    if let RollStage::Stop { retire } = &r.stage {
        // Being stopped: they come back with the retired ones.
        let retire = retire.clone();
        push_new(&mut r.retired, &retire);
    }
    if let RollStage::Recover { stop, .. } = &r.stage {
        let stop = stop.clone();
        push_new(&mut t.deployment.new_instances, &stop);
    }
}

/// The answer the current stage still waits for, which will come though
/// the stage is left.
fn count_strays(r: &mut rolling::RollingState) {
    match &r.stage {
        RollStage::Stop { .. } => r.strays.stopped += 1,
        RollStage::Recover {
            restore, reroute, ..
        } => {
            if !restore.is_empty() {
                r.strays.restored += 1;
            } else if !reroute.is_empty() {
                r.strays.routed_back += 1;
            } else {
                r.strays.stopped += 1;
            }
        }
        _ => {}
    }
}

/// Lets an answer pass that belongs to an interrupted stage's effect.
pub(super) fn stray(t: &mut Transition, event: &Event) -> bool {
    if t.deployment.settings.fleet.is_none() {
        return false;
    }
    let Some(r) = t.deployment.rolling.as_mut() else {
        return false;
    };
    let count = match event {
        Event::InstancesStopped => &mut r.strays.stopped,
        Event::InstancesRestored | Event::RestoreFailed { .. } => &mut r.strays.restored,
        Event::TrafficRouted { to_new: false } => &mut r.strays.routed_back,
        _ => return false,
    };
    if *count == 0 {
        return false;
    }
    *count -= 1;
    true
}

/// After a restart no effect is in flight any more.
pub(super) fn forget_strays(t: &mut Transition) {
    if let Some(r) = t.deployment.rolling.as_mut() {
        r.strays = rolling::Strays::default();
    }
}

/// Rollback: a start that was in flight answered; what it started stops too.
pub(super) fn stop_late_starts(t: &mut Transition, instances: &[InstanceRef]) {
    if t.deployment.settings.fleet.is_none() {
        return;
    }
    let fresh: Vec<InstanceRef> = instances
        .iter()
        .filter(|i| !t.deployment.new_instances.contains(i))
        .cloned()
        .collect();
    if fresh.is_empty() {
        return;
    }
    push_new(&mut t.deployment.new_instances, &fresh);
    if let Some(r) = t.deployment.rolling.as_mut() {
        r.strays.stopped += 1;
    }
    t.log
        .push(format!("stopping {}, started late", ids(&fresh)));
    t.effects.push(Effect::StopInstances { instances: fresh });
}

/// The old instances `Draining` stops: a failed host's keep serving.
pub(super) fn drained(d: &super::Deployment) -> Vec<InstanceRef> {
    d.old_instances
        .iter()
        .filter(|i| !d.failed_hosts.contains_key(host_of(i)))
        .cloned()
        .collect()
}
