//! Content-addressed artifact storage: `DIR/sha256/<hex>`, written once
//! through a temporary file and a rename, then made read-only.
//!
//! Uploads are streamed: an [`Incoming`] blob is written to a temporary
//! file in the store's own directory while it is hashed, so memory stays
//! flat whatever the artifact's size, and [`Blobs::commit`] renames it into
//! place under its digest (a rename within one directory, so atomic).

use gantry_core::Digest;
use sha2::{Digest as _, Sha256};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("artifact store I/O error at {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("artifact {expected} is missing from the artifact store")]
    Missing { expected: Digest },
    #[error("artifact {expected} is corrupt: its content now hashes to {actual}")]
    Mismatch { expected: Digest, actual: Digest },
}

#[derive(Debug, Clone)]
pub struct Blobs {
    dir: PathBuf,
}

/// Temporary files of blobs being received start with this; any left by a
/// crash are removed when the store opens.
const INCOMING_PREFIX: &str = ".incoming-";

/// A blob being received: bytes go to a temporary file beside the store
/// and through the hasher as they arrive.
#[derive(Debug)]
pub struct Incoming {
    file: io::BufWriter<tempfile::NamedTempFile>,
    hasher: Sha256,
    size: u64,
}

impl Incoming {
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), BlobError> {
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        let path = self.file.get_ref().path().to_owned();
        self.file.write_all(chunk).map_err(io_err(&path))
    }

    /// Bytes received so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Flushes and syncs the file: the blob is complete but not yet stored.
    pub fn finish(self) -> Result<Staged, BlobError> {
        let file = self.file.into_inner().map_err(|e| BlobError::Io {
            path: "incoming artifact".to_owned(),
            source: e.into_error(),
        })?;
        file.as_file().sync_all().map_err(io_err(file.path()))?;
        Ok(Staged {
            file,
            digest: to_digest(self.hasher),
            size: self.size,
        })
    }
}

/// A received blob, hashed, waiting in a temporary file to be checked and
/// then [committed](Blobs::commit). Dropped, it is removed.
#[derive(Debug)]
pub struct Staged {
    file: tempfile::NamedTempFile,
    digest: Digest,
    size: u64,
}

impl Staged {
    pub fn digest(&self) -> &Digest {
        &self.digest
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    /// Where its bytes can be read before it is committed.
    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BlobError + '_ {
    move |source| BlobError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// SHA-256 of `bytes`, and their length.
pub fn hash_bytes(bytes: &[u8]) -> (Digest, u64) {
    let mut hasher = Sha256::new();
    hasher.update(bytes);
    (to_digest(hasher), bytes.len() as u64)
}

/// SHA-256 of everything `reader` yields, and its length.
pub fn hash_reader(mut reader: impl Read) -> io::Result<(Digest, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((to_digest(hasher), size))
}

fn to_digest(hasher: Sha256) -> Digest {
    Digest::try_from(hex::encode(hasher.finalize())).expect("sha256 hex is a valid digest")
}

impl Blobs {
    /// Opens the store, removing uploads a crash left half-received.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Blobs, BlobError> {
        let dir = dir.into().join("sha256");
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))?.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(INCOMING_PREFIX)
            {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(Blobs { dir })
    }

    /// Starts receiving a blob into a temporary file in the store's directory.
    pub fn incoming(&self) -> Result<Incoming, BlobError> {
        let file = tempfile::Builder::new()
            .prefix(INCOMING_PREFIX)
            .tempfile_in(&self.dir)
            .map_err(io_err(&self.dir))?;
        Ok(Incoming {
            file: io::BufWriter::with_capacity(256 * 1024, file),
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Stores a received blob under its digest, read-only. Storing the same
    /// content twice is a no-op (the second copy is dropped).
    pub fn commit(&self, staged: Staged) -> Result<Digest, BlobError> {
        let path = self.path(&staged.digest);
        if path.exists() {
            return Ok(staged.digest);
        }
        let file = staged.file;
        let mut perms = file
            .as_file()
            .metadata()
            .map_err(io_err(&path))?
            .permissions();
        perms.set_readonly(true);
        file.as_file()
            .set_permissions(perms)
            .map_err(io_err(&path))?;
        file.persist(&path).map_err(|e| io_err(&path)(e.error))?;
        Ok(staged.digest)
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.as_hex())
    }

    /// The directory the blobs live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).exists()
    }

    /// Stores `bytes`, returning their digest. Storing the same content twice is a no-op.
    pub fn put(&self, bytes: &[u8]) -> Result<Digest, BlobError> {
        let (digest, _) = hash_bytes(bytes);
        let path = self.path(&digest);
        if path.exists() {
            return Ok(digest);
        }
        let mut incoming = self.incoming()?;
        incoming.write(bytes)?;
        self.commit(incoming.finish()?)
    }

    /// Re-hashes a stored artifact and compares it with its name.
    pub fn verify(&self, digest: &Digest) -> Result<(), BlobError> {
        let path = self.path(digest);
        let file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(BlobError::Missing {
                    expected: digest.clone(),
                })
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let (actual, _) = hash_reader(io::BufReader::new(file)).map_err(io_err(&path))?;
        if &actual != digest {
            return Err(BlobError::Mismatch {
                expected: digest.clone(),
                actual,
            });
        }
        Ok(())
    }

    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, BlobError> {
        self.verify(digest)?;
        let path = self.path(digest);
        fs::read(&path).map_err(io_err(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_is_content_addressed_and_verify_detects_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path()).unwrap();
        let d = blobs.put(b"hello").unwrap();
        assert_eq!(
            d.as_hex(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(blobs.put(b"hello").unwrap(), d);
        blobs.verify(&d).unwrap();

        let path = blobs.path(&d);
        let mut perms = fs::metadata(&path).unwrap().permissions();
        assert!(perms.readonly());
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        fs::set_permissions(&path, perms).unwrap();
        fs::write(&path, b"hellO").unwrap();
        assert!(matches!(blobs.verify(&d), Err(BlobError::Mismatch { .. })));
        fs::remove_file(&path).unwrap();
        assert!(matches!(blobs.verify(&d), Err(BlobError::Missing { .. })));
    }

    #[test]
    fn streamed_blobs_land_by_digest_and_dropped_ones_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path()).unwrap();
        let mut incoming = blobs.incoming().unwrap();
        for chunk in [&b"hel"[..], b"", b"lo"] {
            incoming.write(chunk).unwrap();
        }
        let staged = incoming.finish().unwrap();
        assert_eq!(staged.digest(), &hash_bytes(b"hello").0);
        assert_eq!(staged.size(), 5);
        assert_eq!(fs::read(staged.path()).unwrap(), b"hello");
        let d = blobs.commit(staged).unwrap();
        blobs.verify(&d).unwrap();
        assert!(fs::metadata(blobs.path(&d))
            .unwrap()
            .permissions()
            .readonly());

        // Refused uploads (dropped) and crashed ones (found at open) leave nothing.
        let mut dropped = blobs.incoming().unwrap();
        dropped.write(b"junk").unwrap();
        drop(dropped.finish().unwrap());
        let crashed = blobs.incoming().unwrap();
        std::mem::forget(crashed);
        let names = |dir: &Path| -> Vec<String> {
            fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(
            names(&blobs.dir).len(),
            2,
            "the blob and the crashed upload"
        );
        let blobs = Blobs::open(dir.path()).unwrap();
        assert_eq!(names(&blobs.dir), [d.as_hex().to_owned()]);
    }
}
