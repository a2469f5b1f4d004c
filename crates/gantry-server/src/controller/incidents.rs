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
            .map(|r| (r.version.to_string(), r.created_at))
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
