//! Incidents: listed, shown, and closed by a person with what was learned.
//! They are opened and restored by the store with the transitions that
//! cause them (`gantry_core::incidents`).

use super::{now_ms, ControlError, Controller};
use gantry_core::incidents::{check_closing_text, Incident, IncidentClosure};
use std::collections::BTreeMap;

impl Controller {
    pub fn incidents(
        &self,
        env: Option<&str>,
        open_only: bool,
        limit: usize,
    ) -> Result<Vec<Incident>, ControlError> {
        if let Some(env) = env {
            self.env(env)?;
        }
        Ok(self.store.incidents(env, open_only, limit)?)
    }

    pub fn incident(&self, id: i64) -> Result<Incident, ControlError> {
        self.store
            .incident(id)?
            .ok_or_else(|| ControlError::NotFound(format!("incident {id} does not exist")))
    }

    /// Closes incident `id` with its summary and follow-up, once.
    pub fn close_incident(
        &self,
        id: i64,
        by: &str,
        summary: &str,
        follow_up: &str,
    ) -> Result<Incident, ControlError> {
        check_closing_text("summary", summary).map_err(ControlError::Invalid)?;
        check_closing_text("follow_up", follow_up).map_err(ControlError::Invalid)?;
        let incident = self.incident(id)?;
        if let Some(c) = &incident.closed {
            return Err(ControlError::Conflict(format!(
                "incident {id} was already closed by {} at {}",
                c.by,
                gantry_core::time::rfc3339(c.at)
            )));
        }
        if incident.restored_at.is_none() {
            return Err(ControlError::Conflict(format!(
                "incident {id} is not restored yet (its rollback has not finished); close it once service is back"
            )));
        }
        let closure = IncidentClosure {
            by: by.to_owned(),
            at: now_ms(),
            summary: summary.to_owned(),
            follow_up: follow_up.to_owned(),
        };
        if !self.store.close_incident(id, &closure)? {
            return Err(ControlError::Conflict(format!(
                "incident {id} was closed by someone else meanwhile"
            )));
        }
        self.incident(id)
    }

    /// DORA figures of `env` over the last `since_ms`, from the records.
    pub fn dora(&self, env: &str, since_ms: u64) -> Result<gantry_core::dora::Dora, ControlError> {
        self.env(env)?;
        let now = now_ms();
        let since = now - since_ms.min(now.max(0) as u64) as i64;
        let name: gantry_core::EnvName = env
            .parse()
            .map_err(|e| ControlError::Invalid(format!("env: {e}")))?;
        let deployments = self.store.deployments(Some(&name), 100_000)?;
        let incidents = self.store.incidents(Some(env), false, 100_000)?;
        let registered: BTreeMap<String, i64> = self
            .store
            .releases()?
            .into_iter()
            // From the commit when it is known, else from the build.
            .map(|r| {
                (
                    r.version.to_string(),
                    r.committed_at.unwrap_or(r.created_at),
                )
            })
            .collect();
        Ok(gantry_core::dora::compute(
            env,
            since,
            now,
            &deployments,
            &incidents,
            &registered,
        ))
    }
}

/// The most files one deployment's close-out keeps.
pub const MAX_CLOSE_EVIDENCE: usize = 20;
/// The largest evidence file taken.
pub const MAX_CLOSE_EVIDENCE_BYTES: usize = 16 << 20;

/// An evidence file's name: letters, digits, '.', '_', '-', at most 128, not hidden.
fn check_evidence_name(name: &str) -> Result<(), ControlError> {
    let fits = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if fits {
        Ok(())
    } else {
        Err(ControlError::Invalid(format!(
            "name: {name:?}; expected at most 128 letters, digits, '.', '_' or '-', e.g. \"smoke-2026-11-24.png\""
        )))
    }
}

impl Controller {
    fn closable(
        &self,
        id: gantry_core::DeploymentId,
    ) -> Result<gantry_core::Deployment, ControlError> {
        let d = self
            .store
            .deployment(id)?
            .ok_or_else(|| ControlError::NotFound(format!("deployment {id} does not exist")))?;
        if let Some(c) = self.store.closure(id)? {
            return Err(ControlError::Conflict(format!(
                "deployment {id} was closed by {} at {}; its record is final",
                c.closed_by,
                gantry_core::time::rfc3339(c.closed_at)
            )));
        }
        Ok(d)
    }

