//! Background upkeep: the router watchdog and the retention task.

use super::{now_ms, Controller};
use gantry_core::{EnvName, Millis};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// Fleet instances are checked every this many router-watchdog ticks.
const CONVERGE_EVERY_TICKS: u32 = 6;

impl Controller {
    /// Prunes audit records and finished deployments past the configured
    /// retention, now and then daily; the store keeps an anchor so the audit
    /// chain stays verifiable, and never drops what an environment runs.
    pub fn spawn_retention(self: &Arc<Self>) {
        let this = Arc::downgrade(self);
        self.spawn_led(async move {
            loop {
                let Some(c) = this.upgrade() else { return };
                let before = now_ms() - c.config.retention.audit_ms as Millis;
                match c.store.prune_audit(before, now_ms()) {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(records = n, "pruned audit records past retention");
                        // Sign the new anchor at once.
                        if let Err(e) = c.audit_checkpoint() {
                            tracing::error!(error = %e, "cannot sign an audit checkpoint");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot prune the audit trail"),
                }
                let before = now_ms() - c.config.retention.deployments_ms as Millis;
                match c.store.prune_deployments(before) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deployments = n, "pruned deployments past retention"),
                    Err(e) => tracing::error!(error = %e, "cannot prune deployments"),
                }
                drop(c);
                tokio::time::sleep(Duration::from_secs(86_400)).await;
            }
        });
    }

    /// Keeps every environment's router running: one that died (killed,
    /// crashed) is started again and serves its last routing from disk.
    /// Deployments in flight see its counters start over and judge on.
    pub fn spawn_router_watchdog(self: &Arc<Self>, every: Duration) {
        let this = Arc::downgrade(self);
        self.spawn_led(async move {
            let mut ticks = 0u32;
            loop {
                tokio::time::sleep(every).await;
                let Some(c) = this.upgrade() else { return };
                c.revive_routers().await;
                ticks += 1;
                if ticks.is_multiple_of(CONVERGE_EVERY_TICKS) {
                    c.converge_fleet_instances().await;
                }
            }
        });
    }

    /// On fleets, between deployments: instances an environment runs that
    /// are gone from their host (the host crashed, was cut off, rebooted)
    /// are started again with their ids, ports and releases, so a host that
    /// comes back serves what it served (the current release, or the one a
    /// failed host kept). A host still unreachable is skipped (its channel
    /// backs off).
    async fn converge_fleet_instances(&self) {
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let (Ok(states), Ok(active)) = (self.store.env_states(), self.store.active_deployments())
        else {
            return;
        };
        for s in states {
            let Ok(env) = self.env(s.env.as_str()) else {
                continue;
            };
            if env.hosts.is_empty() || active.iter().any(|d| d.env == s.env) {
                continue;
            }
            // An unreachable host fails every look until it is back: quiet.
            for gone in self.restart_gone(env, &s, |i| i.host.is_some()).await {
                match gone.restarted {
                    Ok(()) => tracing::warn!(
                        env = %s.env,
                        instance = %gone.id,
                        "instance was gone ({}); started it again",
                        gone.why
                    ),
                    Err(e) => {
                        tracing::debug!(instance = %gone.id, error = %e, "instance not restarted yet")
                    }
                }
            }
        }
    }

    /// The deployment that started an instance the environment runs, and
    /// its release: the state's own, or, for a fleet host that failed
    /// within `max_failed`, the earlier one it kept. The id names it
    /// (`<env>-d<N>-<n>`, with `@host` on a fleet).
    pub(super) fn instance_release(
        &self,
        s: &gantry_store::EnvState,
        i: &gantry_core::InstanceRef,
    ) -> Option<(gantry_core::DeploymentId, gantry_core::Version)> {
        let local = i.id.split('@').next()?;
        let mut parts = local.rsplitn(3, '-');
        let _ordinal = parts.next()?;
        let deployment = parts.next()?.strip_prefix('d')?.parse().ok()?;
        if deployment == s.deployment {
            return Some((deployment, s.version.clone()));
        }
        let started_by = self.store.deployment(deployment).ok()??;
        Some((deployment, started_by.version))
    }

    async fn revive_routers(&self) {
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let mut envs: HashSet<EnvName> = HashSet::new();
        if let Ok(states) = self.store.env_states() {
            envs.extend(states.into_iter().map(|s| s.env));
        }
        if let Ok(active) = self.store.active_deployments() {
            // Only those that have routed: before that there may be no router on purpose.
            envs.extend(
                active
                    .into_iter()
                    .filter(|d| d.traffic_on_new || !d.old_instances.is_empty())
                    .map(|d| d.env),
            );
        }
        for env in envs {
            let Ok(config) = self.env(env.as_str()) else {
                continue;
            };
            match self.router.revive(&env, config.listen).await {
                Ok(true) => {
                    tracing::warn!(env = %env, "router was not running; started it again with its last routing")
                }
                Ok(false) => {}
                Err(e) => tracing::error!(env = %env, error = %e, "cannot start router"),
            }
        }
    }
}

/// One group of Prometheus file-based service discovery: an instance and
/// the labels its series get.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
struct ScrapeGroup {
    targets: Vec<String>,
    labels: std::collections::BTreeMap<String, String>,
}

impl Controller {
    /// With `[metrics.prometheus]`, keeps `path` a Prometheus `file_sd`
    /// list of every local instance (labels env, release, instance), so a
    /// Prometheus started with it scrapes each release's own metrics, the
    /// canary's apart from stable's. Written only on change, atomically.
    pub fn spawn_scrape_targets(self: &Arc<Self>, path: std::path::PathBuf, every: Duration) {
        let this = Arc::downgrade(self);
        self.spawn_led(async move {
            let mut last: Option<Vec<ScrapeGroup>> = None;
            loop {
                let Some(c) = this.upgrade() else { return };
                match c.scrape_groups() {
                    Ok(groups) if last.as_ref() != Some(&groups) => {
                        match write_atomically(&path, &groups) {
                            Ok(()) => last = Some(groups),
                            Err(e) => {
                                tracing::warn!(path = %path.display(), error = %e, "cannot write the Prometheus targets file")
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot list instances for Prometheus"),
                }
                drop(c);
                tokio::time::sleep(every).await;
            }
        });
    }

    fn scrape_groups(&self) -> Result<Vec<ScrapeGroup>, gantry_store::StoreError> {
        let mut seen = HashSet::new();
        let mut groups = Vec::new();
        let mut add =
            |env: &EnvName, release: &gantry_core::Version, i: &gantry_core::InstanceRef| {
                // Fleet instances answer on their host's loopback only.
                if i.host.is_some() || !seen.insert(i.id.clone()) {
                    return;
                }
                groups.push(ScrapeGroup {
                    targets: vec![format!("127.0.0.1:{}", i.port)],
                    labels: [
                        ("env", env.to_string()),
                        ("release", release.to_string()),
                        ("instance", i.id.clone()),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
                });
            };
        for d in self.store.active_deployments()? {
            for i in &d.new_instances {
                add(&d.env, &d.version, i);
            }
            if let Some(previous) = &d.previous_version {
                for i in &d.old_instances {
                    add(&d.env, previous, i);
                }
            }
        }
        for s in self.store.env_states()? {
            for i in &s.instances {
                add(&s.env, &s.version, i);
            }
        }
        groups.sort();
        Ok(groups)
    }
}

fn write_atomically(path: &std::path::Path, groups: &[ScrapeGroup]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(groups)?)?;
    std::fs::rename(&tmp, path)
}
