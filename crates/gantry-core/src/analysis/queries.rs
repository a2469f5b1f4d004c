//! Rules on metric queries (Prometheus): a gauge the release drives — CPU,
//! memory, a queue's depth, orders per minute — read at each look and held
//! to a threshold or to its value before the rollout (the health baseline);
//! or counters of events — failed and all checkouts — that become counts
//! judged by the same anytime-valid tests as the router's own
//! ([`super::analyse_with_counts`]): the new release's error ratio against
//! a bound, and its share of errors against its share of the events.
//!
//! Peers' users lose most to missing data: an empty result that crashes or
//! silently passes the analysis. Here "no data" (an empty result, a query
//! error, Prometheus unreachable) is a state of its own with a policy and a
//! deadline, and every verdict names the resolved query, the value, the
//! baseline and the threshold.

use crate::domain::Millis;
use crate::time::seconds;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A rule on one query's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct QueryRule {
    pub name: String,
    /// PromQL with placeholders (`{env}`, `{release}`, `{pool}`, `{interval}`)
    /// the runtime fills in. A count rule's counter of errors (or of
    /// successes, as its condition says).
    pub query: String,
    pub condition: Condition,
    /// Bad readings in a row that fail the rule (one spike does not).
    pub consecutive: u32,
    pub no_data: NoData,
    /// How long "no data" may last before the `no_data` policy decides.
    pub no_data_ms: u64,
}

impl QueryRule {
    /// Each PromQL the rule asks, with the config field it came from.
    pub fn promql(&self) -> Vec<(&'static str, &str)> {
        match &self.condition {
            Condition::Counts(c) => vec![
                (
                    if c.successes { "successes" } else { "errors" },
                    &self.query,
                ),
                ("total", &c.total),
            ],
            _ => vec![("query", &self.query)],
        }
    }
}

/// When a reading is bad.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Condition {
    Above(f64),
    Below(f64),
    /// Above this multiple of the value before the rollout.
    AboveBaseline(f64),
    /// Below this multiple of the value before the rollout.
    BelowBaseline(f64),
    /// A count rule: the rule's query and `total` are counters, read for
    /// both releases and judged as counts.
    Counts(CountCondition),
}

/// What a count rule holds the new release to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CountCondition {
    /// PromQL counting every event, errors and successes alike.
    pub total: String,
    /// The rule's query counts successes (errors are the rest).
    pub successes: bool,
    /// The new release's error ratio may not be above this.
    pub max_ratio: Option<f64>,
    /// The new release's share of the errors may not be above its share of
    /// the events, while both releases serve.
    pub compare: bool,
}

/// A counter's value for a count rule: errors and every event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Tally {
    pub errors: f64,
    pub total: f64,
}

/// Counts over a stretch with one traffic split: the new release's errors
/// and events, and the old one's.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct CountWindow {
    pub errors: u64,
    pub total: u64,
    pub old_errors: u64,
    pub old_total: u64,
}

/// A count rule's windows so far, for the analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct CountSeries {
    pub rule: String,
    pub max_ratio: Option<f64>,
    pub compare: bool,
    pub windows: Vec<CountWindow>,
}

/// Where a count rule's counters stand: their values when the current
/// window began and at the latest look (new release, old release), and the
/// windows already closed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CountTrack {
    pub start: Option<(Tally, Tally)>,
    pub latest: Option<(Tally, Tally)>,
    #[serde(default)]
    pub windows: Vec<CountWindow>,
}

impl CountTrack {
    /// The current window: what the counters rose by since it began.
    fn current(&self) -> Option<CountWindow> {
        let ((s, so), (l, lo)) = (self.start?, self.latest?);
        let up = |a: f64, b: f64| (b - a).max(0.0).round() as u64;
        // Two counters are scraped apart: errors may run ahead of the total
        // for a moment, never counted as more than the events.
        let (total, old_total) = (up(s.total, l.total), up(so.total, lo.total));
        Some(CountWindow {
            errors: up(s.errors, l.errors).min(total),
            total,
            old_errors: up(so.errors, lo.errors).min(old_total),
            old_total,
        })
    }

    fn close(&mut self) {
        if let Some(w) = self.current().filter(|w| w.total + w.old_total > 0) {
            self.windows.push(w);
        }
        self.start = None;
        self.latest = None;
    }

