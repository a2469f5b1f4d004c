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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SlowerThan {
    pub limit_ms: f64,
    pub requests: u64,
}
