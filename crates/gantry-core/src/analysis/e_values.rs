//! E-values: anytime-valid evidence against "the rate is at most p0"
//! (the canary analysis's statistics; the release reports a gate judges
//! are [`crate::evidence`]).
//!
//! Observations are Bernoulli events (a request that erred, a request that
//! was slow, an error that was the canary's), in stretches that each have
//! their own null rate `p0` (a live comparison's null is the canary's share
//! of traffic, which changes from one canary step to the next). Under the
//! null hypothesis each event is a success with probability at most its
//! stretch's `p0`.
//!
//! The evidence is a mixture of likelihood ratios over alternatives that
//! raise the *odds* of a success by a factor `ψ > 1`, the same factor in every
//! stretch: `θ = ψ p0 / (1 − p0 + ψ p0)`, ratio `(θ/p0)^x ((1−θ)/(1−p0))^(n−x)`.
//! For each `ψ`, the product of the ratios is a supermartingale under any
//! rate at or below the null's, whatever the stretches and however they were
//! chosen, and so is any mixture of them: by Ville's inequality the chance
//! that it *ever* reaches `1/α` under the null is at most `α`, however often
//! it is looked at. That is what lets Gantry check every second without
//! inflating false alarms.
//!
//! The mixture is discrete, equal weights on odds ratios spaced evenly on a
//! log scale from [`MIN_ODDS_RATIO`] (the smallest excess the standards call
//! a regression, +50%) to [`MAX_ODDS_RATIO`]: every effect size from "a
//! little worse" to "all of them" gets the same prior weight, where a flat
//! prior on the rate would spend almost all of it on rates far above a 1%
//! null. A finite sum is exactly a mixture, so no numerical integration can
//! make the test anti-conservative.

/// The smallest odds ratio the mixture bets on: +50%, the standards' relative margin.
pub const MIN_ODDS_RATIO: f64 = 1.5;
/// The largest: a rate hundreds of times the null's (the benchmark: 1.5–300 over 12
/// points catches a tenfold error rate sooner than 1.5–10,000 over 24, and
/// a fiftyfold one as soon).
pub const MAX_ODDS_RATIO: f64 = 300.0;
/// Points on the log-spaced grid between the two.
const GRID_POINTS: usize = 12;

/// One stretch of observations under one null rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stretch {
    pub successes: u64,
    pub trials: u64,
    pub p0: f64,
}

fn odds_ratios() -> impl Iterator<Item = f64> {
    let (lo, hi) = (MIN_ODDS_RATIO.ln(), MAX_ODDS_RATIO.ln());
    (0..GRID_POINTS).map(move |i| (lo + (hi - lo) * i as f64 / (GRID_POINTS - 1) as f64).exp())
}

/// ln of the likelihood ratio of one stretch at odds ratio `psi`.
fn ln_ratio(s: &Stretch, psi: f64) -> f64 {
    if s.trials == 0 || s.p0 >= 1.0 {
        return 0.0;
    }
    if s.p0 <= 0.0 {
        // Under "rate ≤ 0" a single success is impossible: infinite evidence.
        return if s.successes > 0 { f64::INFINITY } else { 0.0 };
    }
    let p = s.p0;
    let theta = psi * p / (1.0 - p + psi * p);
    let (x, n) = (s.successes as f64, s.trials as f64);
    x * (theta / p).ln() + (n - x) * ((1.0 - theta) / (1.0 - p)).ln()
}

/// ln of the evidence after every stretch, against "each stretch's rate ≤ its p0".
pub fn log_evidence_over(stretches: &[Stretch]) -> f64 {
    let logs: Vec<f64> = odds_ratios()
        .map(|psi| stretches.iter().map(|s| ln_ratio(s, psi)).sum())
        .collect();
    let top = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !top.is_finite() {
        return top;
    }
    let sum: f64 = logs.iter().map(|l| (l - top).exp()).sum();
    top + (sum / GRID_POINTS as f64).ln()
}

