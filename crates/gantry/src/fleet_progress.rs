//! Where a fleet deployment stands on each host, read from the deployment
//! itself (its plan of hosts, its new instances and their health, its
//! failed hosts): what `gantry deploy` shows per host while it follows one.

use gantry_core::{Deployment, Phase};

/// One host's progress in a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostProgress {
    pub host: String,
    /// New instances healthy on the host, of `expected`.
    pub healthy: u64,
    pub expected: u64,
    /// What the host is at, in words.
    pub stage: String,
    pub failed: bool,
}

/// The deployment's hosts: its plan's, in rollout order, then any other
/// host its instances or failures name (a deployment without a plan shows
/// the hosts it has reached so far); empty when it is not on a fleet.
fn host_names(d: &Deployment) -> Vec<&str> {
    let planned = d
        .settings
        .fleet
        .iter()
        .flat_map(|f| f.waves.iter().flat_map(|w| w.batches.iter().flatten()))
        .map(String::as_str);
    let reached = d
        .old_instances
        .iter()
        .chain(&d.new_instances)
        .filter_map(|i| i.host.as_deref());
    let failed = d.failed_hosts.keys().map(String::as_str);
    let mut names: Vec<&str> = Vec::new();
    for name in planned.chain(reached).chain(failed) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// Every host of the deployment, in rollout order; empty when the
/// deployment is not on a fleet.
pub fn hosts(d: &Deployment) -> Vec<HostProgress> {
    let expected = u64::from(d.settings.instances);
    let mut out: Vec<HostProgress> = Vec::new();
    for host in host_names(d) {
        let mine: Vec<&str> = d
            .new_instances
            .iter()
            .filter(|i| i.host.as_deref() == Some(host))
            .map(|i| i.id.as_str())
            .collect();
        let started = mine.len() as u64;
        let healthy = mine
            .iter()
            .filter(|id| d.health.get(**id).is_some_and(|h| h.up))
            .count() as u64;
        let failed = d.failed_hosts.get(host);
        let stage = if let Some(why) = failed {
            format!("failed: {why}")
        } else {
            match d.phase {
                Phase::RolledBack => "rolled back".to_owned(),
                Phase::RollingBack => "rolling back".to_owned(),
                Phase::Failed if started == 0 => "not deployed".to_owned(),
                _ if started == 0 => "waiting".to_owned(),
                Phase::Succeeded => format!("serves {}", d.version),
                _ if healthy < started || started < expected => {
                    format!("started {started}/{expected}, healthy {healthy}/{expected}")
                }
                _ if d.traffic_on_new => format!("serving {} ({})", d.version, d.phase),
                _ => format!("healthy {healthy}/{expected} ({})", d.phase),
            }
        };
        out.push(HostProgress {
            host: host.to_owned(),
            healthy,
            expected,
            stage,
            failed: failed.is_some(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_core::machine::{
        DeploySettings, DeploymentKind, FleetSettings, FleetWave, HealthSettings, InstanceHealth,
        NewDeployment, StrategySettings,
    };
    use gantry_core::InstanceRef;

    fn deployment() -> Deployment {
        let mut d = Deployment::new(
            NewDeployment {
                id: 7,
                env: "production".parse().unwrap(),
                kind: DeploymentKind::Deploy,
                version: "2.0.0".parse().unwrap(),
                previous_version: Some("1.0.0".parse().unwrap()),
                old_instances: vec![],
                settings: DeploySettings {
                    instances: 2,
                    health: HealthSettings {
                        interval_ms: 100,
                        startup_interval_ms: 10,
                        failure_threshold: 1,
                        start_timeout_ms: 1000,
                    },
                    bake_ms: 0,
                    strategy: StrategySettings::BlueGreen,
                    smoke: None,
                    freezes: vec![],
                    fleet: Some(FleetSettings {
                        waves: vec![FleetWave {
                            name: "all".into(),
                            batches: vec![vec!["h1".into()], vec!["h2".into(), "h3".into()]],
                        }],
                        max_failed: 1,
                    }),
                    watch: None,
                    resources: Default::default(),
                    hooks: Vec::new(),
                    migrations: Vec::new(),
                },
                requested_by: "t".into(),
            },
            0,
        );
        d.phase = Phase::Verifying;
        d
    }

    fn on(d: &mut Deployment, host: &str, n: u32, up: u32) {
        for k in 0..n {
            let id = format!("production-d7-{k}@{host}");
            d.new_instances.push(InstanceRef {
                id: id.clone(),
                port: 4000 + k as u16,
                host: Some(host.into()),
            });
            d.health.insert(
                id,
                InstanceHealth {
                    up: k < up,
                    ..InstanceHealth::default()
                },
            );
        }
    }

    #[test]
    fn each_host_of_the_plan_shows_its_own_instances_health_and_failure() {
        let mut d = deployment();
        on(&mut d, "h1", 2, 2);
        on(&mut d, "h2", 2, 1);
        d.failed_hosts
            .insert("h3".into(), "host h3: did not answer".into());
        let p = hosts(&d);
        assert_eq!(
            p.iter().map(|p| p.host.as_str()).collect::<Vec<_>>(),
            ["h1", "h2", "h3"]
        );
        assert_eq!((p[0].healthy, p[0].expected), (2, 2));
        assert_eq!(p[0].stage, "healthy 2/2 (verifying)");
        assert_eq!(p[1].stage, "started 2/2, healthy 1/2");
        assert!(p[2].failed);
        assert_eq!(p[2].stage, "failed: host h3: did not answer");

        d.traffic_on_new = true;
        assert_eq!(hosts(&d)[0].stage, "serving 2.0.0 (verifying)");
        d.phase = Phase::Succeeded;
        assert_eq!(hosts(&d)[0].stage, "serves 2.0.0");
    }

    #[test]
    fn without_a_plan_the_hosts_reached_are_shown_and_a_local_deployment_has_none() {
        let mut d = deployment();
        d.settings.fleet = None;
        assert!(hosts(&d).is_empty());
        d.old_instances.push(InstanceRef {
            id: "production-d6-1@h9".into(),
            port: 4100,
            host: Some("h9".into()),
        });
        on(&mut d, "h2", 2, 2);
        let p = hosts(&d);
        assert_eq!(
            p.iter()
                .map(|p| (p.host.as_str(), p.stage.as_str()))
                .collect::<Vec<_>>(),
            [("h9", "waiting"), ("h2", "healthy 2/2 (verifying)")]
        );
    }
}
