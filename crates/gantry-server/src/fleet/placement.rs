//! Where each environment runs. [`Placement`] is the controller's one
//! `Target`, `TrafficRouter` and `MetricProvider`: an environment without
//! hosts goes to this machine's [`LocalTarget`] and [`ProcessRouter`]
//! exactly as before; an environment with hosts fans each call out to its
//! hosts' channels ([`FleetLinks`]), in parallel.
//!
//! On a fleet, an instance's id carries its host (`production-d3-1@web-2`),
//! so ids stay unique across hosts in a deployment's state; each host sees
//! only its own ids. Routing gives each host's router only its own
//! instances (on its loopback); the figures of a rollout are the sum of
//! every host's router counts.

use super::link::HostLink;
use super::links::FleetLinks;
use crate::routing::TrafficRouter;
use crate::routing::{
    sum_pools, InstancePool, MetricError, MetricProvider, ProcessRouter, RouteError,
};
use crate::target::TargetError;
use crate::target::{LaunchSpec, LocalTarget, ProbeOutcome, RunningInstance, Started, Target};
use async_trait::async_trait;
use futures_util::future::join_all;
use gantry_config::ArtifactLimits;
use gantry_core::analysis::resources::InstanceUsage;
use gantry_core::machine::{Probe, SmokeResult, SmokeSettings};
use gantry_core::{EnvName, InstanceRef};
use gantry_router::{Affinity, Pool, PoolStats};
use gantry_store::ReleaseRecord;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Placement {
    local: Arc<LocalTarget>,
    router: Arc<ProcessRouter>,
    fleet: Option<Arc<FleetLinks>>,
    /// Each fleet environment's hosts, from the config.
    env_hosts: HashMap<EnvName, Vec<String>>,
    /// Hosts where a release could not be prepared, per environment and
    /// version: they start nothing and are reported as failed hosts.
    unprepared: Mutex<HashMap<(EnvName, String), BTreeMap<String, String>>>,
    /// Lines for the deployment log from the last call per environment
    /// (the switch skew of a routing across hosts).
    notes: Mutex<HashMap<EnvName, Vec<String>>>,
}

/// The id a fleet instance has in the controller's state.
pub fn fleet_id(host: &str, id: &str) -> String {
    format!("{id}@{host}")
}

/// The instance as its own host knows it.
fn on_host(instance: &InstanceRef) -> InstanceRef {
    let id = match &instance.host {
        Some(host) => instance
            .id
            .strip_suffix(&format!("@{host}"))
            .unwrap_or(&instance.id),
        None => &instance.id,
    };
    InstanceRef::local(id.to_owned(), instance.port)
}

/// Instances by the host they run on (each as its host knows it), and the
/// ones on this machine.
fn split_by_host(
    instances: &[InstanceRef],
) -> (BTreeMap<String, Vec<InstanceRef>>, Vec<InstanceRef>) {
    let mut by_host: BTreeMap<String, Vec<InstanceRef>> = BTreeMap::new();
    let mut local = Vec::new();
    for i in instances {
        match &i.host {
            Some(h) => by_host.entry(h.clone()).or_default().push(on_host(i)),
            None => local.push(i.clone()),
        }
    }
    (by_host, local)
}

fn from_host(host: &str, instance: InstanceRef) -> InstanceRef {
    InstanceRef {
        id: fleet_id(host, &instance.id),
        port: instance.port,
        host: Some(host.to_owned()),
    }
}

impl Placement {
    pub fn new(
        local: Arc<LocalTarget>,
        router: Arc<ProcessRouter>,
        fleet: Option<Arc<FleetLinks>>,
        env_hosts: HashMap<EnvName, Vec<String>>,
    ) -> Placement {
        Placement {
            local,
            router,
            fleet,
            env_hosts: env_hosts
                .into_iter()
                .filter(|(_, h)| !h.is_empty())
                .collect(),
            unprepared: Mutex::default(),
            notes: Mutex::default(),
        }
    }

    /// The environment's hosts and the channels to them, if it runs on a fleet.
    fn fleet_of(&self, env: &EnvName) -> Option<(&FleetLinks, &[String])> {
        let hosts = self.env_hosts.get(env)?;
        Some((self.fleet.as_deref()?, hosts.as_slice()))
    }

