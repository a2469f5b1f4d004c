//! The [`GovernanceStore`] trait for PostgreSQL: users, tokens, approvals, evidence.

use super::*;
use gantry_core::incidents::{Incident, IncidentClosure, IncidentKind};

fn user_from_row(r: &postgres::Row) -> Result<User> {
    let roles: String = r.try_get(1)?;
    Ok(User {
        name: r.try_get(0)?,
        roles: serde_json::from_str(&roles).map_err(|e| corrupt("roles", e))?,
        created_at: r.try_get(2)?,
        created_by: r.try_get(3)?,
    })
}

const INCIDENT_COLUMNS: &str =
    "id, deployment, env, kind, opened_at, release, restored_to, reason, restored_at, closed_at, closed_by, summary, follow_up";

fn incident_from_row(r: &postgres::Row) -> Result<Incident> {
    let kind: String = r.try_get(3)?;
    let kind = IncidentKind::parse(&kind)
        .ok_or_else(|| StoreError::Corrupt(format!("incident kind {kind:?}")))?;
    let closed_at: Option<Millis> = r.try_get(9)?;
    Ok(Incident {
        id: r.try_get(0)?,
        deployment: r.try_get(1)?,
        env: r.try_get(2)?,
        kind,
        opened_at: r.try_get(4)?,
        release: r.try_get(5)?,
        restored_to: r.try_get(6)?,
        reason: r.try_get(7)?,
        restored_at: r.try_get(8)?,
        closed: match closed_at {
            Some(at) => Some(IncidentClosure {
                by: r.try_get::<_, Option<String>>(10)?.unwrap_or_default(),
                at,
                summary: r.try_get::<_, Option<String>>(11)?.unwrap_or_default(),
                follow_up: r.try_get::<_, Option<String>>(12)?.unwrap_or_default(),
            }),
            None => None,
        },
    })
}

const TOKEN_COLUMNS: &str =
    r#"id, "user", label, secret_hash, created_at, created_by, expires_at, revoked_at, revoked_by"#;

fn token_from_row(r: &postgres::Row) -> Result<TokenRecord> {
    Ok(TokenRecord {
        id: r.try_get(0)?,
        user: r.try_get(1)?,
        label: r.try_get(2)?,
        secret_hash: r.try_get(3)?,
        created_at: r.try_get(4)?,
        created_by: r.try_get(5)?,
        expires_at: r.try_get(6)?,
        revoked_at: r.try_get(7)?,
        revoked_by: r.try_get(8)?,
    })
}

impl GovernanceStore for PgStore {
    fn create_user(&self, user: &User) -> Result<bool> {
        let roles = to_json("roles", &user.roles)?;
        self.tx(|tx| {
            let n = tx.execute(
                "INSERT INTO users (name, roles, created_at, created_by) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO NOTHING",
                &[&user.name, &roles, &user.created_at, &user.created_by],
            )?;
            Ok(n == 1)
        })
    }

    fn user(&self, name: &str) -> Result<Option<User>> {
        self.tx(|tx| {
            tx.query_opt(
                "SELECT name, roles, created_at, created_by FROM users WHERE name = $1",
                &[&name],
            )?
            .as_ref()
            .map(user_from_row)
            .transpose()
        })
    }

    fn users(&self) -> Result<Vec<User>> {
        self.tx(|tx| {
            tx.query(
                "SELECT name, roles, created_at, created_by FROM users ORDER BY name",
                &[],
            )?
            .iter()
            .map(user_from_row)
            .collect()
        })
    }

    fn create_token(&self, t: &TokenRecord) -> Result<()> {
        self.tx(|tx| {
            tx.execute(
                &format!(
                    "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                ),
                &[
                    &t.id,
                    &t.user,
                    &t.label,
                    &t.secret_hash,
                    &t.created_at,
                    &t.created_by,
                    &t.expires_at,
                    &t.revoked_at,
                    &t.revoked_by,
                ],
            )?;
            Ok(())
        })
    }

    fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        self.tx(|tx| {
            tx.query_opt(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = $1"),
                &[&id],
            )?
            .as_ref()
            .map(token_from_row)
            .transpose()
        })
    }

    fn tokens(&self, user: Option<&str>) -> Result<Vec<TokenRecord>> {
        self.tx(|tx| {
            tx.query(
                &format!(
                    r#"SELECT {TOKEN_COLUMNS} FROM tokens WHERE ($1::TEXT IS NULL OR "user" = $1)
                       ORDER BY created_at, id"#
                ),
                &[&user],
            )?
            .iter()
            .map(token_from_row)
            .collect()
        })
    }

