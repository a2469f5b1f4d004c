//! Signed checkpoints of the audit chain's head, now and every so often.

use super::{now_ms, ControlError, Controller};
use gantry_core::audit::{Checkpoint, SigningKey};
use std::sync::Arc;
use std::time::Duration;

impl Controller {
    fn audit_key(&self) -> Result<&SigningKey, ControlError> {
        self.audit_key
            .get()
            .ok_or_else(|| ControlError::Internal("the audit key is not loaded".to_owned()))
    }

    /// The checkpoint key's public half, hex: what an auditor pins.
    pub fn audit_public_key(&self) -> Result<String, ControlError> {
        Ok(gantry_core::audit::public_key_hex(self.audit_key()?))
    }

    /// A signed checkpoint of the chain's head as it is now. Stored too,
    /// unless the newest stored one already names this head and anchor.
    pub fn audit_checkpoint(&self) -> Result<Checkpoint, ControlError> {
        let key = self.audit_key()?;
        let (seq, hash) = self.store.audit_head()?;
        let anchor = self.store.audit_anchor()?;
        let (anchor_seq, anchor_hash) = anchor
            .clone()
            .unwrap_or((0, gantry_core::audit::GENESIS.to_owned()));
        if let Some(last) = self.store.latest_audit_checkpoint()? {
            let same = last.seq == seq
                && last.hash == hash
                && last.anchor_seq == anchor_seq
                && last.anchor_hash == anchor_hash
                && last.public_key == gantry_core::audit::public_key_hex(key);
            if same {
                return Ok(last);
            }
        }
        let cp = Checkpoint::sign(
            key,
            (seq, &hash),
            anchor.as_ref().map(|(s, h)| (*s, h.as_str())),
            now_ms(),
        );
        // Kept by the leader only (a follower's store refuses the write):
        // a follower signs the head for its caller without keeping it.
        if self.acting_epoch().is_some() {
            if let Err(e) = self.store.add_audit_checkpoint(&cp) {
                self.lost_office(&e);
                return Err(e.into());
            }
        }
        Ok(cp)
    }

    /// Signs the head every `every` while it moves.
    pub fn spawn_audit_checkpoints(self: &Arc<Self>, every: Duration) {
        let this = Arc::downgrade(self);
        self.spawn_led(async move {
            loop {
                let Some(c) = this.upgrade() else { return };
                if let Err(e) = c.audit_checkpoint() {
                    tracing::error!(error = %e, "cannot sign an audit checkpoint");
                }
                drop(c);
                tokio::time::sleep(every).await;
            }
        });
    }
}
