//! What a release must show before it enters an environment (evidence,
//! gates, the promotion path, change types, freezes) and approvals. The
//! rules are pure, in `gantry_core::governance` and `gantry_core::evidence`;
//! this module feeds them from the store.

use super::{now_ms, ControlError, Controller};
use crate::governance::{Authorize, Identity, PendingApproval, AUTO_ACTOR};
use gantry_config::Environment;
use gantry_core::evidence::{self, Evidence, EvidenceKind, GateResult, Report};
use gantry_core::governance::{self, Approval, ChangeControl, ChangeType, Permission};
use gantry_core::{Deployment, DeploymentId, Event, Version};
use gantry_store::EvidenceRecord;

/// Held while an uploaded report is parsed, so that concurrent uploads
/// cannot multiply the memory a parse takes (see `gantry_core::evidence`'s limits).
static REPORT_PARSING: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Controller {
    // ---- evidence and gates ----

    /// Parses and attaches a report to a release. Nothing is stored unless
    /// the report parses. Blocks: call it off the async workers.
    pub fn add_evidence(
        &self,
        version: &str,
        kind: &str,
        file_name: &str,
        bytes: &[u8],
        by: &str,
    ) -> Result<EvidenceRecord, ControlError> {
        let kind = EvidenceKind::parse_uploadable(kind).map_err(ControlError::Invalid)?;
        let release = self.release(version)?;
        // One report is parsed at a time: a hostile one within the limits
        // may still take some hundreds of megabytes while it is parsed.
        let parsing = REPORT_PARSING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let parsed = evidence::parse(kind, bytes);
        drop(parsing);
        let report = parsed.map_err(|e| {
            ControlError::Invalid(format!(
                "{file_name}: not a valid {} report: {e}",
                kind.as_str()
            ))
        })?;
        self.record_evidence(&release.version, kind, file_name, bytes, report, by)
    }

    /// Keeps `bytes` among the blobs and records what they establish: an
    /// uploaded report, or what Gantry itself found (a rehearsal, an approved plan).
    pub fn record_evidence(
        &self,
        version: &Version,
        kind: EvidenceKind,
        file_name: &str,
        bytes: &[u8],
        report: Report,
        by: &str,
    ) -> Result<EvidenceRecord, ControlError> {
        let digest = self
            .blobs
            .put(bytes)
            .map_err(|e| ControlError::Internal(e.to_string()))?;
        self.share_blob(&digest)?;
        let mut record = EvidenceRecord {
            id: 0,
            version: version.clone(),
            kind,
            digest,
            file_name: file_name.to_owned(),
            report,
            added_at: now_ms(),
            added_by: by.to_owned(),
        };
        record.id = self.store.add_evidence(&record)?;
        Ok(record)
    }

    /// Each gate of `env` for `version`, passed or not and why.
    pub fn gates(
        &self,
        version: &Version,
        env: &Environment,
    ) -> Result<Vec<GateResult>, ControlError> {
        let evidence: Vec<Evidence> = self
            .store
            .evidence(version)?
            .into_iter()
            .map(|e| Evidence {
                id: e.id,
                kind: e.kind,
                report: e.report,
                added_at: e.added_at,
            })
            .collect();
        let mut results = evidence::evaluate(&env.gates, env.name.as_str(), &evidence);
        if let Some(path) = self.promotion_gate(version, env)? {
            results.insert(0, path);
        }
        Ok(results)
    }

    /// The promotion path as a gate: every earlier, non-optional environment
    /// must have run `version` successfully. `None` for the first environment.
    /// The promotion-path rule (`Config::promotion_path_gate`), answered from the store.
    fn promotion_gate(
        &self,
        version: &Version,
        env: &Environment,
    ) -> Result<Option<GateResult>, ControlError> {
        self.config.promotion_path_gate(version, env, |earlier| {
            Ok(self.store.succeeded_versions(earlier)?.contains(version))
        })
    }

    /// Everything a new deployment must satisfy before it is created: the
    /// promotion path, the gates, the change type and the freezes. Returns
    /// the change it carries out.
    pub(crate) fn admit(
        &self,
        env: &Environment,
        version: &Version,
        change: Option<&str>,
        reason: Option<String>,
        schedule: Option<governance::Schedule>,
    ) -> Result<ChangeControl, ControlError> {
        let change = match change {
            Some(c) => ChangeType::parse(c).map_err(ControlError::Invalid)?,
            None if env.approval.required > 0 => ChangeType::Normal,
            None => ChangeType::Standard,
        };
        let failed: Vec<String> = self
            .gates(version, env)?
            .into_iter()
            .filter(|g| !g.passed)
            .map(|g| format!("{}: {}", g.gate, g.detail))
            .collect();
        if !failed.is_empty() {
            return Err(ControlError::Conflict(format!(
                "{version} may not enter {}; failed gate(s):\n  {}",
                env.name,
                failed.join("\n  ")
            )));
        }
        governance::plan_change(
            env.name.as_str(),
            &env.approval,
            change,
            reason,
            &env.freezes,
            schedule,
            now_ms(),
        )
        .map_err(|e| match e {
            // A bad time asked for is the request's fault, not a conflict.
            governance::ChangeRefusal::InThePast { .. }
            | governance::ChangeRefusal::EmptyWindow { .. } => ControlError::Invalid(e.to_string()),
            _ => ControlError::Conflict(e.to_string()),
        })
    }

    /// Deploys `version` to the environment after `from` on the promotion
    /// path (the first one when `from` is `None`) if that one has
    /// `auto_deploy`. Its gates still apply; a refusal is audited, not raised.
    pub async fn auto_deploy_after(
        self: &std::sync::Arc<Self>,
        from: Option<&gantry_core::EnvName>,
        version: &Version,
    ) {
        let envs = &self.config.environments;
        let next = match from {
            None => envs.first(),
            Some(name) => envs
                .iter()
                .position(|e| &e.name == name)
                .and_then(|i| envs.get(i + 1)),
        };
        let Some(next) = next.filter(|e| e.auto_deploy) else {
            return;
        };
        let outcome = self
            .deploy(
                next.name.as_str(),
                &version.to_string(),
                AUTO_ACTOR,
                None,
                None,
                None,
            )
            .await;
        let (result, detail) = match &outcome {
            Ok(d) => ("done".to_owned(), serde_json::json!({"deployment": d.id})),
            Err(e) => (
                "refused".to_owned(),
                serde_json::json!({"error": e.to_string()}),
            ),
        };
        if let Err(e) = &outcome {
            tracing::warn!(env = %next.name, %version, error = %e, "automatic deployment refused");
        }
        let entry = gantry_core::audit::AuditEntry {
            at: now_ms(),
            actor: AUTO_ACTOR.to_owned(),
            action: "deployment.auto".to_owned(),
            subject: format!("release {version} to {}", next.name),
            outcome: result,
            detail: detail.to_string(),
        };
        if let Err(e) = self.store.append_audit(entry) {
            tracing::error!(error = %e, "cannot write the audit record");
        }
    }

    /// An emergency change does not queue behind a change that is still
    /// waiting for approval (nothing of it has started): the waiting one
    /// ends as failed, its reason naming the emergency.
    pub(crate) async fn supersede_waiting(
        &self,
        env: &gantry_core::EnvName,
        by: &str,
    ) -> Result<(), ControlError> {
        let Some(waiting) = self
            .store
            .active_deployments()?
            .into_iter()
            .find(|d| &d.env == env && d.phase == gantry_core::Phase::AwaitingApproval)
        else {
            return Ok(());
        };
        self.request(
            waiting.id,
            Event::AbortRequested {
                by: format!("{by}, superseded by an emergency change"),
            },
        )?;
        let gone = self
            .watch_deployment(waiting.id, std::time::Duration::from_secs(10), |d| {
                d.phase.is_terminal()
            })
            .await?;
        gone.map(drop).ok_or_else(|| {
            ControlError::Conflict(format!(
                "deployment {} waiting for approval in {env} did not give way within 10s",
                waiting.id
            ))
        })
    }

    /// Polls deployment `id` until `done` holds (`Some`) or `limit` passes (`None`).
    pub(super) async fn watch_deployment(
        &self,
        id: DeploymentId,
        limit: std::time::Duration,
        done: impl Fn(&Deployment) -> bool,
    ) -> Result<Option<Deployment>, ControlError> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let d = self
                .store
                .deployment(id)?
                .ok_or_else(|| ControlError::NotFound(format!("deployment {id} does not exist")))?;
            if done(&d) {
                return Ok(Some(d));
            }
            if std::time::Instant::now() > deadline {
                return Ok(None);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    // ---- approvals ----

    /// One approver's verdict on a deployment: passed to the running
    /// deployment, or kept on a finished emergency change.
    pub fn give_verdict(
        &self,
        id: DeploymentId,
        who: &Identity,
        approved: bool,
        comment: &str,
    ) -> Result<Deployment, ControlError> {
        who.may(Permission::Approve)?;
        let d = self
            .store
            .deployment(id)?
            .ok_or_else(|| ControlError::NotFound(format!("deployment {id} does not exist")))?;
        let given: Vec<String> = self
            .store
            .approvals(id)?
            .into_iter()
            .map(|a| a.by)
            .collect();
        governance::check_approval(
            &d.requested_by,
            d.change.as_ref(),
            d.phase.is_terminal(),
            &given,
            &who.user,
        )
        .map_err(|e| match e {
            governance::ApprovalRefusal::Initiator { .. } => ControlError::Forbidden(e.to_string()),
            _ => ControlError::Conflict(e.to_string()),
        })?;
        if d.phase.is_terminal() {
            let late = Approval {
                by: who.user.clone(),
                at: now_ms(),
                approved,
                comment: comment.to_owned(),
            };
            if !self.store.add_late_approval(id, &late)? {
                return Err(ControlError::Conflict(format!(
                    "{} already gave a verdict on this deployment",
                    who.user
                )));
            }
        } else {
            let by = who.user.clone();
            let comment = comment.to_owned();
            self.request(
                id,
                if approved {
                    Event::Approved { by, comment }
                } else {
                    Event::Rejected { by, comment }
                },
            )?;
        }
        Ok(d)
    }

    /// Deployments waiting for approvals, and emergency changes whose
    /// approvals are missing (overdue once past their review time).
    pub fn pending_approvals(&self) -> Result<Vec<PendingApproval>, ControlError> {
        let now = now_ms();
        let mut out = Vec::new();
        for d in self.store.deployments(None, 1000)? {
            let Some(c) = &d.change else { continue };
            let waiting = d.phase == gantry_core::Phase::AwaitingApproval;
            if !waiting && c.change != ChangeType::Emergency {
                continue;
            }
            let approvals = self.store.approvals(d.id)?;
            let approved = approvals.iter().filter(|a| a.approved).count() as u32;
            let emergency_open = c.change == ChangeType::Emergency && approved < c.required_after;
            if !(waiting || emergency_open) {
                continue;
            }
            out.push(PendingApproval {
                deployment: d.id,
                env: d.env.to_string(),
                version: d.version.to_string(),
                change: c.change,
                requested_by: d.requested_by.clone(),
                phase: d.phase,
                approved,
                required: c.required_before.max(c.required_after),
                review_by: c.review_by,
                overdue: emergency_open && c.review_by.is_some_and(|at| at < now),
                approvals,
            });
        }
        Ok(out)
    }
}
