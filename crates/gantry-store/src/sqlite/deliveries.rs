//! Notification deliveries: the outbox that `record` fills and the notifier drains.

use super::*;

pub(super) const DELIVERY_COLUMNS: &str =
    "id, channel, notice, status, attempts, next_at, last_error, created_at, updated_at";

pub(super) fn delivery_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Delivery>> {
    let notice: String = r.get(2)?;
    let notice = match serde_json::from_str(&notice) {
        Ok(n) => n,
        Err(e) => return Ok(Err(corrupt("notice", e))),
    };
    Ok(Ok(Delivery {
        id: r.get(0)?,
        channel: r.get(1)?,
        notice,
        status: r.get(3)?,
        attempts: r.get(4)?,
        next_at: r.get(5)?,
        last_error: r.get(6)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
    }))
}

/// Queues `notice` for each of `channels` inside `tx`, due at once.
pub(super) fn insert_deliveries(
    tx: &rusqlite::Transaction<'_>,
    notice: &gantry_core::notify::Notice,
    channels: &[String],
    at: Millis,
) -> Result<()> {
    let json = serde_json::to_string(notice).map_err(|e| corrupt("notice", e))?;
    for channel in channels {
        tx.execute(
            "INSERT INTO deliveries (deployment, channel, notice, status, attempts, next_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?4, ?4)",
            params![notice.deployment, channel, json, at],
        )?;
    }
    Ok(())
}

impl DeliveryStore for SqliteStore {
    fn queue_notices(&self, outbox: &[crate::Outgoing], at: Millis) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for o in outbox {
            insert_deliveries(&tx, &o.notice, &o.channels, at)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn due_deliveries(&self, now: Millis, limit: usize) -> Result<Vec<Delivery>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE status = 'pending' AND next_at <= ?1
             ORDER BY next_at, id LIMIT ?2"
        ))?;
        let rows = stmt.query_map(
            params![now, i64::try_from(limit).unwrap_or(i64::MAX)],
            delivery_from_row,
        )?;
        rows.map(|r| r?).collect()
    }

    fn update_delivery(
        &self,
        id: i64,
        status: &str,
        attempts: u32,
        next_at: Millis,
        last_error: Option<&str>,
        at: Millis,
    ) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            "UPDATE deliveries SET status = ?2, attempts = ?3, next_at = ?4, last_error = ?5, updated_at = ?6 WHERE id = ?1",
            params![id, status, attempts, next_at, last_error, at],
        )?;
        Ok(())
    }

    fn deliveries(&self, deployment: Option<DeploymentId>, limit: usize) -> Result<Vec<Delivery>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE (?1 IS NULL OR deployment = ?1)
             ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(
            params![deployment, i64::try_from(limit).unwrap_or(i64::MAX)],
            delivery_from_row,
        )?;
        rows.map(|r| r?).collect()
    }
}
