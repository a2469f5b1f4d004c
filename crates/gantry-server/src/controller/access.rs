//! Who is calling: users, tokens and the identity a token stands for.

use super::{now_ms, ControlError, Controller};
use crate::governance::{
    hash_secret, random_hex, Authorize, Identity, IssuedToken, TokenRefusal, TOKEN_PREFIX,
};
use gantry_core::governance::{self, Permission, Role};
use gantry_core::Millis;
use gantry_store::{TokenRecord, User};
use subtle::ConstantTimeEq;

impl Controller {
    /// Who holds `presented`: the bootstrap admin (its token compared with
    /// `admin_token`) or a user with a live token.
    pub fn identify(&self, presented: &str, admin_token: &str) -> Result<Identity, TokenRefusal> {
        if bool::from(presented.as_bytes().ct_eq(admin_token.as_bytes())) {
            return Ok(crate::governance::bootstrap_admin());
        }
        let (id, secret) = presented
            .strip_prefix(TOKEN_PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .ok_or(TokenRefusal::Invalid)?;
        let record = self
            .store
            .token(id)
            .map_err(|e| TokenRefusal::Store(e.to_string()))?
            .ok_or(TokenRefusal::Invalid)?;
        if !bool::from(
            hash_secret(secret)
                .as_bytes()
                .ct_eq(record.secret_hash.as_bytes()),
        ) {
            return Err(TokenRefusal::Invalid);
        }
        if record.revoked_at.is_some() {
            return Err(TokenRefusal::Revoked { id: record.id });
        }
        if let Some(at) = record.expires_at.filter(|&at| at <= now_ms()) {
            return Err(TokenRefusal::Expired {
                id: record.id,
                at: governance::rfc3339(at),
            });
        }
        let user = self
            .store
            .user(&record.user)
            .map_err(|e| TokenRefusal::Store(e.to_string()))?
            .ok_or(TokenRefusal::Invalid)?;
        let minted_by = (record.created_by != user.name).then_some(record.created_by);
        Ok(Identity {
            user: user.name,
            roles: user.roles,
            token: Some(record.id),
            minted_by,
        })
    }

    pub fn add_user(&self, name: &str, roles: &[String], by: &str) -> Result<User, ControlError> {
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
        if !valid_name || name == "admin" || name == "gantry" || name == "anonymous" {
            return Err(ControlError::Invalid(format!(
                "user name {name:?}: expected 1 to 64 letters, digits, '-', '_', '.' or '@', and not admin, gantry or anonymous"
            )));
        }
        if roles.is_empty() {
            return Err(ControlError::Invalid(format!(
                "user {name}: give at least one role ({})",
                Role::NAMES.join(", ")
            )));
        }
        let mut parsed = roles
            .iter()
            .map(|r| Role::parse(r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ControlError::Invalid(format!("user {name}: {e}")))?;
        parsed.sort();
        parsed.dedup();
        let user = User {
            name: name.to_owned(),
            roles: parsed,
            created_at: now_ms(),
            created_by: by.to_owned(),
        };
        if !self.store.create_user(&user)? {
            return Err(ControlError::Conflict(format!(
                "user {name} already exists"
            )));
        }
        Ok(user)
    }

    /// Mints a token for `user`. Only `user` themself or an admin may; a
    /// token minted by someone else may not give verdicts. A user who mints
    /// their own token with one someone else minted for them exchanges it:
    /// that one is revoked, so a handed-over token cannot have been quietly
    /// exchanged by whoever minted it. Either way it is on the audit trail,
    /// with who minted for whom and with which token.
    pub fn create_token(
        &self,
        user: &str,
        label: Option<String>,
        expires_in_ms: Option<u64>,
        by: &Identity,
    ) -> Result<IssuedToken, ControlError> {
        if by.user != user {
            if let Err(ControlError::Forbidden(why)) = by.may(Permission::Administer) {
                return Err(ControlError::Forbidden(format!(
                    "{why}; a token for {user} is minted by {user} or by an admin"
                )));
            }
        }
        if self.store.user(user)?.is_none() {
            return Err(ControlError::NotFound(format!(
                "user {user} does not exist; `gantry user add` creates one"
            )));
        }
        let id = random_hex(8)?;
        let secret = random_hex(32)?;
        let now = now_ms();
        let expires_at = expires_in_ms.map(|ms| now + ms as Millis);
        self.store.create_token(&TokenRecord {
            id: id.clone(),
            user: user.to_owned(),
            label,
            secret_hash: hash_secret(&secret),
            created_at: now,
            created_by: by.user.clone(),
            expires_at,
            revoked_at: None,
            revoked_by: None,
        })?;
        let exchanged = match (&by.token, &by.minted_by) {
            (Some(old), Some(_)) if by.user == user => {
                self.store.revoke_token(old, &by.user, now_ms())?;
                Some(old.clone())
            }
            _ => None,
        };
        let entry = gantry_core::audit::AuditEntry {
            at: now,
            actor: by.user.clone(),
            action: "token.created".to_owned(),
            subject: format!("token {id} for {user}"),
            outcome: "done".to_owned(),
            detail: serde_json::json!({
                "user": user,
                "minted_by": by.user,
                "may_give_verdicts": by.user == user,
                "with_token": by.token,
                "with_token_minted_by": by.minted_by,
                "revoked": exchanged,
                "expires_at": expires_at,
            })
            .to_string(),
        };
        self.store.append_audit(entry)?;
        Ok(IssuedToken {
            token: format!("{TOKEN_PREFIX}{id}_{secret}"),
            id,
            user: user.to_owned(),
            expires_at,
            minted_by: by.user.clone(),
            revoked: exchanged,
        })
    }

    pub fn revoke_token(&self, id: &str, by: &str) -> Result<TokenRecord, ControlError> {
        let existing = self
            .store
            .token(id)?
            .ok_or_else(|| ControlError::NotFound(format!("token {id} does not exist")))?;
        if existing.revoked_at.is_some() {
            return Err(ControlError::Conflict(format!(
                "token {id} is already revoked"
            )));
        }
        self.store.revoke_token(id, by, now_ms())?;
        Ok(self.store.token(id)?.unwrap_or(existing))
    }
}