/// ln of the evidence after `successes` out of `trials` against `rate ≤ p0`.
pub fn log_evidence(successes: u64, trials: u64, p0: f64) -> f64 {
    debug_assert!(successes <= trials);
    log_evidence_over(&[Stretch {
        successes,
        trials,
        p0,
    }])
}

/// The evidence itself (may be `inf`).
pub fn evidence(successes: u64, trials: u64, p0: f64) -> f64 {
    log_evidence(successes, trials, p0).exp()
}

/// Evidence over several stretches (may be `inf`).
pub fn evidence_over(stretches: &[Stretch]) -> f64 {
    log_evidence_over(stretches).exp()
}

/// Evidence that the rate is at least `p1` ("no better than p1"), by symmetry.
pub fn evidence_at_least(successes: u64, trials: u64, p1: f64) -> f64 {
    evidence(trials - successes, trials, 1.0 - p1)
}

/// An anytime-valid upper confidence bound of the rate after `successes` of
/// `trials`: the rates `q` that the evidence against "rate ≥ q" has not yet
/// ruled out at level `alpha` form a confidence sequence, and this is its top.
pub fn upper_confidence(successes: u64, trials: u64, alpha: f64) -> f64 {
    if trials == 0 {
        return 1.0;
    }
    let target = (1.0 / alpha).ln();
    let ruled_out = |q: f64| log_evidence(trials - successes, trials, 1.0 - q) >= target;
    let (mut lo, mut hi) = (successes as f64 / trials as f64, 1.0);
    if !ruled_out(hi - 1e-12) {
        return 1.0;
    }
    for _ in 0..40 {
        let mid = 0.5 * (lo + hi);
        if ruled_out(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// The matching lower bound: the rates below it are ruled out.
pub fn lower_confidence(successes: u64, trials: u64, alpha: f64) -> f64 {
    1.0 - upper_confidence(trials - successes, trials, alpha)
}

/// The fewest trials, all successes, that could reach `threshold`: below
/// this, a test cannot fire whatever happens, so it has "not enough data".
pub fn min_trials_to_reach(p0: f64, threshold: f64) -> u64 {
    let target = threshold.ln();
    (1..=100_000)
        .find(|n| log_evidence(*n, *n, p0) >= target)
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_data_is_no_evidence() {
        assert_eq!(evidence(0, 0, 0.1), 1.0);
    }

    #[test]
    fn evidence_grows_with_excess_and_shrinks_without() {
        // 10% null; 30 of 100 is far above it, 10 of 100 is not.
        assert!(evidence(30, 100, 0.1) > 1e4);
        assert!(evidence(10, 100, 0.1) < 1.0);
        assert!(evidence(0, 1000, 0.1) < 1e-3);
        assert!(evidence(40, 100, 0.1) > evidence(30, 100, 0.1));
    }

    #[test]
    fn matches_the_mixture_written_out() {
        // The equal-weight average of (θ/p0)^x ((1-θ)/(1-p0))^(n-x) over the grid.
        for &(x, n, p0) in &[
            (3u64, 10u64, 0.1f64),
            (7, 20, 0.25),
            (0, 5, 0.5),
            (12, 12, 0.3),
        ] {
            let direct: f64 = odds_ratios()
                .map(|psi| {
                    let t = psi * p0 / (1.0 - p0 + psi * p0);
                    (t / p0).powi(x as i32) * ((1.0 - t) / (1.0 - p0)).powi((n - x) as i32)
                })
                .sum::<f64>()
                / GRID_POINTS as f64;
            let ours = evidence(x, n, p0);
            assert!(
                (ours / direct - 1.0).abs() < 1e-9,
                "x={x} n={n} p0={p0}: {ours} vs {direct}"
            );
        }
    }

    #[test]
    fn stretches_with_one_null_add_up_to_one_stretch() {
        let split = [
            Stretch {
                successes: 2,
                trials: 40,
                p0: 0.02,
            },
            Stretch {
                successes: 5,
                trials: 60,
                p0: 0.02,
            },
        ];
        let whole = log_evidence(7, 100, 0.02);
        assert!((log_evidence_over(&split) - whole).abs() < 1e-9);
    }

    #[test]
    fn strong_evidence_keeps_its_precision() {
        let e = log_evidence(600, 600, 0.3);
        assert!(e.is_finite() && e > 600.0, "{e}");
    }

    #[test]
    fn confidence_bounds_hold_the_rate_and_narrow_with_data() {
        assert_eq!(upper_confidence(0, 0, 0.01), 1.0);
        let (u1, u2) = (
            upper_confidence(2, 2_000, 0.01),
            upper_confidence(20, 20_000, 0.01),
        );
        assert!(u1 > 0.001 && u2 > 0.001 && u2 < u1, "{u1} {u2}");
        assert!(u2 < 0.003, "{u2}");
        let l = lower_confidence(20, 20_000, 0.01);
        assert!(l > 0.0 && l < 0.001, "{l}");
        assert_eq!(lower_confidence(0, 20_000, 0.01), 0.0);
        // The bound is where the evidence against "rate ≥ u" reaches 1/alpha.
        let at = log_evidence(20_000 - 20, 20_000, 1.0 - u2);
        assert!((at - 100f64.ln()).abs() < 1e-6, "{at}");
    }

    #[test]
    fn minimum_trials() {
        // At p0 = 1%, two successes in two trials already give well over 100.
        assert_eq!(min_trials_to_reach(0.01, 100.0), 2);
        assert!(min_trials_to_reach(0.5, 700.0) > 5);
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;
        use rand::rngs::SmallRng;
        use rand::{Rng, SeedableRng};

        fn stretch() -> impl Strategy<Value = Stretch> {
            (0u64..40, 0u64..40, 0.001f64..0.9).prop_map(|(x, extra, p0)| Stretch {
                successes: x,
                trials: x + extra,
                p0,
            })
        }

        proptest! {
            /// The supermartingale step, exactly: after any history of
            /// stretches (any schedule, any nulls), one more observation under
            /// any null p0 whose true rate is at most p0 does not raise the
            /// expected evidence.
            #[test]
            fn the_evidence_is_a_supermartingale_under_the_null(
                history in proptest::collection::vec(stretch(), 0..6),
                p0 in 0.001f64..0.9,
                below in 0.0f64..=1.0,
            ) {
                let rate = p0 * below;
                let now = evidence_over(&history);
                let next = |success: bool| {
                    let mut h = history.clone();
                    h.push(Stretch { successes: u64::from(success), trials: 1, p0 });
                    evidence_over(&h)
                };
                let expected = rate * next(true) + (1.0 - rate) * next(false);
                prop_assert!(expected <= now * (1.0 + 1e-9), "{expected} > {now}");
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(12))]

            /// Ville's inequality in practice: looked at after every batch of
            /// a random schedule, with the null rate changing between batches,
            /// a process whose rate sits at its null reaches 1/alpha in at most
            /// about alpha of the runs.
            #[test]
            fn the_false_alarm_bound_holds_for_random_schedules(seed in 0u64..1_000) {
                let mut rng = SmallRng::seed_from_u64(seed);
                let alpha = 0.1;
                let runs = 400;
                let mut alarms = 0;
                for _ in 0..runs {
                    let mut h: Vec<Stretch> = Vec::new();
                    for _look in 0..rng.random_range(1..60) {
                        let p0 = rng.random_range(0.005..0.6);
                        let trials = rng.random_range(1..50);
                        let successes = (0..trials).filter(|_| rng.random::<f64>() < p0).count() as u64;
                        h.push(Stretch { successes, trials, p0 });
                        if evidence_over(&h) >= 1.0 / alpha {
                            alarms += 1;
                            break;
                        }
                    }
                }
                // At most alpha·runs = 40 in expectation of the bound; allow
                // binomial noise (sd ≈ 6), far below what a broken test gives.
                prop_assert!(alarms <= 60, "{alarms} of {runs}");
            }
        }
    }
}
