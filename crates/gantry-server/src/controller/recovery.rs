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
        for gone in self.restart_gone(env, s, |_| true).await {
            match gone.restarted {
                Ok(()) => {
                    tracing::warn!(instance = %gone.id, "instance was not running ({}); started it again", gone.why)
                }
                Err(e) => {
                    tracing::error!(instance = %gone.id, error = %e, "could not restart instance")
                }
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
    /// Starts again the instances of `s` (those `which` selects) that are
    /// gone, each with its id, port and the release of the deployment that
    /// started it: on a fleet, a host that failed within `max_failed` kept
    /// an earlier one. Returns what it found gone and how each restart went,
    /// for the caller to log at its own level.
    pub(super) async fn restart_gone(
        &self,
        env: &Environment,
        s: &EnvState,
        which: impl Fn(&InstanceRef) -> bool,
    ) -> Vec<GoneInstance> {
        let mut gone = Vec::new();
        for i in s.instances.iter().filter(|i| which(i)) {
            let Some(why) = self.target.exited(i).await else {
                continue;
            };
            let restarted = match self.instance_release(s, i) {
                None => Err("cannot tell which deployment started it".to_owned()),
                Some((deployment, version)) => {
                    match self.launch_spec(env, deployment, &version, 1) {
                        Ok(spec) => self
                            .target
                            .restart_instance(&spec, i)
                            .await
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e),
                    }
                }
            };
            gone.push(GoneInstance {
                id: i.id.clone(),
                why,
                restarted,
            });
        }
        gone
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

/// An instance found gone, and whether starting it again worked.
pub(super) struct GoneInstance {
    pub id: String,
    pub why: String,
    pub restarted: Result<(), String>,
}
