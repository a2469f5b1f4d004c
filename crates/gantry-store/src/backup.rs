//! Consistent snapshots of the state, taken while controllers run (the
//! standards ask for backups before risky changes): SQLite's `VACUUM INTO`
//! (one read transaction: a consistent copy however much is written
//! meanwhile), or `pg_dump` in its custom format for PostgreSQL. Each is
//! checked after it is written: the SQLite copy is opened and its audit
//! chain verified; the dump is listed by `pg_restore`.

use crate::*;
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What a backup holds, as checked after it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
    /// The deployments in it (SQLite; a dump is not opened).
    pub deployments: Option<usize>,
    /// Audit records whose chain verified (SQLite).
    pub audit_records: Option<usize>,
    /// Entries `pg_restore --list` finds in a dump.
    pub dump_entries: Option<usize>,
}

fn refuse_existing(to: &Path) -> Result<()> {
    if to.exists() {
        return Err(StoreError::Database(format!(
            "{} exists; a backup never overwrites a file: name a new one",
            to.display()
        )));
    }
    Ok(())
}

fn file_digest(path: &Path) -> Result<(u64, String)> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| StoreError::Database(format!("cannot read {}: {e}", path.display())))?;
    let mut h = Sha256::new();
    let bytes = std::io::copy(&mut f, &mut h)
        .map_err(|e| StoreError::Database(format!("cannot read {}: {e}", path.display())))?;
    Ok((bytes, hex::encode(h.finalize())))
}

