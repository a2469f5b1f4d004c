use super::*;
use gantry_core::{DeploySettings, DeploymentKind, HealthSettings, Phase};

fn release(v: &str, fill: char) -> ReleaseRecord {
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
    }
}

fn new_deployment(id: DeploymentId, env: &str, v: &str) -> Deployment {
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
            },
            requested_by: "admin".into(),
        },
        100,
    )
}

#[test]
fn releases_are_immutable() {
    let store = SqliteStore::in_memory().unwrap();
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

#[test]
fn one_active_deployment_per_environment() {
    let store = SqliteStore::in_memory().unwrap();
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

#[test]
fn state_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gantry.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        store.insert_release(&release("2.0.0", 'd')).unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        store.releases().unwrap().len(),
        1,
        "migrations are not re-applied, data kept"
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

#[test]
fn the_audit_trail_chains_refuses_updates_and_stays_verifiable_after_pruning() {
    let store = SqliteStore::in_memory().unwrap();
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
    // The table refuses edits.
    let err = store
        .conn()
        .execute("UPDATE audit SET actor = 'mallory' WHERE seq = 2", [])
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

#[test]
fn audit_records_are_never_deleted_nor_their_numbers_reused() {
    let store = SqliteStore::in_memory().unwrap();
    for n in 0..5 {
        store.append_audit(audit_entry(n, "POST /x")).unwrap();
    }
    let conn = store.conn();
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
        let err = conn.execute(sql, []).unwrap_err();
        assert!(err.to_string().contains(needle), "{sql}: {err}");
    }
    // Someone who drops the guard removes the newest records: the next record
    // still takes a new number, and the gap shows.
    conn.execute_batch("DROP TRIGGER audit_delete_below_anchor; DELETE FROM audit WHERE seq > 3;")
        .unwrap();
    drop(conn);
    let next = store.append_audit(audit_entry(9, "POST /y")).unwrap();
    assert_eq!(next.seq, 6);
    let kept = store.audit_records(0, 100).unwrap();
    let e = gantry_core::audit::verify(&kept, None).unwrap_err();
    assert!(e.reason.contains("records 4..5 are missing"), "{e}");
}

#[test]
fn verdicts_are_kept_with_the_state_they_led_to_once_per_person() {
    let store = SqliteStore::in_memory().unwrap();
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

#[test]
fn tokens_are_revoked_once_and_users_are_unique() {
    let store = SqliteStore::in_memory().unwrap();
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

#[test]
fn pruning_deployments_keeps_what_runs_and_what_is_recent() {
    let store = SqliteStore::in_memory().unwrap();
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

#[test]
fn notices_are_queued_with_the_transition_that_gives_them() {
    let store = SqliteStore::in_memory().unwrap();
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

mod upgrade;