    fn revoke_token(&self, id: &str, by: &str, at: Millis) -> Result<bool> {
        self.tx(|tx| {
            let n = tx.execute(
                "UPDATE tokens SET revoked_at = $2, revoked_by = $3 WHERE id = $1 AND revoked_at IS NULL",
                &[&id, &at, &by],
            )?;
            Ok(n == 1)
        })
    }

    fn approvals(&self, deployment: DeploymentId) -> Result<Vec<Approval>> {
        self.tx(|tx| {
            tx.query(
                r#"SELECT "by", at, approved, comment FROM approvals WHERE deployment = $1 ORDER BY at, "by""#,
                &[&deployment],
            )?
            .iter()
            .map(|r| {
                Ok(Approval {
                    by: r.try_get(0)?,
                    at: r.try_get(1)?,
                    approved: r.try_get(2)?,
                    comment: r.try_get(3)?,
                })
            })
            .collect()
        })
    }

    fn add_late_approval(&self, deployment: DeploymentId, a: &Approval) -> Result<bool> {
        self.tx(|tx| {
            let n = tx.execute(
                r#"INSERT INTO approvals (deployment, "by", approved, comment, at) VALUES ($1, $2, $3, $4, $5)
                   ON CONFLICT (deployment, "by") DO NOTHING"#,
                &[&deployment, &a.by, &a.approved, &a.comment, &a.at],
            )?;
            if n == 1 {
                let message = format!(
                    "{} afterwards by {}{}",
                    if a.approved { "approved" } else { "rejected" },
                    a.by,
                    if a.comment.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", a.comment)
                    }
                );
                tx.execute(
                    "INSERT INTO deployment_log (deployment, at, phase, message) VALUES ($1, $2, 'finished', $3)",
                    &[&deployment, &a.at, &message],
                )?;
            }
            Ok(n == 1)
        })
    }

    fn add_evidence(&self, e: &EvidenceRecord) -> Result<i64> {
        let report = to_json("report", &e.report)?;
        self.tx(|tx| {
            let row = tx.query_one(
                "INSERT INTO evidence (version, kind, digest, file_name, report, added_at, added_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                &[
                    &e.version.to_string(),
                    &e.kind.as_str(),
                    &e.digest.as_hex(),
                    &e.file_name,
                    &report,
                    &e.added_at,
                    &e.added_by,
                ],
            )?;
            Ok(row.try_get(0)?)
        })
    }

    fn evidence(&self, version: &Version) -> Result<Vec<EvidenceRecord>> {
        self.tx(|tx| {
            tx.query(
                "SELECT id, version, kind, digest, file_name, report, added_at, added_by
                 FROM evidence WHERE version = $1 ORDER BY id",
                &[&version.to_string()],
            )?
            .iter()
            .map(|r| {
                let kind: String = r.try_get(2)?;
                let digest: String = r.try_get(3)?;
                let report: String = r.try_get(5)?;
                Ok(EvidenceRecord {
                    id: r.try_get(0)?,
                    version: parse_version(&r.try_get::<_, String>(1)?)?,
                    kind: serde_json::from_value(serde_json::Value::String(kind))
                        .map_err(|e| corrupt("evidence kind", e))?,
                    digest: Digest::try_from(digest).map_err(|e| corrupt("digest", e))?,
                    file_name: r.try_get(4)?,
                    report: serde_json::from_str(&report).map_err(|e| corrupt("report", e))?,
                    added_at: r.try_get(6)?,
                    added_by: r.try_get(7)?,
                })
            })
            .collect()
        })
    }

    fn incidents(&self, env: Option<&str>, open_only: bool, limit: usize) -> Result<Vec<Incident>> {
        self.tx(|tx| {
            tx.query(
                &format!(
                    "SELECT {INCIDENT_COLUMNS} FROM incidents
                     WHERE ($1::TEXT IS NULL OR env = $1) AND (NOT $2 OR closed_at IS NULL)
                     ORDER BY id DESC LIMIT $3"
                ),
                &[&env, &open_only, &i64::try_from(limit).unwrap_or(i64::MAX)],
            )?
            .iter()
            .map(incident_from_row)
            .collect()
        })
    }

    fn incident(&self, id: i64) -> Result<Option<Incident>> {
        self.tx(|tx| {
            tx.query_opt(
                &format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = $1"),
                &[&id],
            )?
            .as_ref()
            .map(incident_from_row)
            .transpose()
        })
    }

    fn close_incident(&self, id: i64, c: &IncidentClosure) -> Result<bool> {
        self.tx(|tx| {
            let n = tx.execute(
                "UPDATE incidents SET closed_at = $2, closed_by = $3, summary = $4, follow_up = $5
                 WHERE id = $1 AND closed_at IS NULL",
                &[&id, &c.at, &c.by, &c.summary, &c.follow_up],
            )?;
            Ok(n == 1)
        })
    }
}
