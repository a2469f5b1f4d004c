//! The [`GovernanceStore`] trait for SQLite: users, tokens, approvals, evidence.

use super::*;
use gantry_core::incidents::{Incident, IncidentClosure, IncidentKind};

pub(super) fn user_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<User>> {
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

const INCIDENT_COLUMNS: &str =
    "id, deployment, env, kind, opened_at, release, restored_to, reason, restored_at, closed_at, closed_by, summary, follow_up";

fn incident_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Incident>> {
    let kind: String = r.get(3)?;
    let Some(kind) = IncidentKind::parse(&kind) else {
        return Ok(Err(StoreError::Corrupt(format!("incident kind {kind:?}"))));
    };
    let closed_at: Option<Millis> = r.get(9)?;
    Ok(Ok(Incident {
        id: r.get(0)?,
        deployment: r.get(1)?,
        env: r.get(2)?,
        kind,
        opened_at: r.get(4)?,
        release: r.get(5)?,
        restored_to: r.get(6)?,
        reason: r.get(7)?,
        restored_at: r.get(8)?,
        closed: match closed_at {
            Some(at) => Some(IncidentClosure {
                by: r.get::<_, Option<String>>(10)?.unwrap_or_default(),
                at,
                summary: r.get::<_, Option<String>>(11)?.unwrap_or_default(),
                follow_up: r.get::<_, Option<String>>(12)?.unwrap_or_default(),
            }),
            None => None,
        },
    }))
}

pub(super) const TOKEN_COLUMNS: &str =
    "id, user, label, secret_hash, created_at, created_by, expires_at, revoked_at, revoked_by";

pub(super) fn token_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
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

    fn incidents(&self, env: Option<&str>, open_only: bool, limit: usize) -> Result<Vec<Incident>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents
             WHERE (?1 IS NULL OR env = ?1) AND (?2 = 0 OR closed_at IS NULL)
             ORDER BY id DESC LIMIT ?3"
        ))?;
        let rows = stmt.query_map(
            params![env, open_only, i64::try_from(limit).unwrap_or(i64::MAX)],
            incident_from_row,
        )?;
        rows.map(|r| r?).collect()
    }

    fn incident(&self, id: i64) -> Result<Option<Incident>> {
        let conn = self.conn();
        conn.query_row(
            &format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = ?1"),
            [id],
            incident_from_row,
        )
        .optional()?
        .transpose()
    }

    fn close_incident(&self, id: i64, c: &IncidentClosure) -> Result<bool> {
        let n = self.conn().execute(
            "UPDATE incidents SET closed_at = ?2, closed_by = ?3, summary = ?4, follow_up = ?5
             WHERE id = ?1 AND closed_at IS NULL",
            params![id, c.at, c.by, c.summary, c.follow_up],
        )?;
        Ok(n == 1)
    }
}
