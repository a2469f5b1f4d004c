//! The deployment state machine.
//!
//! `step(deployment, event, now)` returns the next deployment, the effects the
//! runtime must carry out, and the lines for the deployment log. The runtime
//! persists the event and the new state *before* it runs any effect, so every
//! effect here is written to be idempotent: after a crash the runtime calls
//! `step(.., Event::Resumed, ..)` and the machine re-emits whatever the
//! current phase still needs.
//!
//! The phases of one deployment (a rollback is a deployment of the previous
//! release, through the same phases):
//!
//! ```text
//! [AwaitingApproval →] Preparing → Starting → Verifying → Switching → Baking → Draining → Succeeded
//!     │           │          │           │          │
//!     ▼           └──────────┴─────┬─────┴──────────┘
//!   Failed                   RollingBack → RolledBack
//! ```
//!
//! While `Baking`, the new instances serve all traffic and the old ones stay
//! running, so returning to the previous release is one routing change.

use crate::analysis::{Baseline, Counts, LatencyLimits};
use crate::domain::{DeploymentId, EnvName, InstanceRef, Millis, Version};
use crate::governance::{active_freeze, Approval, ChangeControl, FreezeWindow};
/// Kept here too for callers outside the core that name it by its old path.
pub use crate::time::seconds;
use crate::time::rfc3339;

mod canary;
mod requests;
mod rolling;
mod smoke;
pub use canary::{CanarySettings, CanaryState, CanaryStep, Pause};
pub use requests::RequestRefusal;
pub use rolling::{RollStage, RollingSettings, RollingState};
use serde::{Deserialize, Serialize};
pub use smoke::{SmokeCheck, SmokeProbe, SmokeResult, SmokeSettings, SmokeState};
use std::collections::BTreeMap;

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
    /// Shift traffic in steps with live analysis instead of all at once.
    /// Used only when a previous release serves (there is nothing to compare with otherwise).
    #[serde(default)]
    pub canary: Option<CanarySettings>,
    /// Replace instances in batches instead of starting a whole new pool.
    /// Used only when a previous release serves.
    #[serde(default)]
    pub rolling: Option<RollingSettings>,
    /// Checks run against the new instances before they take traffic.
    #[serde(default)]
    pub smoke: Option<SmokeSettings>,
    /// Windows in which only emergency changes start.
    #[serde(default)]
    pub freezes: Vec<FreezeWindow>,
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
            Phase::Draining => "draining",
            Phase::Succeeded => "succeeded",
            Phase::RollingBack => "rolling_back",
            Phase::RolledBack => "rolled_back",
            Phase::Failed => "failed",
        }
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
}

