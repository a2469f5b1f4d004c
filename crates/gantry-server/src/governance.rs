//! Who is calling, what a release must show before it enters an
//! environment, and approvals: the types the API sends. The controller's
//! side is in `controller/{access,governance,rehearsal}.rs`. The
//! rules themselves are pure, in `gantry_core::governance` and
//! `gantry_core::evidence`; this module feeds them from the store.

pub use gantry_api::{Identity, IssuedToken, PendingApproval};

use crate::error::ControlError;
use gantry_core::governance::{allowed, Permission, Role};
use sha2::{Digest as _, Sha256};

/// The holder of the controller's own token (`admin.token`).
pub fn bootstrap_admin() -> Identity {
    Identity {
        user: "admin".to_owned(),
        roles: vec![Role::Admin],
        token: None,
        minted_by: None,
    }
}

/// What an identity may do. A trait because [`Identity`] is a wire type of
/// `gantry-api`; the rule that reads it belongs to the controller.
pub trait Authorize {
    /// Whether the roles grant `p`. Separation of duties: a verdict needs a
    /// token its holder minted themself, so whoever minted a token for
    /// someone else (an admin, typically) cannot approve as them with it.
    fn may(&self, p: Permission) -> Result<(), ControlError>;
}

impl Authorize for Identity {
    fn may(&self, p: Permission) -> Result<(), ControlError> {
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