/// Writes a consistent copy of the SQLite database `db` to `to` (a new
/// file), then opens it and verifies its audit chain.
pub fn backup_sqlite(db: &Path, to: &Path) -> Result<BackupSummary> {
    refuse_existing(to)?;
    if !db.exists() {
        return Err(StoreError::Database(format!(
            "no database at {}: is this the controller's data directory?",
            db.display()
        )));
    }
    {
        let conn = rusqlite::Connection::open_with_flags(
            db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        let target = to
            .to_str()
            .ok_or_else(|| StoreError::Database(format!("{} is not UTF-8", to.display())))?;
        conn.execute("VACUUM INTO ?1", [target])?;
    }
    let copy = SqliteStore::open(to)?;
    let deployments = copy.deployments(None, usize::MAX >> 1)?.len();
    let verified = verify_chain(&copy)
        .map_err(|e| StoreError::Corrupt(format!("the backup's audit chain breaks at {e}")))?;
    drop(copy);
    let (bytes, sha256) = file_digest(to)?;
    Ok(BackupSummary {
        path: to.to_owned(),
        bytes,
        sha256,
        deployments: Some(deployments),
        audit_records: Some(verified),
        dump_entries: None,
    })
}

/// Verifies `store`'s whole audit chain against its head and anchor;
/// returns how many records it holds, or where (and why) it breaks.
pub fn verify_chain(store: &dyn Store) -> std::result::Result<usize, String> {
    let mut records = Vec::new();
    loop {
        let after = records.last().map_or(0, |r: &AuditRecord| r.seq);
        let page = store
            .audit_records(after, 10_000)
            .map_err(|e| e.to_string())?;
        if page.is_empty() {
            break;
        }
        records.extend(page);
    }
    let anchor = store.audit_anchor().map_err(|e| e.to_string())?;
    let head = store.audit_head().map_err(|e| e.to_string())?;
    gantry_core::audit::verify_trail(
        gantry_core::audit::Trail {
            records: &records,
            anchor: anchor.as_ref().map(|(q, h)| (*q, h.as_str())),
            head: Some((head.0, &head.1)),
        },
        None,
    )
    .map(|v| v.records)
    .map_err(|b| format!("record {}: {}", b.seq, b.reason))
}

/// A PostgreSQL program (`pg_dump`, `pg_restore`): on `PATH`, else the
/// newest Debian installs under `/usr/lib/postgresql`.
fn pg_program(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if let Some(p) = on_path {
        return p;
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| PathBuf::from(name))
}

/// Dumps the database at `url` to `to` (a new file) with `pg_dump`'s
/// custom format, then lists it with `pg_restore`. The password travels in
/// `PGPASSWORD`, never on a command line.
pub fn backup_postgres(url: &DatabaseUrl, to: &Path) -> Result<BackupSummary> {
    refuse_existing(to)?;
    let (conninfo, password) = url.split_password();
    let mut dump = Command::new(pg_program("pg_dump"));
    dump.args(["--format=custom", "--no-password", "--file"])
        .arg(to)
        .arg("--dbname")
        .arg(&conninfo)
        .env_remove("PGPASSWORD")
        .stdin(std::process::Stdio::null());
    if let Some(p) = &password {
        dump.env("PGPASSWORD", p);
    }
    let out = dump
        .output()
        .map_err(|e| StoreError::Database(format!("cannot run pg_dump: {e}")))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(to);
        let said = String::from_utf8_lossy(&out.stderr);
        let said = match &password {
            Some(p) if !p.is_empty() => said.replace(p.as_str(), "***"),
            _ => said.into_owned(),
        };
        return Err(StoreError::Database(format!(
            "pg_dump of {url} failed: {}",
            said.trim()
        )));
    }
    let list = Command::new(pg_program("pg_restore"))
        .arg("--list")
        .arg(to)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| StoreError::Database(format!("cannot run pg_restore: {e}")))?;
    let listed = String::from_utf8_lossy(&list.stdout);
    if !list.status.success() || !listed.contains("TABLE DATA public audit ") {
        return Err(StoreError::Corrupt(format!(
            "pg_restore cannot read the dump {}: {}",
            to.display(),
            String::from_utf8_lossy(&list.stderr).trim()
        )));
    }
    let entries = listed
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .count();
    let (bytes, sha256) = file_digest(to)?;
    Ok(BackupSummary {
        path: to.to_owned(),
        bytes,
        sha256,
        deployments: None,
        audit_records: None,
        dump_entries: Some(entries),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::{new_deployment, pg_fixture, release};

    fn some_state(store: &dyn Store) {
        store.insert_release(&release("1.0.0", 'a')).unwrap();
        let env: EnvName = "production".parse().unwrap();
        let d = store
            .create_deployment(&env, &mut |id| new_deployment(id, "production", "1.0.0"))
            .unwrap();
        let t = gantry_core::step(&d, &gantry_core::Event::Created, 10);
        store
            .record(&gantry_core::Event::Created, &t, 10, &[])
            .unwrap();
        for n in 0..3 {
            store
                .append_audit(AuditEntry {
                    at: n,
                    actor: "admin".into(),
                    action: "POST /api/v1/releases".into(),
                    subject: format!("release {n}"),
                    outcome: "done 201".into(),
                    detail: "{}".into(),
                })
                .unwrap();
        }
    }

    #[test]
    fn a_sqlite_backup_is_a_consistent_copy_whose_chain_verifies_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("gantry.db");
        let live = SqliteStore::open(&db).unwrap();
        some_state(&live);
        let to = dir.path().join("backup.db");
        let b = backup_sqlite(&db, &to).unwrap();
        assert_eq!((b.deployments, b.audit_records), (Some(1), Some(3)));
        assert_eq!(b.bytes, std::fs::metadata(&to).unwrap().len());
        assert_eq!(b.sha256.len(), 64);
        // The live store goes on; the copy keeps what it had.
        live.append_audit(AuditEntry {
            at: 9,
            actor: "admin".into(),
            action: "POST /api/v1/users".into(),
            subject: "user x".into(),
            outcome: "done 201".into(),
            detail: "{}".into(),
        })
        .unwrap();
        let copy = SqliteStore::open(&to).unwrap();
        assert_eq!(copy.audit_records(0, 100).unwrap().len(), 3);
        let err = backup_sqlite(&db, &to).unwrap_err().to_string();
        assert!(err.contains("never overwrites"), "{err}");
        let err = backup_sqlite(&dir.path().join("nope.db"), &dir.path().join("x.db"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no database at"), "{err}");
    }

    #[test]
    fn a_postgres_backup_is_a_dump_pg_restore_can_read() {
        let Some(pg) = pg_fixture("backup_dump") else {
            return;
        };
        some_state(&pg.store);
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("gantry.pgdump");
        let b = backup_postgres(&DatabaseUrl::new(pg.url.clone()), &to).unwrap();
        assert!(b.dump_entries.is_some_and(|n| n > 20), "{b:?}");
        assert!(b.bytes > 0);
        let err = backup_postgres(
            &DatabaseUrl::new("postgres://gantry:s3cret-pw@127.0.0.1:1/nope"),
            &dir.path().join("x.pgdump"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("pg_dump of postgres://gantry:***@127.0.0.1:1/nope failed"),
            "{err}"
        );
        assert!(!err.contains("s3cret-pw"), "{err}");
        assert!(
            !dir.path().join("x.pgdump").exists(),
            "nothing half-written"
        );
    }
}
