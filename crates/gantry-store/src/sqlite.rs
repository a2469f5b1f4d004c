//! The SQLite store: one file, WAL journal, `synchronous = FULL` so that a
//! recorded event survives a crash of the controller or the machine.

use crate::*;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::Mutex;

/// Migrations, applied in order; `PRAGMA user_version` counts how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE releases (
    version       TEXT PRIMARY KEY,
    digest        TEXT NOT NULL,
    size          INTEGER NOT NULL,
    artifact_kind TEXT NOT NULL,
    git_sha       TEXT,
    signature     TEXT,
    signed_by     TEXT,
    created_at    INTEGER NOT NULL,
    created_by    TEXT NOT NULL
);
CREATE TABLE deployments (
    id          INTEGER PRIMARY KEY,
    env         TEXT NOT NULL,
    version     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    phase       TEXT NOT NULL,
    active      INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    finished_at INTEGER,
    state       TEXT NOT NULL
);
-- At most one deployment in progress per environment.
CREATE UNIQUE INDEX deployments_one_active ON deployments(env) WHERE active = 1;
CREATE INDEX deployments_env ON deployments(env, id);
CREATE TABLE events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment INTEGER NOT NULL REFERENCES deployments(id),
    at         INTEGER NOT NULL,
    event      TEXT NOT NULL
);
CREATE INDEX events_deployment ON events(deployment, seq);
CREATE TABLE deployment_log (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment INTEGER NOT NULL REFERENCES deployments(id),
    at         INTEGER NOT NULL,
    phase      TEXT NOT NULL,
    message    TEXT NOT NULL
);
CREATE INDEX deployment_log_deployment ON deployment_log(deployment, seq);
CREATE TABLE env_state (
    env        TEXT PRIMARY KEY,
    version    TEXT NOT NULL,
    instances  TEXT NOT NULL,
    deployment INTEGER NOT NULL REFERENCES deployments(id),
    since      INTEGER NOT NULL
);
"#,
    r#"
-- The audit trail: append-only, each record chained to the one before by SHA-256.
CREATE TABLE audit (
    seq       INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    subject   TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE TRIGGER audit_append_only BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
-- The last pruned record, which the first kept one links to.
CREATE TABLE audit_anchor (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
);
"#,
    r#"
-- People, their roles, and their API tokens (only a SHA-256 of each secret is kept).
CREATE TABLE users (
    name       TEXT PRIMARY KEY,
    roles      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL
);
CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    user        TEXT NOT NULL REFERENCES users(name),
    label       TEXT,
    secret_hash TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    created_by  TEXT NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER,
    revoked_by  TEXT
);
-- Verdicts on deployments; one per person and deployment.
CREATE TABLE approvals (
    deployment INTEGER NOT NULL REFERENCES deployments(id),
    by         TEXT NOT NULL,
    approved   INTEGER NOT NULL,
    comment    TEXT NOT NULL,
    at         INTEGER NOT NULL,
    PRIMARY KEY (deployment, by)
);
-- Reports attached to releases, parsed; the file itself is a blob.
CREATE TABLE evidence (
    id        INTEGER PRIMARY KEY,
    version   TEXT NOT NULL REFERENCES releases(version),
    kind      TEXT NOT NULL,
    digest    TEXT NOT NULL,
    file_name TEXT NOT NULL,
    report    TEXT NOT NULL,
    added_at  INTEGER NOT NULL,
    added_by  TEXT NOT NULL
);
CREATE INDEX evidence_version ON evidence(version, id);
CREATE TRIGGER evidence_append_only BEFORE UPDATE ON evidence
BEGIN SELECT RAISE(ABORT, 'evidence is append-only'); END;
"#,
    r#"
