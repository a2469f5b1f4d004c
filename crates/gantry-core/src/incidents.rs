//! Incidents: every rollback opens one, linked to its deployment (the
//! change record), with the verdict that caused it. Restored when the
//! rollback is done; closed by a person with the lessons learned, as the
//! standards' runbook asks after a rollback.
//!
//! Which transition opens or restores an incident is decided here, from
//! the deployment's state alone; the store applies it in the transaction
//! that records the transition, so a restart neither loses nor repeats one.

use crate::domain::{DeploymentId, Millis};
use crate::machine::{Deployment, DeploymentKind, Phase};
use serde::{Deserialize, Serialize};

/// The most text a closing summary or follow-up may hold.
pub const MAX_CLOSING_TEXT: usize = 4096;

/// How the rollback came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    /// The rollout rolled itself back (analysis, health, a hook) or was aborted.
    Automatic,
    /// `gantry rollback`: a person returned the environment to an earlier release.
    Manual,
}

impl IncidentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentKind::Automatic => "automatic",
            IncidentKind::Manual => "manual",
        }
    }

    pub fn parse(s: &str) -> Option<IncidentKind> {
        match s {
            "automatic" => Some(IncidentKind::Automatic),
            "manual" => Some(IncidentKind::Manual),
            _ => None,
        }
    }
}

/// One incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Incident {
    pub id: i64,
    /// The change record: the deployment that rolled back, or the rollback.
    pub deployment: DeploymentId,
    pub env: String,
    pub kind: IncidentKind,
    pub opened_at: Millis,
    /// The release that was rolled back (it failed, or was withdrawn).
    pub release: Option<String>,
    /// The release the environment went back to.
    pub restored_to: Option<String>,
    /// Why: the verdict with its figures, or who asked.
    pub reason: String,
    /// When service was restored (the rollback finished); none while it runs or if it failed.
    pub restored_at: Option<Millis>,
    pub closed: Option<IncidentClosure>,
}

/// How an incident was closed: by whom, and what was learned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct IncidentClosure {
    pub by: String,
    pub at: Millis,
    pub summary: String,
    pub follow_up: String,
}

/// An incident a transition opens (ignored if its deployment has one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentOpening {
    pub deployment: DeploymentId,
    pub env: String,
    pub kind: IncidentKind,
    pub release: Option<String>,
    pub restored_to: Option<String>,
    pub reason: String,
}

/// The incident `d`'s state belongs to, if it is a rollback: a deploy
/// rolling back (or rolled back), or a rollback deployment.
pub fn opening(d: &Deployment) -> Option<IncidentOpening> {
    let v = |v: &semver::Version| v.to_string();
    match d.kind {
        DeploymentKind::Deploy if matches!(d.phase, Phase::RollingBack | Phase::RolledBack) => {
            Some(IncidentOpening {
                deployment: d.id,
                env: d.env.to_string(),
                kind: IncidentKind::Automatic,
                release: Some(v(&d.version)),
                restored_to: d.previous_version.as_ref().map(v),
                reason: d.reason.clone().unwrap_or_else(|| "rolled back".to_owned()),
            })
        }
        DeploymentKind::Rollback => Some(IncidentOpening {
            deployment: d.id,
            env: d.env.to_string(),
            kind: IncidentKind::Manual,
            release: d.previous_version.as_ref().map(v),
            restored_to: Some(v(&d.version)),
            reason: format!("rollback to {} requested by {}", d.version, d.requested_by),
        }),
        DeploymentKind::Deploy => None,
    }
}

/// Whether `d`'s state means service is restored: the deploy's rollback
/// finished, or the rollback deployment succeeded.
pub fn restored(d: &Deployment) -> bool {
    match d.kind {
        DeploymentKind::Deploy => d.phase == Phase::RolledBack,
        DeploymentKind::Rollback => d.phase == Phase::Succeeded,
    }
}

/// Checks a closing text: not empty, bounded.
pub fn check_closing_text(field: &str, text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err(format!("{field}: empty; say what was learned"));
    }
    if text.len() > MAX_CLOSING_TEXT {
        return Err(format!(
            "{field}: {} bytes; at most {MAX_CLOSING_TEXT}",
            text.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(kind: DeploymentKind) -> Deployment {
        crate::machine::sample_deployment(
            7,
            "production",
            kind,
            semver::Version::new(1, 1, 0),
            Some(semver::Version::new(1, 0, 0)),
            0,
        )
    }

    #[test]
    fn a_deploy_rolling_back_opens_one_and_its_end_restores_it() {
        let mut d = deploy(DeploymentKind::Deploy);
        assert_eq!(opening(&d), None);
        d.phase = Phase::RollingBack;
        d.reason = Some("canary analysis at 10%: canary error rate above 1.00%".into());
        let o = opening(&d).unwrap();
        assert_eq!(o.kind, IncidentKind::Automatic);
        assert_eq!(o.release.as_deref(), Some("1.1.0"));
        assert_eq!(o.restored_to.as_deref(), Some("1.0.0"));
        assert!(o.reason.starts_with("canary analysis at 10%"));
        assert!(!restored(&d));
        d.phase = Phase::RolledBack;
        assert!(restored(&d));
        // A deploy that failed before any traffic moved is no incident.
        d.phase = Phase::Failed;
        assert_eq!(opening(&d), None);
    }

    #[test]
    fn a_rollback_deployment_is_one_from_its_start_restored_when_it_succeeds() {
        let mut d = deploy(DeploymentKind::Rollback);
        let o = opening(&d).unwrap();
        assert_eq!(o.kind, IncidentKind::Manual);
        assert_eq!(o.release.as_deref(), Some("1.0.0"));
        assert_eq!(o.restored_to.as_deref(), Some("1.1.0"));
        assert!(!restored(&d));
        d.phase = Phase::Succeeded;
        assert!(restored(&d));
    }

    #[test]
    fn closing_texts_are_bounded_and_never_empty() {
        assert!(check_closing_text("summary", "a bad index").is_ok());
        assert_eq!(
            check_closing_text("summary", "  "),
            Err("summary: empty; say what was learned".to_owned())
        );
        let long = "x".repeat(MAX_CLOSING_TEXT + 1);
        assert!(check_closing_text("follow_up", &long)
            .unwrap_err()
            .starts_with("follow_up: 4097 bytes"));
    }
}
