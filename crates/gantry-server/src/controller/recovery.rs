//! After a restart and at shutdown: adopt or stop what runs, restore what
//! should serve, resume deployments; stop every workload on purpose.

use super::effects::pools_for;
use super::{ControlError, Controller};
use gantry_config::Environment;
use gantry_core::{DeploymentId, Event, InstanceRef};
use gantry_store::EnvState;
use std::collections::HashSet;
use std::sync::Arc;

impl Controller {
    // ---- restart ----

    /// After a restart: stop instances nobody owns, restart dead ones that
    /// should serve, make sure every router runs, then resume deployments.
    pub async fn recover(self: &Arc<Self>) -> Result<(), ControlError> {
        let active = self.store.active_deployments()?;
        let states = self.store.env_states()?;
        let mut owned: HashSet<String> = HashSet::new();
        for s in &states {
            owned.extend(s.instances.iter().map(|i| i.id.clone()));
        }
        for d in &active {
            owned.extend(
                d.old_instances
                    .iter()
                    .chain(&d.new_instances)
                    .map(|i| i.id.clone()),
            );
        }
        let active_ids: HashSet<DeploymentId> = active.iter().map(|d| d.id).collect();
        let orphans: Vec<InstanceRef> = self
            .target
            .running()
            .await
            .into_iter()
            .filter(|r| !owned.contains(&r.id) && !active_ids.contains(&r.deployment))
            .map(|r| InstanceRef {
                id: r.id,
                port: r.port,
                host: r.host,
            })
            .collect();
        if !orphans.is_empty() {
            tracing::warn!(
                count = orphans.len(),
                "stopping instances that no deployment owns"
            );
            let _ = self.target.stop(&orphans).await;
        }
        for s in &states {
            let Some(env) = self.config.environment(s.env.as_str()) else {
                tracing::warn!(env = %s.env, "environment is no longer in the config; leaving it alone");
                continue;
            };
            if let Some(d) = active.iter().find(|d| d.env == s.env) {
                // The deployment decides where traffic goes; keep its router up meanwhile.
                if !self.router.is_running(&s.env).await {
                    let (name, inst) = if d.traffic_on_new {
                        (Some(&d.version), &d.new_instances)
                    } else {
                        (d.previous_version.as_ref(), &d.old_instances)
                    };
                    let _ = self.route(&s.env, pools_for(name, inst)).await;
                }
                continue;
            }
            self.restore_env(env, s).await;
        }
        for d in active {
            tracing::info!(
                deployment = d.id,
                phase = d.phase.as_str(),
                "resuming deployment"
            );
            self.launch(d, Event::Resumed);
        }
        Ok(())
    }

    async fn restore_env(&self, env: &Environment, s: &EnvState) {
        for i in &s.instances {
            if self.target.exited(i).await.is_none() {
                continue;
            }
            // Each with the release it ran: on a fleet, a host that failed
            // within `max_failed` kept an earlier one.
            let Some((deployment, version)) = self.instance_release(s, i) else {
                tracing::error!(instance = %i.id, "cannot tell which deployment started it; not restarted");
                continue;
            };
            match self.launch_spec(env, deployment, &version, 1) {
                Ok(spec) => {
                    tracing::warn!(instance = %i.id, "instance was not running; starting it again");
                    if let Err(e) = self.target.restart_instance(&spec, i).await {
                        tracing::error!(instance = %i.id, error = %e, "could not restart instance");
                    }
                }
                Err(e) => tracing::error!(env = %env.name, error = %e, "cannot restart instances"),
            }
        }
        if !self.router.is_running(&env.name).await {
            if let Err(e) = self
                .route(&env.name, pools_for(Some(&s.version), &s.instances))
                .await
            {
                tracing::error!(env = %env.name, error = %e, "cannot start router");
            }
        }
    }
    /// Stops every instance and router this controller runs.
    pub async fn stop_workloads(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let running: Vec<InstanceRef> = self
            .target
            .running()
            .await
            .into_iter()
            .map(|r| InstanceRef {
                id: r.id,
                port: r.port,
                host: r.host,
            })
            .collect();
        let _ = self.target.stop(&running).await;
        for env in &self.config.environments {
            self.router.stop(&env.name).await;
        }
    }
}
