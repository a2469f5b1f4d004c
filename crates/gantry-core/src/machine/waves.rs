//! Canary and blue-green over a fleet in waves (sites): each wave is a full
//! rollout over its own hosts, and the next begins only once the previous
//! is healthy and baked.
//!
//! ```text
//! for each wave: Starting (its hosts) → Verifying → [Smoke]
//!                → Baselining → Canary steps   (canary: its hosts' routers, its hosts' counts)
//!                → Switching                   (blue-green: its hosts' routers)
//!                → Baking → the next wave's Starting, or Draining after the last
//! ```
//!
//! The previous release stays warm on every host until the last wave is
//! done, so a failure in any wave returns every host already switched with
//! one routing change, in parallel. Each wave's canary analysis spends an
//! equal share of the rollout's false-rollback budget, so the rollout as a
//! whole keeps one budget however many waves it has. Rolling walks its
//! waves itself (`fleet.rs`), batch by batch.

use super::{enter, Deployment, Phase, Transition};
use crate::domain::{InstanceRef, Millis};
use crate::time::seconds;

/// Whether `d` walks its fleet's waves one by one here: canary or
/// blue-green (rolling has its own walk) on a fleet of several waves.
pub fn active(d: &Deployment) -> bool {
    d.rolling.is_none() && d.settings.fleet.as_ref().is_some_and(|f| f.waves.len() > 1)
}

/// The hosts of the wave under way that have not failed (every host of the
/// fleet when the deployment does not walk waves: then `None`).
pub fn current_hosts(d: &Deployment) -> Option<Vec<String>> {
    if !active(d) {
        return None;
    }
    let wave = d.settings.fleet.as_ref()?.waves.get(d.wave as usize)?;
    Some(
        wave.batches
            .iter()
            .flatten()
            .filter(|h| !d.failed_hosts.contains_key(*h))
            .cloned()
            .collect(),
    )
}

/// The hosts `StartInstances` names: the wave's, or empty for every host.
pub(super) fn start_hosts(d: &Deployment) -> Vec<String> {
    current_hosts(d).unwrap_or_default()
}

/// `list` cut to the wave under way (all of it when not walking waves).
pub(super) fn in_wave(d: &Deployment, list: &[InstanceRef]) -> Vec<InstanceRef> {
    match current_hosts(d) {
        Some(hosts) => list
            .iter()
            .filter(|i| i.host.as_ref().is_some_and(|h| hosts.contains(h)))
            .cloned()
            .collect(),
        None => list.to_vec(),
    }
}

/// The share of the rollout's false-rollback budget one wave's analysis
/// may spend.
pub(super) fn budget_share(d: &Deployment) -> f64 {
    match (active(d), d.settings.fleet.as_ref()) {
        (true, Some(f)) => 1.0 / f.waves.len().max(1) as f64,
        _ => 1.0,
    }
}

/// Whether a wave follows the one under way.
pub(super) fn more(d: &Deployment) -> bool {
    active(d)
        && d.settings
            .fleet
            .as_ref()
            .is_some_and(|f| d.wave as usize + 1 < f.waves.len())
}

/// The wave under way is healthy and baked: the next one starts on its own
/// hosts, with a fresh analysis and smoke suite. Returns false (nothing
/// done) when no wave follows.
pub(super) fn next(t: &mut Transition, now: Millis) -> bool {
    if !more(&t.deployment) {
        return false;
    }
    let d = &mut t.deployment;
    let Some(fleet) = d.settings.fleet.clone() else {
        return false;
    };
    let done = &fleet.waves[d.wave as usize];
    let serving = d
        .new_instances
        .iter()
        .filter_map(|i| i.host.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    t.log.push(format!(
        "wave {} ({}/{}) done: healthy through the {} bake; {} host(s) serve {}",
        done.name,
        d.wave + 1,
        fleet.waves.len(),
        seconds(d.settings.bake_ms),
        serving,
        d.version
    ));
    d.wave += 1;
    d.canary = None;
    d.smoke = None;
    let wave = &fleet.waves[d.wave as usize];
    t.log.push(format!(
        "wave {} ({}/{}) begins: {} host(s)",
        wave.name,
        d.wave + 1,
        fleet.waves.len(),
        wave.batches.iter().map(Vec::len).sum::<usize>()
    ));
    enter(t, Phase::Starting, now);
    true
}

/// New instances answered by a start: a wave's join those of the waves
/// before (a resumed start answers with the same ones again).
pub(super) fn add_started(d: &mut Deployment, instances: &[InstanceRef]) {
    if !active(d) {
        d.new_instances = instances.to_vec();
        d.health.clear();
    }
    for i in instances {
        if !d.new_instances.contains(i) {
            d.new_instances.push(i.clone());
        }
        d.health.entry(i.id.clone()).or_default();
    }
}
