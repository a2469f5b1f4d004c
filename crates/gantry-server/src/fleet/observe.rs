//! Seeing the fleet (`gantry hosts`): each host asked, in parallel and
//! within a deadline, what runs there, whether its routers run and whether
//! its instances answer their health check. Observation only: nothing here
//! starts, stops or routes anything, and a host that does not answer in time
//! is shown as such instead of holding the answer up.
//!
//! [`HostObserver`] is the seam the controller reads through; [`FleetObserver`]
//! answers it over the controller's open channels ([`FleetLinks`]).

use super::links::FleetLinks;
use super::placement::fleet_id;
use crate::target::{ProbeOutcome, RunningInstance};
use async_trait::async_trait;
use futures_util::future::join_all;
use gantry_core::machine::Probe;
use gantry_core::{EnvName, InstanceRef, Millis};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// What to ask the hosts.
#[derive(Debug, Clone)]
pub struct ObserveRequest {
    /// Each host and the environments the config places on it.
    pub hosts: Vec<(String, Vec<EnvName>)>,
    /// The health check's path, probed on every running instance.
    pub health_path: String,
    pub probe_timeout: Duration,
    /// How long one host gets to answer everything.
    pub within: Duration,
}

/// One host's answer (or its silence).
#[derive(Debug, Clone, Default)]
pub struct HostObservation {
    pub host: String,
    pub reachable: bool,
    pub error: Option<String>,
    pub connected_since: Option<Millis>,
    pub last_seen: Option<Millis>,
    pub gantry_version: Option<String>,
    pub free_bytes: Option<u64>,
    /// The host's instances, ids as the controller knows them (`id@host`).
    pub running: Vec<RunningInstance>,
    /// Each running instance's health by its controller id: `Some(true)`
    /// healthy, `Some(false)` answered badly, `None` not known; and the detail.
    pub health: BTreeMap<String, (Option<bool>, Option<String>)>,
    /// Whether each environment's router runs on the host.
    pub routers: BTreeMap<EnvName, bool>,
}

#[async_trait]
pub trait HostObserver: Send + Sync {
    async fn observe(&self, request: &ObserveRequest) -> Vec<HostObservation>;
}

/// [`HostObserver`] over the controller's channels to its hosts.
pub struct FleetObserver {
    links: Arc<FleetLinks>,
}

impl FleetObserver {
    pub fn new(links: Arc<FleetLinks>) -> FleetObserver {
        FleetObserver { links }
    }
}

#[async_trait]
impl HostObserver for FleetObserver {
    async fn observe(&self, request: &ObserveRequest) -> Vec<HostObservation> {
        join_all(
            request
                .hosts
                .iter()
                .map(|(host, envs)| observe_host(&self.links, host, envs, request)),
        )
        .await
    }
}

async fn observe_host(
    links: &Arc<FleetLinks>,
    host: &str,
    envs: &[EnvName],
    request: &ObserveRequest,
) -> HostObservation {
    let mut seen = HostObservation {
        host: host.to_owned(),
        ..HostObservation::default()
    };
    // Connecting goes on in its own task: a host that takes longer than the
    // deadline is still connected for the next look (and the next deployment).
    let connecting = {
        let (links, host) = (links.clone(), host.to_owned());
        tokio::spawn(async move { links.link(&host).await })
    };
    let asked = tokio::time::timeout(request.within, async {
        let link = match connecting.await {
            Ok(Ok(link)) => link,
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(format!("connecting to host {host} stopped: {e}")),
        };
        seen.gantry_version = Some(link.welcome().version.clone());
        seen.free_bytes = Some(link.welcome().free_bytes);
        let running = link
            .running()
            .await
            .map_err(|e| super::links::describe(host, e))?;
        let routers = join_all(envs.iter().map(|env| {
            let link = link.clone();
            async move { (env.clone(), link.router_running(env).await) }
        }));
        let probes = join_all(running.iter().map(|r| {
            let link = link.clone();
            async move {
                let outcome = link
                    .probe(
                        &InstanceRef::local(r.id.clone(), r.port),
                        &request.health_path,
                        request.probe_timeout,
                    )
                    .await;
                (fleet_id(host, &r.id), outcome)
            }
        }));
        let (routers, probes) = tokio::join!(routers, probes);
        Ok((running, routers, probes))
    })
    .await;
    match asked {
        Err(_) => {
            seen.error = Some(format!(
                "host {host} did not answer within {} ms",
                request.within.as_millis()
            ))
        }
        Ok(Err(e)) => seen.error = Some(e),
        Ok(Ok((running, routers, probes))) => {
            seen.reachable = true;
            seen.running = running
                .into_iter()
                .map(|r| RunningInstance {
                    id: fleet_id(host, &r.id),
                    host: Some(host.to_owned()),
                    ..r
                })
                .collect();
            for (env, answer) in routers {
                if let Ok(running) = answer {
                    seen.routers.insert(env, running);
                }
            }
            for (id, outcome) in probes {
                let health = match outcome {
                    Ok(ProbeOutcome::Probe(Probe::Healthy)) => (Some(true), None),
                    Ok(ProbeOutcome::Probe(Probe::Unhealthy(d))) => (Some(false), Some(d)),
                    Ok(ProbeOutcome::Probe(Probe::Unreachable(d))) => (None, Some(d)),
                    Ok(ProbeOutcome::Exited(d)) => (Some(false), Some(format!("exited: {d}"))),
                    Err(e) => (None, Some(e.to_string())),
                };
                seen.health.insert(id, health);
            }
        }
    }
    let presence = links.presence(host).await;
    seen.connected_since = presence.connected_since.filter(|_| seen.reachable);
    seen.last_seen = presence.last_seen;
    if seen.error.is_none() && !seen.reachable {
        seen.error = presence.last_error;
    }
    seen
}