-- Notifications: queued before they are sent; retried until delivered or given up.
CREATE TABLE deliveries (
    id         INTEGER PRIMARY KEY,
    deployment INTEGER NOT NULL,
    channel    TEXT NOT NULL,
    notice     TEXT NOT NULL,
    status     TEXT NOT NULL,
    attempts   INTEGER NOT NULL,
    next_at    INTEGER NOT NULL,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX deliveries_due ON deliveries(status, next_at);
CREATE INDEX deliveries_deployment ON deliveries(deployment, id);
"#,
    r#"
-- The audit chain's head: the last sequence number handed out and its hash.
-- It only moves forward, so a record removed behind the store's back leaves
-- a gap at the end that `verify` names, and no sequence number is reused.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
SELECT 1, seq, hash FROM (
    SELECT seq, hash FROM audit
    UNION ALL SELECT seq, hash FROM audit_anchor
    UNION ALL SELECT 0, '0000000000000000000000000000000000000000000000000000000000000000'
) ORDER BY seq DESC LIMIT 1;
CREATE TRIGGER audit_head_forward BEFORE UPDATE ON audit_head WHEN NEW.seq <= OLD.seq
BEGIN SELECT RAISE(ABORT, 'the audit head only moves forward'); END;
CREATE TRIGGER audit_head_kept BEFORE DELETE ON audit_head
BEGIN SELECT RAISE(ABORT, 'the audit head is never deleted'); END;
-- Records are appended past the head only.
CREATE TRIGGER audit_append_past_head BEFORE INSERT ON audit
WHEN NEW.seq <= (SELECT seq FROM audit_head WHERE id = 1)
BEGIN SELECT RAISE(ABORT, 'audit sequence numbers are never reused'); END;
-- Records are deleted only at or below the anchor, which only the prune path
-- moves (and it appends a record naming the new anchor first).
CREATE TRIGGER audit_delete_below_anchor BEFORE DELETE ON audit
WHEN OLD.seq > COALESCE((SELECT seq FROM audit_anchor WHERE id = 1), 0)
BEGIN SELECT RAISE(ABORT, 'audit records are append-only: only pruning drops them, up to the anchor it records'); END;
-- The anchor only moves forward, onto a kept record with that very hash.
CREATE TRIGGER audit_anchor_on_record BEFORE INSERT ON audit_anchor
WHEN NOT EXISTS (SELECT 1 FROM audit WHERE seq = NEW.seq AND hash = NEW.hash)
BEGIN SELECT RAISE(ABORT, 'the audit anchor must be a kept record'); END;
CREATE TRIGGER audit_anchor_forward BEFORE UPDATE ON audit_anchor
WHEN NEW.seq <= OLD.seq OR NOT EXISTS (SELECT 1 FROM audit WHERE seq = NEW.seq AND hash = NEW.hash)
BEGIN SELECT RAISE(ABORT, 'the audit anchor only moves forward, onto a kept record'); END;
CREATE TRIGGER audit_anchor_kept BEFORE DELETE ON audit_anchor
BEGIN SELECT RAISE(ABORT, 'the audit anchor is never deleted'); END;
-- Signed checkpoints of the head (the key is outside the database).
CREATE TABLE audit_checkpoints (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    seq         INTEGER NOT NULL,
    hash        TEXT NOT NULL,
    anchor_seq  INTEGER NOT NULL,
    anchor_hash TEXT NOT NULL,
    at          INTEGER NOT NULL,
    public_key  TEXT NOT NULL,
    signature   TEXT NOT NULL
);
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
CREATE TRIGGER audit_checkpoints_below_anchor BEFORE DELETE ON audit_checkpoints
WHEN OLD.seq > COALESCE((SELECT seq FROM audit_anchor WHERE id = 1), 0)
BEGIN SELECT RAISE(ABORT, 'audit checkpoints are dropped only with the records they name'); END;
"#,
];

