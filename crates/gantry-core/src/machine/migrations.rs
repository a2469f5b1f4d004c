//! Database migrations and the standards' backout policy.
//!
//! A release may carry migrations (declared in its artifact, read when it
//! is registered); the deployment is given those not yet applied in its
//! environment. They run one at a time after the release is verified and before any
//! of its instances starts, so a failed migration leaves the old release serving untouched.
//!
//! Each kind is backed out in its own way when the deployment rolls back:
//! - `additive` (a new table, column or index the old release ignores) is
//!   left in place;
//! - `data` (rows rewritten) runs its reverse command;
//! - `breaking` (what the old release cannot run against) needs the
//!   environment's backup command to have run, and succeeded, just before
//!   the first breaking migration; a rollback runs the restore command,
//!   which returns the database to that point (undoing every migration
//!   applied after it).
//!
//! Steps are recorded before they run and their outcomes after. A step
//! found running at a restart has an unknown outcome: an `Apply` counts as
//! failed (and is backed out as a failure is), a backup or a backout step
//! runs again (they must be safe to repeat, as the README says).
//!
//! They run in the `Starting` (or `Rolling`) phase, before the release's
//! first instance starts and after the `before_rollout` hooks passed.

use super::{roll_back, Effect, Event, Phase, Transition};
use crate::domain::Millis;
use serde::{Deserialize, Serialize};

/// The kinds of migration the standards' database rollback policy names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MigrationKind {
    /// Adds what the old release ignores: left in place on rollback.
    Additive,
    /// Changes what the old release needs: a backup before, a restore on rollback.
    Breaking,
    /// Rewrites data: its reverse command runs on rollback.
    Data,
}

impl MigrationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationKind::Additive => "additive",
            MigrationKind::Breaking => "breaking",
            MigrationKind::Data => "data",
        }
    }
}

/// One migration as the release declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Migration {
    /// Unique within the release and across releases: once applied in an
    /// environment, a migration of the same id never runs there again.
    pub id: String,
    pub kind: MigrationKind,
    /// The program and its arguments, run from the release directory.
    pub run: Vec<String>,
    /// `data` only: undoes `run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse: Option<Vec<String>>,
    /// One run's limit.
    pub timeout_ms: u64,
}

/// A migration the deployment will apply, as its settings freeze it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PlannedMigration {
    pub id: String,
    pub kind: MigrationKind,
}

/// One thing to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum MigrationStep {
    /// The environment's backup command, before the first breaking migration.
    Backup,
    /// A migration's own command.
    Apply { id: String },
    /// A `data` migration's reverse command.
    Reverse { id: String },
    /// The environment's restore command: back to the backup.
    Restore,
}

impl MigrationStep {
    pub fn describe(&self) -> String {
        match self {
            MigrationStep::Backup => "the database backup".to_owned(),
            MigrationStep::Apply { id } => format!("migration {id}"),
            MigrationStep::Reverse { id } => format!("the reverse of migration {id}"),
            MigrationStep::Restore => "the database restore".to_owned(),
        }
    }

    fn backs_out(&self) -> bool {
        matches!(self, MigrationStep::Reverse { .. } | MigrationStep::Restore)
    }
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MigrationOutcome {
    pub step: MigrationStep,
    pub ok: bool,
    /// The tail of its output (or why it could not run).
    pub output: String,
    pub took_ms: u64,
}

/// Where the deployment's migrations stand.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MigrationState {
    /// Ids this deployment applied, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applied: Vec<String>,
    /// How many were applied when the backup was taken (`None`: not taken).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_at: Option<usize>,
    /// The step under way (recorded before it runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<MigrationStep>,
    /// The migration that failed (or whose outcome a restart lost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// Backout steps done (whatever their outcome), and what was left.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backed_out: Vec<MigrationStep>,
}

fn planned(t: &Transition) -> &[PlannedMigration] {
    &t.deployment.settings.migrations
}

fn kind_of(t: &Transition, id: &str) -> Option<MigrationKind> {
    planned(t).iter().find(|m| m.id == id).map(|m| m.kind)
}

/// The next step forward, if any: a backup before the first breaking
/// migration, else the next migration not yet applied.
fn next_forward(t: &Transition) -> Option<MigrationStep> {
    let s = &t.deployment.migrations;
    let next = planned(t).iter().find(|m| !s.applied.contains(&m.id))?;
    if next.kind == MigrationKind::Breaking && s.backup_at.is_none() {
        return Some(MigrationStep::Backup);
    }
    Some(MigrationStep::Apply {
        id: next.id.clone(),
    })
}

