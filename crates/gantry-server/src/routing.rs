//! Control of the data plane. [`TrafficRouter`] is the seam (a cloud load
//! balancer or a Kubernetes service could sit behind it); [`ProcessRouter`]
//! runs one `gantry router` process per environment and re-adopts it after
//! a controller restart.

use crate::probe::instance_addr;
use async_trait::async_trait;
use gantry_core::{EnvName, InstanceRef};
use gantry_router::{AdminInfo, Affinity, Pool, PoolStats, Routing, SlowerThan, ADMIN_FILE};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("router for {env} could not start: {reason}")]
    Start { env: String, reason: String },
    #[error("router for {env} refused the routing: {reason}")]
    Refused { env: String, reason: String },
}

#[derive(Debug, thiserror::Error)]
#[error("no traffic figures for {env}: {reason}")]
pub struct MetricError {
    pub env: String,
    pub reason: String,
}

/// Where the figures of a rollout come from: per pool, requests, errors and
/// latency, with counts of requests slower than given limits. The router's
/// own counters now; Prometheus is the next implementation.
#[async_trait]
pub trait MetricProvider: Send + Sync {
    async fn pool_stats(
        &self,
        env: &EnvName,
        slower_than_ms: &[f64],
    ) -> Result<Vec<PoolStats>, MetricError>;
    /// The same figures host by host, where the environment runs on a
    /// fleet (`None` otherwise): the analysis judges their sum, and looks
    /// for one host much worse than the rest.
    async fn pool_stats_by_host(
        &self,
        _env: &EnvName,
        _slower_than_ms: &[f64],
    ) -> Result<Option<BTreeMap<String, Vec<PoolStats>>>, MetricError> {
        Ok(None)
    }
}

/// Every host's pools added by name: counts add; a pool's P50/P99 comes
/// from its hosts' latency histograms merged into one, so a fleet's P99 is
/// the P99 of all its answers (1000 at 10 ms on one host and 10 at 500 ms
/// on another make a P99 of 10 ms). When a host that served the pool sent
/// no histogram (a router older than histograms, or one not asked), the
/// fleet's P50/P99 fall back to the highest of the hosts': an upper bound,
/// never lower than the truth.
pub fn sum_pools(hosts: impl IntoIterator<Item = Vec<PoolStats>>) -> Vec<PoolStats> {
    struct Sum {
        stats: PoolStats,
        histograms: Vec<gantry_router::LatencyHistogram>,
        /// Some host served the pool without sending its histogram.
        histogram_missing: bool,
    }
    let mut by_name: BTreeMap<String, Sum> = BTreeMap::new();
    for pools in hosts {
        for mut p in pools {
            let sum = by_name.entry(p.name.clone()).or_insert_with(|| Sum {
                stats: PoolStats {
                    name: p.name.clone(),
                    ..PoolStats::default()
                },
                histograms: Vec::new(),
                histogram_missing: false,
            });
            let histogram = p.latency_histogram.take();
            let sum_stats = &mut sum.stats;
            sum_stats.requests += p.requests;
            sum_stats.errors += p.errors;
            sum_stats.client_errors += p.client_errors;
            if p.requests > 0 {
                sum_stats.p50_ms = sum_stats.p50_ms.max(p.p50_ms);
                sum_stats.p99_ms = sum_stats.p99_ms.max(p.p99_ms);
                match histogram {
                    Some(h) => sum.histograms.push(h),
                    None => sum.histogram_missing = true,
                }
            }
            for s in p.slower_than {
                match sum_stats
                    .slower_than
                    .iter_mut()
                    .find(|x| x.limit_ms == s.limit_ms)
                {
                    Some(x) => x.requests += s.requests,
                    None => sum_stats.slower_than.push(SlowerThan {
                        limit_ms: s.limit_ms,
                        requests: s.requests,
                    }),
                }
            }
        }
    }
    by_name
        .into_values()
        .map(|mut sum| {
            if !sum.histogram_missing && !sum.histograms.is_empty() {
                match gantry_router::latency::merge(&sum.histograms) {
                    Ok(merged) if !merged.is_empty() => {
                        let ms = |us: u64| us as f64 / 1000.0;
                        sum.stats.p50_ms = ms(merged.value_at_quantile(0.50));
                        sum.stats.p99_ms = ms(merged.value_at_quantile(0.99));
                    }
                    Ok(_) => {}
                    // Checked when it was read; should one slip through, the upper bound stands.
                    Err(e) => tracing::warn!(pool = %sum.stats.name, error = %e, "latency histograms not merged"),
                }
            }
            sum.stats
        })
        .collect()
}

/// A share of an environment's traffic and the instances that serve it.
/// Instances rather than addresses: on a fleet each host's router gets its
/// own instances, reached on that host's loopback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstancePool {
    pub name: String,
    pub weight: u32,
    pub instances: Vec<InstanceRef>,
}

