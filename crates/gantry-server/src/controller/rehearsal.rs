//! Rollback rehearsals: deploy a release, roll back, deploy it again, and
//! record the outcome as `rehearsal` evidence.

use super::{now_ms, ControlError, Controller};
use crate::governance::AUTO_ACTOR;
use gantry_config::Environment;
use gantry_core::evidence::{EvidenceKind, Report};
use gantry_core::{Deployment, DeploymentId, Event, Version};

/// The standards' bound on a rollback.
const ROLLBACK_LIMIT_MS: u64 = 15 * 60_000;

impl Controller {
    /// Starts a rollback rehearsal of `version` in `env`: deploy it, roll
    /// back to what serves now, deploy it again. The outcome is recorded as
    /// `rehearsal` evidence of the release when the three are done.
    pub fn start_rehearsal(
        self: &std::sync::Arc<Self>,
        env: &str,
        version: &str,
        by: &str,
    ) -> Result<(), ControlError> {
        let env = self.env(env)?.clone();
        let release = self.release(version)?;
        let current = self.store.env_state(&env.name)?.ok_or_else(|| {
            ControlError::Conflict(format!(
                "nothing serves {} yet, so there is nothing to roll back to; deploy a release there first",
                env.name
            ))
        })?;
        if current.version == release.version {
            return Err(ControlError::Conflict(format!(
                "{} already serves {}; a rehearsal deploys a release that is not live there yet",
                env.name, release.version
            )));
        }
        if let Some(d) = self
            .store
            .active_deployments()?
            .into_iter()
            .find(|d| d.env == env.name)
        {
            return Err(ControlError::Conflict(format!(
                "environment {} already has deployment {} of {} in progress",
                env.name, d.id, d.version
            )));
        }
        let this = self.clone();
        let by = by.to_owned();
        self.spawn_led(async move {
            this.rehearse(env, release.version, current.version, by)
                .await;
        });
        Ok(())
    }

    async fn rehearse(
        self: std::sync::Arc<Self>,
        env: Environment,
        version: Version,
        previous: Version,
        by: String,
    ) {
        let mut deployments = Vec::new();
        let outcome = self
            .rehearsal_steps(&env, &version, &by, &mut deployments)
            .await;
        let (passed, rollback_ms, detail) = match outcome {
            Ok(ms) if ms <= ROLLBACK_LIMIT_MS => (true, Some(ms), String::new()),
            Ok(ms) => (
                false,
                Some(ms),
                format!(
                    "the rollback took {}, over the standards' 15 minutes",
                    gantry_core::machine::seconds(ms)
                ),
            ),
            Err(why) => (false, None, why),
        };
        let report = Report::Rehearsal {
            env: env.name.to_string(),
            passed,
            deployments: deployments.clone(),
            rollback_ms,
            detail,
        };
        let document = serde_json::json!({
            "rehearsal": &report,
            "version": version.to_string(),
            "rolled_back_to": previous.to_string(),
            "by": by,
            "at": now_ms(),
        });
        let bytes = serde_json::to_vec_pretty(&document).unwrap_or_default();
        let name = format!("rehearsal-{}.json", env.name);
        if let Err(e) = self.record_evidence(
            &version,
            EvidenceKind::Rehearsal,
            &name,
            &bytes,
            report,
            &by,
        ) {
            tracing::error!(error = %e, "cannot record the rehearsal");
        }
    }

    /// Deploy, roll back, redeploy; the rollback's duration.
    async fn rehearsal_steps(
        self: &std::sync::Arc<Self>,
        env: &Environment,
        version: &Version,
        by: &str,
        deployments: &mut Vec<DeploymentId>,
    ) -> Result<u64, String> {
        let v = version.to_string();
        let first = self
            .deploy(
                env.name.as_str(),
                &v,
                by,
                None,
                Some("rollback rehearsal".into()),
                None,
            )
            .await
            .map_err(|e| format!("deploy: {e}"))?;
        deployments.push(first.id);
        self.await_success(first.id, "deploy").await?;
        let back = self
            .rollback(env.name.as_str(), None, by)
            .await
            .map_err(|e| format!("roll back: {e}"))?;
        deployments.push(back.id);
        let done = self.await_success(back.id, "roll back").await?;
        let rollback_ms = done
            .finished_at
            .map_or(0, |f| (f - done.created_at).max(0) as u64);
        let again = self
            .deploy(
                env.name.as_str(),
                &v,
                by,
                None,
                Some("rollback rehearsal: redeploy".into()),
                None,
            )
            .await
            .map_err(|e| format!("redeploy: {e}"))?;
        deployments.push(again.id);
        self.await_success(again.id, "redeploy").await?;
        Ok(rollback_ms)
    }

    /// Waits for a deployment to finish; anything but success is the reason
    /// a rehearsal failed. One that waits for approval is aborted: a
    /// rehearsal belongs where no approval is needed.
    async fn await_success(&self, id: DeploymentId, step: &str) -> Result<Deployment, String> {
        let d = self
            .watch_deployment(id, std::time::Duration::from_secs(3600), |d| {
                d.phase.is_terminal() || d.phase == gantry_core::Phase::AwaitingApproval
            })
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{step} (deployment {id}) did not finish within an hour"))?;
        match d.phase {
            gantry_core::Phase::Succeeded => Ok(d),
            gantry_core::Phase::AwaitingApproval => {
                let _ = self.request(
                    id,
                    Event::AbortRequested {
                        by: AUTO_ACTOR.to_owned(),
                    },
                );
                Err(format!(
                    "{step} (deployment {id}) needs approval in {}; rehearse where none is needed",
                    d.env
                ))
            }
            p => Err(format!(
                "{step} (deployment {id}) ended {}: {}",
                p.as_str(),
                d.reason.unwrap_or_default()
            )),
        }
    }
}
