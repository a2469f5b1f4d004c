//! Releases as the API answers for them (the record itself is
//! [`crate::records::ReleaseRecord`]).

use serde::{Deserialize, Serialize};

/// `POST /releases/verify`: one stored artifact, hashed again.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VerifyResult {
    pub version: String,
    pub digest: String,
    pub ok: bool,
    pub detail: String,
}

/// Headers of `PUT /releases/{version}` (the body is the artifact's bytes).
pub mod headers {
    /// The git commit the artifact was built from.
    pub const GIT_SHA: &str = "x-gantry-git-sha";
    /// The minisign signature file, base64.
    pub const SIGNATURE: &str = "x-gantry-signature";
    /// When that commit was made (RFC 3339): lead time counts from it.
    pub const COMMIT_TIME: &str = "x-gantry-commit-time";
}
