//! Durable state.
//!
//! [`Store`] is the seam: the controller talks only to `dyn Store`, so a
//! PostgreSQL store ([`PgStore`]) can stand in for the SQLite one. It is
//! synchronous on purpose: every call is a short transaction, and the
//! runtime persists an event and the state it leads to in one call before
//! it carries out any effect.
//!
//! [`Blobs`] keeps release artifacts content-addressed by SHA-256, written
//! once and made read-only.

pub mod backup;
mod blobs;
mod lease;
mod pg;
mod sqlite;
#[cfg(test)]
mod suite;
#[cfg(any(test, feature = "test-postgres"))]
pub mod test_postgres;

pub use blobs::{hash_bytes, hash_reader, BlobError, Blobs, Incoming, Staged};
pub use gantry_api::records::{
    AppliedMigration, Delivery, DeploymentClosure, EnvState, EvidenceRecord, LogEntry,
    ReleaseRecord, TokenRecord, User,
};
pub use gantry_core::audit::{AuditEntry, AuditRecord, Checkpoint};
pub use gantry_core::evidence::{EvidenceKind, Report};
pub use gantry_core::governance::{Approval, Role};
pub use lease::{
    Acquired, Candidate, ClusterSnapshot, ControllerRecord, Fence, LeaseRecord, LeaseStore,
};
pub use pg::import::{copy_sqlite_to_postgres, CopySummary};
pub use pg::{DatabaseUrl, PgStore};
pub use sqlite::SqliteStore;

use gantry_core::{Deployment, DeploymentId, Digest, EnvName, Event, Millis, Transition, Version};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("environment {env} already has deployment {holder} of {version} in progress")]
    EnvironmentBusy {
        env: String,
        holder: DeploymentId,
        version: String,
    },
    /// A statement failed; the text is the database's own message (never a
    /// connection string).
    #[error("database error: {0}")]
    Database(String),
    /// The database could not be reached or refused us; `url` has its
    /// password replaced.
    #[error("cannot connect to the database at {url}: {reason}")]
    Connect { url: String, reason: String },
    /// The database was migrated by a newer gantry than this one.
    #[error("the database at {url} has schema version {found}, newer than the {supported} this gantry knows: upgrade gantry (or restore a backup taken before the upgrade)")]
    SchemaTooNew {
        url: String,
        found: i64,
        supported: i64,
    },
    #[error("stored record is unreadable: {0}")]
    Corrupt(String),
    /// A leader-only write refused because this controller does not lead
    /// under the epoch it wrote with (it follows, or another controller
    /// took the lease). Nothing of the write was applied.
    #[error("fenced: {0}")]
    Fenced(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Database(e.to_string())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

use gantry_core::incidents::{Incident, IncidentClosure};

/// What inserting a release did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    Inserted,
    /// The same version with the same content already exists: nothing changed.
    AlreadyPresent,
    /// The version exists with different content: refused.
    Conflict {
        existing: Digest,
    },
}

/// Users, tokens, approvals and evidence.
pub trait GovernanceStore: Send + Sync {
    /// False if the name is taken.
    fn create_user(&self, user: &User) -> Result<bool>;
    fn user(&self, name: &str) -> Result<Option<User>>;
    fn users(&self) -> Result<Vec<User>>;
    fn create_token(&self, token: &TokenRecord) -> Result<()>;
    fn token(&self, id: &str) -> Result<Option<TokenRecord>>;
    fn tokens(&self, user: Option<&str>) -> Result<Vec<TokenRecord>>;
    /// False if there is no such token or it was already revoked.
    fn revoke_token(&self, id: &str, by: &str, at: Millis) -> Result<bool>;
    /// Every verdict on a deployment, oldest first.
    fn approvals(&self, deployment: DeploymentId) -> Result<Vec<Approval>>;
    /// A verdict on a finished deployment (an emergency change approved
    /// afterwards). Verdicts on a running one go through [`Store::record`].
    /// False if that person already gave one.
    fn add_late_approval(&self, deployment: DeploymentId, approval: &Approval) -> Result<bool>;
    fn add_evidence(&self, evidence: &EvidenceRecord) -> Result<i64>;
    fn evidence(&self, version: &Version) -> Result<Vec<EvidenceRecord>>;
    /// Incidents, newest first: of `env` only, open (not closed) only.
    /// They are opened and restored by [`Store::record`].
    fn incidents(&self, env: Option<&str>, open_only: bool, limit: usize) -> Result<Vec<Incident>>;
    fn incident(&self, id: i64) -> Result<Option<Incident>>;
    /// False if there is no such incident or it is already closed.
    fn close_incident(&self, id: i64, closure: &IncidentClosure) -> Result<bool>;
}

/// A notice and the channels that are to hear it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub notice: gantry_core::notify::Notice,
    pub channels: Vec<String>,
}

/// Artifacts every controller can read: with PostgreSQL, kept in the shared
/// database beside each controller's local copy (`pg/blobs.rs`).
pub trait SharedBlobs: Send + Sync {
    /// Keeps the local blob `digest` of `blobs` in the database too (once).
    fn upload_blob(&self, blobs: &Blobs, digest: &Digest) -> Result<()>;
    /// Fetches `digest` into `blobs`, verified; `false` when the database
    /// has no such blob.
    fn download_blob(&self, blobs: &Blobs, digest: &Digest) -> Result<bool>;
}

