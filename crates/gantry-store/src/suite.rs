//! The store's test suite, run against both backends: every test is a
//! function over a [`TestStore`], instantiated once on an in-memory SQLite
//! store and once on a fresh database of a throwaway PostgreSQL server
//! (skipped, with the reason printed, where PostgreSQL is not installed;
//! `GANTRY_REQUIRE_POSTGRES=1` makes that a failure instead, for CI).

use crate::*;
use gantry_core::{DeploySettings, DeploymentKind, HealthSettings, Phase};

/// A store under test, with a way to run SQL behind its back (to check that
/// the schema itself refuses what it must).
pub(crate) trait TestStore: Store {
    fn raw(&self, sql: &str) -> std::result::Result<(), String>;
    /// Drops the trigger that keeps audit records from being deleted.
    fn drop_audit_delete_guard(&self);
}

impl TestStore for SqliteStore {
    fn raw(&self, sql: &str) -> std::result::Result<(), String> {
        self.execute_raw(sql).map_err(|e| e.to_string())
    }
    fn drop_audit_delete_guard(&self) {
        self.execute_raw("DROP TRIGGER audit_delete_below_anchor")
            .unwrap();
    }
}

impl TestStore for PgStore {
    fn raw(&self, sql: &str) -> std::result::Result<(), String> {
        self.execute_raw(sql).map_err(|e| e.to_string())
    }
    fn drop_audit_delete_guard(&self) {
        self.execute_raw("DROP TRIGGER audit_delete_below_anchor ON audit")
            .unwrap();
    }
}

/// A PostgreSQL store on a fresh database, with the server kept alive as
/// long as the store; `None` (reason printed) without PostgreSQL.
pub(crate) struct PgFixture {
    pub store: PgStore,
    pub _server: std::sync::Arc<crate::test_postgres::TestPostgres>,
    pub url: String,
}

pub(crate) fn pg_fixture(test: &str) -> Option<PgFixture> {
    match crate::test_postgres::TestPostgres::shared() {
        Ok(server) => {
            let url = server.fresh_database().unwrap();
            let store = PgStore::connect(&DatabaseUrl::new(url.clone())).unwrap();
            Some(PgFixture {
                store,
                _server: server,
                url,
            })
        }
        Err(reason) if std::env::var_os("GANTRY_REQUIRE_POSTGRES").is_some() => {
            panic!("{test}: PostgreSQL is required here: {reason}")
        }
        Err(reason) => {
            eprintln!("skipping {test} on PostgreSQL: {reason}");
            None
        }
    }
}

/// Runs each named test function on both backends.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $( #[test] fn $name() { super::$name(&crate::SqliteStore::in_memory().unwrap()); } )*
        }
        mod on_postgres {
            $( #[test] fn $name() {
                if let Some(pg) = super::pg_fixture(stringify!($name)) {
                    super::$name(&pg.store);
                }
            } )*
        }
    };
}

on_both_backends!(
    releases_are_immutable,
    one_active_deployment_per_environment,
    the_audit_trail_chains_refuses_updates_and_stays_verifiable_after_pruning,
    audit_records_are_never_deleted_nor_their_numbers_reused,
    verdicts_are_kept_with_the_state_they_led_to_once_per_person,
    tokens_are_revoked_once_and_users_are_unique,
    pruning_deployments_keeps_what_runs_and_what_is_recent,
    notices_are_queued_with_the_transition_that_gives_them,
    a_rollback_opens_one_incident_restored_at_its_end_and_closed_once,
    the_ledger_of_applied_migrations_follows_the_recorded_steps,
    a_release_keeps_the_migrations_it_carries,
    a_deployment_is_closed_once_and_its_record_kept,
);

pub(crate) fn release(v: &str, fill: char) -> ReleaseRecord {
    ReleaseRecord {
        version: Version::parse(v).unwrap(),
        digest: Digest::try_from(fill.to_string().repeat(64)).unwrap(),
        size: 10,
        artifact_kind: "tar.gz".into(),
        git_sha: Some("abc1234".into()),
        signature: None,
        signed_by: None,
        created_at: 1,
        created_by: "admin".into(),
        migrations: Vec::new(),
        committed_at: None,
    }
}

