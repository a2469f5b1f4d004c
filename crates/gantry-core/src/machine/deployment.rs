//! What a deployment is: its settings, frozen at creation, its phase and
//! what the engine knows of its new instances.

use super::*;
use crate::analysis::resources::{ResourcePolicy, ResourceWatch};

/// How the health of new instances is judged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HealthSettings {
    /// Time between probes once an instance is serving.
    pub interval_ms: u64,
    /// Time between probes while waiting for a new instance to come up.
    pub startup_interval_ms: u64,
    /// Consecutive failed probes that make an instance unhealthy.
    pub failure_threshold: u32,
    /// How long new instances may take to become healthy.
    pub start_timeout_ms: u64,
}

/// Everything about the environment that shapes one deployment, frozen at
/// creation so that a config change cannot alter a deployment mid-flight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeploySettings {
    pub instances: u32,
    pub health: HealthSettings,
    /// How long the new release serves alone, old instances still warm,
    /// before the old ones are stopped.
    pub bake_ms: u64,
    /// How the new release replaces the old one.
    pub strategy: StrategySettings,
    /// Checks run against the new instances before they take traffic.
    #[serde(default)]
    pub smoke: Option<SmokeSettings>,
    /// Windows in which only emergency changes start.
    #[serde(default)]
    pub freezes: Vec<FreezeWindow>,
    /// The hosts of a fleet environment and how the rollout walks them;
    /// `None` when the environment runs on the controller's machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetSettings>,
    /// How long and by which rules the release is watched once it takes
    /// all traffic; `None`: not watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<WatchSettings>,
    /// CPU and memory rules on the target's own readings of each instance
    /// (the standards' numbers unless configured).
    #[serde(default)]
    pub resources: ResourcePolicy,
    /// The operator's hooks at the rollout's points.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<super::hooks::Hook>,
    /// The release's migrations not yet applied in the environment, in
    /// order (none for a rollback deployment).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrations: Vec<super::migrations::PlannedMigration>,
}

/// How a deployment walks a fleet, resolved from the config at creation:
/// explicit hosts per batch, so the plan cannot shift under a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FleetSettings {
    /// Waves in rollout order (sites); each a full rollout over its hosts,
    /// the next begun only once the previous is healthy and baked.
    pub waves: Vec<FleetWave>,
    /// Hosts that may fail (not start, not become healthy, exit) before
    /// the whole rollout rolls back.
    pub max_failed: u32,
}

/// One wave of a fleet rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FleetWave {
    /// The site (or `all` when the environment has no waves).
    pub name: String,
    /// The wave's hosts, batch by batch: each batch lists the hosts it adds.
    pub batches: Vec<Vec<String>>,
}

impl FleetSettings {
    /// Every host of the fleet, in rollout order.
    pub fn hosts(&self) -> impl Iterator<Item = &String> {
        self.waves.iter().flat_map(|w| w.batches.iter().flatten())
    }
}

/// How a deployment replaces the release that serves: one value, so a
/// deployment cannot carry the settings of two strategies, or of none.
///
/// Canary and rolling need a release to compare with or replace: on a first
/// deployment (no old instances) both run as blue-green.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum StrategySettings {
    /// Start a whole new pool beside the old, verify it, switch all traffic
    /// at once, keep the old pool warm through the bake. Also every rollback.
    BlueGreen,
    /// Shift traffic in steps, each judged live against the stable release.
    Canary(CanarySettings),
    /// Replace instances in batches, each healthy before the next.
    Rolling(RollingSettings),
}

