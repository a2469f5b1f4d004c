//! Who is calling, what a release must show before it enters an
//! environment, and approvals: the controller's side of governance. The
//! rules themselves are pure, in `gantry_core::governance` and
//! `gantry_core::evidence`; this module feeds them from the store.

use crate::controller::{now_ms, ControlError, Controller};
use gantry_config::Environment;
use gantry_core::evidence::{self, Evidence, EvidenceKind, GateResult, Report};
use gantry_core::governance::{
    self, allowed, Approval, ChangeControl, ChangeType, Permission, Role,
};
use gantry_core::{Deployment, DeploymentId, Event, Millis, Version};
use gantry_store::{EvidenceRecord, TokenRecord, User};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

/// The caller of an API request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Identity {
    pub user: String,
    pub roles: Vec<Role>,
    /// The id of the token presented (none for the controller's own token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Who minted that token, when it was not its user: such a token may do
    /// what the user's roles allow except give verdicts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minted_by: Option<String>,
}

impl Identity {
    /// The holder of the controller's own token (`admin.token`).
    pub fn bootstrap_admin() -> Identity {
        Identity {
            user: "admin".to_owned(),
            roles: vec![Role::Admin],
            token: None,
            minted_by: None,
        }
    }

    /// Whether the roles grant `p`. Separation of duties: a verdict needs a
    /// token its holder minted themself, so whoever minted a token for
    /// someone else (an admin, typically) cannot approve as them with it.
    pub fn may(&self, p: Permission) -> Result<(), ControlError> {
        if allowed(&self.roles, p) {
            if let (Permission::Approve, Some(minter)) = (p, &self.minted_by) {
                return Err(ControlError::Forbidden(format!(
                    "{user} may not give verdicts with token {id}: {minter} minted it, not {user}; \
                     a verdict needs a token {user} minted themself \
                     (`gantry token create --user {user}` run with this token gives one and revokes this one)",
                    user = self.user,
                    id = self.token.as_deref().unwrap_or("?"),
                )));
            }
            return Ok(());
        }
        let roles: Vec<&str> = self.roles.iter().map(|r| r.as_str()).collect();
        Err(ControlError::Forbidden(format!(
            "{} ({}) may not {}: that needs a role that grants it ({})",
            self.user,
            roles.join(", "),
            p.as_str(),
            match p {
                Permission::Read => "viewer, deployer, approver or admin",
                Permission::Deploy => "deployer or admin",
                Permission::Approve => "approver or admin",
                Permission::Administer => "admin",
            }
        )))
    }
}

/// Who starts automatic deployments.
pub const AUTO_ACTOR: &str = "gantry";

/// Tokens are `gantry_<id>_<secret>`: the id finds the record, the secret's
/// SHA-256 is compared in constant time.
const TOKEN_PREFIX: &str = "gantry_";

/// Held while an uploaded report is parsed, so that concurrent uploads
/// cannot multiply the memory a parse takes (see `gantry_core::evidence`'s limits).
static REPORT_PARSING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn random_hex(bytes: usize) -> Result<String, ControlError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| ControlError::Internal(format!("no randomness: {e}")))?;
    Ok(hex::encode(buf))
}

/// A token as issued: shown once, never stored.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct IssuedToken {
    pub id: String,
    pub user: String,
    pub token: String,
    pub expires_at: Option<Millis>,
    /// Who minted it; when not `user`, it may not give verdicts.
    pub minted_by: String,
    /// The token this one was exchanged for: minted by someone else, and
    /// revoked by the exchange.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
}

/// Why a presented token was refused (answered 401), or could not be
/// checked (`Store`, answered 500: the token may be good).
#[derive(Debug, thiserror::Error)]
pub enum TokenRefusal {
    #[error("the bearer token is not valid")]
    Invalid,
    #[error("token {id} was revoked")]
    Revoked { id: String },
    #[error("token {id} expired at {at}")]
    Expired { id: String, at: String },
    #[error("cannot check the token: {0}")]
    Store(String),
}

