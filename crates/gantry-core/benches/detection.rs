//! Detection benchmark for the canary analysis, simulated in-process.
//!
//! Traffic: 200 requests/s, 10% to the canary (20/s), judged every second on
//! the counts since the canary started, with the default policy (the
//! standards' rules, alpha = 1%). A 60 s health baseline of stable comes first.
//! Latency model: 99% of requests take 5–20 ms, 1% take 20–40 ms. Both
//! releases answer 2% of requests with a 4xx (clients asking for what is not
//! there) unless a scenario says otherwise.
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
    }
}

/// Seconds until the analysis fails the canary and the rule that failed it,
/// or None within `horizon`.
fn rollout(seed: u64, canary: Release, horizon: u64) -> Option<(u64, RuleKind)> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let policy = AnalysisPolicy::default();
    let base = baseline(&mut rng);
    let limits = latency_limits(&policy, &base);
    let (mut c, mut s) = (Counts::default(), Counts::default());
    let per_canary = (RPS as f64 * CANARY_SHARE) as u64;
    for second in 1..=horizon {
        serve(&mut rng, canary, per_canary, &limits, &mut c);
        serve(&mut rng, HEALTHY, RPS - per_canary, &limits, &mut s);
        if let Verdict::Fail { rule, .. } = analyse(&policy, &base, &c, &s).verdict {
            return Some((second, rule));
        }
    }
    None
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn detection(name: &str, canary: Release, runs: u64, horizon: u64) {
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
}

fn main() {
    // `cargo test --benches` runs this with --bench absent: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let scale = if quick { 20 } else { 1 };
    println!("200 req/s, 10% canary, judged every second, default policy (alpha 1%)");
    detection(
        "errors 0.1% → 5%",
        Release {
            error_rate: 0.05,
            ..HEALTHY
        },
        1000 / scale,
        120,
    );
    detection(
        "errors 0.1% → 1%",
        Release {
            error_rate: 0.01,
            ..HEALTHY
        },
        1000 / scale,
        600,
    );
    detection(
        "latency: 5% of canary requests > 3× stable P99",
        Release {
            slow_fraction: 0.05,
            ..HEALTHY
        },
        1000 / scale,
        120,
    );
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
    detection(
        "no regression (false rollbacks), 180 s each",
        HEALTHY,
        10_000 / scale,
        180,
    );
}