    /// Runs `call` on each of `hosts` at once, with each host's channel.
    async fn each<'a, T, F, Fut>(
        links: &'a FleetLinks,
        hosts: &'a [String],
        call: F,
    ) -> Vec<(String, Result<T, String>)>
    where
        F: Fn(String, Arc<HostLink>) -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let call = &call;
        join_all(hosts.iter().map(|host| async move {
            let result = match links.link(host).await {
                Ok(link) => call(host.clone(), link).await,
                Err(e) => Err(e),
            };
            (host.clone(), result)
        }))
        .await
    }

    fn add_note(&self, env: &EnvName, line: String) {
        self.notes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(env.clone())
            .or_default()
            .push(line);
    }

    fn link_of(&self, instance: &InstanceRef) -> Option<(&FleetLinks, String)> {
        Some((self.fleet.as_deref()?, instance.host.clone()?))
    }
}

fn joined(failures: &BTreeMap<String, String>) -> String {
    failures.values().cloned().collect::<Vec<_>>().join("; ")
}

#[async_trait]
impl Target for Placement {
    async fn output_since(
        &self,
        instance_id: &str,
        offset: Option<u64>,
        max_bytes: u64,
    ) -> Result<(Vec<u8>, u64), TargetError> {
        if instance_id.contains('@') {
            // A host's instance: not read incrementally yet.
            return Ok((Vec::new(), offset.unwrap_or(0)));
        }
        self.local
            .output_since(instance_id, offset, max_bytes)
            .await
    }

    async fn prune_output(
        &self,
        keep: std::time::Duration,
        max_bytes: u64,
    ) -> crate::target::OutputPruned {
        self.local.prune_output(keep, max_bytes).await
    }

    async fn run_release_command(
        &self,
        command: crate::target::ReleaseCommand<'_>,
    ) -> Result<crate::target::CommandOutput, TargetError> {
        self.local.run_release_command(command).await
    }

    async fn prepare(
        &self,
        env: &EnvName,
        release: &ReleaseRecord,
        artifact: &Path,
        limits: &ArtifactLimits,
    ) -> Result<Vec<String>, TargetError> {
        let Some((links, hosts)) = self.fleet_of(env) else {
            return self.local.unpack(release, artifact, limits).await;
        };
        let started = Instant::now();
        let results = Self::each(links, hosts, |host, link| async move {
            let have = link
                .have_artifact(&release.digest)
                .await
                .map_err(|e| super::links::describe(&host, e))?;
            let sent = if have {
                0
            } else {
                let _slot = links
                    .ssh()
                    .transfer_slot()
                    .await
                    .map_err(|e| e.to_string())?;
                link.upload(artifact, &release.digest)
                    .await
                    .map_err(|e| super::links::describe(&host, e))?
            };
            let repairs = link
                .prepare_release(super::protocol::ReleaseSpec::of(release), limits)
                .await
                .map_err(|e| super::links::describe(&host, e))?;
            Ok((sent, repairs))
        })
        .await;
        let mut notes = Vec::new();
        let mut failed = BTreeMap::new();
        let mut uploaded = 0;
        for (host, result) in results {
            match result {
                Ok((sent, repairs)) => {
                    if sent > 0 {
                        uploaded += 1;
                    }
                    notes.extend(repairs.into_iter().map(|r| format!("host {host}: {r}")));
                }
                Err(e) => {
                    notes.push(format!("host {host} failed: {e}"));
                    failed.insert(host, e);
                }
            }
        }
        if failed.len() == hosts.len() {
            return Err(TargetError::Unpack {
                version: release.version.to_string(),
                reason: format!("no host could prepare it: {}", joined(&failed)),
            });
        }
        notes.insert(
            0,
            format!(
                "release {} on {} of {} host(s) in {:.1} s (sent to {uploaded}, already on {})",
                release.version,
                hosts.len() - failed.len(),
                hosts.len(),
                started.elapsed().as_secs_f64(),
                hosts.len() - failed.len() - uploaded
            ),
        );
        let key = (env.clone(), release.version.to_string());
        let mut unprepared = self.unprepared.lock().unwrap_or_else(|p| p.into_inner());
        if failed.is_empty() {
            unprepared.remove(&key);
        } else {
            unprepared.insert(key, failed);
        }
        Ok(notes)
    }

