//! The fleet as the controller sees it (`GET /api/v1/hosts`): for each
//! configured host, whether it answers, what it runs and how that is doing.

use gantry_core::Millis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `GET /hosts`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HostsView {
    /// When the controller asked its hosts.
    pub observed_at: Millis,
    /// Every host of the config's `[hosts]`, by name.
    pub hosts: Vec<HostView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HostView {
    pub name: String,
    pub address: String,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Whether the host answered this observation (within its deadline).
    pub reachable: bool,
    /// Since when the controller's current channel to the host is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_since: Option<Millis>,
    /// When the host last answered anything (a call of a deployment or of
    /// an observation); `None` if it never has since the controller started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Millis>,
    /// Why the host is not reachable (or what it failed to answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The `gantry` version serving on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gantry_version: Option<String>,
    /// Free bytes on the file system of the host's data directory, as the
    /// host reported it when the channel opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
    /// The environments the config places on this host.
    pub environments: Vec<HostEnvView>,
}

/// One environment on one host.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HostEnvView {
    pub env: String,
    /// Releases of this environment running on the host (several during a
    /// rollout); empty when nothing runs or the host did not answer.
    pub releases: Vec<String>,
    /// The release the environment runs, per the controller's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_release: Option<String>,
    /// How many instances the controller's state has on this host.
    pub expected_instances: u32,
    /// The instances running on the host, with their health.
    pub instances: Vec<HostInstanceView>,
    /// Whether the host's router for this environment runs (`None`: not known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_running: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HostInstanceView {
    /// The id as the controller knows it (`<id>@<host>`).
    pub id: String,
    pub port: u16,
    pub version: String,
    /// What its health check answered now.
    pub health: InstanceHealthView,
    /// The probe's detail when not healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InstanceHealthView {
    Healthy,
    Unhealthy,
    /// Nothing answered on its port, or the host did not answer in time.
    Unknown,
}
