//! The audit trail as the API pages and verifies it.

use gantry_core::audit::{AuditRecord, Checkpoint};
use serde::{Deserialize, Serialize};

/// A record's place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditAnchor {
    pub seq: u64,
    pub hash: String,
}

/// `GET /audit?after=…&limit=…`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditPage {
    /// The last pruned record, which the first kept one links to.
    pub anchor: Option<AuditAnchor>,
    /// The last record the store handed out: the trail must reach it.
    pub head: AuditAnchor,
    /// The newest checkpoint the controller signed: the trail must hold it.
    pub checkpoint: Option<Checkpoint>,
    pub records: Vec<AuditRecord>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Records with a sequence number above this one.
    #[serde(default)]
    pub after: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// `GET /audit/public-key`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditPublicKey {
    /// `ed25519`.
    pub algorithm: String,
    /// The Ed25519 public key that signs checkpoints, hex.
    pub public_key: String,
}

/// `GET /audit/verify`: the controller's own check of its chain.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditVerdict {
    pub ok: bool,
    pub records: usize,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The first edited, removed or reordered record.
    pub first_bad_seq: Option<u64>,
    pub reason: Option<String>,
    /// The newest checkpoint the controller signed, checked too.
    pub checkpoint_seq: Option<u64>,
}
