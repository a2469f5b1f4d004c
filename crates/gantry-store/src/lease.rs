//! Leadership among controllers that share one database: a lease with an
//! epoch, and the fence that holds the store's leader-only writes to it.
//!
//! Only the PostgreSQL store implements [`LeaseStore`]: with SQLite there is
//! one controller per file, and it always leads.
//!
//! The protocol, in the database's terms (`pg/lease.rs`):
//! - one `leader_lease` row (holder, epoch, expires_at, the holder's API URL);
//!   a controller takes it when it has expired (or is its own) by a
//!   transaction that locks the row, raises the epoch and moves `expires_at`
//!   to `now() + lease`; the holder renews it by a conditional `UPDATE`
//!   that matches only its own holder id and epoch while not yet expired.
//!   Every time is the database's clock (`now()`), never a controller's.
//! - every leader-only write ([`Store::record`], `create_deployment`, the
//!   prunes, delivery updates, audit checkpoints) begins its transaction
//!   with `SELECT epoch … FOR SHARE` and aborts with [`StoreError::Fenced`]
//!   if the epoch is no longer the one this controller leads under. Taking
//!   the lease locks the row for update, so it waits for writes in flight,
//!   and any write after it sees the new epoch: a leader that was paused
//!   past its lease commits nothing once another has taken over.

use crate::*;
pub use gantry_api::cluster::{ControllerRecord, LeaseRecord};
use std::time::Duration;

/// A controller, as its heartbeat and the lease name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Unique per controller process.
    pub id: String,
    /// Where it serves its API: followers forward writes to the leader's.
    pub api_url: String,
    /// The gantry version it runs.
    pub version: String,
}

/// What an attempt to take the lease found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// The lease is ours, under this new epoch, until `expires_at` (the
    /// database's clock) unless renewed.
    Leading { epoch: u64, expires_at: Millis },
    /// Another controller holds a live lease; `now` is the database's
    /// clock, so `lease.expires_at - now` is how long it still holds.
    Held { lease: LeaseRecord, now: Millis },
}

/// Which leader-only writes the store lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// Every write (a store no controller leads through: tools, tests).
    Open,
    /// None: this controller follows, so they are refused at once.
    Follower,
    /// Those made while the lease's epoch is still this one.
    Leader(u64),
}

/// The lease and the controllers' heartbeats, read in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSnapshot {
    /// The database's clock when read.
    pub now: Millis,
    /// `None` before any controller took the lease.
    pub lease: Option<LeaseRecord>,
    /// Most recently seen first; `leader` marks the live lease's holder.
    pub controllers: Vec<ControllerRecord>,
}

/// The lease, the heartbeats and the fence (see the module's text).
pub trait LeaseStore: Send + Sync {
    /// Takes the lease for `me` for `lease` if it has expired or is already
    /// `me`'s, under a new epoch (so whatever `me` did under an earlier
    /// epoch is fenced too); otherwise says who holds it.
    fn acquire(&self, me: &Candidate, lease: Duration) -> Result<Acquired>;
    /// Extends the lease to `now() + lease` if `holder` still holds it under
    /// `epoch` and it has not expired. `None`: it was lost (expired, or
    /// taken); else the new expiry.
    fn renew(&self, holder: &str, epoch: u64, lease: Duration) -> Result<Option<Millis>>;
    /// Records that `me` is alive (its row in `controllers`, `last_seen = now()`).
    fn heartbeat(&self, me: &Candidate) -> Result<()>;
    /// At a clean stop: ends the lease at once if `me` holds it under
    /// `epoch` (so a follower need not wait for it to expire) and removes
    /// `me`'s heartbeat row.
    fn retire(&self, me: &str, epoch: Option<u64>) -> Result<()>;
    fn cluster(&self) -> Result<ClusterSnapshot>;
    /// Sets which leader-only writes this store lets through from now on.
    fn set_fence(&self, fence: Fence);
}
