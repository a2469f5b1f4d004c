//! The data plane: a reverse proxy that carries an environment's user
//! traffic to the instances of one or more release pools, by weight.
//!
//! It runs as its own process (`gantry router`), apart from the controller:
//! it writes every configuration it accepts to disk before acknowledging it,
//! starts from that file, and keeps serving if the controller dies. The
//! controller changes it through a small admin API on loopback, guarded by a
//! bearer token. A configuration change swaps one `Arc`, so requests in
//! flight finish on the routing they started with.

pub mod access_log;
pub mod latency;
pub mod listener;
mod proxy;

pub use gantry_api::traffic::{
    LatencyHistogram, PoolStats, SlowerThan, MAX_LATENCY_BUCKETS, MAX_LATENCY_US,
};
pub use proxy::{serve, RouterOptions};

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;

/// Where traffic goes. `generation` only ever increases.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Routing {
    pub generation: u64,
    /// Oldest release first: with sticky assignment, the last pool takes
    /// the top of the hash range, so a user on the newest release stays on
    /// it while its weight grows.
    pub pools: Vec<Pool>,
    #[serde(default)]
    pub affinity: Option<Affinity>,
}

/// How one user keeps to one release: requests carrying the same key go to
/// the same pool for as long as the weights do not move it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "by", content = "name", rename_all = "snake_case")]
pub enum Affinity {
    /// A cookie the router sets (a random id) on a user's first answer.
    Cookie(String),
    /// A header clients send, e.g. a user id. Requests without it are spread by weight.
    Header(String),
}

/// The instances of one release, and the share of traffic they get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Pool {
    /// Usually the release version.
    pub name: String,
    /// Relative weight; pools with weight 0 get no new requests.
    pub weight: u32,
    pub upstreams: Vec<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("pool {0:?} has weight but no upstreams")]
    EmptyPool(String),
    #[error("pool names must be unique; {0:?} appears twice")]
    DuplicatePool(String),
}

impl Routing {
    pub fn validate(&self) -> Result<(), RoutingError> {
        for (n, p) in self.pools.iter().enumerate() {
            if p.weight > 0 && p.upstreams.is_empty() {
                return Err(RoutingError::EmptyPool(p.name.clone()));
            }
            if self.pools[..n].iter().any(|q| q.name == p.name) {
                return Err(RoutingError::DuplicatePool(p.name.clone()));
            }
        }
        Ok(())
    }
}

/// What the router writes to `admin.json` in its state directory so the
/// controller can find it again after either of them restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AdminInfo {
    pub pid: u32,
    pub admin: SocketAddr,
    pub listen: SocketAddr,
    /// Where `GET /metrics` is served, if anywhere (absent from older routers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<SocketAddr>,
}

/// Parses `120,60.5` (milliseconds, comma-separated) as asked of `/stats?above_ms=`.
pub fn parse_latency_limits(list: &str) -> Result<Vec<f64>, String> {
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| match s.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
            _ => Err(format!("above_ms: {s:?} is not a number of milliseconds")),
        })
        .collect()
}

pub const CONFIG_FILE: &str = "routing.json";
pub const ADMIN_FILE: &str = "admin.json";

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    /// Files by concern: past ~600 lines a file holds two concerns, unless
    /// its first comment says why it is kept whole.
    #[test]
    fn no_source_file_is_over_600_lines_without_a_stated_reason() {
        fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    rust_files(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let too_long: Vec<String> = files
            .iter()
            .filter_map(|f| {
                let text = std::fs::read_to_string(f).unwrap();
                let lines = text.lines().count();
                let first_comment = text.lines().next().unwrap_or_default();
                let reason = first_comment.contains("Kept as one file");
                (lines > 600 && !reason).then(|| format!("{} ({lines} lines)", f.display()))
            })
            .collect();
        assert!(files.len() >= 5, "{files:?}");
        assert_eq!(too_long, Vec::<String>::new());
    }
}