impl Deployment {
    /// A deployment as it is created: nothing has happened yet. Feed it
    /// `Event::Created` to get its first effects.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: DeploymentId,
        env: EnvName,
        kind: DeploymentKind,
        version: Version,
        previous_version: Option<Version>,
        old_instances: Vec<InstanceRef>,
        settings: DeploySettings,
        requested_by: String,
        now: Millis,
    ) -> Deployment {
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
        }
    }

    /// The same deployment, carrying out `change`.
    pub fn with_change(mut self, change: ChangeControl) -> Deployment {
        self.change = Some(change);
        self
    }

    /// Names of those who approved or rejected, in order.
    pub fn approvers(&self) -> Vec<String> {
        self.change
            .iter()
            .flat_map(|c| c.approvals.iter().map(|a| a.by.clone()))
            .collect()
    }
}

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
    },
    MetricsUnavailable {
        reason: String,
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
    /// Make sure `count` instances of `version` run for this deployment,
    /// adopting any already started; answer with `InstancesStarted`.
    StartInstances {
        version: Version,
        count: u32,
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
    /// Run the smoke checks against `instances`; answer with `SmokeFinished`.
    RunSmoke {
        instances: Vec<InstanceRef>,
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

/// Advance `deployment` by one event.
pub fn step(deployment: &Deployment, event: &Event, now: Millis) -> Transition {
    let mut t = Transition {
        deployment: deployment.clone(),
        effects: Vec::new(),
        log: Vec::new(),
    };
    if deployment.phase.is_terminal() {
        // A finished deployment never moves again.
        return t;
    }
    on_event(&mut t, event, now);
    t
}

fn on_event(t: &mut Transition, event: &Event, now: Millis) {
    let phase = t.deployment.phase;
    match (phase, event) {
        (Phase::Preparing, Event::Created) => {
            let d = &t.deployment;
            let change = d
                .change
                .as_ref()
                .map(|c| {
                    let why = c
                        .reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default();
                    format!(" ({} change{why})", c.change.as_str())
                })
                .unwrap_or_default();
            t.log.push(format!(
                "{} of {} to {} requested by {}{change}",
                match d.kind {
                    DeploymentKind::Deploy => "deployment",
                    DeploymentKind::Rollback => "rollback",
                },
                d.version,
                d.env,
                d.requested_by
            ));
            if let Some(c) = &d.change {
                if c.required_after > 0 {
                    t.log.push(format!(
                        "emergency change: needs {} approval(s) afterwards, by {}",
                        c.required_after,
                        c.review_by.map(rfc3339).unwrap_or_default()
                    ));
                }
            }
            if approval::waits(&t.deployment, now).is_some() {
                enter(t, Phase::AwaitingApproval, now);
            } else {
                emit_phase_effects(t, now);
            }
        }
        (Phase::AwaitingApproval, Event::Tick) => emit_phase_effects(t, now),
        (_, Event::Approved { by, comment }) => {
            approval::record(t, by, comment, true, now);
            if phase == Phase::AwaitingApproval {
                emit_phase_effects(t, now);
            }
        }
        (_, Event::Rejected { by, comment }) => {
            approval::record(t, by, comment, false, now);
            let reason = format!("rejected by {by}: {comment}");
            if phase == Phase::AwaitingApproval {
                fail(t, reason, now);
            } else if phase != Phase::RollingBack {
                roll_back(t, reason, now);
            }
        }
        (_, Event::Resumed) => {
            t.log.push(format!(
                "controller restarted; resuming in phase {}",
                phase.as_str()
            ));
            emit_phase_effects(t, now);
            if phase == Phase::Rolling {
                rolling::reprobe_up(t, now);
            }
        }
        (_, Event::AbortRequested { by }) => {
            let reason = format!("aborted by {by}");
            if matches!(phase, Phase::Preparing | Phase::AwaitingApproval) {
                fail(t, reason, now);
            } else if phase != Phase::RollingBack {
                roll_back(t, reason, now);
            }
        }

        (Phase::Preparing, Event::Prepared) => {
            t.log.push(format!(
                "release {} verified and unpacked",
                t.deployment.version
            ));
            let d = &t.deployment;
            if d.settings.rolling.is_some() && !d.old_instances.is_empty() {
                rolling::begin(t, now);
            } else {
                enter(t, Phase::Starting, now);
            }
        }
        (Phase::Preparing, Event::PrepareFailed { reason }) => fail(t, reason.clone(), now),

        (Phase::Starting, Event::InstancesStarted { instances }) => {
            let d = &mut t.deployment;
            d.new_instances = instances.clone();
            d.health = instances
                .iter()
                .map(|i| (i.id.clone(), InstanceHealth::default()))
                .collect();
            let list: Vec<String> = instances
                .iter()
                .map(|i| format!("{} on port {}", i.id, i.port))
                .collect();
            t.log.push(format!(
                "started {} instance(s): {}",
                instances.len(),
                list.join(", ")
            ));
            enter(t, Phase::Verifying, now);
        }
        (Phase::Starting, Event::StartFailed { reason }) => {
            roll_back(t, format!("could not start instances: {reason}"), now)
        }

        (Phase::Verifying | Phase::Baking, Event::HealthObserved { instance, probe }) => {
            on_health(t, instance, probe, now)
        }
        (Phase::Verifying | Phase::Baking, Event::InstanceExited { instance, detail })
            if t.deployment.health.contains_key(instance) =>
        {
            roll_back(t, format!("instance {instance} exited: {detail}"), now);
        }
        (Phase::Verifying, Event::Tick) => {
            let since = t.deployment.phase_since;
            check_start_deadline(t, since, now);
        }

        (Phase::Rolling, _) => rolling::on_event(t, event, now),
        (Phase::Smoke, Event::SmokeFinished { results }) => {
            let passed = smoke::judge(t, results, now) == smoke::SmokeOutcome::Pass;
            go_on_after_smoke(t, passed, now);
        }
        (Phase::Smoke, Event::PromoteRequested { by }) => {
            let released = smoke::release_hold(t, by);
            go_on_after_smoke(t, released, now);
        }
        (Phase::Smoke, Event::Tick) => {
            let since = t.deployment.phase_since;
            smoke::check_deadline(t, since, now);
        }
        (Phase::Baselining | Phase::Canary, _) if canary::handles(event) => {
            canary::on_event(t, event, now)
        }
        (Phase::Canary, Event::HealthObserved { instance, probe }) => {
            on_health(t, instance, probe, now)
        }
        (Phase::Canary, Event::InstanceExited { instance, detail })
            if t.deployment.health.contains_key(instance) =>
        {
            roll_back(t, format!("instance {instance} exited: {detail}"), now);
        }
        (Phase::Switching, Event::TrafficRouted { to_new: true }) => {
            t.deployment.traffic_on_new = true;
            t.log
                .push(format!("traffic switched to {}", t.deployment.version));
            enter(t, Phase::Baking, now);
        }
        (Phase::Switching, Event::RouteFailed { reason }) => {
            roll_back(t, format!("could not switch traffic: {reason}"), now)
        }

        (Phase::Baking, Event::Tick) => {
            let d = &t.deployment;
            if now >= d.phase_since + d.settings.bake_ms as Millis {
                t.log.push(format!(
                    "healthy through the {} bake",
                    seconds(d.settings.bake_ms)
                ));
                enter(t, Phase::Draining, now);
            }
        }

        (Phase::Draining, Event::InstancesStopped) => {
            t.log.push("previous instances stopped".to_owned());
            enter(t, Phase::Succeeded, now);
        }

        (Phase::RollingBack, Event::TrafficRouted { to_new: false }) => {
            t.deployment.traffic_on_new = false;
            rolling::on_rolled_back_traffic(t);
            match &t.deployment.previous_version {
                Some(v) => t.log.push(format!("traffic returned to {v}")),
                None => t
                    .log
                    .push("traffic withdrawn (no previous release)".to_owned()),
            }
            emit_phase_effects(t, now);
        }
        (Phase::RollingBack, Event::RouteFailed { reason }) => fail(
            t,
            format!("rollback could not restore routing: {reason}"),
            now,
        ),
        (Phase::RollingBack, Event::InstancesRestored) => rolling::on_restored(t),
        (Phase::RollingBack, Event::RestoreFailed { reason }) => fail(
            t,
            format!("rollback could not restart the previous instances: {reason}"),
            now,
        ),
        (Phase::RollingBack, Event::InstancesStopped) => {
            t.log.push("new instances stopped".to_owned());
            t.deployment.new_instances.clear();
            enter(t, Phase::RolledBack, now);
        }

        // Anything else is stale (a probe answered after the phase moved on,
        // a tick for an old deadline): ignored on purpose.
        _ => {}
    }
}

pub(crate) fn on_health(t: &mut Transition, instance: &str, probe: &Probe, now: Millis) {
    let phase = t.deployment.phase;
    let settings = t.deployment.settings.health.clone();
    let Some(inst) = t
        .deployment
        .new_instances
        .iter()
        .find(|i| i.id == instance)
        .cloned()
    else {
        return;
    };
    let Some(h) = t.deployment.health.get_mut(instance) else {
        return;
    };
    match probe {
        Probe::Healthy => {
            if !h.up {
                t.log.push(format!("instance {instance} is healthy"));
            } else if h.consecutive_failures > 0 {
                t.log.push(format!(
                    "instance {instance} recovered after {} failed probe(s)",
                    h.consecutive_failures
                ));
            }
            h.up = true;
            h.consecutive_failures = 0;
            h.last_detail = "healthy".to_owned();
        }
        Probe::Unhealthy(detail) | Probe::Unreachable(detail) => {
            // Warm-up is not failure: until an instance has answered healthy
            // once, only the start timeout (or its exit) fails it. Many real
            // services answer 503 while they load.
            let counts = h.up;
            h.last_detail = detail.clone();
            if counts {
                h.consecutive_failures += 1;
                t.log.push(format!(
                    "health check failed on {instance} ({}/{}): {detail}",
                    h.consecutive_failures, settings.failure_threshold
                ));
                if h.consecutive_failures >= settings.failure_threshold {
                    let reason = format!(
                        "health check failed {} consecutive times on {instance} (threshold {}): {detail}",
                        h.consecutive_failures, settings.failure_threshold
                    );
                    roll_back(t, reason, now);
                    return;
                }
            }
        }
    }
    let up = t.deployment.health.get(instance).is_some_and(|h| h.up);
    match phase {
        Phase::Verifying if t.deployment.health.values().all(|h| h.up) => {
            t.log.push("all new instances healthy".to_owned());
            let next = if smoke::configured(t) {
                Phase::Smoke
            } else {
                after_verified(&t.deployment)
            };
            enter(t, next, now);
        }
        Phase::Rolling => rolling::after_probe(t, inst, up, now),
        Phase::Verifying => {
            if !up {
                t.effects.push(Effect::ProbeHealth {
                    instance: inst,
                    at: now + settings.startup_interval_ms as Millis,
                });
            }
        }
        _ => t.effects.push(Effect::ProbeHealth {
            instance: inst,
            at: now + settings.interval_ms as Millis,
        }),
    }
}

/// Rolls back when new instances waiting since `since` are still not all up
/// after the start timeout, naming those that are not.
pub(crate) fn check_start_deadline(t: &mut Transition, since: Millis, now: Millis) {
    let d = &t.deployment;
    if now < since + d.settings.health.start_timeout_ms as Millis {
        return;
    }
    let waiting: Vec<String> = d
        .health
        .iter()
        .filter(|(_, h)| !h.up)
        .map(|(id, h)| format!("{id} ({})", h.last_detail))
        .collect();
    let reason = format!(
        "instances did not become healthy within {}: {}",
        seconds(d.settings.health.start_timeout_ms),
        waiting.join(", ")
    );
    roll_back(t, reason, now);
}

fn go_on_after_smoke(t: &mut Transition, passed: bool, now: Millis) {
    if passed {
        let next = after_verified(&t.deployment);
        enter(t, next, now);
    }
}

/// Where a deployment goes once its new instances are healthy and smoke-checked.
fn after_verified(d: &Deployment) -> Phase {
    if d.settings.canary.is_some() && !d.old_instances.is_empty() {
        Phase::Baselining
    } else {
        Phase::Switching
    }
}

pub(crate) fn enter(t: &mut Transition, phase: Phase, now: Millis) {
    let d = &mut t.deployment;
    d.phase = phase;
    d.phase_since = now;
    if phase.is_terminal() {
        d.finished_at = Some(now);
    }
    match phase {
        Phase::Succeeded => t.log.push(format!("{} is live in {}", d.version, d.env)),
        Phase::RolledBack => t.log.push(match &d.previous_version {
            Some(v) => format!("rolled back: {v} serves {}", d.env),
            None => format!("rolled back: nothing serves {}", d.env),
        }),
        Phase::Failed => {}
        _ => t.log.push(format!("phase {}", phase.as_str())),
    }
    emit_phase_effects(t, now);
}

fn fail(t: &mut Transition, reason: String, now: Millis) {
    t.log.push(format!("failed: {reason}"));
    t.deployment.reason = Some(reason);
    enter(t, Phase::Failed, now);
}

pub(crate) fn roll_back(t: &mut Transition, reason: String, now: Millis) {
    t.log.push(format!("rolling back: {reason}"));
    if t.deployment.reason.is_none() {
        t.deployment.reason = Some(reason);
    }
    enter(t, Phase::RollingBack, now);
}

/// The effects a phase needs, derived from state alone so that a resumed
/// deployment re-emits exactly what is still outstanding.
fn emit_phase_effects(t: &mut Transition, now: Millis) {
    let rollback_step = match t.deployment.phase {
        Phase::RollingBack => rolling::rollback_effect(t),
        _ => None,
    };
    let d = &t.deployment;
    let effects = &mut t.effects;
    match d.phase {
        Phase::AwaitingApproval => match approval::waits(d, now) {
            Some((why, until)) => {
                t.log.push(format!("waiting: {why}"));
                if let Some(at) = until {
                    t.effects.push(Effect::WakeAt { at });
                }
            }
            None => {
                t.log.push("approved; starting".to_owned());
                enter(t, Phase::Preparing, now);
            }
        },
        Phase::Preparing => effects.push(Effect::PrepareRelease {
            version: d.version.clone(),
        }),
        Phase::Starting => effects.push(Effect::StartInstances {
            version: d.version.clone(),
            count: d.settings.instances,
        }),
        Phase::Verifying => {
            for i in &d.new_instances {
                if !d.health.get(&i.id).is_some_and(|h| h.up) {
                    effects.push(Effect::ProbeHealth {
                        instance: i.clone(),
                        at: now,
                    });
                }
            }
            effects.push(Effect::WakeAt {
                at: d.phase_since + d.settings.health.start_timeout_ms as Millis,
            });
        }
        Phase::Smoke => {
            if smoke::emit(t, d.phase_since) == smoke::SmokeStart::NothingToRun {
                let next = after_verified(&t.deployment);
                enter(t, next, now);
            }
        }
        Phase::Rolling => rolling::emit_phase_effects(t, now),
        Phase::Baselining | Phase::Canary => canary::emit_phase_effects(t, now),
        Phase::Switching => effects.push(Effect::RouteTraffic {
            instances: d.new_instances.clone(),
            to_new: true,
        }),
        Phase::Baking => {
            if d.settings.bake_ms == 0 {
                enter(t, Phase::Draining, now);
                return;
            }
            for i in &d.new_instances {
                effects.push(Effect::ProbeHealth {
                    instance: i.clone(),
                    at: now + d.settings.health.interval_ms as Millis,
                });
            }
            effects.push(Effect::WakeAt {
                at: d.phase_since + d.settings.bake_ms as Millis,
            });
        }
        Phase::Draining => {
            if d.old_instances.is_empty() {
                enter(t, Phase::Succeeded, now);
                return;
            }
            effects.push(Effect::StopInstances {
                instances: d.old_instances.clone(),
            });
        }
        Phase::RollingBack => {
            if let Some(e) = rollback_step {
                effects.push(e);
            } else if d.traffic_on_new {
                effects.push(Effect::RouteTraffic {
                    instances: d.old_instances.clone(),
                    to_new: false,
                });
            } else if !d.new_instances.is_empty() {
                effects.push(Effect::StopInstances {
                    instances: d.new_instances.clone(),
                });
            } else {
                enter(t, Phase::RolledBack, now);
            }
        }
        Phase::Succeeded | Phase::RolledBack | Phase::Failed => {}
    }
}

/// Approvals, lead times and freezes before a deployment may start.
mod approval {
    use super::*;

    /// What the deployment still waits for, and until when if time alone
    /// ends the wait; `None` when it may start.
    pub(super) fn waits(d: &Deployment, now: Millis) -> Option<(String, Option<Millis>)> {
        let c = d.change.as_ref()?;
        let approved = c.approvals.iter().filter(|a| a.approved).count() as u32;
        if approved < c.required_before {
            return Some((
                format!(
                    "{} of {} approval(s) from the approver role",
                    approved, c.required_before
                ),
                c.start_after.filter(|&at| at > now),
            ));
        }
        if let Some(at) = c.start_after.filter(|&at| at > now) {
            return Some((
                format!(
                    "the lead time of a {} change ends at {}",
                    c.change.as_str(),
                    rfc3339(at)
                ),
                Some(at),
            ));
        }
        if c.change != crate::governance::ChangeType::Emergency {
            if let Some((f, until)) = active_freeze(&d.settings.freezes, now) {
                return Some((
                    format!("{} is frozen ({}) until {}", d.env, f.name, rfc3339(until)),
                    Some(until),
                ));
            }
        }
        None
    }

    pub(super) fn record(t: &mut Transition, by: &str, comment: &str, approved: bool, now: Millis) {
        let Some(c) = t.deployment.change.as_mut() else {
            return;
        };
        c.approvals.push(Approval {
            by: by.to_owned(),
            at: now,
            approved,
            comment: comment.to_owned(),
        });
        let verdict = if approved { "approved" } else { "rejected" };
        let comment = if comment.is_empty() {
            String::new()
        } else {
            format!(": {comment}")
        };
        t.log.push(format!("{verdict} by {by}{comment}"));
    }
}

#[cfg(test)]
mod tests;
