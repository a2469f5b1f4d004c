//! Who is calling, what a release must show before it enters an
//! environment, and approvals: the types the API sends. The controller's
//! side is in `controller/{access,governance,rehearsal}.rs`. The
//! rules themselves are pure, in `gantry_core::governance` and
//! `gantry_core::evidence`; this module feeds them from the store.

use crate::error::ControlError;
use gantry_core::governance::{allowed, Approval, ChangeType, Permission, Role};
use gantry_core::{DeploymentId, Millis};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

/// The caller of an API request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Identity {
    pub user: String,
    pub roles: Vec<Role>,
    /// The id of the token presented (none for the controller's own token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Who minted that token, when it was not its user: such a token may do
    /// what the user's roles allow except give verdicts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minted_by: Option<String>,
}

impl Identity {
    /// The holder of the controller's own token (`admin.token`).
    pub fn bootstrap_admin() -> Identity {
        Identity {
            user: "admin".to_owned(),
            roles: vec![Role::Admin],
            token: None,
            minted_by: None,
        }
    }

    /// Whether the roles grant `p`. Separation of duties: a verdict needs a
    /// token its holder minted themself, so whoever minted a token for
    /// someone else (an admin, typically) cannot approve as them with it.
    pub fn may(&self, p: Permission) -> Result<(), ControlError> {
        if allowed(&self.roles, p) {
            if let (Permission::Approve, Some(minter)) = (p, &self.minted_by) {
                return Err(ControlError::Forbidden(format!(
                    "{user} may not give verdicts with token {id}: {minter} minted it, not {user}; \
                     a verdict needs a token {user} minted themself \
                     (`gantry token create --user {user}` run with this token gives one and revokes this one)",
                    user = self.user,
                    id = self.token.as_deref().unwrap_or("?"),
                )));
            }
            return Ok(());
        }
        let roles: Vec<&str> = self.roles.iter().map(|r| r.as_str()).collect();
        Err(ControlError::Forbidden(format!(
            "{} ({}) may not {}: that needs a role that grants it ({})",
            self.user,
            roles.join(", "),
            p.as_str(),
            match p {
                Permission::Read => "viewer, deployer, approver or admin",
                Permission::Deploy => "deployer or admin",
                Permission::Approve => "approver or admin",
                Permission::Administer => "admin",
            }
        )))
    }
}

/// Who starts automatic deployments.
pub const AUTO_ACTOR: &str = "gantry";

/// Tokens are `gantry_<id>_<secret>`: the id finds the record, the secret's
/// SHA-256 is compared in constant time.
pub(crate) const TOKEN_PREFIX: &str = "gantry_";

pub(crate) fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

pub(crate) fn random_hex(bytes: usize) -> Result<String, ControlError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| ControlError::Internal(format!("no randomness: {e}")))?;
    Ok(hex::encode(buf))
}

/// A token as issued: shown once, never stored.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct IssuedToken {
    pub id: String,
    pub user: String,
    pub token: String,
    pub expires_at: Option<Millis>,
    /// Who minted it; when not `user`, it may not give verdicts.
    pub minted_by: String,
    /// The token this one was exchanged for: minted by someone else, and
    /// revoked by the exchange.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
}

/// Why a presented token was refused (answered 401), or could not be
/// checked (`Store`, answered 500: the token may be good).
#[derive(Debug, thiserror::Error)]
pub enum TokenRefusal {
    #[error("the bearer token is not valid")]
    Invalid,
    #[error("token {id} was revoked")]
    Revoked { id: String },
    #[error("token {id} expired at {at}")]
    Expired { id: String, at: String },
    #[error("cannot check the token: {0}")]
    Store(String),
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct PendingApproval {
    pub deployment: DeploymentId,
    pub env: String,
    pub version: String,
    pub change: ChangeType,
    pub requested_by: String,
    pub phase: String,
    pub approved: u32,
    pub required: u32,
    pub review_by: Option<Millis>,
    /// An emergency change past its review time without its approvals.
    pub overdue: bool,
    pub approvals: Vec<Approval>,
}
