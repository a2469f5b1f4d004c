//! Who may do what, and when a change may go ahead: roles and permissions,
//! change types, approvals, lead times counted in business days, freeze
//! windows. Pure rules; the controller supplies identities and the clock.

use crate::domain::Millis;
/// Kept here too for callers outside the core that name it by its old path.
pub use crate::time::rfc3339;
use serde::{Deserialize, Serialize};
use std::fmt;

const DAY_MS: Millis = 86_400_000;

/// A user's role. A user may hold several.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything but users and tokens.
    Viewer,
    /// Creates releases and evidence, deploys, rolls back, steers rollouts.
    Deployer,
    /// Approves or rejects deployments (never their own).
    Approver,
    /// Everything, including users and tokens.
    Admin,
}

impl Role {
    pub const NAMES: &[&str] = &["viewer", "deployer", "approver", "admin"];

    pub fn parse(s: &str) -> Result<Role, String> {
        crate::domain::parse_name("role", s, Self::NAMES)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }

    fn grants(self, p: Permission) -> bool {
        match self {
            Role::Admin => true,
            Role::Viewer => p == Permission::Read,
            Role::Deployer => matches!(p, Permission::Read | Permission::Deploy),
            Role::Approver => matches!(p, Permission::Read | Permission::Approve),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an API action needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    Read,
    /// Releases, evidence, deployments, rollbacks, promote/pause/resume/abort.
    Deploy,
    Approve,
    /// Users, tokens, shutting the controller down.
    Administer,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Deploy => "deploy",
            Permission::Approve => "approve",
            Permission::Administer => "administer",
        }
    }
}

/// Whether any of `roles` grants `p`.
pub fn allowed(roles: &[Role], p: Permission) -> bool {
    roles.iter().any(|r| r.grants(p))
}

/// The standards' change types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeType {
    /// Pre-approved and low risk: goes ahead at once where the environment allows it.
    Standard,
    /// Needs its approvals and its lead time.
    Normal,
    /// Goes ahead at once, even in a freeze; flagged, and needs its
    /// approvals afterwards within the review window.
    Emergency,
}

impl ChangeType {
    pub const NAMES: &[&str] = &["standard", "normal", "emergency"];

    pub fn parse(s: &str) -> Result<ChangeType, String> {
        crate::domain::parse_name("change type", s, Self::NAMES)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Standard => "standard",
            ChangeType::Normal => "normal",
            ChangeType::Emergency => "emergency",
        }
    }
}

/// A lead time: a plain duration, or business days (Monday to Friday, UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LeadTime {
    Ms(u64),
    BusinessDays(u32),
}

impl LeadTime {
    /// When a change requested at `from` may start.
    pub fn after(self, from: Millis) -> Millis {
        match self {
            LeadTime::Ms(ms) => from + ms as Millis,
            LeadTime::BusinessDays(n) => add_business_days(from, n),
        }
    }
}

impl fmt::Display for LeadTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeadTime::Ms(ms) => write!(f, "{}", crate::time::seconds(*ms)),
            LeadTime::BusinessDays(n) => write!(f, "{n} business day(s)"),
        }
    }
}

/// Day of the week of a UTC instant, 0 = Monday … 6 = Sunday.
pub fn weekday(at: Millis) -> u32 {
    // 1970-01-01 was a Thursday (3).
    ((at.div_euclid(DAY_MS) + 3).rem_euclid(7)) as u32
}

/// `from` plus `n` business days: the same time of day, `n` weekdays later.
/// A request made on a weekend counts from the next Monday at 00:00.
pub fn add_business_days(from: Millis, n: u32) -> Millis {
    let mut at = from;
    while weekday(at) >= 5 {
        at = (at.div_euclid(DAY_MS) + 1) * DAY_MS;
    }
    let mut left = n;
    while left > 0 {
        at += DAY_MS;
        if weekday(at) < 5 {
            left -= 1;
        }
    }
    at
}

/// What an environment asks of a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ApprovalPolicy {
    /// Approvals from the approver role before a normal change starts (and
    /// after an emergency one, within `emergency_review_ms`).
    pub required: u32,
    /// How long a normal change waits after it was requested.
    pub lead_time: LeadTime,
    pub emergency_review_ms: u64,
    /// Whether standard (pre-approved) changes may skip approvals here.
    pub allow_standard: bool,
}

impl ApprovalPolicy {
    /// No approvals, no lead time: an environment without an `approval` table.
    pub fn none() -> ApprovalPolicy {
        ApprovalPolicy {
            required: 0,
            lead_time: LeadTime::Ms(0),
            emergency_review_ms: 0,
            allow_standard: true,
        }
    }
}

