//! DORA metrics from Gantry's own records, per environment and period.
//! Pure: the controller hands in the deployments, incidents and release
//! times it keeps; every figure says how many records it rests on, and a
//! period without any says so instead of dividing by zero.

use crate::domain::Millis;
use crate::governance::ChangeType;
use crate::incidents::Incident;
use crate::machine::{Deployment, DeploymentKind, Phase};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const DAY_MS: f64 = 86_400_000.0;

/// A median and a 90th percentile (nearest rank) of durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Spread {
    pub median_ms: u64,
    pub p90_ms: u64,
    pub count: u64,
}

/// The figures of one environment over one period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Dora {
    pub env: String,
    pub since: Millis,
    pub until: Millis,
    /// Deployments (not rollbacks) that went live in the period.
    pub deployments: u64,
    /// Those per day; none for a period without any.
    pub deployments_per_day: Option<f64>,
    /// From the release's commit (or, when its time is unknown, its
    /// registration) to live in this environment.
    pub lead_time: Option<Spread>,
    /// Changes that reached users (went live, or rolled back after taking traffic).
    pub changes: u64,
    /// Those that failed there: rolled back by the analysis or a person.
    pub failed_changes: u64,
    pub change_failure_rate: Option<f64>,
    /// From an incident's opening to service restored.
    pub time_to_restore: Option<Spread>,
    /// Every deployment finished in the period, rollbacks included.
    pub all_deployments: u64,
    /// Unplanned ones among them: rollbacks and emergency changes.
    pub rework: u64,
    pub rework_rate: Option<f64>,
}

