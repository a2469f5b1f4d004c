//! Fleets: reaching hosts over OpenSSH (docs/design/fleets.md).

pub mod ssh;
pub mod trust;
