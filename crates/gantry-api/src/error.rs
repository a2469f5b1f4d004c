//! The body of every error answer.

use serde::{Deserialize, Serialize};

/// `{"error": {"code": "not_found", "message": "…"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `not_found`, `forbidden`, `invalid_request`…
    pub code: String,
    /// For a person; never holds a secret.
    pub message: String,
}