impl InstancePool {
    /// The router's pool for instances on the router's own machine.
    pub fn local_pool(&self) -> Pool {
        Pool {
            name: self.name.clone(),
            weight: self.weight,
            upstreams: self.instances.iter().map(instance_addr).collect(),
        }
    }
}

#[async_trait]
pub trait TrafficRouter: Send + Sync {
    /// Sends the environment's traffic to `pools`, starting its router if needed.
    async fn route(
        &self,
        env: &EnvName,
        listen: SocketAddr,
        pools: Vec<InstancePool>,
        affinity: Option<Affinity>,
    ) -> Result<(), RouteError>;
    /// Starts the environment's router again if it is not running, serving
    /// its last routing. True if it had to be started.
    async fn revive(&self, env: &EnvName, listen: SocketAddr) -> Result<bool, RouteError>;
    /// Whether the environment's router runs.
    async fn is_running(&self, env: &EnvName) -> bool;
    /// Stops the environment's router (used on shutdown with workloads).
    async fn stop(&self, env: &EnvName);
    /// Lines for the deployment log that the last routing left (on a
    /// fleet: how many hosts, and the switch skew).
    fn take_notes(&self, _env: &EnvName) -> Vec<String> {
        Vec::new()
    }
}

pub struct ProcessRouter {
    data_dir: PathBuf,
    /// The gantry executable, run as `gantry router`.
    exe: PathBuf,
    token: String,
    http: reqwest::Client,
    /// Each environment's `metrics_listen`: where its router serves
    /// `GET /metrics` (from the config; on a fleet host, from the controller).
    metrics_listen: std::sync::Mutex<BTreeMap<EnvName, SocketAddr>>,
    /// How long and how much access log the routers keep (the config's
    /// `[retention]`; the standards' 90 days and 1 GiB on a fleet host).
    access_logs: std::sync::Mutex<(Duration, u64)>,
}

impl ProcessRouter {
    pub fn new(data_dir: &Path, exe: PathBuf, token: String) -> ProcessRouter {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .no_proxy()
            .build()
            .expect("static client config is valid");
        ProcessRouter {
            data_dir: data_dir.to_owned(),
            exe,
            token,
            http,
            metrics_listen: Default::default(),
            access_logs: std::sync::Mutex::new((Duration::from_secs(90 * 86_400), 1 << 30)),
        }
    }

    /// How long and how much access log each router keeps (at its next start).
    pub fn set_access_log_retention(&self, keep: Duration, max_bytes: u64) {
        *self.access_logs.lock().unwrap_or_else(|p| p.into_inner()) = (keep, max_bytes);
    }

    /// Where the environment's router is to serve `GET /metrics` (`None`:
    /// nowhere); a running router serving elsewhere is replaced (stopped,
    /// started again with its last routing) the next time it is routed.
    pub fn set_metrics_listen(&self, env: &EnvName, addr: Option<SocketAddr>) {
        let mut all = self
            .metrics_listen
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match addr {
            Some(a) => all.insert(env.clone(), a),
            None => all.remove(env),
        };
    }

    pub fn metrics_listen(&self, env: &EnvName) -> Option<SocketAddr> {
        self.metrics_listen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(env)
            .copied()
    }

    fn state_dir(&self, env: &EnvName) -> PathBuf {
        self.data_dir.join("routers").join(env.as_str())
    }

    fn token_file(&self) -> PathBuf {
        self.data_dir.join("router.token")
    }

    /// The router's admin info if it runs and answers.
    async fn live(&self, env: &EnvName) -> Option<AdminInfo> {
        let bytes = std::fs::read(self.state_dir(env).join(ADMIN_FILE)).ok()?;
        let info: AdminInfo = serde_json::from_slice(&bytes).ok()?;
        let ok = self
            .http
            .get(format!("http://{}/routing", info.admin))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        ok.then_some(info)
    }

