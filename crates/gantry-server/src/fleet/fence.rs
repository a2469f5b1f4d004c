//! Fencing on a host: `<data_dir>/epoch` holds the controller admitted last
//! and the highest epoch it has shown. A lower epoch (a stale process of
//! that controller) or another controller is refused, so two controllers,
//! or a controller and its own stale predecessor, never both act on a host.

use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::path::Path;

/// The fencing file in the data directory.
pub const EPOCH_FILE: &str = "epoch";

/// The controller and epoch the host last accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Fence {
    pub(super) controller: String,
    pub(super) epoch: u64,
}

pub(super) enum Admission {
    Fenced(String),
    Failed(String),
}

pub(super) fn fenced_reason(stored: &Fence, asked: &Fence) -> String {
    if stored.controller != asked.controller {
        format!(
            "this host is held by controller {:?}; controller {:?} is refused (a host serves one controller)",
            stored.controller, asked.controller
        )
    } else {
        format!(
            "epoch {} of controller {:?} is stale: epoch {} has been seen (a newer controller process took over)",
            asked.epoch, asked.controller, stored.epoch
        )
    }
}

pub(super) fn read_fence(dir: &Path) -> std::io::Result<Option<Fence>> {
    match std::fs::read(dir.join(EPOCH_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| std::io::Error::other(format!("{EPOCH_FILE} is not valid: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Admits `asked` if it is the controller already seen with an epoch at
/// least as high (or the first), recording the epoch durably first.
/// Serialised by a lock file: two `host serve` processes may greet at once.
pub(super) fn admit(dir: &Path, asked: &Fence) -> Result<(), Admission> {
    let failed =
        |e: std::io::Error| Admission::Failed(format!("fencing file in {}: {e}", dir.display()));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("epoch.lock"))
        .map_err(failed)?;
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| failed(e.into()))?;
    match read_fence(dir).map_err(failed)? {
        Some(stored) if stored.controller != asked.controller || stored.epoch > asked.epoch => {
            return Err(Admission::Fenced(fenced_reason(&stored, asked)))
        }
        Some(stored) if stored == *asked => return Ok(()),
        _ => {}
    }
    // Written, synced and renamed, then the directory synced: the epoch is
    // on disk before the controller hears it was admitted.
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(failed)?;
    tmp.write_all(&serde_json::to_vec(asked).unwrap_or_default())
        .map_err(failed)?;
    tmp.as_file().sync_all().map_err(failed)?;
    tmp.persist(dir.join(EPOCH_FILE))
        .map_err(|e| failed(e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(failed)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fence(controller: &str, epoch: u64) -> Fence {
        Fence {
            controller: controller.into(),
            epoch,
        }
    }

    #[test]
    fn the_fence_admits_the_same_controller_at_its_epoch_or_higher_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        assert!(admit(dir, &fence("a", 2)).is_ok());
        assert!(
            admit(dir, &fence("a", 2)).is_ok(),
            "a reconnect at the same epoch"
        );
        match admit(dir, &fence("a", 1)) {
            Err(Admission::Fenced(r)) => {
                assert!(r.contains("epoch 1") && r.contains("stale"), "{r}")
            }
            _ => panic!("a lower epoch must be fenced"),
        }
        match admit(dir, &fence("b", 9)) {
            Err(Admission::Fenced(r)) => assert!(r.contains("\"b\" is refused"), "{r}"),
            _ => panic!("another controller must be fenced"),
        }
        assert!(admit(dir, &fence("a", 3)).is_ok());
        assert_eq!(read_fence(dir).unwrap(), Some(fence("a", 3)));
    }
}
