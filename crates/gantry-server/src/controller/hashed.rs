//! The controller's artifacts, hashed once while they stay unchanged.
//!
//! Every prepare checks the controller's copy of the artifact before any of
//! it goes out; a rollback prepares a release the controller already
//! checked, and hashing 50 MB again was a fixed part of every fleet
//! rollback. A copy is hashed again when anything about its file changed
//! through the filesystem (device, inode, size, mtime, ctime: a write, a
//! replacement or a `touch` all change the ctime, which no one can set
//! back) and after every controller start.

use gantry_core::Digest;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

/// What identifies a file's content short of reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        let m = std::fs::metadata(path).ok()?;
        Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
        })
    }
}

#[derive(Default)]
pub(crate) struct HashedOnce {
    verified: Mutex<HashMap<Digest, Stamp>>,
}

impl HashedOnce {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Stamp>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `verify(digest)` (a full hash of the file at `path`) unless it passed
    /// before and the file has not changed since.
    pub(crate) async fn verify<F>(
        &self,
        digest: &Digest,
        path: &Path,
        verify: F,
    ) -> Result<(), String>
    where
        F: FnOnce() -> Result<(), String> + Send + 'static,
    {
        let before = Stamp::of(path);
        if before.is_some() && self.lock().get(digest) == before.as_ref() {
            return Ok(());
        }
        tokio::task::spawn_blocking(verify)
            .await
            .map_err(|e| e.to_string())??;
        // Stamped as it was before the hash: a change during it is seen next time.
        match before {
            Some(stamp) => {
                self.lock().insert(digest.clone(), stamp);
            }
            None => {
                self.lock().remove(digest);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn a_file_is_hashed_again_only_when_it_changed_or_failed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, b"release bytes").unwrap();
        let digest = Digest::try_from("a".repeat(64)).unwrap();
        let hashes = Arc::new(AtomicUsize::new(0));
        let cache = HashedOnce::default();
        let check = |ok: bool| {
            let hashes = hashes.clone();
            move || {
                hashes.fetch_add(1, Ordering::SeqCst);
                if ok {
                    Ok(())
                } else {
                    Err("mismatch".to_owned())
                }
            }
        };
        cache.verify(&digest, &path, check(true)).await.unwrap();
        cache.verify(&digest, &path, check(true)).await.unwrap();
        assert_eq!(hashes.load(Ordering::SeqCst), 1, "unchanged: hashed once");

        // Rewritten with the same length: its ctime moved on, hashed again.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, b"RELEASE BYTES").unwrap();
        assert!(cache.verify(&digest, &path, check(false)).await.is_err());
        assert_eq!(hashes.load(Ordering::SeqCst), 2);
        // A failed check is not remembered as a pass.
        assert!(cache.verify(&digest, &path, check(false)).await.is_err());
        assert_eq!(hashes.load(Ordering::SeqCst), 3);

        // Another digest at the same file is its own question.
        cache.verify(&digest, &path, check(true)).await.unwrap();
        let other = Digest::try_from("b".repeat(64)).unwrap();
        cache.verify(&other, &path, check(true)).await.unwrap();
        assert_eq!(hashes.load(Ordering::SeqCst), 5);

        // Gone: hashed (and failing) every time.
        std::fs::remove_file(&path).unwrap();
        assert!(cache.verify(&digest, &path, check(false)).await.is_err());
        assert!(cache.verify(&digest, &path, check(false)).await.is_err());
        assert_eq!(hashes.load(Ordering::SeqCst), 7);
    }
}
