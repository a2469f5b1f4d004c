//! Handlers for reading and verifying the audit trail.

use gantry_api::{AuditAnchor, AuditPage, AuditPublicKey, AuditQuery, AuditVerdict};

use super::*;

// Answers that are not a domain type of their own, named so the OpenAPI
// document can describe them.

/// Records after `after`, oldest first, and the anchor of a pruned trail.
pub(super) async fn list_audit(
    State(s): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Response> {
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let (seq, hash) = s.controller.audit_head()?;
    let records = s.controller.audit_records(q.after, limit)?;
    let anchor = s.controller.audit_anchor()?;
    let checkpoint = s.controller.latest_audit_checkpoint()?;
    Ok(Json(AuditPage {
        anchor: anchor.map(|(seq, hash)| AuditAnchor { seq, hash }),
        head: AuditAnchor { seq, hash },
        checkpoint,
        records,
    })
    .into_response())
}

/// A signed checkpoint of the chain's head now, for an auditor to keep.
pub(super) async fn audit_checkpoint(State(s): State<AppState>) -> ApiResult<Response> {
    Ok(Json(s.controller.audit_checkpoint()?).into_response())
}

pub(super) async fn audit_public_key(State(s): State<AppState>) -> ApiResult<Response> {
    Ok(Json(AuditPublicKey {
        algorithm: "ed25519".to_owned(),
        public_key: s.controller.audit_public_key()?,
    })
    .into_response())
}

/// Verifies the whole stored chain, that it reaches the head the store
/// recorded, and that it holds the newest checkpoint the controller signed;
/// names the first record that breaks it.
pub(super) async fn verify_audit(State(s): State<AppState>) -> ApiResult<Response> {
    let store = &s.controller;
    let head = store.audit_head()?;
    let anchor = store.audit_anchor()?;
    let checkpoint = store.latest_audit_checkpoint()?;
    let mut all = Vec::new();
    loop {
        let after = all
            .last()
            .map_or(0, |r: &gantry_core::audit::AuditRecord| r.seq);
        let page = store.audit_records(after, 10_000)?;
        if page.is_empty() {
            break;
        }
        all.extend(page);
    }
    let trail = gantry_core::audit::Trail {
        records: &all,
        anchor: anchor.as_ref().map(|(q, h)| (*q, h.as_str())),
        head: Some((head.0, &head.1)),
    };
    // A stored checkpoint counts only if the controller's own key signed it.
    let key = gantry_core::audit::parse_public_key(&s.controller.audit_public_key()?)
        .map_err(|e| ControlError::Internal(e.to_string()))?;
    let checkpoint_bad = checkpoint.as_ref().and_then(|c| {
        c.check_signature(Some(&key))
            .err()
            .map(|e| gantry_core::audit::ChainBreak {
                seq: c.seq,
                reason: format!("the stored checkpoint of record {}: {e}", c.seq),
            })
    });
    let result = match checkpoint_bad {
        Some(b) => Err(b),
        None => gantry_core::audit::verify_trail(trail, checkpoint.as_ref()),
    };
    let (first_seq, last_seq) = (all.first().map(|r| r.seq), all.last().map(|r| r.seq));
    let checkpoint_seq = checkpoint.as_ref().map(|c| c.seq);
    Ok(Json(match result {
        Ok(v) => AuditVerdict {
            ok: true,
            records: v.records,
            first_seq,
            last_seq,
            first_bad_seq: None,
            reason: None,
            checkpoint_seq,
        },
        Err(b) => AuditVerdict {
            ok: false,
            records: all.len(),
            first_seq,
            last_seq,
            first_bad_seq: Some(b.seq),
            reason: Some(b.reason),
            checkpoint_seq,
        },
    })
    .into_response())
}
