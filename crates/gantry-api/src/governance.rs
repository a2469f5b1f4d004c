//! Gates, evidence, rehearsals, plans, approvals and notifications.

use gantry_core::evidence::GateResult;
use gantry_core::governance::{Approval, ChangeType};
use gantry_core::{DeploymentId, Millis, Phase};
use serde::{Deserialize, Serialize};

/// `GET /gates?version=…&env=…` and `GET /plans?version=…&env=…`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatesQuery {
    pub version: String,
    pub env: String,
}

/// `GET /gates`: every gate of the environment, judged for the release.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GatesView {
    pub version: String,
    pub env: String,
    pub passed: bool,
    pub gates: Vec<GateResult>,
}

/// `PUT /releases/{version}/evidence/{kind}?file=…`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EvidenceQuery {
    /// The report's file name, kept with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// `POST /rehearsals`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RehearsalRequest {
    pub env: String,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RehearsalAnswer {
    pub rehearsing: String,
    pub env: String,
}

/// `GET /plans`: the deployment plan, and the digest an approval names.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Plan {
    pub version: String,
    pub env: String,
    pub digest: String,
    pub markdown: String,
}

/// `POST /plans/approve`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanApproval {
    pub version: String,
    pub env: String,
    #[serde(default)]
    pub comment: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PlanApproved {
    pub version: String,
    pub env: String,
    pub digest: String,
    /// The evidence record that keeps the approval.
    pub evidence: i64,
    pub by: String,
}

/// `GET /approvals`: a deployment waiting for verdicts.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PendingApproval {
    pub deployment: DeploymentId,
    pub env: String,
    pub version: String,
    pub change: ChangeType,
    pub requested_by: String,
    pub phase: Phase,
    pub approved: u32,
    pub required: u32,
    pub review_by: Option<Millis>,
    /// An emergency change past its review time without its approvals.
    pub overdue: bool,
    pub approvals: Vec<Approval>,
}

/// `GET /notifications?deployment=…&limit=…`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<DeploymentId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}
