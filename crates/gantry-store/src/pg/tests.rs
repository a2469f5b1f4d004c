//! What only the PostgreSQL store has to show: several connections (as
//! several controllers would hold) writing at once, reconnecting after a
//! restart, and clear refusals of a wrong URL, wrong credentials and a
//! schema newer than this binary.

use super::*;
use crate::suite::{new_deployment, pg_fixture, release};
use crate::test_postgres::{TestPostgres, PASSWORD};
use std::sync::Arc;

fn entry(n: usize, writer: usize) -> AuditEntry {
    AuditEntry {
        at: n as i64,
        actor: format!("controller-{writer}"),
        action: "POST /api/v1/releases".into(),
        subject: format!("release {writer}.{n}.0"),
        outcome: "done 201".into(),
        detail: "{}".into(),
    }
}

#[test]
fn the_audit_chain_stays_whole_when_many_connections_append_at_once() {
    let Some(pg) = pg_fixture("audit_concurrency") else {
        return;
    };
    const WRITERS: usize = 8;
    const EACH: usize = 25;
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let url = pg.url.clone();
            s.spawn(move || {
                // A store (and so connections) of its own, as another controller has.
                let store = PgStore::connect(&DatabaseUrl::new(url)).unwrap();
                for n in 0..EACH {
                    store.append_audit(entry(n, w)).unwrap();
                }
            });
        }
    });
    let records = pg.store.audit_records(0, 10_000).unwrap();
    assert_eq!(
        records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=(WRITERS * EACH) as u64).collect::<Vec<_>>()
    );
    assert_eq!(
        gantry_core::audit::verify(&records, None),
        Ok(WRITERS * EACH)
    );
    assert_eq!(pg.store.audit_head().unwrap().0, (WRITERS * EACH) as u64);
}