/// Appends `entry` to the audit chain inside `tx`, after the recorded head.
fn append_audit_tx(tx: &rusqlite::Transaction<'_>, entry: AuditEntry) -> Result<AuditRecord> {
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
fn audit_head_tx(conn: &Connection) -> Result<(u64, String)> {
    Ok(
        conn.query_row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?,
    )
}

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn parse_version(s: &str) -> Result<Version> {
    Version::parse(s).map_err(|e| corrupt("version", e))
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    pub fn in_memory() -> Result<SqliteStore> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<SqliteStore> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let applied: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let tx = conn.transaction()?;
        for (n, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", n + 1)?;
        }
        tx.commit()?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written
        // (transactions roll back on drop), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Reads a row; the outer error is SQLite's, the inner one a bad stored value.
fn release_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<ReleaseRecord>> {
    let version: String = r.get(0)?;
    let digest: String = r.get(1)?;
    let (size, artifact_kind, git_sha) = (r.get::<_, i64>(2)?, r.get(3)?, r.get(4)?);
    let (signature, signed_by, created_at, created_by) =
        (r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?);
    Ok((|| {
        Ok(ReleaseRecord {
            version: parse_version(&version)?,
            digest: Digest::try_from(digest).map_err(|e| corrupt("digest", e))?,
            size: size as u64,
            artifact_kind,
            git_sha,
            signature,
            signed_by,
            created_at,
            created_by,
        })
    })())
}

const RELEASE_COLUMNS: &str =
    "version, digest, size, artifact_kind, git_sha, signature, signed_by, created_at, created_by";

fn deployment_from_json(s: &str) -> Result<Deployment> {
    serde_json::from_str(s).map_err(|e| corrupt("deployment state", e))
}

impl Store for SqliteStore {
    fn insert_release(&self, r: &ReleaseRecord) -> Result<InsertOutcome> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let existing: Option<String> = tx
            .query_row(
                "SELECT digest FROM releases WHERE version = ?1",
                [r.version.to_string()],
                |row| row.get(0),
            )
            .optional()?;
        let outcome = match existing {
            Some(d) if d == r.digest.as_hex() => InsertOutcome::AlreadyPresent,
            Some(d) => InsertOutcome::Conflict {
                existing: Digest::try_from(d).map_err(|e| corrupt("digest", e))?,
            },
            None => {
                tx.execute(
                    &format!("INSERT INTO releases ({RELEASE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
                    params![
                        r.version.to_string(),
                        r.digest.as_hex(),
                        r.size as i64,
                        r.artifact_kind,
                        r.git_sha,
                        r.signature,
                        r.signed_by,
                        r.created_at,
                        r.created_by
                    ],
                )?;
                InsertOutcome::Inserted
            }
        };
        tx.commit()?;
        Ok(outcome)
    }

    fn release(&self, version: &Version) -> Result<Option<ReleaseRecord>> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE version = ?1"),
                [version.to_string()],
                release_from_row,
            )
            .optional()?;
        row.transpose()
    }

    fn releases(&self) -> Result<Vec<ReleaseRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {RELEASE_COLUMNS} FROM releases"))?;
        let rows = stmt.query_map([], release_from_row)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row??);
        }
        out.sort_by(|a, b| a.version.cmp(&b.version));
        Ok(out)
    }

    fn create_deployment(
        &self,
        env: &EnvName,
        build: &mut dyn FnMut(DeploymentId) -> Deployment,
    ) -> Result<Deployment> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let holder: Option<(i64, String)> = tx
            .query_row(
                "SELECT id, version FROM deployments WHERE env = ?1 AND active = 1",
                [env.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((holder, version)) = holder {
            return Err(StoreError::EnvironmentBusy {
                env: env.to_string(),
                holder,
                version,
            });
        }
        let next: i64 = tx.query_row(
            "SELECT COALESCE(MAX(id), 0) + 1 FROM deployments",
            [],
            |r| r.get(0),
        )?;
        let d = build(next);
        tx.execute(
            "INSERT INTO deployments (id, env, version, kind, phase, active, created_at, finished_at, state)
             VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, NULL, ?7)",
            params![
                d.id,
                d.env.as_str(),
                d.version.to_string(),
                serde_json::to_value(d.kind).map_err(|e| corrupt("kind", e))?.as_str().unwrap_or_default(),
                d.phase.as_str(),
                d.created_at,
                serde_json::to_string(&d).map_err(|e| corrupt("deployment", e))?
            ],
        )?;
        tx.commit()?;
        Ok(d)
    }

    fn record(&self, event: &Event, t: &Transition, at: Millis, outbox: &[Outgoing]) -> Result<()> {
        let d = &t.deployment;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO events (deployment, at, event) VALUES (?1, ?2, ?3)",
            params![
                d.id,
                at,
                serde_json::to_string(event).map_err(|e| corrupt("event", e))?
            ],
        )?;
        for line in &t.log {
            tx.execute(
                "INSERT INTO deployment_log (deployment, at, phase, message) VALUES (?1, ?2, ?3, ?4)",
                params![d.id, at, d.phase.as_str(), line],
            )?;
        }
        if let Event::Approved { by, comment } | Event::Rejected { by, comment } = event {
            // The verdict is kept with the state it led to; a second one by the
            // same person was refused before it got here, and is ignored if not.
            tx.execute(
                "INSERT OR IGNORE INTO approvals (deployment, by, approved, comment, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![d.id, by, matches!(event, Event::Approved { .. }), comment, at],
            )?;
        }
        tx.execute(
            "UPDATE deployments SET phase = ?2, active = ?3, finished_at = ?4, state = ?5 WHERE id = ?1",
            params![
                d.id,
                d.phase.as_str(),
                !d.phase.is_terminal(),
                d.finished_at,
                serde_json::to_string(d).map_err(|e| corrupt("deployment", e))?
            ],
        )?;
        if d.phase.is_terminal() {
            // The outcome is on the audit trail in the same transaction as the state.
            let detail = serde_json::json!({
                "env": d.env.as_str(),
                "version": d.version.to_string(),
                "previous_version": d.previous_version.as_ref().map(|v| v.to_string()),
                "kind": d.kind,
                "requested_by": d.requested_by,
                "reason": d.reason,
                "analysis": d.canary.as_ref().and_then(|c| c.last.as_ref()),
                "smoke": d.smoke.as_ref().map(|s| &s.results),
            });
            append_audit_tx(
                &tx,
                AuditEntry {
                    at,
                    actor: "gantry".to_owned(),
                    action: "deployment.finished".to_owned(),
                    subject: format!("deployment {}", d.id),
                    outcome: d.phase.as_str().to_owned(),
                    detail: detail.to_string(),
                },
            )?;
        }
        for out in outbox {
            insert_deliveries(&tx, &out.notice, &out.channels, at)?;
        }
        if d.phase == gantry_core::Phase::Succeeded {
            tx.execute(
                "INSERT INTO env_state (env, version, instances, deployment, since) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(env) DO UPDATE SET version = ?2, instances = ?3, deployment = ?4, since = ?5",
                params![
                    d.env.as_str(),
                    d.version.to_string(),
                    serde_json::to_string(&d.new_instances).map_err(|e| corrupt("instances", e))?,
                    d.id,
                    at
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn deployment(&self, id: DeploymentId) -> Result<Option<Deployment>> {
        let conn = self.conn();
        let s: Option<String> = conn
            .query_row("SELECT state FROM deployments WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        s.map(|s| deployment_from_json(&s)).transpose()
    }

    fn deployments(&self, env: Option<&EnvName>, limit: usize) -> Result<Vec<Deployment>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT state FROM deployments WHERE (?1 IS NULL OR env = ?1) ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![env.map(|e| e.as_str()), limit as i64], |r| {
            r.get::<_, String>(0)
        })?;
        rows.map(|r| deployment_from_json(&r?)).collect()
    }

    fn active_deployments(&self) -> Result<Vec<Deployment>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT state FROM deployments WHERE active = 1 ORDER BY id")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.map(|r| deployment_from_json(&r?)).collect()
    }

    fn log(&self, id: DeploymentId) -> Result<Vec<LogEntry>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT at, phase, message FROM deployment_log WHERE deployment = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([id], |r| {
            Ok(LogEntry {
                at: r.get(0)?,
                phase: r.get(1)?,
                message: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn events(&self, id: DeploymentId) -> Result<Vec<(Millis, Event)>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT at, event FROM events WHERE deployment = ?1 ORDER BY seq")?;
        let rows = stmt.query_map([id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (at, e) = row?;
            out.push((
                at,
                serde_json::from_str(&e).map_err(|e| corrupt("event", e))?,
            ));
        }
        Ok(out)
    }

    fn env_state(&self, env: &EnvName) -> Result<Option<EnvState>> {
        Ok(self.env_states()?.into_iter().find(|s| &s.env == env))
    }

    fn env_states(&self) -> Result<Vec<EnvState>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT env, version, instances, deployment, since FROM env_state ORDER BY env",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get(3)?,
                r.get(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (env, version, instances, deployment, since) = row?;
            out.push(EnvState {
                env: env.parse().map_err(|e| corrupt("environment", e))?,
                version: parse_version(&version)?,
                instances: serde_json::from_str(&instances).map_err(|e| corrupt("instances", e))?,
                deployment,
                since,
            });
        }
        Ok(out)
    }

    fn last_good_other_than(&self, env: &EnvName, current: &Version) -> Result<Option<Version>> {
        let conn = self.conn();
        let v: Option<String> = conn
            .query_row(
                "SELECT version FROM deployments WHERE env = ?1 AND phase = 'succeeded' AND version != ?2
                 ORDER BY id DESC LIMIT 1",
                params![env.as_str(), current.to_string()],
                |r| r.get(0),
            )
            .optional()?;
        v.map(|v| parse_version(&v)).transpose()
    }

    fn succeeded_versions(&self, env: &EnvName) -> Result<Vec<Version>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT DISTINCT version FROM deployments WHERE env = ?1 AND phase = 'succeeded'",
        )?;
        let rows = stmt.query_map([env.as_str()], |r| r.get::<_, String>(0))?;
        rows.map(|r| parse_version(&r?)).collect()
    }

    fn append_audit(&self, entry: AuditEntry) -> Result<AuditRecord> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let record = append_audit_tx(&tx, entry)?;
        tx.commit()?;
        Ok(record)
    }

    fn audit_records(&self, after_seq: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT seq, at, actor, action, subject, outcome, detail, prev_hash, hash
             FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after_seq, limit as i64], |r| {
            Ok(AuditRecord {
                seq: r.get(0)?,
                entry: AuditEntry {
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    subject: r.get(4)?,
                    outcome: r.get(5)?,
                    detail: r.get(6)?,
                },
                prev_hash: r.get(7)?,
                hash: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn audit_anchor(&self) -> Result<Option<(u64, String)>> {
        let conn = self.conn();
        Ok(conn
            .query_row("SELECT seq, hash FROM audit_anchor WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?)
    }

    fn audit_head(&self) -> Result<(u64, String)> {
        audit_head_tx(&self.conn())
    }

    fn prune_audit(&self, before: Millis, now: Millis) -> Result<usize> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        // The newest record older than `before` becomes the anchor; the
        // newest record of all is always kept so the chain has a head.
        let last: Option<(u64, String)> = tx
            .query_row(
                "SELECT seq, hash FROM audit WHERE at < ?1
                   AND seq < (SELECT MAX(seq) FROM audit) ORDER BY seq DESC LIMIT 1",
                params![before],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((seq, hash)) = last else {
            return Ok(0);
        };
        let dropping: usize = tx.query_row(
            "SELECT COUNT(*) FROM audit WHERE seq <= ?1",
            params![seq],
            |r| r.get(0),
        )?;
        // First the record that names the new anchor, then the anchor (the
        // triggers hold it to a kept record, moving forward), then the drop
        // (the triggers allow it only up to the anchor).
        append_audit_tx(
            &tx,
            gantry_core::audit::prune_entry((seq, &hash), before, dropping, now),
        )?;
        tx.execute(
            "INSERT INTO audit_anchor (id, seq, hash) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            params![seq, hash],
        )?;
        let removed = tx.execute("DELETE FROM audit WHERE seq <= ?1", params![seq])?;
        tx.execute(
            "DELETE FROM audit_checkpoints WHERE seq <= ?1",
            params![seq],
        )?;
        tx.commit()?;
        Ok(removed)
    }

    fn add_audit_checkpoint(&self, cp: &Checkpoint) -> Result<()> {
        self.conn().execute(
            "INSERT INTO audit_checkpoints (seq, hash, anchor_seq, anchor_hash, at, public_key, signature)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                cp.seq,
                cp.hash,
                cp.anchor_seq,
                cp.anchor_hash,
                cp.at,
                cp.public_key,
                cp.signature
            ],
        )?;
        Ok(())
    }

    fn latest_audit_checkpoint(&self) -> Result<Option<Checkpoint>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT seq, hash, anchor_seq, anchor_hash, at, public_key, signature
                 FROM audit_checkpoints ORDER BY id DESC LIMIT 1",
                [],
                |r| {
                    Ok(Checkpoint {
                        seq: r.get(0)?,
                        hash: r.get(1)?,
                        anchor_seq: r.get(2)?,
                        anchor_hash: r.get(3)?,
                        at: r.get(4)?,
                        public_key: r.get(5)?,
                        signature: r.get(6)?,
                    })
                },
            )
            .optional()?)
    }

    fn prune_deployments(&self, before: Millis) -> Result<usize> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let doomed = "SELECT id FROM deployments WHERE active = 0 AND finished_at IS NOT NULL
              AND finished_at < ?1 AND id NOT IN (SELECT deployment FROM env_state)";
        for table in ["events", "deployment_log", "approvals", "deliveries"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE deployment IN ({doomed})"),
                params![before],
            )?;
        }
        let removed = tx.execute(
            &format!("DELETE FROM deployments WHERE id IN ({doomed})"),
            params![before],
        )?;
        tx.commit()?;
        Ok(removed)
    }
}

