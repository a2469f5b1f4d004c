//! Judging a rolling update between batches: once a batch takes traffic and
//! the old release still serves beside it, both releases' live counts are
//! compared with the analysis rules for a window before the next batch.
//!
//! The functions here decide; `rolling.rs` acts on the decision, so the
//! judge knows nothing of stages.

use crate::analysis::queries::CountSeries;
use crate::analysis::{analyse_with_counts, AnalysisPolicy, Baseline, Counts, Verdict, Window};
use crate::domain::Millis;
use crate::time::seconds;
use serde::{Deserialize, Serialize};

/// How each batch of a rolling update is judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BatchJudge {
    /// How long a batch is judged before the next begins.
    pub window_ms: u64,
    /// Time between two looks at the counts.
    pub interval_ms: u64,
    /// The rules; those relative to a baseline are off (a rolling update
    /// takes none), the absolute and the new-against-old ones judge.
    pub policy: AnalysisPolicy,
}

impl BatchJudge {
    /// Longest a batch waits for data enough to judge before the update
    /// rolls back: never a promotion on silence.
    pub fn max_wait_ms(&self) -> u64 {
        self.window_ms.saturating_mul(3).max(30_000)
    }
}

/// What a look at the counts decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    /// Keep looking (the counts at the window's start when first seen).
    Look { start: (Counts, Counts) },
    /// The batch passed: the line for the log.
    Pass(String),
    /// Roll back: the reason.
    Fail(String),
}

/// What one look at a batch saw.
#[derive(Debug, Clone, Copy)]
pub struct Look<'a> {
    /// The counts when the window began (none before the first look).
    pub start: Option<(Counts, Counts)>,
    /// The new and old releases' cumulative counts now.
    pub new: &'a Counts,
    pub old: &'a Counts,
    /// The count rules' windows in this batch.
    pub counts: &'a [CountSeries],
    /// Some query rule has no data yet: the batch cannot pass meanwhile.
    pub queries_waiting: bool,
}