/// The backout, in order: the restore first if anything was applied (or
/// failed) after the backup, then the reverse of each `data` migration
/// applied before it, latest first. `additive` ones stay.
pub fn backout_plan(planned: &[PlannedMigration], s: &MigrationState) -> Vec<MigrationStep> {
    let kind = |id: &str| planned.iter().find(|m| m.id == id).map(|m| m.kind);
    let mut steps = Vec::new();
    let before_backup = match s.backup_at {
        Some(k) if s.applied.len() > k || s.failed.is_some() => {
            steps.push(MigrationStep::Restore);
            k
        }
        _ => s.applied.len(),
    };
    for id in s.applied[..before_backup.min(s.applied.len())].iter().rev() {
        if kind(id) == Some(MigrationKind::Data) {
            steps.push(MigrationStep::Reverse { id: id.clone() });
        }
    }
    steps
}

/// Whether the deployment still has migrations to back out before it can
/// call itself rolled back; if so, asks for the next step (or waits for
/// the one under way).
pub(super) fn back_out(t: &mut Transition) -> bool {
    let s = &t.deployment.migrations;
    if let Some(step) = &s.running {
        if step.backs_out() {
            // Asked again (a restart lost the answer): it is safe to repeat.
            let step = step.clone();
            t.effects.push(Effect::RunMigration { step });
        }
        // A forward step still running: its outcome comes first.
        return true;
    }
    let pending = backout_plan(planned(t), s)
        .into_iter()
        .find(|step| !s.backed_out.contains(step));
    let Some(step) = pending else {
        return false;
    };
    if s.backed_out.is_empty() {
        // Those a restore does not undo: applied before the backup.
        let kept = s.backup_at.unwrap_or(s.applied.len()).min(s.applied.len());
        let left: Vec<&str> = s.applied[..kept]
            .iter()
            .filter(|id| kind_of(t, id) == Some(MigrationKind::Additive))
            .map(String::as_str)
            .collect();
        if !left.is_empty() {
            t.log.push(format!(
                "additive migration(s) left in place: {}",
                left.join(", ")
            ));
        }
    }
    t.log
        .push(format!("backing out: running {}", step.describe()));
    t.deployment.migrations.running = Some(step.clone());
    t.effects.push(Effect::RunMigration { step });
    true
}

/// Holds back the first start of the new release while migrations are
/// left to run (after the `before_rollout` hooks, which held it first),
/// asking for the next step instead. The start is emitted again from state
/// once the last one is applied: the same path a restart takes.
pub(super) fn intercept(t: &mut Transition, event: &Event, now: Millis) {
    if planned(t).is_empty() || !matches!(t.deployment.phase, Phase::Starting | Phase::Rolling) {
        return;
    }
    let effects = std::mem::take(&mut t.effects);
    for effect in effects {
        let d = &t.deployment;
        let first_start = matches!(effect, Effect::StartInstances { .. })
            && d.new_instances.is_empty()
            && !d.traffic_on_new;
        if !first_start {
            t.effects.push(effect);
            continue;
        }
        match d.migrations.running.clone() {
            Some(MigrationStep::Apply { id }) if matches!(event, Event::Resumed) => {
                t.deployment.migrations.running = None;
                let why = "the controller stopped while it ran, so its outcome is unknown";
                failed(t, &id, why.to_owned(), now);
                return;
            }
            Some(step) if matches!(event, Event::Resumed) => {
                t.effects.push(Effect::RunMigration { step });
            }
            // Under way: the start waits for it.
            Some(_) => {}
            None => match next_forward(t) {
                None => t.effects.push(effect),
                Some(step) => {
                    let s = &t.deployment.migrations;
                    if s.applied.is_empty() && s.backup_at.is_none() {
                        let ids: Vec<String> = planned(t)
                            .iter()
                            .map(|m| format!("{} ({})", m.id, m.kind.as_str()))
                            .collect();
                        t.log.push(format!("migrating first: {}", ids.join(", ")));
                    }
                    t.deployment.migrations.running = Some(step.clone());
                    t.effects.push(Effect::RunMigration { step });
                }
            },
        }
    }
}

/// A migration failed (or its outcome was lost): back out what needs it,
/// or fail at once when nothing does.
fn failed(t: &mut Transition, id: &str, why: String, now: Millis) {
    let reason = format!("migration {id} failed: {why}");
    t.deployment.migrations.failed = Some(id.to_owned());
    if kind_of(t, id) == Some(MigrationKind::Data) {
        t.log.push(format!(
            "migration {id} is not reversed: it failed, and a migration is expected to apply all or nothing (a transaction)"
        ));
    }
    if t.deployment.phase == Phase::RollingBack {
        return;
    }
    if backout_plan(planned(t), &t.deployment.migrations).is_empty() {
        super::fail(t, reason, now);
    } else {
        roll_back(t, reason, now);
    }
}

