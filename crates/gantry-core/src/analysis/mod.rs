//! Live analysis of a canary against its stable release.
//!
//! Every rule of the standards becomes a count of events and a null rate:
//! "error rate above 1%" is *canary errors among canary requests, null rate
//! 1%*; "P99 above 3× baseline" is *canary requests slower than 3× the
//! baseline P99, null rate 1%* (if more than 1% are that slow, the P99 is
//! above it); the live comparison is *errors that were the canary's among
//! all errors, null rate = the canary's share of traffic*, and likewise for
//! client errors (4xx), which are no error of the service on their own but
//! are when the canary answers them out of proportion. Each count is
//! judged by the same anytime-valid test ([`e_values`]), so a rule fires as
//! soon as the evidence is strong, and checking every second costs no extra
//! false alarms. The false-rollback budget `alpha` is shared by weight
//! (`budget_weight`) and the rules' e-values are combined (their weighted
//! average is an e-value), so together they stay within it; the evidence runs
//! over every window of the rollout ([`analyse_windows`]), not step by step.
//! [`bounds`] turns the same mixture into confidence bounds: what the data
//! rules out, which a promotion needs.
//!
//! A rule without enough data says so ([`RuleStatus::NotEnoughData`])
//! instead of passing on silence.

pub mod e_values;
pub mod outlier;
pub mod queries;
pub mod resources;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which rules run and their thresholds. Defaults are the standards' numbers,
/// the stricter where two documents differ.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AnalysisPolicy {
    /// Chance of rolling back a canary that is no worse, over the whole rollout.
    pub alpha: f64,
    /// Canary requests before any rule may judge.
    pub min_requests: u64,
    /// Absolute error rate (standards: 1%).
    pub max_error_rate: Option<f64>,
    /// Error rate above the baseline, in points (monitoring: +0.5 points).
    pub max_error_rate_increase: Option<f64>,
    /// Error rate above the baseline, relative (workflow: +50%).
    pub max_error_rate_ratio: Option<f64>,
    /// P99 latency as a multiple of the baseline P99 (standards: 3×).
    pub max_p99_factor: Option<f64>,
    /// P50 latency as a multiple of the baseline P50 (monitoring: +50%).
    pub max_p50_factor: Option<f64>,
    /// Compare the canary's errors against stable's, live.
    pub compare_errors: bool,
    /// Compare the canary's 4xx answers against stable's, live. A 4xx is the
    /// client's fault when both releases answer it alike (no absolute rule
    /// counts it); a canary answering a larger share of them (404 on a route
    /// it lost) is a regression. Absent in deployments stored before the rule
    /// existed, which ran without it.
    #[serde(default)]
    pub compare_client_errors: bool,
    /// Compare canary and stable requests slower than this multiple of the baseline P99.
    pub compare_slow_factor: Option<f64>,
    /// Relative worsening of the error rate still called "no worse" for early promotion.
    pub promotion_margin: f64,
    /// Rules on metric queries (Prometheus): gauges held to a threshold or
    /// to their value before the rollout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queries: Vec<queries::QueryRule>,
}

impl Default for AnalysisPolicy {
    fn default() -> Self {
        AnalysisPolicy {
            alpha: 0.01,
            min_requests: 50,
            max_error_rate: Some(0.01),
            max_error_rate_increase: Some(0.005),
            max_error_rate_ratio: Some(1.5),
            max_p99_factor: Some(3.0),
            max_p50_factor: Some(1.5),
            compare_errors: true,
            compare_client_errors: true,
            compare_slow_factor: Some(3.0),
            promotion_margin: 0.5,
            queries: Vec::new(),
        }
    }
}

/// The stable release's health before any traffic moved: the standards' "health baseline".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Baseline {
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Each metric query's value for the stable release, by rule.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub queries: BTreeMap<String, f64>,
}

/// Latency limits derived from the baseline; the runtime counts requests above each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LatencyLimits {
    pub p99_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub compare_ms: Option<f64>,
}

/// Latency limits are never below this: differences of a few milliseconds
/// (a sub-millisecond loopback service, scheduler noise) are not judged.
pub const LATENCY_FLOOR_MS: f64 = 5.0;

