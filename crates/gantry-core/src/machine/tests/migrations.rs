//! Migrations before the first start, and their backout by kind: what
//! runs, in which order, what a failure or a restart mid-step does, and
//! what the environment's ledger records.

use super::*;
use crate::machine::migrations::{
    ledger_change, MigrationKind, MigrationOutcome, MigrationStep, PlannedMigration,
};

fn planned(list: &[(&str, MigrationKind)]) -> Deployment {
    let mut d = first_deploy();
    d.settings.migrations = list
        .iter()
        .map(|(id, kind)| PlannedMigration {
            id: (*id).into(),
            kind: *kind,
        })
        .collect();
    d
}

fn three() -> Deployment {
    planned(&[
        ("0001_orders", MigrationKind::Additive),
        ("0002_prices", MigrationKind::Data),
        ("0003_drop_legacy", MigrationKind::Breaking),
    ])
}

fn apply(id: &str) -> MigrationStep {
    MigrationStep::Apply { id: id.into() }
}

fn ran(step: MigrationStep, ok: bool) -> Event {
    Event::MigrationRan {
        outcome: MigrationOutcome {
            step,
            ok,
            output: if ok {
                "done".into()
            } else {
                "no such table: legacy".into()
            },
            took_ms: 40,
        },
    }
}

/// The `RunMigration` steps of a transition.
fn asked(t: &Transition) -> Vec<MigrationStep> {
    t.effects
        .iter()
        .filter_map(|e| match e {
            Effect::RunMigration { step } => Some(step.clone()),
            _ => None,
        })
        .collect()
}

fn starts(t: &Transition) -> bool {
    t.effects
        .iter()
        .any(|e| matches!(e, Effect::StartInstances { .. }))
}

/// Steps `d` through `events`, returning every transition.
fn play(d: Deployment, events: &[(Millis, Event)]) -> Vec<Transition> {
    let mut out: Vec<Transition> = Vec::new();
    let mut d = d;
    for (now, e) in events {
        let t = step(&d, e, *now);
        d = t.deployment.clone();
        out.push(t);
    }
    out
}

/// Through the three migrations, all applied.
fn all_applied() -> Vec<(Millis, Event)> {
    vec![
        (0, Event::Created),
        (10, Event::Prepared),
        (20, ran(apply("0001_orders"), true)),
        (30, ran(apply("0002_prices"), true)),
        (40, ran(MigrationStep::Backup, true)),
        (50, ran(apply("0003_drop_legacy"), true)),
    ]
}

#[test]
fn migrations_run_in_order_before_the_first_start_with_the_backup_just_before_the_breaking_one() {
    let ts = play(three(), &all_applied());
    let steps: Vec<Vec<MigrationStep>> = ts.iter().map(asked).collect();
    assert_eq!(
        steps,
        [
            vec![],
            vec![apply("0001_orders")],
            vec![apply("0002_prices")],
            vec![MigrationStep::Backup],
            vec![apply("0003_drop_legacy")],
            vec![],
        ]
    );
    // Nothing starts until the last one is applied; then the start, once.
    assert!(ts[..5].iter().all(|t| !starts(t)), "started early");
    assert!(starts(&ts[5]));
    let last = &ts[5].deployment;
    assert_eq!(last.phase, Phase::Starting);
    assert_eq!(
        last.migrations.applied,
        ["0001_orders", "0002_prices", "0003_drop_legacy"]
    );
    assert_eq!(last.migrations.backup_at, Some(2));
    assert_eq!(
        last.phase_since, 50,
        "the start's deadline counts from the last step"
    );
    // Ticks meanwhile do not move the strategy.
    let t = step(&ts[2].deployment, &Event::Tick, 25);
    assert!(asked(&t).is_empty() && !starts(&t));
}

#[test]
fn a_rollback_restores_the_backup_reverses_data_from_before_it_and_leaves_additive_in_place() {
    let mut events = all_applied();
    // The release fails its health checks once started.
    events.push((
        60,
        Event::StartFailed {
            reason: "exit 1".into(),
        },
    ));
    let ts = play(three(), &events);
    let t = ts.last().unwrap();
    assert_eq!(t.deployment.phase, Phase::RollingBack);
    // Nothing started, nothing routed: the backout comes first... the
    // restore (it undoes 0003), then 0002's reverse (before the backup).
    assert_eq!(asked(t), [MigrationStep::Restore]);
    assert!(
        t.log
            .iter()
            .any(|l| l.contains("additive migration(s) left in place: 0001_orders")),
        "{:?}",
        t.log
    );
    let restore = step(&t.deployment, &ran(MigrationStep::Restore, true), 70);
    assert_eq!(
        asked(&restore),
        [MigrationStep::Reverse {
            id: "0002_prices".into()
        }]
    );
    let change = ledger_change(&restore.deployment, &ran(MigrationStep::Restore, true));
    assert_eq!(
        change.remove,
        ["0003_drop_legacy"],
        "the restore undid what followed the backup"
    );
    let reverse = ran(
        MigrationStep::Reverse {
            id: "0002_prices".into(),
        },
        true,
    );
    let done = step(&restore.deployment, &reverse, 80);
    assert_eq!(done.deployment.phase, Phase::RolledBack);
    assert_eq!(
        ledger_change(&done.deployment, &reverse).remove,
        ["0002_prices"]
    );
    // A stale repeat of an answer changes nothing.
    let again = step(&restore.deployment, &ran(MigrationStep::Backup, true), 81);
    assert_eq!(again.deployment, restore.deployment);
}

