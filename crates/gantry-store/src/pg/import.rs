//! `gantry store copy`: an installation's SQLite state copied into an empty
//! PostgreSQL database, so a team grows to several controllers without
//! starting over. Every table is copied row for row in one transaction
//! (the columns both schemas have, each value converted to the PostgreSQL
//! column's type); the audit head follows the records, the sequences are
//! moved past the copied numbers, and the result is checked: the counts of
//! every table agree and the copied audit chain verifies.

use super::*;
use postgres::types::ToSql;

/// The tables copied, parents before children (the audit head is moved
/// after its records; leadership and epochs are the new cluster's own).
const TABLES: &[&str] = &[
    "releases",
    "deployments",
    "events",
    "deployment_log",
    "env_state",
    "approvals",
    "evidence",
    "users",
    "tokens",
    "deliveries",
    "audit",
    "audit_anchor",
    "audit_checkpoints",
    "incidents",
    "applied_migrations",
    "deployment_closures",
];

/// What was copied and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySummary {
    /// Rows per table, in copy order.
    pub tables: Vec<(String, u64)>,
    /// Audit records whose chain verified in the target.
    pub audit_records: usize,
}

/// One value, typed as the target column wants it.
fn convert(
    table: &str,
    column: &str,
    pg_type: &str,
    v: rusqlite::types::Value,
) -> Result<Box<dyn ToSql + Sync>> {
    use rusqlite::types::Value as V;
    let bad = |v: &V| {
        StoreError::Corrupt(format!(
            "{table}.{column}: {v:?} does not fit the PostgreSQL column's type {pg_type}"
        ))
    };
    Ok(match (pg_type, v) {
        ("bigint", V::Integer(i)) => Box::new(i),
        ("bigint", V::Null) => Box::new(None::<i64>),
        ("integer", V::Integer(i)) => Box::new(i32::try_from(i).map_err(|_| bad(&V::Integer(i)))?),
        ("integer", V::Null) => Box::new(None::<i32>),
        ("boolean", V::Integer(i)) => Box::new(i != 0),
        ("boolean", V::Null) => Box::new(None::<bool>),
        ("double precision", V::Real(f)) => Box::new(f),
        ("double precision", V::Integer(i)) => Box::new(i as f64),
        ("double precision", V::Null) => Box::new(None::<f64>),
        ("text", V::Text(s)) => Box::new(s),
        ("text", V::Null) => Box::new(None::<String>),
        ("bytea", V::Blob(b)) => Box::new(b),
        ("bytea", V::Null) => Box::new(None::<Vec<u8>>),
        (_, v) => return Err(bad(&v)),
    })
}

