//! The controllers that share one store (`GET /api/v1/cluster`): who they
//! are, which one leads, under which epoch, and until when its lease runs.
//!
//! Times of the lease and of heartbeats are the database's clock, never a
//! controller's, and `observed_at` is that clock when it answered, so
//! "expires in" and "seen ago" are differences on one clock.

use gantry_core::Millis;
use serde::{Deserialize, Serialize};

/// `GET /cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClusterView {
    /// Where the state lives: "postgresql" (any number of controllers, one
    /// leads by a lease) or "sqlite" (one controller, which always leads).
    pub store: String,
    /// The id of the controller that answered.
    pub this: String,
    /// Whether the controller that answered leads now.
    pub this_leads: bool,
    /// The lease as the database holds it; absent before any controller took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseRecord>,
    /// Every controller that has reported itself, most recently seen first.
    pub controllers: Vec<ControllerRecord>,
    /// The database's clock when it answered (the controller's own with SQLite).
    pub observed_at: Millis,
}

/// The leader's lease: taken and renewed by conditional updates timed by the
/// database's clock. Its epoch fences every write the leader makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LeaseRecord {
    /// The controller holding (or that last held) the lease.
    pub holder: String,
    /// Where the holder serves its API: followers forward writes there.
    pub api_url: String,
    /// Raised at every change of leader (and every new term of one); the
    /// fencing token of the store's writes and of fleet hosts.
    pub epoch: u64,
    pub acquired_at: Millis,
    /// Until when the lease holds unless renewed (absent: it never expires,
    /// as with SQLite's single controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Millis>,
    /// Whether it had not expired when observed.
    pub live: bool,
}

/// One controller's heartbeat row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ControllerRecord {
    /// Unique per controller process: host name, process id and a random tag.
    pub id: String,
    pub api_url: String,
    /// The gantry version it runs.
    pub version: String,
    pub started_at: Millis,
    pub last_seen: Millis,
    /// Whether it holds the live lease.
    pub leader: bool,
}
