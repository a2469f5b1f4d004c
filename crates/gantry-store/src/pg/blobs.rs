//! Artifacts every controller can read: with PostgreSQL, each blob (a
//! release artifact, an evidence file) is kept in the database too,
//! content-addressed and chunked (1 MiB), beside every controller's local
//! copy, which is a cache. A controller that lacks a blob fetches it, hashes
//! it as it writes, and keeps it only if it is the digest it asked for.

use super::*;
use std::io::Read;

/// The size of one stored chunk.
const CHUNK: usize = 1 << 20;

impl crate::SharedBlobs for PgStore {
    fn upload_blob(&self, blobs: &Blobs, digest: &Digest) -> Result<()> {
        let path = blobs.path(digest);
        self.tx(|tx| {
            let present = tx
                .query_opt("SELECT 1 FROM blobs WHERE digest = $1", &[&digest.as_hex()])?
                .is_some();
            if present {
                return Ok(());
            }
            let mut file = std::fs::File::open(&path)
                .map_err(|e| StoreError::Database(format!("cannot read blob {digest}: {e}")))?;
            let mut buf = vec![0u8; CHUNK];
            let (mut n, mut size) = (0i32, 0i64);
            // The row first, so the chunks' references hold; filled in after.
            tx.execute(
                "INSERT INTO blobs (digest, size, chunks) VALUES ($1, 0, 0)",
                &[&digest.as_hex()],
            )?;
            loop {
                let mut filled = 0;
                while filled < CHUNK {
                    let got = file.read(&mut buf[filled..]).map_err(|e| {
                        StoreError::Database(format!("cannot read blob {digest}: {e}"))
                    })?;
                    if got == 0 {
                        break;
                    }
                    filled += got;
                }
                if filled == 0 {
                    break;
                }
                tx.execute(
                    "INSERT INTO blob_chunks (digest, n, bytes) VALUES ($1, $2, $3)",
                    &[&digest.as_hex(), &n, &&buf[..filled]],
                )?;
                n += 1;
                size += filled as i64;
                if filled < CHUNK {
                    break;
                }
            }
            tx.execute(
                "UPDATE blobs SET size = $2, chunks = $3 WHERE digest = $1",
                &[&digest.as_hex(), &size, &n],
            )?;
            Ok(())
        })
    }

    fn download_blob(&self, blobs: &Blobs, digest: &Digest) -> Result<bool> {
        let Some((size, chunks)) = self.tx(|tx| {
            tx.query_opt(
                "SELECT size, chunks FROM blobs WHERE digest = $1",
                &[&digest.as_hex()],
            )?
            .map(|r| -> Result<(i64, i32)> { Ok((r.try_get(0)?, r.try_get(1)?)) })
            .transpose()
        })?
        else {
            return Ok(false);
        };
        let io = |e: crate::BlobError| StoreError::Database(e.to_string());
        let mut incoming = blobs.incoming().map_err(io)?;
        // A chunk at a time: memory stays at one chunk whatever the size.
        for n in 0..chunks {
            let bytes: Vec<u8> = self.tx(|tx| {
                Ok(tx
                    .query_one(
                        "SELECT bytes FROM blob_chunks WHERE digest = $1 AND n = $2",
                        &[&digest.as_hex(), &n],
                    )?
                    .try_get(0)?)
            })?;
            incoming.write(&bytes).map_err(io)?;
        }
        let staged = incoming.finish().map_err(io)?;
        if staged.digest() != digest || staged.size() as i64 != size {
            return Err(StoreError::Corrupt(format!(
                "blob {digest} from the database hashes to {} ({} bytes): refused, nothing kept",
                staged.digest(),
                staged.size()
            )));
        }
        blobs.commit(staged).map_err(io)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use crate::suite::pg_fixture;
    use crate::{Blobs, SharedBlobs};

    #[test]
    fn a_blob_kept_by_one_controller_is_fetched_verified_by_another() {
        let Some(pg) = pg_fixture("shared_blobs") else {
            return;
        };
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (
            Blobs::open(a_dir.path()).unwrap(),
            Blobs::open(b_dir.path()).unwrap(),
        );
        // Over two chunks and a bit, so chunk order matters.
        let bytes: Vec<u8> = (0..(2 * super::CHUNK + 12_345))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let digest = a.put(&bytes).unwrap();
        pg.store.upload_blob(&a, &digest).unwrap();
        pg.store.upload_blob(&a, &digest).unwrap(); // once
        assert!(!b.contains(&digest));
        assert!(pg.store.download_blob(&b, &digest).unwrap());
        assert_eq!(std::fs::read(b.path(&digest)).unwrap(), bytes);
        b.verify(&digest).unwrap();
        // Unknown: not found, nothing written.
        let other = crate::hash_bytes(b"never stored").0;
        assert!(!pg.store.download_blob(&b, &other).unwrap());
        assert!(!b.contains(&other));
        // Altered in the database: refused, nothing kept.
        let c_dir = tempfile::tempdir().unwrap();
        let c = Blobs::open(c_dir.path()).unwrap();
        let mut client = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
        client
            .execute(
                "UPDATE blob_chunks SET bytes = $2 WHERE digest = $1 AND n = 1",
                &[&digest.as_hex(), &vec![0u8; super::CHUNK]],
            )
            .unwrap();
        let err = pg.store.download_blob(&c, &digest).unwrap_err().to_string();
        assert!(err.contains("refused, nothing kept"), "{err}");
        assert!(!c.contains(&digest));
        assert_eq!(
            std::fs::read_dir(c_dir.path().join("sha256"))
                .unwrap()
                .count(),
            0
        );
    }
}
