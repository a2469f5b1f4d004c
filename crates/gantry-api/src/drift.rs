//! Drift: what runs, against what the store says should.

use serde::{Deserialize, Serialize};

/// What kind of difference a finding is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// An instance the environment runs is gone.
    InstanceGone,
    /// The environment's router is not running.
    RouterDown,
    /// A release directory's files differ from what was unpacked (a file
    /// edited or copied by hand).
    ReleaseFiles,
    /// The config differs from the one the environment was last deployed with.
    Config,
    /// An instance of this controller runs that no environment expects.
    StrayInstance,
}

impl DriftKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DriftKind::InstanceGone => "instance_gone",
            DriftKind::RouterDown => "router_down",
            DriftKind::ReleaseFiles => "release_files",
            DriftKind::Config => "config",
            DriftKind::StrayInstance => "stray_instance",
        }
    }
}

/// One difference.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct DriftFinding {
    pub env: String,
    pub kind: DriftKind,
    /// What differs: an instance, a release, a setting.
    pub subject: String,
    pub detail: String,
    /// Whether `converge` can repair it (a config change needs a deployment).
    pub repairable: bool,
}

/// `GET /drift`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DriftReport {
    pub checked_at: i64,
    pub findings: Vec<DriftFinding>,
    /// Environments not looked at, and why (a deployment in progress).
    pub skipped: Vec<String>,
}

/// What `converge` did about one finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Repair {
    pub finding: DriftFinding,
    /// What was done, or why it could not be.
    pub outcome: String,
    pub repaired: bool,
}

/// `POST /converge`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ConvergeReport {
    pub repairs: Vec<Repair>,
    /// What still differs afterwards.
    pub remaining: Vec<DriftFinding>,
}
