//! `GET /hosts`: the config's hosts joined with what they answer now
//! (through the [`HostObserver`](crate::fleet::HostObserver) seam) and with
//! what the controller's state expects of them.

use super::{ControlError, Controller};
use crate::fleet::observe::{HostObservation, ObserveRequest};
use gantry_api::{HostEnvView, HostInstanceView, HostView, HostsView, InstanceHealthView};
use gantry_core::EnvName;
use std::collections::BTreeSet;
use std::time::Duration;

/// How long each host gets to answer a look at the fleet: a host that is
/// cut off shows as unreachable after this, instead of after the channel's
/// own timeouts.
const HOST_ANSWER_WITHIN: Duration = Duration::from_secs(4);
/// The longest a health probe of one instance may take within that.
const PROBE_WITHIN: Duration = Duration::from_millis(1500);

impl Controller {
    /// Every configured host: reachable or not (and when last seen), what it
    /// runs per environment, its instances' health and its routers.
    pub async fn hosts(&self) -> Result<HostsView, ControlError> {
        let states = self.store.env_states()?;
        let request = ObserveRequest {
            hosts: self
                .config
                .hosts
                .iter()
                .map(|h| (h.name.clone(), self.envs_on(&h.name)))
                .collect(),
            health_path: self.config.health.path.clone(),
            probe_timeout: Duration::from_millis(self.config.health.timeout_ms).min(PROBE_WITHIN),
            within: HOST_ANSWER_WITHIN,
        };
        let observed = match self.host_observer.get() {
            Some(observer) => observer.observe(&request).await,
            None => Vec::new(),
        };
        let mut hosts = Vec::new();
        for h in &self.config.hosts {
            let seen = observed.iter().find(|o| o.host == h.name);
            let environments = self
                .envs_on(&h.name)
                .into_iter()
                .map(|env| {
                    let state = states.iter().find(|s| s.env == env);
                    env_on_host(&env, &h.name, state, seen)
                })
                .collect();
            hosts.push(HostView {
                name: h.name.clone(),
                address: h.address.clone(),
                port: h.port,
                site: h.site.clone(),
                labels: h.labels.clone(),
                reachable: seen.is_some_and(|s| s.reachable),
                connected_since: seen.and_then(|s| s.connected_since),
                last_seen: seen.and_then(|s| s.last_seen),
                error: match seen {
                    Some(s) => s.error.clone(),
                    None => Some("the controller has no channels to hosts".to_owned()),
                },
                gantry_version: seen.and_then(|s| s.gantry_version.clone()),
                free_bytes: seen.and_then(|s| s.free_bytes),
                environments,
            });
        }
        Ok(HostsView {
            observed_at: super::now_ms(),
            hosts,
        })
    }

    /// The environments the config places on `host`, in the file's order.
    fn envs_on(&self, host: &str) -> Vec<EnvName> {
        self.config
            .environments
            .iter()
            .filter(|e| e.hosts.iter().any(|h| h == host))
            .map(|e| e.name.clone())
            .collect()
    }
}

fn env_on_host(
    env: &EnvName,
    host: &str,
    state: Option<&gantry_store::EnvState>,
    seen: Option<&HostObservation>,
) -> HostEnvView {
    let expected_instances = state.map_or(0, |s| {
        s.instances
            .iter()
            .filter(|i| i.host.as_deref() == Some(host))
            .count() as u32
    });
    let mut releases = BTreeSet::new();
    let mut instances = Vec::new();
    for r in seen
        .into_iter()
        .flat_map(|s| &s.running)
        .filter(|r| r.env == env.as_str())
    {
        releases.insert(r.version.clone());
        let (healthy, detail) = seen
            .and_then(|s| s.health.get(&r.id).cloned())
            .unwrap_or((None, None));
        instances.push(HostInstanceView {
            id: r.id.clone(),
            port: r.port,
            version: r.version.clone(),
            health: match healthy {
                Some(true) => InstanceHealthView::Healthy,
                Some(false) => InstanceHealthView::Unhealthy,
                None => InstanceHealthView::Unknown,
            },
            detail,
        });
    }
    instances.sort_by(|a, b| a.id.cmp(&b.id));
    HostEnvView {
        env: env.to_string(),
        releases: releases.into_iter().collect(),
        expected_release: state.map(|s| s.version.to_string()),
        expected_instances,
        instances,
        router_running: seen.and_then(|s| s.routers.get(env).copied()),
    }
}
