//! What the API shows: an environment's status, a deployment's summary and
//! the live events sent to subscribers.

pub use gantry_api::{DeploymentSummary, EnvStatus, InstanceStatus, LiveEvent};

use super::{ControlError, Controller};

impl Controller {
    pub async fn status(&self) -> Result<Vec<EnvStatus>, ControlError> {
        let states = self.store.env_states()?;
        let active = self.store.active_deployments()?;
        let mut out = Vec::new();
        for env in &self.config.environments {
            let state = states.iter().find(|s| s.env == env.name);
            let mut instances = Vec::new();
            for i in state.map(|s| s.instances.as_slice()).unwrap_or_default() {
                instances.push(InstanceStatus {
                    id: i.id.clone(),
                    port: i.port,
                    running: self.target.exited(i).await.is_none(),
                });
            }
            out.push(EnvStatus {
                name: env.name.to_string(),
                listen: env.listen.to_string(),
                version: state.map(|s| s.version.to_string()),
                since: state.map(|s| s.since),
                instances,
                active_deployment: active.iter().find(|d| d.env == env.name).map(|d| {
                    DeploymentSummary {
                        id: d.id,
                        version: d.version.to_string(),
                        phase: d.phase,
                    }
                }),
            });
        }
        Ok(out)
    }
}
