//! What people are told, and what the status page says: derived from a
//! deployment's transitions and state. Pure; the controller delivers.

use crate::analysis::RuleStatus;
use crate::domain::{DeploymentId, Millis};
use crate::machine::{Deployment, DeploymentKind, Event, Phase};
use serde::{Deserialize, Serialize};

/// The standards' notification events.
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
pub enum NoticeKind {
    /// Requested; with a start time when it must wait (lead time, approvals, freeze).
    Scheduled,
    ApprovalRequested,
    Starting,
    Complete,
    Failed,
    RollbackInitiated,
    /// A new release's instance logged at ERROR level during its rollout
    /// (the standards' "alert on ERROR").
    ErrorsLogged,
    /// What runs differs from what the store says (found by the periodic
    /// drift check, between deployments).
    DriftDetected,
}

impl NoticeKind {
    pub const NAMES: &[&str] = &[
        "scheduled",
        "approval_requested",
        "starting",
        "complete",
        "failed",
        "rollback_initiated",
        "errors_logged",
        "drift_detected",
    ];

    pub fn parse(s: &str) -> Result<NoticeKind, String> {
        crate::domain::parse_name("event", s, Self::NAMES)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Scheduled => "scheduled",
            NoticeKind::ApprovalRequested => "approval_requested",
            NoticeKind::Starting => "starting",
            NoticeKind::Complete => "complete",
            NoticeKind::Failed => "failed",
            NoticeKind::RollbackInitiated => "rollback_initiated",
            NoticeKind::ErrorsLogged => "errors_logged",
            NoticeKind::DriftDetected => "drift_detected",
        }
    }

    /// The standards' routing: email for scheduled, complete and rollback;
    /// chat for starting; paging for failures (and rollbacks, resolved on recovery).
    pub fn standard_for(channel: ChannelKind) -> Vec<NoticeKind> {
        use NoticeKind::*;
        match channel {
            ChannelKind::Email => vec![Scheduled, ApprovalRequested, Complete, RollbackInitiated],
            ChannelKind::Slack => vec![
                Starting,
                Complete,
                Failed,
                RollbackInitiated,
                ApprovalRequested,
                ErrorsLogged,
                DriftDetected,
            ],
            ChannelKind::Pagerduty => vec![Failed, RollbackInitiated, Complete],
            ChannelKind::Webhook => vec![
                Scheduled,
                ApprovalRequested,
                Starting,
                Complete,
                Failed,
                RollbackInitiated,
                ErrorsLogged,
                DriftDetected,
            ],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    Slack,
    Pagerduty,
    Email,
    Webhook,
}

/// One thing to tell, with what a reader needs to act on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Notice {
    pub kind: NoticeKind,
    pub deployment: DeploymentId,
    pub env: String,
    pub version: String,
    pub previous_version: Option<String>,
    pub deployment_kind: DeploymentKind,
    pub requested_by: String,
    pub phase: String,
    pub reason: Option<String>,
    /// When a scheduled deployment may start.
    pub start_after: Option<Millis>,
    pub at: Millis,
}

impl Notice {
    /// One line for people.
    pub fn headline(&self, service: &str) -> String {
        let what = match self.deployment_kind {
            DeploymentKind::Deploy => format!("{service} {}", self.version),
            DeploymentKind::Rollback => format!("rollback of {service} to {}", self.version),
        };
        let why = self
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        match self.kind {
            NoticeKind::Scheduled => match self.start_after {
                Some(at) => format!(
                    "{what} to {} scheduled (deployment {}), not before {}",
                    self.env,
                    self.deployment,
                    crate::time::rfc3339(at)
                ),
                None => format!(
                    "{what} to {} scheduled (deployment {})",
                    self.env, self.deployment
                ),
            },
            NoticeKind::ApprovalRequested => format!(
                "{what} to {} awaits approval (deployment {}, requested by {})",
                self.env, self.deployment, self.requested_by
            ),
            NoticeKind::Starting => {
                format!(
                    "{what} to {} starting (deployment {})",
                    self.env, self.deployment
                )
            }
            NoticeKind::Complete => {
                format!(
                    "{what} is live in {} (deployment {})",
                    self.env, self.deployment
                )
            }
            NoticeKind::Failed => format!(
                "{what} to {} {} (deployment {}){why}",
                self.env,
                if self.phase == "rolled_back" {
                    "rolled back"
                } else {
                    "failed"
                },
                self.deployment
            ),
            NoticeKind::RollbackInitiated => format!(
                "{what} to {}: rollback initiated (deployment {}){why}",
                self.env, self.deployment
            ),
            NoticeKind::ErrorsLogged => format!(
                "{what} to {}: errors logged during the rollout (deployment {}){why}",
                self.env, self.deployment
            ),
            NoticeKind::DriftDetected => format!("{} drifted from {what}{why}", self.env),
        }
    }
}

