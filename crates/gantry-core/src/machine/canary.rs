//! Canary rollouts: the new release takes a share of traffic in steps, each
//! judged live against the stable release by [`crate::analysis`].
//!
//! ```text
//! Verifying → Baselining → Canary(step 0 … step n, last at 100%) → Draining
//!                              │ a rule fails, or no data in time
//!                              ▼
//!                         RollingBack
//! ```
//!
//! The anytime-valid tests run over the whole rollout: each step's counts
//! are a window the evidence carries across (`CanaryState::windows`), so the
//! whole rollout has one false-rollback budget `alpha` however many steps it
//! has and however often it is looked at.
//!
//! A timed step moves on only on evidence: when its pause is over, no rule
//! fails, and the confidence bounds show the canary's error and slow-request
//! rates within `promotion_tolerance` of stable's. Short of that it keeps
//! gathering data until `max_pause`, then holds for `gantry promote` (or
//! `abort`), saying how little the data could rule out.

use super::{enter, roll_back, Deployment, Effect, Event, Phase, StrategySettings, Transition};
use crate::analysis::queries::{self, QueryState, QueryVerdict};
use crate::analysis::{
    self, analyse_with_counts, latency_limits, Analysis, AnalysisPolicy, Baseline, Bounds, Counts,
    LatencyLimits, RuleStatus, Verdict, Window,
};
use crate::domain::Millis;
use crate::time::seconds;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CanarySettings {
    /// Weights increase and the last is 100.
    pub steps: Vec<CanaryStep>,
    pub analysis: AnalysisPolicy,
    /// Time between two looks at the metrics.
    pub interval_ms: u64,
    /// Longest a timed step waits for enough data before rolling back.
    pub max_wait_ms: u64,
    /// How far above stable's (in rate points, errors and slow requests) the
    /// data must bound the canary's rates before a timed step moves on
    /// (standards: 0.5 points).
    #[serde(default = "standard_promotion_tolerance")]
    pub promotion_tolerance: f64,
    /// Longest a timed step gathers evidence for promotion; then it holds
    /// for a person. Never shorter than the step's pause.
    #[serde(default = "standard_max_pause_ms")]
    pub max_pause_ms: u64,
}

/// The standards' tolerance: no more than 0.5 points above the baseline.
pub const STANDARD_PROMOTION_TOLERANCE: f64 = 0.005;
/// Ten minutes of evidence gathering before a step holds for a person.
pub const STANDARD_MAX_PAUSE_MS: u64 = 600_000;

fn standard_promotion_tolerance() -> f64 {
    STANDARD_PROMOTION_TOLERANCE
}