/// One person's verdict on a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Approval {
    pub by: String,
    pub at: Millis,
    pub approved: bool,
    pub comment: String,
}

/// The change a deployment carries out, and where its approvals stand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChangeControl {
    pub change: ChangeType,
    pub reason: Option<String>,
    /// Approvals needed before it starts (0 for standard and emergency changes).
    pub required_before: u32,
    /// Approvals needed by `review_by` (emergency changes).
    pub required_after: u32,
    /// Not before this instant (the lead time of a normal change).
    pub start_after: Option<Millis>,
    pub review_by: Option<Millis>,
    /// Approvals received while the deployment waited or ran.
    pub approvals: Vec<Approval>,
    /// A scheduled change's start as asked (`start_after` is the later of
    /// it and the lead time's end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<Millis>,
    /// A scheduled change's window: it starts no earlier than its start
    /// (`start_after`) and not at all after this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_end: Option<Millis>,
    /// When the change is announced again before it starts (a day before,
    /// as the standards ask), if that is still ahead when it is requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announce_at: Option<Millis>,
    /// The announcement went out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub announced: bool,
}

/// When a scheduled change may start: from `at`, until `until` if given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub at: Millis,
    pub until: Option<Millis>,
}

/// How long before a scheduled change it is announced (the standards: 24 h).
pub const ANNOUNCE_BEFORE_MS: Millis = 24 * 3_600_000;

/// Why a change request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeRefusal {
    #[error("standard changes are not allowed in {env}: it needs {required} approval(s); ask for a normal change, or an emergency one")]
    StandardNotAllowed { env: String, required: u32 },
    #[error("{env} is frozen ({freeze}) until {until}; only emergency changes may deploy")]
    Frozen {
        env: String,
        freeze: String,
        until: String,
    },
    #[error("at: {at} is in the past; schedule a change for later, or deploy now without --at")]
    InThePast { at: String },
    #[error("until: {until} is not after the start {at}; a window ends after it begins")]
    EmptyWindow { at: String, until: String },
    #[error("at: {env} is frozen ({freeze}) at {at}, until {until}; schedule the change outside the freeze, or as an emergency")]
    ScheduledInFreeze {
        env: String,
        freeze: String,
        at: String,
        until: String,
    },
}

/// Decides what a change request into an environment needs.
pub fn plan_change(
    env: &str,
    policy: &ApprovalPolicy,
    change: ChangeType,
    reason: Option<String>,
    freezes: &[FreezeWindow],
    schedule: Option<Schedule>,
    now: Millis,
) -> Result<ChangeControl, ChangeRefusal> {
    if let Some(s) = schedule {
        if s.at <= now {
            return Err(ChangeRefusal::InThePast { at: rfc3339(s.at) });
        }
        if let Some(until) = s.until.filter(|u| *u <= s.at) {
            return Err(ChangeRefusal::EmptyWindow {
                at: rfc3339(s.at),
                until: rfc3339(until),
            });
        }
    }
    if change != ChangeType::Emergency {
        // A scheduled change is held to the freezes at its start.
        let start = schedule.map_or(now, |s| s.at);
        if let Some((f, until)) = active_freeze(freezes, start) {
            return Err(match schedule {
                Some(s) => ChangeRefusal::ScheduledInFreeze {
                    env: env.to_owned(),
                    freeze: f.name.clone(),
                    at: rfc3339(s.at),
                    until: rfc3339(until),
                },
                None => ChangeRefusal::Frozen {
                    env: env.to_owned(),
                    freeze: f.name.clone(),
                    until: rfc3339(until),
                },
            });
        }
    }
    let (before, after, start_after, review_by) = match change {
        ChangeType::Standard => {
            if !policy.allow_standard && policy.required > 0 {
                return Err(ChangeRefusal::StandardNotAllowed {
                    env: env.to_owned(),
                    required: policy.required,
                });
            }
            (0, 0, None, None)
        }
        ChangeType::Normal => {
            let start = policy.lead_time.after(now);
            (policy.required, 0, (start > now).then_some(start), None)
        }
        ChangeType::Emergency => (
            0,
            policy.required,
            None,
            (policy.required > 0).then_some(now + policy.emergency_review_ms as Millis),
        ),
    };
    // Scheduled: not before its start, nor before the lead time ends.
    let start_after = match (start_after, schedule) {
        (lead, Some(s)) => Some(lead.map_or(s.at, |l| l.max(s.at))),
        (lead, None) => lead,
    };
    let announce_at = schedule
        .map(|s| s.at - ANNOUNCE_BEFORE_MS)
        .filter(|at| *at > now);
    Ok(ChangeControl {
        change,
        reason,
        required_before: before,
        required_after: after,
        start_after,
        review_by,
        approvals: Vec::new(),
        scheduled_at: schedule.map(|s| s.at),
        window_end: schedule.and_then(|s| s.until),
        announce_at,
        announced: false,
    })
}