fn user_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<User>> {
    let roles: String = r.get(1)?;
    Ok(Ok(User {
        name: r.get(0)?,
        roles: match serde_json::from_str(&roles) {
            Ok(v) => v,
            Err(e) => return Ok(Err(corrupt("roles", e))),
        },
        created_at: r.get(2)?,
        created_by: r.get(3)?,
    }))
}

const TOKEN_COLUMNS: &str =
    "id, user, label, secret_hash, created_at, created_by, expires_at, revoked_at, revoked_by";

fn token_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        id: r.get(0)?,
        user: r.get(1)?,
        label: r.get(2)?,
        secret_hash: r.get(3)?,
        created_at: r.get(4)?,
        created_by: r.get(5)?,
        expires_at: r.get(6)?,
        revoked_at: r.get(7)?,
        revoked_by: r.get(8)?,
    })
}

impl GovernanceStore for SqliteStore {
    fn create_user(&self, user: &User) -> Result<bool> {
        let conn = self.conn();
        let n = conn.execute(
            "INSERT OR IGNORE INTO users (name, roles, created_at, created_by) VALUES (?1, ?2, ?3, ?4)",
            params![
                user.name,
                serde_json::to_string(&user.roles).map_err(|e| corrupt("roles", e))?,
                user.created_at,
                user.created_by
            ],
        )?;
        Ok(n == 1)
    }

