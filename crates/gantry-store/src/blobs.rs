//! Content-addressed artifact storage: `DIR/sha256/<hex>`, written once
//! through a temporary file and a rename, then made read-only.

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
    pub fn open(dir: impl Into<PathBuf>) -> Result<Blobs, BlobError> {
        let dir = dir.into().join("sha256");
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        Ok(Blobs { dir })
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.as_hex())
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
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir).map_err(io_err(&self.dir))?;
        tmp.write_all(bytes).map_err(io_err(&path))?;
        tmp.as_file().sync_all().map_err(io_err(&path))?;
        let mut perms = tmp
            .as_file()
            .metadata()
            .map_err(io_err(&path))?
            .permissions();
        perms.set_readonly(true);
        tmp.as_file()
            .set_permissions(perms)
            .map_err(io_err(&path))?;
        tmp.persist(&path).map_err(|e| io_err(&path)(e.error))?;
        Ok(digest)
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
}
