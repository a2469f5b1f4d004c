//! Signed checkpoints: the chain's head (and its anchor) at a moment,
//! signed with an Ed25519 key that is not in the database.
//!
//! A hash chain alone shows an edit in the middle, but not a trail cut
//! short, nor one rewritten from some record on with every later hash
//! recomputed, nor old records dropped under a forged anchor: each of those
//! leaves a chain that links up. A checkpoint an auditor keeps outside the
//! data directory pins what the chain was, so [`verify_trail`] can tell.
//!
//! What it cannot do: whoever can read the key file can sign checkpoints
//! too, so only checkpoints taken *before* an attack and kept *elsewhere*
//! protect the records they cover; records newer than the newest such
//! checkpoint are not protected.

use super::{verify, AuditEntry, AuditRecord, ChainBreak, GENESIS};
use crate::domain::Millis;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The action of the record the prune path appends: it names the new anchor,
/// so a moved anchor without such a record is a forged one.
pub const PRUNE_ACTION: &str = "audit.pruned";

/// Domain separation: these bytes are only ever a checkpoint.
const CONTEXT: &[u8] = b"gantry audit checkpoint v1";

/// The head of the audit chain at `at`, signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The newest record then (0 for an empty trail).
    pub seq: u64,
    /// Its hash (the genesis hash for an empty trail).
    pub hash: String,
    /// The last pruned record then (0 when none was).
    pub anchor_seq: u64,
    /// Its hash (the genesis hash when none was).
    pub anchor_hash: String,
    /// When it was signed, milliseconds since the Unix epoch.
    pub at: Millis,
    /// The Ed25519 public key that signed it, hex.
    pub public_key: String,
    /// The Ed25519 signature, hex.
    pub signature: String,
}

/// Why a checkpoint's signature does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("public key {0:?}: expected 64 hex characters of an Ed25519 public key")]
    BadKey(String),
    #[error("the checkpoint was signed by key {signed_by}, not by the expected key {expected}")]
    OtherKey { signed_by: String, expected: String },
    #[error("the signature does not match the checkpoint: it was altered or forged")]
    Invalid,
}

/// The bytes a checkpoint's signature covers, each field length-prefixed.
fn signed_bytes(seq: u64, hash: &str, anchor_seq: u64, anchor_hash: &str, at: Millis) -> Vec<u8> {
    let mut out = CONTEXT.to_vec();
    for field in [
        seq.to_string().as_str(),
        hash,
        anchor_seq.to_string().as_str(),
        anchor_hash,
        at.to_string().as_str(),
    ] {
        out.extend((field.len() as u64).to_be_bytes());
        out.extend(field.as_bytes());
    }
    out
}

/// The hex form of `key`'s public half, as printed for auditors.
pub fn public_key_hex(key: &SigningKey) -> String {
    hex::encode(key.verifying_key().as_bytes())
}

/// Reads a public key given as 64 hex characters.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, SignatureError> {
    let text = text.trim();
    let bytes: [u8; 32] = hex::decode(text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| SignatureError::BadKey(text.to_owned()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| SignatureError::BadKey(text.to_owned()))
}

impl Checkpoint {
    /// Signs the head `(seq, hash)` of a chain that starts after `anchor`.
    pub fn sign(
        key: &SigningKey,
        head: (u64, &str),
        anchor: Option<(u64, &str)>,
        at: Millis,
    ) -> Checkpoint {
        let (anchor_seq, anchor_hash) = anchor.unwrap_or((0, GENESIS));
        let sig = key.sign(&signed_bytes(head.0, head.1, anchor_seq, anchor_hash, at));
        Checkpoint {
            seq: head.0,
            hash: head.1.to_owned(),
            anchor_seq,
            anchor_hash: anchor_hash.to_owned(),
            at,
            public_key: public_key_hex(key),
            signature: hex::encode(sig.to_bytes()),
        }
    }

