//! Each pool's counters: requests, answers by status class, errors and an
//! HDR latency histogram sharded by worker, and the figures `/stats` and
//! `/metrics` read from them.

use crate::latency::{encode, latency_histogram};
use crate::{PoolStats, SlowerThan, MAX_LATENCY_US};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub(super) struct PoolCounters {
    /// Attempts sent upstream (a retried request counts once per attempt).
    pub(super) requests: AtomicU64,
    /// 5xx answers and attempts that got no answer.
    pub(super) errors: AtomicU64,
    /// 4xx answers.
    pub(super) client_errors: AtomicU64,
    /// Answers by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    answers: [AtomicU64; 5],
    /// Attempts that got no answer (connection refused or broken).
    unanswered: AtomicU64,
    /// Sum of all recorded latencies, µs (the histogram keeps no sum).
    latency_sum_us: AtomicU64,
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

/// What `/metrics` reads of one pool.
pub(super) struct Snapshot {
    pub(super) answers: [u64; 5],
    pub(super) unanswered: u64,
    pub(super) latency_sum_us: u64,
    pub(super) latency: hdrhistogram::Histogram<u64>,
}

impl PoolCounters {
    pub(super) fn new() -> PoolCounters {
        PoolCounters {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            client_errors: AtomicU64::new(0),
            answers: Default::default(),
            unanswered: AtomicU64::new(0),
            latency_sum_us: AtomicU64::new(0),
            latency: (0..SHARDS)
                .map(|_| Mutex::new(latency_histogram(3)))
                .collect(),
        }
    }

    /// An upstream answered with `status` after `started`.
    pub(super) fn count_answer(&self, status: hyper::StatusCode, started: std::time::Instant) {
        let micros = (started.elapsed().as_micros().min(u64::MAX as u128) as u64).max(1);
        let shard = WORKER.with(|w| w.get()) % SHARDS;
        self.latency[shard]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .saturating_record(micros);
        self.latency_sum_us
            .fetch_add(micros.min(MAX_LATENCY_US), Ordering::Relaxed);
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.answers[class].fetch_add(1, Ordering::Relaxed);
        if status.is_server_error() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        } else if status.is_client_error() {
            self.client_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An attempt got no answer from its upstream.
    pub(super) fn count_unanswered(&self) {
        self.unanswered.fetch_add(1, Ordering::Relaxed);
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    fn merged_latency(&self) -> hdrhistogram::Histogram<u64> {
        let mut h = latency_histogram(3);
        for shard in &self.latency {
            // Same bounds everywhere, so adding cannot fail.
            let _ = h.add(&*shard.lock().unwrap_or_else(|p| p.into_inner()));
        }
        h
    }

    pub(super) fn snapshot(&self) -> Snapshot {
        Snapshot {
            // The histogram first: every answer in it is in the counts read after.
            latency: self.merged_latency(),
            answers: std::array::from_fn(|i| self.answers[i].load(Ordering::Relaxed)),
            unanswered: self.unanswered.load(Ordering::Relaxed),
            latency_sum_us: self.latency_sum_us.load(Ordering::Relaxed),
        }
    }

    /// The pool's figures; with `histogram`, its latency histogram too.
    pub(super) fn stats(&self, name: &str, limits_ms: &[f64], histogram: bool) -> PoolStats {
        let h = self.merged_latency();
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
            latency_histogram: histogram.then(|| encode(&h)),
        }
    }
}
