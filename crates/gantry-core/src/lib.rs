//! Gantry's pure core: the domain types every other crate speaks, and the
//! deployment state machine.
//!
//! Nothing here does I/O, reads the clock or spawns anything. Time, health
//! observations and the outcomes of effects come in as [`machine::Event`]s;
//! what should happen next goes out as [`machine::Effect`]s. That keeps the
//! rules of a deployment testable as data and lets a restarted controller
//! re-derive what is left to do from the persisted [`machine::Deployment`].

pub mod analysis;
pub mod audit;
pub mod domain;
pub mod dora;
pub mod evidence;
pub mod governance;
pub mod incidents;
pub mod machine;
pub mod notify;
pub mod time;

pub use domain::{DeploymentId, Digest, EnvName, InstanceRef, Millis, NameError, Version};
pub use machine::{
    step, DeploySettings, Deployment, DeploymentKind, Effect, Event, HealthSettings, NewDeployment,
    Phase, StrategySettings, Transition,
};
