//! The sample service used by the demo and the tests: a tiny HTTP server
//! whose version, error rates, latency and crash point are set by flags or by
//! a JSON settings file shipped inside its release.

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Default, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct SampleSettings {
    /// Version reported in every answer.
    #[arg(long = "app-version")]
    pub version: Option<String>,
    /// Fraction of requests to / answered with HTTP 500, 0.0 to 1.0.
    #[arg(long)]
    pub error_rate: Option<f64>,
    /// Fraction of requests to / answered with HTTP 404, 0.0 to 1.0 (a
    /// release that lost a route).
    #[arg(long)]
    pub client_error_rate: Option<f64>,
    /// Added latency per request to /, in milliseconds.
    #[arg(long)]
    pub latency_ms: Option<u64>,
    /// Exit with status 3 after this many requests to /.
    #[arg(long)]
    pub crash_after: Option<u64>,
    /// Answer /healthz with 503.
    #[arg(long)]
    pub unhealthy: Option<bool>,
    /// Answer /healthz with 503 for this long after start, as a service
    /// loading a cache does.
    #[arg(long)]
    pub warmup_ms: Option<u64>,
    /// Apply the faults set here (error rates, latency, crash, unhealthy,
    /// warm-up) only where `$HOME` contains one of these comma-separated
    /// texts: a release that fails on some hosts of a lab fleet only (each
    /// host's home names it).
    #[arg(long)]
    pub errors_where_home_contains: Option<String>,
    /// Draw each request's error (and 404) independently at its rate,
    /// instead of the even spacing: several instances' errors are then
    /// independent, as a real fault's are, and not all at the same request
    /// counts (which would hide how much faster a fleet's summed counts
    /// show a fault).
    #[arg(long)]
    pub random_errors: Option<bool>,
    /// Answer without errors (5xx and 404) for this long after start: a
    /// regression that shows only once the release has run a while.
    #[arg(long)]
    pub errors_after_ms: Option<u64>,
    /// The depth of its work queue, a gauge on `/metrics` (default 3): a
    /// release whose queue backs up.
    #[arg(long)]
    pub queue_depth: Option<f64>,
    /// The share of payments (each request to `/` is one) that fail while
    /// the request still answers 200: a business failure the router cannot
    /// see, counted on `/metrics` (`sample_payments_failed_total` of
    /// `sample_payments_total`) for a count rule.
    #[arg(long)]
    pub payment_failure_rate: Option<f64>,
    /// Threads that spin on the CPU for as long as the service runs (at
    /// most 4): a release that burns CPU, for the resource rules.
    #[arg(long)]
    pub burn_cpu_threads: Option<u32>,
    /// Mebibytes allocated and touched at start, and held (at most 4096):
    /// a release that needs more memory, for the resource rules.
    #[arg(long)]
    pub hold_memory_mb: Option<u64>,
    /// Write a line at ERROR level to stderr for each HTTP 500 it answers:
    /// a release whose errors show in its output, for the ERROR alert.
    #[arg(long)]
    pub log_errors: Option<bool>,
}

#[derive(Debug, clap::Args)]
pub struct SampleArgs {
    #[arg(long, env = "PORT")]
    pub port: u16,
    /// JSON file with the settings below; flags override it.
    #[arg(long)]
    pub settings: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub flags: SampleSettings,
}

struct App {
    s: SampleSettings,
    served: AtomicU64,
    payments_failed: AtomicU64,
    started: std::time::Instant,
}

