//! Records the store keeps and the API returns as they are.

use gantry_core::evidence::{EvidenceKind, Report};
use gantry_core::governance::Role;
use gantry_core::{DeploymentId, Digest, EnvName, InstanceRef, Millis, Version};
use serde::{Deserialize, Serialize};

/// A registered release: an immutable artifact and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReleaseRecord {
    pub version: Version,
    pub digest: Digest,
    pub size: u64,
    /// `tar.gz`, `tar` or `executable`.
    pub artifact_kind: String,
    pub git_sha: Option<String>,
    /// The minisign signature file, as text, if one was given.
    pub signature: Option<String>,
    /// The public key that verified the signature.
    pub signed_by: Option<String>,
    pub created_at: Millis,
    pub created_by: String,
    /// When its git commit was made, if told: DORA's lead time counts from
    /// it (else from `created_at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_at: Option<Millis>,
    /// The database migrations the release carries (its artifact's
    /// `gantry-migrations.toml`), in the order they run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrations: Vec<gantry_core::machine::migrations::Migration>,
}

/// A migration applied in an environment and not backed out: it never
/// runs there again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AppliedMigration {
    pub env: EnvName,
    pub id: String,
    pub kind: gantry_core::machine::migrations::MigrationKind,
    /// The release that carried it and the deployment that applied it.
    pub version: Version,
    pub deployment: DeploymentId,
    pub applied_at: Millis,
}

/// A file kept as a deployment's validation evidence (a screenshot, a log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EvidenceFile {
    pub name: String,
    /// SHA-256 of its bytes, among the blobs.
    pub digest: Digest,
    pub size: u64,
}

/// A deployment's change record closed by a person: its final status (the
/// deployment's outcome), what they validated, and the evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeploymentClosure {
    pub deployment: DeploymentId,
    /// The deployment's phase when closed: succeeded, rolled_back or failed.
    pub status: String,
    pub summary: String,
    pub evidence: Vec<EvidenceFile>,
    pub closed_by: String,
    pub closed_at: Millis,
}

/// What serves an environment now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EnvState {
    pub env: EnvName,
    pub version: Version,
    pub instances: Vec<InstanceRef>,
    pub deployment: DeploymentId,
    pub since: Millis,
}

/// One line of a deployment's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LogEntry {
    pub at: Millis,
    pub phase: String,
    pub message: String,
}

/// A person who may use the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct User {
    pub name: String,
    pub roles: Vec<Role>,
    pub created_at: Millis,
    pub created_by: String,
}

/// An API token. The secret is never stored, only its SHA-256, and the
/// hash is never sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TokenRecord {
    pub id: String,
    pub user: String,
    pub label: Option<String>,
    #[serde(skip_serializing, default)]
    pub secret_hash: String,
    pub created_at: Millis,
    pub created_by: String,
    pub expires_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
    pub revoked_by: Option<String>,
}

/// A report attached to a release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EvidenceRecord {
    pub id: i64,
    pub version: Version,
    pub kind: EvidenceKind,
    /// SHA-256 of the file as uploaded (kept among the blobs).
    pub digest: Digest,
    pub file_name: String,
    pub report: Report,
    pub added_at: Millis,
    pub added_by: String,
}

/// One notice to one channel, until it is delivered or given up on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Delivery {
    pub id: i64,
    pub channel: String,
    pub notice: gantry_core::notify::Notice,
    /// `pending`, `delivered` or `failed` (given up after the last attempt).
    pub status: String,
    pub attempts: u32,
    /// When the next attempt is due (pending ones).
    pub next_at: Millis,
    pub last_error: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}