    async fn check_release(&self, release: &ReleaseRecord) -> Option<Result<(), String>> {
        // The controller's own copy; a fleet host's copy is checked (and
        // repaired) by every prepare there.
        self.local.check_release(release).await
    }

    async fn ensure_instances(&self, spec: &LaunchSpec) -> Result<Started, TargetError> {
        let Some((links, env_hosts)) = self.fleet_of(&spec.env) else {
            return self.local.ensure_instances(spec).await;
        };
        let hosts: Vec<String> = if spec.hosts.is_empty() {
            env_hosts.to_vec()
        } else {
            spec.hosts.clone()
        };
        let unprepared = self
            .unprepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(spec.env.clone(), spec.version.to_string()))
            .cloned()
            .unwrap_or_default();
        let mut failed_hosts = BTreeMap::new();
        let mut ready = Vec::new();
        for host in hosts {
            match unprepared.get(&host) {
                Some(why) => {
                    failed_hosts.insert(host, format!("release not prepared: {why}"));
                }
                None => ready.push(host),
            }
        }
        let on_host = LaunchSpec {
            hosts: Vec::new(),
            ..spec.clone()
        };
        let on_host = &on_host;
        let results = Self::each(links, &ready, |host, link| async move {
            link.ensure_instances(on_host)
                .await
                .map_err(|e| super::links::describe(&host, e))
        })
        .await;
        let mut instances = Vec::new();
        for (host, result) in results {
            match result {
                Ok(list) => instances.extend(list.into_iter().map(|i| from_host(&host, i))),
                Err(e) => {
                    failed_hosts.insert(host, e);
                }
            }
        }
        if instances.is_empty() && !failed_hosts.is_empty() {
            return Err(TargetError::Start {
                instance: format!("{} on every host", spec.version),
                reason: joined(&failed_hosts),
            });
        }
        Ok(Started {
            instances,
            failed_hosts,
        })
    }

    async fn restart_instance(
        &self,
        spec: &LaunchSpec,
        instance: &InstanceRef,
    ) -> Result<(), TargetError> {
        let Some((links, host)) = self.link_of(instance) else {
            return self.local.restart_instance(spec, instance).await;
        };
        let link = links.link(&host).await.map_err(TargetError::Io)?;
        let spec = LaunchSpec {
            hosts: Vec::new(),
            ..spec.clone()
        };
        link.restart_instance(&spec, &on_host(instance))
            .await
            .map_err(|e| TargetError::Io(super::links::describe(&host, e)))
    }

    async fn stop(&self, instances: &[InstanceRef]) -> Result<(), TargetError> {
        let (by_host, local) = split_by_host(instances);
        if let Some(links) = self.fleet.as_deref() {
            let hosts: Vec<String> = by_host.keys().cloned().collect();
            let by_host = &by_host;
            for (host, result) in Self::each(links, &hosts, |host, link| async move {
                link.stop(&by_host[&host])
                    .await
                    .map_err(|e| super::links::describe(&host, e))
            })
            .await
            {
                // A host that cannot be reached now stops them when it is
                // converged; waiting for it would hold every other host.
                if let Err(e) = result {
                    tracing::warn!(host, error = %e, "instances left to stop when the host is back");
                }
            }
        }
        if local.is_empty() {
            Ok(())
        } else {
            self.local.stop(&local).await
        }
    }

    async fn exited(&self, instance: &InstanceRef) -> Option<String> {
        let Some((links, host)) = self.link_of(instance) else {
            return self.local.exited(instance).await;
        };
        match links.link(&host).await {
            Err(e) => Some(e),
            Ok(link) => link
                .exited(&on_host(instance))
                .await
                .unwrap_or_else(|e| Some(super::links::describe(&host, e))),
        }
    }

    async fn running(&self) -> Vec<RunningInstance> {
        let mut all = self.local.running().await;
        let Some(links) = self.fleet.as_deref() else {
            return all;
        };
        let hosts = links.host_names();
        for (host, result) in Self::each(links, &hosts, |host, link| async move {
            link.running()
                .await
                .map_err(|e| super::links::describe(&host, e))
        })
        .await
        {
            match result {
                Ok(list) => all.extend(list.into_iter().map(|r| RunningInstance {
                    id: fleet_id(&host, &r.id),
                    host: Some(host.clone()),
                    ..r
                })),
                // Unreachable is not "nothing runs there".
                Err(e) => tracing::warn!(host, error = %e, "cannot list the host's instances"),
            }
        }
        all
    }

    async fn logs(&self, instance_id: &str, max_bytes: u64) -> Result<String, TargetError> {
        let fleet = self.fleet.as_deref();
        match (fleet, instance_id.rsplit_once('@')) {
            (Some(links), Some((id, host))) => {
                let link = links.link(host).await.map_err(TargetError::Io)?;
                link.logs(id, max_bytes)
                    .await
                    .map_err(|e| TargetError::Io(super::links::describe(host, e)))
            }
            _ => self.local.logs(instance_id, max_bytes).await,
        }
    }

    async fn smoke(&self, settings: &SmokeSettings, instances: &[InstanceRef]) -> Vec<SmokeResult> {
        let (by_host, local) = split_by_host(instances);
        let mut results = if local.is_empty() {
            Vec::new()
        } else {
            self.local.smoke(settings, &local).await
        };
        let Some(links) = self.fleet.as_deref() else {
            return results;
        };
        let hosts: Vec<String> = by_host.keys().cloned().collect();
        let by_host = &by_host;
        for (host, result) in Self::each(links, &hosts, |host, link| async move {
            link.smoke(settings, &by_host[&host])
                .await
                .map_err(|e| super::links::describe(&host, e))
        })
        .await
        {
            match result {
                Ok(list) => results.extend(list.into_iter().map(|r| SmokeResult {
                    instance: fleet_id(&host, &r.instance),
                    ..r
                })),
                // Every check of that host's instances failed, saying why.
                Err(e) => {
                    for i in &by_host[&host] {
                        for check in &settings.checks {
                            results.push(SmokeResult {
                                check: check.name.clone(),
                                instance: fleet_id(&host, &i.id),
                                critical: check.critical,
                                passed: false,
                                detail: e.clone(),
                                elapsed_ms: 0,
                            });
                        }
                    }
                }
            }
        }
        results
    }

    async fn usage(&self, instances: &[InstanceRef]) -> Vec<InstanceUsage> {
        let (by_host, local) = split_by_host(instances);
        let mut readings = if local.is_empty() {
            Vec::new()
        } else {
            self.local.usage(&local).await
        };
        let unread = |host: &str, i: &InstanceRef, why: &str| InstanceUsage {
            instance: fleet_id(host, &i.id),
            unavailable: Some(why.to_owned()),
            ..InstanceUsage::default()
        };
        let Some(links) = self.fleet.as_deref() else {
            for (host, list) in &by_host {
                readings.extend(
                    list.iter()
                        .map(|i| unread(host, i, "no fleet is configured")),
                );
            }
            return readings;
        };
        let hosts: Vec<String> = by_host.keys().cloned().collect();
        let by_host = &by_host;
        for (host, result) in Self::each(links, &hosts, |host, link| async move {
            link.usage(&by_host[&host])
                .await
                .map_err(|e| super::links::describe(&host, e))
        })
        .await
        {
            match result {
                Ok(list) => readings.extend(list.into_iter().map(|r| InstanceUsage {
                    instance: fleet_id(&host, &r.instance),
                    ..r
                })),
                // No data, and why: never a silent pass.
                Err(e) => readings.extend(by_host[&host].iter().map(|i| unread(&host, i, &e))),
            }
        }
        readings
    }

    async fn probe(&self, instance: &InstanceRef, path: &str, timeout: Duration) -> ProbeOutcome {
        let Some((links, host)) = self.link_of(instance) else {
            return self.local.probe(instance, path, timeout).await;
        };
        let link = match links.link(&host).await {
            Ok(link) => link,
            Err(e) => return ProbeOutcome::Probe(Probe::Unreachable(e)),
        };
        match link.probe(&on_host(instance), path, timeout).await {
            Ok(outcome) => outcome,
            Err(e) => ProbeOutcome::Probe(Probe::Unreachable(super::links::describe(&host, e))),
        }
    }
}

