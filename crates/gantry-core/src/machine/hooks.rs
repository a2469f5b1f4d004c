//! Hooks: the operator's own checks at the rollout's points (a feature-flag
//! state, a readiness review, a CI job) whose answer can let the rollout
//! go on, hold it, or stop it: Flagger's confirm-* webhooks, Kamal's hooks.
//!
//! Hooks are not called from the strategies. After every step, the effects
//! the strategy asked for are looked at ([`intercept`]): one that would
//! start the release or raise its traffic is held back while the hooks of
//! that point run (`Effect::RunHooks`), and emitted again from state once
//! they pass (the same path a restarted controller takes). Each increase is
//! keyed by the effect itself, so a passed hook is not asked twice for the
//! same increase, and a restart asks again only for the one it waited on.

use super::{roll_back, DeploymentKind, Effect, Event, Phase, Transition};
use crate::domain::Millis;
use crate::time::seconds;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where in the rollout a hook runs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum HookPoint {
    /// Before any new instance starts: a failure leaves everything as it was.
    BeforeRollout,
    /// Before each raise of the new release's traffic short of all of it.
    BeforeTrafficIncrease,
    /// Before the new release takes all traffic (the canary's last step,
    /// the blue-green switch, a rolling update's last batch).
    BeforePromotion,
    /// Once the new release is live: told, not asked.
    AfterRollout,
    /// When a rollback begins: told, not asked.
    OnRollback,
}

impl HookPoint {
    pub fn as_str(self) -> &'static str {
        match self {
            HookPoint::BeforeRollout => "before_rollout",
            HookPoint::BeforeTrafficIncrease => "before_traffic_increase",
            HookPoint::BeforePromotion => "before_promotion",
            HookPoint::AfterRollout => "after_rollout",
            HookPoint::OnRollback => "on_rollback",
        }
    }

    /// Whether the rollout waits for the answer.
    pub fn asks(self) -> bool {
        !matches!(self, HookPoint::AfterRollout | HookPoint::OnRollback)
    }
}

/// How a hook is called.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HookCall {
    /// A program and its arguments (no shell); exit 0 lets the rollout go
    /// on, 75 (EX_TEMPFAIL) holds it, anything else stops it.
    Command { argv: Vec<String> },
    /// A signed POST; 2xx lets it go on, 423 (Locked) holds it, anything
    /// else (or no answer) stops it.
    Http { url: String },
}

/// One configured hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Hook {
    pub name: String,
    pub at: HookPoint,
    pub call: HookCall,
    /// One call's limit.
    pub timeout_ms: u64,
    /// How long a hook may hold the rollout (asked again every `retry_ms`)
    /// before the hold counts as a failure.
    pub hold_ms: u64,
    pub retry_ms: u64,
}

/// One hook's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum HookAnswer {
    Pass,
    Hold { detail: String },
    Fail { detail: String },
}

/// A hook's answer with its name and how long the call took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HookOutcome {
    pub hook: String,
    pub answer: HookAnswer,
    pub took_ms: u64,
}

/// Where the deployment's hooks stand.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HookState {
    /// Increases whose hooks passed (their keys).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passed: Vec<String>,
    /// The increase held for its hooks' answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<HookWait>,
}

/// An increase held for its hooks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HookWait {
    pub point: HookPoint,
    pub key: String,
    /// When the hooks were first asked.
    pub since: Millis,
    /// Asked again at this time (a hook held).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Millis>,
}

/// Whether any hook is configured at `point`.
fn configured(t: &Transition, point: HookPoint) -> bool {
    t.deployment.settings.hooks.iter().any(|h| h.at == point)
}

fn names(t: &Transition, point: HookPoint) -> String {
    let names: Vec<&str> = t
        .deployment
        .settings
        .hooks
        .iter()
        .filter(|h| h.at == point)
        .map(|h| h.name.as_str())
        .collect();
    names.join(", ")
}

