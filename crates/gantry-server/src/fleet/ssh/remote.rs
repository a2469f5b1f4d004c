//! The only command lines a host's login shell ever receives, and the binary
//! the bootstrap one puts on hosts.

use super::HostError;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The constant command lines sent to hosts: the only ones there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteCommand {
    /// Stores the binary by digest (or answers `present`).
    Bootstrap,
    /// `exec`s `<dir>/bin/<sha256> --data-dir <dir> host serve --stdio`.
    Launch,
}

macro_rules! bootstrap_script {
    () => {
        r#"set -eu
IFS= read -r dir
IFS= read -r sum
case $dir in "") echo "gantry-bootstrap: no data directory" >&2; exit 4;; /*) ;; *) dir=$HOME/$dir;; esac
case $sum in *[!0-9a-f]*) echo "gantry-bootstrap: bad digest" >&2; exit 4;; esac
[ ${#sum} -eq 64 ] || { echo "gantry-bootstrap: bad digest" >&2; exit 4; }
bin=$dir/bin
if [ -x "$bin/$sum" ]; then echo present; exit 0; fi
mkdir -p "$bin"
tmp=$(mktemp "$bin/.upload.XXXXXX")
echo send
if ! cat > "$tmp"; then rm -f "$tmp"; echo "gantry-bootstrap: upload interrupted" >&2; exit 5; fi
if ! printf "%s  %s\n" "$sum" "$tmp" | sha256sum -c --status -; then rm -f "$tmp"; echo "gantry-bootstrap: the bytes received do not have the digest $sum; nothing was stored" >&2; exit 3; fi
chmod 0555 "$tmp"
mv -f "$tmp" "$bin/$sum"
echo stored"#
    };
}

macro_rules! launch_script {
    () => {
        r#"IFS= read -r dir
IFS= read -r sum
case $dir in "") echo "gantry-launch: no data directory" >&2; exit 4;; /*) ;; *) dir=$HOME/$dir;; esac
case $sum in ""|*[!0-9a-f]*) echo "gantry-launch: bad digest" >&2; exit 4;; esac
exec "$dir/bin/$sum" --data-dir "$dir" host serve --stdio"#
    };
}

/// The scripts hold no `'`, so one pair of single quotes carries each whole
/// to `sh` through the login shell (a unit test checks).
const BOOTSTRAP_LINE: &str = concat!("sh -c '", bootstrap_script!(), "' gantry-bootstrap");
const LAUNCH_LINE: &str = concat!("sh -c '", launch_script!(), "' gantry-launch");

/// The bootstrap script's exit code when the bytes do not match the digest.
pub(super) const EXIT_DIGEST_MISMATCH: u32 = 3;

impl RemoteCommand {
    pub const ALL: [RemoteCommand; 2] = [RemoteCommand::Bootstrap, RemoteCommand::Launch];

    /// The command line the host's login shell receives.
    pub fn line(self) -> &'static str {
        match self {
            RemoteCommand::Bootstrap => BOOTSTRAP_LINE,
            RemoteCommand::Launch => LAUNCH_LINE,
        }
    }
}

/// A `gantry` binary to put on hosts, named by its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryImage {
    pub path: PathBuf,
    /// Lowercase hex SHA-256 of the file.
    pub sha256: String,
    pub len: u64,
}

impl BinaryImage {
    /// Hashes the file at `path`.
    pub fn of(path: &Path) -> Result<BinaryImage, HostError> {
        let unreadable = |e: std::io::Error| {
            HostError::Local(format!(
                "cannot read the gantry binary {}: {e}",
                path.display()
            ))
        };
        let mut file = std::fs::File::open(path).map_err(unreadable)?;
        let mut hasher = Sha256::new();
        let len = std::io::copy(&mut file, &mut hasher).map_err(unreadable)?;
        Ok(BinaryImage {
            path: path.to_path_buf(),
            sha256: hex::encode(hasher.finalize()),
            len,
        })
    }

    /// The binary running now: what the controller puts on its hosts.
    pub fn current() -> Result<BinaryImage, HostError> {
        let exe = std::env::current_exe()
            .map_err(|e| HostError::Local(format!("cannot find the running gantry binary: {e}")))?;
        BinaryImage::of(&exe)
    }
}

/// What [`HostSession::bootstrap`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootstrapped {
    /// The host had this binary already: nothing was sent.
    Present,
    /// The binary was sent, checked on the host and stored.
    Uploaded { bytes: u64, took: Duration },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_fit_in_one_pair_of_single_quotes() {
        for script in [bootstrap_script!(), launch_script!()] {
            assert!(!script.contains('\''), "{script}");
        }
        for cmd in RemoteCommand::ALL {
            let line = cmd.line();
            assert!(
                line.starts_with("sh -c '") && line.matches('\'').count() == 2,
                "{line}"
            );
        }
    }
}
