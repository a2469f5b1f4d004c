//! The [`Store`] trait for PostgreSQL: releases, deployments and their
//! events, environments, and the audit chain's reads and pruning.

use super::audit::{append_audit_tx, audit_record_from_row};
use super::deliveries::insert_deliveries;
use super::*;

const RELEASE_COLUMNS: &str =
    "version, digest, size, artifact_kind, git_sha, signature, signed_by, created_at, created_by, migrations, committed_at";

fn release_from_row(r: &postgres::Row) -> Result<ReleaseRecord> {
    let digest: String = r.try_get(1)?;
    Ok(ReleaseRecord {
        version: parse_version(&r.try_get::<_, String>(0)?)?,
        digest: Digest::try_from(digest).map_err(|e| corrupt("digest", e))?,
        size: r.try_get::<_, i64>(2)? as u64,
        artifact_kind: r.try_get(3)?,
        git_sha: r.try_get(4)?,
        signature: r.try_get(5)?,
        signed_by: r.try_get(6)?,
        created_at: r.try_get(7)?,
        created_by: r.try_get(8)?,
        migrations: match r.try_get::<_, Option<String>>(9)? {
            Some(m) => serde_json::from_str(&m).map_err(|e| corrupt("migrations", e))?,
            None => Vec::new(),
        },
        committed_at: r.try_get(10)?,
    })
}

fn deployment_from_row(r: &postgres::Row) -> Result<Deployment> {
    let state: String = r.try_get(0)?;
    serde_json::from_str(&state).map_err(|e| corrupt("deployment state", e))
}

/// The deployment in progress in `env`, as the busy error names it.
fn holder(tx: &mut Transaction<'_>, env: &EnvName) -> Result<Option<StoreError>> {
    let row = tx.query_opt(
        "SELECT id, version FROM deployments WHERE env = $1 AND active",
        &[&env.as_str()],
    )?;
    row.map(|r| {
        Ok(StoreError::EnvironmentBusy {
            env: env.to_string(),
            holder: r.try_get(0)?,
            version: r.try_get(1)?,
        })
    })
    .transpose()
}

impl Store for PgStore {
    fn insert_release(&self, r: &ReleaseRecord) -> Result<InsertOutcome> {
        self.tx(|tx| {
            // Inserted unless present; two controllers racing both see the
            // row that won and compare with it.
            let n = tx.execute(
                &format!(
                    "INSERT INTO releases ({RELEASE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                     ON CONFLICT (version) DO NOTHING"
                ),
                &[
                    &r.version.to_string(),
                    &r.digest.as_hex(),
                    &(r.size as i64),
                    &r.artifact_kind,
                    &r.git_sha,
                    &r.signature,
                    &r.signed_by,
                    &r.created_at,
                    &r.created_by,
                    &crate::migrations_json(&r.migrations)?,
                    &r.committed_at,
                ],
            )?;
            if n == 1 {
                return Ok(InsertOutcome::Inserted);
            }
            let existing: String = tx
                .query_one(
                    "SELECT digest FROM releases WHERE version = $1",
                    &[&r.version.to_string()],
                )?
                .try_get(0)?;
            Ok(if existing == r.digest.as_hex() {
                InsertOutcome::AlreadyPresent
            } else {
                InsertOutcome::Conflict {
                    existing: Digest::try_from(existing).map_err(|e| corrupt("digest", e))?,
                }
            })
        })
    }

    fn release(&self, version: &Version) -> Result<Option<ReleaseRecord>> {
        self.tx(|tx| {
            tx.query_opt(
                &format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE version = $1"),
                &[&version.to_string()],
            )?
            .as_ref()
            .map(release_from_row)
            .transpose()
        })
    }

    fn releases(&self) -> Result<Vec<ReleaseRecord>> {
        let mut out: Vec<ReleaseRecord> = self.tx(|tx| {
            tx.query(&format!("SELECT {RELEASE_COLUMNS} FROM releases"), &[])?
                .iter()
                .map(release_from_row)
                .collect()
        })?;
        out.sort_by(|a, b| a.version.cmp(&b.version));
        Ok(out)
    }

