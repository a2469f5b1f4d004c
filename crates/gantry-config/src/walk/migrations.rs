//! Decoding a release's `gantry-migrations.toml` and an environment's
//! `[environments.X.database]` (the backup and restore that `breaking`
//! migrations need).

use super::{describe, join, Val, Walker};
use crate::DatabaseCommands;
use gantry_core::machine::migrations::{Migration, MigrationKind};
use toml::de::{DeTable, DeValue};

/// At most this many migrations in one release.
pub(crate) const MAX_MIGRATIONS: usize = 256;
/// At most this many words in one command.
const MAX_ARGS: usize = 64;
/// The longest migration id: it names the migration in the store and the log.
const MAX_ID_LEN: usize = 128;

const KINDS: [(&str, MigrationKind); 3] = [
    ("additive", MigrationKind::Additive),
    ("breaking", MigrationKind::Breaking),
    ("data", MigrationKind::Data),
];

/// A command: a non-empty argument vector of bounded length, no NUL.
fn command(w: &mut Walker<'_>, v: &Val<'_>, path: &str, example: &str) -> Option<Vec<String>> {
    let argv = w.exec_list(v, path)?;
    if argv.is_empty() || argv[0].is_empty() {
        w.error(
            v.span(),
            path,
            format!("empty; expected a program and its arguments, e.g. {example}"),
        );
        return None;
    }
    if argv.len() > MAX_ARGS {
        w.error(
            v.span(),
            path,
            format!("{} words; at most {MAX_ARGS}", argv.len()),
        );
        return None;
    }
    Some(argv)
}

/// A timeout from 1s to 6h (`default` when absent).
fn timeout(w: &mut Walker<'_>, t: &DeTable<'_>, path: &str, default: u64) -> Option<u64> {
    let Some(v) = t.get("timeout") else {
        return Some(default);
    };
    let p = join(path, "timeout");
    let ms = w.duration(v, &p)?;
    if !(1_000..=6 * 3_600_000).contains(&ms) {
        w.error(v.span(), &p, "expected a duration from 1s to 6h");
        return None;
    }
    Some(ms)
}

pub(super) fn decode_file(w: &mut Walker<'_>, root: &DeTable<'_>) -> Option<Vec<Migration>> {
    w.check_keys::<crate::schema::MigrationsFile>(root, "");
    let Some(v) = root.get("migration") else {
        return Some(Vec::new());
    };
    let DeValue::Array(items) = v.get_ref() else {
        w.error(
            v.span(),
            "migration",
            format!(
                "expected an array of tables ([[migration]]), found {}",
                describe(v.get_ref())
            ),
        );
        return None;
    };
    if items.len() > MAX_MIGRATIONS {
        w.error(
            v.span(),
            "migration",
            format!("{} migrations; at most {MAX_MIGRATIONS}", items.len()),
        );
        return None;
    }
    let mut out: Vec<Migration> = Vec::new();
    let mut ok = true;
    for (n, item) in items.iter().enumerate() {
        let path = format!("migration[{n}]");
        match decode_migration(w, item, &path) {
            Some(m) if out.iter().any(|o| o.id == m.id) => {
                w.error(
                    item.span(),
                    &join(&path, "id"),
                    format!("{:?} is already a migration's id", m.id),
                );
                ok = false;
            }
            Some(m) => out.push(m),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn decode_migration(w: &mut Walker<'_>, v: &Val<'_>, path: &str) -> Option<Migration> {
    let t = w.table(v, path)?;
    w.check_keys::<crate::schema::MigrationSection>(t, path);
    let id = super::required(w, t, v, path, "id", |w, v, p| {
        let s = w.non_empty_string(v, p)?;
        let fits = s.len() <= MAX_ID_LEN
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !fits {
            w.error(
                v.span(),
                p,
                format!("{s:?}: expected at most {MAX_ID_LEN} letters, digits, '.', '_' or '-', e.g. \"0007_add_orders_index\""),
            );
            return None;
        }
        Some(s)
    });
    let kind = super::required(w, t, v, path, "kind", |w, v, p| {
        let s = w.string(v, p)?;
        match KINDS.iter().find(|(k, _)| *k == s) {
            Some((_, kind)) => Some(*kind),
            None => {
                w.error(
                    v.span(),
                    p,
                    format!(
                        "{s:?} is not a kind of migration; expected additive, breaking or data"
                    ),
                );
                None
            }
        }
    });
    let run = super::required(w, t, v, path, "run", |w, v, p| {
        command(w, v, p, "[\"sh\", \"migrate/0007.sh\"]")
    });
    let reverse = match t.get("reverse") {
        Some(r) => command(
            w,
            r,
            &join(path, "reverse"),
            "[\"sh\", \"migrate/0007-reverse.sh\"]",
        )
        .map(Some),
        None => Some(None),
    };
    let timeout_ms = timeout(w, t, path, 600_000);
    let (id, kind, run, reverse, timeout_ms) = (id?, kind?, run?, reverse?, timeout_ms?);
    match (kind, &reverse) {
        (MigrationKind::Data, None) => {
            w.error(
                v.span(),
                &join(path, "reverse"),
                "missing: a data migration needs its reverse command (it runs on rollback)",
            );
            return None;
        }
        (MigrationKind::Additive | MigrationKind::Breaking, Some(_)) => {
            let r = t.get("reverse")?;
            w.error(
                r.span(),
                &join(path, "reverse"),
                format!(
                    "only a data migration has a reverse command; an {} one is {} on rollback",
                    kind.as_str(),
                    if kind == MigrationKind::Additive {
                        "left in place"
                    } else {
                        "undone by the environment's database restore"
                    }
                ),
            );
            return None;
        }
        _ => {}
    }
    Some(Migration {
        id,
        kind,
        run,
        reverse,
        timeout_ms,
    })
}

/// `[environments.X.database]`: both commands, or none.
pub(super) fn decode_database(
    w: &mut Walker<'_>,
    v: &Val<'_>,
    path: &str,
) -> Option<DatabaseCommands> {
    let t = w.table(v, path)?;
    w.check_keys::<crate::schema::DatabaseSection>(t, path);
    let backup = super::required(w, t, v, path, "backup", |w, v, p| {
        command(
            w,
            v,
            p,
            "[\"/usr/local/bin/db-backup\", \"--to\", \"/var/backups\"]",
        )
    });
    let restore = super::required(w, t, v, path, "restore", |w, v, p| {
        command(
            w,
            v,
            p,
            "[\"/usr/local/bin/db-restore\", \"--from\", \"/var/backups\"]",
        )
    });
    let timeout_ms = timeout(w, t, path, 1_800_000);
    Some(DatabaseCommands {
        backup: backup?,
        restore: restore?,
        timeout_ms: timeout_ms?,
    })
}

/// Decodes a release's migrations file, naming it `file` in diagnostics.
pub(crate) fn decode(file: &str, source: &str) -> (Option<Vec<Migration>>, Vec<crate::Diagnostic>) {
    super::decode_toml(file, source, |w, root| decode_file(w, root.get_ref()))
}
