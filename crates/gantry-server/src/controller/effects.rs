//! The effect executor: carries out one effect of the machine against the
//! target, the router and the metrics, and answers with the event it led to.

use super::{now_ms, Controller};
use crate::artifact;
use crate::routing::InstancePool;
use crate::target::{LaunchSpec, ProbeOutcome, Started};
use gantry_config::Environment;
use gantry_core::analysis::queries::{QueryReading, Reading};
use gantry_core::analysis::{Baseline, Counts, LatencyLimits};
use gantry_core::machine::Probe;
use gantry_core::{Deployment, DeploymentId, Effect, EnvName, Event, InstanceRef, Millis, Version};
use gantry_router::{Affinity, PoolStats};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

impl Controller {
    pub(super) async fn execute(
        self: Arc<Self>,
        d: Deployment,
        effect: Effect,
        tx: mpsc::UnboundedSender<Event>,
    ) {
        // A leader whose lease may have run out acts on nothing more (its
        // term is about to end; the next leader re-emits what is needed).
        if self.acting_epoch().is_none() {
            return;
        }
        let event = match effect {
            Effect::PrepareRelease { version } => match self.prepare(&d, &version).await {
                Ok(repairs) => {
                    self.add_notes(d.id, repairs);
                    Event::Prepared
                }
                Err(reason) => Event::PrepareFailed { reason },
            },
            Effect::StartInstances {
                version,
                count,
                hosts,
            } => match self.start(&d, &version, count, hosts).await {
                Ok(started) => Event::InstancesStarted {
                    instances: started.instances,
                    failed_hosts: started.failed_hosts,
                },
                Err(reason) => Event::StartFailed { reason },
            },
            Effect::ProbeHealth { instance, at } => {
                sleep_until(at).await;
                self.probe(&instance).await
            }
            Effect::RouteTraffic { instances, to_new } => {
                let name = if to_new {
                    Some(&d.version)
                } else {
                    d.previous_version.as_ref()
                };
                let pools = pools_for(name, &instances);
                match self.route(&d.env, pools).await {
                    Ok(()) => {
                        self.add_notes(d.id, self.router.take_notes(&d.env));
                        Event::TrafficRouted { to_new }
                    }
                    Err(reason) => Event::RouteFailed { reason },
                }
            }
            Effect::StopInstances { instances } => loop {
                match self.target.stop(&instances).await {
                    Ok(()) => break Event::InstancesStopped,
                    Err(e) => {
                        tracing::error!(deployment = d.id, error = %e, "stop failed; retrying in 1s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            },
            Effect::WakeAt { at } => {
                sleep_until(at).await;
                Event::Tick
            }
            Effect::ObserveBaseline => {
                let (stable_name, _) = pool_names(&d);
                let mut baseline = match self.wave_pool_stats(&d, &[]).await {
                    Ok(pools) => pools
                        .iter()
                        .find(|p| p.name == stable_name)
                        .map(|p| Baseline {
                            requests: p.requests,
                            errors: p.errors,
                            p50_ms: p.p50_ms,
                            p99_ms: p.p99_ms,
                            queries: Default::default(),
                        })
                        .unwrap_or_default(),
                    Err(e) => {
                        tracing::warn!(deployment = d.id, error = %e, "no baseline; rules relative to it are off");
                        Baseline::default()
                    }
                };
                // The queries' values for the release that serves now.
                if let Some(previous) = d.previous_version.clone() {
                    for r in self.read_queries(&d, &previous).await {
                        if let Reading::Value { value } = r.reading {
                            baseline.queries.insert(r.rule, value);
                        }
                    }
                }
                Event::BaselineObserved { baseline }
            }
            Effect::ShiftTraffic {
                weight,
                stable,
                canary,
            } => {
                let (stable_name, canary_name) = pool_names(&d);
                let pools = vec![
                    InstancePool {
                        name: stable_name,
                        weight: 100 - weight.min(100),
                        instances: stable,
                    },
                    InstancePool {
                        name: canary_name,
                        weight: weight.min(100),
                        instances: canary,
                    },
                ];
                match self.route(&d.env, pools).await {
                    Ok(()) => {
                        self.add_notes(d.id, self.router.take_notes(&d.env));
                        Event::TrafficRouted { to_new: true }
                    }
                    Err(reason) => Event::RouteFailed { reason },
                }
            }
            Effect::ObserveMetrics { limits, at } => {
                sleep_until(at).await;
                self.observe_metrics(&d, &limits).await
            }
            Effect::ObserveResources { at } => {
                sleep_until(at).await;
                let instances: Vec<InstanceRef> = d
                    .new_instances
                    .iter()
                    .chain(&d.old_instances)
                    .cloned()
                    .collect();
                Event::ResourcesObserved {
                    resources: self.target.usage(&instances).await,
                }
            }
            Effect::RunSmoke { instances } => Event::SmokeFinished {
                results: match d.settings.smoke.as_ref() {
                    Some(settings) => self.target.smoke(settings, &instances).await,
                    None => {
                        tracing::warn!(
                            deployment = d.id,
                            "smoke checks asked for without any configured; reporting an empty suite"
                        );
                        Vec::new()
                    }
                },
            },
            Effect::RunHooks { point, key } => {
                let configured = self
                    .config
                    .environment(d.env.as_str())
                    .map(|e| e.hooks.clone())
                    .unwrap_or_default();
                Event::HooksAnswered {
                    point,
                    key,
                    outcomes: crate::hooks::run(&d, point, &configured, &self.http).await,
                }
            }
            Effect::RunMigration { step } => Event::MigrationRan {
                outcome: self.run_migration(&d, step).await,
            },
            Effect::RestoreInstances { version, instances } => {
                match self.restore(&d, &version, &instances).await {
                    Ok(()) => Event::InstancesRestored,
                    Err(reason) => Event::RestoreFailed { reason },
                }
            }
        };
        let _ = tx.send(event);
    }

    /// Both pools' cumulative counts, with requests over each latency limit
    /// (on a fleet: summed over the hosts, with each host's canary counts).
    async fn observe_metrics(&self, d: &Deployment, limits: &LatencyLimits) -> Event {
        let asked: Vec<f64> = [limits.p99_ms, limits.p50_ms, limits.compare_ms]
            .into_iter()
            .flatten()
            .collect();
        let unavailable = |e: crate::routing::MetricError| Event::MetricsUnavailable {
            reason: e.to_string(),
        };
        // Both releases' instances, read where they run, beside the counts.
        let instances: Vec<InstanceRef> = d
            .new_instances
            .iter()
            .chain(&d.old_instances)
            .cloned()
            .collect();
        // Counts, resource readings and metric queries are read at once.
        let (stats, resources, queries) = tokio::join!(
            self.metrics.pool_stats_by_host(&d.env, &asked),
            self.target.usage(&instances),
            self.read_queries(d, &d.version)
        );
        let (pools, by_host) = match stats {
            Ok(Some(mut by_host)) => {
                keep_current_wave(d, &mut by_host);
                (
                    crate::routing::sum_pools(by_host.values().cloned()),
                    by_host,
                )
            }
            Ok(None) => match self.metrics.pool_stats(&d.env, &asked).await {
                Ok(p) => (p, BTreeMap::new()),
                Err(e) => return unavailable(e),
            },
            Err(e) => return unavailable(e),
        };
        let (stable_name, canary_name) = pool_names(d);
        Event::MetricsObserved {
            canary: counts(&pools, &canary_name, limits),
            stable: counts(&pools, &stable_name, limits),
            hosts: by_host
                .iter()
                .map(|(host, pools)| (host.clone(), counts(pools, &canary_name, limits)))
                .collect(),
            queries,
            resources,
        }
    }

    /// The analysis' metric queries for `version` (the new release at a
    /// look, the previous one for the baseline), as the deployment's phase
    /// asks for them; none when it has no query rules.
    async fn read_queries(&self, d: &Deployment, version: &Version) -> Vec<QueryReading> {
        let (rules, interval_ms) = gantry_core::machine::query_rules(d);
        if rules.is_empty() {
            return Vec::new();
        }
        let (stable_name, canary_name) = pool_names(d);
        let pool = if Some(version) == d.previous_version.as_ref() && version != &d.version {
            stable_name.clone()
        } else {
            canary_name
        };
        let scope = crate::prometheus::QueryScope {
            env: d.env.as_str(),
            release: &version.to_string(),
            pool: &pool,
            interval_ms,
        };
        // Count rules read the old release's counters too, while it serves
        // beside the new one.
        let old_release = d
            .previous_version
            .as_ref()
            .filter(|p| *p != version)
            .map(|p| p.to_string());
        let old_scope = old_release
            .as_deref()
            .map(|release| crate::prometheus::QueryScope {
                env: d.env.as_str(),
                release,
                pool: &stable_name,
                interval_ms,
            });
        match &self.prometheus {
            Some(Ok(client)) => client.read_all(&rules, &scope, old_scope.as_ref()).await,
            failed => {
                let reason = match failed {
                    Some(Err(e)) => e.clone(),
                    _ => "no metrics server is configured ([metrics.prometheus])".to_owned(),
                };
                rules
                    .iter()
                    .map(|r| QueryReading {
                        rule: r.name.clone(),
                        resolved: crate::prometheus::resolve(&r.query, &scope),
                        reading: Reading::Error {
                            reason: reason.clone(),
                        },
                    })
                    .collect()
            }
        }
    }

    /// The environment's pools, counted on the hosts of the wave under way
    /// when a canary walks a fleet in waves (hosts of earlier waves serve
    /// the new release in full and would blur the comparison).
    async fn wave_pool_stats(
        &self,
        d: &Deployment,
        asked: &[f64],
    ) -> Result<Vec<PoolStats>, crate::routing::MetricError> {
        if gantry_core::machine::waves::active(d) {
            if let Some(mut by_host) = self.metrics.pool_stats_by_host(&d.env, asked).await? {
                keep_current_wave(d, &mut by_host);
                return Ok(crate::routing::sum_pools(by_host.into_values()));
            }
        }
        self.metrics.pool_stats(&d.env, asked).await
    }

    /// Re-hashes the artifact, checks its signature where the environment
    /// requires one, and has the target unpack (or re-check) it. Returns
    /// what the target had to repair, for the deployment log.
    async fn prepare(&self, d: &Deployment, version: &Version) -> Result<Vec<String>, String> {
        let release = self.registered(version).map_err(|e| e.to_string())?;
        let env = self.env(d.env.as_str()).map_err(|e| e.to_string())?;
        let blobs = self.blobs.clone();
        let digest = release.digest.clone();
        // Fetched from the shared database if this controller never had it.
        let path = self.local_blob_in_place(&release.digest)?;
        // A rollback's release was hashed when it was deployed: unchanged,
        // it is not hashed again (`hashed.rs`).
        self.hashed
            .verify(&release.digest, &path, move || {
                blobs.verify(&digest).map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| format!("artifact of {version} failed verification: {e}"))?;
        if env.require_signature {
            let sig = release.signature.clone().ok_or_else(|| {
                format!(
                    "environment {} requires a signed release; {version} has no signature",
                    d.env
                )
            })?;
            let keys = self.config.signing.public_keys.clone();
            let path = path.clone();
            tokio::task::spawn_blocking(move || artifact::verify_signature(&path, &sig, &keys))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("signature of {version}: {e}"))?;
        }
        self.target
            .prepare(&d.env, &release, &path, &self.config.artifacts)
            .await
            .map_err(|e| e.to_string())
    }

    /// Plain variables and resolved secrets for an environment.
    pub(super) fn launch_spec(
        &self,
        env: &Environment,
        deployment: DeploymentId,
        version: &Version,
        count: u32,
    ) -> Result<LaunchSpec, String> {
        let svc = &self.config.service;
        let mut vars: BTreeMap<String, String> = svc.env.clone();
        vars.extend(env.env.clone());
        let mut secrets = svc.secrets.clone();
        secrets.extend(env.secrets.clone());
        for (name, source) in secrets {
            let value = crate::secret_file::resolve(&name, &source)?;
            vars.insert(name, value);
        }
        Ok(LaunchSpec {
            env: env.name.clone(),
            deployment,
            version: version.clone(),
            count,
            command: svc.command.clone(),
            args: svc.args.clone(),
            port_env: svc.port_env.clone(),
            vars,
            hosts: Vec::new(),
        })
    }

    async fn start(
        &self,
        d: &Deployment,
        version: &Version,
        count: u32,
        hosts: Vec<String>,
    ) -> Result<Started, String> {
        let env = self.env(d.env.as_str()).map_err(|e| e.to_string())?;
        let mut spec = self.launch_spec(env, d.id, version, count)?;
        spec.hosts = hosts;
        self.target
            .ensure_instances(&spec)
            .await
            .map_err(|e| e.to_string())
    }

    /// Starts stopped instances again with their old ids and ports, and
    /// waits until each answers its health check.
    async fn restore(
        &self,
        d: &Deployment,
        version: &Version,
        instances: &[InstanceRef],
    ) -> Result<(), String> {
        let env = self.env(d.env.as_str()).map_err(|e| e.to_string())?;
        let spec = self.launch_spec(env, d.id, version, instances.len() as u32)?;
        for i in instances {
            self.target
                .restart_instance(&spec, i)
                .await
                .map_err(|e| e.to_string())?;
        }
        let deadline = now_ms() + d.settings.health.start_timeout_ms as Millis;
        for i in instances {
            loop {
                match self.probe(i).await {
                    Event::HealthObserved {
                        probe: Probe::Healthy,
                        ..
                    } => break,
                    Event::InstanceExited { detail, .. } => {
                        return Err(format!("{} exited: {detail}", i.id))
                    }
                    _ if now_ms() >= deadline => {
                        return Err(format!(
                            "{} did not become healthy within {}ms",
                            i.id, d.settings.health.start_timeout_ms
                        ))
                    }
                    _ => {
                        tokio::time::sleep(Duration::from_millis(
                            d.settings.health.startup_interval_ms,
                        ))
                        .await
                    }
                }
            }
        }
        Ok(())
    }

    async fn probe(&self, instance: &InstanceRef) -> Event {
        let h = &self.config.health;
        let timeout = Duration::from_millis(h.timeout_ms);
        match self.target.probe(instance, &h.path, timeout).await {
            ProbeOutcome::Exited(detail) => Event::InstanceExited {
                instance: instance.id.clone(),
                detail,
            },
            ProbeOutcome::Probe(probe) => Event::HealthObserved {
                instance: instance.id.clone(),
                probe,
            },
        }
    }

    pub(super) async fn route(
        &self,
        env: &EnvName,
        pools: Vec<InstancePool>,
    ) -> Result<(), String> {
        let env_config = self.env(env.as_str()).map_err(|e| e.to_string())?;
        let affinity = env_config.sticky.as_ref().map(|s| match s {
            gantry_config::Sticky::Cookie(name) => Affinity::Cookie(name.clone()),
            gantry_config::Sticky::Header(name) => Affinity::Header(name.clone()),
        });
        self.router
            .route(env, env_config.listen, pools, affinity)
            .await
            .map_err(|e| e.to_string())
    }
}

/// One pool's cumulative counts; a pool that has not served yet has no
/// counters: zero.
fn counts(pools: &[PoolStats], name: &str, limits: &LatencyLimits) -> Counts {
    let Some(p) = pools.iter().find(|p| p.name == name) else {
        return Counts::default();
    };
    let over = |limit: Option<f64>| {
        limit
            .and_then(|l| p.slower_than.iter().find(|s| s.limit_ms == l))
            .map_or(0, |s| s.requests)
    };
    Counts {
        requests: p.requests,
        errors: p.errors,
        client_errors: p.client_errors,
        over_p99_limit: over(limits.p99_ms),
        over_p50_limit: over(limits.p50_ms),
        over_compare_limit: over(limits.compare_ms),
    }
}

/// Keeps the hosts of the wave under way when a deployment walks a fleet
/// in waves (earlier waves' hosts serve the new release in full).
fn keep_current_wave(d: &Deployment, by_host: &mut BTreeMap<String, Vec<PoolStats>>) {
    if let Some(wave) = gantry_core::machine::waves::current_hosts(d) {
        by_host.retain(|host, _| wave.contains(host));
    }
}

/// Names of the stable and canary pools of a canary rollout; distinct even
/// when a release is deployed over itself.
fn pool_names(d: &Deployment) -> (String, String) {
    let stable = d
        .previous_version
        .as_ref()
        .map(|v| v.to_string())
        .unwrap_or_else(|| "stable".to_owned());
    let canary = d.version.to_string();
    if stable == canary {
        (stable, format!("{canary} (deployment {})", d.id))
    } else {
        (stable, canary)
    }
}

pub(super) fn pools_for(name: Option<&Version>, instances: &[InstanceRef]) -> Vec<InstancePool> {
    if instances.is_empty() {
        return Vec::new();
    }
    vec![InstancePool {
        name: name
            .map(|v| v.to_string())
            .unwrap_or_else(|| "unknown".to_owned()),
        weight: 100,
        instances: instances.to_vec(),
    }]
}

async fn sleep_until(at: Millis) {
    let delay = at - now_ms();
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay as u64)).await;
    }
}