/// Why an approval is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalRefusal {
    #[error("{by} requested this deployment and cannot approve or reject it")]
    Initiator { by: String },
    #[error("{by} already gave a verdict on this deployment")]
    Duplicate { by: String },
    #[error("this deployment needs no approval")]
    NotNeeded,
    #[error("this deployment is finished; only an emergency change takes approvals afterwards")]
    Finished,
}

/// Checks one person's verdict against the deployment's initiator and the
/// verdicts already given (`given`: who has answered).
pub fn check_approval(
    initiator: &str,
    change: Option<&ChangeControl>,
    finished: bool,
    given: &[String],
    by: &str,
) -> Result<(), ApprovalRefusal> {
    let Some(c) = change else {
        return Err(ApprovalRefusal::NotNeeded);
    };
    if c.required_before == 0 && c.required_after == 0 {
        return Err(ApprovalRefusal::NotNeeded);
    }
    if finished && c.change != ChangeType::Emergency {
        return Err(ApprovalRefusal::Finished);
    }
    if by == initiator {
        return Err(ApprovalRefusal::Initiator { by: by.to_owned() });
    }
    if given.iter().any(|g| g == by) {
        return Err(ApprovalRefusal::Duplicate { by: by.to_owned() });
    }
    Ok(())
}

/// A period in which an environment takes only emergency changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FreezeWindow {
    pub name: String,
    pub when: FreezeSpan,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FreezeSpan {
    /// From one instant to another.
    Once { from: Millis, to: Millis },
    /// Every week, UTC: from a weekday and minute of the day to another
    /// (0 = Monday); may wrap over the weekend.
    Weekly {
        from_day: u32,
        from_minute: u32,
        to_day: u32,
        to_minute: u32,
    },
}

const WEEK_MS: Millis = 7 * DAY_MS;

