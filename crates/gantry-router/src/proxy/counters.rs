//! Each pool's counters: requests, errors, 4xx answers and an HDR latency
//! histogram sharded by worker, and the figures `/stats` reads from them.

use crate::{PoolStats, SlowerThan};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub(super) struct PoolCounters {
    pub(super) requests: AtomicU64,
    /// 5xx answers and attempts that got no answer.
    pub(super) errors: AtomicU64,
    /// 4xx answers.
    pub(super) client_errors: AtomicU64,
    /// Microseconds to the response head; HDR, 3 significant digits. One
    /// shard per worker so workers never wait on each other; merged on read.
    latency: Vec<Mutex<hdrhistogram::Histogram<u64>>>,
}

/// Histogram shards per pool: workers beyond this share shards.
const SHARDS: usize = 16;

thread_local! {
    /// This thread's worker number, which picks its histogram shard.
    pub(super) static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn new_histogram() -> hdrhistogram::Histogram<u64> {
    // 1 µs to 1 h at 3 significant digits; longer answers are clamped to 1 h.
    // (An auto-resizing histogram would clamp everything: saturating_record does not resize.)
    hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static bounds are valid")
}

impl PoolCounters {
    pub(super) fn new() -> PoolCounters {
        PoolCounters {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            client_errors: AtomicU64::new(0),
            latency: (0..SHARDS).map(|_| Mutex::new(new_histogram())).collect(),
        }
    }

    pub(super) fn record_latency(&self, started: std::time::Instant) {
        let micros = started.elapsed().as_micros().min(u64::MAX as u128) as u64;
        let shard = WORKER.with(|w| w.get()) % SHARDS;
        self.latency[shard]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .saturating_record(micros.max(1));
    }

    pub(super) fn stats(&self, name: &str, limits_ms: &[f64]) -> PoolStats {
        let mut h = new_histogram();
        for shard in &self.latency {
            // Same bounds everywhere, so adding cannot fail.
            let _ = h.add(&*shard.lock().unwrap_or_else(|p| p.into_inner()));
        }
        let ms = |us: u64| us as f64 / 1000.0;
        PoolStats {
            name: name.to_owned(),
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            client_errors: self.client_errors.load(Ordering::Relaxed),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            slower_than: limits_ms
                .iter()
                .map(|&limit_ms| {
                    let limit_us = (limit_ms * 1000.0).max(0.0) as u64;
                    // Values within the histogram's precision of the limit count as not slower.
                    let at_most = h.count_between(0, limit_us);
                    SlowerThan {
                        limit_ms,
                        requests: h.len().saturating_sub(at_most),
                    }
                })
                .collect(),
        }
    }
}