/// What a transition from `before` to `after` (caused by `event`) tells.
pub fn notices(event: &Event, before: &Deployment, after: &Deployment, now: Millis) -> Vec<Notice> {
    let mut kinds = Vec::new();
    let created = matches!(event, Event::Created);
    let entered = |p: Phase| after.phase == p && (before.phase != p || created);
    let announced = |d: &Deployment| d.change.as_ref().is_some_and(|c| c.announced);
    // At the request, and a day before a scheduled change starts.
    if created || (announced(after) && !announced(before)) {
        kinds.push(NoticeKind::Scheduled);
    }
    if entered(Phase::AwaitingApproval)
        && after.change.as_ref().is_some_and(|c| c.required_before > 0)
    {
        kinds.push(NoticeKind::ApprovalRequested);
    }
    let was_waiting = created || before.phase == Phase::AwaitingApproval;
    if was_waiting && !matches!(after.phase, Phase::AwaitingApproval) && !after.phase.is_terminal()
    {
        kinds.push(NoticeKind::Starting);
    }
    // A rollback with nothing to undo ends in the step that starts it.
    if entered(Phase::RollingBack)
        || (entered(Phase::RolledBack) && before.phase != Phase::RollingBack)
    {
        kinds.push(NoticeKind::RollbackInitiated);
    }
    if entered(Phase::Succeeded) {
        kinds.push(NoticeKind::Complete);
    }
    if entered(Phase::Failed) || entered(Phase::RolledBack) {
        kinds.push(NoticeKind::Failed);
    }
    let logged = match event {
        Event::ErrorsLogged {
            instance,
            lines,
            first,
        } if !before.phase.is_terminal() => {
            kinds.push(NoticeKind::ErrorsLogged);
            Some(crate::machine::errors_logged_line(instance, *lines, first))
        }
        _ => None,
    };
    kinds
        .into_iter()
        .map(|kind| Notice {
            kind,
            deployment: after.id,
            env: after.env.to_string(),
            version: after.version.to_string(),
            previous_version: after.previous_version.as_ref().map(|v| v.to_string()),
            deployment_kind: after.kind,
            requested_by: after.requested_by.clone(),
            phase: after.phase.as_str().to_owned(),
            reason: match (kind, &logged) {
                (NoticeKind::ErrorsLogged, Some(line)) => Some(line.clone()),
                _ => after.reason.clone(),
            },
            start_after: after
                .change
                .as_ref()
                .and_then(|c| c.start_after)
                .filter(|_| after.phase == Phase::AwaitingApproval),
            at: now,
        })
        .collect()
}

/// The standards' status page states, best to worst.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ServiceStatus {
    Operational,
    ScheduledMaintenance,
    DegradedPerformance,
    ServiceDisruption,
}

impl ServiceStatus {
    pub fn label(self) -> &'static str {
        match self {
            ServiceStatus::Operational => "Operational",
            ServiceStatus::ScheduledMaintenance => "Scheduled maintenance",
            ServiceStatus::DegradedPerformance => "Degraded performance",
            ServiceStatus::ServiceDisruption => "Service disruption",
        }
    }
}

