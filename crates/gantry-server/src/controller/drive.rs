//! Admission and the drive loop: a request becomes a deployment, and each
//! deployment is driven by stepping the machine, persisting, then acting.

use super::{now_ms, ControlError, Controller, LiveEvent};
use gantry_config::Environment;
use gantry_core::machine::RequestRefusal;
use gantry_core::{step, Deployment, DeploymentId, DeploymentKind, Event, Version};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

impl Controller {
    // ---- deployments ----

    async fn check_listen_free(&self, env: &Environment) -> Result<(), ControlError> {
        // A fleet environment listens on its hosts, not here.
        if !env.hosts.is_empty() {
            return Ok(());
        }
        // A deployment in progress may be starting the router this very
        // moment; the store refuses the second deployment with a clearer reason.
        let busy = self
            .store
            .active_deployments()?
            .iter()
            .any(|d| d.env == env.name);
        if busy || self.router.is_running(&env.name).await {
            return Ok(());
        }
        std::net::TcpListener::bind(env.listen)
            .map(drop)
            .map_err(|e| {
                ControlError::Conflict(format!(
                    "environment {} listens on {}, which is not available: {e}",
                    env.name, env.listen
                ))
            })
    }

    /// A new deployment of `version` into `env`, once the release passed the
    /// promotion path, the gates, the change type's rules and the freezes.
    pub async fn deploy(
        self: &Arc<Self>,
        env: &str,
        version: &str,
        by: &str,
        change: Option<&str>,
        reason: Option<String>,
        schedule: Option<gantry_core::governance::Schedule>,
    ) -> Result<Deployment, ControlError> {
        let env = self.env(env)?.clone();
        let version = Self::parse_version(version)?;
        let release = self.registered(&version)?;
        if env.require_signature && release.signed_by.is_none() {
            return Err(ControlError::Invalid(format!(
                "environment {} requires a signed release; {version} was registered without a signature",
                env.name
            )));
        }
        let change = self.admit(&env, &version, change, reason, schedule)?;
        if change.change == gantry_core::governance::ChangeType::Emergency {
            self.supersede_waiting(&env.name, by).await?;
        }
        self.check_listen_free(&env).await?;
        self.create(&env, DeploymentKind::Deploy, version, by, Some(change))
    }

    pub async fn rollback(
        self: &Arc<Self>,
        env: &str,
        to: Option<&str>,
        by: &str,
    ) -> Result<Deployment, ControlError> {
        let env = self.env(env)?.clone();
        let current = self.store.env_state(&env.name)?.ok_or_else(|| {
            ControlError::Conflict(format!(
                "nothing has been deployed to {}; there is nothing to roll back",
                env.name
            ))
        })?;
        let target = match to {
            Some(v) => {
                let v = Self::parse_version(v)?;
                self.registered(&v)?;
                if v == current.version {
                    return Err(ControlError::Invalid(format!(
                        "{v} is already serving {}",
                        env.name
                    )));
                }
                if !self.store.succeeded_versions(&env.name)?.contains(&v) {
                    return Err(ControlError::Invalid(format!(
                        "{v} never succeeded in {}; a rollback returns to a release that did",
                        env.name
                    )));
                }
                v
            }
            None => self
                .store
                .last_good_other_than(&env.name, &current.version)?
                .ok_or_else(|| {
                    ControlError::Conflict(format!(
                        "{} has no earlier successful release than {} to roll back to",
                        env.name, current.version
                    ))
                })?,
        };
        self.check_listen_free(&env).await?;
        // A rollback returns to a release that already served here: it is
        // the way out of trouble, so no gate, approval or freeze holds it.
        self.create(&env, DeploymentKind::Rollback, target, by, None)
    }

