//! Incidents as the API lists and closes them.

use serde::{Deserialize, Serialize};

/// `GET /migrations?env=…`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrationsQuery {
    pub env: String,
}

/// `GET /incidents?env=…&open=…&limit=…`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IncidentQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Only those not closed yet.
    #[serde(default)]
    pub open: bool,
    /// 100 if absent, at most 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// `POST /incidents/{id}/close`: what was learned.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseIncident {
    /// What happened and why (at most 4096 bytes).
    pub summary: String,
    /// What will be done so it does not happen again (at most 4096 bytes).
    pub follow_up: String,
}

/// `GET /dora?env=…&since=…`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DoraQuery {
    pub env: String,
    /// How far back: a duration such as "90d" or "2w" (default 30d, at most 3650d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}