    /// Takes a look's counters; `false` when they went down (the service
    /// restarted and its counters began again), which closes the window.
    fn observe(&mut self, now: (Tally, Tally)) -> bool {
        let Some((s, so)) = self.start else {
            self.start = Some(now);
            self.latest = Some(now);
            return true;
        };
        let fell = |a: Tally, b: Tally| b.errors < a.errors || b.total < a.total;
        let latest = self.latest.unwrap_or((s, so));
        if fell(latest.0, now.0) || fell(latest.1, now.1) {
            self.close();
            self.start = Some(now);
            self.latest = Some(now);
            return false;
        }
        self.latest = Some(now);
        true
    }
}

/// What "no data" does once it has lasted `no_data_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NoData {
    /// Keep waiting (no promotion meanwhile), then roll back saying so.
    Wait,
    /// Roll back at once.
    Fail,
    /// Count as passing, said in the log: never silent.
    Pass,
}

/// One query's answer at a look.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reading {
    Value {
        value: f64,
    },
    /// A count rule's counters for the new release and the old one (zero
    /// where no old release serves).
    Counts {
        new: Tally,
        old: Tally,
    },
    /// The query returned no series.
    NoData,
    /// The query failed, or the metrics server could not be reached.
    Error {
        reason: String,
    },
}

/// One rule's reading, with the query as sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct QueryReading {
    pub rule: String,
    pub resolved: String,
    pub reading: Reading,
}

/// Where each rule stands across looks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct QueryState {
    /// Bad readings in a row, by rule.
    #[serde(default)]
    pub bad_in_row: BTreeMap<String, u32>,
    /// Since when each rule has had no data.
    #[serde(default)]
    pub no_data_since: BTreeMap<String, Millis>,
    /// The latest reading of each rule, for status and the log.
    #[serde(default)]
    pub last: BTreeMap<String, QueryReading>,
    /// Rules whose "no data" passed by policy (logged once).
    #[serde(default)]
    pub passed_without_data: Vec<String>,
    /// Count rules' counters and windows, by rule.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, CountTrack>,
}

impl QueryState {
    /// Ends every count rule's current window (the traffic split changes):
    /// each window's comparison has the split it was counted under.
    pub fn close_count_windows(&mut self) {
        self.counts.values_mut().for_each(CountTrack::close);
    }

    /// Each count rule's windows so far, the current one last.
    pub fn count_series(&self, rules: &[QueryRule]) -> Vec<CountSeries> {
        rules
            .iter()
            .filter_map(|r| {
                let Condition::Counts(c) = &r.condition else {
                    return None;
                };
                let track = self.counts.get(&r.name);
                let mut windows = track.map(|t| t.windows.clone()).unwrap_or_default();
                windows.extend(track.and_then(CountTrack::current));
                Some(CountSeries {
                    rule: r.name.clone(),
                    max_ratio: c.max_ratio,
                    compare: c.compare,
                    windows,
                })
            })
            .collect()
    }
}

/// The rules' decision at a look.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryVerdict {
    /// Roll back: which rule, query, values and why.
    Fail(String),
    /// No rule failed; `waiting`: some rule has no data yet (no promotion).
    Continue { waiting: bool, notes: Vec<String> },
}

impl Condition {
    /// The threshold a reading is held to, or `None` when it is relative
    /// to a baseline there is none of (or the rule judges counts).
    fn threshold(&self, baseline: Option<f64>) -> Option<f64> {
        match *self {
            Condition::Above(t) | Condition::Below(t) => Some(t),
            Condition::AboveBaseline(f) | Condition::BelowBaseline(f) => baseline.map(|b| b * f),
            Condition::Counts(_) => None,
        }
    }

    fn bad(&self, value: f64, threshold: f64) -> bool {
        match self {
            Condition::Above(_) | Condition::AboveBaseline(_) => value > threshold,
            Condition::Below(_) | Condition::BelowBaseline(_) => value < threshold,
            Condition::Counts(_) => false,
        }
    }

    fn describe(&self, threshold: f64, baseline: Option<f64>) -> String {
        let b = |f: f64| {
            format!(
                "{f}× the baseline {} = {}",
                baseline.map(num).unwrap_or_default(),
                num(threshold)
            )
        };
        match *self {
            Condition::Above(_) => format!("above {}", num(threshold)),
            Condition::Below(_) => format!("below {}", num(threshold)),
            Condition::AboveBaseline(f) => format!("above {}", b(f)),
            Condition::BelowBaseline(f) => format!("below {}", b(f)),
            Condition::Counts(_) => String::new(),
        }
    }
}