    /// Takes a number (refusing at once if the environment is busy), builds
    /// the deployment on the caller's thread (`build` need not be `Send`),
    /// then inserts it; the partial unique index refuses a second active
    /// one even when another controller got in between, and the refusal
    /// names the holder. A refused attempt can leave a gap in the numbers.
    fn create_deployment(
        &self,
        env: &EnvName,
        build: &mut dyn FnMut(DeploymentId) -> Deployment,
    ) -> Result<Deployment> {
        let id = self.tx(|tx| {
            if let Some(busy) = holder(tx, env)? {
                return Err(busy);
            }
            Ok(tx
                .query_one("SELECT nextval('deployment_ids')", &[])?
                .try_get::<_, i64>(0)?)
        })?;
        let d = build(id);
        let kind = serde_json::to_value(d.kind)
            .map_err(|e| corrupt("kind", e))?
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let state = to_json("deployment", &d)?;
        self.fenced(|tx, _| {
            let mut sp = tx.savepoint("insert_deployment")?;
            let inserted = sp.execute(
                "INSERT INTO deployments (id, env, version, kind, phase, active, created_at, finished_at, state)
                 VALUES ($1, $2, $3, $4, $5, TRUE, $6, NULL, $7)",
                &[
                    &d.id,
                    &d.env.as_str(),
                    &d.version.to_string(),
                    &kind,
                    &d.phase.as_str(),
                    &d.created_at,
                    &state,
                ],
            );
            match inserted {
                Ok(_) => {
                    sp.commit()?;
                    Ok(())
                }
                Err(e) if is_one_active_violation(&e) => {
                    sp.rollback()?;
                    Err(holder(tx, env)?.unwrap_or_else(|| e.into()))
                }
                Err(e) => Err(e.into()),
            }
        })?;
        Ok(d)
    }

