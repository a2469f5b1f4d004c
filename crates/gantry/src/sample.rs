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
    if let Some(text) = &s.errors_where_home_contains {
        let home = std::env::var("HOME").unwrap_or_default();
        if !text.split(',').any(|t| !t.is_empty() && home.contains(t)) {
            s.error_rate = None;
            s.client_error_rate = None;
            s.latency_ms = None;
            s.crash_after = None;
            s.unhealthy = None;
            s.warmup_ms = None;
        }
    }
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
        started: std::time::Instant::now(),
    });
    let router = axum::Router::new()
        .route("/", get(root))
        .route("/healthz", get(health))
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
    if steps_up(n, app.s.error_rate) {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("error from {version}\n"),
        )
    } else if steps_up(n, app.s.client_error_rate) {
        (StatusCode::NOT_FOUND, format!("not found in {version}\n"))
    } else {
        (StatusCode::OK, format!("hello from {version}\n"))
    }
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