/// The freeze in force at `now`, if any, with when it ends.
pub fn active_freeze(windows: &[FreezeWindow], now: Millis) -> Option<(&FreezeWindow, Millis)> {
    windows.iter().find_map(|w| match w.when {
        FreezeSpan::Once { from, to } => (from <= now && now < to).then_some((w, to)),
        FreezeSpan::Weekly {
            from_day,
            from_minute,
            to_day,
            to_minute,
        } => {
            // Offsets within a week that starts on Monday 00:00 UTC.
            let week_start = now - (weekday(now) as Millis * DAY_MS + now.rem_euclid(DAY_MS));
            let offset = now - week_start;
            let start = from_day as Millis * DAY_MS + from_minute as Millis * 60_000;
            let end = to_day as Millis * DAY_MS + to_minute as Millis * 60_000;
            let (inside, ends) = if start <= end {
                (start <= offset && offset < end, week_start + end)
            } else if offset >= start {
                (true, week_start + WEEK_MS + end)
            } else {
                (offset < end, week_start + end)
            };
            inside.then_some((w, ends))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-20 is a Friday.
    const FRI_NOON: Millis = 1_795_176_000_000;

    #[test]
    fn weekdays_and_dates() {
        assert_eq!(rfc3339(FRI_NOON), "2026-11-20T12:00:00Z");
        assert_eq!(weekday(FRI_NOON), 4);
        assert_eq!(weekday(0), 3);
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn business_days_skip_weekends() {
        // Friday noon + 5 business days = next Friday noon.
        assert_eq!(
            rfc3339(add_business_days(FRI_NOON, 5)),
            "2026-11-27T12:00:00Z"
        );
        // Friday + 1 = Monday.
        assert_eq!(
            rfc3339(add_business_days(FRI_NOON, 1)),
            "2026-11-23T12:00:00Z"
        );
        // Requested Saturday: counts from Monday 00:00.
        let sat = FRI_NOON + DAY_MS;
        assert_eq!(rfc3339(add_business_days(sat, 1)), "2026-11-24T00:00:00Z");
        assert_eq!(add_business_days(FRI_NOON, 0), FRI_NOON);
    }

    #[test]
    fn weekly_freeze_wraps_over_the_weekend() {
        let w = vec![FreezeWindow {
            name: "weekend".into(),
            when: FreezeSpan::Weekly {
                from_day: 4,
                from_minute: 16 * 60,
                to_day: 0,
                to_minute: 8 * 60,
            },
        }];
        assert!(active_freeze(&w, FRI_NOON).is_none());
        let fri_17 = FRI_NOON + 5 * 3_600_000;
        let (_, until) = active_freeze(&w, fri_17).expect("frozen friday evening");
        assert_eq!(rfc3339(until), "2026-11-23T08:00:00Z");
        let sun = FRI_NOON + 2 * DAY_MS;
        assert!(active_freeze(&w, sun).is_some());
        let mon_9 = FRI_NOON + 3 * DAY_MS - 3 * 3_600_000;
        assert_eq!(rfc3339(mon_9), "2026-11-23T09:00:00Z");
        assert!(active_freeze(&w, mon_9).is_none());
        let mon_7 = mon_9 - 2 * 3_600_000;
        assert!(active_freeze(&w, mon_7).is_some());
    }

    #[test]
    fn change_types() {
        let policy = ApprovalPolicy {
            required: 2,
            lead_time: LeadTime::BusinessDays(5),
            emergency_review_ms: DAY_MS as u64,
            allow_standard: false,
        };
        assert!(matches!(
            plan_change(
                "production",
                &policy,
                ChangeType::Standard,
                None,
                &[],
                None,
                FRI_NOON
            ),
            Err(ChangeRefusal::StandardNotAllowed { .. })
        ));
        let normal = plan_change(
            "production",
            &policy,
            ChangeType::Normal,
            None,
            &[],
            None,
            FRI_NOON,
        )
        .expect("normal change");
        assert_eq!(normal.required_before, 2);
        assert_eq!(rfc3339(normal.start_after.unwrap()), "2026-11-27T12:00:00Z");
        let freeze = vec![FreezeWindow {
            name: "year end".into(),
            when: FreezeSpan::Once {
                from: FRI_NOON - 1,
                to: FRI_NOON + DAY_MS,
            },
        }];
        let refused = plan_change(
            "production",
            &policy,
            ChangeType::Normal,
            None,
            &freeze,
            None,
            FRI_NOON,
        );
        assert_eq!(
            refused.unwrap_err().to_string(),
            "production is frozen (year end) until 2026-11-21T12:00:00Z; only emergency changes may deploy"
        );
        let emergency = plan_change(
            "production",
            &policy,
            ChangeType::Emergency,
            None,
            &freeze,
            None,
            FRI_NOON,
        )
        .expect("emergencies go ahead in a freeze");
        assert_eq!(emergency.required_before, 0);
        assert_eq!(emergency.required_after, 2);
        assert_eq!(emergency.review_by, Some(FRI_NOON + DAY_MS));
    }

    #[test]
    fn approvals_refuse_the_initiator_and_duplicates() {
        let c = plan_change(
            "p",
            &ApprovalPolicy {
                required: 1,
                ..ApprovalPolicy::none()
            },
            ChangeType::Normal,
            None,
            &[],
            None,
            0,
        )
        .unwrap();
        assert_eq!(
            check_approval("alice", Some(&c), false, &[], "alice"),
            Err(ApprovalRefusal::Initiator { by: "alice".into() })
        );
        assert_eq!(
            check_approval("alice", Some(&c), false, &["bob".into()], "bob"),
            Err(ApprovalRefusal::Duplicate { by: "bob".into() })
        );
        assert_eq!(check_approval("alice", Some(&c), false, &[], "bob"), Ok(()));
        assert_eq!(
            check_approval("alice", Some(&c), true, &[], "bob"),
            Err(ApprovalRefusal::Finished)
        );
        assert_eq!(
            check_approval("alice", None, false, &[], "bob"),
            Err(ApprovalRefusal::NotNeeded)
        );
    }

    #[test]
    fn roles_grant_permissions() {
        assert!(allowed(&[Role::Viewer], Permission::Read));
        assert!(!allowed(&[Role::Viewer], Permission::Deploy));
        assert!(!allowed(&[Role::Deployer], Permission::Approve));
        assert!(!allowed(&[Role::Approver], Permission::Deploy));
        assert!(allowed(
            &[Role::Deployer, Role::Approver],
            Permission::Approve
        ));
        assert!(allowed(&[Role::Admin], Permission::Administer));
        assert!(!allowed(&[], Permission::Read));
    }
}