/// A step's outcome, or a restart during a rollback. `true` when the event
/// was a step's outcome.
pub(super) fn on_event(t: &mut Transition, event: &Event, now: Millis) -> bool {
    let outcome = match event {
        Event::MigrationRan { outcome } => outcome,
        Event::Resumed if t.deployment.phase == Phase::RollingBack => {
            // A forward step lost to the restart: an apply counts as
            // failed, a backup as never taken; the backout goes on.
            match t.deployment.migrations.running.clone() {
                Some(MigrationStep::Apply { id }) => {
                    t.deployment.migrations.running = None;
                    let why = "the controller stopped while it ran, so its outcome is unknown";
                    failed(t, &id, why.to_owned(), now);
                }
                Some(MigrationStep::Backup) => t.deployment.migrations.running = None,
                _ => {}
            }
            return false;
        }
        _ => return false,
    };
    if t.deployment.migrations.running.as_ref() != Some(&outcome.step) {
        // Stale: a step already accounted for.
        return true;
    }
    t.deployment.migrations.running = None;
    let took = crate::time::seconds(outcome.took_ms);
    let said = if outcome.output.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", short(&outcome.output))
    };
    let what = outcome.step.describe();
    match (&outcome.step, outcome.ok) {
        (step, true) if step.backs_out() => {
            t.log.push(format!("{what} done in {took}{said}"));
            t.deployment.migrations.backed_out.push(step.clone());
        }
        (step, false) if step.backs_out() => {
            t.log.push(format!(
                "{what} FAILED after {took}{said}; the database needs a person"
            ));
            t.deployment.migrations.backed_out.push(step.clone());
        }
        (MigrationStep::Backup, true) => {
            t.log.push(format!("database backup taken in {took}{said}"));
            let at = t.deployment.migrations.applied.len();
            t.deployment.migrations.backup_at = Some(at);
        }
        (MigrationStep::Backup, false) => {
            // The breaking migration does not run without its backup.
            let reason = format!("the database backup failed after {took}{said}");
            if t.deployment.phase == Phase::RollingBack {
                t.log.push(reason);
            } else if backout_plan(planned(t), &t.deployment.migrations).is_empty() {
                super::fail(t, reason, now);
                return true;
            } else {
                roll_back(t, reason, now);
                return true;
            }
        }
        (MigrationStep::Apply { id }, true) => {
            t.log
                .push(format!("migration {id} applied in {took}{said}"));
            t.deployment.migrations.applied.push(id.clone());
        }
        (MigrationStep::Apply { id }, false) => {
            let id = id.clone();
            let rolling_back = t.deployment.phase == Phase::RollingBack;
            failed(t, &id, format!("exited after {took}{said}"), now);
            if !rolling_back {
                // It rolled back (and asked for the first backout step) or failed.
                return true;
            }
        }
        _ => {}
    }
    if matches!(t.deployment.phase, Phase::Starting | Phase::Rolling) {
        // The start's deadlines count from now, not from the first step.
        let d = &mut t.deployment;
        d.phase_since = now;
        if let Some(r) = d.rolling.as_mut() {
            r.stage_since = now;
        }
    }
    // The next step, the held start, or the rest of the backout: from
    // state, the path a restart takes.
    super::emit_phase_effects(t, now);
    true
}

/// The first line of `text`, at most 200 characters.
fn short(text: &str) -> String {
    let line = text.trim().lines().last().unwrap_or("").trim();
    line.chars().take(200).collect()
}

/// What a recorded event changes in the environment's ledger of applied
/// migrations: ids added (with their kind) and ids removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerChange {
    pub add: Vec<PlannedMigration>,
    pub remove: Vec<String>,
}

/// The ledger change `event` made, given the deployment it led to.
pub fn ledger_change(after: &super::Deployment, event: &Event) -> LedgerChange {
    let mut change = LedgerChange::default();
    let Event::MigrationRan { outcome } = event else {
        return change;
    };
    let s = &after.migrations;
    if !outcome.ok {
        return change;
    }
    match &outcome.step {
        MigrationStep::Apply { id } if s.applied.last() == Some(id) => {
            if let Some(m) = after.settings.migrations.iter().find(|m| &m.id == id) {
                change.add.push(m.clone());
            }
        }
        step @ MigrationStep::Reverse { id } if s.backed_out.last() == Some(step) => {
            change.remove.push(id.clone())
        }
        step @ MigrationStep::Restore if s.backed_out.last() == Some(step) => {
            let k = s.backup_at.unwrap_or(0).min(s.applied.len());
            change.remove.extend(s.applied[k..].iter().cloned());
            // A failed breaking migration may have half applied: the
            // restore undid it too (it was never in the ledger).
        }
        _ => {}
    }
    change
}
