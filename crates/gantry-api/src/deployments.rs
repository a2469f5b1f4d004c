//! Deployments and rollbacks: what is asked and what is answered.

use crate::records::LogEntry;
use gantry_core::governance::Approval;
use gantry_core::{Deployment, DeploymentId};
use serde::{Deserialize, Serialize};

/// `POST /deployments`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    pub env: String,
    pub version: String,
    /// standard, normal or emergency; by default normal where approvals are
    /// required, standard elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<String>,
    /// Why the change is made (kept on the deployment and the audit trail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A scheduled change: not before this UTC time (RFC 3339, e.g.
    /// "2026-12-01T10:00Z"). Announced at once and again a day before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// The end of its window: a change that has not started by then does
    /// not start (needs `at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// `POST /rollbacks`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    pub env: String,
    /// The release to return to; the previous one if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// `GET /deployments?env=…&limit=…`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// 50 if absent, at most 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// `GET /deployments/{id}`: the deployment with every verdict given on it.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeploymentView {
    #[serde(flatten)]
    pub deployment: Deployment,
    /// Every verdict, including those given after an emergency change finished.
    pub approvals: Vec<Approval>,
    /// The change record's close-out, once a person closed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closure: Option<crate::records::DeploymentClosure>,
}

/// `POST /deployments/{id}/evidence?name=…` (the body is the file).
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvidenceUpload {
    /// The file's name: letters, digits, '.', '_', '-' (at most 128).
    pub name: String,
}

/// `POST /deployments/{id}/close`: the change record's final word.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseDeployment {
    /// What was validated and how it went (at most 4000 characters).
    pub summary: String,
    /// Files uploaded to `/deployments/{id}/evidence` (at most 20).
    #[serde(default)]
    pub evidence: Vec<crate::records::EvidenceFile>,
}

/// The deployment's own fields read as if the view were the deployment
/// (`view.phase`), as they are on the wire (flattened).
impl std::ops::Deref for DeploymentView {
    type Target = Deployment;
    fn deref(&self) -> &Deployment {
        &self.deployment
    }
}

/// `GET /deployments/{id}/log`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeploymentLog {
    pub deployment: Deployment,
    pub log: Vec<LogEntry>,
}

/// What a person may ask of a running deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Abort,
    Promote,
    Pause,
    Resume,
}

impl Action {
    /// As the path spells it: `/deployments/{id}/abort`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Abort => "abort",
            Action::Promote => "promote",
            Action::Pause => "pause",
            Action::Resume => "resume",
        }
    }

    /// The word the answer uses for what is now happening: `{"aborting": 12}`.
    pub fn doing(self) -> &'static str {
        match self {
            Action::Abort => "aborting",
            Action::Promote => "promoting",
            Action::Pause => "pausing",
            Action::Resume => "resuming",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        [
            Action::Abort,
            Action::Promote,
            Action::Pause,
            Action::Resume,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
}

/// `POST /deployments/{id}/{action}` answers `{"<doing>": id}`, e.g.
/// `{"aborting": 12}`: the word for what was asked, and the deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ActionTaken(pub std::collections::BTreeMap<String, DeploymentId>);

impl ActionTaken {
    pub fn new(action: Action, id: DeploymentId) -> ActionTaken {
        ActionTaken([(action.doing().to_owned(), id)].into())
    }
    /// The deployment acted on.
    pub fn deployment(&self) -> Option<DeploymentId> {
        self.0.values().next().copied()
    }
}

impl schemars::JsonSchema for ActionTaken {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ActionTaken".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "The word for what was asked (`aborting`, `promoting`, `pausing`, `resuming`) and the deployment.",
            "type": "object",
            "additionalProperties": {"type": "integer", "format": "int64"},
            "minProperties": 1,
            "maxProperties": 1
        })
    }
}

/// `POST /deployments/{id}/approve` and `…/reject`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerdictRequest {
    #[serde(default)]
    pub comment: String,
}

/// The verdict recorded: `{"approved": 12, "by": "bob"}` or `{"rejected": 12, "by": "bob"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VerdictGiven {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<DeploymentId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<DeploymentId>,
    pub by: String,
}