/// The point whose hooks `effect` waits for, if it starts the release or
/// raises its traffic.
fn point_of(t: &Transition, effect: &Effect) -> Option<HookPoint> {
    let d = &t.deployment;
    let last = !super::waves::more(d);
    match (d.phase, effect) {
        (Phase::Starting | Phase::Rolling, Effect::StartInstances { .. })
            if d.new_instances.is_empty() && !d.traffic_on_new =>
        {
            Some(HookPoint::BeforeRollout)
        }
        (Phase::Canary | Phase::Rolling, Effect::ShiftTraffic { weight, stable, .. }) => {
            let raised = match d.phase {
                Phase::Canary => d.canary.as_ref().is_none_or(|c| *weight > c.weight),
                // A rolling update shifts traffic only to route a batch.
                _ => true,
            };
            let all = *weight >= 100 || stable.is_empty();
            raised.then_some(if all && last {
                HookPoint::BeforePromotion
            } else {
                HookPoint::BeforeTrafficIncrease
            })
        }
        (Phase::Switching, Effect::RouteTraffic { to_new: true, .. }) => {
            Some(HookPoint::BeforePromotion)
        }
        _ => None,
    }
}

/// The increase's key: its point and the effect itself, so the same
/// increase asked again (after a restart) is known.
fn key_of(point: HookPoint, effect: &Effect) -> String {
    let json = serde_json::to_vec(effect).unwrap_or_default();
    let digest = Sha256::digest(&json);
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}:{hex}", point.as_str())
}

/// After a step from `before` on `event`: holds back an effect that would
/// start the release or raise its traffic while its point's hooks are
/// asked, and tells the hooks of the rollout's end.
pub(super) fn intercept(t: &mut Transition, before: Phase, event: &Event, now: Millis) {
    if t.deployment.settings.hooks.is_empty() {
        return;
    }
    let phase = t.deployment.phase;
    let rollback_begins =
        t.deployment.kind == DeploymentKind::Rollback && matches!(event, Event::Created);
    let told = match phase {
        _ if rollback_begins => Some(HookPoint::OnRollback),
        _ if t.deployment.kind == DeploymentKind::Rollback => None,
        Phase::Succeeded if before != Phase::Succeeded => Some(HookPoint::AfterRollout),
        Phase::RollingBack if before != Phase::RollingBack => Some(HookPoint::OnRollback),
        Phase::RolledBack if !matches!(before, Phase::RollingBack | Phase::RolledBack) => {
            Some(HookPoint::OnRollback)
        }
        _ => None,
    };
    if let Some(point) = told.filter(|p| configured(t, *p)) {
        t.effects.push(Effect::RunHooks {
            point,
            key: point.as_str().to_owned(),
        });
    }
    // A rollback (a rollback's own deployment too) is never held by a hook.
    if phase.is_terminal()
        || phase == Phase::RollingBack
        || t.deployment.kind == DeploymentKind::Rollback
    {
        t.deployment.hooks.waiting = None;
        return;
    }
    let effects = std::mem::take(&mut t.effects);
    for effect in effects {
        let Some(point) = point_of(t, &effect).filter(|p| configured(t, *p)) else {
            t.effects.push(effect);
            continue;
        };
        let key = key_of(point, &effect);
        let hooks = &mut t.deployment.hooks;
        if hooks.passed.contains(&key) {
            t.effects.push(effect);
            continue;
        }
        match &hooks.waiting {
            // Already asked; a restarted controller lost the call: ask again.
            Some(w) if w.key == key => {
                if matches!(event, Event::Resumed) {
                    t.effects.push(Effect::RunHooks { point, key });
                }
            }
            _ => {
                hooks.waiting = Some(HookWait {
                    point,
                    key: key.clone(),
                    since: now,
                    retry_at: None,
                });
                t.log.push(format!(
                    "asking the {} hook(s): {}",
                    point.as_str(),
                    names(t, point)
                ));
                t.effects.push(Effect::RunHooks { point, key });
            }
        }
    }
}

