//! Releases: registering an uploaded artifact (checks, signature, immutability)
//! and re-verifying the stored ones.

pub use gantry_api::VerifyResult;

use super::{now_ms, ControlError, Controller};
use crate::artifact;
use gantry_store::{InsertOutcome, ReleaseRecord};

/// The longest version accepted: it names the release's directory (and
/// its manifest), which must fit a file name (255 bytes) with room to spare.
pub const MAX_VERSION_LEN: usize = 128;
/// The longest signature accepted; minisign's are a few hundred bytes.
pub const MAX_SIGNATURE_LEN: usize = 4096;

/// A new release as received by the API.
#[derive(Debug)]
pub struct NewRelease<'a> {
    pub version: &'a str,
    /// The uploaded artifact, hashed, not yet in the store.
    pub artifact: gantry_store::Staged,
    pub git_sha: Option<String>,
    /// When that commit was made.
    pub committed_at: Option<gantry_core::Millis>,
    /// The `.minisig` file's text.
    pub signature: Option<String>,
    pub by: &'a str,
}

impl Controller {
    // ---- releases ----

    pub fn register_release(
        &self,
        r: NewRelease<'_>,
    ) -> Result<(ReleaseRecord, bool), ControlError> {
        if r.version.len() > MAX_VERSION_LEN {
            return Err(ControlError::Invalid(format!(
                "version is {} characters long; at most {MAX_VERSION_LEN} are accepted (it names the release's directory)",
                r.version.len()
            )));
        }
        let version = Self::parse_version(r.version)?;
        if let Some(sha) = &r.git_sha {
            if !(7..=40).contains(&sha.len()) || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(ControlError::Invalid(format!(
                    "git SHA {sha:?} is not a hex commit id of 7 to 40 characters"
                )));
            }
        }
        if let Some(sig) = &r.signature {
            if sig.len() > MAX_SIGNATURE_LEN {
                return Err(ControlError::Invalid(format!(
                    "signature is {} bytes long; a minisign signature file is at most {MAX_SIGNATURE_LEN}",
                    sig.len()
                )));
            }
        }
        let staged = r.artifact;
        let refused = |e: String| ControlError::Invalid(format!("release {version} refused: {e}"));
        let kind = artifact::detect_kind(staged.path()).map_err(ControlError::Invalid)?;
        let signed_by = match &r.signature {
            Some(sig) => Some(
                artifact::verify_signature(staged.path(), sig, &self.config.signing.public_keys)
                    .map_err(refused)?,
            ),
            None => None,
        };
        // Check for a conflict before storing the blob, so a refused upload leaves nothing behind.
        let digest = staged.digest().clone();
        if let Some(existing) = self.store.release(&version)? {
            if existing.digest != digest {
                return Err(ControlError::Conflict(format!(
                    "release {version} already exists with different content (sha256 {}); releases are immutable, use a new version",
                    existing.digest
                )));
            }
            return Ok((existing, false));
        }
        // A release that could never unpack is refused now, not at its first deployment.
        artifact::check(kind, staged.path(), &self.config.artifacts).map_err(refused)?;
        // Its migrations travel inside the artifact, so its checksum and
        // signature cover them; a bad declaration is refused now.
        let migrations = artifact::migrations(kind, staged.path()).map_err(refused)?;
        let record = ReleaseRecord {
            version: version.clone(),
            digest: digest.clone(),
            size: staged.size(),
            artifact_kind: kind.to_owned(),
            git_sha: r.git_sha.map(|s| s.to_ascii_lowercase()),
            signature: r.signature,
            signed_by,
            created_at: now_ms(),
            created_by: r.by.to_owned(),
            committed_at: r.committed_at,
            migrations,
        };
        self.blobs
            .commit(staged)
            .map_err(|e| ControlError::Internal(e.to_string()))?;
        // In the shared database before the record: a release any
        // controller can see, any controller can deploy.
        self.share_blob(&digest)?;
        match self.store.insert_release(&record)? {
            InsertOutcome::Inserted => Ok((record, true)),
            InsertOutcome::AlreadyPresent => Ok((self.registered(&version)?, false)),
            InsertOutcome::Conflict { existing } => Err(ControlError::Conflict(format!(
                "release {version} already exists with different content (sha256 {existing})"
            ))),
        }
    }

    pub fn release(&self, version: &str) -> Result<ReleaseRecord, ControlError> {
        self.registered(&Self::parse_version(version)?)
    }

    /// Re-hashes every stored artifact, and checks each release directory
    /// already unpacked against its manifest (without repairing it: the
    /// next deployment of that release does).
    pub async fn verify_releases(&self) -> Result<Vec<VerifyResult>, ControlError> {
        let mut results = Vec::new();
        for r in self.store.releases()? {
            let blobs = self.blobs.clone();
            let digest = r.digest.clone();
            let artifact = tokio::task::spawn_blocking(move || blobs.verify(&digest))
                .await
                .map_err(|e| ControlError::Internal(e.to_string()))?;
            let (ok, detail) = match artifact {
                Err(e) => (false, e.to_string()),
                Ok(()) => match self.target.check_release(&r).await {
                    None => (true, "checksum verified".to_owned()),
                    Some(Ok(())) => (
                        true,
                        "checksum verified; release directory matches its manifest".to_owned(),
                    ),
                    Some(Err(why)) => (
                        false,
                        format!("checksum verified, but the release directory does not match its manifest ({why}); its next deployment unpacks it again"),
                    ),
                },
            };
            results.push(VerifyResult {
                version: r.version.to_string(),
                digest: r.digest.to_string(),
                ok,
                detail,
            });
        }
        Ok(results)
    }
}
