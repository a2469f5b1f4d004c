//! Fleets: the controller driving other hosts through `gantry host serve`.
//!
//! [`protocol`] holds the typed messages both ends share; [`serve`] is the
//! host's end, a thin dispatcher over the local target and router;
//! [`link`] is the controller's end over any byte stream (an SSH channel's
//! stdin/stdout in production, a child's pipes in tests). Reaching hosts
//! (SSH) and the fleet's `Target`/`TrafficRouter`/`MetricProvider` build
//! on these.

pub mod bounds;
mod fence;
pub mod frame;
pub mod link;
pub mod protocol;
pub mod serve;
mod upload;

pub use link::{HostLink, LinkError, LinkOptions};
pub use serve::{serve, ServeError, ServeOptions};
