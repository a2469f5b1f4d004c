//! The shapes that cross a process boundary, in one place both sides use:
//! the HTTP API's requests and answers, the records the store keeps and the
//! API returns as they are, and the traffic counts a router reports.
//!
//! The server builds its answers from these types and its route table
//! names them for the OpenAPI document; the CLI, the demo and the tests read
//! them through [`client::Client`] (feature `client`). A renamed field is a
//! compile error on both sides, not a surprise at run time.
//!
//! Domain types the API carries as they are (a [`gantry_core::Deployment`],
//! an audit record, a checkpoint) stay in `gantry-core`; this crate adds only
//! what exists for the wire.

pub mod access;
pub mod audit;
pub mod cluster;
pub mod deployments;
mod drift;
pub mod error;
pub mod governance;
pub mod hosts;
mod incidents;
pub mod records;
pub mod releases;
pub mod status;
pub mod traffic;

#[cfg(feature = "client")]
pub mod client;

pub use access::{Identity, IssuedToken, NewToken, NewUser, TokenQuery};
pub use audit::{AuditAnchor, AuditPage, AuditPublicKey, AuditQuery, AuditVerdict};
pub use cluster::{ClusterView, ControllerRecord, LeaseRecord};
pub use deployments::{
    Action, ActionTaken, CloseDeployment, DeployRequest, DeploymentLog, DeploymentView,
    EvidenceUpload, ListQuery, RollbackRequest, VerdictGiven, VerdictRequest,
};
pub use drift::{ConvergeReport, DriftFinding, DriftKind, DriftReport, Repair};
pub use error::{ErrorBody, ErrorDetail};
pub use gantry_core::dora::{Dora, Spread};
pub use gantry_core::incidents::{Incident as IncidentRecord, IncidentClosure, IncidentKind};
pub use governance::{
    DeliveryQuery, EvidenceQuery, GatesQuery, GatesView, PendingApproval, Plan, PlanApproval,
    PlanApproved, RehearsalAnswer, RehearsalRequest,
};
pub use hosts::{HostEnvView, HostInstanceView, HostView, HostsView, InstanceHealthView};
pub use incidents::{CloseIncident, DoraQuery, IncidentQuery, MigrationsQuery};
pub use records::{
    AppliedMigration, Delivery, DeploymentClosure, EnvState, EvidenceFile, EvidenceRecord,
    LogEntry, ReleaseRecord, TokenRecord, User,
};
pub use releases::VerifyResult;
pub use status::{
    ActiveDeployment, DeploymentSummary, EnvHostStatus, EnvStatus, EnvironmentStatus, FleetStatus,
    Incident, InstanceStatus, LiveEvent, LogLine, LogPage, LogQuery, LogsQuery, ServerInfo,
    ShutdownAnswer, ShutdownRequest, StatusPage, StatusView, TrafficQuery,
};
pub use traffic::{LatencyHistogram, PoolStats, SlowerThan, MAX_LATENCY_BUCKETS, MAX_LATENCY_US};