pub(crate) fn new_deployment(id: DeploymentId, env: &str, v: &str) -> Deployment {
    Deployment::new(
        gantry_core::NewDeployment {
            id,
            env: env.parse().unwrap(),
            kind: DeploymentKind::Deploy,
            version: Version::parse(v).unwrap(),
            previous_version: None,
            old_instances: vec![],
            settings: DeploySettings {
                instances: 1,
                health: HealthSettings {
                    interval_ms: 1000,
                    startup_interval_ms: 100,
                    failure_threshold: 3,
                    start_timeout_ms: 1000,
                },
                bake_ms: 0,
                strategy: gantry_core::StrategySettings::BlueGreen,
                smoke: None,
                freezes: Vec::new(),
                fleet: None,
                watch: None,
                resources: Default::default(),
                hooks: Vec::new(),
                migrations: Vec::new(),
            },
            requested_by: "admin".into(),
        },
        100,
    )
}

fn releases_are_immutable(store: &dyn TestStore) {
    assert_eq!(
        store.insert_release(&release("1.0.0", 'a')).unwrap(),
        InsertOutcome::Inserted
    );
    assert_eq!(
        store.insert_release(&release("1.0.0", 'a')).unwrap(),
        InsertOutcome::AlreadyPresent
    );
    assert!(matches!(
        store.insert_release(&release("1.0.0", 'b')).unwrap(),
        InsertOutcome::Conflict { .. }
    ));
    assert_eq!(
        store
            .release(&Version::new(1, 0, 0))
            .unwrap()
            .unwrap()
            .digest
            .as_hex(),
        "a".repeat(64)
    );
    store.insert_release(&release("0.9.0", 'c')).unwrap();
    let versions: Vec<String> = store
        .releases()
        .unwrap()
        .iter()
        .map(|r| r.version.to_string())
        .collect();
    assert_eq!(versions, ["0.9.0", "1.0.0"], "sorted by semver");
}

fn one_active_deployment_per_environment(store: &dyn TestStore) {
    let env: EnvName = "staging".parse().unwrap();
    let d = store
        .create_deployment(&env, &mut |id| new_deployment(id, "staging", "1.0.0"))
        .unwrap();
    let err = store
        .create_deployment(&env, &mut |id| new_deployment(id, "staging", "1.1.0"))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "environment staging already has deployment 1 of 1.0.0 in progress"
    );
    // Another environment is free.
    store
        .create_deployment(&"production".parse().unwrap(), &mut |id| {
            new_deployment(id, "production", "1.0.0")
        })
        .unwrap();

    // Finishing frees the environment and records what serves it.
    let mut done = d.clone();
    done.phase = Phase::Succeeded;
    done.finished_at = Some(200);
    let t = Transition {
        deployment: done,
        effects: vec![],
        log: vec!["live".into()],
    };
    store
        .record(&Event::InstancesStopped, &t, 200, &[])
        .unwrap();
    let state = store.env_state(&env).unwrap().unwrap();
    assert_eq!(state.version, Version::new(1, 0, 0));
    assert_eq!(state.deployment, d.id);
    assert_eq!(store.log(d.id).unwrap()[0].message, "live");
    assert_eq!(
        store.events(d.id).unwrap(),
        vec![(200, Event::InstancesStopped)]
    );
    assert!(store
        .create_deployment(&env, &mut |id| new_deployment(id, "staging", "1.1.0"))
        .is_ok());
    assert_eq!(store.active_deployments().unwrap().len(), 2);
    assert_eq!(
        store
            .last_good_other_than(&env, &Version::new(1, 1, 0))
            .unwrap(),
        Some(Version::new(1, 0, 0))
    );
    assert_eq!(
        store
            .last_good_other_than(&env, &Version::new(1, 0, 0))
            .unwrap(),
        None
    );
}

fn audit_entry(at: Millis, action: &str) -> AuditEntry {
    AuditEntry {
        at,
        actor: "alice".into(),
        action: action.into(),
        subject: "release 1.0.0".into(),
        outcome: "done 201".into(),
        detail: "{}".into(),
    }
}