/// Judges the look `l` at `now` for batch `batch`, whose window began at
/// `since`. `share` is the part of the false-rollback budget this batch
/// may spend.
pub fn judge(
    j: &BatchJudge,
    share: f64,
    batch: u32,
    l: &Look<'_>,
    since: Millis,
    now: Millis,
) -> Judgement {
    let (new, old) = (l.new, l.old);
    let Some((n0, o0)) = l.start else {
        return Judgement::Look {
            start: (*new, *old),
        };
    };
    if new.requests < n0.requests || old.requests < o0.requests {
        // A router restarted and counts from zero: the window starts again.
        return Judgement::Look {
            start: (*new, *old),
        };
    }
    let mut policy = j.policy.clone();
    policy.alpha *= share;
    let window = Window {
        canary: new.since(&n0),
        stable: old.since(&o0),
    };
    let analysis = analyse_with_counts(&policy, &Baseline::default(), &[window], l.counts);
    let elapsed = (now - since).max(0) as u64;
    let verdict = match analysis.verdict {
        Verdict::NoWorse { .. } | Verdict::Continue { .. } if l.queries_waiting => {
            Verdict::Continue { waiting: true }
        }
        v => v,
    };
    match verdict {
        Verdict::Fail { summary, .. } => {
            Judgement::Fail(format!("analysis of batch {batch}: {summary}"))
        }
        Verdict::Continue { waiting: true } if elapsed >= j.max_wait_ms() => {
            Judgement::Fail(format!(
                "batch {batch} could not be judged within {}: {}",
                seconds(j.max_wait_ms()),
                if l.queries_waiting {
                    "a metric query rule has had no data".to_owned()
                } else {
                    format!(
                        "{} request(s) on the new release, {} needed",
                        window.canary.requests, policy.min_requests
                    )
                }
            ))
        }
        Verdict::NoWorse { .. } | Verdict::Continue { waiting: false }
            if elapsed >= j.window_ms =>
        {
            Judgement::Pass(format!(
                "batch {batch} judged over {}: no rule failed ({} request(s) on the new release, {} errors; {} on the old, {} errors)",
                seconds(elapsed),
                window.canary.requests,
                window.canary.errors,
                window.stable.requests,
                window.stable.errors
            ))
        }
        _ => Judgement::Look { start: (n0, o0) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(requests: u64, errors: u64) -> Counts {
        Counts {
            requests,
            errors,
            ..Counts::default()
        }
    }

    fn look<'a>(start: Option<(Counts, Counts)>, new: &'a Counts, old: &'a Counts) -> Look<'a> {
        Look {
            start,
            new,
            old,
            counts: &[],
            queries_waiting: false,
        }
    }

    fn j() -> BatchJudge {
        BatchJudge {
            window_ms: 10_000,
            interval_ms: 1_000,
            policy: AnalysisPolicy::default(),
        }
    }

    #[test]
    fn the_first_look_only_sets_the_window_s_start() {
        let got = judge(
            &j(),
            1.0,
            1,
            &look(None, &counts(50, 0), &counts(500, 0)),
            0,
            0,
        );
        assert_eq!(
            got,
            Judgement::Look {
                start: (counts(50, 0), counts(500, 0))
            }
        );
    }

    #[test]
    fn a_batch_as_good_as_the_old_release_passes_once_the_window_is_over() {
        let start = Some((counts(0, 0), counts(0, 0)));
        let (new, old) = (counts(2_000, 2), counts(6_000, 6));
        let early = judge(&j(), 1.0, 2, &look(start, &new, &old), 0, 5_000);
        assert!(matches!(early, Judgement::Look { .. }), "{early:?}");
        let Judgement::Pass(line) = judge(&j(), 1.0, 2, &look(start, &new, &old), 0, 10_000) else {
            panic!("a healthy batch passes")
        };
        assert!(line.starts_with("batch 2 judged over 10s: no rule failed (2000 request(s)"));
    }

    #[test]
    fn a_batch_worse_than_the_old_release_fails_naming_the_rule() {
        let start = Some((counts(0, 0), counts(0, 0)));
        let (new, old) = (counts(2_000, 100), counts(6_000, 6));
        let got = judge(&j(), 1.0, 3, &look(start, &new, &old), 0, 2_000);
        let Judgement::Fail(reason) = got else {
            panic!("5% errors against 0.1%: {got:?}")
        };
        assert!(reason.starts_with("analysis of batch 3: "), "{reason}");
    }

    #[test]
    fn silence_is_never_a_pass_it_rolls_back_at_the_deadline() {
        let start = Some((counts(0, 0), counts(0, 0)));
        let quiet = (counts(3, 0), counts(10, 0));
        let got = judge(&j(), 1.0, 1, &look(start, &quiet.0, &quiet.1), 0, 10_000);
        assert!(matches!(got, Judgement::Look { .. }), "{got:?}");
        let Judgement::Fail(reason) =
            judge(&j(), 1.0, 1, &look(start, &quiet.0, &quiet.1), 0, 30_000)
        else {
            panic!("no data by the deadline fails")
        };
        assert_eq!(
            reason,
            "batch 1 could not be judged within 30s: 3 request(s) on the new release, 50 needed"
        );
    }

    #[test]
    fn counters_that_went_back_start_the_window_again() {
        let start = Some((counts(500, 0), counts(500, 0)));
        let (new, old) = (counts(10, 0), counts(600, 0));
        let got = judge(&j(), 1.0, 1, &look(start, &new, &old), 0, 20_000);
        assert_eq!(
            got,
            Judgement::Look {
                start: (counts(10, 0), counts(600, 0))
            }
        );
    }

    #[test]
    fn a_query_rule_without_data_holds_the_batch_then_rolls_back_saying_so() {
        let start = Some((counts(0, 0), counts(0, 0)));
        let (new, old) = (counts(2_000, 2), counts(6_000, 6));
        let waiting = Look {
            queries_waiting: true,
            ..look(start, &new, &old)
        };
        let got = judge(&j(), 1.0, 2, &waiting, 0, 10_000);
        assert!(matches!(got, Judgement::Look { .. }), "{got:?}");
        let Judgement::Fail(reason) = judge(&j(), 1.0, 2, &waiting, 0, 30_000) else {
            panic!("no query data by the deadline fails")
        };
        assert_eq!(
            reason,
            "batch 2 could not be judged within 30s: a metric query rule has had no data"
        );
    }

    #[test]
    fn a_count_rule_fails_a_batch_the_router_finds_healthy() {
        use crate::analysis::queries::{CountSeries, CountWindow};
        let start = Some((counts(0, 0), counts(0, 0)));
        let (new, old) = (counts(2_000, 2), counts(6_000, 6));
        let payments = [CountSeries {
            rule: "payments".into(),
            max_ratio: None,
            compare: true,
            windows: vec![CountWindow {
                errors: 100,
                total: 2_000,
                old_errors: 6,
                old_total: 6_000,
            }],
        }];
        let l = Look {
            counts: &payments,
            ..look(start, &new, &old)
        };
        let Judgement::Fail(reason) = judge(&j(), 1.0, 2, &l, 0, 2_000) else {
            panic!("5% of payments failing against 0.1%")
        };
        assert!(
            reason.starts_with("analysis of batch 2: query rule \"payments\": "),
            "{reason}"
        );
    }
}
