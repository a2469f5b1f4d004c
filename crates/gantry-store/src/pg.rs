//! The PostgreSQL store: the state of one or more controllers in a database
//! they share. Same tables and rules as the SQLite store, in PostgreSQL's
//! dialect: an event and the state it leads to in one transaction, one
//! active deployment per environment held by a partial unique index, the
//! audit chain appended under a row lock on its head.
//!
//! The client is the synchronous `postgres` crate, because [`Store`] is
//! synchronous. It runs a small tokio runtime of its own per connection and
//! so must not be called on a thread that is inside a tokio runtime (it
//! panics there); [`PgStore`] leaves the runtime for such calls
//! (`block_in_place` on a multi-threaded runtime, a scoped thread on a
//! single-threaded one; see [`off_runtime`]). Connections are kept in a small pool and replaced
//! when the server went away (a restart of PostgreSQL costs the calls in
//! flight, not the controller).

use crate::*;
use postgres::error::SqlState;
use postgres::{Client, NoTls, Transaction};
use std::sync::Mutex;

mod audit;
mod blobs;
mod deliveries;
mod deployments;
mod governance;
pub(crate) mod import;
mod lease;
mod migrations;
mod url;
pub use url::DatabaseUrl;

/// How many idle connections are kept for reuse.
const MAX_IDLE: usize = 8;

pub struct PgStore {
    config: postgres::Config,
    /// Where the store lives, for messages: shown with its password hidden.
    url: DatabaseUrl,
    idle: Mutex<Vec<Client>>,
    /// Which leader-only writes go through (`pg/lease.rs`): all until a
    /// controller says it leads or follows.
    fence: Mutex<crate::lease::Fence>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgStore({})", self.url)
    }
}

/// The database's own words for an error: its message with the detail and
/// hint, or the client's (I/O, closed connection) with what caused it.
pub(crate) fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = db.message().to_owned();
        if let Some(detail) = db.detail() {
            s.push_str(&format!(" ({detail})"));
        }
        if let Some(hint) = db.hint() {
            s.push_str(&format!("; hint: {hint}"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(&format!(": {c}"));
        }
        source = cause.source();
    }
    s
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> StoreError {
        StoreError::Database(describe(&e))
    }
}