fn the_audit_trail_chains_refuses_updates_and_stays_verifiable_after_pruning(
    store: &dyn TestStore,
) {
    for n in 0..5 {
        store
            .append_audit(audit_entry(1000 * n, "PUT /api/v1/releases/1.0.0"))
            .unwrap();
    }
    let all = store.audit_records(0, 100).unwrap();
    assert_eq!(
        all.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(gantry_core::audit::verify(&all, None), Ok(5));
    // Any position a client may ask from is answered, past the end with nothing.
    assert!(store
        .audit_records(u64::MAX, usize::MAX)
        .unwrap()
        .is_empty());
    assert_eq!(store.audit_records(3, usize::MAX).unwrap().len(), 2);
    // The table refuses edits.
    let err = store
        .raw("UPDATE audit SET actor = 'mallory' WHERE seq = 2")
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    // Pruning what is older than 2.5 s drops 1..3, anchored on 3, after a
    // record that names the anchor.
    assert_eq!(store.prune_audit(2500, 9000).unwrap(), 3);
    let kept = store.audit_records(0, 100).unwrap();
    assert_eq!(kept.iter().map(|r| r.seq).collect::<Vec<_>>(), [4, 5, 6]);
    assert_eq!(kept[2].entry.action, gantry_core::audit::PRUNE_ACTION);
    assert!(kept[2].entry.detail.contains(&all[2].hash));
    let anchor = store.audit_anchor().unwrap().unwrap();
    assert_eq!(anchor, (3, all[2].hash.clone()));
    assert_eq!(
        gantry_core::audit::verify(&kept, Some((anchor.0, &anchor.1))),
        Ok(3)
    );
    // New records continue the chain; pruning everything keeps the newest.
    store
        .append_audit(audit_entry(9000, "POST /api/v1/deployments"))
        .unwrap();
    assert_eq!(store.prune_audit(i64::MAX, 9500).unwrap(), 3);
    let kept = store.audit_records(0, 100).unwrap();
    assert_eq!(kept.iter().map(|r| r.seq).collect::<Vec<_>>(), [7, 8]);
    let anchor = store.audit_anchor().unwrap().unwrap();
    assert_eq!(anchor.0, 6);
    assert_eq!(
        gantry_core::audit::verify(&kept, Some((anchor.0, &anchor.1))),
        Ok(2)
    );
}

fn audit_records_are_never_deleted_nor_their_numbers_reused(store: &dyn TestStore) {
    for n in 0..5 {
        store.append_audit(audit_entry(n, "POST /x")).unwrap();
    }
    for (sql, needle) in [
        ("DELETE FROM audit WHERE seq = 5", "append-only"),
        ("DELETE FROM audit", "append-only"),
        (
            "INSERT INTO audit_anchor (id, seq, hash) VALUES (1, 2, 'forged')",
            "kept record",
        ),
        ("UPDATE audit_head SET seq = 3", "only moves forward"),
        ("DELETE FROM audit_head", "never deleted"),
        (
            "INSERT INTO audit (seq, at, actor, action, subject, outcome, detail, prev_hash, hash)
             VALUES (3, 0, 'm', 'a', 's', 'o', 'd', 'p', 'h')",
            "never reused",
        ),
    ] {
        let err = store.raw(sql).unwrap_err();
        assert!(err.to_string().contains(needle), "{sql}: {err}");
    }
    // Someone who drops the guard removes the newest records: the next record
    // still takes a new number, and the gap shows.
    store.drop_audit_delete_guard();
    store.raw("DELETE FROM audit WHERE seq > 3").unwrap();
    let next = store.append_audit(audit_entry(9, "POST /y")).unwrap();
    assert_eq!(next.seq, 6);
    let kept = store.audit_records(0, 100).unwrap();
    let e = gantry_core::audit::verify(&kept, None).unwrap_err();
    assert!(e.reason.contains("records 4..5 are missing"), "{e}");
}

fn verdicts_are_kept_with_the_state_they_led_to_once_per_person(store: &dyn TestStore) {
    let env: EnvName = "production".parse().unwrap();
    let d = store
        .create_deployment(&env, &mut |id| new_deployment(id, "production", "1.0.0"))
        .unwrap();
    let approved = Event::Approved {
        by: "bob".into(),
        comment: "fine".into(),
    };
    let t = gantry_core::step(&d, &approved, 200);
    store.record(&approved, &t, 200, &[]).unwrap();
    // A second verdict by the same person is ignored, not an error that
    // would stop the deployment being recorded.
    let again = Event::Rejected {
        by: "bob".into(),
        comment: "changed my mind".into(),
    };
    store.record(&again, &t, 300, &[]).unwrap();
    let approvals = store.approvals(d.id).unwrap();
    assert_eq!(approvals.len(), 1);
    assert!(approvals[0].approved);
    let late = Approval {
        by: "carol".into(),
        at: 400,
        approved: true,
        comment: String::new(),
    };
    assert!(store.add_late_approval(d.id, &late).unwrap());
    assert!(!store.add_late_approval(d.id, &late).unwrap());
    assert_eq!(store.approvals(d.id).unwrap().len(), 2);
    assert!(store
        .log(d.id)
        .unwrap()
        .iter()
        .any(|l| l.message == "approved afterwards by carol"));
}

fn tokens_are_revoked_once_and_users_are_unique(store: &dyn TestStore) {
    let user = User {
        name: "alice".into(),
        roles: vec![Role::Deployer, Role::Approver],
        created_at: 1,
        created_by: "admin".into(),
    };
    assert!(store.create_user(&user).unwrap());
    assert!(!store.create_user(&user).unwrap());
    assert_eq!(store.user("alice").unwrap(), Some(user));
    let token = TokenRecord {
        id: "t1".into(),
        user: "alice".into(),
        label: None,
        secret_hash: "h".repeat(64),
        created_at: 1,
        created_by: "admin".into(),
        expires_at: None,
        revoked_at: None,
        revoked_by: None,
    };
    store.create_token(&token).unwrap();
    assert!(store.revoke_token("t1", "admin", 5).unwrap());
    assert!(!store.revoke_token("t1", "admin", 6).unwrap());
    assert_eq!(store.token("t1").unwrap().unwrap().revoked_at, Some(5));
    // A token for a user who does not exist is refused by the schema.
    let orphan = TokenRecord {
        id: "t2".into(),
        user: "nobody".into(),
        ..token
    };
    assert!(store.create_token(&orphan).is_err());
}

fn pruning_deployments_keeps_what_runs_and_what_is_recent(store: &dyn TestStore) {
    let env: EnvName = "production".parse().unwrap();
    let mut ids = Vec::new();
    // Three deployments that succeed one after the other, finishing at 1000, 2000, 3000.
    for (n, at) in [(0, 1000), (1, 2000), (2, 3000)] {
        let d = store
            .create_deployment(&env, &mut |id| {
                new_deployment(id, "production", &format!("1.{n}.0"))
            })
            .unwrap();
        let mut t = gantry_core::step(&d, &Event::Created, at);
        t.deployment.phase = Phase::Succeeded;
        t.deployment.finished_at = Some(at);
        store.record(&Event::Created, &t, at, &[]).unwrap();
        ids.push(d.id);
    }
    let waiting = store
        .create_deployment(&env, &mut |id| new_deployment(id, "production", "2.0.0"))
        .unwrap();
    // Everything finished before 2500 goes, except what production runs (the third).
    assert_eq!(store.prune_deployments(2500).unwrap(), 2);
    assert!(store.deployment(ids[0]).unwrap().is_none());
    assert!(store.log(ids[0]).unwrap().is_empty());
    assert!(store.events(ids[1]).unwrap().is_empty());
    assert!(store.deployment(ids[2]).unwrap().is_some());
    assert!(
        store.deployment(waiting.id).unwrap().is_some(),
        "active ones stay"
    );
    assert_eq!(
        store.prune_deployments(10_000).unwrap(),
        0,
        "the running release stays"
    );
    assert_eq!(store.env_state(&env).unwrap().unwrap().deployment, ids[2]);
}

fn notices_are_queued_with_the_transition_that_gives_them(store: &dyn TestStore) {
    let env: EnvName = "production".parse().unwrap();
    let d = store
        .create_deployment(&env, &mut |id| new_deployment(id, "production", "1.0.0"))
        .unwrap();
    let t = gantry_core::step(&d, &Event::Created, 150);
    let notices = gantry_core::notify::notices(&Event::Created, &d, &t.deployment, 150);
    assert!(!notices.is_empty());
    let outbox: Vec<Outgoing> = notices
        .into_iter()
        .map(|notice| Outgoing {
            notice,
            channels: vec!["team".into(), "pager".into()],
        })
        .collect();
    store.record(&Event::Created, &t, 150, &outbox).unwrap();
    let due = store.due_deliveries(150, 100).unwrap();
    assert_eq!(due.len(), outbox.len() * 2);
    assert!(due.iter().all(|d| d.status == "pending" && d.attempts == 0));
    store
        .update_delivery(due[0].id, "delivered", 1, 150, None, 160)
        .unwrap();
    assert_eq!(store.due_deliveries(200, 100).unwrap().len(), due.len() - 1);
    assert_eq!(store.deliveries(Some(d.id), 100).unwrap().len(), due.len());
}

fn a_rollback_opens_one_incident_restored_at_its_end_and_closed_once(store: &dyn TestStore) {
    use gantry_core::incidents::{IncidentClosure, IncidentKind};
    let env: EnvName = "production".parse().unwrap();
    let d = store
        .create_deployment(&env, &mut |id| new_deployment(id, "production", "1.1.0"))
        .unwrap();
    let mut t = gantry_core::step(&d, &Event::Created, 100);
    store.record(&Event::Created, &t, 100, &[]).unwrap();
    assert!(store.incidents(None, false, 10).unwrap().is_empty());
    // Rolling back, recorded twice (a restart replays the state): one incident.
    let abort = Event::AbortRequested { by: "ann".into() };
    t.deployment.phase = gantry_core::Phase::RollingBack;
    t.deployment.reason = Some("canary analysis at 10%: canary error rate above 1.00%".into());
    store.record(&abort, &t, 200, &[]).unwrap();
    store.record(&Event::Tick, &t, 250, &[]).unwrap();
    let all = store.incidents(Some("production"), false, 10).unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    let i = &all[0];
    assert_eq!(
        (i.deployment, i.kind, i.opened_at),
        (d.id, IncidentKind::Automatic, 200)
    );
    assert_eq!(i.release.as_deref(), Some("1.1.0"));
    assert!(i.reason.starts_with("canary analysis at 10%"));
    assert_eq!(i.restored_at, None);
    // Rolled back: restored, once.
    t.deployment.phase = gantry_core::Phase::RolledBack;
    t.deployment.finished_at = Some(300);
    store
        .record(&Event::InstancesStopped, &t, 300, &[])
        .unwrap();
    store.record(&Event::Tick, &t, 400, &[]).unwrap();
    let i = store.incident(i.id).unwrap().unwrap();
    assert_eq!(i.restored_at, Some(300));
    assert!(store
        .incidents(Some("staging"), false, 10)
        .unwrap()
        .is_empty());
    // Closed once; then no longer open.
    let closure = IncidentClosure {
        by: "ann".into(),
        at: 500,
        summary: "a broken index".into(),
        follow_up: "a test for it".into(),
    };
    assert!(store.close_incident(i.id, &closure).unwrap());
    assert!(!store.close_incident(i.id, &closure).unwrap());
    assert!(!store.close_incident(i.id + 100, &closure).unwrap());
    assert_eq!(store.incident(i.id).unwrap().unwrap().closed, Some(closure));
    assert!(store.incidents(None, true, 10).unwrap().is_empty());
    assert_eq!(store.incidents(None, false, 10).unwrap().len(), 1);
    assert_eq!(store.incident(i.id + 100).unwrap(), None);
}

fn a_release_keeps_the_migrations_it_carries(store: &dyn TestStore) {
    use gantry_core::machine::migrations::{Migration, MigrationKind};
    let mut r = release("2.0.0", 'b');
    r.migrations = vec![Migration {
        id: "0002_cents".into(),
        kind: MigrationKind::Data,
        run: vec!["sh".into(), "up.sh".into()],
        reverse: Some(vec!["sh".into(), "down.sh".into()]),
        timeout_ms: 60_000,
    }];
    r.committed_at = Some(1_770_091_506_000);
    store.insert_release(&r).unwrap();
    assert_eq!(store.release(&r.version).unwrap().unwrap(), r);
    let plain = release("1.0.0", 'a');
    store.insert_release(&plain).unwrap();
    assert!(store
        .release(&plain.version)
        .unwrap()
        .unwrap()
        .migrations
        .is_empty());
}

fn the_ledger_of_applied_migrations_follows_the_recorded_steps(store: &dyn TestStore) {
    use gantry_core::machine::migrations::{
        MigrationKind, MigrationOutcome, MigrationStep, PlannedMigration,
    };
    let env: EnvName = "production".parse().unwrap();
    let d = store
        .create_deployment(&env, &mut |id| {
            let mut d = new_deployment(id, "production", "2.0.0");
            d.settings.migrations = vec![
                PlannedMigration {
                    id: "0001_orders".into(),
                    kind: MigrationKind::Additive,
                },
                PlannedMigration {
                    id: "0002_cents".into(),
                    kind: MigrationKind::Data,
                },
            ];
            d
        })
        .unwrap();
    let ran = |step: MigrationStep, ok: bool| Event::MigrationRan {
        outcome: MigrationOutcome {
            step,
            ok,
            output: String::new(),
            took_ms: 5,
        },
    };
    let apply = |id: &str| MigrationStep::Apply { id: id.into() };
    // Each step recorded as the machine takes it (with a failed one among them).
    let mut d = d;
    for (at, event) in [
        (100, Event::Created),
        (110, Event::Prepared),
        (120, ran(apply("0001_orders"), true)),
        (130, ran(apply("0002_cents"), true)),
    ] {
        let t = gantry_core::step(&d, &event, at);
        store.record(&event, &t, at, &[]).unwrap();
        d = t.deployment;
    }
    let ids = |s: &dyn TestStore| -> Vec<(String, MigrationKind, i64)> {
        s.applied_migrations(&env)
            .unwrap()
            .into_iter()
            .map(|m| (m.id, m.kind, m.applied_at))
            .collect()
    };
    assert_eq!(
        ids(store),
        [
            ("0001_orders".to_owned(), MigrationKind::Additive, 120),
            ("0002_cents".to_owned(), MigrationKind::Data, 130)
        ]
    );
    assert!(store
        .applied_migrations(&"staging".parse().unwrap())
        .unwrap()
        .is_empty());
    // Rolled back: 0002 reversed leaves the ledger, 0001 stays.
    for (at, event) in [
        (140, Event::AbortRequested { by: "ann".into() }),
        (
            150,
            ran(
                MigrationStep::Reverse {
                    id: "0002_cents".into(),
                },
                true,
            ),
        ),
    ] {
        let t = gantry_core::step(&d, &event, at);
        store.record(&event, &t, at, &[]).unwrap();
        d = t.deployment;
    }
    assert_eq!(d.phase, gantry_core::Phase::RolledBack);
    assert_eq!(
        ids(store),
        [("0001_orders".to_owned(), MigrationKind::Additive, 120)]
    );
}

fn a_deployment_is_closed_once_and_its_record_kept(store: &dyn TestStore) {
    let env: EnvName = "production".parse().unwrap();
    let d = store
        .create_deployment(&env, &mut |id| new_deployment(id, "production", "1.0.0"))
        .unwrap();
    assert_eq!(store.closure(d.id).unwrap(), None);
    let closure = crate::DeploymentClosure {
        deployment: d.id,
        status: "succeeded".into(),
        summary: "checked by hand".into(),
        evidence: vec![gantry_api::records::EvidenceFile {
            name: "shot.png".into(),
            digest: Digest::try_from("ab".repeat(32)).unwrap(),
            size: 42,
        }],
        closed_by: "ann".into(),
        closed_at: 500,
    };
    assert!(store.close_deployment(&closure).unwrap());
    let again = crate::DeploymentClosure {
        summary: "another word".into(),
        ..closure.clone()
    };
    assert!(!store.close_deployment(&again).unwrap(), "once only");
    assert_eq!(store.closure(d.id).unwrap(), Some(closure));
}