    fn record(&self, event: &Event, t: &Transition, at: Millis, outbox: &[Outgoing]) -> Result<()> {
        let d = &t.deployment;
        let event_json = to_json("event", event)?;
        let state = to_json("deployment", d)?;
        let serving = if d.phase == gantry_core::Phase::Succeeded {
            Some(to_json("instances", &d.serving_after_success())?)
        } else {
            None
        };
        self.fenced(|tx, epoch| {
            tx.execute(
                "INSERT INTO events (deployment, at, event, epoch) VALUES ($1, $2, $3, $4)",
                &[&d.id, &at, &event_json, &epoch],
            )?;
            for line in &t.log {
                tx.execute(
                    "INSERT INTO deployment_log (deployment, at, phase, message, epoch) VALUES ($1, $2, $3, $4, $5)",
                    &[&d.id, &at, &d.phase.as_str(), line, &epoch],
                )?;
            }
            if let Event::Approved { by, comment } | Event::Rejected { by, comment } = event {
                // Kept with the state it led to; a second verdict by the same
                // person was refused before it got here, and is ignored if not.
                tx.execute(
                    r#"INSERT INTO approvals (deployment, "by", approved, comment, at) VALUES ($1, $2, $3, $4, $5)
                       ON CONFLICT (deployment, "by") DO NOTHING"#,
                    &[&d.id, by, &matches!(event, Event::Approved { .. }), comment, &at],
                )?;
            }
            tx.execute(
                "UPDATE deployments SET phase = $2, active = $3, finished_at = $4, state = $5 WHERE id = $1",
                &[
                    &d.id,
                    &d.phase.as_str(),
                    &!d.phase.is_terminal(),
                    &d.finished_at,
                    &state,
                ],
            )?;
            let ledger = gantry_core::machine::migrations::ledger_change(d, event);
            for m in &ledger.add {
                tx.execute(
                    "INSERT INTO applied_migrations (env, id, kind, version, deployment, applied_at)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (env, id) DO NOTHING",
                    &[&d.env.as_str(), &m.id, &m.kind.as_str(), &d.version.to_string(), &d.id, &at],
                )?;
            }
            for id in &ledger.remove {
                tx.execute(
                    "DELETE FROM applied_migrations WHERE env = $1 AND id = $2",
                    &[&d.env.as_str(), id],
                )?;
            }
            if let Some(o) = gantry_core::incidents::opening(d) {
                // A rollback opens its incident once; its end restores service.
                tx.execute(
                    "INSERT INTO incidents (deployment, env, kind, opened_at, release, restored_to, reason)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (deployment) DO NOTHING",
                    &[&o.deployment, &o.env, &o.kind.as_str(), &at, &o.release, &o.restored_to, &o.reason],
                )?;
                if gantry_core::incidents::restored(d) {
                    tx.execute(
                        "UPDATE incidents SET restored_at = $2 WHERE deployment = $1 AND restored_at IS NULL",
                        &[&d.id, &at],
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
                    tx,
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
                insert_deliveries(tx, &out.notice, &out.channels, at)?;
            }
            if let Some(serving) = &serving {
                tx.execute(
                    "INSERT INTO env_state (env, version, instances, deployment, since) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (env) DO UPDATE SET version = $2, instances = $3, deployment = $4, since = $5",
                    &[&d.env.as_str(), &d.version.to_string(), serving, &d.id, &at],
                )?;
            }
            Ok(())
        })
    }

    fn deployment(&self, id: DeploymentId) -> Result<Option<Deployment>> {
        self.tx(|tx| {
            tx.query_opt("SELECT state FROM deployments WHERE id = $1", &[&id])?
                .as_ref()
                .map(deployment_from_row)
                .transpose()
        })
    }

    fn deployments(&self, env: Option<&EnvName>, limit: usize) -> Result<Vec<Deployment>> {
        let env = env.map(|e| e.as_str());
        self.tx(|tx| {
            tx.query(
                "SELECT state FROM deployments WHERE ($1::TEXT IS NULL OR env = $1) ORDER BY id DESC LIMIT $2",
                &[&env, &i64::try_from(limit).unwrap_or(i64::MAX)],
            )?
            .iter()
            .map(deployment_from_row)
            .collect()
        })
    }

    fn active_deployments(&self) -> Result<Vec<Deployment>> {
        self.tx(|tx| {
            tx.query(
                "SELECT state FROM deployments WHERE active ORDER BY id",
                &[],
            )?
            .iter()
            .map(deployment_from_row)
            .collect()
        })
    }

    fn log(&self, id: DeploymentId) -> Result<Vec<LogEntry>> {
        self.tx(|tx| {
            tx.query(
                "SELECT at, phase, message FROM deployment_log WHERE deployment = $1 ORDER BY seq",
                &[&id],
            )?
            .iter()
            .map(|r| {
                Ok(LogEntry {
                    at: r.try_get(0)?,
                    phase: r.try_get(1)?,
                    message: r.try_get(2)?,
                })
            })
            .collect()
        })
    }

    fn events(&self, id: DeploymentId) -> Result<Vec<(Millis, Event)>> {
        self.tx(|tx| {
            tx.query(
                "SELECT at, event FROM events WHERE deployment = $1 ORDER BY seq",
                &[&id],
            )?
            .iter()
            .map(|r| {
                let event: String = r.try_get(1)?;
                Ok((
                    r.try_get(0)?,
                    serde_json::from_str(&event).map_err(|e| corrupt("event", e))?,
                ))
            })
            .collect()
        })
    }

    fn env_state(&self, env: &EnvName) -> Result<Option<EnvState>> {
        Ok(self.env_states()?.into_iter().find(|s| &s.env == env))
    }

    fn env_states(&self) -> Result<Vec<EnvState>> {
        self.tx(|tx| {
            tx.query(
                "SELECT env, version, instances, deployment, since FROM env_state ORDER BY env",
                &[],
            )?
            .iter()
            .map(|r| {
                let env: String = r.try_get(0)?;
                let instances: String = r.try_get(2)?;
                Ok(EnvState {
                    env: env.parse().map_err(|e| corrupt("environment", e))?,
                    version: parse_version(&r.try_get::<_, String>(1)?)?,
                    instances: serde_json::from_str(&instances)
                        .map_err(|e| corrupt("instances", e))?,
                    deployment: r.try_get(3)?,
                    since: r.try_get(4)?,
                })
            })
            .collect()
        })
    }

    fn last_good_other_than(&self, env: &EnvName, current: &Version) -> Result<Option<Version>> {
        self.tx(|tx| {
            tx.query_opt(
                "SELECT version FROM deployments WHERE env = $1 AND phase = 'succeeded' AND version <> $2
                 ORDER BY id DESC LIMIT 1",
                &[&env.as_str(), &current.to_string()],
            )?
            .map(|r| parse_version(&r.try_get::<_, String>(0)?))
            .transpose()
        })
    }

    fn succeeded_versions(&self, env: &EnvName) -> Result<Vec<Version>> {
        self.tx(|tx| {
            tx.query(
                "SELECT DISTINCT version FROM deployments WHERE env = $1 AND phase = 'succeeded'",
                &[&env.as_str()],
            )?
            .iter()
            .map(|r| parse_version(&r.try_get::<_, String>(0)?))
            .collect()
        })
    }

    fn close_deployment(&self, c: &DeploymentClosure) -> Result<bool> {
        let evidence = to_json("evidence", &c.evidence)?;
        self.tx(|tx| {
            let n = tx.execute(
                "INSERT INTO deployment_closures (deployment, status, summary, evidence, closed_by, closed_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (deployment) DO NOTHING",
                &[&c.deployment, &c.status, &c.summary, &evidence, &c.closed_by, &c.closed_at],
            )?;
            Ok(n == 1)
        })
    }

    fn closure(&self, id: DeploymentId) -> Result<Option<DeploymentClosure>> {
        self.tx(|tx| {
            tx.query_opt(
                "SELECT status, summary, evidence, closed_by, closed_at FROM deployment_closures WHERE deployment = $1",
                &[&id],
            )?
            .map(|r| {
                let evidence: String = r.try_get(2)?;
                Ok(DeploymentClosure {
                    deployment: id,
                    status: r.try_get(0)?,
                    summary: r.try_get(1)?,
                    evidence: serde_json::from_str(&evidence)
                        .map_err(|e| corrupt("evidence", e))?,
                    closed_by: r.try_get(3)?,
                    closed_at: r.try_get(4)?,
                })
            })
            .transpose()
        })
    }

    fn applied_migrations(&self, env: &EnvName) -> Result<Vec<AppliedMigration>> {
        self.tx(|tx| {
            tx.query(
                "SELECT id, kind, version, deployment, applied_at FROM applied_migrations
                 WHERE env = $1 ORDER BY applied_at, id",
                &[&env.as_str()],
            )?
            .iter()
            .map(|r| {
                Ok(AppliedMigration {
                    env: env.clone(),
                    id: r.try_get(0)?,
                    kind: crate::migration_kind(&r.try_get::<_, String>(1)?)?,
                    version: parse_version(&r.try_get::<_, String>(2)?)?,
                    deployment: r.try_get(3)?,
                    applied_at: r.try_get(4)?,
                })
            })
            .collect()
        })
    }

    fn append_audit(&self, entry: AuditEntry) -> Result<AuditRecord> {
        self.tx(move |tx| append_audit_tx(tx, entry))
    }

    fn audit_records(&self, after_seq: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        self.tx(|tx| {
            tx.query(
                "SELECT seq, at, actor, action, subject, outcome, detail, prev_hash, hash
                 FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[
                    &i64::try_from(after_seq).unwrap_or(i64::MAX),
                    &i64::try_from(limit).unwrap_or(i64::MAX),
                ],
            )?
            .iter()
            .map(audit_record_from_row)
            .collect()
        })
    }

    fn audit_anchor(&self) -> Result<Option<(u64, String)>> {
        self.tx(|tx| {
            tx.query_opt("SELECT seq, hash FROM audit_anchor WHERE id = 1", &[])?
                .map(|r| Ok((r.try_get::<_, i64>(0)? as u64, r.try_get(1)?)))
                .transpose()
        })
    }

    fn audit_head(&self) -> Result<(u64, String)> {
        self.tx(|tx| {
            let r = tx.query_one("SELECT seq, hash FROM audit_head WHERE id = 1", &[])?;
            Ok((r.try_get::<_, i64>(0)? as u64, r.try_get(1)?))
        })
    }

    fn prune_audit(&self, before: Millis, now: Millis) -> Result<usize> {
        self.fenced(|tx, _| {
            // The head's lock first: no append slips in between choosing
            // the anchor and recording it.
            tx.execute("SELECT 1 FROM audit_head WHERE id = 1 FOR UPDATE", &[])?;
            let last = tx.query_opt(
                "SELECT seq, hash FROM audit WHERE at < $1
                   AND seq < (SELECT MAX(seq) FROM audit) ORDER BY seq DESC LIMIT 1",
                &[&before],
            )?;
            let Some(last) = last else {
                return Ok(0);
            };
            let (seq, hash): (i64, String) = (last.try_get(0)?, last.try_get(1)?);
            let dropping: i64 = tx
                .query_one("SELECT COUNT(*) FROM audit WHERE seq <= $1", &[&seq])?
                .try_get(0)?;
            // First the record that names the new anchor, then the anchor
            // (the triggers hold it to a kept record, moving forward), then
            // the drop (the triggers allow it only up to the anchor).
            append_audit_tx(
                tx,
                gantry_core::audit::prune_entry(
                    (seq as u64, &hash),
                    before,
                    dropping as usize,
                    now,
                ),
            )?;
            tx.execute(
                "INSERT INTO audit_anchor (id, seq, hash) VALUES (1, $1, $2)
                 ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
                &[&seq, &hash],
            )?;
            let removed = tx.execute("DELETE FROM audit WHERE seq <= $1", &[&seq])?;
            tx.execute("DELETE FROM audit_checkpoints WHERE seq <= $1", &[&seq])?;
            Ok(removed as usize)
        })
    }

    fn add_audit_checkpoint(&self, cp: &Checkpoint) -> Result<()> {
        self.fenced(|tx, _| {
            tx.execute(
                "INSERT INTO audit_checkpoints (seq, hash, anchor_seq, anchor_hash, at, public_key, signature)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &(cp.seq as i64),
                    &cp.hash,
                    &(cp.anchor_seq as i64),
                    &cp.anchor_hash,
                    &cp.at,
                    &cp.public_key,
                    &cp.signature,
                ],
            )?;
            Ok(())
        })
    }

    fn latest_audit_checkpoint(&self) -> Result<Option<Checkpoint>> {
        self.tx(|tx| {
            tx.query_opt(
                "SELECT seq, hash, anchor_seq, anchor_hash, at, public_key, signature
                 FROM audit_checkpoints ORDER BY id DESC LIMIT 1",
                &[],
            )?
            .map(|r| {
                Ok(Checkpoint {
                    seq: r.try_get::<_, i64>(0)? as u64,
                    hash: r.try_get(1)?,
                    anchor_seq: r.try_get::<_, i64>(2)? as u64,
                    anchor_hash: r.try_get(3)?,
                    at: r.try_get(4)?,
                    public_key: r.try_get(5)?,
                    signature: r.try_get(6)?,
                })
            })
            .transpose()
        })
    }

    fn prune_deployments(&self, before: Millis) -> Result<usize> {
        self.fenced(|tx, _| {
            let doomed = "SELECT id FROM deployments WHERE NOT active AND finished_at IS NOT NULL
                  AND finished_at < $1 AND id NOT IN (SELECT deployment FROM env_state)";
            for table in [
                "events",
                "deployment_log",
                "approvals",
                "deliveries",
                "deployment_closures",
            ] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE deployment IN ({doomed})"),
                    &[&before],
                )?;
            }
            let removed = tx.execute(
                &format!("DELETE FROM deployments WHERE id IN ({doomed})"),
                &[&before],
            )?;
            Ok(removed as usize)
        })
    }
}
