//! What goes into a step and what comes out: events in; effects, the next
//! deployment and log lines out.

use super::*;
use crate::analysis::resources::InstanceUsage;

/// The answer of one health probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "status", content = "detail", rename_all = "snake_case")]
pub enum Probe {
    Healthy,
    /// The instance answered, and the answer was bad (status, timeout).
    Unhealthy(String),
    /// Nothing listens yet. Counts as a failure only once the instance was up.
    Unreachable(String),
}

/// Something that happened: the outcome of an effect, the passing of time,
/// or a request from a person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The deployment was just created.
    Created,
    /// The controller restarted while the deployment was in progress.
    Resumed,
    Prepared,
    PrepareFailed {
        reason: String,
    },
    InstancesStarted {
        instances: Vec<InstanceRef>,
        /// Fleet hosts where starting failed, and why (the others started).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        failed_hosts: BTreeMap<String, String>,
    },
    StartFailed {
        reason: String,
    },
    HealthObserved {
        instance: String,
        probe: Probe,
    },
    InstanceExited {
        instance: String,
        detail: String,
    },
    TrafficRouted {
        to_new: bool,
    },
    RouteFailed {
        reason: String,
    },
    InstancesStopped,
    /// Time has passed; deadlines are checked against `now`.
    Tick,
    AbortRequested {
        by: String,
    },
    /// Canary: the stable release's health before the shift.
    BaselineObserved {
        baseline: Baseline,
    },
    /// Canary: cumulative counts of both pools, from the metric provider.
    MetricsObserved {
        canary: Counts,
        stable: Counts,
        /// On a fleet: each host's cumulative canary counts, to find one
        /// host much worse than the rest.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        hosts: BTreeMap<String, Counts>,
        /// The analysis' metric queries, read for the new release.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        queries: Vec<crate::analysis::queries::QueryReading>,
        /// The target's readings of the new and old instances' CPU and memory.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        resources: Vec<InstanceUsage>,
    },
    MetricsUnavailable {
        reason: String,
    },
    /// Blue-green bake: the target's readings of the new and old instances'
    /// CPU and memory, judged by the resource rules.
    ResourcesObserved {
        resources: Vec<InstanceUsage>,
    },
    PromoteRequested {
        by: String,
    },
    PauseRequested {
        by: String,
    },
    ResumeRequested {
        by: String,
    },
    /// Every smoke check ran against every new instance.
    SmokeFinished {
        results: Vec<SmokeResult>,
    },
    /// Rollback of a rolling update: the retired old instances run again.
    InstancesRestored,
    RestoreFailed {
        reason: String,
    },
    /// The hooks of `point` answered, for the increase keyed `key`.
    HooksAnswered {
        point: super::hooks::HookPoint,
        key: String,
        outcomes: Vec<super::hooks::HookOutcome>,
    },
    /// A new instance wrote `lines` lines at ERROR level to its output
    /// since the last report (`first`: the first of them, shortened).
    ErrorsLogged {
        instance: String,
        lines: u64,
        first: String,
    },
    /// A migration step ran (or could not).
    MigrationRan {
        outcome: super::migrations::MigrationOutcome,
    },
    /// A person with the approver role approved the change.
    Approved {
        by: String,
        comment: String,
    },
    Rejected {
        by: String,
        comment: String,
    },
}

/// Work for the runtime. Each is idempotent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Effect {
    /// Verify the artifact and unpack it into its release directory.
    PrepareRelease {
        version: Version,
    },
    /// Make sure `count` instances of `version` run for this deployment
    /// (on a fleet: `count` on each of `hosts`, or on every host of the
    /// environment when `hosts` is empty), adopting any already started;
    /// answer with `InstancesStarted`.
    StartInstances {
        version: Version,
        count: u32,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        hosts: Vec<String>,
    },
    /// Probe one instance at `at` (or at once if that has passed).
    ProbeHealth {
        instance: InstanceRef,
        at: Millis,
    },
    /// Point the environment's router at `instances` (possibly none).
    RouteTraffic {
        instances: Vec<InstanceRef>,
        to_new: bool,
    },
    StopInstances {
        instances: Vec<InstanceRef>,
    },
    /// Deliver `Event::Tick` at `at`.
    WakeAt {
        at: Millis,
    },
    /// Canary: measure the stable pool; answer with `BaselineObserved`.
    ObserveBaseline,
    /// Canary: send `weight`% of traffic to the new instances, the rest to the old.
    ShiftTraffic {
        weight: u32,
        stable: Vec<InstanceRef>,
        canary: Vec<InstanceRef>,
    },
    /// Canary: read both pools' counts at `at`; answer with `MetricsObserved`.
    ObserveMetrics {
        limits: LatencyLimits,
        at: Millis,
    },
    /// Read the CPU and memory of the new and old instances at `at`; answer
    /// with `ResourcesObserved`.
    ObserveResources {
        at: Millis,
    },
    /// Run the smoke checks against `instances`; answer with `SmokeFinished`.
    RunSmoke {
        instances: Vec<InstanceRef>,
    },
    /// Call the hooks of `point`; answer with `HooksAnswered` (the same
    /// `key`). Told points' answers are only logged.
    RunHooks {
        point: super::hooks::HookPoint,
        key: String,
    },
    /// Run one migration step (a migration, its reverse, the environment's
    /// backup or restore); answer with `MigrationRan`.
    RunMigration {
        step: super::migrations::MigrationStep,
    },
    /// Start these stopped instances of `version` again with their old
    /// identities and ports, and wait until they answer healthy.
    RestoreInstances {
        version: Version,
        instances: Vec<InstanceRef>,
    },
}

/// The result of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub deployment: Deployment,
    pub effects: Vec<Effect>,
    /// Lines for the deployment log (the standards' record of every step).
    pub log: Vec<String>,
}
