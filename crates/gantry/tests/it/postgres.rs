//! A controller whose state is in PostgreSQL (a throwaway server the test
//! starts): it deploys, rolls back and restarts as on SQLite, writes no
//! SQLite file, and never shows the database password.

use crate::harness::*;
use gantry_store::test_postgres::{TestPostgres, PASSWORD};
use gantry_store::{DatabaseUrl, PgStore, Store};

/// The shared test server, or `None` (reason printed) without PostgreSQL.
pub(crate) fn server(test: &str) -> Option<std::sync::Arc<TestPostgres>> {
    match TestPostgres::shared() {
        Ok(pg) => Some(pg),
        Err(reason) if std::env::var_os("GANTRY_REQUIRE_POSTGRES").is_some() => {
            panic!("{test}: PostgreSQL is required here: {reason}")
        }
        Err(reason) => {
            eprintln!("skipping {test}: {reason}");
            None
        }
    }
}

#[test]
fn a_controller_on_postgresql_deploys_rolls_back_and_keeps_its_state_across_a_restart() {
    let Some(pg) = server("controller on PostgreSQL") else {
        return;
    };
    let url = pg.fresh_database().unwrap();
    let mut g = Gantry::start_full("300ms", "", &[("GANTRY_DATABASE_URL", &url)]);
    g.register("1.0.0", "");
    g.register("1.1.0", "");
    g.gantry(&["deploy", "1.0.0", "--env", "production"]).ok();
    g.gantry(&["deploy", "1.1.0", "--env", "production"]).ok();
    assert_eq!(
        g.get_env("production"),
        (200, "hello from 1.1.0\n".to_owned())
    );
    let run = g.gantry(&["rollback", "--env", "production"]).ok();
    assert!(
        run.stdout.contains("1.0.0 serves production"),
        "{}",
        run.stdout
    );
    assert_eq!(
        g.get_env("production"),
        (200, "hello from 1.0.0\n".to_owned())
    );

    // The state is in the database, not in a SQLite file.
    assert!(!g.data().join("gantry.db").exists());
    let store = PgStore::connect(&DatabaseUrl::new(url.clone())).unwrap();
    let production = "production".parse().unwrap();
    let history = store.deployments(Some(&production), 10).unwrap();
    assert_eq!(
        history
            .iter()
            .map(|d| (d.id, d.version.to_string(), d.phase.as_str()))
            .collect::<Vec<_>>(),
        [
            (3, "1.0.0".to_owned(), "succeeded"),
            (2, "1.1.0".to_owned(), "succeeded"),
            (1, "1.0.0".to_owned(), "succeeded"),
        ]
    );
    assert_eq!(store.env_state(&production).unwrap().unwrap().deployment, 3);
    assert!(store.controller_epoch().unwrap() >= 1);
    g.gantry(&["audit", "verify"]).ok();

    // A restarted controller resumes from the database, once the killed
    // one's lease has run out: it takes the lease under the next epoch.
    g.kill_server();
    g.start_server();
    wait_until(
        "the restarted controller to take the lease",
        std::time::Duration::from_secs(15),
        || store.controller_epoch().unwrap() == 2,
    );
    let status = g.gantry(&["status"]).ok();
    let line = status
        .stdout
        .lines()
        .find(|l| l.starts_with("production"))
        .unwrap_or_default()
        .to_owned();
    assert!(line.contains("1.0.0"), "{}", status.stdout);
    g.gantry(&["deploy", "1.1.0", "--env", "production"]).ok();
    assert_eq!(
        g.get_env("production"),
        (200, "hello from 1.1.0\n".to_owned())
    );
    g.gantry(&["audit", "verify"]).ok();
    let log = g.controller_log();
    assert!(log.contains("state in PostgreSQL"), "{log}");
    assert!(!log.contains(PASSWORD), "the password was logged:\n{log}");
}

