//! E-values: anytime-valid evidence against "the rate is at most p0"
//! (the canary analysis's statistics; the release reports a gate judges
//! are [`crate::evidence`]).
//!
//! Observations are Bernoulli events (a request that erred, a request that
//! was slow, an error that was the canary's). Under the null hypothesis each
//! is a success with probability at most `p0`. The evidence is a mixture
//! likelihood ratio: the Beta(1, 1) prior restricted to `[p0, 1]` mixes the
//! ratios `(θ/p0)^x ((1-θ)/(1-p0))^(n-x)` for every alternative `θ ≥ p0`.
//! Each such ratio is a supermartingale under any `θ ≤ p0`, and so is their
//! mixture: by Ville's inequality the chance that it *ever* reaches `1/α`
//! under the null is at most `α`, however often it is looked at. That is
//! what lets Gantry check every second without inflating false alarms.

use statrs::function::beta::{checked_beta_reg, ln_beta};

/// Prior shape; Beta(1, 1) puts equal weight on every alternative.
const PRIOR_A: f64 = 1.0;
const PRIOR_B: f64 = 1.0;

/// ln of the evidence after `successes` out of `trials` against `rate ≤ p0`.
pub fn log_evidence(successes: u64, trials: u64, p0: f64) -> f64 {
    debug_assert!(successes <= trials);
    if trials == 0 {
        return 0.0;
    }
    if p0 <= 0.0 {
        // Under "rate ≤ 0" a single success is impossible: infinite evidence.
        return if successes > 0 { f64::INFINITY } else { 0.0 };
    }
    if p0 >= 1.0 {
        return 0.0;
    }
    let (x, n) = (successes as f64, trials as f64);
    let (a, b) = (PRIOR_A + x, PRIOR_B + n - x);
    let mixed = ln_beta(a, b) + ln_upper_tail(a, b, p0);
    let prior = ln_beta(PRIOR_A, PRIOR_B) + ln_upper_tail(PRIOR_A, PRIOR_B, p0);
    let null = x * p0.ln() + (n - x) * (1.0 - p0).ln();
    mixed - prior - null
}

/// ln of `1 - I_p0(a, b)`: the prior mass above `p0`.
fn ln_upper_tail(a: f64, b: f64, p0: f64) -> f64 {
    // I_p0(a, b) = 1 - I_{1-p0}(b, a); the second form keeps precision when
    // the tail is tiny (strong evidence), where 1 - I would round to zero.
    match checked_beta_reg(b, a, 1.0 - p0) {
        Ok(tail) if tail > 0.0 => tail.ln(),
        _ => f64::NEG_INFINITY,
    }
}

/// The evidence itself (may be `inf`).
pub fn evidence(successes: u64, trials: u64, p0: f64) -> f64 {
    log_evidence(successes, trials, p0).exp()
}

/// Evidence that the rate is at least `p1` ("no better than p1"), by symmetry.
pub fn evidence_at_least(successes: u64, trials: u64, p1: f64) -> f64 {
    evidence(trials - successes, trials, 1.0 - p1)
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
        // With no events at all the mixture falls to exactly 1/(n+1).
        assert!((evidence(0, 1000, 0.1) - 1.0 / 1001.0).abs() < 1e-9);
        assert!(evidence(40, 100, 0.1) > evidence(30, 100, 0.1));
    }

    #[test]
    fn matches_a_direct_numerical_integral() {
        // ∫_{p0}^1 θ^x (1-θ)^(n-x) dθ / (1-p0) / (p0^x (1-p0)^(n-x)), by the midpoint rule.
        for &(x, n, p0) in &[
            (3u64, 10u64, 0.1f64),
            (7, 20, 0.25),
            (0, 5, 0.5),
            (12, 12, 0.3),
        ] {
            let steps = 200_000;
            let h = (1.0 - p0) / steps as f64;
            let integral: f64 = (0..steps)
                .map(|i| {
                    let t = p0 + (i as f64 + 0.5) * h;
                    t.powi(x as i32) * (1.0 - t).powi((n - x) as i32) * h
                })
                .sum();
            let direct =
                integral / (1.0 - p0) / (p0.powi(x as i32) * (1.0 - p0).powi((n - x) as i32));
            let ours = evidence(x, n, p0);
            assert!(
                (ours / direct - 1.0).abs() < 1e-4,
                "x={x} n={n} p0={p0}: {ours} vs {direct}"
            );
        }
    }

    #[test]
    fn strong_evidence_keeps_its_precision() {
        // The upper tail is ~1e-30 here; a naive 1 - I(p0) would give 0 and -inf.
        let e = log_evidence(60, 60, 0.3);
        assert!(e.is_finite() && e > 60.0, "{e}");
    }

    #[test]
    fn minimum_trials() {
        // At p0 = 1%, two successes in two trials already give ~3,300.
        assert_eq!(min_trials_to_reach(0.01, 100.0), 2);
        assert!(min_trials_to_reach(0.5, 700.0) > 5);
    }
}
