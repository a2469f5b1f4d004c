//! Drift detection and convergence: what runs (instances, routers, release
//! files) and the config, against what the store says each environment
//! was last deployed with. Checked periodically (new and resolved drift
//! go on the audit trail) and on `gantry drift`; `gantry converge`
//! repairs what can be repaired, each repair recorded.

use super::effects::pools_for;
use super::{now_ms, ControlError, Controller};
use gantry_api::{ConvergeReport, DriftFinding, DriftKind, DriftReport, Repair};
use gantry_core::audit::AuditEntry;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// The top-level settings whose values differ between `a` and `b`.
fn differing_settings(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    let keys: BTreeSet<&String> = a
        .as_object()
        .into_iter()
        .chain(b.as_object())
        .flat_map(|o| o.keys())
        .collect();
    keys.into_iter()
        .filter(|k| a.get(k.as_str()) != b.get(k.as_str()))
        .cloned()
        .collect()
}

impl Controller {
    /// Every difference between what runs and what should, environment by
    /// environment; environments with a deployment in progress are skipped.
    pub async fn drift(&self) -> Result<DriftReport, ControlError> {
        let states = self.store.env_states()?;
        let active = self.store.active_deployments()?;
        let mut findings = Vec::new();
        let mut skipped = Vec::new();
        let mut expected: BTreeSet<String> = active
            .iter()
            .flat_map(|d| d.new_instances.iter().chain(&d.old_instances))
            .map(|i| i.id.clone())
            .collect();
        for s in &states {
            expected.extend(s.instances.iter().map(|i| i.id.clone()));
            let env_name = s.env.to_string();
            if let Some(d) = active.iter().find(|d| d.env == s.env) {
                skipped.push(format!("{env_name}: deployment {} is in progress", d.id));
                continue;
            }
            let Ok(env) = self.env(&env_name) else {
                continue;
            };
            let finding = |kind, subject: String, detail: String, repairable| DriftFinding {
                env: env_name.clone(),
                kind,
                subject,
                detail,
                repairable,
            };
            for i in &s.instances {
                if let Some(why) = self.target.exited(i).await {
                    findings.push(finding(DriftKind::InstanceGone, i.id.clone(), why, true));
                }
            }
            if env.hosts.is_empty() && !self.router.is_running(&s.env).await {
                findings.push(finding(
                    DriftKind::RouterDown,
                    format!("router of {env_name}"),
                    "not running".to_owned(),
                    true,
                ));
            }
            if let Ok(release) = self.registered(&s.version) {
                if let Some(Err(why)) = self.target.check_release(&release).await {
                    findings.push(finding(
                        DriftKind::ReleaseFiles,
                        format!("release {}", s.version),
                        format!("its files differ from the verified artifact: {why}"),
                        true,
                    ));
                }
            }
            if let Ok(Some(last)) = self.store.deployment(s.deployment) {
                let now = self
                    .config
                    .deploy_settings(env, gantry_core::DeploymentKind::Deploy);
                let (was, is) = (
                    serde_json::to_value(&last.settings).unwrap_or_default(),
                    serde_json::to_value(&now).unwrap_or_default(),
                );
                let changed = differing_settings(&was, &is);
                if !changed.is_empty() && last.kind == gantry_core::DeploymentKind::Deploy {
                    findings.push(finding(
                        DriftKind::Config,
                        changed.join(", "),
                        format!(
                            "the config's {} differ from what deployment {} ran with; the next deployment applies them",
                            changed.join(", "),
                            last.id
                        ),
                        false,
                    ));
                }
            }
        }
        for r in self.target.running().await {
            if !expected.contains(&r.id) {
                findings.push(DriftFinding {
                    env: r.env.clone(),
                    kind: DriftKind::StrayInstance,
                    subject: r.id.clone(),
                    detail: format!(
                        "runs {} (pid {}, port {}) but no environment expects it",
                        r.version, r.pid, r.port
                    ),
                    repairable: true,
                });
            }
        }
        findings.sort();
        Ok(DriftReport {
            checked_at: now_ms(),
            findings,
            skipped,
        })
    }

