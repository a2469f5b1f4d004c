//! Database migrations against a real SQLite database, driven by Debian's
//! `sqlite3` CLI from the release's own script (confined as its instances
//! are): applied once per environment before the rollout, backed out by
//! kind when the rollout fails (the environment's backup restored for a
//! breaking one, a data one reversed, an additive one left), a failed one
//! leaving the old release serving untouched, and bad declarations refused.

use crate::harness::*;
use gantry_core::Phase;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A database directory every user may write (the release's commands run
/// as `nobody` when the tests run as root), and its file.
struct Database {
    dir: tempfile::TempDir,
}

impl Database {
    fn new() -> Database {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        Database { dir }
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("app.db")
    }

    /// `sql`'s output, by the real sqlite3.
    fn query(&self, sql: &str) -> String {
        let out = Command::new("sqlite3")
            .arg(self.file())
            .arg(sql)
            .output()
            .expect("Debian's sqlite3 (scripts/test installs it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// The test config with the database path given to every command and
/// writable by the release, production's backup and restore by sqlite3.
fn start(db: &Database) -> Gantry {
    let dir = db.dir.path().display().to_string();
    let file = db.file().display().to_string();
    Gantry::start_custom(|ports| {
        let mut config = lifecycle_config(ports, "200ms", "", Lifecycle::Loose).replace(
            "sandbox = { read = [",
            &format!("sandbox = {{ write = [\"{dir}\"], read = ["),
        );
        config = config.replace(
            "[health]",
            &format!("env = {{ APP_DB = \"{file}\" }}\n\n[health]"),
        );
        config.push_str(
            r#"
[environments.production.database]
backup = ["/bin/sh", "-c", "sqlite3 \"$APP_DB\" \".backup '$GANTRY_BACKUP_DIR/app.db'\""]
restore = ["/bin/sh", "-c", "sqlite3 \"$APP_DB\" \".restore '$GANTRY_BACKUP_DIR/app.db'\""]
timeout = "30s"
"#,
        );
        config
    })
}

/// A sample-service release carrying `migrations` (id, kind, SQL, reverse
/// SQL), each run by the release's own script through sqlite3.
fn release(
    g: &Gantry,
    version: &str,
    settings: &str,
    migrations: &[(&str, &str, &str, &str)],
) -> PathBuf {
    let plain = g.artifact(version, settings);
    let path = g.dir.path().join(format!("migrating-{version}.tar"));
    let mut files: Vec<(String, u32, Vec<u8>)> = read_tar(&plain);
    files.push((
        "migrate/run.sh".into(),
        0o755,
        b"#!/bin/sh\nset -e\necho \"applying $1 to $(basename \"$APP_DB\")\"\nsqlite3 -bail \"$APP_DB\" < \"$1\"\n".to_vec(),
    ));
    let mut toml = String::new();
    for (id, kind, sql, reverse) in migrations {
        files.push((format!("migrate/{id}.sql"), 0o644, sql.as_bytes().to_vec()));
        toml.push_str(&format!(
            "[[migration]]\nid = \"{id}\"\nkind = \"{kind}\"\nrun = [\"sh\", \"migrate/run.sh\", \"migrate/{id}.sql\"]\n"
        ));
        if !reverse.is_empty() {
            files.push((
                format!("migrate/{id}-reverse.sql"),
                0o644,
                reverse.as_bytes().to_vec(),
            ));
            toml.push_str(&format!(
                "reverse = [\"sh\", \"migrate/run.sh\", \"migrate/{id}-reverse.sql\"]\n"
            ));
        }
    }
    files.push(("gantry-migrations.toml".into(), 0o644, toml.into_bytes()));
    let borrowed: Vec<(&str, u32, &[u8])> = files
        .iter()
        .map(|(n, m, c)| (n.as_str(), *m, c.as_slice()))
        .collect();
    make_tar(&path, &borrowed);
    path
}

fn read_tar(path: &Path) -> Vec<(String, u32, Vec<u8>)> {
    use std::io::Read;
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let mode = e.header().mode().unwrap();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            (name, mode, bytes)
        })
        .collect()
}

fn register(g: &Gantry, version: &str, artifact: &Path) -> Run {
    g.gantry(&[
        "release",
        "create",
        version,
        "--artifact",
        artifact.to_str().unwrap(),
    ])
}

const ORDERS: (&str, &str, &str, &str) = (
    "0001_orders",
    "additive",
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, price INTEGER NOT NULL);\nINSERT INTO orders (price) VALUES (100), (250);\n",
    "",
);
const CENTS: (&str, &str, &str, &str) = (
    "0002_cents",
    "data",
    "UPDATE orders SET price = price * 100;\n",
    "UPDATE orders SET price = price / 100;\n",
);
const RENAME: (&str, &str, &str, &str) = (
    "0003_rename",
    "breaking",
    "ALTER TABLE orders RENAME COLUMN price TO price_cents;\n",
    "",
);
const TAGS: (&str, &str, &str, &str) = (
    "0004_tags",
    "additive",
    "CREATE TABLE tags (name TEXT);\n",
    "",
);

fn applied(g: &Gantry, env: &str) -> Vec<String> {
    let v = g.api_json(&format!("/migrations?env={env}"));
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn migrations_run_once_before_the_rollout_and_a_rollback_backs_each_out_by_its_kind() {
    let db = Database::new();
    let g = start(&db);
    let v1 = release(&g, "1.0.0", "", &[ORDERS]);
    register(&g, "1.0.0", &v1).ok();
    // The release record names them; the deployment applies them first.
    assert_eq!(g.release("1.0.0").migrations.len(), 1);
    let id = deploy_id(
        &g.gantry(&["deploy", "1.0.0", "--env", "production", "--detach"])
            .ok(),
    );
    let d = g.wait_finished(id);
    assert_eq!(d.phase, Phase::Succeeded, "{:?}", d.reason);
    let log = g.log_of(id);
    assert!(
        log.contains("migrating first: 0001_orders (additive)"),
        "{log}"
    );
    assert!(log.contains("migration 0001_orders applied in"), "{log}");
    assert!(
        log.contains("applying migrate/0001_orders.sql to app.db"),
        "its output: {log}"
    );
    assert_eq!(
        db.query("SELECT price FROM orders ORDER BY id"),
        "100\n250\n"
    );
    assert_eq!(applied(&g, "production"), ["0001_orders"]);

    // 2.0.0 never becomes healthy: everything it migrated is backed out.
    let load = Load::start(g.port("production"));
    let v2 = release(
        &g,
        "2.0.0",
        "\"unhealthy\": true",
        &[ORDERS, CENTS, RENAME, TAGS],
    );
    register(&g, "2.0.0", &v2).ok();
    let plan = g
        .gantry(&["plan", "2.0.0", "--env", "production"])
        .ok()
        .stdout;
    for needle in [
        "- [x] migration 0001_orders (additive) was already applied in production: not run again",
        "- [ ] a database backup by `/bin/sh -c sqlite3",
        "- [ ] migration 0003_rename (breaking) runs before any new instance starts: `sh migrate/run.sh migrate/0003_rename.sql`",
        "- Migration 0004_tags (additive) stays in place",
        "- Migration 0003_rename (breaking) and every migration after the backup: the database is restored by `/bin/sh -c sqlite3",
        "- Migration 0002_cents (data): its reverse `sh migrate/run.sh migrate/0002_cents-reverse.sql` runs",
    ] {
        assert!(plan.contains(needle), "{needle:?} not in:\n{plan}");
    }
    g.gantry(&["deploy", "2.0.0", "--env", "production"])
        .fails_with(3, "rolled_back");
    let d = g.latest("production");
    assert_eq!(d.phase, Phase::RolledBack, "{:?}", d.reason);
    let log = g.log_of(d.id);
    for needle in [
        "migrating first: 0002_cents (data), 0003_rename (breaking), 0004_tags (additive)",
        "migration 0002_cents applied in",
        "database backup taken in",
        "migration 0003_rename applied in",
        "migration 0004_tags applied in",
        "backing out: running the database restore",
        "the database restore done in",
        "the reverse of migration 0002_cents done in",
    ] {
        assert!(log.contains(needle), "{needle:?} not in:\n{log}");
    }
    assert!(
        !log.contains("0001_orders"),
        "already applied: not run again\n{log}"
    );
    // Back where 1.0.0 left it: the rename and the new table restored away,
    // the prices reversed; the additive table of 1.0.0 in place.
    assert_eq!(
        db.query("SELECT price FROM orders ORDER BY id"),
        "100\n250\n"
    );
    assert_eq!(
        db.query("SELECT count(*) FROM sqlite_master WHERE name = 'tags'"),
        "0\n"
    );
    assert_eq!(applied(&g, "production"), ["0001_orders"]);
    assert_eq!(g.get_env("production").1, "hello from 1.0.0\n");

    // A healthy 2.0.1 with the same migrations applies them and keeps them.
    let v201 = release(&g, "2.0.1", "", &[ORDERS, CENTS, RENAME, TAGS]);
    register(&g, "2.0.1", &v201).ok();
    g.gantry(&["deploy", "2.0.1", "--env", "production"]).ok();
    assert_eq!(
        db.query("SELECT price_cents FROM orders ORDER BY id"),
        "10000\n25000\n"
    );
    assert_eq!(
        applied(&g, "production"),
        ["0001_orders", "0002_cents", "0003_rename", "0004_tags"]
    );
    // Once per environment: a release carrying them again runs none.
    let v202 = release(&g, "2.0.2", "", &[ORDERS, CENTS, RENAME, TAGS]);
    register(&g, "2.0.2", &v202).ok();
    g.gantry(&["deploy", "2.0.2", "--env", "production"]).ok();
    let log = g.log_of(g.latest("production").id);
    assert!(!log.contains("migrat"), "{log}");
    assert_eq!(
        db.query("SELECT price_cents FROM orders ORDER BY id"),
        "10000\n25000\n"
    );
    let (ok, failed) = load.finish();
    assert_eq!(failed, 0, "{ok} answered");
}

#[test]
fn a_failed_migration_leaves_the_old_release_serving_and_bad_declarations_are_refused() {
    let db = Database::new();
    let g = start(&db);
    let v1 = release(&g, "1.0.0", "", &[ORDERS]);
    register(&g, "1.0.0", &v1).ok();
    g.gantry(&["deploy", "1.0.0", "--env", "production"]).ok();
    let before = g.instance_processes();
    let load = Load::start(g.port("production"));
    wait_until("traffic", Duration::from_secs(10), || {
        load.ok.load(std::sync::atomic::Ordering::Relaxed) > 100
    });

    // Its SQL names a table that does not exist: sqlite3 fails, nothing
    // was applied, nothing started, the deployment fails.
    let bad = (
        "0002_bad",
        "data",
        "UPDATE invoices SET total = 0;\n",
        "SELECT 1;\n",
    );
    let v2 = release(&g, "2.0.0", "", &[ORDERS, bad]);
    register(&g, "2.0.0", &v2).ok();
    g.gantry(&["deploy", "2.0.0", "--env", "production"])
        .fails_with(3, "failed");
    let d = g.latest("production");
    assert_eq!(d.phase, Phase::Failed);
    let reason = d.reason.unwrap();
    assert!(
        reason.starts_with("migration 0002_bad failed")
            && reason.contains("no such table: invoices"),
        "{reason}"
    );
    assert_eq!(
        g.instance_processes(),
        before,
        "the old instances, untouched"
    );
    assert_eq!(g.get_env("production").1, "hello from 1.0.0\n");
    assert_eq!(applied(&g, "production"), ["0001_orders"]);
    let (ok, failed) = load.finish();
    assert_eq!(failed, 0, "{ok} answered");

    // A data migration without its reverse: refused at registration,
    // naming the file and the field; nothing is stored.
    let no_reverse = release(&g, "3.0.0", "", &[("0003_x", "data", "SELECT 1;\n", "")]);
    let run = register(&g, "3.0.0", &no_reverse).fails_with(1, "gantry-migrations.toml");
    assert!(
        run.stderr
            .contains("migration[0].reverse: missing: a data migration needs its reverse command"),
        "{}",
        run.stderr
    );
    assert!(g
        .releases()
        .iter()
        .all(|r| r.version.to_string() != "3.0.0"));

    // A breaking migration where no backup and restore are configured:
    // the deployment is refused, naming the setting.
    let breaking = release(&g, "3.0.1", "", &[ORDERS, RENAME]);
    register(&g, "3.0.1", &breaking).ok();
    let run = g
        .gantry(&["deploy", "3.0.1", "--env", "staging"])
        .fails_with(1, "environments.staging.database");
    assert!(
        run.stderr.contains("breaking migration 0003_rename"),
        "{}",
        run.stderr
    );
    assert!(
        g.deployments(Some("staging")).is_empty(),
        "nothing half-applied"
    );
    // And `validate` says so before any deployment is tried.
    let run = g
        .gantry(&[
            "validate",
            "--config",
            g.config_path().to_str().unwrap(),
            "--release",
            breaking.to_str().unwrap(),
        ])
        .fails_with(4, "environments.staging.database: not set");
    assert!(
        !run.stderr.contains("environments.production.database"),
        "{}",
        run.stderr
    );
}