    fn create(
        self: &Arc<Self>,
        env: &Environment,
        kind: DeploymentKind,
        version: Version,
        by: &str,
        change: Option<gantry_core::governance::ChangeControl>,
    ) -> Result<Deployment, ControlError> {
        let current = self.store.env_state(&env.name)?;
        let mut settings = self.config.deploy_settings(env, kind);
        // A rollback returns to a release whose migrations already ran; a
        // deployment applies those of its release not applied here yet.
        if kind == DeploymentKind::Deploy {
            settings.migrations = self.pending_migrations(env, &self.registered(&version)?)?;
        }
        let now = now_ms();
        let d = self.store.create_deployment(&env.name, &mut |id| {
            let d = Deployment::new(
                gantry_core::NewDeployment {
                    id,
                    env: env.name.clone(),
                    kind,
                    version: version.clone(),
                    previous_version: current.as_ref().map(|c| c.version.clone()),
                    old_instances: current
                        .as_ref()
                        .map(|c| c.instances.clone())
                        .unwrap_or_default(),
                    settings: settings.clone(),
                    requested_by: by.to_owned(),
                },
                now,
            );
            match &change {
                Some(c) => d.with_change(c.clone()),
                None => d,
            }
        })?;
        self.launch(d.clone(), Event::Created);
        Ok(d)
    }

    /// Starts driving a deployment in the background, beginning with `first`
    /// (`Created` for a new one, `Resumed` after a restart).
    pub fn launch(self: &Arc<Self>, d: Deployment, first: Event) {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = d.id;
        // Only a leader drives; its term's end stops the loop and its effects.
        if self.spawn_led(self.clone().drive(d, tx.clone(), rx)) {
            self.inboxes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, tx.clone());
            let _ = tx.send(first);
        } else {
            tracing::warn!(deployment = id, "not driven: this controller does not lead");
        }
    }

    async fn drive(
        self: Arc<Self>,
        mut d: Deployment,
        tx: mpsc::UnboundedSender<Event>,
        mut rx: mpsc::UnboundedReceiver<Event>,
    ) {
        while let Some(event) = rx.recv().await {
            let now = now_ms();
            let mut t = step(&d, &event, now);
            // What an effect found on the way (a repaired release directory)
            // goes on the log before the line of the event it led to.
            let notes = self.take_notes(d.id);
            if !notes.is_empty() {
                t.log.splice(0..0, notes);
            }
            if t.deployment == d && t.effects.is_empty() && t.log.is_empty() {
                continue; // A stale event: nothing to record, nothing to do.
            }
            // Persist before acting. If the store refuses, act on nothing and retry.
            let outbox = self.outbox(&event, &d, &t.deployment, now);
            if let Err(e) = self.store.record(&event, &t, now, &outbox) {
                if self.lost_office(&e) {
                    // Another controller leads: it resumes this deployment.
                    break;
                }
                tracing::error!(deployment = d.id, error = %e, "cannot record event; retrying in 1s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = tx.send(event);
                continue;
            }
            for line in &t.log {
                tracing::info!(deployment = d.id, env = %d.env, "{line}");
            }
            self.announced(outbox);
            let _ = self.events.send(LiveEvent::Step {
                deployment: d.id,
                env: d.env.to_string(),
                version: d.version.to_string(),
                phase: t.deployment.phase,
                log: t.log.clone(),
                at: now,
            });
            d = t.deployment;
            for effect in t.effects {
                self.spawn_led(self.clone().execute(d.clone(), effect, tx.clone()));
            }
            if d.phase.is_terminal() {
                break;
            }
        }
        self.inboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&d.id);
        if d.phase == gantry_core::Phase::Succeeded && d.kind == DeploymentKind::Deploy {
            self.auto_deploy_after(Some(&d.env), &d.version).await;
        }
    }

    /// Sends a person's request (promote, pause, resume, abort) to a running deployment.
    pub fn request(&self, id: DeploymentId, event: Event) -> Result<(), ControlError> {
        let d = self
            .store
            .deployment(id)?
            .ok_or_else(|| ControlError::NotFound(format!("deployment {id} does not exist")))?;
        match d.accepts(&event) {
            Ok(()) => {}
            Err(RequestRefusal::Finished) => {
                return Err(ControlError::Conflict(format!(
                    "deployment {id} already finished ({})",
                    d.phase.as_str()
                )))
            }
            Err(RequestRefusal::NotInThisPhase) => {
                return Err(ControlError::Conflict(format!(
                    "deployment {id} is {}: promote acts on a canary step or on smoke checks waiting for a decision; pause and resume act on canary steps",
                    d.phase.as_str()
                )))
            }
        }
        let inboxes = self.inboxes.lock().unwrap_or_else(|p| p.into_inner());
        match inboxes.get(&id) {
            Some(tx) => {
                let _ = tx.send(event);
                Ok(())
            }
            None => Err(ControlError::Internal(format!(
                "deployment {id} is not being driven"
            ))),
        }
    }
}