    /// Repairs what `drift` finds that can be repaired: restarts gone
    /// instances, starts routers again with their routing, unpacks release
    /// files again from the verified artifact, stops stray instances.
    pub async fn converge(&self, by: &str) -> Result<ConvergeReport, ControlError> {
        let mut before = self.drift().await?.findings;
        // Files first: an instance restarted before its release directory
        // is unpacked again would lose that directory under it.
        before.sort_by_key(|f| match f.kind {
            DriftKind::ReleaseFiles => 0,
            DriftKind::InstanceGone => 1,
            DriftKind::RouterDown => 2,
            DriftKind::StrayInstance => 3,
            DriftKind::Config => 4,
        });
        let mut repairs = Vec::new();
        for f in before {
            let outcome = if f.repairable {
                self.repair(&f).await
            } else {
                Err("not repairable here: deploy to apply the config".to_owned())
            };
            let (repaired, outcome) = match outcome {
                Ok(done) => (true, done),
                Err(why) => (false, why),
            };
            let _ = self.store.append_audit(AuditEntry {
                at: now_ms(),
                actor: by.to_owned(),
                action: "drift.repair".to_owned(),
                subject: format!("{} {}", f.kind.as_str(), f.subject),
                outcome: if repaired { "done" } else { "not_repaired" }.to_owned(),
                detail: serde_json::json!({"env": f.env, "detail": f.detail, "outcome": outcome})
                    .to_string(),
            });
            repairs.push(Repair {
                finding: f,
                outcome,
                repaired,
            });
        }
        let remaining = self.drift().await?.findings;
        *self.last_drift.lock().unwrap_or_else(|p| p.into_inner()) = remaining.clone();
        Ok(ConvergeReport { repairs, remaining })
    }

