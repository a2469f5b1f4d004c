//! The controller's view of its environments, traffic and itself.

use gantry_core::notify::{Notice, ServiceStatus};
use gantry_core::{DeploymentId, Millis, Phase};
use serde::{Deserialize, Serialize};

/// `GET /status`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StatusView {
    pub service: String,
    pub environments: Vec<EnvStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EnvStatus {
    pub name: String,
    pub listen: String,
    pub version: Option<String>,
    pub since: Option<Millis>,
    pub instances: Vec<InstanceStatus>,
    pub active_deployment: Option<DeploymentSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct InstanceStatus {
    pub id: String,
    pub port: u16,
    pub running: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeploymentSummary {
    pub id: DeploymentId,
    pub version: String,
    pub phase: Phase,
}

/// What live views hear (`GET /events`): each recorded step of a
/// deployment, and each notice.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveEvent {
    Step {
        deployment: DeploymentId,
        env: String,
        version: String,
        phase: Phase,
        log: Vec<String>,
        at: Millis,
    },
    Notice(Notice),
}

/// `GET /traffic?env=…&above_ms=…`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TrafficQuery {
    pub env: String,
    /// Comma-separated latency limits in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above_ms: Option<String>,
}

/// `GET /instances/{id}/log?bytes=…`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LogQuery {
    /// How much of the log's end to send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// `POST /shutdown`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShutdownRequest {
    /// Stop the routers and instances too, instead of leaving them serving.
    #[serde(default)]
    pub stop_workloads: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ShutdownAnswer {
    pub shutting_down: bool,
    pub stopped_workloads: bool,
}

/// `GET /status.json`: the public status page's data.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StatusPage {
    pub service: String,
    /// The worst of the environments.
    pub status: ServiceStatus,
    pub label: String,
    pub environments: Vec<EnvironmentStatus>,
    /// Rollbacks and failures of the last 30 days, newest first.
    pub incidents: Vec<Incident>,
    pub generated_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EnvironmentStatus {
    pub name: String,
    pub status: ServiceStatus,
    pub label: String,
    pub version: Option<String>,
    pub since: Option<i64>,
    /// The deployment in progress or scheduled, if any.
    pub deployment: Option<ActiveDeployment>,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ActiveDeployment {
    pub id: DeploymentId,
    pub version: String,
    pub phase: Phase,
    pub weight: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Incident {
    pub env: String,
    pub deployment: DeploymentId,
    pub version: String,
    pub outcome: String,
    pub reason: Option<String>,
    pub started_at: i64,
    pub resolved_at: Option<i64>,
}

/// What `gantry server` writes to `server.json` in its data directory, so
/// the CLI on the same machine finds it.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ServerInfo {
    pub pid: u32,
    pub url: String,
}
