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