pub async fn run(args: SampleArgs) -> Result<()> {
    let mut s: SampleSettings = match &args.settings {
        Some(path) => serde_json::from_slice(
            &std::fs::read(path)
                .with_context(|| format!("cannot read settings {}", path.display()))?,
        )
        .with_context(|| format!("settings {} are not valid", path.display()))?,
        None => SampleSettings::default(),
    };
    let f = args.flags;
    s.version = f.version.or(s.version);
    s.error_rate = f.error_rate.or(s.error_rate);
    s.client_error_rate = f.client_error_rate.or(s.client_error_rate);
    s.latency_ms = f.latency_ms.or(s.latency_ms);
    s.crash_after = f.crash_after.or(s.crash_after);
    s.unhealthy = f.unhealthy.or(s.unhealthy);
    s.warmup_ms = f.warmup_ms.or(s.warmup_ms);
    s.errors_where_home_contains = f
        .errors_where_home_contains
        .or(s.errors_where_home_contains);
    s.random_errors = f.random_errors.or(s.random_errors);
    s.errors_after_ms = f.errors_after_ms.or(s.errors_after_ms);
    s.queue_depth = f.queue_depth.or(s.queue_depth);
    s.payment_failure_rate = f.payment_failure_rate.or(s.payment_failure_rate);
    s.burn_cpu_threads = f.burn_cpu_threads.or(s.burn_cpu_threads);
    s.hold_memory_mb = f.hold_memory_mb.or(s.hold_memory_mb);
    s.log_errors = f.log_errors.or(s.log_errors);
    if let Some(text) = &s.errors_where_home_contains {
        let home = std::env::var("HOME").unwrap_or_default();
        if !text.split(',').any(|t| !t.is_empty() && home.contains(t)) {
            s.error_rate = None;
            s.client_error_rate = None;
            s.latency_ms = None;
            s.crash_after = None;
            s.unhealthy = None;
            s.warmup_ms = None;
            s.burn_cpu_threads = None;
            s.hold_memory_mb = None;
        }
    }
    let burners = s.burn_cpu_threads.unwrap_or(0);
    anyhow::ensure!(
        burners <= 4,
        "--burn-cpu-threads must be at most 4, got {burners}"
    );
    let held_mb = s.hold_memory_mb.unwrap_or(0);
    anyhow::ensure!(
        held_mb <= 4096,
        "--hold-memory-mb must be at most 4096, got {held_mb}"
    );
    for _ in 0..burners {
        // Ends with the process (the instance is stopped at the end anyway).
        std::thread::spawn(|| {
            let mut x = 1u64;
            loop {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        });
    }
    // Touched, so it is resident, not only reserved.
    let held: Vec<u8> = vec![1u8; (held_mb as usize) << 20];
    std::hint::black_box(&held);
    for (flag, rate) in [
        ("--error-rate", s.error_rate),
        ("--client-error-rate", s.client_error_rate),
    ] {
        if let Some(r) = rate {
            anyhow::ensure!(
                (0.0..=1.0).contains(&r),
                "{flag} must be between 0 and 1, got {r}"
            );
        }
    }
    let app = Arc::new(App {
        s,
        served: AtomicU64::new(0),
        payments_failed: AtomicU64::new(0),
        started: std::time::Instant::now(),
    });
    let router = axum::Router::new()
        .route("/", get(root))
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .with_state(app.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))?;
    eprintln!(
        "sample service {} listening on 127.0.0.1:{}",
        app.s.version.as_deref().unwrap_or("?"),
        args.port
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("can install a SIGTERM handler");
            term.recv().await;
            eprintln!("SIGTERM: finishing in-flight requests");
        })
        .await?;
    drop(held);
    Ok(())
}

async fn root(State(app): State<Arc<App>>) -> impl IntoResponse {
    let n = app.served.fetch_add(1, Ordering::Relaxed) + 1;
    if let Some(limit) = app.s.crash_after {
        if n > limit {
            eprintln!("crash-after {limit} reached: exiting");
            std::process::exit(3);
        }
    }
    if let Some(ms) = app.s.latency_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let version = app.s.version.clone().unwrap_or_else(|| "unknown".into());
    let random = app.s.random_errors == Some(true);
    if picked(n, app.s.payment_failure_rate, random) {
        app.payments_failed.fetch_add(1, Ordering::Relaxed);
    }
    let erring = app
        .s
        .errors_after_ms
        .is_none_or(|ms| app.started.elapsed() >= Duration::from_millis(ms));
    if erring && picked(n, app.s.error_rate, random) {
        if app.s.log_errors == Some(true) {
            eprintln!("ERROR request {n} failed: injected fault in {version}");
        }
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("error from {version}\n"),
        )
    } else if erring && picked(n, app.s.client_error_rate, random) {
        (StatusCode::NOT_FOUND, format!("not found in {version}\n"))
    } else {
        (StatusCode::OK, format!("hello from {version}\n"))
    }
}