fn spread(mut ms: Vec<u64>) -> Option<Spread> {
    if ms.is_empty() {
        return None;
    }
    ms.sort_unstable();
    let rank = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    Some(Spread {
        median_ms: rank(0.5),
        p90_ms: rank(0.9),
        count: ms.len() as u64,
    })
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// The figures of `env` over `[since, until]` from its deployments, its
/// incidents and the registration time of each release (by version).
pub fn compute(
    env: &str,
    since: Millis,
    until: Millis,
    deployments: &[Deployment],
    incidents: &[Incident],
    registered: &BTreeMap<String, Millis>,
) -> Dora {
    let finished_in = |d: &&Deployment| {
        d.env.as_str() == env && d.finished_at.is_some_and(|f| f >= since && f <= until)
    };
    let done: Vec<&Deployment> = deployments.iter().filter(finished_in).collect();
    let deploys = || done.iter().filter(|d| d.kind == DeploymentKind::Deploy);
    let live: Vec<&&Deployment> = deploys().filter(|d| d.phase == Phase::Succeeded).collect();
    let lead: Vec<u64> = live
        .iter()
        .filter_map(|d| {
            let built = registered.get(&d.version.to_string())?;
            Some((d.finished_at? - built).max(0) as u64)
        })
        .collect();
    // Rolled back after taking traffic, or withdrawn later by a person.
    let rolled_back = deploys().filter(|d| d.phase == Phase::RolledBack).count() as u64;
    let withdrawn = live
        .iter()
        .filter(|d| {
            incidents.iter().any(|i| {
                i.env == env
                    && i.kind == crate::incidents::IncidentKind::Manual
                    && i.release.as_deref() == Some(d.version.to_string().as_str())
                    && d.finished_at.is_some_and(|f| i.opened_at >= f)
            })
        })
        .count() as u64;
    let changes = live.len() as u64 + rolled_back;
    let failed_changes = rolled_back + withdrawn;
    let restore: Vec<u64> = incidents
        .iter()
        .filter(|i| i.env == env && i.opened_at >= since && i.opened_at <= until)
        .filter_map(|i| Some((i.restored_at? - i.opened_at).max(0) as u64))
        .collect();
    let rework = done
        .iter()
        .filter(|d| {
            d.kind == DeploymentKind::Rollback
                || d.change
                    .as_ref()
                    .is_some_and(|c| c.change == ChangeType::Emergency)
        })
        .count() as u64;
    let days = (until - since).max(0) as f64 / DAY_MS;
    Dora {
        env: env.to_owned(),
        since,
        until,
        deployments: live.len() as u64,
        deployments_per_day: (days > 0.0 && !live.is_empty()).then(|| live.len() as f64 / days),
        lead_time: spread(lead),
        changes,
        failed_changes,
        change_failure_rate: ratio(failed_changes, changes),
        time_to_restore: spread(restore),
        all_deployments: done.len() as u64,
        rework,
        rework_rate: ratio(rework, done.len() as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incidents::IncidentKind;

    const DAY: Millis = 86_400_000;
    const MIN: Millis = 60_000;

    fn d(
        id: i64,
        env: &str,
        kind: DeploymentKind,
        v: (u64, u64),
        phase: Phase,
        at: Millis,
    ) -> Deployment {
        let mut d = crate::machine::sample_deployment(
            id,
            env,
            kind,
            semver::Version::new(1, v.0, v.1),
            None,
            at - MIN,
        );
        d.phase = phase;
        d.finished_at = Some(at);
        d
    }

    fn incident(kind: IncidentKind, release: &str, opened: Millis, restored: Millis) -> Incident {
        Incident {
            id: opened,
            deployment: 0,
            env: "production".into(),
            kind,
            opened_at: opened,
            release: Some(release.into()),
            restored_to: None,
            reason: "x".into(),
            restored_at: Some(restored),
            closed: None,
        }
    }

    #[test]
    fn figures_from_a_hand_made_history() {
        use DeploymentKind::{Deploy, Rollback};
        let mut emergency = d(5, "production", Deploy, (3, 0), Phase::Succeeded, 5 * DAY);
        emergency.change = Some(
            crate::governance::plan_change(
                "production",
                &crate::governance::ApprovalPolicy::none(),
                ChangeType::Emergency,
                None,
                &[],
                None,
                0,
            )
            .unwrap(),
        );
        let history = [
            d(1, "production", Deploy, (0, 0), Phase::Succeeded, DAY),
            d(2, "production", Deploy, (1, 0), Phase::RolledBack, 2 * DAY),
            d(3, "production", Deploy, (2, 0), Phase::Succeeded, 3 * DAY),
            d(4, "production", Rollback, (0, 0), Phase::Succeeded, 4 * DAY),
            emergency,
            d(6, "staging", Deploy, (2, 0), Phase::Succeeded, 3 * DAY),
            d(7, "production", Deploy, (4, 0), Phase::Succeeded, 11 * DAY),
        ];
        let incidents = [
            incident(
                IncidentKind::Automatic,
                "1.1.0",
                2 * DAY - 10 * MIN,
                2 * DAY,
            ),
            incident(IncidentKind::Manual, "1.2.0", 4 * DAY - 5 * MIN, 4 * DAY),
        ];
        let registered = BTreeMap::from([
            ("1.0.0".to_owned(), DAY / 2),
            ("1.2.0".to_owned(), DAY),
            ("1.3.0".to_owned(), 5 * DAY - DAY / 10),
        ]);
        let f = compute("production", 0, 10 * DAY, &history, &incidents, &registered);
        assert_eq!(f.deployments, 3);
        assert_eq!(f.deployments_per_day, Some(0.3));
        assert_eq!(
            f.lead_time,
            Some(Spread {
                median_ms: (DAY / 2) as u64,
                p90_ms: (2 * DAY) as u64,
                count: 3
            })
        );
        assert_eq!((f.changes, f.failed_changes), (4, 2));
        assert_eq!(f.change_failure_rate, Some(0.5));
        assert_eq!(
            f.time_to_restore,
            Some(Spread {
                median_ms: (5 * MIN) as u64,
                p90_ms: (10 * MIN) as u64,
                count: 2
            })
        );
        assert_eq!((f.all_deployments, f.rework), (5, 2));
        assert_eq!(f.rework_rate, Some(0.4));
    }

    #[test]
    fn a_period_without_records_says_so_and_divides_by_nothing() {
        let f = compute("production", 0, DAY, &[], &[], &BTreeMap::new());
        assert_eq!(f.deployments, 0);
        assert_eq!(f.deployments_per_day, None);
        assert_eq!(f.lead_time, None);
        assert_eq!(f.change_failure_rate, None);
        assert_eq!(f.time_to_restore, None);
        assert_eq!(f.rework_rate, None);
    }
}