/// The pools a host's router gets: each pool's instances on that host, on
/// its loopback. A pool with none there is left out and the rest take its
/// share; `None` when the host has no instance in any pool (its routing is
/// left as it is: a failed host keeps serving the old release).
fn host_pools(host: &str, pools: &[InstancePool]) -> Option<Vec<Pool>> {
    let mut out: Vec<Pool> = pools
        .iter()
        .map(|p| Pool {
            name: p.name.clone(),
            weight: p.weight,
            upstreams: p
                .instances
                .iter()
                .filter(|i| i.host.as_deref() == Some(host))
                .map(|i| SocketAddr::from(([127, 0, 0, 1], i.port)))
                .collect(),
        })
        .filter(|p| !p.upstreams.is_empty())
        .collect();
    if out.is_empty() {
        return None;
    }
    if out.iter().all(|p| p.weight == 0) || out.len() == 1 {
        let share = 100 / out.len() as u32;
        for p in &mut out {
            p.weight = share;
        }
    }
    Some(out)
}

#[async_trait]
impl TrafficRouter for Placement {
    async fn route(
        &self,
        env: &EnvName,
        listen: SocketAddr,
        pools: Vec<InstancePool>,
        affinity: Option<Affinity>,
    ) -> Result<(), RouteError> {
        let Some((links, hosts)) = self.fleet_of(env) else {
            return self.router.route(env, listen, pools, affinity).await;
        };
        let plan: Vec<(String, Vec<Pool>)> = hosts
            .iter()
            .filter_map(|h| host_pools(h, &pools).map(|p| (h.clone(), p)))
            .collect();
        let targets: Vec<String> = plan.iter().map(|(h, _)| h.clone()).collect();
        let plan: HashMap<String, Vec<Pool>> = plan.into_iter().collect();
        let (plan, affinity) = (&plan, &affinity);
        let metrics_listen = self.router.metrics_listen(env);
        let started = Instant::now();
        // Ok(Ok(ack)): set; Ok(Err(why)): the host refused it; Err(why): the
        // host could not be reached.
        let results = Self::each(links, &targets, |host, link| async move {
            Ok(
                match link
                    .route(
                        env,
                        listen,
                        plan[&host].clone(),
                        affinity.clone(),
                        metrics_listen,
                    )
                    .await
                {
                    Ok(()) => Ok(started.elapsed()),
                    Err(e @ super::link::LinkError::Remote(_)) => {
                        Err(super::links::describe(&host, e))
                    }
                    Err(e) => return Err(super::links::describe(&host, e)),
                },
            )
        })
        .await;
        let mut acks = Vec::new();
        let mut refused = BTreeMap::new();
        let mut unreachable = BTreeMap::new();
        for (host, result) in results {
            match result {
                Ok(Ok(at)) => acks.push(at),
                Ok(Err(e)) => {
                    refused.insert(host, e);
                }
                Err(e) => {
                    unreachable.insert(host, e);
                }
            }
        }
        // A host that refuses the routing fails it. One that cannot be
        // reached keeps the routing its router has (it serves nobody while
        // away) and is not allowed to hold every other host: the rollout
        // counts it failed where it needs it (its start, its probes), and
        // its router is revived with its routing when it is back.
        if !refused.is_empty() || (acks.is_empty() && !unreachable.is_empty()) {
            refused.extend(unreachable);
            return Err(RouteError::Refused {
                env: env.to_string(),
                reason: joined(&refused),
            });
        }
        for (host, why) in &unreachable {
            self.add_note(
                env,
                format!("routing not set on unreachable host {host}: {why}"),
            );
        }
        if let (Some(first), Some(last)) = (acks.iter().min(), acks.iter().max()) {
            self.add_note(
                env,
                format!(
                    "routing set on {} host(s); switch skew {} ms (first to last acknowledgement)",
                    acks.len(),
                    (*last - *first).as_millis()
                ),
            );
        }
        Ok(())
    }

