//! Artifact uploads on a host: chunks in order into a temporary file of the
//! artifact store, hashed as they arrive; the last one checks the whole
//! against the digest announced and only then stores it under that name.
//! A mismatch, a gap or a channel closed midway leaves nothing stored.

use super::protocol::error;
use super::protocol::{Answer, ErrorKind};
use gantry_core::Digest;
use gantry_store::{Blobs, Incoming};
use std::collections::HashMap;
use std::path::Path;

/// Uploads of different artifacts open at once on one channel.
const MAX_UPLOADS: usize = 4;

/// The uploads open on one channel; dropped, their files are removed.
#[derive(Default)]
pub(super) struct Uploads {
    open: HashMap<Digest, Incoming>,
}

impl Uploads {
    /// One chunk of an upload; the last one verifies and stores the whole.
    pub(super) async fn chunk(
        &mut self,
        blobs: &Blobs,
        data_dir: &Path,
        digest: Digest,
        size: u64,
        offset: u64,
        data: Vec<u8>,
    ) -> Answer {
        let refuse = |uploads: &mut HashMap<Digest, Incoming>, digest: &Digest, why: String| {
            uploads.remove(digest);
            error(
                ErrorKind::Upload,
                format!("upload of artifact {digest}: {why}"),
            )
        };
        if offset == 0 {
            // A fresh start (also after an interrupted upload of the same digest).
            self.open.remove(&digest);
            if self.open.len() >= MAX_UPLOADS {
                return refuse(
                    &mut self.open,
                    &digest,
                    format!("{MAX_UPLOADS} uploads are already open on this channel"),
                );
            }
            let free = free_bytes(data_dir);
            if size > free {
                return refuse(
                    &mut self.open,
                    &digest,
                    format!(
                        "{size} bytes do not fit: {free} bytes free in {}",
                        data_dir.display()
                    ),
                );
            }
            match blobs.incoming() {
                Ok(incoming) => {
                    self.open.insert(digest.clone(), incoming);
                }
                Err(e) => return refuse(&mut self.open, &digest, e.to_string()),
            }
        }
        let Some(incoming) = self.open.get_mut(&digest) else {
            return refuse(
                &mut self.open,
                &digest,
                format!("chunk at offset {offset} but no upload is open (start at offset 0)"),
            );
        };
        if incoming.size() != offset {
            let expected = incoming.size();
            return refuse(
                &mut self.open,
                &digest,
                format!("chunk at offset {offset}, expected offset {expected}"),
            );
        }
        if let Err(e) = incoming.write(&data) {
            return refuse(&mut self.open, &digest, e.to_string());
        }
        let received = incoming.size();
        if received < size {
            return Answer::Received {
                received,
                complete: false,
            };
        }
        let Some(incoming) = self.open.remove(&digest) else {
            return refuse(&mut self.open, &digest, "upload vanished".to_owned());
        };
        let blobs = blobs.clone();
        let expected = digest.clone();
        let stored = tokio::task::spawn_blocking(move || {
            let staged = incoming.finish().map_err(|e| e.to_string())?;
            if staged.digest() != &expected {
                // Dropped, the staged file is removed: nothing is stored.
                return Err(format!(
                    "the {} bytes received hash to {}, not to the digest announced; nothing was stored",
                    staged.size(),
                    staged.digest()
                ));
            }
            blobs.commit(staged).map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        match stored {
            Ok(_) => {
                tracing::info!(digest = %digest, size, "artifact stored");
                Answer::Received {
                    received,
                    complete: true,
                }
            }
            Err(why) => refuse(&mut self.open, &digest, why),
        }
    }
}

pub(super) fn free_bytes(dir: &Path) -> u64 {
    nix::sys::statvfs::statvfs(dir)
        .map(|s| s.blocks_available().saturating_mul(s.fragment_size()))
        .unwrap_or(0)
}
