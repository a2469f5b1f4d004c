//! The watch after a full rollout: once the new release takes all traffic
//! (the canary's last step, the blue-green switch and bake, the last rolling
//! batch), it is judged for `watch` against the health baseline taken
//! before the rollout, with every rule that needs no live comparison. The
//! old instances stay warm through it where the strategy kept them, so a
//! failure is one routing change back.
//!
//! ```text
//! … → [Watching: looks every interval, health probed] → Draining → Succeeded
//!          │ a rule fails, an instance exits         │ `gantry promote`: ends early
//!          ▼                                         ▼
//!      RollingBack                                Draining
//! ```
//!
//! The baseline is observed while the release is prepared (before anything
//! changes), for every strategy; a canary also keeps its own.

use super::{enter, on_health, roll_back, Deployment, DeploymentKind, Effect, Event, Phase};
use super::{seconds, Transition};
use crate::analysis::queries::{self, QueryState, QueryVerdict};
use crate::analysis::{
    analyse_with_counts, latency_limits, Analysis, AnalysisPolicy, Baseline, Counts, LatencyLimits,
    Verdict, Window,
};
use crate::domain::Millis;
use serde::{Deserialize, Serialize};

/// How long and by which rules a full rollout is watched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WatchSettings {
    pub duration_ms: u64,
    /// Time between two looks at the new release's counts.
    pub interval_ms: u64,
    /// The rules; the live comparisons with the old release are off (it
    /// takes no traffic any more), the absolute and baseline ones judge.
    pub policy: AnalysisPolicy,
}

/// Where the watch stands.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WatchState {
    /// The old release's health before the rollout (none: it served nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
    /// The new release's cumulative counts at the first look of the watch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Counts>,
    /// The latest judgement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Analysis>,
    /// The watch is over (passed or ended by a person): not entered again.
    #[serde(default)]
    pub ended: bool,
    #[serde(default)]
    pub metrics_logged: bool,
    /// Requests of the new release judged so far.
    #[serde(default)]
    pub judged: u64,
    /// The metric query rules' standing.
    #[serde(default)]
    pub queries: QueryState,
}

/// Whether `d` watches its release once it takes all traffic: a deployment
/// (not a rollback) with a watch configured and a release to go back to.
pub(super) fn due(d: &Deployment) -> bool {
    d.settings.watch.is_some()
        && d.kind == DeploymentKind::Deploy
        && d.previous_version.is_some()
        && !d.old_instances.is_empty()
        && !d.watch.as_ref().is_some_and(|w| w.ended)
}

/// The baseline for the watch, asked for while the release is prepared.
pub(super) fn wants_baseline(d: &Deployment) -> bool {
    due(d) && d.watch.as_ref().and_then(|w| w.baseline.as_ref()).is_none()
}

/// Keeps a baseline observed for the watch (in any phase).
pub(super) fn keep_baseline(t: &mut Transition, baseline: &Baseline) {
    if t.deployment.settings.watch.is_some() {
        t.deployment
            .watch
            .get_or_insert_with(WatchState::default)
            .baseline = Some(baseline.clone());
    }
}

fn policy(p: &AnalysisPolicy) -> AnalysisPolicy {
    let mut p = p.clone();
    p.compare_errors = false;
    p.compare_client_errors = false;
    p.compare_slow_factor = None;
    p
}

fn limits(d: &Deployment) -> LatencyLimits {
    match (
        &d.settings.watch,
        d.watch.as_ref().and_then(|w| w.baseline.as_ref()),
    ) {
        (Some(s), Some(b)) => latency_limits(&policy(&s.policy), b),
        _ => LatencyLimits::default(),
    }
}

fn look(t: &mut Transition, at: Millis) {
    let limits = limits(&t.deployment);
    t.effects.push(Effect::ObserveMetrics { limits, at });
}

/// What entering (or resuming) the watch needs.
pub(super) fn emit(t: &mut Transition, now: Millis) {
    let d = &t.deployment;
    let Some(s) = d.settings.watch.clone() else {
        return;
    };
    if d.phase_since == now && d.watch.as_ref().is_none_or(|w| w.start.is_none()) {
        let against = match d.watch.as_ref().and_then(|w| w.baseline.as_ref()) {
            Some(b) if b.requests > 0 => format!(
                "the baseline of {}: error rate {:.2}%, P99 {:.1} ms",
                d.previous_version
                    .as_ref()
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
                100.0 * b.errors as f64 / b.requests as f64,
                b.p99_ms
            ),
            _ => "the absolute rules (no baseline: the old release served nothing)".to_owned(),
        };
        t.log.push(format!(
            "watching {} for {} against {against}; `gantry promote` ends the watch early",
            d.version,
            seconds(s.duration_ms)
        ));
    }
    let interval = d.settings.health.interval_ms as Millis;
    for i in d.new_instances.clone() {
        t.effects.push(Effect::ProbeHealth {
            instance: i,
            at: now + interval,
        });
    }
    t.effects.push(Effect::WakeAt {
        at: t.deployment.phase_since + s.duration_ms as Millis,
    });
    look(t, now);
}