    async fn revive(&self, env: &EnvName, listen: SocketAddr) -> Result<bool, RouteError> {
        let Some((links, hosts)) = self.fleet_of(env) else {
            return self.router.revive(env, listen).await;
        };
        let mut started = false;
        let metrics_listen = self.router.metrics_listen(env);
        for (host, result) in Self::each(links, hosts, |host, link| async move {
            link.revive(env, listen, metrics_listen)
                .await
                .map_err(|e| super::links::describe(&host, e))
        })
        .await
        {
            match result {
                Ok(true) => {
                    tracing::warn!(host, env = %env, "router on host was not running; started it again");
                    started = true;
                }
                Ok(false) => {}
                Err(e) => tracing::debug!(host, error = %e, "router on host not checked"),
            }
        }
        Ok(started)
    }

    async fn is_running(&self, env: &EnvName) -> bool {
        let Some((links, hosts)) = self.fleet_of(env) else {
            return self.router.is_running(env).await;
        };
        // A host that cannot be asked is not known to have lost its router.
        Self::each(links, hosts, |host, link| async move {
            link.router_running(env)
                .await
                .map_err(|e| super::links::describe(&host, e))
        })
        .await
        .into_iter()
        .all(|(_, r)| r.unwrap_or(true))
    }

    fn take_notes(&self, env: &EnvName) -> Vec<String> {
        self.notes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(env)
            .unwrap_or_default()
    }