    /// Checks the signature; with `expected` (the key an auditor pinned),
    /// also that this key made it. Without, only that the checkpoint is
    /// consistent with the key written inside it.
    pub fn check_signature(&self, expected: Option<&VerifyingKey>) -> Result<(), SignatureError> {
        let embedded = parse_public_key(&self.public_key)?;
        if let Some(expected) = expected {
            if expected != &embedded {
                return Err(SignatureError::OtherKey {
                    signed_by: self.public_key.clone(),
                    expected: hex::encode(expected.as_bytes()),
                });
            }
        }
        let sig: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(SignatureError::Invalid)?;
        let bytes = signed_bytes(
            self.seq,
            &self.hash,
            self.anchor_seq,
            &self.anchor_hash,
            self.at,
        );
        embedded
            .verify_strict(&bytes, &Signature::from_bytes(&sig))
            .map_err(|_| SignatureError::Invalid)
    }
}

/// The record the prune path appends before it drops records up to `anchor`.
pub fn prune_entry(anchor: (u64, &str), before: Millis, dropped: usize, at: Millis) -> AuditEntry {
    AuditEntry {
        at,
        actor: "gantry".to_owned(),
        action: PRUNE_ACTION.to_owned(),
        subject: format!("audit records up to {}", anchor.0),
        outcome: "done".to_owned(),
        detail: serde_json::json!({
            "anchor_seq": anchor.0,
            "anchor_hash": anchor.1,
            "older_than": before,
            "dropped": dropped,
        })
        .to_string(),
    }
}

/// The anchor a prune record names, if `r` is one.
fn pruned_to(r: &AuditRecord) -> Option<(u64, String)> {
    if r.entry.action != PRUNE_ACTION || r.entry.actor != "gantry" {
        return None;
    }
    let d: serde_json::Value = serde_json::from_str(&r.entry.detail).ok()?;
    Some((
        d["anchor_seq"].as_u64()?,
        d["anchor_hash"].as_str()?.to_owned(),
    ))
}

/// A trail as read from the store or an export.
#[derive(Debug, Clone, Copy)]
pub struct Trail<'a> {
    /// The kept records, in stored order.
    pub records: &'a [AuditRecord],
    /// The last pruned record, if any were.
    pub anchor: Option<(u64, &'a str)>,
    /// The head the store says it handed out last (unknown for an export).
    pub head: Option<(u64, &'a str)>,
}

/// What a verification found, past "it links up".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub records: usize,
    /// Records dropped since the checkpoint by an audited prune:
    /// `(first, last, seq of the prune record)`.
    pub pruned_since_checkpoint: Option<(u64, u64, u64)>,
    /// Records the checkpoint does not cover (newer than it).
    pub newer_than_checkpoint: u64,
}

