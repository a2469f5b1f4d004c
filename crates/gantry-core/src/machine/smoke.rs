//! Smoke checks: requests (or commands) run against the new instances
//! directly, before any user traffic reaches them.
//!
//! The runtime runs every check against every new instance and answers with
//! all the results at once; the machine judges them by the standards'
//! response: a failed critical check rolls back at once; more than 10% of the
//! non-critical checks failing pauses for a person's decision (`gantry
//! promote` goes on, `gantry abort` rolls back); fewer go on with a warning.

use super::{roll_back, Effect, Transition};
use crate::domain::Millis;
use crate::time::seconds;
use serde::{Deserialize, Serialize};

/// The checks of an environment and the time the whole suite may take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SmokeSettings {
    pub checks: Vec<SmokeCheck>,
    /// The whole suite, all instances included, must finish within this.
    pub timeout_ms: u64,
    /// Share of failed non-critical checks (0..=1) above which the rollout pauses.
    pub max_noncritical_failure_ratio: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SmokeCheck {
    pub name: String,
    /// A failure rolls back at once.
    pub critical: bool,
    /// One attempt's time limit.
    pub timeout_ms: u64,
    pub probe: SmokeProbe,
}

/// What one check does against one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SmokeProbe {
    /// An HTTP request to the instance; passes on the expected status, and
    /// the body (or a JSON field of it) when asked.
    Http {
        method: String,
        path: String,
        expect_status: u16,
        body_contains: Option<String>,
        /// RFC 6901 pointer into a JSON body, and the value it must equal (as JSON text).
        json_pointer: Option<String>,
        json_equals: Option<String>,
    },
    /// A program run without a shell, with `GANTRY_SMOKE_URL` set to the
    /// instance's base URL; passes on exit status 0.
    Command { argv: Vec<String> },
}

/// The outcome of one check on one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SmokeResult {
    pub check: String,
    pub instance: String,
    pub critical: bool,
    pub passed: bool,
    /// What was seen: the status, the mismatch, the exit code.
    pub detail: String,
    pub elapsed_ms: u64,
}

/// Where the smoke suite of a deployment stands.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SmokeState {
    pub results: Vec<SmokeResult>,
    /// Waiting for a person: too many non-critical checks failed.
    pub held: bool,
    /// The suite passed (or a person let it pass); nothing left to run.
    pub done: bool,
}

/// What to do after a suite's results.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum SmokeOutcome {
    Pass,
    Hold,
    RolledBack,
}

/// The suite's time limit (0 when there is no suite).
fn suite_timeout(t: &Transition) -> u64 {
    t.deployment
        .settings
        .smoke
        .as_ref()
        .map_or(0, |s| s.timeout_ms)
}

/// Whether the deployment has checks to run.
pub(super) fn configured(t: &Transition) -> bool {
    t.deployment
        .settings
        .smoke
        .as_ref()
        .is_some_and(|s| !s.checks.is_empty())
}

/// What entering (or resuming) the smoke phase asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum SmokeStart {
    /// `RunSmoke` (unless already run) and its deadline are emitted; wait for them.
    Waiting,
    /// There are no checks to run (a deployment stored in this phase whose
    /// settings carry none): nothing is emitted, the caller goes on as after
    /// a passed suite instead of waiting for an answer that cannot come.
    NothingToRun,
}

/// Effects that run the suite (once) and bound it in time. `RunSmoke` is
/// only ever emitted with checks configured, so the runtime always has a
/// suite to answer it with.
pub(super) fn emit(t: &mut Transition, started: Millis) -> SmokeStart {
    if !configured(t) {
        t.log
            .push("no smoke checks configured; going on without them".to_owned());
        t.deployment
            .smoke
            .get_or_insert_with(SmokeState::default)
            .done = true;
        return SmokeStart::NothingToRun;
    }
    let state = t.deployment.smoke.clone().unwrap_or_default();
    if state.held || state.done {
        return SmokeStart::Waiting;
    }
    let timeout = suite_timeout(t);
    t.effects.push(Effect::RunSmoke {
        instances: super::waves::in_wave(&t.deployment, &t.deployment.new_instances),
    });
    t.effects.push(Effect::WakeAt {
        at: started + timeout as Millis,
    });
    SmokeStart::Waiting
}

/// Judges a finished suite and records it on the deployment.
pub(super) fn judge(t: &mut Transition, results: &[SmokeResult], now: Millis) -> SmokeOutcome {
    let ratio_limit = t
        .deployment
        .settings
        .smoke
        .as_ref()
        .map_or(0.1, |s| s.max_noncritical_failure_ratio);
    let state = t.deployment.smoke.get_or_insert_with(SmokeState::default);
    state.results = results.to_vec();
    let failed: Vec<&SmokeResult> = results.iter().filter(|r| !r.passed).collect();
    let critical: Vec<String> = failed
        .iter()
        .filter(|r| r.critical)
        .map(|r| format!("{} on {}: {}", r.check, r.instance, r.detail))
        .collect();
    let noncritical_total = results.iter().filter(|r| !r.critical).count();
    let noncritical_failed = failed.iter().filter(|r| !r.critical).count();
    t.log.push(format!(
        "smoke checks: {} of {} passed",
        results.len() - failed.len(),
        results.len()
    ));
    if !critical.is_empty() {
        roll_back(
            t,
            format!("critical smoke check failed: {}", critical.join("; ")),
            now,
        );
        return SmokeOutcome::RolledBack;
    }
    for r in failed.iter().filter(|r| !r.critical) {
        t.log.push(format!(
            "warning: smoke check {} failed on {}: {}",
            r.check, r.instance, r.detail
        ));
    }
    let ratio = if noncritical_total == 0 {
        0.0
    } else {
        noncritical_failed as f64 / noncritical_total as f64
    };
    let state = t.deployment.smoke.get_or_insert_with(SmokeState::default);
    if ratio > ratio_limit {
        state.held = true;
        t.log.push(format!(
            "paused for a decision: {noncritical_failed} of {noncritical_total} non-critical smoke checks failed ({:.0}% > {:.0}%); `gantry promote` goes on, `gantry abort` rolls back",
            100.0 * ratio,
            100.0 * ratio_limit
        ));
        return SmokeOutcome::Hold;
    }
    state.done = true;
    SmokeOutcome::Pass
}

/// A person lets a held suite pass. True if it was held.
pub(super) fn release_hold(t: &mut Transition, by: &str) -> bool {
    match t.deployment.smoke.as_mut() {
        Some(s) if s.held => {
            s.held = false;
            s.done = true;
            t.log.push(format!(
                "{by} accepted the failed non-critical smoke checks"
            ));
            true
        }
        _ => false,
    }
}

/// Rolls back a suite that ran past its time limit (not while held).
pub(super) fn check_deadline(t: &mut Transition, started: Millis, now: Millis) -> bool {
    let state = t.deployment.smoke.clone().unwrap_or_default();
    let timeout = suite_timeout(t);
    if state.held || state.done || now < started + timeout as Millis {
        return false;
    }
    roll_back(
        t,
        format!("smoke checks did not finish within {}", seconds(timeout)),
        now,
    );
    true
}
