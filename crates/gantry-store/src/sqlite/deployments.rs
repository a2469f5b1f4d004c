//! The [`Store`] trait for SQLite: releases, deployments and their events,
//! environments, and the audit chain's reads and pruning (one trait, one impl).

use super::*;

/// Reads a row; the outer error is SQLite's, the inner one a bad stored value.
pub(super) fn release_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<ReleaseRecord>> {
    let version: String = r.get(0)?;
    let digest: String = r.get(1)?;
    let (size, artifact_kind, git_sha) = (r.get::<_, i64>(2)?, r.get(3)?, r.get(4)?);
    let (signature, signed_by, created_at, created_by) =
        (r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?);
    let migrations: Option<String> = r.get(9)?;
    let committed_at: Option<i64> = r.get(10)?;
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
            committed_at,
            migrations: match migrations {
                Some(m) => serde_json::from_str(&m).map_err(|e| corrupt("migrations", e))?,
                None => Vec::new(),
            },
        })
    })())
}

pub(super) const RELEASE_COLUMNS: &str =
    "version, digest, size, artifact_kind, git_sha, signature, signed_by, created_at, created_by, migrations, committed_at";

pub(super) fn deployment_from_json(s: &str) -> Result<Deployment> {
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
                    &format!("INSERT INTO releases ({RELEASE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
                    params![
                        r.version.to_string(),
                        r.digest.as_hex(),
                        r.size as i64,
                        r.artifact_kind,
                        r.git_sha,
                        r.signature,
                        r.signed_by,
                        r.created_at,
                        r.created_by,
                        crate::migrations_json(&r.migrations)?,
                        r.committed_at
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
        let ledger = gantry_core::machine::migrations::ledger_change(d, event);
        for m in &ledger.add {
            tx.execute(
                "INSERT OR IGNORE INTO applied_migrations (env, id, kind, version, deployment, applied_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![d.env.as_str(), m.id, m.kind.as_str(), d.version.to_string(), d.id, at],
            )?;
        }
        for id in &ledger.remove {
            tx.execute(
                "DELETE FROM applied_migrations WHERE env = ?1 AND id = ?2",
                params![d.env.as_str(), id],
            )?;
        }
        if let Some(o) = gantry_core::incidents::opening(d) {
            // A rollback opens its incident once; its end restores service.
            tx.execute(
                "INSERT INTO incidents (deployment, env, kind, opened_at, release, restored_to, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(deployment) DO NOTHING",
                params![o.deployment, o.env, o.kind.as_str(), at, o.release, o.restored_to, o.reason],
            )?;
            if gantry_core::incidents::restored(d) {
                tx.execute(
                    "UPDATE incidents SET restored_at = ?2 WHERE deployment = ?1 AND restored_at IS NULL",
                    params![d.id, at],
                )?;
            }
        }
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
                    serde_json::to_string(&d.serving_after_success())
                        .map_err(|e| corrupt("instances", e))?,
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
        let rows = stmt.query_map(
            params![
                env.map(|e| e.as_str()),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |r| r.get::<_, String>(0),
        )?;
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

    fn close_deployment(&self, c: &DeploymentClosure) -> Result<bool> {
        let evidence = serde_json::to_string(&c.evidence).map_err(|e| corrupt("evidence", e))?;
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO deployment_closures (deployment, status, summary, evidence, closed_by, closed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![c.deployment, c.status, c.summary, evidence, c.closed_by, c.closed_at],
        )?;
        Ok(n == 1)
    }

    fn closure(&self, id: DeploymentId) -> Result<Option<DeploymentClosure>> {
        let row = self
            .conn()
            .query_row(
                "SELECT status, summary, evidence, closed_by, closed_at FROM deployment_closures WHERE deployment = ?1",
                [id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                },
            )
            .optional()?;
        row.map(|(status, summary, evidence, closed_by, closed_at)| {
            Ok(DeploymentClosure {
                deployment: id,
                status,
                summary,
                evidence: serde_json::from_str(&evidence).map_err(|e| corrupt("evidence", e))?,
                closed_by,
                closed_at,
            })
        })
        .transpose()
    }

    fn applied_migrations(&self, env: &EnvName) -> Result<Vec<AppliedMigration>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, kind, version, deployment, applied_at FROM applied_migrations
             WHERE env = ?1 ORDER BY applied_at, rowid",
        )?;
        let rows = stmt.query_map([env.as_str()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        rows.map(|r| {
            let (id, kind, version, deployment, applied_at) = r?;
            Ok(AppliedMigration {
                env: env.clone(),
                id,
                kind: crate::migration_kind(&kind)?,
                version: parse_version(&version)?,
                deployment,
                applied_at,
            })
        })
        .collect()
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
        // A sequence number past i64::MAX cannot exist; past it is nothing.
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![after, limit], |r| {
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
        for table in [
            "events",
            "deployment_log",
            "approvals",
            "deliveries",
            "deployment_closures",
        ] {
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
