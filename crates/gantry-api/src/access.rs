//! Who may use the API: users, tokens and the caller's own identity.

use gantry_core::governance::Role;
use gantry_core::Millis;
use serde::{Deserialize, Serialize};

/// `GET /whoami`: who the presented token stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Identity {
    pub user: String,
    pub roles: Vec<Role>,
    /// The id of the token presented (none for the controller's own token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Who minted that token, when it was not its user: such a token may do
    /// what the user's roles allow except give verdicts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minted_by: Option<String>,
}

/// `POST /users`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: String,
    /// viewer, deployer, approver, admin.
    pub roles: Vec<String>,
}

/// `POST /tokens`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// A duration such as "90d"; no expiry if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
}

/// `GET /tokens?user=…`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TokenQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// A token as it is issued: the only time its secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct IssuedToken {
    pub id: String,
    pub user: String,
    pub token: String,
    pub expires_at: Option<Millis>,
    /// Who minted it; when not `user`, it may not give verdicts.
    pub minted_by: String,
    /// The token this one was exchanged for: minted by someone else, and
    /// revoked by the exchange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
}
