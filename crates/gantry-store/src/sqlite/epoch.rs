//! The controller's epoch: a counter raised at every controller start and
//! sent to fleet hosts as a fencing token, so a host can refuse a stale
//! controller process (docs/design/fleets.md §9).

use super::*;

impl SqliteStore {
    /// Raises the epoch by one and returns it (1 on the first start). Called
    /// once at controller start, under the data directory's lock.
    pub fn begin_controller_epoch(&self) -> Result<u64> {
        let conn = self.conn();
        let epoch: i64 = conn.query_row(
            "INSERT INTO controller_epoch (id, epoch) VALUES (1, 1)
             ON CONFLICT (id) DO UPDATE SET epoch = epoch + 1
             RETURNING epoch",
            [],
            |r| r.get(0),
        )?;
        Ok(epoch as u64)
    }

    /// The epoch of the running controller (0 before any start).
    pub fn controller_epoch(&self) -> Result<u64> {
        let epoch: Option<i64> = self
            .conn()
            .query_row("SELECT epoch FROM controller_epoch WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(epoch.unwrap_or(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_rises_at_every_start_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gantry.db");
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.controller_epoch().unwrap(), 0);
        assert_eq!(store.begin_controller_epoch().unwrap(), 1);
        assert_eq!(store.begin_controller_epoch().unwrap(), 2);
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.controller_epoch().unwrap(), 2);
        assert_eq!(store.begin_controller_epoch().unwrap(), 3);
        assert_eq!(store.controller_epoch().unwrap(), 3);
    }
}