/// The hooks answered, or a retry is due. `true` when the event was theirs.
pub(super) fn on_event(t: &mut Transition, event: &Event, now: Millis) -> bool {
    match event {
        Event::HooksAnswered {
            point,
            key,
            outcomes,
        } => {
            for o in outcomes {
                t.log.push(describe(*point, o));
            }
            let waited = t
                .deployment
                .hooks
                .waiting
                .clone()
                .filter(|w| &w.key == key && w.point == *point);
            if let Some(w) = waited {
                decide(t, &w, outcomes, now);
            }
            true
        }
        Event::Tick => {
            let due = t
                .deployment
                .hooks
                .waiting
                .as_ref()
                .filter(|w| w.retry_at.is_some_and(|at| now >= at))
                .cloned();
            if let Some(mut w) = due {
                w.retry_at = None;
                t.effects.push(Effect::RunHooks {
                    point: w.point,
                    key: w.key.clone(),
                });
                t.deployment.hooks.waiting = Some(w);
            }
            false
        }
        _ => false,
    }
}

/// The answers of hooks told of the end, arriving once it is over.
pub(super) fn log_late_answers(t: &mut Transition, event: &Event) {
    if let Event::HooksAnswered {
        point, outcomes, ..
    } = event
    {
        for o in outcomes {
            t.log.push(describe(*point, o));
        }
    }
}

fn describe(point: HookPoint, o: &HookOutcome) -> String {
    let took = if o.took_ms < 1_000 {
        format!("{} ms", o.took_ms)
    } else {
        seconds(o.took_ms)
    };
    match &o.answer {
        HookAnswer::Pass => format!("hook {:?} ({}): passed in {took}", o.hook, point.as_str()),
        HookAnswer::Hold { detail } => format!(
            "hook {:?} ({}): holds the rollout: {detail}",
            o.hook,
            point.as_str()
        ),
        HookAnswer::Fail { detail } => {
            format!("hook {:?} ({}): failed: {detail}", o.hook, point.as_str())
        }
    }
}

/// Goes on, holds or stops on the answers to the increase `w` waited for.
fn decide(t: &mut Transition, w: &HookWait, outcomes: &[HookOutcome], now: Millis) {
    let hooks = t.deployment.settings.hooks.clone();
    let of = |name: &str| hooks.iter().find(|h| h.name == name && h.at == w.point);
    let failed = outcomes.iter().find_map(|o| match &o.answer {
        HookAnswer::Fail { detail } => Some(format!(
            "hook {:?} ({}) failed: {detail}",
            o.hook,
            w.point.as_str()
        )),
        _ => None,
    });
    // A hold past its limit is a failure, said as such.
    let held_too_long = outcomes.iter().find_map(|o| match &o.answer {
        HookAnswer::Hold { detail } => {
            let limit = of(&o.hook).map_or(0, |h| h.hold_ms);
            let held = (now - w.since).max(0) as u64;
            (held >= limit).then(|| {
                format!(
                    "hook {:?} ({}) held the rollout for {}, its limit: {detail}",
                    o.hook,
                    w.point.as_str(),
                    seconds(held)
                )
            })
        }
        _ => None,
    });
    if let Some(reason) = failed.or(held_too_long) {
        t.deployment.hooks.waiting = None;
        return if w.point == HookPoint::BeforeRollout {
            // Nothing has started: nothing to roll back.
            super::fail(t, reason, now)
        } else {
            roll_back(t, reason, now)
        };
    }
    let retry = outcomes
        .iter()
        .filter(|o| matches!(o.answer, HookAnswer::Hold { .. }))
        .filter_map(|o| of(&o.hook).map(|h| h.retry_ms))
        .min();
    if let Some(retry) = retry {
        let at = now + retry as Millis;
        if let Some(wait) = t.deployment.hooks.waiting.as_mut() {
            wait.retry_at = Some(at);
        }
        t.effects.push(Effect::WakeAt { at });
        return;
    }
    t.deployment.hooks.waiting = None;
    t.deployment.hooks.passed.push(w.key.clone());
    if w.point == HookPoint::BeforeRollout {
        // The start's deadlines count from now, not from the first ask.
        let d = &mut t.deployment;
        d.phase_since = now;
        if let Some(r) = d.rolling.as_mut() {
            r.stage_since = now;
        }
    }
    // The held effect, from state: the path a restart takes.
    super::emit_phase_effects(t, now);
}
