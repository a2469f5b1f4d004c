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
    /// On a fleet, one row per host of the environment (empty when it runs
    /// on the controller's machine).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<EnvHostStatus>,
    /// What the latest periodic drift check found here (`gantry converge`
    /// repairs what it can).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<crate::DriftFinding>,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct InstanceStatus {
    pub id: String,
    pub port: u16,
    /// Whether it is known to run (an instance on a host that does not
    /// answer within a few seconds counts as not running).
    pub running: bool,
    /// The fleet host it runs on (absent: the controller's machine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// One host of a fleet environment.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EnvHostStatus {
    pub host: String,
    /// The release the environment's state has on this host (absent: none
    /// of its instances are here, e.g. the host failed in the deployment).
    pub release: Option<String>,
    /// Instances of the state on this host that run, and how many there are.
    pub up: u32,
    pub expected: u32,
    /// Why the host failed in the deployment in progress or, at rest, the
    /// last one; and which deployment that was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_in: Option<DeploymentId>,
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

/// `GET /logs?…`: instance output or an environment's access log, from a
/// cursor (the previous page's) to follow it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// The environment (needed unless `instance` is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// The routers' access log (JSON lines) instead of instance output.
    #[serde(default)]
    pub access: bool,
    /// Only this release's instances (or access log lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// Only this instance's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Access log lines at or after this time (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Millis>,
    /// Where the previous page ended; absent: the end of each log (less `bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Without a cursor, how much of each log's end to send (default 8 KiB, at most 1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// One line of a log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LogLine {
    /// The instance that wrote it (instance output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// When (access log lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Millis>,
    pub text: String,
}

/// `GET /logs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LogPage {
    pub lines: Vec<LogLine>,
    /// Pass it back to get what was written since.
    pub cursor: String,
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
    /// On a fleet, how many of its hosts serve (counts only: host names
    /// are internal and this page is public).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetStatus>,
    /// Differences the latest drift check found between what runs and
    /// what should (a count only: the details are `GET /drift`'s).
    #[serde(default)]
    pub drift: u32,
}

/// A fleet environment's hosts on the public status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FleetStatus {
    pub hosts: u32,
    /// Hosts whose every instance of the current release runs.
    pub serving: u32,
    /// Hosts that failed in the current (or last) deployment.
    pub failed: u32,
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