pub fn latency_limits(policy: &AnalysisPolicy, baseline: &Baseline) -> LatencyLimits {
    let known = baseline.requests > 0 && baseline.p99_ms > 0.0;
    let limit = |factor: Option<f64>, of: f64| {
        factor
            .filter(|_| known)
            .map(|f| (f * of).max(LATENCY_FLOOR_MS))
    };
    LatencyLimits {
        p99_ms: limit(policy.max_p99_factor, baseline.p99_ms),
        p50_ms: limit(policy.max_p50_factor, baseline.p50_ms),
        compare_ms: limit(policy.compare_slow_factor, baseline.p99_ms),
    }
}

/// What one pool served since the analysis (or the step) began.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct Counts {
    pub requests: u64,
    /// 5xx answers and requests that got no answer.
    pub errors: u64,
    /// 4xx answers; not in `errors`. Absent in events stored before it was counted.
    #[serde(default)]
    pub client_errors: u64,
    /// Requests slower than `LatencyLimits::p99_ms`.
    pub over_p99_limit: u64,
    /// Requests slower than `LatencyLimits::p50_ms`.
    pub over_p50_limit: u64,
    /// Requests slower than `LatencyLimits::compare_ms`.
    pub over_compare_limit: u64,
}

impl Counts {
    /// What was counted between `start` and these (later, cumulative) counts.
    pub fn since(&self, start: &Counts) -> Counts {
        Counts {
            requests: self.requests.saturating_sub(start.requests),
            errors: self.errors.saturating_sub(start.errors),
            client_errors: self.client_errors.saturating_sub(start.client_errors),
            over_p99_limit: self.over_p99_limit.saturating_sub(start.over_p99_limit),
            over_p50_limit: self.over_p50_limit.saturating_sub(start.over_p50_limit),
            over_compare_limit: self
                .over_compare_limit
                .saturating_sub(start.over_compare_limit),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    ErrorRate,
    ErrorRateIncrease,
    ErrorRateRatio,
    P99Latency,
    P50Latency,
    ErrorsVsStable,
    ClientErrorsVsStable,
    SlowVsStable,
    /// A count rule's error ratio (from metric queries) above its bound.
    QueryErrorRatio,
    /// A count rule's share of errors above the new release's share of its events.
    QueryErrorsVsStable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleStatus {
    NotEnoughData,
    Passing,
    Failing,
}

/// One rule's state: what it saw, against what, with how much evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RuleReport {
    pub rule: RuleKind,
    pub description: String,
    pub status: RuleStatus,
    /// Observed rate (events / samples).
    pub observed: f64,
    /// The null rate the rule tests against.
    pub threshold: f64,
    pub events: u64,
    pub samples: u64,
    /// Evidence so far, and the evidence that makes the rule fire.
    pub evidence: f64,
    pub needed: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// A rule fired: roll back.
    Fail { rule: RuleKind, summary: String },
    /// Enough evidence that the canary is no worse than stable.
    NoWorse { evidence: f64 },
    /// Nothing fired yet; `waiting` tells if some rule still lacks data.
    Continue { waiting: bool },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Analysis {
    pub reports: Vec<RuleReport>,
    pub verdict: Verdict,
    /// What the data rules out so far: the evidence a promotion needs.
    /// Absent in analyses stored before it was computed.
    #[serde(default)]
    pub bounds: Option<Bounds>,
}

/// Anytime-valid confidence bounds (each at level `alpha`) of the canary's
/// rates and stable's, over the whole rollout: the canary is shown within a
/// tolerance of stable when its upper bound is at most stable's lower bound
/// plus the tolerance. The upper bound is also the effect the data could
/// have caught: a canary erring more often than that would have been seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Bounds {
    pub canary_requests: u64,
    /// The canary's error rate is at most this.
    pub error_rate_upper: f64,
    /// Stable's error rate is at least this (0 without stable traffic).
    pub stable_error_rate_lower: f64,
    /// Requests slower than the comparison limit (or the P99 limit), when latency is judged.
    pub slow_rate_upper: Option<f64>,
    pub stable_slow_rate_lower: Option<f64>,
}

impl Bounds {
    /// The largest excess over stable (in rate points) the data has not ruled
    /// out, errors and slow requests alike.
    pub fn excess(&self) -> f64 {
        let errors = self.error_rate_upper - self.stable_error_rate_lower;
        match (self.slow_rate_upper, self.stable_slow_rate_lower) {
            (Some(u), Some(l)) => errors.max(u - l),
            _ => errors,
        }
    }
}

/// The confidence bounds over every window so far (kept apart from
/// [`analyse_windows`], which runs on every look of the benchmark's
/// simulations, as each bound is a search).
pub fn bounds(policy: &AnalysisPolicy, baseline: &Baseline, windows: &[Window]) -> Bounds {
    let canary = &sum(windows.iter().map(|w| w.canary));
    let stable = &sum(windows.iter().map(|w| w.stable));
    let limits = latency_limits(policy, baseline);
    let upper = |x, n| e_values::upper_confidence(x, n, policy.alpha);
    let lower = |x, n| e_values::lower_confidence(x, n, policy.alpha);
    let slow: Option<fn(&Counts) -> u64> = if limits.compare_ms.is_some() {
        Some(|c| c.over_compare_limit)
    } else if limits.p99_ms.is_some() {
        Some(|c| c.over_p99_limit)
    } else {
        None
    };
    Bounds {
        canary_requests: canary.requests,
        error_rate_upper: upper(canary.errors, canary.requests),
        stable_error_rate_lower: lower(stable.errors, stable.requests),
        slow_rate_upper: slow.map(|f| upper(f(canary), canary.requests)),
        stable_slow_rate_lower: slow.map(|f| lower(f(stable), stable.requests)),
    }
}

/// An upper confidence bound of a rate (Wilson, z = 2.576 ≈ 99%), so that a
/// noisy baseline makes thresholds looser, never falsely tighter.
pub fn upper_bound(events: u64, samples: u64) -> f64 {
    if samples == 0 {
        return 1.0;
    }
    let z = 2.576f64;
    let n = samples as f64;
    let p = events as f64 / n;
    let centre = p + z * z / (2.0 * n);
    let spread = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    ((centre + spread) / (1.0 + z * z / n)).min(1.0)
}

struct Test {
    rule: RuleKind,
    description: String,
    events: u64,
    samples: u64,
    /// What the rule has seen of the new release (requests, or a count
    /// rule's events): it judges from `min_requests` on.
    volume: u64,
    p0: f64,
    /// A comparison's windows, each with its own null (the canary's share of
    /// traffic then); empty for a one-sample rule (one stretch at `p0`).
    stretches: Vec<e_values::Stretch>,
    /// A live comparison: judged once there is traffic, even with no events
    /// (none on either side is a pass, not a lack of data).
    comparison: bool,
}

/// Judges `canary` against `stable` and the baseline.
pub fn analyse(
    policy: &AnalysisPolicy,
    baseline: &Baseline,
    canary: &Counts,
    stable: &Counts,
) -> Analysis {
    analyse_windows(
        policy,
        baseline,
        &[Window {
            canary: *canary,
            stable: *stable,
        }],
    )
}

/// What both pools served over a stretch of the rollout with one traffic
/// split (a canary step, or part of one).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct Window {
    pub canary: Counts,
    pub stable: Counts,
}

fn sum(counts: impl Iterator<Item = Counts>) -> Counts {
    counts.fold(Counts::default(), |a, c| Counts {
        requests: a.requests + c.requests,
        errors: a.errors + c.errors,
        client_errors: a.client_errors + c.client_errors,
        over_p99_limit: a.over_p99_limit + c.over_p99_limit,
        over_p50_limit: a.over_p50_limit + c.over_p50_limit,
        over_compare_limit: a.over_compare_limit + c.over_compare_limit,
    })
}

/// Judges the canary over every window of the rollout so far: the evidence
/// carries from one step to the next instead of starting again, so the whole
/// rollout has one budget. One-sample rules pool the canary's counts (their
/// null does not depend on the split); comparisons multiply each window's
/// likelihood ratios under its own share.
pub fn analyse_windows(
    policy: &AnalysisPolicy,
    baseline: &Baseline,
    windows: &[Window],
) -> Analysis {
    analyse_with_counts(policy, baseline, windows, &[])
}

/// [`analyse_windows`], with the count rules' windows (errors and events
/// from metric queries) judged by the same tests, in the same budget.
pub fn analyse_with_counts(
    policy: &AnalysisPolicy,
    baseline: &Baseline,
    windows: &[Window],
    counts: &[queries::CountSeries],
) -> Analysis {
    let canary = &sum(windows.iter().map(|w| w.canary));
    let stable = &sum(windows.iter().map(|w| w.stable));
    let share_of = |w: &Window| {
        let all = w.canary.requests + w.stable.requests;
        (all > 0).then(|| w.canary.requests as f64 / all as f64)
    };
    let comparison = |event: fn(&Counts) -> u64| -> Vec<e_values::Stretch> {
        windows
            .iter()
            .filter_map(|w| {
                let p0 = share_of(w).filter(|p| *p > 0.0 && *p < 1.0)?;
                let (c, s) = (event(&w.canary), event(&w.stable));
                Some(e_values::Stretch {
                    successes: c,
                    trials: c + s,
                    p0,
                })
            })
            .collect()
    };
    let base_ucb = upper_bound(baseline.errors, baseline.requests);
    // The share named in the comparisons: the latest split with stable traffic.
    let share = windows
        .iter()
        .rev()
        .find_map(|w| share_of(w).filter(|p| *p < 1.0))
        .unwrap_or(0.0);
    let limits = latency_limits(policy, baseline);
    let pct = |r: f64| format!("{:.2}%", r * 100.0);
    let mut tests = Vec::new();
    let one_sample = |rule, description: String, events, p0| Test {
        rule,
        description,
        events,
        samples: canary.requests,
        volume: canary.requests,
        p0,
        stretches: Vec::new(),
        comparison: false,
    };
    if let Some(max) = policy.max_error_rate {
        tests.push(one_sample(
            RuleKind::ErrorRate,
            format!("canary error rate above {}", pct(max)),
            canary.errors,
            max,
        ));
    }
    // Without a baseline the rules relative to it are off (not waiting forever).
    let has_baseline = baseline.requests > 0;
    if let Some(inc) = policy.max_error_rate_increase.filter(|_| has_baseline) {
        let p0 = base_ucb + inc;
        tests.push(one_sample(
            RuleKind::ErrorRateIncrease,
            format!(
                "canary error rate above baseline + {:.1} points ({})",
                inc * 100.0,
                pct(p0)
            ),
            canary.errors,
            p0,
        ));
    }
    if let Some(ratio) = policy.max_error_rate_ratio.filter(|_| has_baseline) {
        let p0 = base_ucb * ratio;
        tests.push(one_sample(
            RuleKind::ErrorRateRatio,
            format!(
                "canary error rate more than {:.0}% above baseline ({})",
                (ratio - 1.0) * 100.0,
                pct(p0)
            ),
            canary.errors,
            p0,
        ));
    }
    if let (Some(limit), Some(f)) = (limits.p99_ms, policy.max_p99_factor) {
        tests.push(one_sample(
            RuleKind::P99Latency,
            format!("canary P99 above {f}× baseline ({limit:.1} ms): over 1% of requests slower"),
            canary.over_p99_limit,
            0.01,
        ));
    }
    if let (Some(limit), Some(f)) = (limits.p50_ms, policy.max_p50_factor) {
        tests.push(one_sample(
            RuleKind::P50Latency,
            format!("canary P50 above {f}× baseline ({limit:.1} ms): over half of requests slower"),
            canary.over_p50_limit,
            0.5,
        ));
    }
    if policy.compare_errors {
        tests.push(Test {
            rule: RuleKind::ErrorsVsStable,
            description: format!(
                "canary's share of errors above its share of traffic ({})",
                pct(share)
            ),
            events: canary.errors,
            samples: canary.errors + stable.errors,
            volume: canary.requests,
            p0: share,
            stretches: comparison(|c| c.errors),
            comparison: true,
        });
    }
    if policy.compare_client_errors {
        tests.push(Test {
            rule: RuleKind::ClientErrorsVsStable,
            description: format!(
                "canary's share of 4xx answers above its share of traffic ({})",
                pct(share)
            ),
            events: canary.client_errors,
            samples: canary.client_errors + stable.client_errors,
            volume: canary.requests,
            p0: share,
            stretches: comparison(|c| c.client_errors),
            comparison: true,
        });
    }
    if let (Some(limit), Some(f)) = (limits.compare_ms, policy.compare_slow_factor) {
        tests.push(Test {
            rule: RuleKind::SlowVsStable,
            description: format!(
                "canary's share of requests slower than {f}× baseline P99 ({limit:.1} ms) above its share of traffic"
            ),
            events: canary.over_compare_limit,
            samples: canary.over_compare_limit + stable.over_compare_limit,
            volume: canary.requests,
            p0: share,
            stretches: comparison(|c| c.over_compare_limit),
            comparison: true,
        });
    }
    for series in counts {
        tests.extend(count_tests(series));
    }

    // The budget is shared by weight (`budget_weight`), and the rules'
    // evidence is combined: their weighted average is itself an e-value, so
    // the analysis fails when it reaches `1/alpha`. A rule alone reaches that
    // at `1/(alpha·w)` (its `needed`), exactly where an even split would have
    // fired it, and rules rising together (the error rules on one regression)
    // add up before any of them gets there.
    let total_weight: f64 = tests.iter().map(|t| budget_weight(t.rule)).sum();
    let mut reports = Vec::with_capacity(tests.len());
    let mut waiting = false;
    let mut combined = 0.0;
    for t in tests {
        let w = budget_weight(t.rule) / total_weight;
        let needed = 1.0 / (policy.alpha * w);
        let e = if t.comparison {
            e_values::evidence_over(&t.stretches)
        } else {
            e_values::evidence(t.events, t.samples, t.p0)
        };
        let judgeable = if t.comparison {
            !t.stretches.is_empty()
        } else {
            t.p0 < 1.0
        };
        let enough = t.volume >= policy.min_requests
            && judgeable
            && (t.comparison || e >= needed || could_reach(t.samples, t.p0, needed));
        let status = if !enough {
            waiting = true;
            RuleStatus::NotEnoughData
        } else if e >= needed {
            RuleStatus::Failing
        } else {
            RuleStatus::Passing
        };
        if enough {
            combined += w * e;
        }
        let observed = if t.samples == 0 {
            0.0
        } else {
            t.events as f64 / t.samples as f64
        };
        reports.push(RuleReport {
            rule: t.rule,
            description: t.description,
            status,
            observed,
            threshold: t.p0,
            events: t.events,
            samples: t.samples,
            evidence: e,
            needed,
        });
    }
    let needed = 1.0 / policy.alpha;
    // The first rule failing on its own evidence is the one named, else the
    // one that carries most of the combined evidence.
    let named = if combined < needed {
        None
    } else {
        match reports.iter().position(|r| r.status == RuleStatus::Failing) {
            Some(i) => Some(i),
            None => reports
                .iter()
                .enumerate()
                .filter(|(_, r)| r.status != RuleStatus::NotEnoughData)
                .max_by(|(_, a), (_, b)| {
                    (a.evidence / a.needed).total_cmp(&(b.evidence / b.needed))
                })
                .map(|(i, _)| i),
        }
    };
    let failed = named.map(|i| &mut reports[i]).map(|r| {
        r.status = RuleStatus::Failing;
        let alone = if r.evidence >= r.needed {
            format!("evidence {:.0} ≥ {:.0}", r.evidence.min(1e12), r.needed)
        } else {
            format!(
                "evidence {:.0} (with the other rules', {:.0} ≥ {:.0} combined)",
                r.evidence,
                combined.min(1e12),
                needed
            )
        };
        (
            r.rule,
            format!(
                "{}: observed {} ({} of {}) against {}, {alone}",
                r.description,
                pct(r.observed),
                r.events,
                r.samples,
                pct(r.threshold),
            ),
        )
    });
    let verdict = match failed {
        Some((rule, summary)) => Verdict::Fail { rule, summary },
        None => {
            let no_worse = no_worse_evidence(policy, canary, stable, share);
            if !waiting && no_worse >= needed * reports.len().max(1) as f64 {
                Verdict::NoWorse { evidence: no_worse }
            } else {
                Verdict::Continue { waiting }
            }
        }
    };
    Analysis {
        reports,
        verdict,
        bounds: None,
    }
}

/// A rule's share of the false-rollback budget, before normalising over the
/// rules that run. Rules that test the same excess share one budget: the
/// errors' (the live comparison, which sees a shared incident for what it is,
/// takes most of it), the slow requests' likewise, the 4xx answers' and the
/// median's. The shares were set by the detection benchmark.
fn budget_weight(rule: RuleKind) -> f64 {
    match rule {
        RuleKind::ErrorsVsStable => 0.4,
        RuleKind::ErrorRate | RuleKind::ErrorRateIncrease | RuleKind::ErrorRateRatio => 0.03,
        RuleKind::SlowVsStable => 0.3,
        RuleKind::P99Latency => 0.03,
        RuleKind::ClientErrorsVsStable => 0.12,
        RuleKind::P50Latency => 0.06,
        // Each count rule's tests weigh as the router's error rules do.
        RuleKind::QueryErrorRatio => 0.03,
        RuleKind::QueryErrorsVsStable => 0.2,
    }
}

/// A count rule's tests: its error ratio against its bound (the new
/// release's events pooled), and its share of errors against its share of
/// the events, window by window (each under the split it was counted in).
fn count_tests(series: &queries::CountSeries) -> Vec<Test> {
    let (mut errors, mut total, mut old_errors) = (0, 0, 0);
    for w in &series.windows {
        errors += w.errors;
        total += w.total;
        old_errors += w.old_errors;
    }
    let mut tests = Vec::new();
    if let Some(max) = series.max_ratio {
        tests.push(Test {
            rule: RuleKind::QueryErrorRatio,
            description: format!(
                "query rule {:?}: error ratio above {:.2}%",
                series.rule,
                max * 100.0
            ),
            events: errors,
            samples: total,
            volume: total,
            p0: max,
            stretches: Vec::new(),
            comparison: false,
        });
    }
    if series.compare {
        let stretches: Vec<e_values::Stretch> = series
            .windows
            .iter()
            .filter_map(|w| {
                let all = w.total + w.old_total;
                let p0 = (all > 0).then(|| w.total as f64 / all as f64)?;
                (p0 > 0.0 && p0 < 1.0).then_some(e_values::Stretch {
                    successes: w.errors,
                    trials: w.errors + w.old_errors,
                    p0,
                })
            })
            .collect();
        let share = stretches.last().map(|s| s.p0).unwrap_or(0.0);
        tests.push(Test {
            rule: RuleKind::QueryErrorsVsStable,
            description: format!(
                "query rule {:?}: new release's share of errors above its share of events ({:.2}%)",
                series.rule,
                share * 100.0
            ),
            events: errors,
            samples: errors + old_errors,
            volume: total,
            p0: share,
            stretches,
            comparison: true,
        });
    }
    tests
}

/// Whether `samples` trials could ever reach `needed` (all of them events).
/// Past 64 trials any null rate up to 1/2 could (2^64/65 dwarfs any sane
/// 1/alpha), which spares the search on the hot path.
fn could_reach(samples: u64, p0: f64, needed: f64) -> bool {
    (samples >= 64 && p0 <= 0.5) || samples >= e_values::min_trials_to_reach(p0, needed)
}

/// Evidence that the canary's errors are *not* more than `1 + margin` times
/// stable's: against "the canary's share of errors is at least p1".
fn no_worse_evidence(policy: &AnalysisPolicy, canary: &Counts, stable: &Counts, share: f64) -> f64 {
    if share <= 0.0 || share >= 1.0 {
        return 0.0;
    }
    let r = 1.0 + policy.promotion_margin;
    let p1 = r * share / (r * share + 1.0 - share);
    e_values::evidence_at_least(canary.errors, canary.errors + stable.errors, p1)
}

#[cfg(test)]
mod tests;