impl StrategySettings {
    /// The name used in `gantry.toml` and in the API (`kind`).
    pub fn name(&self) -> &'static str {
        match self {
            StrategySettings::BlueGreen => "blue-green",
            StrategySettings::Canary(_) => "canary",
            StrategySettings::Rolling(_) => "rolling",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentKind {
    /// A new release requested by someone.
    Deploy,
    /// A return to an earlier release.
    Rollback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Waiting for approvals, a lead time or the end of a freeze; nothing has changed yet.
    AwaitingApproval,
    Preparing,
    Starting,
    Verifying,
    /// Smoke checks on the new instances, which take no traffic yet.
    Smoke,
    /// Canary: snapshotting the stable release's health before any traffic moves.
    Baselining,
    /// Canary: a share of traffic on the new release, judged live.
    Canary,
    Switching,
    Baking,
    /// Rolling update: batches of old instances replaced by new ones.
    Rolling,
    /// The new release takes all traffic and is judged against the
    /// baseline for the configured watch; old instances still warm.
    Watching,
    Draining,
    Succeeded,
    RollingBack,
    RolledBack,
    /// Stopped before anything changed in the environment (or a rollback
    /// itself could not complete; the reason says which).
    Failed,
}

impl Phase {
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::RolledBack | Phase::Failed)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::AwaitingApproval => "awaiting_approval",
            Phase::Preparing => "preparing",
            Phase::Starting => "starting",
            Phase::Verifying => "verifying",
            Phase::Smoke => "smoke",
            Phase::Rolling => "rolling",
            Phase::Baselining => "baselining",
            Phase::Canary => "canary",
            Phase::Switching => "switching",
            Phase::Baking => "baking",
            Phase::Watching => "watching",
            Phase::Draining => "draining",
            Phase::Succeeded => "succeeded",
            Phase::RollingBack => "rolling_back",
            Phase::RolledBack => "rolled_back",
            Phase::Failed => "failed",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the engine knows about one new instance's health.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct InstanceHealth {
    /// Has answered healthy at least once.
    pub up: bool,
    pub consecutive_failures: u32,
    pub last_detail: String,
}

/// One deployment of one release into one environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Deployment {
    pub id: DeploymentId,
    pub env: EnvName,
    pub kind: DeploymentKind,
    pub version: Version,
    /// The release serving the environment when this deployment began.
    pub previous_version: Option<Version>,
    pub settings: DeploySettings,
    pub phase: Phase,
    pub phase_since: Millis,
    pub created_at: Millis,
    pub finished_at: Option<Millis>,
    pub requested_by: String,
    /// Instances of the previous release, kept until the new one has baked.
    pub old_instances: Vec<InstanceRef>,
    /// Instances of the release being deployed.
    pub new_instances: Vec<InstanceRef>,
    /// Whether the router currently sends traffic to `new_instances`.
    pub traffic_on_new: bool,
    pub health: BTreeMap<String, InstanceHealth>,
    /// Why the deployment failed or was rolled back.
    pub reason: Option<String>,
    /// Progress of a canary rollout.
    #[serde(default)]
    pub canary: Option<CanaryState>,
    /// Progress of a rolling update.
    #[serde(default)]
    pub rolling: Option<RollingState>,
    /// Results of the smoke checks.
    #[serde(default)]
    pub smoke: Option<SmokeState>,
    /// The change type and its approvals (none for a rollback or an
    /// environment without an approval policy).
    #[serde(default)]
    pub change: Option<ChangeControl>,
    /// Fleet hosts that failed in this deployment, and why; they count
    /// against `fleet.max_failed` and keep (or return to) the old release.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed_hosts: BTreeMap<String, String>,
    /// Canary or blue-green over a fleet in waves: the wave under way (an
    /// index into `settings.fleet.waves`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub wave: u32,
    /// The watch after the full rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<WatchState>,
    /// What the resource rules remember between looks, and the latest figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceWatch>,
    /// Where the hooks stand: the increases they passed, the one they hold.
    #[serde(default, skip_serializing_if = "is_default")]
    pub hooks: super::hooks::HookState,
    /// Where the migrations stand: applied, backed up, backed out.
    #[serde(default, skip_serializing_if = "is_default")]
    pub migrations: super::migrations::MigrationState,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What a new deployment is made of: who asked for what, where, replacing
/// what. Named fields, so no two of the same type can be swapped unseen.
#[derive(Debug, Clone)]
pub struct NewDeployment {
    pub id: DeploymentId,
    pub env: EnvName,
    pub kind: DeploymentKind,
    pub version: Version,
    /// The release the environment runs now, if any.
    pub previous_version: Option<Version>,
    /// Its instances, kept warm until the new release is in.
    pub old_instances: Vec<InstanceRef>,
    pub settings: DeploySettings,
    pub requested_by: String,
}

impl Deployment {
    /// A deployment as it is created: nothing has happened yet. Feed it
    /// `Event::Created` to get its first effects.
    pub fn new(request: NewDeployment, now: Millis) -> Deployment {
        let NewDeployment {
            id,
            env,
            kind,
            version,
            previous_version,
            old_instances,
            settings,
            requested_by,
        } = request;
        Deployment {
            id,
            env,
            kind,
            version,
            previous_version,
            settings,
            phase: Phase::Preparing,
            phase_since: now,
            created_at: now,
            finished_at: None,
            requested_by,
            old_instances,
            new_instances: Vec::new(),
            traffic_on_new: false,
            health: BTreeMap::new(),
            reason: None,
            canary: None,
            rolling: None,
            smoke: None,
            change: None,
            failed_hosts: BTreeMap::new(),
            wave: 0,
            watch: None,
            resources: None,
            hooks: Default::default(),
            migrations: Default::default(),
        }
    }

    /// The same deployment, carrying out `change`.
    pub fn with_change(mut self, change: ChangeControl) -> Deployment {
        self.change = Some(change);
        self
    }

    /// The instances that serve the environment once this deployment has
    /// succeeded: the new ones, and on a fleet the old ones of hosts that
    /// failed within `max_failed` (they kept the previous release).
    pub fn serving_after_success(&self) -> Vec<InstanceRef> {
        let mut out = self.new_instances.clone();
        out.extend(
            self.old_instances
                .iter()
                .filter(|i| {
                    i.host
                        .as_ref()
                        .is_some_and(|h| self.failed_hosts.contains_key(h))
                })
                .cloned(),
        );
        out
    }

    /// Names of those who approved or rejected, in order.
    pub fn approvers(&self) -> Vec<String> {
        self.change
            .iter()
            .flat_map(|c| c.approvals.iter().map(|a| a.by.clone()))
            .collect()
    }
}

/// A blue-green deployment for other modules' tests: `version` of `kind`
/// into `env`, replacing `previous`, created at `now`.
#[cfg(test)]
pub(crate) fn sample_deployment(
    id: DeploymentId,
    env: &str,
    kind: DeploymentKind,
    version: Version,
    previous: Option<Version>,
    now: Millis,
) -> Deployment {
    Deployment::new(
        NewDeployment {
            id,
            env: env.parse().expect("a valid environment name"),
            kind,
            version,
            previous_version: previous,
            old_instances: vec![],
            settings: DeploySettings {
                instances: 1,
                health: HealthSettings {
                    interval_ms: 100,
                    startup_interval_ms: 10,
                    failure_threshold: 1,
                    start_timeout_ms: 1000,
                },
                bake_ms: 0,
                strategy: StrategySettings::BlueGreen,
                smoke: None,
                freezes: vec![],
                fleet: None,
                watch: None,
                resources: Default::default(),
                hooks: Vec::new(),
                migrations: Vec::new(),
            },
            requested_by: "alice".into(),
        },
        now,
    )
}