/// Counters are finite and not negative.
fn counts_are_sane(t: &Tally) -> bool {
    t.errors.is_finite() && t.total.is_finite() && t.errors >= 0.0 && t.total >= 0.0
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// Judges the readings of a look at `now` against the rules.
pub fn judge(
    rules: &[QueryRule],
    baseline: &BTreeMap<String, f64>,
    readings: &[QueryReading],
    state: &mut QueryState,
    now: Millis,
) -> QueryVerdict {
    let mut waiting = false;
    let mut notes = Vec::new();
    for rule in rules {
        let Some(r) = readings.iter().find(|r| r.rule == rule.name) else {
            continue;
        };
        state.last.insert(rule.name.clone(), r.clone());
        let base = baseline.get(&rule.name).copied();
        let value = match &r.reading {
            Reading::Value { value } if value.is_finite() => *value,
            Reading::Counts { new, old } if counts_are_sane(new) && counts_are_sane(old) => {
                // Judged with the router's counts, by the analysis; here
                // only tracked, and a restart of the counters said.
                state.no_data_since.remove(&rule.name);
                let track = state.counts.entry(rule.name.clone()).or_default();
                if !track.observe((*new, *old)) {
                    notes.push(format!(
                        "query rule {:?}: the counters went down (the service restarted?); counting again from here",
                        rule.name
                    ));
                }
                continue;
            }
            other => {
                let why = match other {
                    Reading::Error { reason } => format!("query failed: {reason}"),
                    Reading::Counts { .. } | Reading::Value { .. } => {
                        "no data: the query returned a value that is not a count (negative, NaN or infinite)".to_owned()
                    }
                    Reading::NoData => "no data: the query returned no series".to_owned(),
                };
                let since = *state.no_data_since.entry(rule.name.clone()).or_insert(now);
                let lasted = (now - since).max(0) as u64;
                let over = lasted >= rule.no_data_ms;
                match (rule.no_data, over) {
                    (NoData::Fail, _) => {
                        return QueryVerdict::Fail(format!(
                            "query rule {:?}: {why} (query {}; no_data = \"fail\")",
                            rule.name, r.resolved
                        ));
                    }
                    (NoData::Wait, true) => {
                        return QueryVerdict::Fail(format!(
                            "query rule {:?}: {why} for {} (query {}; no_data = \"wait\" gives up after {})",
                            rule.name,
                            seconds(lasted),
                            r.resolved,
                            seconds(rule.no_data_ms)
                        ));
                    }
                    (NoData::Pass, true) => {
                        if !state.passed_without_data.contains(&rule.name) {
                            state.passed_without_data.push(rule.name.clone());
                            notes.push(format!(
                                "query rule {:?}: {why} for {}; passing it as no_data = \"pass\" says (query {})",
                                rule.name,
                                seconds(lasted),
                                r.resolved
                            ));
                        }
                    }
                    (_, false) => waiting = true,
                }
                state.bad_in_row.remove(&rule.name);
                continue;
            }
        };
        state.no_data_since.remove(&rule.name);
        let Some(threshold) = rule.condition.threshold(base) else {
            // Relative to a baseline that had no value: nothing to compare with.
            continue;
        };
        let bad = rule.condition.bad(value, threshold);
        let n = state.bad_in_row.entry(rule.name.clone()).or_insert(0);
        *n = if bad { *n + 1 } else { 0 };
        if *n >= rule.consecutive.max(1) {
            return QueryVerdict::Fail(format!(
                "query rule {:?}: {} for {} reading(s) in a row, latest {} (query {}; baseline {})",
                rule.name,
                rule.condition.describe(threshold, base),
                n,
                num(value),
                r.resolved,
                base.map(num).unwrap_or_else(|| "none".to_owned())
            ));
        }
    }
    QueryVerdict::Continue { waiting, notes }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(condition: Condition, no_data: NoData) -> QueryRule {
        QueryRule {
            name: "queue".into(),
            query: "max(queue_depth{release=\"{release}\"})".into(),
            condition,
            consecutive: 3,
            no_data,
            no_data_ms: 10_000,
        }
    }

    fn read(reading: Reading) -> Vec<QueryReading> {
        vec![QueryReading {
            rule: "queue".into(),
            resolved: "max(queue_depth{release=\"1.1.0\"})".into(),
            reading,
        }]
    }

    fn value(v: f64) -> Vec<QueryReading> {
        read(Reading::Value { value: v })
    }

    #[test]
    fn a_gauge_over_ten_times_its_baseline_fails_after_consecutive_readings_naming_all() {
        let rules = [rule(Condition::AboveBaseline(10.0), NoData::Wait)];
        let base = BTreeMap::from([("queue".to_owned(), 4.0)]);
        let mut st = QueryState::default();
        // One spike, then back: nothing.
        for (t, v) in [(0, 100.0), (1, 5.0), (2, 100.0), (3, 120.0)] {
            let got = judge(&rules, &base, &value(v), &mut st, t);
            assert!(matches!(got, QueryVerdict::Continue { .. }), "{got:?}");
        }
        let QueryVerdict::Fail(why) = judge(&rules, &base, &value(80.0), &mut st, 4) else {
            panic!("third bad reading in a row fails")
        };
        assert_eq!(
            why,
            "query rule \"queue\": above 10× the baseline 4 = 40 for 3 reading(s) in a row, latest 80 (query max(queue_depth{release=\"1.1.0\"}); baseline 4)"
        );
    }

    #[test]
    fn a_business_kpi_below_its_share_of_the_baseline_fails() {
        let rules = [QueryRule {
            consecutive: 1,
            ..rule(Condition::BelowBaseline(0.8), NoData::Wait)
        }];
        let base = BTreeMap::from([("queue".to_owned(), 100.0)]);
        let mut st = QueryState::default();
        assert!(matches!(
            judge(&rules, &base, &value(85.0), &mut st, 0),
            QueryVerdict::Continue { waiting: false, .. }
        ));
        assert!(matches!(
            judge(&rules, &base, &value(79.0), &mut st, 1),
            QueryVerdict::Fail(_)
        ));
    }

    #[test]
    fn no_data_waits_without_promoting_then_fails_saying_so() {
        let rules = [rule(Condition::Above(10.0), NoData::Wait)];
        let mut st = QueryState::default();
        let got = judge(&rules, &BTreeMap::new(), &read(Reading::NoData), &mut st, 0);
        assert_eq!(
            got,
            QueryVerdict::Continue {
                waiting: true,
                notes: vec![]
            }
        );
        let QueryVerdict::Fail(why) = judge(
            &rules,
            &BTreeMap::new(),
            &read(Reading::NoData),
            &mut st,
            10_000,
        ) else {
            panic!("no data past the deadline fails")
        };
        assert!(
            why.starts_with("query rule \"queue\": no data: the query returned no series for 10s"),
            "{why}"
        );
        // An unreachable server is explained the same way, with its reason.
        let mut st = QueryState::default();
        let err = read(Reading::Error {
            reason: "connection refused".into(),
        });
        judge(&rules, &BTreeMap::new(), &err, &mut st, 0);
        let QueryVerdict::Fail(why) = judge(&rules, &BTreeMap::new(), &err, &mut st, 20_000) else {
            panic!()
        };
        assert!(
            why.contains("query failed: connection refused for 20s"),
            "{why}"
        );
    }

    #[test]
    fn no_data_fail_fails_at_once_and_pass_is_said_once() {
        let mut st = QueryState::default();
        let fail = [rule(Condition::Above(1.0), NoData::Fail)];
        assert!(matches!(
            judge(&fail, &BTreeMap::new(), &read(Reading::NoData), &mut st, 0),
            QueryVerdict::Fail(_)
        ));
        let pass = [rule(Condition::Above(1.0), NoData::Pass)];
        let mut st = QueryState::default();
        judge(&pass, &BTreeMap::new(), &read(Reading::NoData), &mut st, 0);
        let QueryVerdict::Continue { waiting, notes } = judge(
            &pass,
            &BTreeMap::new(),
            &read(Reading::NoData),
            &mut st,
            10_000,
        ) else {
            panic!()
        };
        assert!(!waiting);
        assert_eq!(notes.len(), 1, "said in the log");
        let QueryVerdict::Continue { notes, .. } = judge(
            &pass,
            &BTreeMap::new(),
            &read(Reading::NoData),
            &mut st,
            11_000,
        ) else {
            panic!()
        };
        assert!(notes.is_empty(), "said once");
    }

    #[test]
    fn a_baseline_rule_without_a_baseline_value_judges_nothing() {
        let rules = [QueryRule {
            consecutive: 1,
            ..rule(Condition::AboveBaseline(2.0), NoData::Wait)
        }];
        let mut st = QueryState::default();
        assert!(matches!(
            judge(&rules, &BTreeMap::new(), &value(1e9), &mut st, 0),
            QueryVerdict::Continue { waiting: false, .. }
        ));
    }

    fn count_rule() -> QueryRule {
        QueryRule {
            name: "checkout".into(),
            query: "sum(checkout_failed_total{release=\"{release}\"})".into(),
            condition: Condition::Counts(CountCondition {
                total: "sum(checkout_total{release=\"{release}\"})".into(),
                successes: false,
                max_ratio: Some(0.02),
                compare: true,
            }),
            consecutive: 1,
            no_data: NoData::Wait,
            no_data_ms: 10_000,
        }
    }

    fn counters(errors: f64, total: f64, old_errors: f64, old_total: f64) -> Vec<QueryReading> {
        vec![QueryReading {
            rule: "checkout".into(),
            resolved: "…".into(),
            reading: Reading::Counts {
                new: Tally { errors, total },
                old: Tally {
                    errors: old_errors,
                    total: old_total,
                },
            },
        }]
    }

    #[test]
    fn counters_become_windows_that_close_at_a_new_split_and_survive_a_restart() {
        let rules = [count_rule()];
        let none = BTreeMap::new();
        let mut st = QueryState::default();
        let look =
            |st: &mut QueryState, r: Vec<QueryReading>, t| match judge(&rules, &none, &r, st, t) {
                QueryVerdict::Continue { notes, .. } => notes,
                QueryVerdict::Fail(why) => panic!("{why}"),
            };
        // Counters since the process started: only their rise counts.
        look(&mut st, counters(5.0, 1_000.0, 40.0, 9_000.0), 0);
        look(&mut st, counters(7.0, 1_100.0, 49.0, 9_900.0), 1);
        let at = |st: &QueryState| st.count_series(&rules)[0].windows.clone();
        assert_eq!(
            at(&st),
            [CountWindow {
                errors: 2,
                total: 100,
                old_errors: 9,
                old_total: 900
            }]
        );
        // The split changes: that window is closed, the next counts anew.
        st.close_count_windows();
        look(&mut st, counters(7.0, 1_100.0, 49.0, 9_900.0), 2);
        look(&mut st, counters(9.0, 1_600.0, 50.0, 10_400.0), 3);
        assert_eq!(at(&st).len(), 2);
        assert_eq!(
            at(&st)[1],
            CountWindow {
                errors: 2,
                total: 500,
                old_errors: 1,
                old_total: 500
            }
        );
        // The new release restarted: its counters began again; said, and
        // the counts so far are kept.
        let notes = look(&mut st, counters(0.0, 10.0, 51.0, 10_500.0), 4);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("counters went down"), "{notes:?}");
        look(&mut st, counters(1.0, 110.0, 52.0, 10_600.0), 5);
        let w = at(&st);
        assert_eq!(w.len(), 3);
        assert_eq!(
            w[2],
            CountWindow {
                errors: 1,
                total: 100,
                old_errors: 1,
                old_total: 100
            }
        );
        // Errors scraped ahead of the total never count as more than the events.
        let mut st = QueryState::default();
        look(&mut st, counters(0.0, 0.0, 0.0, 0.0), 0);
        look(&mut st, counters(12.0, 10.0, 0.0, 0.0), 1);
        assert_eq!(at(&st)[0].errors, 10);
    }

    #[test]
    fn a_count_rule_without_counters_waits_like_any_rule() {
        let rules = [count_rule()];
        let mut st = QueryState::default();
        let none = BTreeMap::new();
        let bad = counters(f64::NAN, 1.0, 0.0, 0.0);
        assert_eq!(
            judge(&rules, &none, &bad, &mut st, 0),
            QueryVerdict::Continue {
                waiting: true,
                notes: vec![]
            }
        );
        let QueryVerdict::Fail(why) = judge(&rules, &none, &bad, &mut st, 10_000) else {
            panic!()
        };
        assert!(why.contains("not a count"), "{why}");
    }
}
