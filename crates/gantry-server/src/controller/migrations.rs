//! Running a deployment's migration steps: the release's own commands
//! (confined, from its release directory, by the target) and the
//! environment's backup and restore (the operator's commands, from the
//! config, run like hooks: no shell, a cleared environment). The machine
//! decides what comes next (`gantry_core::machine::migrations`).

use super::{ControlError, Controller};
use crate::target::{CommandOutput, ReleaseCommand};
use gantry_config::Environment;
use gantry_core::machine::migrations::{
    Migration, MigrationKind, MigrationOutcome, MigrationStep, PlannedMigration,
};
use gantry_core::Deployment;
use gantry_store::ReleaseRecord;
use std::path::PathBuf;
use std::time::{Duration, Instant};

impl Controller {
    /// The migrations of `release` a deployment into `env` must apply (those
    /// not applied there yet), refused when a `breaking` one has no backup
    /// and restore configured for `env`.
    pub(crate) fn pending_migrations(
        &self,
        env: &Environment,
        release: &ReleaseRecord,
    ) -> Result<Vec<PlannedMigration>, ControlError> {
        if release.migrations.is_empty() {
            return Ok(Vec::new());
        }
        let applied = self.store.applied_migrations(&env.name)?;
        let pending: Vec<&Migration> = release
            .migrations
            .iter()
            .filter(|m| !applied.iter().any(|a| a.id == m.id))
            .collect();
        if env.database.is_none() {
            if let Some(m) = pending.iter().find(|m| m.kind == MigrationKind::Breaking) {
                return Err(ControlError::Invalid(format!(
                    "release {} carries the breaking migration {}, and environments.{}.database (its backup and restore commands) is not set: a breaking migration is only run after a backup it can be restored from",
                    release.version, m.id, env.name
                )));
            }
        }
        Ok(pending
            .into_iter()
            .map(|m| PlannedMigration {
                id: m.id.clone(),
                kind: m.kind,
            })
            .collect())
    }

    /// `GET /migrations`: those applied in `env` and not backed out.
    pub fn applied_migrations(
        &self,
        env: &str,
    ) -> Result<Vec<gantry_store::AppliedMigration>, ControlError> {
        let env = self.env(env)?;
        Ok(self.store.applied_migrations(&env.name)?)
    }

    /// Where a deployment's database backup is kept: `GANTRY_BACKUP_DIR`.
    fn backup_dir(&self, d: &Deployment) -> PathBuf {
        self.data_dir()
            .join("backups")
            .join(d.env.as_str())
            .join(d.id.to_string())
    }

    /// Runs one step and says how it went (never an error: a step that
    /// cannot run has failed, and the machine backs out as it should).
    pub(super) async fn run_migration(
        &self,
        d: &Deployment,
        step: MigrationStep,
    ) -> MigrationOutcome {
        let started = Instant::now();
        let out = match self.migration_step(d, &step).await {
            Ok(out) => out,
            Err(why) => CommandOutput {
                ok: false,
                output: why,
            },
        };
        tracing::info!(deployment = d.id, step = %step.describe(), ok = out.ok, "migration step ran");
        MigrationOutcome {
            step,
            ok: out.ok,
            output: out.output,
            took_ms: started.elapsed().as_millis() as u64,
        }
    }

    async fn migration_step(
        &self,
        d: &Deployment,
        step: &MigrationStep,
    ) -> Result<CommandOutput, String> {
        let env = self.env(d.env.as_str()).map_err(|e| e.to_string())?;
        let mut vars = self.launch_spec(env, d.id, &d.version, 0)?.vars;
        let backups = self.backup_dir(d);
        vars.insert("GANTRY_ENV".to_owned(), d.env.to_string());
        vars.insert("GANTRY_DEPLOYMENT".to_owned(), d.id.to_string());
        vars.insert("GANTRY_RELEASE".to_owned(), d.version.to_string());
        vars.insert(
            "GANTRY_PREVIOUS_RELEASE".to_owned(),
            d.previous_version
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_default(),
        );
        match step {
            MigrationStep::Apply { id } | MigrationStep::Reverse { id } => {
                let release = self.registered(&d.version).map_err(|e| e.to_string())?;
                let m = release
                    .migrations
                    .iter()
                    .find(|m| &m.id == id)
                    .ok_or_else(|| format!("release {} carries no migration {id}", d.version))?;
                let argv = match step {
                    MigrationStep::Reverse { .. } => m
                        .reverse
                        .as_ref()
                        .ok_or_else(|| format!("migration {id} has no reverse command"))?,
                    _ => &m.run,
                };
                vars.insert("GANTRY_MIGRATION".to_owned(), id.clone());
                let artifact = self.local_blob_in_place(&release.digest)?;
                self.target
                    .run_release_command(ReleaseCommand {
                        release: &release,
                        artifact: &artifact,
                        limits: &self.config.artifacts,
                        argv,
                        vars,
                        timeout: Duration::from_millis(m.timeout_ms),
                        name: format!("migrate-{}", d.id),
                    })
                    .await
                    .map_err(|e| e.to_string())
            }
            MigrationStep::Backup | MigrationStep::Restore => {
                let db = env.database.as_ref().ok_or_else(|| {
                    format!(
                        "environments.{}.database is not set (backup and restore)",
                        d.env
                    )
                })?;
                let argv = match step {
                    MigrationStep::Backup => &db.backup,
                    _ => &db.restore,
                };
                std::fs::create_dir_all(&backups)
                    .map_err(|e| format!("cannot make {}: {e}", backups.display()))?;
                vars.insert(
                    "GANTRY_BACKUP_DIR".to_owned(),
                    backups.display().to_string(),
                );
                run_operator_command(argv, &vars, &backups, Duration::from_millis(db.timeout_ms))
                    .await
            }
        }
    }
}

/// The operator's own command (from the config): no shell, a cleared
/// environment (what the config names, `PATH`), from `dir`.
async fn run_operator_command(
    argv: &[String],
    vars: &std::collections::BTreeMap<String, String>,
    dir: &std::path::Path,
    timeout: Duration,
) -> Result<CommandOutput, String> {
    let (program, args) = argv.split_first().ok_or("an empty command")?;
    let child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(vars)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    Ok(crate::target::wait_bounded(child, timeout, program).await)
}