/// Copies the SQLite database at `from` into the empty PostgreSQL database
/// at `to` (its schema created first), and checks the copy.
pub fn copy_sqlite_to_postgres(from: &std::path::Path, to: &DatabaseUrl) -> Result<CopySummary> {
    if !from.exists() {
        return Err(StoreError::Database(format!(
            "no SQLite database at {}",
            from.display()
        )));
    }
    let source = rusqlite::Connection::open_with_flags(
        from,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    source.busy_timeout(std::time::Duration::from_secs(30))?;
    // One read transaction: a consistent view while a controller may write.
    source.execute_batch("BEGIN")?;
    let target = PgStore::connect(to)?;
    let out = target.import_sqlite(&source);
    let _ = source.execute_batch("COMMIT");
    out
}

impl PgStore {
    /// Copies the SQLite state of `source` (at the current schema) into this
    /// database, which must hold none yet.
    pub fn import_sqlite(&self, source: &rusqlite::Connection) -> Result<CopySummary> {
        let version: usize = source.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let current = crate::sqlite::MIGRATIONS_LEN;
        if version != current {
            return Err(StoreError::Database(format!(
                "the SQLite database is at schema version {version}, this gantry's is {current}: start this gantry's controller on it once (it migrates), then copy"
            )));
        }
        // Every row read first: the source is not held open across the target's transaction.
        let mut data: Vec<(String, Vec<String>, Vec<Vec<rusqlite::types::Value>>)> = Vec::new();
        for table in TABLES {
            let columns: Vec<String> = source
                .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let quoted: Vec<String> = columns.iter().map(|c| format!("\"{c}\"")).collect();
            let mut stmt = source.prepare(&format!(
                "SELECT {} FROM {table} ORDER BY rowid",
                quoted.join(", ")
            ))?;
            let n = columns.len();
            let rows = stmt
                .query_map([], |r| {
                    (0..n)
                        .map(|i| r.get::<_, rusqlite::types::Value>(i))
                        .collect::<rusqlite::Result<Vec<_>>>()
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            data.push((table.to_string(), columns, rows));
        }
        let head: (i64, String) =
            source.query_row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        self.tx(move |tx| {
            for table in ["releases", "deployments", "audit"] {
                let n: i64 = tx
                    .query_one(&format!("SELECT count(*) FROM {table}"), &[])?
                    .try_get(0)?;
                if n > 0 {
                    return Err(StoreError::Database(format!(
                        "the target already holds state ({n} row(s) in {table}): copy only into an empty database"
                    )));
                }
            }
            let mut counts = Vec::new();
            for (table, source_columns, rows) in data {
                let target: Vec<(String, String)> = tx
                    .query(
                        "SELECT column_name, data_type FROM information_schema.columns
                         WHERE table_schema = current_schema() AND table_name = $1
                         ORDER BY ordinal_position",
                        &[&table],
                    )?
                    .iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect::<Result<_>>()?;
                // The columns both have; a target-only column keeps its default (or NULL).
                let shared: Vec<(usize, &str, &str)> = source_columns
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| {
                        target
                            .iter()
                            .find(|(t, _)| t == c)
                            .map(|(t, ty)| (i, t.as_str(), ty.as_str()))
                    })
                    .collect();
                let names: Vec<String> = shared.iter().map(|(_, c, _)| format!("\"{c}\"")).collect();
                let params: Vec<String> = (1..=shared.len()).map(|n| format!("${n}")).collect();
                let insert = tx.prepare(&format!(
                    "INSERT INTO {table} ({}) VALUES ({})",
                    names.join(", "),
                    params.join(", ")
                ))?;
                let count = rows.len() as u64;
                for row in rows {
                    let mut values: Vec<Option<rusqlite::types::Value>> =
                        row.into_iter().map(Some).collect();
                    let typed: Vec<Box<dyn ToSql + Sync>> = shared
                        .iter()
                        .map(|(i, column, ty)| {
                            let v = values[*i].take().unwrap_or(rusqlite::types::Value::Null);
                            convert(&table, column, ty, v)
                        })
                        .collect::<Result<_>>()?;
                    let refs: Vec<&(dyn ToSql + Sync)> = typed.iter().map(|b| b.as_ref()).collect();
                    tx.execute(&insert, &refs)?;
                }
                // Numbers handed out next start past the copied ones.
                for (_, column, _) in &shared {
                    let sequence: Option<String> = tx
                        .query_one("SELECT pg_get_serial_sequence($1, $2)", &[&table, column])?
                        .try_get(0)?;
                    if let Some(seq) = sequence {
                        tx.execute(
                            &format!(
                                "SELECT setval($1::text::regclass, GREATEST((SELECT COALESCE(max(\"{column}\"), 0) FROM {table}), 1), (SELECT count(*) > 0 FROM {table}))"
                            ),
                            &[&seq],
                        )?;
                    }
                }
                counts.push((table, count));
            }
            if head.0 > 0 {
                tx.execute(
                    "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1",
                    &[&head.0, &head.1],
                )?;
            }
            Ok(counts)
        })
        .and_then(|tables| {
            // Checked as a controller will read it.
            for (table, n) in &tables {
                let have: i64 = self.tx(|tx| {
                    Ok(tx
                        .query_one(&format!("SELECT count(*) FROM {table}"), &[])?
                        .try_get(0)?)
                })?;
                if have as u64 != *n {
                    return Err(StoreError::Corrupt(format!(
                        "{table}: {n} row(s) copied, {have} found"
                    )));
                }
            }
            let audit_records = crate::backup::verify_chain(self).map_err(|e| {
                StoreError::Corrupt(format!("the copied audit chain breaks at {e}"))
            })?;
            Ok(CopySummary {
                tables,
                audit_records,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::{new_deployment, pg_fixture, release};

    #[test]
    fn an_installation_is_copied_whole_and_goes_on_numbering_and_chaining_after_it() {
        let Some(pg) = pg_fixture("store_copy") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("gantry.db");
        let source = crate::SqliteStore::open(&db).unwrap();
        source.insert_release(&release("1.0.0", 'a')).unwrap();
        source.insert_release(&release("1.1.0", 'b')).unwrap();
        let env: EnvName = "production".parse().unwrap();
        // A finished deployment (its outcome chained into the audit trail)
        // and a user, as an installation has them.
        let mut d = source
            .create_deployment(&env, &mut |id| new_deployment(id, "production", "1.0.0"))
            .unwrap();
        for (at, e) in [
            (10, Event::Created),
            (20, Event::AbortRequested { by: "ann".into() }),
        ] {
            let t = gantry_core::step(&d, &e, at);
            source.record(&e, &t, at, &[]).unwrap();
            d = t.deployment;
        }
        assert!(d.phase.is_terminal(), "{:?}", d.phase);
        source
            .append_audit(AuditEntry {
                at: 30,
                actor: "admin".into(),
                action: "POST /api/v1/users".into(),
                subject: "user ann".into(),
                outcome: "done 201".into(),
                detail: "{}".into(),
            })
            .unwrap();
        source
            .create_user(&User {
                name: "ann".into(),
                roles: vec![gantry_core::governance::Role::Approver],
                created_at: 1,
                created_by: "admin".into(),
            })
            .unwrap();
        let audit_before = source.audit_records(0, 100).unwrap();
        let events_before = source.events(d.id).unwrap();
        drop(source);

        // Into a fresh database (its schema made by the copy).
        let empty = pg.url.clone();
        let summary = copy_sqlite_to_postgres(&db, &DatabaseUrl::new(empty.clone())).unwrap();
        let rows = |t: &str| summary.tables.iter().find(|(n, _)| n == t).unwrap().1;
        assert_eq!(
            (rows("releases"), rows("deployments"), rows("users")),
            (2, 1, 1)
        );
        assert_eq!(summary.audit_records, audit_before.len());
        let target = PgStore::connect(&DatabaseUrl::new(empty.clone())).unwrap();
        assert_eq!(target.deployment(d.id).unwrap().unwrap(), d);
        assert_eq!(target.events(d.id).unwrap(), events_before);
        assert_eq!(target.audit_records(0, 100).unwrap(), audit_before);
        assert_eq!(
            target.release(&"1.1.0".parse().unwrap()).unwrap(),
            Some(release("1.1.0", 'b'))
        );
        // It goes on: the next deployment and audit record follow the copied ones.
        let next = target
            .create_deployment(&env, &mut |id| new_deployment(id, "production", "1.1.0"))
            .unwrap();
        assert!(next.id > d.id, "{} after {}", next.id, d.id);
        let r = target
            .append_audit(AuditEntry {
                at: 40,
                actor: "admin".into(),
                action: "POST /api/v1/deployments".into(),
                subject: "deployment".into(),
                outcome: "done 202".into(),
                detail: "{}".into(),
            })
            .unwrap();
        assert_eq!(r.seq, audit_before.last().unwrap().seq + 1);
        assert_eq!(r.prev_hash, audit_before.last().unwrap().hash);
        // Never into a database that holds state.
        let err = copy_sqlite_to_postgres(&db, &DatabaseUrl::new(empty))
            .unwrap_err()
            .to_string();
        assert!(err.contains("copy only into an empty database"), "{err}");
    }
}