fn standard_max_pause_ms() -> u64 {
    STANDARD_MAX_PAUSE_MS
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CanaryStep {
    pub weight: u32,
    pub pause: Pause,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Pause {
    /// Move on after this long if no rule failed and every rule had data.
    For { ms: u64 },
    /// Move on when someone runs `gantry promote`.
    UntilPromoted,
}

/// Where a canary rollout stands.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CanaryState {
    pub step: usize,
    /// Weight the router confirmed for the new release (0 before the first shift).
    pub weight: u32,
    pub baseline: Baseline,
    pub limits: Option<LatencyLimits>,
    /// Cumulative counts (canary, stable) when the current step began.
    pub step_start: Option<(Counts, Counts)>,
    pub step_started_at: Millis,
    pub paused_at: Option<Millis>,
    pub waiting_logged: bool,
    /// The latest judgement, for status and the log.
    pub last: Option<Analysis>,
    /// Finished windows (earlier steps, or counts before a router restart):
    /// the evidence the rollout carries forward.
    #[serde(default)]
    pub windows: Vec<Window>,
    /// Cumulative counts (canary, stable) at the latest look.
    #[serde(default)]
    pub latest: Option<(Counts, Counts)>,
    /// The step's pause is over without evidence enough to promote (logged once).
    #[serde(default)]
    pub short_logged: bool,
    /// Held for a person at `max_pause`: only promote, resume or abort moves it.
    #[serde(default)]
    pub held: bool,
    /// On a fleet: each host's cumulative canary counts at its first look.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub host_start: BTreeMap<String, Counts>,
    /// The metric query rules' standing.
    #[serde(default, skip_serializing_if = "is_default")]
    pub queries: QueryState,
    /// Some query rule has no data yet: no promotion meanwhile.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub queries_waiting: bool,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// On a fleet: each host's canary counts since its first look (a host
/// whose router restarted counts from there).
fn hosts_since_start(
    t: &mut Transition,
    hosts: &BTreeMap<String, Counts>,
) -> BTreeMap<String, Counts> {
    let st = state(t);
    let mut since = BTreeMap::new();
    for (host, now_counts) in hosts {
        let start = st.host_start.entry(host.clone()).or_insert(*now_counts);
        if now_counts.requests < start.requests {
            *start = *now_counts;
        }
        since.insert(host.clone(), now_counts.since(start));
    }
    since
}

/// For a fleet's failed verdict: the host with the highest canary error
/// rate against the rest, so an operator sees whether one host or all fail.
fn worst_host(hosts: &BTreeMap<String, Counts>) -> Option<String> {
    let rate = |c: &Counts| c.errors as f64 / c.requests.max(1) as f64;
    let (host, worst) = hosts
        .iter()
        .filter(|(_, c)| c.requests > 0)
        .max_by(|a, b| rate(a.1).total_cmp(&rate(b.1)))?;
    if hosts.len() < 2 || worst.errors == 0 {
        return None;
    }
    let (e, r) = hosts
        .iter()
        .filter(|(h, _)| *h != host)
        .fold((0, 0), |(e, r), (_, c)| (e + c.errors, r + c.requests));
    Some(format!(
        "by host: {host} has the highest canary error rate, {} of {} ({:.1}%), the other {} host(s) {e} of {r} ({:.1}%)",
        worst.errors,
        worst.requests,
        100.0 * rate(worst),
        hosts.len() - 1,
        100.0 * e as f64 / r.max(1) as f64
    ))
}

pub(super) fn handles(event: &Event) -> bool {
    matches!(
        event,
        Event::BaselineObserved { .. }
            | Event::MetricsObserved { .. }
            | Event::MetricsUnavailable { .. }
            | Event::PromoteRequested { .. }
            | Event::PauseRequested { .. }
            | Event::ResumeRequested { .. }
            | Event::TrafficRouted { to_new: true }
    )
}

/// The canary settings of a canary deployment. The canary phases are
/// entered only by one, so for any other the entry points do nothing.
fn settings(d: &Deployment) -> Option<CanarySettings> {
    match &d.settings.strategy {
        StrategySettings::Canary(s) => Some(s.clone()),
        StrategySettings::BlueGreen | StrategySettings::Rolling(_) => None,
    }
}

fn state(t: &mut Transition) -> &mut CanaryState {
    t.deployment.canary.get_or_insert_with(CanaryState::default)
}

/// The policy for the rollout: the whole budget, as the evidence carries
/// across steps. The comparisons are off only when the first step already
/// sends all traffic (no stable to compare with, ever); otherwise the rules
/// stay the same at every step so the budget's weights never move.
fn rollout_policy(d: &Deployment, s: &CanarySettings) -> AnalysisPolicy {
    let mut p = s.analysis.clone();
    p.alpha *= super::waves::budget_share(d);
    if s.steps.first().is_none_or(|st| st.weight >= 100) {
        p.compare_errors = false;
        p.compare_client_errors = false;
        p.compare_slow_factor = None;
    }
    p
}

pub(super) fn on_event(t: &mut Transition, event: &Event, now: Millis) {
    let Some(s) = settings(&t.deployment) else {
        return;
    };
    let s = &s;
    match (t.deployment.phase, event) {
        (Phase::Baselining, Event::BaselineObserved { baseline }) => {
            let limits = latency_limits(&s.analysis, baseline);
            t.log.push(if baseline.requests == 0 {
                "health baseline: the stable release has served no traffic yet; baseline rules are off".to_owned()
            } else {
                format!(
                    "health baseline of {}: {} requests, error rate {:.2}%, P50 {:.1} ms, P99 {:.1} ms",
                    t.deployment.previous_version.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                    baseline.requests,
                    100.0 * baseline.errors as f64 / baseline.requests as f64,
                    baseline.p50_ms,
                    baseline.p99_ms
                )
            });
            t.deployment.canary = Some(CanaryState {
                baseline: baseline.clone(),
                limits: Some(limits),
                ..CanaryState::default()
            });
            enter(t, Phase::Canary, now);
        }
        (Phase::Canary, Event::TrafficRouted { to_new: true }) => {
            // The first shift of the rollout, or of a wave after the first.
            let first = !t.deployment.traffic_on_new || state(t).weight == 0;
            t.deployment.traffic_on_new = true;
            let step = state(t).step;
            let weight = s.steps[step].weight;
            let st = state(t);
            st.weight = weight;
            st.step_start = None;
            st.step_started_at = now;
            st.waiting_logged = false;
            let version = t.deployment.version.clone();
            t.log.push(format!("traffic: {weight}% to {version}"));
            if first {
                probe_all(t, now);
            }
            // A step without a pause is a pass-through: nothing to wait for.
            if s.steps[step].pause == (Pause::For { ms: 0 }) {
                return advance(t, s, now);
            }
            observe(t, now);
        }
        (
            Phase::Canary,
            Event::MetricsObserved {
                canary,
                stable,
                hosts,
                queries,
                resources,
            },
        ) => {
            let context = format!("canary analysis at {}%", state(t).weight);
            if super::resources::judge_look(t, resources, &context, now) {
                return;
            }
            let by_host = hosts_since_start(t, hosts);
            if let Some(o) = crate::analysis::outlier::outlier_host(
                &by_host,
                rollout_policy(&t.deployment, s).alpha,
                s.analysis.min_requests,
            ) {
                let weight = state(t).weight;
                return roll_back(
                    t,
                    format!("canary analysis at {weight}%: {}", o.describe()),
                    now,
                );
            }
            if !s.analysis.queries.is_empty() {
                let baseline = state(t).baseline.queries.clone();
                let mut qs = std::mem::take(&mut state(t).queries);
                let verdict = queries::judge(&s.analysis.queries, &baseline, queries, &mut qs, now);
                state(t).queries = qs;
                match verdict {
                    QueryVerdict::Fail(why) => {
                        let weight = state(t).weight;
                        return roll_back(t, format!("canary analysis at {weight}%: {why}"), now);
                    }
                    QueryVerdict::Continue { waiting, notes } => {
                        t.log.extend(notes);
                        state(t).queries_waiting = waiting;
                    }
                }
            }
            on_metrics(t, s, canary, stable, now);
            if t.deployment.phase == Phase::RollingBack {
                if let (Some(reason), Some(worst)) =
                    (t.deployment.reason.as_mut(), worst_host(&by_host))
                {
                    reason.push_str(&format!("; {worst}"));
                }
            }
        }
        (Phase::Canary, Event::MetricsUnavailable { reason }) => {
            if !state(t).waiting_logged {
                t.log.push(format!("metrics unavailable: {reason}"));
                state(t).waiting_logged = true;
            }
            check_wait(t, s, now, "metrics are unavailable".to_owned());
            if t.deployment.phase == Phase::Canary {
                schedule(t, s, now);
            }
        }
        (Phase::Canary, Event::PromoteRequested { by }) => {
            let weight = state(t).weight;
            t.log.push(format!("promoted by {by} at {weight}%"));
            advance(t, s, now);
        }
        (Phase::Canary, Event::PauseRequested { by })
            if t.deployment
                .canary
                .as_ref()
                .is_some_and(|c| c.paused_at.is_none()) =>
        {
            state(t).paused_at = Some(now);
            t.log.push(format!(
                "paused by {by}; analysis continues and can still roll back"
            ));
        }
        (Phase::Canary, Event::ResumeRequested { by }) if state(t).held => {
            // A held step gathers evidence for another full pause.
            let st = state(t);
            st.held = false;
            st.paused_at = None;
            st.step_started_at = now;
            st.short_logged = false;
            t.log.push(format!(
                "resumed by {by}: gathering evidence for another pause"
            ));
        }
        (Phase::Canary, Event::ResumeRequested { by }) => {
            if let Some(at) = state(t).paused_at.take() {
                state(t).step_started_at += now - at;
                t.log.push(format!(
                    "resumed by {by} after {}",
                    seconds((now - at).max(0) as u64)
                ));
            }
        }
        _ => {}
    }
}

fn on_metrics(
    t: &mut Transition,
    s: &CanarySettings,
    canary: &Counts,
    stable: &Counts,
    now: Millis,
) {
    let Some((c0, s0)) = state(t).step_start else {
        state(t).step_start = Some((*canary, *stable));
        schedule(t, s, now);
        return;
    };
    if canary.requests < c0.requests || stable.requests < s0.requests {
        // Counts only grow, unless the router restarted and began again at
        // zero: judge the step from the new counters on.
        let weight = state(t).weight;
        t.log.push(format!(
            "traffic counters restarted (router restart?); step {weight}% is judged from here"
        ));
        close_window(state(t));
        state(t).step_start = Some((*canary, *stable));
        schedule(t, s, now);
        return;
    }
    state(t).latest = Some((*canary, *stable));
    let st = state(t).clone();
    let step = &s.steps[st.step];
    let (dc, ds) = (canary.since(&c0), stable.since(&s0));
    let mut windows = st.windows.clone();
    windows.push(Window {
        canary: dc,
        stable: ds,
    });
    let policy = rollout_policy(&t.deployment, s);
    let mut counts = st.queries.count_series(&policy.queries);
    // Without a split (a first step at 100%) there is nothing to compare with.
    let split = s.steps.first().is_some_and(|st| st.weight < 100);
    counts.iter_mut().for_each(|c| c.compare &= split);
    let mut analysis = analyse_with_counts(&policy, &st.baseline, &windows, &counts);
    let bounds = analysis::bounds(&policy, &st.baseline, &windows);
    analysis.bounds = Some(bounds.clone());
    let verdict = analysis.verdict.clone();
    let mut waiting_rules: Vec<String> = analysis
        .reports
        .iter()
        .filter(|r| r.status == RuleStatus::NotEnoughData)
        .map(|r| format!("{:?}", r.rule))
        .collect();
    for (name, since) in &st.queries.no_data_since {
        waiting_rules.push(format!(
            "query {name:?} without data for {}",
            seconds((now - since).max(0) as u64)
        ));
    }
    state(t).last = Some(analysis);
    match verdict {
        Verdict::Fail { summary, .. } => {
            return roll_back(
                t,
                format!("canary analysis at {}%: {summary}", st.weight),
                now,
            );
        }
        // Early promotion needs the same bounds as a timed step's end.
        Verdict::NoWorse { evidence }
            if st.weight < 100
                && !st.queries_waiting
                && st.paused_at.is_none()
                && bounds.excess() <= s.promotion_tolerance =>
        {
            t.log.push(format!(
                "canary no worse than stable at {}% (evidence {evidence:.0}, {} canary requests; {})",
                st.weight,
                dc.requests,
                describe_bounds(&bounds)
            ));
            return advance(t, s, now);
        }
        Verdict::NoWorse { .. } | Verdict::Continue { .. } => {}
    }
    let waiting = matches!(verdict, Verdict::Continue { waiting: true }) || st.queries_waiting;
    if st.paused_at.is_none() {
        if let Pause::For { ms } = step.pause {
            let elapsed = (now - st.step_started_at).max(0) as u64;
            if elapsed >= ms && !waiting {
                let b = bounds;
                if b.excess() <= s.promotion_tolerance {
                    t.log.push(format!(
                        "step {}% passed: no rule failed in {}, and the canary is within {} of stable: {}",
                        st.weight,
                        seconds(elapsed),
                        points(s.promotion_tolerance),
                        describe_bounds(&b)
                    ));
                    return advance(t, s, now);
                }
                if elapsed >= ms.max(s.max_pause_ms) {
                    let held = state(t);
                    held.held = true;
                    held.paused_at = Some(now);
                    t.log.push(format!(
                        "not enough evidence to promote: {} requests, could only rule out an error rate above {}; holding at {}% for `gantry promote` or `gantry abort` (analysis continues and can still roll back)",
                        b.canary_requests,
                        pct(b.error_rate_upper),
                        st.weight
                    ));
                } else if !st.short_logged {
                    t.log.push(format!(
                        "step {}%: no rule failed in {}, but the data cannot yet show the canary within {} of stable ({}); gathering evidence for up to {}",
                        st.weight,
                        seconds(elapsed),
                        points(s.promotion_tolerance),
                        describe_bounds(&b),
                        seconds(ms.max(s.max_pause_ms))
                    ));
                    state(t).short_logged = true;
                }
            }
            if elapsed >= ms && waiting && !st.waiting_logged {
                t.log.push(format!(
                    "not enough data yet at {}%: {}",
                    st.weight,
                    waiting_rules.join(", ")
                ));
                state(t).waiting_logged = true;
            }
            if waiting {
                check_wait(
                    t,
                    s,
                    now,
                    format!("not enough data ({})", waiting_rules.join(", ")),
                );
                if t.deployment.phase != Phase::Canary {
                    return;
                }
            }
        }
    }
    schedule(t, s, now);
}

fn pct(rate: f64) -> String {
    format!("{:.2}%", rate * 100.0)
}

fn points(rate: f64) -> String {
    format!("{:.2} points", rate * 100.0)
}

/// What the data rules out, and so what effect it could have caught.
fn describe_bounds(b: &Bounds) -> String {
    let mut s = format!(
        "{} canary requests, error rate at most {} (stable at least {})",
        b.canary_requests,
        pct(b.error_rate_upper),
        pct(b.stable_error_rate_lower)
    );
    if let (Some(u), Some(l)) = (b.slow_rate_upper, b.stable_slow_rate_lower) {
        s.push_str(&format!(
            ", slow requests at most {} (stable at least {})",
            pct(u),
            pct(l)
        ));
    }
    s.push_str(&format!(
        "; could have caught an excess of {} or more",
        points(b.excess())
    ));
    s
}

/// Ends the current window: its counts join the evidence carried forward.
fn close_window(st: &mut CanaryState) {
    if let (Some((c0, s0)), Some((c, s))) = (st.step_start, st.latest) {
        if c.requests >= c0.requests && s.requests >= s0.requests {
            st.windows.push(Window {
                canary: c.since(&c0),
                stable: s.since(&s0),
            });
        }
    }
    st.step_start = None;
    st.latest = None;
    st.queries.close_count_windows();
}

/// Rolls back a timed step that has waited too long for data.
fn check_wait(t: &mut Transition, s: &CanarySettings, now: Millis, why: String) {
    let st = t.deployment.canary.clone().unwrap_or_default();
    if st.paused_at.is_some() || !matches!(s.steps[st.step].pause, Pause::For { .. }) {
        return;
    }
    let elapsed = (now - st.step_started_at).max(0) as u64;
    if elapsed >= s.max_wait_ms {
        let reason = format!(
            "canary at {}% could not be judged within {}: {why}",
            st.weight,
            seconds(s.max_wait_ms)
        );
        roll_back(t, reason, now);
    }
}

fn advance(t: &mut Transition, s: &CanarySettings, now: Millis) {
    let st = state(t);
    close_window(st);
    st.step += 1;
    st.paused_at = None;
    st.held = false;
    st.short_logged = false;
    if st.step >= s.steps.len() {
        if super::waves::more(&t.deployment) {
            t.log.push(
                "canary complete in this wave: all its traffic on the new release".to_owned(),
            );
            return enter(t, Phase::Baking, now);
        }
        t.log
            .push("canary complete: all traffic on the new release".to_owned());
        return enter(t, Phase::Draining, now);
    }
    emit_canary_effects(t, s, now);
}

/// The next look at the metrics, one interval from now.
fn schedule(t: &mut Transition, s: &CanarySettings, now: Millis) {
    let at = now + s.interval_ms as Millis;
    observe(t, at);
}

/// A look at both pools' counts at `at`.
fn observe(t: &mut Transition, at: Millis) {
    let limits = state(t).limits.unwrap_or_default();
    t.effects.push(Effect::ObserveMetrics { limits, at });
}

fn probe_all(t: &mut Transition, now: Millis) {
    let at = now + t.deployment.settings.health.interval_ms as Millis;
    for i in t.deployment.new_instances.clone() {
        t.effects.push(Effect::ProbeHealth { instance: i, at });
    }
}

/// What the canary phases need, from state alone (also after a restart).
pub(super) fn emit_phase_effects(t: &mut Transition, now: Millis) {
    if let Some(s) = settings(&t.deployment) {
        emit_canary_effects(t, &s, now);
    }
}

fn emit_canary_effects(t: &mut Transition, s: &CanarySettings, now: Millis) {
    match t.deployment.phase {
        Phase::Baselining => t.effects.push(Effect::ObserveBaseline),
        Phase::Canary => {
            let st = t.deployment.canary.clone().unwrap_or_default();
            let wanted = s.steps[st.step].weight;
            if st.weight != wanted {
                // On a fleet in waves, only the wave's hosts' routers.
                let d = &t.deployment;
                t.effects.push(Effect::ShiftTraffic {
                    weight: wanted,
                    stable: super::waves::in_wave(d, &d.old_instances),
                    canary: super::waves::in_wave(d, &d.new_instances),
                });
            } else {
                // Resumed mid-step: keep judging from the same step start, probe again.
                observe(t, now);
                probe_all(t, now);
            }
        }
        _ => {}
    }
}