impl Controller {
    /// Who holds `presented`: the bootstrap admin (its token compared with
    /// `admin_token`) or a user with a live token.
    pub fn identify(&self, presented: &str, admin_token: &str) -> Result<Identity, TokenRefusal> {
        if bool::from(presented.as_bytes().ct_eq(admin_token.as_bytes())) {
            return Ok(Identity::bootstrap_admin());
        }
        let (id, secret) = presented
            .strip_prefix(TOKEN_PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .ok_or(TokenRefusal::Invalid)?;
        let record = self
            .store
            .token(id)
            .map_err(|e| TokenRefusal::Store(e.to_string()))?
            .ok_or(TokenRefusal::Invalid)?;
        if !bool::from(
            hash_secret(secret)
                .as_bytes()
                .ct_eq(record.secret_hash.as_bytes()),
        ) {
            return Err(TokenRefusal::Invalid);
        }
        if record.revoked_at.is_some() {
            return Err(TokenRefusal::Revoked { id: record.id });
        }
        if let Some(at) = record.expires_at.filter(|&at| at <= now_ms()) {
            return Err(TokenRefusal::Expired {
                id: record.id,
                at: governance::rfc3339(at),
            });
        }
        let user = self
            .store
            .user(&record.user)
            .map_err(|e| TokenRefusal::Store(e.to_string()))?
            .ok_or(TokenRefusal::Invalid)?;
        let minted_by = (record.created_by != user.name).then_some(record.created_by);
        Ok(Identity {
            user: user.name,
            roles: user.roles,
            token: Some(record.id),
            minted_by,
        })
    }

    pub fn add_user(&self, name: &str, roles: &[String], by: &str) -> Result<User, ControlError> {
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
        if !valid_name || name == "admin" || name == "gantry" || name == "anonymous" {
            return Err(ControlError::Invalid(format!(
                "user name {name:?}: expected 1 to 64 letters, digits, '-', '_', '.' or '@', and not admin, gantry or anonymous"
            )));
        }
        if roles.is_empty() {
            return Err(ControlError::Invalid(format!(
                "user {name}: give at least one role ({})",
                Role::NAMES.join(", ")
            )));
        }
        let mut parsed = roles
            .iter()
            .map(|r| Role::parse(r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ControlError::Invalid(format!("user {name}: {e}")))?;
        parsed.sort();
        parsed.dedup();
        let user = User {
            name: name.to_owned(),
            roles: parsed,
            created_at: now_ms(),
            created_by: by.to_owned(),
        };
        if !self.store.create_user(&user)? {
            return Err(ControlError::Conflict(format!(
                "user {name} already exists"
            )));
        }
        Ok(user)
    }

    /// Mints a token for `user`. Only `user` themself or an admin may; a
    /// token minted by someone else may not give verdicts. A user who mints
    /// their own token with one someone else minted for them exchanges it:
    /// that one is revoked, so a handed-over token cannot have been quietly
    /// exchanged by whoever minted it. Either way it is on the audit trail,
    /// with who minted for whom and with which token.
    pub fn create_token(
        &self,
        user: &str,
        label: Option<String>,
        expires_in_ms: Option<u64>,
        by: &Identity,
    ) -> Result<IssuedToken, ControlError> {
        if by.user != user {
            if let Err(ControlError::Forbidden(why)) = by.may(Permission::Administer) {
                return Err(ControlError::Forbidden(format!(
                    "{why}; a token for {user} is minted by {user} or by an admin"
                )));
            }
        }
        if self.store.user(user)?.is_none() {
            return Err(ControlError::NotFound(format!(
                "user {user} does not exist; `gantry user add` creates one"
            )));
        }
        let id = random_hex(8)?;
        let secret = random_hex(32)?;
        let now = now_ms();
        let expires_at = expires_in_ms.map(|ms| now + ms as Millis);
        self.store.create_token(&TokenRecord {
            id: id.clone(),
            user: user.to_owned(),
            label,
            secret_hash: hash_secret(&secret),
            created_at: now,
            created_by: by.user.clone(),
            expires_at,
            revoked_at: None,
            revoked_by: None,
        })?;
        let exchanged = match (&by.token, &by.minted_by) {
            (Some(old), Some(_)) if by.user == user => {
                self.store.revoke_token(old, &by.user, now_ms())?;
                Some(old.clone())
            }
            _ => None,
        };
        let entry = gantry_core::audit::AuditEntry {
            at: now,
            actor: by.user.clone(),
            action: "token.created".to_owned(),
            subject: format!("token {id} for {user}"),
            outcome: "done".to_owned(),
            detail: serde_json::json!({
                "user": user,
                "minted_by": by.user,
                "may_give_verdicts": by.user == user,
                "with_token": by.token,
                "with_token_minted_by": by.minted_by,
                "revoked": exchanged,
                "expires_at": expires_at,
            })
            .to_string(),
        };
        self.store.append_audit(entry)?;
        Ok(IssuedToken {
            token: format!("{TOKEN_PREFIX}{id}_{secret}"),
            id,
            user: user.to_owned(),
            expires_at,
            minted_by: by.user.clone(),
            revoked: exchanged,
        })
    }

    pub fn revoke_token(&self, id: &str, by: &str) -> Result<TokenRecord, ControlError> {
        let existing = self
            .store
            .token(id)?
            .ok_or_else(|| ControlError::NotFound(format!("token {id} does not exist")))?;
        if existing.revoked_at.is_some() {
            return Err(ControlError::Conflict(format!(
                "token {id} is already revoked"
            )));
        }
        self.store.revoke_token(id, by, now_ms())?;
        Ok(self.store.token(id)?.unwrap_or(existing))
    }

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
    fn promotion_gate(
        &self,
        version: &Version,
        env: &Environment,
    ) -> Result<Option<GateResult>, ControlError> {
        let envs = &self.config.environments;
        let Some(pos) = envs.iter().position(|e| e.name == env.name) else {
            return Ok(None);
        };
        if pos == 0 {
            return Ok(None);
        }
        let mut missing = Vec::new();
        for earlier in envs[..pos].iter().filter(|e| !e.optional) {
            if !self
                .store
                .succeeded_versions(&earlier.name)?
                .contains(version)
            {
                missing.push(earlier.name.to_string());
            }
        }
        let path: Vec<String> = envs
            .iter()
            .map(|e| {
                if e.optional {
                    format!("{} (optional)", e.name)
                } else {
                    e.name.to_string()
                }
            })
            .collect();
        Ok(Some(GateResult {
            gate: "promotion path".to_owned(),
            passed: missing.is_empty(),
            detail: if missing.is_empty() {
                format!(
                    "succeeded in every earlier environment of {}",
                    path.join(" → ")
                )
            } else {
                format!(
                    "{version} has not succeeded in {} yet; the path is {}",
                    missing.join(", "),
                    path.join(" → ")
                )
            },
            evidence: None,
        }))
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
            now_ms(),
        )
        .map_err(|e| ControlError::Conflict(e.to_string()))
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
    async fn watch_deployment(
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
                phase: d.phase.as_str().to_owned(),
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

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct PendingApproval {
    pub deployment: DeploymentId,
    pub env: String,
    pub version: String,
    pub change: ChangeType,
    pub requested_by: String,
    pub phase: String,
    pub approved: u32,
    pub required: u32,
    pub review_by: Option<Millis>,
    /// An emergency change past its review time without its approvals.
    pub overdue: bool,
    pub approvals: Vec<Approval>,
}

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
        tokio::spawn(async move {
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