    fn user(&self, name: &str) -> Result<Option<User>> {
        let conn = self.conn();
        conn.query_row(
            "SELECT name, roles, created_at, created_by FROM users WHERE name = ?1",
            [name],
            user_from_row,
        )
        .optional()?
        .transpose()
    }

    fn users(&self) -> Result<Vec<User>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT name, roles, created_at, created_by FROM users ORDER BY name")?;
        let rows = stmt.query_map([], user_from_row)?;
        rows.map(|r| r?).collect()
    }

    fn create_token(&self, token: &TokenRecord) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            &format!(
                "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ),
            params![
                token.id,
                token.user,
                token.label,
                token.secret_hash,
                token.created_at,
                token.created_by,
                token.expires_at,
                token.revoked_at,
                token.revoked_by
            ],
        )?;
        Ok(())
    }

    fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ?1"),
                [id],
                token_from_row,
            )
            .optional()?)
    }

    fn tokens(&self, user: Option<&str>) -> Result<Vec<TokenRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE (?1 IS NULL OR user = ?1) ORDER BY created_at, id"
        ))?;
        let rows = stmt.query_map([user], token_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn revoke_token(&self, id: &str, by: &str, at: Millis) -> Result<bool> {
        let conn = self.conn();
        let n = conn.execute(
            "UPDATE tokens SET revoked_at = ?2, revoked_by = ?3 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, at, by],
        )?;
        Ok(n == 1)
    }

    fn approvals(&self, deployment: DeploymentId) -> Result<Vec<Approval>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT by, at, approved, comment FROM approvals WHERE deployment = ?1 ORDER BY at, by",
        )?;
        let rows = stmt.query_map([deployment], |r| {
            Ok(Approval {
                by: r.get(0)?,
                at: r.get(1)?,
                approved: r.get(2)?,
                comment: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn add_late_approval(&self, deployment: DeploymentId, a: &Approval) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "INSERT OR IGNORE INTO approvals (deployment, by, approved, comment, at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![deployment, a.by, a.approved, a.comment, a.at],
        )?;
        if n == 1 {
            tx.execute(
                "INSERT INTO deployment_log (deployment, at, phase, message) VALUES (?1, ?2, 'finished', ?3)",
                params![
                    deployment,
                    a.at,
                    format!(
                        "{} afterwards by {}{}",
                        if a.approved { "approved" } else { "rejected" },
                        a.by,
                        if a.comment.is_empty() { String::new() } else { format!(": {}", a.comment) }
                    )
                ],
            )?;
        }
        tx.commit()?;
        Ok(n == 1)
    }

    fn add_evidence(&self, e: &EvidenceRecord) -> Result<i64> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO evidence (version, kind, digest, file_name, report, added_at, added_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                e.version.to_string(),
                e.kind.as_str(),
                e.digest.as_hex(),
                e.file_name,
                serde_json::to_string(&e.report).map_err(|e| corrupt("report", e))?,
                e.added_at,
                e.added_by
            ],
        )?;
        Ok(conn.last_insert_rowid())
    }

    fn evidence(&self, version: &Version) -> Result<Vec<EvidenceRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, version, kind, digest, file_name, report, added_at, added_by
             FROM evidence WHERE version = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([version.to_string()], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, String>(7)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, version, kind, digest, file_name, report, added_at, added_by) = row?;
            out.push(EvidenceRecord {
                id,
                version: parse_version(&version)?,
                kind: serde_json::from_value(serde_json::Value::String(kind))
                    .map_err(|e| corrupt("evidence kind", e))?,
                digest: Digest::try_from(digest).map_err(|e| corrupt("digest", e))?,
                file_name,
                report: serde_json::from_str(&report).map_err(|e| corrupt("report", e))?,
                added_at,
                added_by,
            });
        }
        Ok(out)
    }
}

const DELIVERY_COLUMNS: &str =
    "id, channel, notice, status, attempts, next_at, last_error, created_at, updated_at";

fn delivery_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Delivery>> {
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
fn insert_deliveries(
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
    fn due_deliveries(&self, now: Millis, limit: usize) -> Result<Vec<Delivery>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE status = 'pending' AND next_at <= ?1
             ORDER BY next_at, id LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![now, limit as i64], delivery_from_row)?;
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
        let rows = stmt.query_map(params![deployment, limit as i64], delivery_from_row)?;
        rows.map(|r| r?).collect()
    }
}

#[cfg(test)]
mod tests;