/// A business counter and a queue gauge in Prometheus' text format, as a
/// real service exports them.
async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    let version = app.s.version.clone().unwrap_or_else(|| "unknown".into());
    let served = app.served.load(Ordering::Relaxed);
    let depth = app.s.queue_depth.unwrap_or(3.0);
    let failed = app.payments_failed.load(Ordering::Relaxed);
    (
        [("content-type", "text/plain; version=0.0.4")],
        format!(
            "# HELP sample_orders_total Orders taken (requests to /).\n# TYPE sample_orders_total counter\nsample_orders_total{{version=\"{version}\"}} {served}\n# HELP sample_queue_depth Jobs waiting in the work queue.\n# TYPE sample_queue_depth gauge\nsample_queue_depth{{version=\"{version}\"}} {depth}\n# HELP sample_payments_total Payments attempted (requests to /).\n# TYPE sample_payments_total counter\nsample_payments_total{{version=\"{version}\"}} {served}\n# HELP sample_payments_failed_total Payments that failed, though the request answered.\n# TYPE sample_payments_failed_total counter\nsample_payments_failed_total{{version=\"{version}\"}} {failed}\n"
        ),
    )
}

/// Whether request `n` fails: evenly spaced, or drawn at random.
fn picked(n: u64, rate: Option<f64>, random: bool) -> bool {
    if random {
        draw(rate.unwrap_or(0.0))
    } else {
        steps_up(n, rate)
    }
}

/// True with probability `rate`, from the OS's random source.
fn draw(rate: f64) -> bool {
    let u = getrandom::u64().expect("the OS random source is available");
    // 53 random bits as a fraction in [0, 1).
    ((u >> 11) as f64) / ((1u64 << 53) as f64) < rate
}

/// Deterministic spacing: request `n` is picked when `floor(n * rate)` steps up.
fn steps_up(n: u64, rate: Option<f64>) -> bool {
    let rate = rate.unwrap_or(0.0);
    ((n as f64) * rate).floor() > (((n - 1) as f64) * rate).floor()
}

async fn health(State(app): State<Arc<App>>) -> impl IntoResponse {
    let warming = app
        .s
        .warmup_ms
        .is_some_and(|ms| app.started.elapsed() < Duration::from_millis(ms));
    if warming {
        (StatusCode::SERVICE_UNAVAILABLE, "warming up\n")
    } else if app.s.unhealthy == Some(true) {
        (StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_errors_keep_the_rate_and_are_not_evenly_spaced() {
        let n = 100_000;
        let hits = (1..=n).filter(|&i| picked(i, Some(0.05), true)).count();
        // 5,000 expected; the standard deviation is ~69.
        assert!((4_600..=5_400).contains(&hits), "{hits} of {n}");
        // Evenly spaced, the first 19 requests never fail; drawn, a fifth
        // of 1,000 instances' first 19 requests hold at least one error
        // with near certainty (1 - 0.95^19 = 62% each).
        assert!(!(1..20).any(|i| picked(i, Some(0.05), false)));
        let early = (0..1_000)
            .filter(|_| (1..20).any(|i| picked(i, Some(0.05), true)))
            .count();
        assert!(early > 500, "{early} of 1000");
        assert!(!(1..=1_000).any(|i| picked(i, Some(0.0), true)));
        assert!((1..=1_000).all(|i| picked(i, Some(1.0), true)));
    }
}