/// An event while watching.
pub(super) fn on_event(t: &mut Transition, event: &Event, now: Millis) {
    let Some(s) = t.deployment.settings.watch.clone() else {
        return;
    };
    let end = t.deployment.phase_since + s.duration_ms as Millis;
    match event {
        Event::MetricsObserved {
            canary,
            queries,
            resources,
            ..
        } => {
            // The standards' CPU and memory rules hold through the watch too.
            if super::resources::judge_look(
                t,
                resources,
                "resource rules during the watch after the full rollout",
                now,
            ) {
                return;
            }
            if !s.policy.queries.is_empty() {
                let w = t.deployment.watch.get_or_insert_with(WatchState::default);
                let baseline = w.baseline.clone().unwrap_or_default().queries;
                let verdict =
                    queries::judge(&s.policy.queries, &baseline, queries, &mut w.queries, now);
                match verdict {
                    QueryVerdict::Fail(why) => {
                        return roll_back(
                            t,
                            format!(
                                "watch after the full rollout, {} in: {why}",
                                seconds((now - t.deployment.phase_since).max(0) as u64)
                            ),
                            now,
                        );
                    }
                    QueryVerdict::Continue { notes, .. } => t.log.extend(notes),
                }
            }
            let w = t.deployment.watch.get_or_insert_with(WatchState::default);
            let start = match w.start {
                Some(start) if canary.requests >= start.requests => start,
                // First look, or a router that restarted: count from here.
                _ => {
                    w.start = Some(*canary);
                    return look(t, now + s.interval_ms as Millis);
                }
            };
            let baseline = w.baseline.clone().unwrap_or_default();
            let window = Window {
                canary: canary.since(&start),
                stable: Counts::default(),
            };
            // The old release serves nothing now: a count rule holds the new
            // one to its bound only.
            let mut counts = w.queries.count_series(&s.policy.queries);
            counts.iter_mut().for_each(|c| c.compare = false);
            let analysis = analyse_with_counts(&policy(&s.policy), &baseline, &[window], &counts);
            let verdict = analysis.verdict.clone();
            w.last = Some(analysis);
            w.judged = window.canary.requests;
            if let Verdict::Fail { summary, .. } = verdict {
                return roll_back(
                    t,
                    format!(
                        "watch after the full rollout, {} in: {summary}",
                        seconds((now - t.deployment.phase_since).max(0) as u64)
                    ),
                    now,
                );
            }
            if now < end {
                look(t, now + s.interval_ms as Millis);
            }
        }
        Event::MetricsUnavailable { reason } => {
            let w = t.deployment.watch.get_or_insert_with(WatchState::default);
            if !w.metrics_logged {
                w.metrics_logged = true;
                t.log.push(format!("watch: metrics unavailable: {reason}"));
            }
            if now < end {
                look(t, now + s.interval_ms as Millis);
            }
        }
        Event::Tick if now >= end => finish(t, now, None),
        Event::PromoteRequested { by } => finish(t, now, Some(by)),
        Event::HealthObserved { instance, probe } => on_health(t, instance, probe, now),
        Event::InstanceExited { instance, detail }
            if t.deployment.health.contains_key(instance) =>
        {
            roll_back(t, format!("instance {instance} exited: {detail}"), now);
        }
        _ => {}
    }
}

/// The watch is over: it passed, or `by` ended it early.
fn finish(t: &mut Transition, now: Millis, by: Option<&String>) {
    let d = &mut t.deployment;
    let w = d.watch.get_or_insert_with(WatchState::default);
    w.ended = true;
    let judged = w.judged;
    let waited = seconds((now - d.phase_since).max(0) as u64);
    let quiet = w
        .last
        .as_ref()
        .is_none_or(|a| matches!(a.verdict, Verdict::Continue { waiting: true }));
    t.log.push(match (by, quiet) {
        (Some(by), _) => format!("watch ended early by {by} after {waited}"),
        (None, false) => format!("watch over: no rule failed in {waited} ({judged} requests judged)"),
        (None, true) => format!(
            "watch over after {waited}, but with too little traffic to judge ({judged} requests): nothing was ruled out"
        ),
    });
    enter(t, Phase::Draining, now);
}
