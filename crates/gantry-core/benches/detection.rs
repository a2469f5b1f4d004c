//! Detection benchmark for the canary analysis, simulated in-process.
//!
//! Traffic: 200 requests/s, 10% to the canary (20/s), judged every second on
//! the counts since the canary started, with the default policy (the
//! standards' rules, alpha = 1%). A 60 s health baseline of stable comes first.
//! Latency model: 99% of requests take 5–20 ms, 1% take 20–40 ms. Both
//! releases answer 2% of requests with a 4xx (clients asking for what is not
//! there) unless a scenario says otherwise.
//!
//! Below each scenario, the yardsticks on the same traffic (Wald's oracle,
//! Flagger, Argo Rollouts, Kayenta), as ratios to Gantry's figures.
//!
//! Run: `cargo bench -p gantry-core --bench detection` (figures in docs/benchmarks.md).

use gantry_core::analysis::{
    analyse, latency_limits, AnalysisPolicy, Baseline, Counts, LatencyLimits, RuleKind, Verdict,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const RPS: u64 = 200;
const CANARY_SHARE: f64 = 0.10;
const BASE_ERROR: f64 = 0.001;
const BASE_CLIENT_ERROR: f64 = 0.02;

#[derive(Clone, Copy)]
struct Release {
    error_rate: f64,
    /// Share of answers that are 4xx (among those that are not errors).
    client_error_rate: f64,
    /// Fraction of requests made slow (200 ms, far beyond 3× the stable P99).
    slow_fraction: f64,
}

const HEALTHY: Release = Release {
    error_rate: BASE_ERROR,
    client_error_rate: BASE_CLIENT_ERROR,
    slow_fraction: 0.0,
};

fn latency_ms(rng: &mut SmallRng, r: Release) -> f64 {
    if rng.random::<f64>() < r.slow_fraction {
        200.0
    } else if rng.random::<f64>() < 0.99 {
        rng.random_range(5.0..20.0)
    } else {
        rng.random_range(20.0..40.0)
    }
}

fn serve(rng: &mut SmallRng, r: Release, n: u64, limits: &LatencyLimits, c: &mut Counts) {
    for _ in 0..n {
        c.requests += 1;
        if rng.random::<f64>() < r.error_rate {
            c.errors += 1;
        } else if rng.random::<f64>() < r.client_error_rate {
            c.client_errors += 1;
        }
        let l = latency_ms(rng, r);
        c.over_p99_limit += u64::from(limits.p99_ms.is_some_and(|x| l > x));
        c.over_p50_limit += u64::from(limits.p50_ms.is_some_and(|x| l > x));
        c.over_compare_limit += u64::from(limits.compare_ms.is_some_and(|x| l > x));
    }
}

fn baseline(rng: &mut SmallRng) -> Baseline {
    let n = 60 * RPS;
    let mut lat: Vec<f64> = (0..n).map(|_| latency_ms(rng, HEALTHY)).collect();
    let errors = (0..n).filter(|_| rng.random::<f64>() < BASE_ERROR).count() as u64;
    lat.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| lat[((n as f64 - 1.0) * p) as usize];
    Baseline {
        requests: n,
        errors,
        p50_ms: q(0.50),
        p99_ms: q(0.99),
        queries: Default::default(),
    }
}

/// One rollout's simulated traffic, second by second: the same draws feed
/// Gantry and every yardstick.
struct Traffic {
    rng: SmallRng,
    base: Baseline,
    limits: LatencyLimits,
    canary: Release,
}

impl Traffic {
    fn new(seed: u64, canary: Release) -> Traffic {
        let mut rng = SmallRng::seed_from_u64(seed);
        let base = baseline(&mut rng);
        let limits = latency_limits(&AnalysisPolicy::default(), &base);
        Traffic {
            rng,
            base,
            limits,
            canary,
        }
    }

    /// The next second's (canary, stable) counts.
    fn second(&mut self) -> (Counts, Counts) {
        let per_canary = (RPS as f64 * CANARY_SHARE) as u64;
        let (mut c, mut s) = (Counts::default(), Counts::default());
        serve(&mut self.rng, self.canary, per_canary, &self.limits, &mut c);
        serve(
            &mut self.rng,
            HEALTHY,
            RPS - per_canary,
            &self.limits,
            &mut s,
        );
        (c, s)
    }
}

fn add(a: &mut Counts, b: &Counts) {
    a.requests += b.requests;
    a.errors += b.errors;
    a.client_errors += b.client_errors;
    a.over_p99_limit += b.over_p99_limit;
    a.over_p50_limit += b.over_p50_limit;
    a.over_compare_limit += b.over_compare_limit;
}

/// Seconds until the analysis fails the canary and the rule that failed it,
/// or None within `horizon`.
fn rollout(seed: u64, canary: Release, horizon: u64) -> Option<(u64, RuleKind)> {
    let policy = AnalysisPolicy::default();
    let mut traffic = Traffic::new(seed, canary);
    let (mut c, mut s) = (Counts::default(), Counts::default());
    for second in 1..=horizon {
        let (dc, ds) = traffic.second();
        add(&mut c, &dc);
        add(&mut s, &ds);
        if let Verdict::Fail { rule, .. } = analyse(&policy, &traffic.base, &c, &s).verdict {
            return Some((second, rule));
        }
    }
    None
}

/// The yardsticks, each at its documented defaults, judging the canary's
/// error rate and its share of requests slower than 3× the stable P99 (the
/// standards' P99 rule) on the same traffic.
#[derive(Clone, Copy, Debug)]
enum Yardstick {
    /// Wald's sequential test knowing the baseline (0.1%) and the canary's
    /// true rate, at alpha 1%: the bound no test can beat on average.
    WaldOracle,
    /// Flagger: metrics checked every minute (`interval: 1m`) against the
    /// request-success-rate threshold (99%) and a P99 threshold; rollback
    /// after `threshold: 5` failed checks.
    Flagger,
    /// Argo Rollouts: one measurement a minute, `failureLimit: 0`, so the
    /// first interval whose error rate is above 1% (or P99 above 3× stable)
    /// aborts.
    Argo,
    /// Kayenta's NetflixACAJudge: per-minute samples of the error rate (and of
    /// the slow share) for canary and stable, a Mann-Whitney U test at 98%
    /// confidence judged at the end of each 10-minute canary interval.
    Kayenta,
}

fn yardstick_rollout(y: Yardstick, seed: u64, canary: Release, horizon: u64) -> Option<u64> {
    let mut traffic = Traffic::new(seed, canary);
    let (mut minute_c, mut minute_s) = (Counts::default(), Counts::default());
    let mut failed_checks = 0;
    let (mut err_c, mut err_s, mut slow_c, mut slow_s) = (vec![], vec![], vec![], vec![]);
    let mut wald = 0.0f64;
    for second in 1..=horizon {
        let (dc, ds) = traffic.second();
        if let Yardstick::WaldOracle = y {
            // Known baseline and alternative for whichever excess the canary has.
            let (x, p1, p0) = if canary.slow_fraction > 0.0 {
                (dc.over_compare_limit, canary.slow_fraction, 1e-4)
            } else {
                (
                    dc.errors,
                    canary.error_rate.max(BASE_ERROR * 1.5),
                    BASE_ERROR,
                )
            };
            let n = dc.requests;
            wald += x as f64 * (p1 / p0).ln() + (n - x) as f64 * ((1.0 - p1) / (1.0 - p0)).ln();
            if wald >= 100f64.ln() {
                return Some(second);
            }
            continue;
        }
        add(&mut minute_c, &dc);
        add(&mut minute_s, &ds);
        if second % 60 != 0 {
            continue;
        }
        let rate = |x: u64, c: &Counts| x as f64 / c.requests.max(1) as f64;
        let bad_interval = rate(minute_c.errors, &minute_c) > 0.01
            || rate(minute_c.over_compare_limit, &minute_c) > 0.01;
        match y {
            Yardstick::WaldOracle => {}
            Yardstick::Flagger => {
                failed_checks += u32::from(bad_interval);
                if failed_checks >= 5 {
                    return Some(second);
                }
            }
            Yardstick::Argo => {
                if bad_interval {
                    return Some(second);
                }
            }
            Yardstick::Kayenta => {
                err_c.push(rate(minute_c.errors, &minute_c));
                err_s.push(rate(minute_s.errors, &minute_s));
                slow_c.push(rate(minute_c.over_compare_limit, &minute_c));
                slow_s.push(rate(minute_s.over_compare_limit, &minute_s));
                if second % 600 == 0
                    && (canary_higher(&err_c, &err_s) || canary_higher(&slow_c, &slow_s))
                {
                    return Some(second);
                }
            }
        }
        minute_c = Counts::default();
        minute_s = Counts::default();
    }
    None
}

/// Mann-Whitney U, normal approximation with the tie correction: is the
/// canary's sample higher than the control's at 98% confidence (two-sided,
/// as Kayenta's classifier, counted only when the canary is the higher)?
fn canary_higher(canary: &[f64], control: &[f64]) -> bool {
    use statrs::distribution::{ContinuousCDF, Normal};
    let (n1, n2) = (canary.len() as f64, control.len() as f64);
    let mut all: Vec<(f64, bool)> = canary
        .iter()
        .map(|&v| (v, true))
        .chain(control.iter().map(|&v| (v, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut rank_sum, mut ties) = (0.0, 0.0);
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        let rank = (i + j + 1) as f64 / 2.0;
        let t = (j - i) as f64;
        ties += t * t * t - t;
        rank_sum += rank * all[i..j].iter().filter(|x| x.1).count() as f64;
        i = j;
    }
    let u = rank_sum - n1 * (n1 + 1.0) / 2.0;
    let n = n1 + n2;
    let var = n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    if var <= 0.0 {
        return false;
    }
    let z = (u - n1 * n2 / 2.0) / var.sqrt();
    let p = 2.0 * (1.0 - Normal::standard().cdf(z.abs()));
    z > 0.0 && p < 0.02
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Each yardstick's p90 (or caught count) against Gantry's, on the first
/// `runs` seeds of the same traffic within `horizon`.
fn yardsticks(canary: Release, runs: u64, horizon: u64, gantry_p90: u64, gantry_caught: usize) {
    for y in [
        Yardstick::WaldOracle,
        Yardstick::Flagger,
        Yardstick::Argo,
        Yardstick::Kayenta,
    ] {
        let mut times: Vec<u64> = (0..runs)
            .filter_map(|seed| yardstick_rollout(y, seed, canary, horizon))
            .collect();
        times.sort_unstable();
        let caught = times.len();
        if canary.error_rate == BASE_ERROR && canary.slow_fraction == 0.0 {
            if let Yardstick::WaldOracle = y {
                continue; // knows there is nothing to find
            }
            let theirs = caught as f64 / runs as f64;
            let ours = gantry_caught as f64 / 10_000f64.max(runs as f64);
            println!(
                "{:<44} {y:?}: false rollbacks {caught} of {runs} = {:.2}% ({:.1}× Gantry's {:.2}%)",
                "",
                100.0 * theirs,
                if ours > 0.0 { theirs / ours } else { f64::NAN },
                100.0 * ours
            );
            continue;
        }
        let missed = runs as usize - caught;
        if missed * 10 > runs as usize {
            println!(
                "{:<44} {y:?}: caught {caught} of {runs} within {horizon}s: p90 beyond the horizon (> {:.0}× Gantry's p90)",
                "",
                horizon as f64 / gantry_p90.max(1) as f64
            );
        } else {
            let p90 = percentile(&times, 0.9);
            println!(
                "{:<44} {y:?}: caught {caught} of {runs}  p50 {:>4}s  p90 {p90:>4}s  = {:.1}× Gantry's p90",
                "",
                percentile(&times, 0.5),
                p90 as f64 / gantry_p90.max(1) as f64
            );
        }
    }
}

fn detection(name: &str, canary: Release, runs: u64, horizon: u64) -> (u64, usize) {
    let started = std::time::Instant::now();
    let mut times: Vec<u64> = Vec::new();
    let mut by_rule: Vec<(RuleKind, u64)> = Vec::new();
    let mut missed = 0;
    for seed in 0..runs {
        match rollout(seed, canary, horizon) {
            Some((t, rule)) => {
                times.push(t);
                match by_rule.iter_mut().find(|(r, _)| *r == rule) {
                    Some((_, n)) => *n += 1,
                    None => by_rule.push((rule, 1)),
                }
            }
            None => missed += 1,
        }
    }
    times.sort_unstable();
    let (p50, p90) = if times.is_empty() {
        (0, 0)
    } else {
        (percentile(&times, 0.5), percentile(&times, 0.9))
    };
    println!(
        "{name:<44} runs {runs:>6}  caught {:>6}  p50 {p50:>3}s  p90 {p90:>3}s  missed within {horizon}s: {missed}  ({:.1}s)",
        times.len(),
        started.elapsed().as_secs_f64()
    );
    let rules: Vec<String> = by_rule.iter().map(|(r, n)| format!("{r:?} {n}")).collect();
    println!("{:<44} caught by: {}", "", rules.join(", "));
    (p90, times.len())
}

fn main() {
    // `cargo test --benches` runs this with --bench absent: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let scale = if quick { 20 } else { 1 };
    println!("200 req/s, 10% canary, judged every second, default policy (alpha 1%)");
    // Yardsticks on the first 200 seeds (10 quick), with 30 minutes to act.
    let (y_runs, y_horizon) = (200 / scale, 1800);
    for (name, canary, horizon) in [
        (
            "errors 0.1% → 5%",
            Release {
                error_rate: 0.05,
                ..HEALTHY
            },
            120,
        ),
        (
            "errors 0.1% → 1%",
            Release {
                error_rate: 0.01,
                ..HEALTHY
            },
            600,
        ),
        (
            "latency: 5% of canary requests > 3× stable P99",
            Release {
                slow_fraction: 0.05,
                ..HEALTHY
            },
            120,
        ),
    ] {
        let (p90, _) = detection(name, canary, 1000 / scale, horizon);
        yardsticks(canary, y_runs, y_horizon, p90, 0);
    }
    detection(
        "4xx 2% → 20% (a fifth answered 404)",
        Release {
            client_error_rate: 0.20,
            ..HEALTHY
        },
        1000 / scale,
        120,
    );
    detection(
        "4xx 2% → 4%",
        Release {
            client_error_rate: 0.04,
            ..HEALTHY
        },
        1000 / scale,
        600,
    );
    let (_, false_rollbacks) = detection(
        "no regression (false rollbacks), 180 s each",
        HEALTHY,
        10_000 / scale,
        180,
    );
    // The yardsticks' false rollbacks over 30-minute rollouts (their checks
    // come once a minute, so 180 s would barely test them).
    yardsticks(HEALTHY, 1000 / scale, 1800, 0, false_rollbacks);
}