#[test]
fn a_failed_migration_backs_out_what_ran_and_never_starts_the_release() {
    let ts = play(
        three(),
        &[
            (0, Event::Created),
            (10, Event::Prepared),
            (20, ran(apply("0001_orders"), true)),
            (30, ran(apply("0002_prices"), true)),
            (40, ran(MigrationStep::Backup, true)),
            (50, ran(apply("0003_drop_legacy"), false)),
        ],
    );
    let t = ts.last().unwrap();
    assert!(ts.iter().all(|t| !starts(t)));
    assert_eq!(t.deployment.phase, Phase::RollingBack);
    assert!(
        t.deployment.reason.as_deref().is_some_and(|r| r
            .contains("migration 0003_drop_legacy failed")
            && r.contains("no such table")),
        "{:?}",
        t.deployment.reason
    );
    // A failed breaking migration may have half applied: the restore runs.
    assert_eq!(asked(t), [MigrationStep::Restore]);
    assert_eq!(
        t.deployment.migrations.failed.as_deref(),
        Some("0003_drop_legacy")
    );
}

#[test]
fn a_first_migration_that_fails_leaves_nothing_to_back_out_and_fails_the_deployment() {
    let ts = play(
        planned(&[
            ("0001_orders", MigrationKind::Additive),
            ("0002_prices", MigrationKind::Data),
        ]),
        &[
            (0, Event::Created),
            (10, Event::Prepared),
            (20, ran(apply("0001_orders"), false)),
        ],
    );
    let t = ts.last().unwrap();
    assert_eq!(t.deployment.phase, Phase::Failed);
    assert!(asked(t).is_empty() && !starts(t));
    assert_eq!(t.deployment.migrations.applied, Vec::<String>::new());
    assert!(
        ledger_change(&t.deployment, &ran(apply("0001_orders"), false))
            .add
            .is_empty()
    );
}

#[test]
fn a_failed_data_migration_is_not_reversed_but_earlier_ones_are() {
    let ts = play(
        planned(&[
            ("0001_a", MigrationKind::Data),
            ("0002_b", MigrationKind::Data),
        ]),
        &[
            (0, Event::Created),
            (10, Event::Prepared),
            (20, ran(apply("0001_a"), true)),
            (30, ran(apply("0002_b"), false)),
        ],
    );
    let t = ts.last().unwrap();
    assert_eq!(t.deployment.phase, Phase::RollingBack);
    assert_eq!(
        asked(t),
        [MigrationStep::Reverse {
            id: "0001_a".into()
        }]
    );
    assert!(t.log.iter().any(|l| l.contains("0002_b is not reversed")));
}

#[test]
fn a_restart_during_a_migration_counts_it_as_failed_and_backs_out() {
    let ts = play(
        three(),
        &[
            (0, Event::Created),
            (10, Event::Prepared),
            (20, ran(apply("0001_orders"), true)),
            (30, ran(apply("0002_prices"), true)),
            (40, ran(MigrationStep::Backup, true)),
        ],
    );
    // 0003 is under way when the controller dies.
    let before = ts.last().unwrap().deployment.clone();
    assert_eq!(before.migrations.running, Some(apply("0003_drop_legacy")));
    let t = step(&before, &Event::Resumed, 1_000);
    assert_eq!(t.deployment.phase, Phase::RollingBack);
    assert!(!starts(&t));
    assert!(
        t.deployment
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("outcome is unknown")),
        "{:?}",
        t.deployment.reason
    );
    assert_eq!(asked(&t), [MigrationStep::Restore]);
    // And a restart during the restore runs the restore again.
    let again = step(&t.deployment, &Event::Resumed, 2_000);
    assert_eq!(asked(&again), [MigrationStep::Restore]);
    // A restart during a backup takes it again.
    let backing_up = play(
        three(),
        &[
            (0, Event::Created),
            (10, Event::Prepared),
            (20, ran(apply("0001_orders"), true)),
            (30, ran(apply("0002_prices"), true)),
        ],
    );
    let d = &backing_up.last().unwrap().deployment;
    assert_eq!(
        asked(&step(d, &Event::Resumed, 50)),
        [MigrationStep::Backup]
    );
}

#[test]
fn an_abort_during_a_migration_waits_for_it_then_backs_it_out() {
    let ts = play(
        planned(&[("0001_a", MigrationKind::Data)]),
        &[
            (0, Event::Created),
            (10, Event::Prepared),
            (20, Event::AbortRequested { by: "bob".into() }),
        ],
    );
    let t = ts.last().unwrap();
    assert_eq!(t.deployment.phase, Phase::RollingBack);
    assert!(
        asked(t).is_empty(),
        "nothing runs beside the migration under way"
    );
    let done = step(&t.deployment, &ran(apply("0001_a"), true), 30);
    assert_eq!(
        asked(&done),
        [MigrationStep::Reverse {
            id: "0001_a".into()
        }]
    );
    assert_eq!(
        ledger_change(&done.deployment, &ran(apply("0001_a"), true))
            .add
            .len(),
        1,
        "applied, then reversed: the ledger hears both"
    );
}

#[test]
fn without_migrations_nothing_changes() {
    let t = play(
        first_deploy(),
        &[(0, Event::Created), (10, Event::Prepared)],
    );
    assert!(starts(t.last().unwrap()));
    assert!(t.iter().all(|t| asked(t).is_empty()));
}