/// Notification deliveries: queued with the transition that gives them
/// ([`Store::record`]), before they are sent, so a restart resumes them.
pub trait DeliveryStore: Send + Sync {
    /// Pending deliveries due at `now`, oldest first.
    fn due_deliveries(&self, now: Millis, limit: usize) -> Result<Vec<Delivery>>;
    /// Records an attempt's outcome.
    fn update_delivery(
        &self,
        id: i64,
        status: &str,
        attempts: u32,
        next_at: Millis,
        last_error: Option<&str>,
        at: Millis,
    ) -> Result<()>;
    /// Newest first; of one deployment if given.
    fn deliveries(&self, deployment: Option<DeploymentId>, limit: usize) -> Result<Vec<Delivery>>;
    /// Queues notices that no transition gives (drift found between
    /// deployments), in one transaction; a leader-only write.
    fn queue_notices(&self, outbox: &[Outgoing], at: Millis) -> Result<()>;
}

pub trait Store: GovernanceStore + DeliveryStore + Send + Sync {
    fn insert_release(&self, release: &ReleaseRecord) -> Result<InsertOutcome>;
    fn release(&self, version: &Version) -> Result<Option<ReleaseRecord>>;
    fn releases(&self) -> Result<Vec<ReleaseRecord>>;

    /// Creates a deployment, refusing if the environment already has an
    /// active one. `build` receives the new id.
    fn create_deployment(
        &self,
        env: &EnvName,
        build: &mut dyn FnMut(DeploymentId) -> Deployment,
    ) -> Result<Deployment>;

    /// Appends `event`, the state and log lines it led to, and the notices it
    /// gives (queued for their channels), atomically. A deployment that
    /// reaches `Succeeded` becomes its environment's current state.
    fn record(
        &self,
        event: &Event,
        transition: &Transition,
        at: Millis,
        outbox: &[Outgoing],
    ) -> Result<()>;

    fn deployment(&self, id: DeploymentId) -> Result<Option<Deployment>>;
    /// Newest first.
    fn deployments(&self, env: Option<&EnvName>, limit: usize) -> Result<Vec<Deployment>>;
    fn active_deployments(&self) -> Result<Vec<Deployment>>;
    fn log(&self, id: DeploymentId) -> Result<Vec<LogEntry>>;
    fn events(&self, id: DeploymentId) -> Result<Vec<(Millis, Event)>>;

    fn env_state(&self, env: &EnvName) -> Result<Option<EnvState>>;
    fn env_states(&self) -> Result<Vec<EnvState>>;
    /// The newest release that succeeded in `env` and is not `current`:
    /// where `gantry rollback` goes by default.
    fn last_good_other_than(&self, env: &EnvName, current: &Version) -> Result<Option<Version>>;
    /// Every release that has succeeded in `env`.
    fn succeeded_versions(&self, env: &EnvName) -> Result<Vec<Version>>;
    /// The migrations applied in `env` and not backed out, oldest first.
    fn applied_migrations(&self, env: &EnvName) -> Result<Vec<AppliedMigration>>;
    /// Closes a deployment's change record, once: `false` if it was closed.
    fn close_deployment(&self, closure: &DeploymentClosure) -> Result<bool>;
    fn closure(&self, id: DeploymentId) -> Result<Option<DeploymentClosure>>;

    /// Numbers, chains and stores one audit record.
    fn append_audit(&self, entry: AuditEntry) -> Result<AuditRecord>;
    /// Records after `after_seq`, oldest first.
    fn audit_records(&self, after_seq: u64, limit: usize) -> Result<Vec<AuditRecord>>;
    /// `(seq, hash)` of the last pruned record, which the first kept one links to.
    fn audit_anchor(&self) -> Result<Option<(u64, String)>>;
    /// `(seq, hash)` of the last record handed out (`(0, genesis)` before
    /// any): it only moves forward, so numbers are never reused.
    fn audit_head(&self) -> Result<(u64, String)>;
    /// Drops records older than `before` (always keeping the newest), keeping
    /// the chain verifiable from the new anchor; first appends a record
    /// (at `now`) naming that anchor, so the drop is itself on the trail.
    /// Returns how many were dropped. The only way records leave the table.
    fn prune_audit(&self, before: Millis, now: Millis) -> Result<usize>;
    /// Keeps a signed checkpoint of the head.
    fn add_audit_checkpoint(&self, checkpoint: &Checkpoint) -> Result<()>;
    fn latest_audit_checkpoint(&self) -> Result<Option<Checkpoint>>;
    /// Drops deployments that finished before `before` with their events,
    /// log lines and approvals, except those an environment's current state
    /// points at. Returns how many were dropped.
    fn prune_deployments(&self, before: Millis) -> Result<usize>;
}

/// A release's migrations as stored (`NULL` when it carries none).
fn migrations_json(m: &[gantry_core::machine::migrations::Migration]) -> Result<Option<String>> {
    if m.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(m)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(format!("migrations: {e}")))
}

/// A stored migration kind.
fn migration_kind(kind: &str) -> Result<gantry_core::machine::migrations::MigrationKind> {
    serde_json::from_value(serde_json::Value::String(kind.to_owned()))
        .map_err(|_| StoreError::Corrupt(format!("migration kind {kind:?}")))
}
