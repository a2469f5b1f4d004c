//! Why a host could not be reached or used, typed from ssh's own words.

use gantry_config::{Host, SshKey};
use std::path::{Path, PathBuf};

/// Why a host could not be reached or used. Each names the host, its address
/// and what to do; the other hosts are unaffected.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("host {host} ({address}) has no pinned host key in {}: refusing it; run `gantry hosts trust {host}` (it shows the fingerprints before pinning)", known_hosts.display())]
    UnknownHostKey {
        host: String,
        address: String,
        known_hosts: PathBuf,
    },
    #[error("host {host} ({address}) offered a host key that is NOT the one pinned in {}: refusing it (the host was reinstalled, or something is impersonating it); check its new fingerprint out of band, then run `gantry hosts trust {host} --replace`", known_hosts.display())]
    HostKey {
        host: String,
        address: String,
        known_hosts: PathBuf,
        detail: String,
    },
    #[error("host {host} ({address}) is unreachable: {detail}; check that it is up, that sshd listens on that port and that the network between lets it through")]
    Unreachable {
        host: String,
        address: String,
        detail: String,
    },
    #[error("host {host} ({address}) refused login as {user} with {key}: {detail}; add the key's public half to that user's ~/.ssh/authorized_keys on the host, or fix `hosts.{host}.key`/`user`")]
    Auth {
        host: String,
        address: String,
        user: String,
        key: String,
        detail: String,
    },
    #[error("uploading gantry to host {host} ({address}) failed: {detail}")]
    Upload {
        host: String,
        address: String,
        detail: String,
    },
    #[error("host {host} ({address}): {detail}")]
    Remote {
        host: String,
        address: String,
        detail: String,
    },
    #[error("ssh to host {host} ({address}) failed: {detail}")]
    Ssh {
        host: String,
        address: String,
        detail: String,
    },
    /// A problem on the controller's side, before any host is involved.
    #[error("{0}")]
    Local(String),
}

impl HostError {
    /// The host the error is about, if any.
    pub fn host(&self) -> Option<&str> {
        match self {
            HostError::UnknownHostKey { host, .. }
            | HostError::HostKey { host, .. }
            | HostError::Unreachable { host, .. }
            | HostError::Auth { host, .. }
            | HostError::Upload { host, .. }
            | HostError::Remote { host, .. }
            | HostError::Ssh { host, .. } => Some(host),
            HostError::Local(_) => None,
        }
    }
}

pub(super) fn endpoint(host: &Host) -> String {
    if host.address.contains(':') {
        format!("[{}]:{}", host.address, host.port)
    } else {
        format!("{}:{}", host.address, host.port)
    }
}

/// Turns ssh's words into a typed error. ssh reports in text only, so this
/// reads the lines OpenSSH has printed for these cases for many years.
pub(super) fn classify_connect_error(
    host: &Host,
    known_hosts: &Path,
    e: openssh::Error,
) -> HostError {
    let detail = match &e {
        openssh::Error::Connect(io) | openssh::Error::Master(io) => io.to_string(),
        other => other.to_string(),
    };
    let one_line = detail
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("@@@"))
        .collect::<Vec<_>>()
        .join(" ");
    let (name, address) = (host.name.clone(), endpoint(host));
    if detail.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || detail.contains("HOST KEY HAS CHANGED")
    {
        HostError::HostKey {
            host: name,
            address,
            known_hosts: known_hosts.to_path_buf(),
            detail: one_line,
        }
    } else if detail.contains("Host key verification failed")
        || detail.contains("host key is known")
    {
        HostError::UnknownHostKey {
            host: name,
            address,
            known_hosts: known_hosts.to_path_buf(),
        }
    } else if detail.contains("Permission denied") {
        let user = host.user.clone().unwrap_or_else(|| {
            std::env::var("USER").unwrap_or_else(|_| "the controller's user".into())
        });
        let key = match &host.key {
            SshKey::File(p) => format!("key {}", p.display()),
            SshKey::Agent => "the agent's keys".to_owned(),
        };
        HostError::Auth {
            host: name,
            address,
            user,
            key,
            detail: one_line,
        }
    } else if [
        "timed out",
        "Connection refused",
        "No route to host",
        "Network is unreachable",
        "Could not resolve",
        "Connection closed",
        "Connection reset",
    ]
    .iter()
    .any(|s| detail.contains(s))
    {
        HostError::Unreachable {
            host: name,
            address,
            detail: one_line,
        }
    } else {
        HostError::Ssh {
            host: name,
            address,
            detail: one_line,
        }
    }
}

pub(super) fn remote(host: &Host, detail: String) -> HostError {
    HostError::Remote {
        host: host.name.clone(),
        address: endpoint(host),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_errors_become_typed_errors_naming_the_host() {
        let host = Host {
            name: "web-1".into(),
            address: "10.0.0.5".into(),
            user: Some("deploy".into()),
            port: 22,
            site: None,
            labels: Default::default(),
            key: SshKey::Agent,
            data_dir: ".gantry".into(),
        };
        let kh = Path::new("/d/known_hosts");
        let err = |text: &str| {
            classify_connect_error(
                &host,
                kh,
                openssh::Error::Connect(std::io::Error::other(text.to_owned())),
            )
        };
        let e = err("No ED25519 host key is known for 10.0.0.5 and you have requested strict checking.\nHost key verification failed.");
        assert!(matches!(e, HostError::UnknownHostKey { .. }), "{e:?}");
        assert!(
            e.to_string().contains("run `gantry hosts trust web-1`"),
            "{e}"
        );
        let e = err("@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\nHost key verification failed.");
        assert!(matches!(e, HostError::HostKey { .. }), "{e:?}");
        assert!(
            e.to_string()
                .contains("`gantry hosts trust web-1 --replace`"),
            "{e}"
        );
        let e = err("deploy@10.0.0.5: Permission denied (publickey).");
        assert!(matches!(e, HostError::Auth { .. }), "{e:?}");
        assert!(
            e.to_string().contains("as deploy with the agent's keys"),
            "{e}"
        );
        let e = err("ssh: connect to host 10.0.0.5 port 22: Connection timed out");
        assert!(matches!(e, HostError::Unreachable { .. }), "{e:?}");
        assert!(e.to_string().contains("web-1 (10.0.0.5:22)"), "{e}");
    }
}
