//! Appending to the audit chain inside a transaction. The head row is
//! locked first, so appends from any number of connections and controllers
//! take numbers one after the other and each links to the one before.

use super::*;

/// Appends `entry` after the head, inside `tx`.
pub(super) fn append_audit_tx(tx: &mut Transaction<'_>, entry: AuditEntry) -> Result<AuditRecord> {
    let head = tx.query_one(
        "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
        &[],
    )?;
    let (seq, hash): (i64, String) = (head.try_get(0)?, head.try_get(1)?);
    let record = gantry_core::audit::chain(entry, Some((seq as u64, hash.as_str())));
    let e = &record.entry;
    tx.execute(
        "INSERT INTO audit (seq, at, actor, action, subject, outcome, detail, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &(record.seq as i64),
            &e.at,
            &e.actor,
            &e.action,
            &e.subject,
            &e.outcome,
            &e.detail,
            &record.prev_hash,
            &record.hash,
        ],
    )?;
    tx.execute(
        "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1",
        &[&(record.seq as i64), &record.hash],
    )?;
    Ok(record)
}

pub(super) fn audit_record_from_row(r: &postgres::Row) -> Result<AuditRecord> {
    Ok(AuditRecord {
        seq: r.try_get::<_, i64>(0)? as u64,
        entry: AuditEntry {
            at: r.try_get(1)?,
            actor: r.try_get(2)?,
            action: r.try_get(3)?,
            subject: r.try_get(4)?,
            outcome: r.try_get(5)?,
            detail: r.try_get(6)?,
        },
        prev_hash: r.try_get(7)?,
        hash: r.try_get(8)?,
    })
}