    /// How many differences the latest periodic check found in `env`.
    pub fn drift_count(&self, env: &str) -> u32 {
        self.last_drift
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|f| f.env == env)
            .count() as u32
    }

    async fn repair(&self, f: &DriftFinding) -> Result<String, String> {
        let env = self.env(&f.env).map_err(|e| e.to_string())?.clone();
        let state = self.store.env_state(&env.name).map_err(|e| e.to_string())?;
        match f.kind {
            DriftKind::InstanceGone => {
                let s = state.ok_or("the environment serves nothing now")?;
                let gone = self.restart_gone(&env, &s, |i| i.id == f.subject).await;
                match gone.into_iter().next() {
                    Some(g) => g
                        .restarted
                        .map(|()| "started again with its id, port and release".to_owned()),
                    None => Ok("already running again".to_owned()),
                }
            }
            DriftKind::RouterDown => {
                let s = state.ok_or("the environment serves nothing now")?;
                self.route(&env.name, pools_for(Some(&s.version), &s.instances))
                    .await
                    .map(|()| format!("router started, routing {} again", s.version))
            }
            DriftKind::ReleaseFiles => {
                let s = state.ok_or("the environment serves nothing now")?;
                let release = self.registered(&s.version).map_err(|e| e.to_string())?;
                let path = self.local_blob_in_place(&release.digest)?;
                self.blobs
                    .verify(&release.digest)
                    .map_err(|e| format!("the artifact itself failed verification: {e}"))?;
                let notes = self
                    .target
                    .prepare(&env.name, &release, &path, &self.config.artifacts)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(notes
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| "unpacked again from the verified artifact".to_owned()))
            }
            DriftKind::StrayInstance => {
                let r = self
                    .target
                    .running()
                    .await
                    .into_iter()
                    .find(|r| r.id == f.subject)
                    .ok_or("already gone")?;
                let i = gantry_core::InstanceRef {
                    id: r.id,
                    port: r.port,
                    host: r.host,
                };
                self.target
                    .stop(&[i])
                    .await
                    .map(|()| "stopped".to_owned())
                    .map_err(|e| e.to_string())
            }
            DriftKind::Config => Err("not repairable here".to_owned()),
        }
    }

    /// Looks for drift every `every`; new and resolved findings go on the
    /// audit trail and in the controller's log (not repaired: that is
    /// `converge`, or the watchdogs for routers and fleet instances).
    pub fn spawn_drift_watch(self: &Arc<Self>, every: Duration) {
        let this = Arc::downgrade(self);
        self.spawn_led(async move {
            let mut seen: BTreeSet<DriftFinding> = BTreeSet::new();
            loop {
                tokio::time::sleep(every).await;
                let Some(c) = this.upgrade() else { return };
                if c.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Ok(report) = c.drift().await else {
                    continue;
                };
                *c.last_drift.lock().unwrap_or_else(|p| p.into_inner()) = report.findings.clone();
                let now: BTreeSet<DriftFinding> = report.findings.into_iter().collect();
                for (f, action) in now
                    .difference(&seen)
                    .map(|f| (f, "drift.detected"))
                    .chain(seen.difference(&now).map(|f| (f, "drift.resolved")))
                {
                    tracing::warn!(env = %f.env, kind = f.kind.as_str(), subject = %f.subject, "{action}: {}", f.detail);
                    let _ = c.store.append_audit(AuditEntry {
                        at: now_ms(),
                        actor: "gantry".to_owned(),
                        action: action.to_owned(),
                        subject: format!("{} {}", f.kind.as_str(), f.subject),
                        outcome: f.env.clone(),
                        detail: f.detail.clone(),
                    });
                }
                // New findings are notified, one notice per environment.
                let mut fresh: std::collections::BTreeMap<&str, Vec<&DriftFinding>> =
                    Default::default();
                for f in now.difference(&seen) {
                    fresh.entry(f.env.as_str()).or_default().push(f);
                }
                let outbox: Vec<gantry_store::Outgoing> = fresh
                    .into_iter()
                    .filter_map(|(env, found)| c.drift_notice(env, &found))
                    .collect();
                if !outbox.is_empty() {
                    match c.store.queue_notices(&outbox, now_ms()) {
                        Ok(()) => c.announced(outbox),
                        Err(e) => tracing::warn!(error = %e, "cannot queue the drift notices"),
                    }
                }
                seen = now;
            }
        });
    }

    /// The `drift_detected` notice of `env`'s new findings, for the channels
    /// that hear it (`None` when none does).
    fn drift_notice(&self, env: &str, found: &[&DriftFinding]) -> Option<gantry_store::Outgoing> {
        use gantry_core::notify::{Notice, NoticeKind};
        let channels: Vec<String> = self
            .config
            .notify
            .iter()
            .filter(|c| c.events.contains(&NoticeKind::DriftDetected))
            .filter(|c| {
                c.environments.is_empty() || c.environments.iter().any(|e| e.as_str() == env)
            })
            .map(|c| c.name.clone())
            .collect();
        if channels.is_empty() {
            return None;
        }
        let name: gantry_core::EnvName = env.parse().ok()?;
        let state = self.store.env_state(&name).ok().flatten();
        let first = found.first()?;
        Some(gantry_store::Outgoing {
            notice: Notice {
                kind: NoticeKind::DriftDetected,
                deployment: state.as_ref().map_or(0, |s| s.deployment),
                env: env.to_owned(),
                version: state
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |s| s.version.to_string()),
                previous_version: None,
                deployment_kind: gantry_core::DeploymentKind::Deploy,
                requested_by: "gantry".to_owned(),
                phase: "drift".to_owned(),
                reason: Some(format!(
                    "{} difference(s) from the recorded state; {} {}: {} (gantry drift; gantry converge repairs what it can)",
                    found.len(),
                    first.kind.as_str(),
                    first.subject,
                    first.detail
                )),
                start_after: None,
                at: now_ms(),
            },
            channels,
        })
    }
}