#[test]
fn a_controller_given_a_wrong_password_says_so_without_showing_it() {
    let Some(pg) = server("wrong password") else {
        return;
    };
    let url = pg.fresh_database().unwrap();
    let wrong = "Wrong-Password-77";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gantry.toml"),
        lifecycle_config(
            &[("production".into(), free_port())],
            "1s",
            "",
            Lifecycle::Loose,
        ),
    )
    .unwrap();
    let child = std::process::Command::new(GANTRY)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["server", "--listen", "127.0.0.1:0", "--config"])
        .arg(dir.path().join("gantry.toml"))
        .args(["--store", &url.replace(PASSWORD, wrong)])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = output_within(child, std::time::Duration::from_secs(30), &["server"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("cannot connect to the database at postgres://gantry:***@127.0.0.1:"),
        "{text}"
    );
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(!text.contains(wrong), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
}

#[test]
fn the_config_names_the_database_by_reference_and_an_unset_one_is_named() {
    let Some(pg) = server("[store] url") else {
        return;
    };
    let url = pg.fresh_database().unwrap();
    let store_table = "\n[store]\nurl = { env = \"GANTRY_TEST_STORE_URL\" }\n";
    let g = Gantry::start_full("300ms", store_table, &[("GANTRY_TEST_STORE_URL", &url)]);
    g.register("1.0.0", "");
    assert!(!g.data().join("gantry.db").exists());
    let store = PgStore::connect(&DatabaseUrl::new(url)).unwrap();
    assert_eq!(
        store
            .releases()
            .unwrap()
            .iter()
            .map(|r| r.version.to_string())
            .collect::<Vec<_>>(),
        ["1.0.0"]
    );

    // Without the variable the controller refuses to start, naming it.
    let dir = tempfile::tempdir().unwrap();
    let config = lifecycle_config(
        &[("production".into(), free_port())],
        "1s",
        store_table,
        Lifecycle::Loose,
    );
    std::fs::write(dir.path().join("gantry.toml"), config).unwrap();
    let child = std::process::Command::new(GANTRY)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["server", "--listen", "127.0.0.1:0", "--config"])
        .arg(dir.path().join("gantry.toml"))
        .env_remove("GANTRY_TEST_STORE_URL")
        .env_remove("GANTRY_DATABASE_URL")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = output_within(child, std::time::Duration::from_secs(30), &["server"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("store.url: secret store.url: environment variable GANTRY_TEST_STORE_URL is not set on the controller"),
        "{text}"
    );
}

/// `gantry backup` while controllers run: on SQLite an online copy whose
/// audit chain verifies (read back by Debian's sqlite3); on PostgreSQL a
/// pg_dump that pg_restore lists, the password never on a command line or
/// in an error.
#[test]
fn gantry_backup_writes_a_consistent_snapshot_of_either_store_under_traffic() {
    let g = Gantry::start();
    g.register("1.0.0", "");
    g.gantry(&["deploy", "1.0.0", "--env", "production"]).ok();
    let load = Load::start(g.port("production"));
    let to = g.dir.path().join("snapshot.db");
    let out = g
        .gantry(&["backup", "--to", to.to_str().unwrap()])
        .ok()
        .stdout;
    assert!(
        out.contains("backup written:")
            && out.contains("it holds 1 deployment(s); its audit chain verifies over"),
        "{out}"
    );
    let sqlite = std::process::Command::new("sqlite3")
        .arg(&to)
        .arg("SELECT version, phase FROM deployments")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&sqlite.stdout), "1.0.0|succeeded\n");
    g.gantry(&["backup", "--to", to.to_str().unwrap()])
        .fails_with(1, "never overwrites");
    // Without --to: under the data directory's backups/.
    let out = g.gantry(&["backup"]).ok().stdout;
    assert!(
        out.contains(&format!("{}/backups/store-", g.data().display())),
        "{out}"
    );
    let (ok, failed) = load.finish();
    assert_eq!(failed, 0, "{ok} answered");

    let Some(pg) = server("backup of PostgreSQL") else {
        return;
    };
    let url = pg.fresh_database().unwrap();
    let p = Gantry::start_full("300ms", "", &[("GANTRY_DATABASE_URL", &url)]);
    p.register("1.0.0", "");
    let dump = p.dir.path().join("store.pgdump");
    let out = p
        .gantry_env(
            &["backup", "--to", dump.to_str().unwrap()],
            &[("GANTRY_DATABASE_URL", &url)],
        )
        .ok()
        .stdout;
    assert!(out.contains("pg_restore lists"), "{out}");
    assert!(!out.contains(PASSWORD), "{out}");
    let bad = url.replace(PASSWORD, "wrong-password-123");
    let run = p.gantry(&[
        "backup",
        "--store",
        &bad,
        "--to",
        p.dir.path().join("x.pgdump").to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(!run.stderr.contains("wrong-password-123"), "{}", run.stderr);
    assert!(run.stderr.contains("pg_dump of"), "{}", run.stderr);
}

/// Moving over: an installation on SQLite copied with `gantry store copy`
/// into an empty PostgreSQL database, then taken over by a controller on
/// it: the same release serves, the audit chain verifies, and it rolls back
/// to a release it never saw registered.
#[test]
fn an_installation_moves_from_sqlite_to_postgresql_with_gantry_store_copy() {
    let Some(pg) = server("store copy") else {
        return;
    };
    let url = pg.fresh_database().unwrap();
    let mut g = Gantry::start();
    g.register("1.0.0", "");
    g.register("1.1.0", "");
    g.gantry(&["deploy", "1.0.0", "--env", "production"]).ok();
    g.gantry(&["deploy", "1.1.0", "--env", "production"]).ok();
    // The SQLite controller stops; its instances go on serving.
    g.kill_server();
    let out = g
        .gantry_env(
            &["store", "copy", "--to", "env:MOVE_DATABASE_URL"],
            &[("MOVE_DATABASE_URL", &url)],
        )
        .ok()
        .stdout;
    assert!(out.contains("its audit chain verifies over"), "{out}");
    assert!(
        out.contains("artifacts") && out.contains("2 file(s)"),
        "{out}"
    );
    assert!(
        out.contains("deployments") && !out.contains(PASSWORD),
        "{out}"
    );
    g.gantry(&["store", "copy", "--from", "mysql:x", "--to", "postgres://x"])
        .fails_with(1, "expected sqlite:PATH");

    // A controller on PostgreSQL takes the installation over.
    g.server_env
        .push(("GANTRY_DATABASE_URL".to_owned(), url.clone()));
    g.start_server();
    assert_eq!(
        g.get_env("production"),
        (200, "hello from 1.1.0\n".to_owned())
    );
    assert_eq!(g.deployments(Some("production")).len(), 2);
    let verify = g.gantry(&["audit", "verify"]).ok().stdout;
    assert!(
        verify.contains("intact") || verify.contains("verified"),
        "{verify}"
    );
    let run = g.gantry(&["rollback", "--env", "production"]).ok();
    assert!(
        run.stdout.contains("1.0.0 serves production"),
        "{}",
        run.stdout
    );
    assert_eq!(
        g.get_env("production"),
        (200, "hello from 1.0.0\n".to_owned())
    );
    let ids: Vec<i64> = g
        .deployments(Some("production"))
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(
        ids,
        [3, 2, 1],
        "numbering goes on after the copied deployments"
    );
}

/// Artifacts every controller can read: releases registered through one
/// controller on PostgreSQL are deployed, and rolled back to, by another
/// that never saw them (its own, empty data directory), each fetched from
/// the database and verified.
#[test]
fn a_controller_that_never_saw_a_release_deploys_it_and_rolls_back_to_it() {
    let Some(pg) = server("shared artifacts") else {
        return;
    };
    let url = pg.fresh_database().unwrap();
    let first = Gantry::start_full("300ms", "", &[("GANTRY_DATABASE_URL", &url)]);
    first.register("1.0.0", "");
    first.register("1.1.0", "");
    drop(first); // stopped, its data directory gone with it

    let g = Gantry::start_full("300ms", "", &[("GANTRY_DATABASE_URL", &url)]);
    assert!(
        std::fs::read_dir(g.data().join("artifacts/sha256"))
            .unwrap()
            .next()
            .is_none(),
        "this controller starts with no artifact"
    );
    g.gantry(&["deploy", "1.0.0", "--env", "production"]).ok();
    g.gantry(&["deploy", "1.1.0", "--env", "production"]).ok();
    assert_eq!(g.get_env("production").1, "hello from 1.1.0\n");
    let run = g.gantry(&["rollback", "--env", "production"]).ok();
    assert!(
        run.stdout.contains("1.0.0 serves production"),
        "{}",
        run.stdout
    );
    assert_eq!(g.get_env("production").1, "hello from 1.0.0\n");
    let fetched: Vec<String> = std::fs::read_dir(g.data().join("artifacts/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(fetched.len(), 2, "{fetched:?}");
    for digest in &fetched {
        assert!(
            g.releases().iter().any(|r| &r.digest.to_string() == digest),
            "{digest} is a release's"
        );
    }
    // An artifact altered in the database is refused, nothing kept.
    g.register("2.0.0", "");
    let digest = g.release("2.0.0").digest.to_string();
    std::fs::remove_file(g.data().join("artifacts/sha256").join(&digest)).unwrap();
    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    db.execute(
        "UPDATE blob_chunks SET bytes = 'tampered' WHERE digest = $1 AND n = 0",
        &[&digest],
    )
    .unwrap();
    g.gantry(&["deploy", "2.0.0", "--env", "production"])
        .fails_with(3, "failed");
    let reason = g.latest("production").reason.unwrap();
    assert!(reason.contains("refused, nothing kept"), "{reason}");
    assert!(!g.data().join("artifacts/sha256").join(&digest).exists());
    assert_eq!(g.get_env("production").1, "hello from 1.0.0\n");
}

/// API write throughput and a deployment's step latency on PostgreSQL
/// against SQLite, run by hand (`cargo test -p gantry --test it
/// store_figures -- --ignored --nocapture`; docs/benchmarks.md). Writes:
/// 300 `POST /users` one after another (each a row and an audit record).
/// Steps: the time from one recorded event of a blue-green deployment to
/// the next is mostly the target's; the figure is the whole deployment,
/// 10 of them, whose every step is persisted before its effect runs.
#[test]
#[ignore = "a benchmark: run by hand"]
fn store_figures() {
    let Some(pg) = server("store figures") else {
        return;
    };
    let url = pg.fresh_database().unwrap();
    let mut rows = Vec::new();
    for (name, env) in [
        ("sqlite", Vec::new()),
        ("postgresql", vec![("GANTRY_DATABASE_URL", url.as_str())]),
    ] {
        let g = Gantry::start_full("0s", "", &env);
        let client = g.client();
        let started = std::time::Instant::now();
        for n in 0..300 {
            g.call(client.create_user(&gantry_api::NewUser {
                name: format!("user-{n}"),
                roles: vec!["viewer".into()],
            }));
        }
        let writes = 300.0 / started.elapsed().as_secs_f64();
        g.register("1.0.0", "");
        g.register("1.1.0", "");
        let mut deploys = Vec::new();
        for n in 0..10 {
            let v = if n % 2 == 0 { "1.0.0" } else { "1.1.0" };
            let t = std::time::Instant::now();
            g.gantry(&["deploy", v, "--env", "development"]).ok();
            deploys.push(t.elapsed());
        }
        deploys.sort();
        let steps = g.deployments(Some("development"))[0].id;
        let events = g
            .gantry(&["log", &steps.to_string()])
            .ok()
            .stdout
            .lines()
            .count();
        eprintln!(
            "{name}: {writes:.0} API writes/s; a blue-green deployment (~{events} log lines) median {:?}, p90 {:?}",
            deploys[5], deploys[8]
        );
        rows.push((name, writes, deploys[5]));
    }
    eprintln!(
        "postgresql/sqlite: API writes {:.2}x, deployment time {:.2}x",
        rows[1].1 / rows[0].1,
        rows[1].2.as_secs_f64() / rows[0].2.as_secs_f64()
    );
}
