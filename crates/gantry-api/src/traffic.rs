//! What a router counts, as its admin endpoint and the controller's
//! `/traffic` send it.

use serde::{Deserialize, Serialize};

/// What one pool served since the router started. Counts only grow, so the
/// difference of two snapshots is what happened in between.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PoolStats {
    pub name: String,
    pub requests: u64,
    /// 5xx answers and failures to reach an upstream.
    pub errors: u64,
    /// 4xx answers from upstreams (not in `errors`). Absent from a router
    /// older than this field: none counted.
    #[serde(default)]
    pub client_errors: u64,
    /// Latency (time to the upstream's response head) of answered requests.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// For each limit asked for (`/stats?above_ms=…`), answered requests slower than it.
    pub slower_than: Vec<SlowerThan>,
    /// The latency histogram itself, when asked for (`/stats?histogram=1`)
    /// and the pool is in the routing in force: what a fleet merges to get
    /// its true percentiles. Absent otherwise, and from older routers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_histogram: Option<LatencyHistogram>,
}

/// The most buckets a [`LatencyHistogram`] carries. A router coarsens its
/// histogram (3 significant digits, then 2, then 1) until it fits; at 1
/// digit the whole 1 µs – 1 h range has fewer than this many buckets.
pub const MAX_LATENCY_BUCKETS: usize = 512;
/// The highest latency a router records, in microseconds (1 h): longer
/// answers are clamped to it.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A pool's latency histogram (microseconds to the response head) as its
/// non-empty HDR buckets: each the highest value the bucket stands for and
/// how many answers fell in it, values ascending. Re-recording the pairs
/// into an HDR histogram of the same precision gives back the same
/// percentiles, so histograms from many routers merge exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LatencyHistogram {
    /// Significant decimal digits the buckets were kept at (1 to 3).
    pub significant_digits: u8,
    /// `[value_us, count]` pairs.
    pub buckets: Vec<(u64, u64)>,
}

impl LatencyHistogram {
    /// Checks what a router sent before anything uses it: at most
    /// [`MAX_LATENCY_BUCKETS`] buckets, values within 1..=[`MAX_LATENCY_US`]
    /// and strictly ascending, counts that add up without overflow. The
    /// error names the field.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=3).contains(&self.significant_digits) {
            return Err(format!(
                "latency_histogram.significant_digits: {} is not within 1..=3",
                self.significant_digits
            ));
        }
        if self.buckets.len() > MAX_LATENCY_BUCKETS {
            return Err(format!(
                "latency_histogram.buckets: {} items, at most {MAX_LATENCY_BUCKETS} allowed",
                self.buckets.len()
            ));
        }
        let mut previous = 0u64;
        let mut total = 0u64;
        for &(value, count) in &self.buckets {
            if value == 0 || value > MAX_LATENCY_US {
                return Err(format!(
                    "latency_histogram.buckets: value {value} µs is not within 1..={MAX_LATENCY_US}"
                ));
            }
            if value <= previous {
                return Err(format!(
                    "latency_histogram.buckets: value {value} µs does not follow {previous} in ascending order"
                ));
            }
            previous = value;
            total = total
                .checked_add(count)
                .ok_or("latency_histogram.buckets: the counts overflow 64 bits")?;
        }
        Ok(())
    }

    /// Answers counted in all buckets.
    pub fn total(&self) -> u64 {
        self.buckets.iter().map(|&(_, c)| c).sum()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SlowerThan {
    pub limit_ms: f64,
    pub requests: u64,
}
