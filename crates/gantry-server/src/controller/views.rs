//! What the API shows: an environment's status, a deployment's summary and
//! the live events sent to subscribers.

pub use gantry_api::{DeploymentSummary, EnvStatus, InstanceStatus, LiveEvent};

use super::{ControlError, Controller};
use futures_util::future::join_all;
use gantry_api::EnvHostStatus;
use gantry_core::{Deployment, InstanceRef};
use std::time::Duration;

/// How long one instance's "does it run" may take: an instance on a host
/// that does not answer counts as not running after this, instead of
/// holding the status (and the status page) for the channel's own timeout.
const RUNNING_WITHIN: Duration = Duration::from_secs(3);

impl Controller {
    pub async fn status(&self) -> Result<Vec<EnvStatus>, ControlError> {
        let states = self.store.env_states()?;
        let active = self.store.active_deployments()?;
        let drift = self
            .last_drift
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut out = Vec::new();
        for env in &self.config.environments {
            let state = states.iter().find(|s| s.env == env.name);
            let refs = state.map(|s| s.instances.as_slice()).unwrap_or_default();
            let instances: Vec<InstanceStatus> = join_all(refs.iter().map(|i| async move {
                InstanceStatus {
                    id: i.id.clone(),
                    port: i.port,
                    running: self.runs_within(i).await,
                    host: i.host.clone(),
                }
            }))
            .await;
            let current = active.iter().find(|d| d.env == env.name);
            let hosts = if env.hosts.is_empty() {
                Vec::new()
            } else {
                // At rest, the last deployment says which hosts failed.
                let last = match current {
                    Some(d) => Some(d.clone()),
                    None => self.store.deployments(Some(&env.name), 1)?.pop(),
                };
                host_rows(
                    &env.hosts,
                    state.map(|s| s.version.to_string()),
                    &instances,
                    last.as_ref(),
                )
            };
            out.push(EnvStatus {
                name: env.name.to_string(),
                listen: env.listen.to_string(),
                version: state.map(|s| s.version.to_string()),
                since: state.map(|s| s.since),
                instances,
                active_deployment: current.map(|d| DeploymentSummary {
                    id: d.id,
                    version: d.version.to_string(),
                    phase: d.phase,
                }),
                hosts,
                drift: drift
                    .iter()
                    .filter(|f| f.env == env.name.as_str())
                    .cloned()
                    .collect(),
            });
        }
        Ok(out)
    }

    async fn runs_within(&self, instance: &InstanceRef) -> bool {
        tokio::time::timeout(RUNNING_WITHIN, self.target.exited(instance))
            .await
            .is_ok_and(|exited| exited.is_none())
    }
}

/// One row per host of a fleet environment: the state's instances there,
/// how many run, and whether the host failed in `last`.
fn host_rows(
    hosts: &[String],
    version: Option<String>,
    instances: &[InstanceStatus],
    last: Option<&Deployment>,
) -> Vec<EnvHostStatus> {
    hosts
        .iter()
        .map(|host| {
            let here: Vec<&InstanceStatus> = instances
                .iter()
                .filter(|i| i.host.as_deref() == Some(host))
                .collect();
            let failed = last.and_then(|d| d.failed_hosts.get(host).map(|why| (d.id, why)));
            EnvHostStatus {
                host: host.clone(),
                release: if here.is_empty() {
                    None
                } else {
                    version.clone()
                },
                up: here.iter().filter(|i| i.running).count() as u32,
                expected: here.len() as u32,
                failed: failed.map(|(_, why)| why.clone()),
                failed_in: failed.map(|(id, _)| id),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, host: &str, running: bool) -> InstanceStatus {
        InstanceStatus {
            id: format!("{id}@{host}"),
            port: 4000,
            running,
            host: Some(host.to_owned()),
        }
    }

    #[test]
    fn each_host_gets_its_instances_and_the_reason_it_failed() {
        let mut d: Deployment = serde_json::from_str(
            r#"{"id":4,"env":"production","kind":"deploy","version":"2.0.0","previous_version":"1.0.0",
            "settings":{"instances":2,"health":{"interval_ms":1,"startup_interval_ms":1,"failure_threshold":1,"start_timeout_ms":1},
            "bake_ms":0,"strategy":{"kind":"blue-green"}},"phase":"baking","phase_since":0,"created_at":0,"finished_at":null,
            "requested_by":"t","old_instances":[],"new_instances":[],"traffic_on_new":true,"health":{},"reason":null}"#,
        )
        .unwrap();
        d.failed_hosts
            .insert("h3".into(), "host h3: release not prepared".into());
        let instances = [
            instance("a", "h1", true),
            instance("b", "h1", true),
            instance("c", "h2", true),
            instance("d", "h2", false),
        ];
        let hosts = ["h1".to_owned(), "h2".to_owned(), "h3".to_owned()];
        let rows = host_rows(&hosts, Some("2.0.0".into()), &instances, Some(&d));
        let brief: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.host.as_str(),
                    r.release.as_deref(),
                    r.up,
                    r.expected,
                    r.failed_in,
                )
            })
            .collect();
        assert_eq!(
            brief,
            [
                ("h1", Some("2.0.0"), 2, 2, None),
                ("h2", Some("2.0.0"), 1, 2, None),
                ("h3", None, 0, 0, Some(4)),
            ]
        );
        assert_eq!(
            rows[2].failed.as_deref(),
            Some("host h3: release not prepared")
        );
        assert!(host_rows(&hosts, None, &[], None)
            .iter()
            .all(|r| r.failed.is_none()));
    }
}