    async fn stop(&self, env: &EnvName) {
        let Some((links, hosts)) = self.fleet_of(env) else {
            return self.router.stop(env).await;
        };
        for (host, result) in Self::each(links, hosts, |host, link| async move {
            link.stop_router(env)
                .await
                .map_err(|e| super::links::describe(&host, e))
        })
        .await
        {
            if let Err(e) = result {
                tracing::warn!(host, error = %e, "router on host not stopped");
            }
        }
    }
}

#[async_trait]
impl MetricProvider for Placement {
    async fn pool_stats(
        &self,
        env: &EnvName,
        slower_than_ms: &[f64],
    ) -> Result<Vec<PoolStats>, MetricError> {
        match self.pool_stats_by_host(env, slower_than_ms).await? {
            Some(by_host) => Ok(sum_pools(by_host.into_values())),
            None => self.router.pool_stats(env, slower_than_ms).await,
        }
    }

    async fn pool_stats_by_host(
        &self,
        env: &EnvName,
        slower_than_ms: &[f64],
    ) -> Result<Option<BTreeMap<String, Vec<PoolStats>>>, MetricError> {
        let Some((links, hosts)) = self.fleet_of(env) else {
            return Ok(None);
        };
        let results = Self::each(links, hosts, |host, link| async move {
            link.pool_stats(env, slower_than_ms)
                .await
                .map_err(|e| super::links::describe(&host, e))
        })
        .await;
        let answered = results.iter().filter(|(_, r)| r.is_ok()).count();
        // Under half the fleet is not the fleet: no figures rather than
        // figures that hide most hosts.
        if answered * 2 < hosts.len() {
            let failed: BTreeMap<String, String> = results
                .into_iter()
                .filter_map(|(h, r)| r.err().map(|e| (h, e)))
                .collect();
            return Err(MetricError {
                env: env.to_string(),
                reason: format!(
                    "only {answered} of {} host(s) answered: {}",
                    hosts.len(),
                    joined(&failed)
                ),
            });
        }
        Ok(Some(
            results
                .into_iter()
                .filter_map(|(h, r)| r.ok().map(|p| (h, p)))
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_router::SlowerThan;

    fn inst(id: &str, port: u16, host: &str) -> InstanceRef {
        InstanceRef {
            id: fleet_id(host, id),
            port,
            host: Some(host.to_owned()),
        }
    }

    #[test]
    fn a_fleet_id_goes_back_to_the_hosts_own_id() {
        let i = inst("production-d3-1", 4000, "web-2");
        assert_eq!(i.id, "production-d3-1@web-2");
        assert_eq!(on_host(&i), InstanceRef::local("production-d3-1", 4000));
    }

    #[test]
    fn each_host_gets_its_own_instances_and_an_absent_pool_gives_up_its_share() {
        let pools = vec![
            InstancePool {
                name: "1.0.0".into(),
                weight: 90,
                instances: vec![inst("a", 1, "h1"), inst("b", 2, "h2")],
            },
            InstancePool {
                name: "2.0.0".into(),
                weight: 10,
                instances: vec![inst("c", 3, "h1"), inst("d", 4, "h3")],
            },
        ];
        let h1 = host_pools("h1", &pools).unwrap();
        assert_eq!(h1.len(), 2);
        assert_eq!((h1[0].weight, h1[1].weight), (90, 10));
        assert_eq!(h1[0].upstreams, vec![SocketAddr::from(([127, 0, 0, 1], 1))]);
        let h2 = host_pools("h2", &pools).unwrap();
        assert_eq!(
            (h2.len(), h2[0].name.as_str(), h2[0].weight),
            (1, "1.0.0", 100)
        );
        let h3 = host_pools("h3", &pools).unwrap();
        assert_eq!(
            (h3.len(), h3[0].name.as_str(), h3[0].weight),
            (1, "2.0.0", 100)
        );
        assert_eq!(
            host_pools("h4", &pools),
            None,
            "a host with nothing keeps its routing"
        );
    }

    #[test]
    fn pool_figures_add_across_hosts() {
        let p = |requests, errors, p99, over| PoolStats {
            name: "2.0.0".into(),
            requests,
            errors,
            client_errors: 1,
            p50_ms: 1.0,
            p99_ms: p99,
            slower_than: vec![SlowerThan {
                limit_ms: 100.0,
                requests: over,
            }],
            latency_histogram: None,
        };
        let sum = sum_pools(vec![
            vec![p(100, 2, 9.0, 3)],
            vec![p(50, 1, 30.0, 4)],
            vec![p(0, 0, 99.0, 0)],
        ]);
        assert_eq!(sum.len(), 1);
        assert_eq!(
            (sum[0].requests, sum[0].errors, sum[0].client_errors),
            (150, 3, 3)
        );
        assert_eq!(sum[0].slower_than[0].requests, 7);
        assert_eq!(
            sum[0].p99_ms, 30.0,
            "a host that served nothing does not set the P99"
        );
    }

    /// Host A: 1000 answers at 10 ms; host B: 10 at 500 ms. Of the 1010,
    /// the slowest 1% (10) are B's, so the P99 is 10 ms; the highest of the
    /// hosts' P99s (B's 500 ms) is not the fleet's. Without a histogram
    /// from every host that served, the sum keeps that upper bound.
    #[test]
    fn fleet_percentiles_come_from_the_hosts_histograms_merged() {
        use gantry_router::latency::{encode, latency_histogram};
        let host = |n: u64, at_us: u64, with_histogram: bool| {
            let mut h = latency_histogram(3);
            h.record_n(at_us, n).unwrap();
            vec![PoolStats {
                name: "2.0.0".into(),
                requests: n,
                p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
                p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
                latency_histogram: with_histogram.then(|| encode(&h)),
                ..PoolStats::default()
            }]
        };
        let merged = sum_pools(vec![host(1000, 10_000, true), host(10, 500_000, true)]);
        assert_eq!(merged[0].requests, 1010);
        assert!(
            (merged[0].p99_ms - 10.0).abs() < 0.02,
            "P99 of the merge: {}",
            merged[0].p99_ms
        );
        assert!((merged[0].p50_ms - 10.0).abs() < 0.02);
        assert_eq!(merged[0].latency_histogram, None);

        // One host's router sent no histogram: the highest P99 stands.
        let bounded = sum_pools(vec![host(1000, 10_000, true), host(10, 500_000, false)]);
        assert!(
            (bounded[0].p99_ms - 500.0).abs() < 0.5,
            "upper bound: {}",
            bounded[0].p99_ms
        );

        // 20 slow answers of 1020 are past the 1% mark: the P99 is B's.
        let slow = sum_pools(vec![host(1000, 10_000, true), host(20, 500_000, true)]);
        assert!((slow[0].p99_ms - 500.0).abs() < 0.5, "{}", slow[0].p99_ms);
    }
}
