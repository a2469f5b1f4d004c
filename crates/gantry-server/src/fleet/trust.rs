//! Pinning hosts' keys: `ssh-keyscan` (an argument vector, no shell), SHA-256
//! fingerprints as `ssh-keygen -l -E sha256` prints them, and the pinned
//! `known_hosts` that only an explicit `gantry hosts trust` writes.

use base64::Engine;
use gantry_config::Host;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("ssh-keyscan could not run: {0}; install the OpenSSH client (openssh-client)")]
    NoKeyscan(std::io::Error),
    #[error("host {host} ({address}) offered no host key: {detail}")]
    NoKeys {
        host: String,
        address: String,
        detail: String,
    },
    #[error("cannot {what} {path}: {reason}")]
    File {
        what: &'static str,
        path: String,
        reason: String,
    },
}

/// One host key a host offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedKey {
    /// e.g. `ssh-ed25519`.
    pub kind: String,
    /// The key blob, base64 as in `known_hosts`.
    pub blob: String,
    /// `SHA256:` and the unpadded base64 of the blob's SHA-256.
    pub fingerprint: String,
}

/// The `known_hosts` name of a host: `addr` on port 22, else `[addr]:port`.
pub fn known_hosts_name(host: &Host) -> String {
    if host.port == 22 && !host.address.contains(':') {
        host.address.clone()
    } else {
        format!("[{}]:{}", host.address, host.port)
    }
}

/// The fingerprint of a base64 key blob, or None if it is not base64.
pub fn fingerprint(blob_b64: &str) -> Option<String> {
    let blob = base64::engine::general_purpose::STANDARD
        .decode(blob_b64)
        .ok()?;
    let digest = Sha256::digest(&blob);
    Some(format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    ))
}

/// The host keys `host` offers now (ed25519, ecdsa, rsa), by `ssh-keyscan`.
pub async fn scan(host: &Host, timeout: Duration) -> Result<Vec<ScannedKey>, TrustError> {
    let out = tokio::process::Command::new("ssh-keyscan")
        .arg("-T")
        .arg(timeout.as_secs().max(1).to_string())
        .arg("-p")
        .arg(host.port.to_string())
        .arg("-t")
        .arg("ed25519,ecdsa,rsa")
        // The address is validated (never starts with '-'); `--` anyway.
        .arg("--")
        .arg(&host.address)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(TrustError::NoKeyscan)?;
    let keys = parse_keyscan(&String::from_utf8_lossy(&out.stdout));
    if keys.is_empty() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let detail = stderr
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(TrustError::NoKeys {
            host: host.name.clone(),
            address: format!("{}:{}", host.address, host.port),
            detail: if detail.is_empty() {
                "it did not answer in time, or sshd is not listening there".into()
            } else {
                detail
            },
        });
    }
    Ok(keys)
}

/// The keys of `ssh-keyscan` output (`name type blob` lines; `#` comments skipped).
pub fn parse_keyscan(out: &str) -> Vec<ScannedKey> {
    let mut keys: Vec<ScannedKey> = Vec::new();
    for line in out.lines().filter(|l| !l.starts_with('#')) {
        let mut parts = line.split_whitespace();
        let (Some(_), Some(kind), Some(blob)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Some(fingerprint) = fingerprint(blob) else {
            continue;
        };
        if !keys.iter().any(|k| k.blob == blob) {
            keys.push(ScannedKey {
                kind: kind.to_owned(),
                blob: blob.to_owned(),
                fingerprint,
            });
        }
    }
    keys
}

/// The keys pinned for `host` in the file at `path` (none if it is absent).
pub fn pinned(path: &Path, host: &Host) -> Result<Vec<ScannedKey>, TrustError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(TrustError::File {
                what: "read",
                path: path.display().to_string(),
                reason: e.to_string(),
            })
        }
    };
    let name = known_hosts_name(host);
    Ok(parse_keyscan(
        &text
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(name.as_str()))
            .collect::<Vec<_>>()
            .join("\n"),
    ))
}

/// Replaces the pins of `host` with `keys` (other hosts' lines kept), by a
/// temporary file renamed into place, mode 0600.
pub fn write_pins(path: &Path, host: &Host, keys: &[ScannedKey]) -> Result<(), TrustError> {
    let file_err = |what: &'static str, e: std::io::Error| TrustError::File {
        what,
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(file_err("read", e)),
    };
    let name = known_hosts_name(host);
    let mut text: String = old
        .lines()
        .filter(|l| l.split_whitespace().next() != Some(name.as_str()))
        .map(|l| format!("{l}\n"))
        .collect();
    for k in keys {
        text.push_str(&format!("{name} {} {}\n", k.kind, k.blob));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| file_err("create the directory of", e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| file_err("write", e))?;
    {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| file_err("write", e))?;
        tmp.write_all(text.as_bytes())
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| file_err("write", e))?;
    }
    tmp.persist(path).map_err(|e| file_err("write", e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_ssh_keygen_s() {
        // `ssh-keygen -l -E sha256` of this key prints this fingerprint.
        let blob = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        assert_eq!(
            fingerprint(blob).unwrap(),
            "SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU"
        );
        assert_eq!(fingerprint("not base64!"), None);
    }

    #[test]
    fn pins_replace_only_that_host_s_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        let host = |name: &str, address: &str, port: u16| Host {
            name: name.into(),
            address: address.into(),
            user: None,
            port,
            site: None,
            labels: Default::default(),
            key: gantry_config::SshKey::Agent,
            data_dir: ".gantry".into(),
        };
        let (a, b) = (host("a", "10.0.0.1", 22), host("b", "10.0.0.2", 2222));
        let key = |blob: &str| ScannedKey {
            kind: "ssh-ed25519".into(),
            blob: blob.into(),
            fingerprint: fingerprint(blob).unwrap(),
        };
        write_pins(&path, &a, &[key("AAAA")]).unwrap();
        write_pins(&path, &b, &[key("BBBB")]).unwrap();
        write_pins(&path, &a, &[key("CCCC")]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "[10.0.0.2]:2222 ssh-ed25519 BBBB\n10.0.0.1 ssh-ed25519 CCCC\n"
        );
        assert_eq!(pinned(&path, &a).unwrap(), [key("CCCC")]);
        assert_eq!(pinned(&path, &b).unwrap(), [key("BBBB")]);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