/// Runs `f` where the `postgres` client may block (its `block_on` panics
/// inside a tokio runtime): on this thread outside a runtime or, on a
/// multi-threaded one, after leaving it with `block_in_place`; else on a
/// scoped thread of its own. The caller waits either way, as for SQLite.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return f();
    };
    if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
        // Leaves the runtime for the call (its other tasks move to other
        // workers): no thread to spawn.
        return tokio::task::block_in_place(f);
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// Runs `job` in `tx` (a helper so the borrow of the transaction ends here).
fn finish<T>(
    tx: &mut Transaction<'_>,
    job: impl FnOnce(&mut Transaction<'_>) -> Result<T>,
) -> Result<T> {
    job(tx)
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn parse_version(s: &str) -> Result<Version> {
    Version::parse(s).map_err(|e| corrupt("version", e))
}

fn to_json(what: &str, v: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(v).map_err(|e| corrupt(what, e))
}

/// The unique index that holds environments to one active deployment.
const ONE_ACTIVE: &str = "deployments_one_active";

fn is_one_active_violation(e: &postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
        && e.as_db_error().and_then(|d| d.constraint()) == Some(ONE_ACTIVE)
}

impl PgStore {
    /// Connects to the database at `url` (a `postgres://` URL or a
    /// `key=value` connection string) and brings its schema up to date.
    /// Refuses a database whose schema is newer than this binary's.
    pub fn connect(url: &DatabaseUrl) -> Result<PgStore> {
        let mut config: postgres::Config =
            url.expose().parse().map_err(|e| StoreError::Connect {
                url: url.to_string(),
                reason: format!(
                    "not a PostgreSQL connection URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE): {}",
                    describe(&e)
                ),
            })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("gantry");
        }
        let store = PgStore {
            config,
            url: url.clone(),
            idle: Mutex::new(Vec::new()),
            fence: Mutex::new(crate::lease::Fence::Open),
        };
        store.migrate(migrations::MIGRATIONS)?;
        Ok(store)
    }

    /// The URL with its password hidden.
    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    fn new_client(&self) -> Result<Client> {
        self.config.connect(NoTls).map_err(|e| StoreError::Connect {
            url: self.url.to_string(),
            reason: describe(&e),
        })
    }

    /// Runs `job` in one transaction on a pooled connection, committing if
    /// it returns `Ok`. A pooled connection that the server closed (it
    /// restarted) fails at `BEGIN`, before anything of `job` ran: it is
    /// replaced by a new one and `BEGIN` tried once more.
    fn tx<T: Send>(&self, job: impl FnOnce(&mut Transaction<'_>) -> Result<T> + Send) -> Result<T> {
        off_runtime(|| {
            let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let mut job = Some(job);
            let mut out = None;
            if let Some(mut client) = pooled.filter(|c| !c.is_closed()) {
                if let Ok(mut tx) = client.transaction() {
                    if let Some(job) = job.take() {
                        out = Some(finish(&mut tx, job).and_then(|v| {
                            tx.commit()?;
                            Ok(v)
                        }));
                    }
                }
                if out.is_some() {
                    self.check_in(client);
                }
            }
            if let Some(out) = out {
                return out;
            }
            let mut client = self.new_client()?;
            let out = match job.take() {
                Some(job) => client
                    .transaction()
                    .map_err(StoreError::from)
                    .and_then(|mut tx| {
                        let v = finish(&mut tx, job)?;
                        tx.commit()?;
                        Ok(v)
                    }),
                None => Err(StoreError::Database("the transaction was not run".into())),
            };
            self.check_in(client);
            out
        })
    }

    /// Keeps `client` for the next call unless it is closed.
    fn check_in(&self, client: Client) {
        if !client.is_closed() {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push(client);
            }
        }
    }

    /// Applies the migrations this database lacks, each in a transaction of
    /// its own that also moves `schema_version`: a failing one leaves the
    /// database as it was before it. An advisory lock makes controllers
    /// that start together migrate one after the other.
    fn migrate(&self, migrations: &[&str]) -> Result<()> {
        let supported = migrations.len() as i64;
        loop {
            let done = self.tx(|tx| {
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&migrations::LOCK_KEY])?;
                tx.batch_execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (
                         id      INTEGER PRIMARY KEY CHECK (id = 1),
                         version BIGINT NOT NULL
                     )",
                )?;
                let found: i64 = tx
                    .query_opt("SELECT version FROM schema_version WHERE id = 1", &[])?
                    .map(|r| r.get(0))
                    .unwrap_or(0);
                if found > supported {
                    return Err(StoreError::SchemaTooNew {
                        url: self.url.to_string(),
                        found,
                        supported,
                    });
                }
                if found == supported {
                    return Ok(true);
                }
                tx.batch_execute(migrations[found as usize]).map_err(|e| {
                    StoreError::Database(format!(
                        "migration {} of {supported} failed, nothing of it applied: {}",
                        found + 1,
                        describe(&e)
                    ))
                })?;
                tx.execute(
                    "INSERT INTO schema_version (id, version) VALUES (1, $1)
                     ON CONFLICT (id) DO UPDATE SET version = excluded.version",
                    &[&(found + 1)],
                )?;
                Ok(false)
            })?;
            if done {
                return Ok(());
            }
        }
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> Result<i64> {
        self.tx(|tx| {
            Ok(tx
                .query_opt("SELECT version FROM schema_version WHERE id = 1", &[])?
                .map(|r| r.get(0))
                .unwrap_or(0))
        })
    }

    /// Raises the controller epoch by one and returns it (see
    /// `SqliteStore::begin_controller_epoch`). Shared by every controller on
    /// the database, so each start gets a number no other got.
    pub fn begin_controller_epoch(&self) -> Result<u64> {
        self.tx(|tx| {
            let epoch: i64 = tx
                .query_one(
                    "INSERT INTO controller_epoch (id, epoch) VALUES (1, 1)
                     ON CONFLICT (id) DO UPDATE SET epoch = controller_epoch.epoch + 1
                     RETURNING epoch",
                    &[],
                )?
                .get(0);
            Ok(epoch as u64)
        })
    }

    /// The newest epoch handed out (0 before any start).
    pub fn controller_epoch(&self) -> Result<u64> {
        self.tx(|tx| {
            Ok(tx
                .query_opt("SELECT epoch FROM controller_epoch WHERE id = 1", &[])?
                .map(|r| r.get::<_, i64>(0) as u64)
                .unwrap_or(0))
        })
    }

    /// Runs SQL as it is, for tests that try to break the rules the schema
    /// holds (the error is the database's message).
    #[cfg(test)]
    pub(crate) fn execute_raw(&self, sql: &str) -> Result<()> {
        self.tx(|tx| Ok(tx.batch_execute(sql)?))
    }
}

#[cfg(test)]
mod tests;
