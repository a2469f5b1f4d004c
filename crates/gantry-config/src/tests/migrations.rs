//! A release's `gantry-migrations.toml`, an environment's database commands, and the
//! logs' retention: every problem at once, each naming its field.

use crate::parse_migrations;
use gantry_core::machine::migrations::MigrationKind;

fn errors(source: &str) -> String {
    match parse_migrations("gantry-migrations.toml", source) {
        Ok(m) => panic!("accepted: {m:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_release_declares_its_migrations_in_order_with_their_kinds() {
    let m = parse_migrations(
        "gantry-migrations.toml",
        r#"
[[migration]]
id = "0001_orders"
kind = "additive"
run = ["sh", "migrate/run.sh", "0001.sql"]

[[migration]]
id = "0002_cents"
kind = "data"
run = ["sh", "migrate/run.sh", "0002.sql"]
reverse = ["sh", "migrate/run.sh", "0002-reverse.sql"]
timeout = "2m"

[[migration]]
id = "0003_rename"
kind = "breaking"
run = ["./migrate/rename"]
"#,
    )
    .unwrap();
    let ids: Vec<(&str, MigrationKind, u64)> = m
        .iter()
        .map(|m| (m.id.as_str(), m.kind, m.timeout_ms))
        .collect();
    assert_eq!(
        ids,
        [
            ("0001_orders", MigrationKind::Additive, 600_000),
            ("0002_cents", MigrationKind::Data, 120_000),
            ("0003_rename", MigrationKind::Breaking, 600_000),
        ]
    );
    assert_eq!(m[1].reverse.as_ref().unwrap()[2], "0002-reverse.sql");
    assert!(
        parse_migrations("f", "").unwrap().is_empty(),
        "an empty file declares none"
    );
}

#[test]
fn every_bad_declaration_is_named_at_its_field() {
    let e = errors(
        r#"
[[migration]]
id = "0001 orders"
kind = "schema"
run = []

[[migration]]
id = "0002"
kind = "data"
run = ["sh", "x.sh"]

[[migration]]
id = "0003"
kind = "additive"
run = ["sh", "y.sh"]
reverse = ["sh", "z.sh"]
timeout = "0s"

[[migration]]
id = "0004"
kind = "breaking"
run = ["sh", "b.sh"]
rn = 1

[[migration]]
id = "0004"
kind = "additive"
run = ["sh", "c.sh"]
"#,
    );
    for needle in [
        "migration[0].id: \"0001 orders\": expected at most 128 letters, digits",
        "migration[0].kind: \"schema\" is not a kind of migration; expected additive, breaking or data",
        "migration[0].run: empty; expected a program and its arguments",
        "migration[1].reverse: missing: a data migration needs its reverse command",
        "migration[2].timeout: expected a duration from 1s to 6h",
        "migration[3].rn: unknown key \"rn\"; did you mean \"run\"?",
        "migration[4].id: \"0004\" is already a migration's id",
    ] {
        assert!(e.contains(needle), "{needle:?} not in:\n{e}");
    }
    let e = errors(
        "[[migration]]\nid = \"a\"\nkind = \"additive\"\nrun = [\"x\"]\nreverse = [\"y\"]\n",
    );
    assert!(
        e.contains("migration[0].reverse: only a data migration has a reverse command; an additive one is left in place on rollback"),
        "{e}"
    );
    assert!(errors("migration = 3").contains("expected an array of tables ([[migration]])"));
    assert!(errors("[[migration]\n").contains("not valid TOML"));
}

#[test]
fn an_environments_database_needs_both_commands() {
    let base = crate::STARTER;
    let e = crate::parse(
        "gantry.toml",
        &format!("{base}\n[environments.production.database]\nbackup = [\"/usr/local/bin/db-backup\"]\ntimeout = \"7h\"\n"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("environments.production.database.restore") && e.contains("missing"),
        "{e}"
    );
    assert!(
        e.contains("environments.production.database.timeout: expected a duration from 1s to 6h"),
        "{e}"
    );
    let ok = crate::parse(
        "gantry.toml",
        &format!("{base}\n[environments.production.database]\nbackup = [\"/b\"]\nrestore = [\"/r\", \"--from\", \"x\"]\n"),
    )
    .unwrap();
    let db = ok
        .config
        .environment("production")
        .unwrap()
        .database
        .clone()
        .unwrap();
    assert_eq!(
        (db.backup.len(), db.restore.len(), db.timeout_ms),
        (1, 3, 1_800_000)
    );
}

#[test]
fn log_retention_is_at_least_a_day_and_a_mebibyte() {
    let base = crate::STARTER;
    let e = crate::parse(
        "gantry.toml",
        &base.replace(
            "[retention]",
            "[retention]\naccess_logs = \"0s\"\ninstance_output_size = \"10KiB\"",
        ),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("retention.access_logs: must be at least one day"),
        "{e}"
    );
    assert!(
        e.contains("retention.instance_output_size: must be at least \"1MiB\""),
        "{e}"
    );
    let ok = crate::parse(
        "gantry.toml",
        &base.replace(
            "[retention]",
            "[retention]\naccess_logs = \"180d\"\naccess_logs_size = \"5GiB\"",
        ),
    )
    .unwrap();
    let r = &ok.config.retention;
    assert_eq!(
        (
            r.access_logs_ms,
            r.access_logs_bytes,
            r.instance_output_ms,
            r.instance_output_bytes
        ),
        (180 * 86_400_000, 5 << 30, 30 * 86_400_000, 64 << 20)
    );
}