/// Verifies the chain (see [`verify`]), that it reaches the head the store
/// recorded, and, given a checkpoint, that the chain still holds the record
/// the checkpoint names with that hash, is not shorter, and that any records
/// dropped since were dropped by an audited prune. Check the checkpoint's
/// signature first ([`Checkpoint::check_signature`]).
pub fn verify_trail(
    trail: Trail<'_>,
    checkpoint: Option<&Checkpoint>,
) -> Result<Verified, ChainBreak> {
    let n = verify(trail.records, trail.anchor)?;
    let (anchor_seq, anchor_hash) = trail.anchor.unwrap_or((0, GENESIS));
    let (last_seq, last_hash) = trail
        .records
        .last()
        .map_or((anchor_seq, anchor_hash), |r| (r.seq, r.hash.as_str()));
    if let Some((head_seq, head_hash)) = trail.head {
        if head_seq > last_seq {
            return Err(ChainBreak {
                seq: last_seq + 1,
                reason: format!(
                    "the trail ends at record {last_seq} but the store handed out records up to {head_seq}: records {}..{head_seq} were removed from the end",
                    last_seq + 1
                ),
            });
        }
        let at_head = if head_seq == last_seq {
            Some(last_hash)
        } else {
            trail
                .records
                .iter()
                .find(|r| r.seq == head_seq)
                .map(|r| r.hash.as_str())
        };
        if at_head.is_some_and(|h| h != head_hash) {
            return Err(ChainBreak {
                seq: head_seq,
                reason:
                    "differs from the head the store recorded: the end of the trail was rewritten"
                        .to_owned(),
            });
        }
    }
    let mut found = Verified {
        records: n,
        pruned_since_checkpoint: None,
        newer_than_checkpoint: 0,
    };
    let Some(cp) = checkpoint else {
        return Ok(found);
    };
    let when = crate::time::rfc3339(cp.at);
    if last_seq < cp.seq {
        return Err(ChainBreak {
            seq: last_seq + 1,
            reason: format!(
                "the trail ends at record {last_seq} but the checkpoint of {when} names record {}: records {}..{} were removed (the trail was cut short)",
                cp.seq,
                last_seq + 1,
                cp.seq
            ),
        });
    }
    found.newer_than_checkpoint = last_seq - cp.seq;
    // The checkpoint's own record, if it is still kept (or is the anchor).
    let kept_hash = if cp.seq == anchor_seq {
        Some(anchor_hash)
    } else {
        trail
            .records
            .iter()
            .find(|r| r.seq == cp.seq)
            .map(|r| r.hash.as_str())
    };
    if let Some(hash) = kept_hash {
        if hash != cp.hash {
            return Err(ChainBreak {
                seq: cp.seq,
                reason: format!(
                    "its hash differs from the checkpoint of {when}: the trail was rewritten at or before record {}",
                    cp.seq
                ),
            });
        }
    }
    // Pruned records never come back, and only the prune path drops them.
    if anchor_seq < cp.anchor_seq {
        return Err(ChainBreak {
            seq: anchor_seq + 1,
            reason: format!(
                "the trail starts after record {anchor_seq} but the checkpoint of {when} says records up to {} were already pruned: the anchor was forged",
                cp.anchor_seq
            ),
        });
    }
    if anchor_seq == cp.anchor_seq {
        if anchor_hash != cp.anchor_hash {
            return Err(ChainBreak {
                seq: anchor_seq.max(1),
                reason: format!(
                    "the anchor's hash differs from the checkpoint of {when}: the anchor was forged"
                ),
            });
        }
        return Ok(found);
    }
    // The anchor moved since the checkpoint: a prune appended after the
    // checkpoint's record must name exactly this anchor.
    let prune = trail.records.iter().find(|r| {
        r.seq > cp.seq && pruned_to(r).is_some_and(|(s, h)| s == anchor_seq && h == anchor_hash)
    });
    match prune {
        Some(p) => {
            found.pruned_since_checkpoint = Some((cp.anchor_seq + 1, anchor_seq, p.seq));
            Ok(found)
        }
        None => Err(ChainBreak {
            seq: cp.anchor_seq + 1,
            reason: format!(
                "records {}..{anchor_seq} were removed since the checkpoint of {when} and no audited prune names the anchor: the oldest records were deleted and the anchor forged",
                cp.anchor_seq + 1
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{chain, record_hash};
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    fn entry(i: u64) -> AuditEntry {
        AuditEntry {
            at: 1000 + i as Millis,
            actor: "alice".into(),
            action: "POST /api/v1/deployments".into(),
            subject: format!("deployment {i}"),
            outcome: "done 201".into(),
            detail: "{}".into(),
        }
    }

    fn trail(n: u64) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for i in 0..n {
            let after = out.last().map(|r| (r.seq, r.hash.as_str()));
            out.push(chain(entry(i), after));
        }
        out
    }

    fn head(t: &[AuditRecord]) -> (u64, &str) {
        t.last().map_or((0, GENESIS), |r| (r.seq, r.hash.as_str()))
    }

    fn check(
        records: &[AuditRecord],
        anchor: Option<(u64, &str)>,
        cp: &Checkpoint,
    ) -> Result<Verified, ChainBreak> {
        verify_trail(
            Trail {
                records,
                anchor,
                head: None,
            },
            Some(cp),
        )
    }

    #[test]
    fn a_signature_holds_for_its_key_only_and_breaks_on_any_change() {
        let cp = Checkpoint::sign(&key(), (5, "ab"), None, 42);
        cp.check_signature(None).unwrap();
        cp.check_signature(Some(&key().verifying_key())).unwrap();
        let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
        assert!(matches!(
            cp.check_signature(Some(&other)),
            Err(SignatureError::OtherKey { .. })
        ));
        let mut moved = cp.clone();
        moved.seq = 4;
        assert_eq!(moved.check_signature(None), Err(SignatureError::Invalid));
        let mut resigned = Checkpoint::sign(&SigningKey::from_bytes(&[8; 32]), (5, "ab"), None, 42);
        resigned.public_key = cp.public_key.clone();
        assert_eq!(resigned.check_signature(None), Err(SignatureError::Invalid));
        assert!(parse_public_key("zz").is_err());
        assert_eq!(
            parse_public_key(&public_key_hex(&key())).unwrap(),
            key().verifying_key()
        );
    }

    #[test]
    fn a_trail_that_grew_since_the_checkpoint_verifies() {
        let t = trail(8);
        let cp = Checkpoint::sign(&key(), head(&t[..5]), None, 1);
        let v = check(&t, None, &cp).unwrap();
        assert_eq!((v.records, v.newer_than_checkpoint), (8, 3));
    }

    #[test]
    fn truncation_past_the_checkpoint_is_named() {
        let t = trail(8);
        let cp = Checkpoint::sign(&key(), head(&t), None, 1);
        let e = check(&t[..6], None, &cp).unwrap_err();
        assert_eq!(e.seq, 7);
        assert!(e.reason.contains("records 7..8 were removed"), "{e}");
    }

    #[test]
    fn a_rewrite_with_every_later_hash_recomputed_is_named() {
        let t = trail(8);
        let cp = Checkpoint::sign(&key(), head(&t[..6]), None, 1);
        let mut forged: Vec<AuditRecord> = t[..3].to_vec();
        for r in &t[3..] {
            let mut e = r.entry.clone();
            if r.seq == 4 {
                e.outcome = "refused 403".into();
            }
            let after = forged.last().map(|r| (r.seq, r.hash.as_str()));
            forged.push(chain(e, after));
        }
        assert_eq!(verify(&forged, None), Ok(8), "the chain alone links up");
        let e = check(&forged, None, &cp).unwrap_err();
        assert_eq!(e.seq, 6);
        assert!(e.reason.contains("rewritten at or before record 6"), "{e}");
    }

    #[test]
    fn dropping_the_oldest_under_a_forged_anchor_is_named_and_an_audited_prune_is_not() {
        let t = trail(8);
        let cp = Checkpoint::sign(&key(), head(&t[..6]), None, 1);
        let forged = (t[2].seq, t[2].hash.as_str());
        let e = check(&t[3..], Some(forged), &cp).unwrap_err();
        assert_eq!(e.seq, 1);
        assert!(e.reason.contains("records 1..3 were removed"), "{e}");
        // The prune path appends a record naming the anchor: that verifies.
        let mut pruned = t.clone();
        let after = (pruned[7].seq, pruned[7].hash.clone());
        pruned.push(chain(
            prune_entry(forged, 9, 3, 9),
            Some((after.0, &after.1)),
        ));
        let v = check(&pruned[3..], Some(forged), &cp).unwrap();
        assert_eq!(v.pruned_since_checkpoint, Some((1, 3, 9)));
        // Pruned records never come back.
        let later = Checkpoint::sign(&key(), head(&t[..6]), Some(forged), 1);
        let e = check(&t, None, &later).unwrap_err();
        assert!(e.reason.contains("anchor was forged"), "{e}");
    }

    #[test]
    fn a_trail_short_of_the_stores_head_is_named() {
        let t = trail(5);
        let h = (t[4].seq, t[4].hash.as_str());
        let v = verify_trail(
            Trail {
                records: &t[..3],
                anchor: None,
                head: Some(h),
            },
            None,
        )
        .unwrap_err();
        assert_eq!(v.seq, 4);
        assert!(v.reason.contains("removed from the end"), "{v}");
        let mut edited = t.clone();
        edited[4].entry.actor = "mallory".into();
        edited[4].hash = record_hash(5, &edited[4].entry, &edited[4].prev_hash);
        let e = verify_trail(
            Trail {
                records: &edited,
                anchor: None,
                head: Some(h),
            },
            None,
        )
        .unwrap_err();
        assert!(e.reason.contains("end of the trail was rewritten"), "{e}");
    }
}