    /// Keeps a validation file (a screenshot, a log) for deployment `id`'s
    /// close-out, among the blobs.
    pub fn add_deployment_evidence(
        &self,
        id: gantry_core::DeploymentId,
        name: &str,
        bytes: &[u8],
    ) -> Result<gantry_api::EvidenceFile, ControlError> {
        check_evidence_name(name)?;
        self.closable(id)?;
        if bytes.len() > MAX_CLOSE_EVIDENCE_BYTES {
            return Err(ControlError::Invalid(format!(
                "{name}: {} bytes; at most {MAX_CLOSE_EVIDENCE_BYTES}",
                bytes.len()
            )));
        }
        let digest = self
            .blobs
            .put(bytes)
            .map_err(|e| ControlError::Internal(e.to_string()))?;
        self.share_blob(&digest)?;
        Ok(gantry_api::EvidenceFile {
            name: name.to_owned(),
            digest,
            size: bytes.len() as u64,
        })
    }

    /// Closes deployment `id`'s change record with its final status (the
    /// deployment's outcome), a summary and the evidence uploaded for it.
    pub fn close_deployment(
        &self,
        id: gantry_core::DeploymentId,
        req: gantry_api::CloseDeployment,
        by: &str,
    ) -> Result<gantry_api::DeploymentClosure, ControlError> {
        let d = self.closable(id)?;
        if !d.phase.is_terminal() {
            return Err(ControlError::Conflict(format!(
                "deployment {id} is {}: its change record is closed once it has finished",
                d.phase.as_str()
            )));
        }
        check_closing_text("summary", &req.summary).map_err(ControlError::Invalid)?;
        if req.evidence.len() > MAX_CLOSE_EVIDENCE {
            return Err(ControlError::Invalid(format!(
                "evidence: {} files; at most {MAX_CLOSE_EVIDENCE}",
                req.evidence.len()
            )));
        }
        for f in &req.evidence {
            check_evidence_name(&f.name)?;
            let stored = self
                .local_blob(&f.digest)
                .and_then(|p| std::fs::metadata(p).map_err(|e| e.to_string()))
                .map(|m| m.len());
            if stored.ok() != Some(f.size) {
                return Err(ControlError::Invalid(format!(
                    "evidence {}: no file of sha256 {} and {} bytes was uploaded (POST /deployments/{id}/evidence first)",
                    f.name, f.digest, f.size
                )));
            }
        }
        let closure = gantry_api::DeploymentClosure {
            deployment: id,
            status: d.phase.as_str().to_owned(),
            summary: req.summary,
            evidence: req.evidence,
            closed_by: by.to_owned(),
            closed_at: now_ms(),
        };
        if !self.store.close_deployment(&closure)? {
            return Err(ControlError::Conflict(format!(
                "deployment {id} was closed meanwhile; its record is final"
            )));
        }
        Ok(closure)
    }

    pub fn closure(
        &self,
        id: gantry_core::DeploymentId,
    ) -> Result<Option<gantry_api::DeploymentClosure>, ControlError> {
        Ok(self.store.closure(id)?)
    }

    /// An evidence file of deployment `id`'s close-out, as stored.
    pub fn deployment_evidence(
        &self,
        id: gantry_core::DeploymentId,
        digest: &str,
    ) -> Result<Vec<u8>, ControlError> {
        let closure = self.store.closure(id)?;
        let file = closure
            .iter()
            .flat_map(|c| &c.evidence)
            .find(|f| f.digest.as_hex() == digest)
            .ok_or_else(|| {
                ControlError::NotFound(format!(
                    "deployment {id}'s close-out has no evidence of sha256 {digest}"
                ))
            })?;
        let path = self
            .local_blob(&file.digest)
            .map_err(ControlError::Internal)?;
        std::fs::read(path)
            .map_err(|e| ControlError::Internal(format!("evidence {}: {e}", file.name)))
    }
}
