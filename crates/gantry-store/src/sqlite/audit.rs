//! Writing the audit chain inside a transaction: every change that is
//! audited appends its record in the same transaction as the change.

use super::*;

/// Appends `entry` to the audit chain inside `tx`, after the recorded head.
pub(super) fn append_audit_tx(
    tx: &rusqlite::Transaction<'_>,
    entry: AuditEntry,
) -> Result<AuditRecord> {
    let (seq, hash) = audit_head_tx(tx)?;
    let record = gantry_core::audit::chain(entry, Some((seq, hash.as_str())));
    let e = &record.entry;
    tx.execute(
        "INSERT INTO audit (seq, at, actor, action, subject, outcome, detail, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            record.seq,
            e.at,
            e.actor,
            e.action,
            e.subject,
            e.outcome,
            e.detail,
            record.prev_hash,
            record.hash
        ],
    )?;
    tx.execute(
        "UPDATE audit_head SET seq = ?1, hash = ?2 WHERE id = 1",
        params![record.seq, record.hash],
    )?;
    Ok(record)
}

/// `(seq, hash)` of the last record handed out: `(0, genesis)` before any.
pub(super) fn audit_head_tx(conn: &Connection) -> Result<(u64, String)> {
    Ok(
        conn.query_row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?,
    )
}