    async fn ensure(&self, env: &EnvName, listen: SocketAddr) -> Result<AdminInfo, RouteError> {
        let start_err = |reason: String| RouteError::Start {
            env: env.to_string(),
            reason,
        };
        let metrics = self.metrics_listen(env);
        if let Some(info) = self.live(env).await {
            let metrics_same = match (metrics, info.metrics) {
                (None, None) => true,
                (Some(want), Some(has)) => want == has || want.port() == 0,
                _ => false,
            };
            if (info.listen == listen || listen.port() == 0) && metrics_same {
                return Ok(info);
            }
            // The environment's addresses changed in the config: replace the router.
            self.stop(env).await;
        }
        let dir = self.state_dir(env);
        std::fs::create_dir_all(&dir).map_err(|e| start_err(e.to_string()))?;
        let _ = std::fs::remove_file(dir.join(ADMIN_FILE));
        crate::secret_file::write(&self.token_file(), &self.token)
            .map_err(|e| start_err(e.to_string()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("router.log"))
            .map_err(|e| start_err(e.to_string()))?;
        let log2 = log.try_clone().map_err(|e| start_err(e.to_string()))?;
        let mut command = tokio::process::Command::new(&self.exe);
        command
            .arg("router")
            .arg("--state-dir")
            .arg(&dir)
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--token-file")
            .arg(self.token_file())
            .arg("--environment")
            .arg(env.as_str());
        let (keep, max_bytes) = *self.access_logs.lock().unwrap_or_else(|p| p.into_inner());
        command
            .arg("--access-log-keep-secs")
            .arg(keep.as_secs().to_string())
            .arg("--access-log-max-bytes")
            .arg(max_bytes.to_string());
        if let Some(m) = metrics {
            command.arg("--metrics-listen").arg(m.to_string());
        }
        let mut child = command
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| start_err(format!("cannot run {}: {e}", self.exe.display())))?;
        let pid = child.id();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.join("router.log")).unwrap_or_default();
                let last = log
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .to_owned();
                return Err(start_err(format!("router exited ({status}): {last}")));
            }
            if let Some(info) = self.live(env).await {
                if Some(info.pid) == pid {
                    // Reap it in the background when it eventually ends.
                    tokio::spawn(async move {
                        let _ = child.wait().await;
                    });
                    return Ok(info);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = child.start_kill();
                return Err(start_err("router did not come up within 10s".to_owned()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl ProcessRouter {
    /// Sets the routing of the environment's router on this machine to
    /// `pools` of upstream addresses (what `gantry host serve` asks for on
    /// a fleet host, its instances on its loopback).
    pub async fn route_pools(
        &self,
        env: &EnvName,
        listen: SocketAddr,
        pools: Vec<Pool>,
        affinity: Option<Affinity>,
    ) -> Result<(), RouteError> {
        let info = self.ensure(env, listen).await?;
        let refused = |reason: String| RouteError::Refused {
            env: env.to_string(),
            reason,
        };
        let current: Routing = self
            .http
            .get(format!("http://{}/routing", info.admin))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| refused(e.to_string()))?
            .json()
            .await
            .map_err(|e| refused(e.to_string()))?;
        let next = Routing {
            generation: current.generation + 1,
            pools,
            affinity,
        };
        let resp = self
            .http
            .put(format!("http://{}/routing", info.admin))
            .bearer_auth(&self.token)
            .json(&next)
            .send()
            .await
            .map_err(|e| refused(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(refused(resp.text().await.unwrap_or_default()));
        }
        Ok(())
    }
}

#[async_trait]
impl TrafficRouter for ProcessRouter {
    async fn route(
        &self,
        env: &EnvName,
        listen: SocketAddr,
        pools: Vec<InstancePool>,
        affinity: Option<Affinity>,
    ) -> Result<(), RouteError> {
        let pools = pools.iter().map(InstancePool::local_pool).collect();
        self.route_pools(env, listen, pools, affinity).await
    }

    async fn is_running(&self, env: &EnvName) -> bool {
        self.live(env).await.is_some()
    }

    async fn revive(&self, env: &EnvName, listen: SocketAddr) -> Result<bool, RouteError> {
        if self.live(env).await.is_some() {
            return Ok(false);
        }
        // Never started for this environment: nothing to revive.
        if !self
            .state_dir(env)
            .join(gantry_router::CONFIG_FILE)
            .exists()
        {
            return Ok(false);
        }
        self.ensure(env, listen).await.map(|_| true)
    }

    async fn stop(&self, env: &EnvName) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        if let Some(info) = self.live(env).await {
            let _ = kill(Pid::from_raw(info.pid as i32), Signal::SIGTERM);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while self.live(env).await.is_some() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[async_trait]
impl MetricProvider for ProcessRouter {
    async fn pool_stats(
        &self,
        env: &EnvName,
        slower_than_ms: &[f64],
    ) -> Result<Vec<PoolStats>, MetricError> {
        self.stats(env, slower_than_ms, false).await
    }
}

impl ProcessRouter {
    /// The router's figures; with `histograms`, each routed pool's latency
    /// histogram too (what a fleet host sends the controller to merge; a
    /// single router's P50/P99 need none).
    pub async fn stats(
        &self,
        env: &EnvName,
        slower_than_ms: &[f64],
        histograms: bool,
    ) -> Result<Vec<PoolStats>, MetricError> {
        let err = |reason: String| MetricError {
            env: env.to_string(),
            reason,
        };
        let info = self
            .live(env)
            .await
            .ok_or_else(|| err("its router is not running".to_owned()))?;
        let limits: Vec<String> = slower_than_ms.iter().map(|l| l.to_string()).collect();
        let resp = self
            .http
            .get(format!(
                "http://{}/stats?above_ms={}{}",
                info.admin,
                limits.join(","),
                if histograms { "&histogram=1" } else { "" }
            ))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| err(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(err(resp.text().await.unwrap_or_default()));
        }
        resp.json().await.map_err(|e| err(e.to_string()))
    }
}