#[test]
fn controllers_racing_into_one_environment_get_one_deployment_and_a_busy_naming_it() {
    let Some(pg) = pg_fixture("create_race") else {
        return;
    };
    let env: EnvName = "production".parse().unwrap();
    let results: Vec<Result<Deployment>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|n| {
                let (url, env) = (pg.url.clone(), env.clone());
                s.spawn(move || {
                    let store = PgStore::connect(&DatabaseUrl::new(url)).unwrap();
                    store.create_deployment(&env, &mut |id| {
                        new_deployment(id, "production", &format!("1.{n}.0"))
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let won: Vec<&Deployment> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(won.len(), 1, "{results:?}");
    for r in &results {
        match r {
            Ok(_) => {}
            Err(StoreError::EnvironmentBusy {
                holder, version, ..
            }) => {
                assert_eq!(*holder, won[0].id);
                assert_eq!(*version, won[0].version.to_string());
            }
            Err(e) => panic!("expected busy, got {e}"),
        }
    }
    assert_eq!(pg.store.active_deployments().unwrap().len(), 1);
}

#[test]
fn the_store_reconnects_after_postgresql_restarts() {
    let server = match TestPostgres::start() {
        Ok(s) => s,
        Err(reason) => {
            eprintln!("skipping the restart test: {reason}");
            return;
        }
    };
    let url = server.fresh_database().unwrap();
    let store = PgStore::connect(&DatabaseUrl::new(url)).unwrap();
    store.insert_release(&release("1.0.0", 'a')).unwrap();
    server.restart().unwrap();
    // The pooled connection died with the old server; the next call opens
    // a new one and sees the data.
    assert_eq!(store.releases().unwrap().len(), 1);
    store.insert_release(&release("1.1.0", 'b')).unwrap();
    assert_eq!(store.releases().unwrap().len(), 2);
}

#[test]
fn the_store_can_be_called_from_async_code() {
    let Some(pg) = pg_fixture("from_async") else {
        return;
    };
    let store = Arc::new(pg.store);
    // The `postgres` client panics inside a runtime unless moved off it.
    for flavour in ["current_thread", "multi_thread"] {
        let rt = match flavour {
            "current_thread" => tokio::runtime::Builder::new_current_thread().build(),
            _ => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .build(),
        }
        .unwrap();
        let s = store.clone();
        // In a task on a worker thread, as the controller's handlers run.
        let n = rt
            .block_on(rt.spawn(async move {
                s.insert_release(&release(&format!("3.{}.0", flavour.len()), 'c'))
                    .unwrap();
                s.releases().unwrap().len()
            }))
            .unwrap();
        assert!(n >= 1, "{flavour}");
    }
    assert_eq!(store.releases().unwrap().len(), 2);
}

#[test]
fn epochs_are_shared_by_every_controller_on_the_database() {
    let Some(pg) = pg_fixture("epochs") else {
        return;
    };
    let other = PgStore::connect(&DatabaseUrl::new(pg.url.clone())).unwrap();
    assert_eq!(pg.store.controller_epoch().unwrap(), 0);
    assert_eq!(pg.store.begin_controller_epoch().unwrap(), 1);
    assert_eq!(other.begin_controller_epoch().unwrap(), 2);
    assert_eq!(pg.store.controller_epoch().unwrap(), 2);
}

#[test]
fn a_url_that_is_not_postgresql_is_refused_naming_the_form_expected() {
    let err = PgStore::connect(&DatabaseUrl::new("mysql://root:hunter2@db/x")).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("not a PostgreSQL connection URL"), "{text}");
    assert!(text.contains("mysql://root:***@db/x"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn an_unreachable_server_is_named_without_its_password() {
    // Nothing listens on port 1.
    let err = PgStore::connect(&DatabaseUrl::new(
        "postgres://gantry:hunter2@127.0.0.1:1/gantry?connect_timeout=2",
    ))
    .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Connect { .. }), "{text}");
    assert!(
        text.starts_with(
            "cannot connect to the database at postgres://gantry:***@127.0.0.1:1/gantry"
        ),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn wrong_credentials_are_named_and_the_password_is_not_shown() {
    let Some(pg) = pg_fixture("wrong_password") else {
        return;
    };
    let wrong = "not-the-Password-42";
    let url = pg.url.replace(PASSWORD, wrong);
    let err = PgStore::connect(&DatabaseUrl::new(url)).unwrap_err();
    let text = err.to_string();
    let debug = format!("{err:?}");
    assert!(text.contains("password authentication failed"), "{text}");
    for shown in [&text, &debug] {
        assert!(!shown.contains(wrong), "{shown}");
        assert!(!shown.contains(PASSWORD), "{shown}");
    }
}

#[test]
fn a_database_of_a_newer_schema_is_refused_and_left_alone() {
    let Some(pg) = pg_fixture("newer_schema") else {
        return;
    };
    let newer = migrations::MIGRATIONS.len() + 1;
    pg.store
        .execute_raw(&format!("UPDATE schema_version SET version = {newer}"))
        .unwrap();
    let err = PgStore::connect(&DatabaseUrl::new(pg.url.clone())).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{text}");
    assert!(
        text.contains(&format!(
            "has schema version {newer}, newer than the {} this gantry knows",
            newer - 1
        )),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");
    assert_eq!(pg.store.schema_version().unwrap(), newer as i64);
}

#[test]
fn a_failing_migration_applies_nothing_and_an_older_database_is_brought_up_to_date() {
    let Some(pg) = pg_fixture("failing_migration") else {
        return;
    };
    assert_eq!(
        pg.store.schema_version().unwrap(),
        migrations::MIGRATIONS.len() as i64
    );
    let mut next: Vec<&str> = migrations::MIGRATIONS.to_vec();
    next.push("CREATE TABLE half_done (x INTEGER); SELECT no_such_function();");
    let err = pg.store.migrate(&next).unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "migration {} of {} failed",
            next.len(),
            next.len()
        )),
        "{err}"
    );
    assert!(err.contains("no_such_function"), "{err}");
    assert_eq!(
        pg.store.schema_version().unwrap(),
        migrations::MIGRATIONS.len() as i64
    );
    let gone = pg.store.execute_raw("SELECT * FROM half_done").unwrap_err();
    assert!(gone.to_string().contains("does not exist"), "{gone}");
    // The same step done right: the database is migrated, once.
    next.pop();
    next.push("CREATE TABLE later (x INTEGER);");
    pg.store.migrate(&next).unwrap();
    pg.store.migrate(&next).unwrap();
    assert_eq!(pg.store.schema_version().unwrap(), next.len() as i64);
    pg.store.execute_raw("SELECT * FROM later").unwrap();
}

/// Figures, not a check: `cargo test -p gantry-store --release -- --ignored
/// --nocapture step_latency`. The mean time of one `record` (an event, its
/// state and log line in one transaction) on SQLite (a file, synchronous =
/// FULL) and on the test PostgreSQL (fsync off: it measures round trips and
/// the client, not a disk), called from a plain thread and from inside a
/// tokio runtime (where each call takes a scoped thread).
#[test]
#[ignore]
fn step_latency() {
    let Some(pg) = pg_fixture("step_latency") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(&dir.path().join("gantry.db")).unwrap();
    const N: u32 = 500;
    let time = |name: &str, store: &dyn Store, env: &str| {
        let env_name: EnvName = env.parse().unwrap();
        let d = store
            .create_deployment(&env_name, &mut |id| new_deployment(id, env, "1.0.0"))
            .unwrap();
        let t = Transition {
            deployment: d.clone(),
            effects: vec![],
            log: vec!["step".into()],
        };
        let start = std::time::Instant::now();
        for n in 0..N {
            store
                .record(&Event::InstancesStopped, &t, n as i64, &[])
                .unwrap();
        }
        let per = start.elapsed() / N;
        eprintln!("{name}: {per:?} per record");
        per
    };
    let s = time("sqlite", &sqlite, "staging");
    let p = time("postgres", &pg.store, "staging");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let store = std::sync::Arc::new(pg.store);
    let in_task = store.clone();
    let p_rt = rt
        .block_on(rt.spawn(async move { time("postgres from a runtime", &*in_task, "production") }))
        .unwrap();
    eprintln!(
        "postgres / sqlite: {:.2}; from a runtime / plain: {:.2}",
        p.as_secs_f64() / s.as_secs_f64(),
        p_rt.as_secs_f64() / p.as_secs_f64()
    );
}
