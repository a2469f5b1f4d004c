//! Fleets: the controller driving other hosts over OpenSSH through
//! `gantry host serve` (design: docs/design/fleets.md).
//!
//! [`ssh`] reaches hosts (one ControlMaster each, Gantry's own pinned
//! `known_hosts`, the binary uploaded by content hash, two constant command
//! lines) and [`trust`] pins their keys; [`protocol`] holds the typed
//! messages both ends share; [`serve`] is the host's end, a thin dispatcher
//! over the local target and router; [`link`] is the controller's end over
//! any byte stream (an SSH channel's stdin/stdout in production, a child's
//! pipes in tests). [`links`] keeps one open channel per host, and
//! [`observe`] answers `gantry hosts`; [`placement`] is the controller's `Target`/`TrafficRouter`/`MetricProvider`:
//! local for environments without hosts, fanned out to the hosts otherwise.

pub mod bounds;
mod fence;
pub mod frame;
pub mod link;
pub mod links;
pub mod observe;
pub mod placement;
pub mod protocol;
pub mod serve;
pub mod ssh;
pub mod trust;
mod upload;

pub use link::{HostLink, LinkError, LinkOptions};
pub use links::{ControllerIdentity, FleetLinks};
pub use observe::{FleetObserver, HostObserver};
pub use placement::Placement;
pub use serve::{serve, ServeError, ServeOptions};