/// An environment's status from its deployment in progress (if any) and
/// whether its serving instances are all up.
pub fn environment_status(active: Option<&Deployment>, serving_healthy: bool) -> ServiceStatus {
    if !serving_healthy {
        return ServiceStatus::ServiceDisruption;
    }
    let Some(d) = active else {
        return ServiceStatus::Operational;
    };
    if d.phase == Phase::RollingBack {
        return ServiceStatus::ServiceDisruption;
    }
    let degraded = d
        .canary
        .as_ref()
        .and_then(|c| c.last.as_ref())
        .is_some_and(|a| {
            a.reports.iter().any(|r| {
                r.status == RuleStatus::Failing || (r.samples > 0 && r.observed > r.threshold)
            })
        });
    if degraded {
        ServiceStatus::DegradedPerformance
    } else {
        ServiceStatus::ScheduledMaintenance
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::step;

    fn deployment() -> Deployment {
        crate::machine::sample_deployment(
            7,
            "production",
            DeploymentKind::Deploy,
            semver::Version::new(1, 1, 0),
            Some(semver::Version::new(1, 0, 0)),
            0,
        )
    }

    fn kinds(event: &Event, before: &Deployment, now: Millis) -> (Deployment, Vec<NoticeKind>) {
        let t = step(before, event, now);
        let n = notices(event, before, &t.deployment, now);
        (t.deployment, n.into_iter().map(|n| n.kind).collect())
    }

    #[test]
    fn a_deployment_tells_scheduled_starting_then_its_outcome() {
        let d = deployment();
        let (d, k) = kinds(&Event::Created, &d, 1);
        assert_eq!(k, [NoticeKind::Scheduled, NoticeKind::Starting]);
        let (d, k) = kinds(&Event::Prepared, &d, 2);
        assert!(k.is_empty());
        let (started, _) = kinds(
            &Event::InstancesStarted {
                instances: vec![crate::InstanceRef {
                    id: "i1".into(),
                    port: 9001,
                    host: None,
                }],
                failed_hosts: Default::default(),
            },
            &d,
            3,
        );
        let (rolling_back, k) = kinds(&Event::AbortRequested { by: "bob".into() }, &started, 4);
        assert_eq!(k, [NoticeKind::RollbackInitiated]);
        let (done, k) = kinds(&Event::InstancesStopped, &rolling_back, 5);
        assert_eq!(done.phase, Phase::RolledBack);
        assert_eq!(k, [NoticeKind::Failed]);
        assert!(
            notices(&Event::InstancesStopped, &done, &done, 6).is_empty(),
            "nothing new, nothing told"
        );
        // Nothing started yet: the rollback ends in the step that begins it, and both are told.
        let (_, k) = kinds(
            &Event::StartFailed {
                reason: "no port".into(),
            },
            &d,
            3,
        );
        assert_eq!(k, [NoticeKind::RollbackInitiated, NoticeKind::Failed]);
    }

    #[test]
    fn a_change_waiting_for_approval_asks_for_it_and_starts_later() {
        use crate::governance::*;
        let policy = ApprovalPolicy {
            required: 1,
            lead_time: LeadTime::Ms(0),
            emergency_review_ms: 0,
            allow_standard: false,
        };
        let c = plan_change(
            "production",
            &policy,
            ChangeType::Normal,
            None,
            &[],
            None,
            0,
        )
        .unwrap();
        let d = deployment().with_change(c);
        let (d, k) = kinds(&Event::Created, &d, 1);
        assert_eq!(k, [NoticeKind::Scheduled, NoticeKind::ApprovalRequested]);
        let (_, k) = kinds(
            &Event::Approved {
                by: "bob".into(),
                comment: String::new(),
            },
            &d,
            2,
        );
        assert_eq!(k, [NoticeKind::Starting]);
        let (_, k) = kinds(
            &Event::Rejected {
                by: "bob".into(),
                comment: String::new(),
            },
            &d,
            2,
        );
        assert_eq!(k, [NoticeKind::Failed]);
    }

    #[test]
    fn status_follows_the_standards_table() {
        let mut d = deployment();
        assert_eq!(environment_status(None, true), ServiceStatus::Operational);
        assert_eq!(
            environment_status(None, false),
            ServiceStatus::ServiceDisruption
        );
        d.phase = Phase::Baking;
        assert_eq!(
            environment_status(Some(&d), true),
            ServiceStatus::ScheduledMaintenance
        );
        d.phase = Phase::RollingBack;
        assert_eq!(
            environment_status(Some(&d), true),
            ServiceStatus::ServiceDisruption
        );
    }
}
