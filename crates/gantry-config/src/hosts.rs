//! Fleet hosts (`[hosts.NAME]`) and how the controller reaches them (`[ssh]`).
//!
//! Every value here ends up as an argument of the system `ssh` or as a line the
//! bootstrap script reads, never inside a shell string; still, each is bounded
//! to a plain character set at load, so an address can never read as an ssh
//! option (`-oProxyCommand=…`) and a data directory can never hold a line break.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// A host of the fleet, by the name environments use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    /// An IP address or a DNS name.
    pub address: String,
    /// The SSH login; the controller's own user when absent.
    pub user: Option<String>,
    pub port: u16,
    /// Region or zone: the unit of waves.
    pub site: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub key: SshKey,
    /// Where `gantry` keeps its files on the host: relative to the remote
    /// `$HOME`, or absolute.
    pub data_dir: String,
}

/// Where the SSH private key comes from. The key itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshKey {
    /// A private key file on the controller's machine (absolute path).
    File(PathBuf),
    /// The agent at `SSH_AUTH_SOCK`.
    Agent,
}

/// `[ssh]`: how the controller reaches hosts, and how many at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshSettings {
    /// The pinned host keys: relative to the controller's data directory, or
    /// absolute. Only `gantry hosts trust` writes it.
    pub known_hosts: PathBuf,
    pub connect_timeout_ms: u64,
    /// Connections being opened at once, fleet-wide.
    pub max_connecting: u32,
    /// Sessions at once over one host's connection (below sshd's `MaxSessions`).
    pub max_sessions_per_host: u32,
    /// Uploads at once, fleet-wide (they are CPU-bound: encryption).
    pub max_transfers: u32,
}

impl Default for SshSettings {
    fn default() -> Self {
        SshSettings {
            known_hosts: PathBuf::from("known_hosts"),
            connect_timeout_ms: 10_000,
            max_connecting: 16,
            max_sessions_per_host: 8,
            max_transfers: 8,
        }
    }
}

/// The data directory on a host when `data_dir` is not set.
pub const DEFAULT_HOST_DATA_DIR: &str = ".gantry";

/// How an environment's rollout walks its hosts (`fleet = { … }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetPlan {
    /// Cumulative batch targets within a wave, the last 100%.
    pub batches: Vec<HostShare>,
    /// Instead of `batches`: batches of this many hosts (of each wave).
    pub max_unavailable: Option<HostShare>,
    /// Hosts that may fail before the whole rollout rolls back.
    pub max_failed: HostShare,
    /// Sites in rollout order, each with its hosts of this environment;
    /// empty: one wave of every host.
    pub waves: Vec<Wave>,
}

/// A number of hosts, or a share of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostShare {
    Count(u32),
    Percent(u32),
}

impl HostShare {
    /// How many of `total` hosts this is (a share rounded up, at most `total`).
    pub fn of(self, total: u32) -> u32 {
        match self {
            HostShare::Count(n) => n.min(total),
            HostShare::Percent(p) => (u64::from(total) * u64::from(p)).div_ceil(100) as u32,
        }
    }
}

/// One wave: a site and the environment's hosts there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wave {
    pub site: String,
    pub hosts: Vec<String>,
}
