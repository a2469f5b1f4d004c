//! Notification deliveries: the outbox that `record` fills and the notifier drains.

use super::*;

const DELIVERY_COLUMNS: &str =
    "id, channel, notice, status, attempts, next_at, last_error, created_at, updated_at";

fn delivery_from_row(r: &postgres::Row) -> Result<Delivery> {
    let notice: String = r.try_get(2)?;
    Ok(Delivery {
        id: r.try_get(0)?,
        channel: r.try_get(1)?,
        notice: serde_json::from_str(&notice).map_err(|e| corrupt("notice", e))?,
        status: r.try_get(3)?,
        attempts: r.try_get::<_, i32>(4)? as u32,
        next_at: r.try_get(5)?,
        last_error: r.try_get(6)?,
        created_at: r.try_get(7)?,
        updated_at: r.try_get(8)?,
    })
}

/// Queues `notice` for each of `channels` inside `tx`, due at once.
pub(super) fn insert_deliveries(
    tx: &mut Transaction<'_>,
    notice: &gantry_core::notify::Notice,
    channels: &[String],
    at: Millis,
) -> Result<()> {
    let json = to_json("notice", notice)?;
    for channel in channels {
        tx.execute(
            "INSERT INTO deliveries (deployment, channel, notice, status, attempts, next_at, created_at, updated_at)
             VALUES ($1, $2, $3, 'pending', 0, $4, $4, $4)",
            &[&notice.deployment, channel, &json, &at],
        )?;
    }
    Ok(())
}

impl DeliveryStore for PgStore {
    fn queue_notices(&self, outbox: &[crate::Outgoing], at: Millis) -> Result<()> {
        self.fenced(|tx, _| {
            for o in outbox {
                insert_deliveries(tx, &o.notice, &o.channels, at)?;
            }
            Ok(())
        })
    }

    fn due_deliveries(&self, now: Millis, limit: usize) -> Result<Vec<Delivery>> {
        self.tx(|tx| {
            tx.query(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE status = 'pending' AND next_at <= $1
                     ORDER BY next_at, id LIMIT $2"
                ),
                &[&now, &i64::try_from(limit).unwrap_or(i64::MAX)],
            )?
            .iter()
            .map(delivery_from_row)
            .collect()
        })
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
        self.fenced(|tx, _| {
            tx.execute(
                "UPDATE deliveries SET status = $2, attempts = $3, next_at = $4, last_error = $5, updated_at = $6
                 WHERE id = $1",
                &[&id, &status, &(attempts as i32), &next_at, &last_error, &at],
            )?;
            Ok(())
        })
    }

    fn deliveries(&self, deployment: Option<DeploymentId>, limit: usize) -> Result<Vec<Delivery>> {
        self.tx(|tx| {
            tx.query(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE ($1::BIGINT IS NULL OR deployment = $1)
                     ORDER BY id DESC LIMIT $2"
                ),
                &[&deployment, &i64::try_from(limit).unwrap_or(i64::MAX)],
            )?
            .iter()
            .map(delivery_from_row)
            .collect()
        })
    }
}
