//! The audit trail: an append-only list of records, each carrying the
//! SHA-256 of the one before it, so that an edited, removed or reordered
//! record breaks the chain at a place [`verify`] can name.
//!
//! Pruning old records keeps the chain verifiable: the store remembers the
//! sequence number and hash of the last record it dropped (the anchor), and
//! the first record kept must link to it. Signed checkpoints
//! ([`Checkpoint`]) anchor the chain outside the database, so that a trail
//! cut short or rewritten past a checkpoint is found too.

mod checkpoint;

pub use checkpoint::{
    parse_public_key, prune_entry, public_key_hex, verify_trail, Checkpoint, SignatureError, Trail,
    Verified, PRUNE_ACTION,
};
/// The signing key type of checkpoints, re-exported so callers need not name the crate.
pub use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::domain::Millis;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// `prev_hash` of the very first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened, before it is numbered and chained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditEntry {
    pub at: Millis,
    /// Who: a user, `gantry` for the controller's own decisions, `anonymous`.
    pub actor: String,
    /// What, e.g. `POST /api/v1/deployments` or `deployment.finished`.
    pub action: String,
    /// On what, e.g. `deployment 42` or `release 1.2.0`.
    pub subject: String,
    /// `done`, `refused` or `failed`, and the HTTP status where there is one.
    pub outcome: String,
    /// How and why, as JSON text: the request's figures, the reason, the verdict.
    pub detail: String,
}

/// One record of the trail as stored and exported (one JSON line each).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditRecord {
    pub seq: u64,
    #[serde(flatten)]
    pub entry: AuditEntry,
    pub prev_hash: String,
    pub hash: String,
}

/// Where the chain is broken: the first record that does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit record {seq}: {reason}")]
pub struct ChainBreak {
    pub seq: u64,
    pub reason: String,
}

/// The SHA-256 of a record's content and its link, as lowercase hex. Each
/// field is length-prefixed so that no two different records hash alike.
pub fn record_hash(seq: u64, entry: &AuditEntry, prev_hash: &str) -> String {
    let mut h = Sha256::new();
    let at = entry.at.to_string();
    let seq = seq.to_string();
    for field in [
        seq.as_str(),
        at.as_str(),
        &entry.actor,
        &entry.action,
        &entry.subject,
        &entry.outcome,
        &entry.detail,
        prev_hash,
    ] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Numbers and links `entry` after the record `(seq, hash)` (or the genesis).
pub fn chain(entry: AuditEntry, after: Option<(u64, &str)>) -> AuditRecord {
    let (seq, prev_hash) = match after {
        Some((seq, hash)) => (seq + 1, hash.to_owned()),
        None => (1, GENESIS.to_owned()),
    };
    let hash = record_hash(seq, &entry, &prev_hash);
    AuditRecord {
        seq,
        entry,
        prev_hash,
        hash,
    }
}

/// Checks `records` (in stored order) link up, starting from `anchor` (the
/// last pruned record) or the genesis. Returns how many records hold.
pub fn verify(records: &[AuditRecord], anchor: Option<(u64, &str)>) -> Result<usize, ChainBreak> {
    let (mut expect_seq, mut expect_prev) = match anchor {
        Some((seq, hash)) => (seq + 1, hash.to_owned()),
        None => (1, GENESIS.to_owned()),
    };
    for r in records {
        let brk = |reason: String| ChainBreak { seq: r.seq, reason };
        if r.seq != expect_seq {
            return Err(brk(if r.seq > expect_seq {
                format!(
                    "expected record {expect_seq} here: records {expect_seq}..{} are missing",
                    r.seq - 1
                )
            } else {
                format!("out of order: expected record {expect_seq} here")
            }));
        }
        if r.prev_hash != expect_prev {
            return Err(brk(
                "does not link to the record before it (prev_hash differs)".to_owned(),
            ));
        }
        let actual = record_hash(r.seq, &r.entry, &r.prev_hash);
        if actual != r.hash {
            return Err(brk(
                "content does not match its hash: the record was edited".to_owned(),
            ));
        }
        expect_seq += 1;
        expect_prev = r.hash.clone();
    }
    Ok(records.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trail(n: u64) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for i in 0..n {
            let entry = AuditEntry {
                at: 1000 + i as Millis,
                actor: "alice".into(),
                action: "POST /api/v1/deployments".into(),
                subject: format!("deployment {i}"),
                outcome: "done 201".into(),
                detail: "{}".into(),
            };
            let after = out.last().map(|r| (r.seq, r.hash.as_str()));
            out.push(chain(entry, after));
        }
        out
    }

    #[test]
    fn an_untouched_trail_verifies() {
        assert_eq!(verify(&trail(5), None), Ok(5));
        assert_eq!(verify(&[], None), Ok(0));
    }

    #[test]
    fn an_edit_names_the_edited_record() {
        let mut t = trail(5);
        t[2].entry.actor = "mallory".into();
        let e = verify(&t, None).unwrap_err();
        assert_eq!(e.seq, 3);
        assert!(e.reason.contains("edited"), "{e}");
    }

    #[test]
    fn an_edit_with_a_recomputed_hash_breaks_the_next_link() {
        let mut t = trail(5);
        t[2].entry.outcome = "refused 403".into();
        t[2].hash = record_hash(t[2].seq, &t[2].entry, &t[2].prev_hash);
        let e = verify(&t, None).unwrap_err();
        assert_eq!(e.seq, 4);
        assert!(e.reason.contains("does not link"), "{e}");
    }

    #[test]
    fn a_removal_and_a_reordering_are_named() {
        let mut t = trail(5);
        t.remove(1);
        let e = verify(&t, None).unwrap_err();
        assert_eq!((e.seq, e.reason.contains("missing")), (3, true), "{e}");
        let mut t = trail(5);
        t.swap(1, 2);
        let e = verify(&t, None).unwrap_err();
        assert_eq!(
            (e.seq, e.reason.contains("out of order")),
            (3, false),
            "{e}"
        );
        assert!(e.reason.contains("missing"), "{e}");
    }

    #[test]
    fn a_pruned_trail_verifies_from_its_anchor_and_not_without() {
        let t = trail(6);
        let anchor = (t[2].seq, t[2].hash.as_str());
        assert_eq!(verify(&t[3..], Some(anchor)), Ok(3));
        assert!(verify(&t[3..], None).is_err());
    }
}
