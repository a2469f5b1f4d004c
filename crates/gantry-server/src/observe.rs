//! What the controller shows about itself: the public status page and its
//! JSON, and Prometheus metrics. Both are derived from the store on each
//! request, so they agree with the records and survive restarts. Functions
//! over the controller's public reads: they add nothing to the controller.

pub use gantry_api::{ActiveDeployment, EnvironmentStatus, FleetStatus, Incident, StatusPage};

use crate::controller::{now_ms, ControlError, Controller};
use gantry_core::analysis::Verdict;
use gantry_core::notify::{environment_status, ServiceStatus};
use gantry_core::{Deployment, DeploymentKind, Phase};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;

/// How far back the status page lists incidents.
const INCIDENT_WINDOW_MS: i64 = 30 * 86_400_000;

/// Why a deployment did not succeed, as a small set of metric labels.
pub fn reason_class(d: &Deployment) -> &'static str {
    if let Some(Verdict::Fail { .. }) = d
        .canary
        .as_ref()
        .and_then(|c| c.last.as_ref())
        .map(|a| &a.verdict)
    {
        return "analysis";
    }
    let r = d.reason.as_deref().unwrap_or("");
    if r.starts_with("health check failed") {
        "health_check"
    } else if r.starts_with("smoke") || r.contains("smoke check") {
        "smoke_check"
    } else if r.starts_with("instances did not become healthy") || r.starts_with("could not start")
    {
        "start"
    } else if r.contains(" exited") {
        "instance_exited"
    } else if r.starts_with("aborted by") {
        "aborted"
    } else if r.starts_with("rejected by") {
        "rejected"
    } else if r.contains("canary") || r.contains("analysis") {
        "analysis"
    } else {
        "other"
    }
}

/// Why a change was rolled back, as the public status page says it: one
/// fixed phrase per kind of cause. The recorded reason can name people
/// (who aborted or rejected it), instances and ports, and carry free text
/// (a rejection's comment); that stays behind the API's token.
pub fn public_reason(d: &Deployment) -> Option<&'static str> {
    if d.phase == Phase::Failed
        && d.reason
            .as_deref()
            .is_some_and(|r| r.starts_with("rollback could not"))
    {
        return Some("the rollback could not complete");
    }
    d.reason.as_ref()?;
    Some(match reason_class(d) {
        "health_check" => "health check failed",
        "smoke_check" => "smoke checks failed",
        "start" => "the new release did not become healthy in time",
        "instance_exited" => "an instance of the new release exited",
        "aborted" => "stopped by an operator",
        "rejected" => "stopped at review",
        "analysis" => "the canary analysis found a regression",
        _ => "stopped",
    })
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    env: String,
    kind: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EnvLabel {
    env: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RollbackReason {
    env: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabel {
    env: String,
    verdict: String,
}

/// One deployment: the latest of its environment.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeploymentLabel {
    env: String,
    deployment: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    env: String,
    deployment: String,
    version: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LastVerdictLabel {
    env: String,
    deployment: String,
    version: String,
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabel {
    channel: String,
    event: String,
    status: String,
}

/// The status page, from what the controller reads out.
pub async fn status_page(c: &Controller) -> Result<StatusPage, ControlError> {
    let states = c.env_states()?;
    let active = c.active_deployments()?;
    let now = now_ms();
    // Each instance asked at once, a host that does not answer bounded.
    let statuses = c.status().await?;
    let mut environments = Vec::new();
    for env in &c.config().environments {
        let state = states.iter().find(|s| s.env == env.name);
        let running = active.iter().find(|d| d.env == env.name);
        let seen = statuses.iter().find(|s| s.name == env.name.as_str());
        // While a deployment runs, its phase says how things are; at
        // rest, every serving instance must be up.
        let healthy =
            running.is_some() || seen.is_none_or(|s| s.instances.iter().all(|i| i.running));
        let fleet = seen.filter(|s| !s.hosts.is_empty()).map(|s| FleetStatus {
            hosts: s.hosts.len() as u32,
            serving: s
                .hosts
                .iter()
                .filter(|h| h.expected > 0 && h.up == h.expected)
                .count() as u32,
            failed: s.hosts.iter().filter(|h| h.failed.is_some()).count() as u32,
        });
        let status = environment_status(running, healthy);
        environments.push(EnvironmentStatus {
            name: env.name.to_string(),
            status,
            label: status.label().to_owned(),
            version: state.map(|s| s.version.to_string()),
            since: state.map(|s| s.since),
            deployment: running.map(|d| ActiveDeployment {
                id: d.id,
                version: d.version.to_string(),
                phase: d.phase,
                weight: d.canary.as_ref().map(|c| c.weight),
            }),
            fleet,
            drift: c.drift_count(env.name.as_str()),
        });
    }
    let incidents = c
        .deployments(None, 200)?
        .into_iter()
        // A rollback touched the service; a failure before anything
        // changed (refused, rejected, bad artifact) did not, unless the
        // rollback itself failed.
        .filter(|d| {
            let failed_rollback = d.phase == Phase::Failed
                && d.reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("rollback could not"));
            (matches!(d.phase, Phase::RolledBack | Phase::RollingBack) || failed_rollback)
                && d.created_at >= now - INCIDENT_WINDOW_MS
        })
        .take(20)
        .map(|d| Incident {
            env: d.env.to_string(),
            deployment: d.id,
            version: d.version.to_string(),
            outcome: d.phase.as_str().to_owned(),
            reason: public_reason(&d).map(str::to_owned),
            started_at: d.created_at,
            resolved_at: d.finished_at,
        })
        .collect();
    let status = environments
        .iter()
        .map(|e| e.status)
        .max()
        .unwrap_or(ServiceStatus::Operational);
    Ok(StatusPage {
        service: c.config().service.name.clone(),
        status,
        label: status.label().to_owned(),
        environments,
        incidents,
        generated_at: now,
    })
}

/// Each environment's latest deployment (the highest id).
fn latest_per_env(all: &[Deployment]) -> Vec<&Deployment> {
    let mut latest: std::collections::BTreeMap<&str, &Deployment> = Default::default();
    for d in all {
        let slot = latest.entry(d.env.as_str()).or_insert(d);
        if d.id > slot.id {
            *slot = d;
        }
    }
    latest.into_values().collect()
}

type RolloutGauges = (
    Family<PhaseLabel, Gauge>,
    Family<DeploymentLabel, Gauge>,
    Family<LastVerdictLabel, Gauge>,
);

/// Where each environment's latest deployment stands, as gauges a
/// dashboard or an alert reads (argo-rollouts #2276): its phase, its canary
/// weight, and its analysis' latest verdict as a state set (1 for the
/// verdict, 0 for the others, so an alert can watch `verdict="fail"`).
fn rollout_gauges(latest: &[&Deployment]) -> RolloutGauges {
    let (phases, weights, verdicts) = RolloutGauges::default();
    for d in latest {
        let labels = DeploymentLabel {
            env: d.env.to_string(),
            deployment: d.id.to_string(),
            version: d.version.to_string(),
        };
        phases
            .get_or_create(&PhaseLabel {
                env: labels.env.clone(),
                deployment: labels.deployment.clone(),
                version: labels.version.clone(),
                phase: d.phase.as_str().to_owned(),
            })
            .set(1);
        let Some(canary) = &d.canary else {
            continue;
        };
        weights.get_or_create(&labels).set(i64::from(canary.weight));
        if let Some(last) = &canary.last {
            let now = match last.verdict {
                Verdict::Fail { .. } => "fail",
                Verdict::NoWorse { .. } => "no_worse",
                Verdict::Continue { .. } => "continue",
            };
            for verdict in ["continue", "no_worse", "fail"] {
                verdicts
                    .get_or_create(&LastVerdictLabel {
                        env: labels.env.clone(),
                        deployment: labels.deployment.clone(),
                        version: labels.version.clone(),
                        verdict: verdict.to_owned(),
                    })
                    .set(i64::from(verdict == now));
            }
        }
    }
    (phases, weights, verdicts)
}

/// Gantry's own metrics in the Prometheus text format.
pub fn metrics_text(c: &Controller) -> Result<String, ControlError> {
    let mut registry = Registry::with_prefix("gantry");
    let deployments = Family::<Outcome, Counter>::default();
    let in_progress = Family::<EnvLabel, Gauge>::default();
    let durations = Family::<Outcome, Histogram>::new_with_constructor(|| {
        Histogram::new([
            1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0,
        ])
    });
    let rollbacks = Family::<RollbackReason, Counter>::default();
    let verdicts = Family::<VerdictLabel, Counter>::default();
    let deliveries = Family::<DeliveryLabel, Counter>::default();
    for env in &c.config().environments {
        in_progress
            .get_or_create(&EnvLabel {
                env: env.name.to_string(),
            })
            .set(0);
    }
    let all = c.deployments(None, 100_000)?;
    for d in &all {
        let env = d.env.to_string();
        if !d.phase.is_terminal() {
            in_progress.get_or_create(&EnvLabel { env }).inc();
            continue;
        }
        let labels = Outcome {
            env: env.clone(),
            kind: match d.kind {
                DeploymentKind::Deploy => "deploy",
                DeploymentKind::Rollback => "rollback",
            }
            .to_owned(),
            outcome: d.phase.as_str().to_owned(),
        };
        deployments.get_or_create(&labels).inc();
        if let Some(f) = d.finished_at {
            durations
                .get_or_create(&labels)
                .observe((f - d.created_at).max(0) as f64 / 1000.0);
        }
        if d.phase == Phase::RolledBack {
            rollbacks
                .get_or_create(&RollbackReason {
                    env: env.clone(),
                    reason: reason_class(d).to_owned(),
                })
                .inc();
        }
        if let Some(a) = d.canary.as_ref().and_then(|c| c.last.as_ref()) {
            let verdict = match a.verdict {
                Verdict::Fail { .. } => "fail",
                Verdict::NoWorse { .. } => "no_worse",
                Verdict::Continue { .. } => "continue",
            };
            verdicts
                .get_or_create(&VerdictLabel {
                    env,
                    verdict: verdict.to_owned(),
                })
                .inc();
        }
    }
    // DORA figures over the last 30 days, per environment (absent: nothing to measure).
    let dora = [
        (
            "dora_deployments_per_day",
            "Deployments gone live per day over the last 30 days",
        ),
        (
            "dora_lead_time_median_seconds",
            "Median time from a release's registration to live, last 30 days",
        ),
        (
            "dora_change_failure_rate",
            "Share of changes that failed in the environment (rolled back), last 30 days",
        ),
        (
            "dora_time_to_restore_median_seconds",
            "Median time from an incident's opening to service restored, last 30 days",
        ),
        (
            "dora_rework_rate",
            "Share of deployments that were rollbacks or emergency changes, last 30 days",
        ),
    ]
    .map(|(name, help)| {
        (
            name,
            help,
            Family::<EnvLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default(),
        )
    });
    for env in &c.config().environments {
        let f = c.dora(env.name.as_str(), 30 * 86_400_000)?;
        let values = [
            f.deployments_per_day,
            f.lead_time.map(|s| s.median_ms as f64 / 1000.0),
            f.change_failure_rate,
            f.time_to_restore.map(|s| s.median_ms as f64 / 1000.0),
            f.rework_rate,
        ];
        for ((_, _, family), value) in dora.iter().zip(values) {
            if let Some(v) = value {
                family
                    .get_or_create(&EnvLabel {
                        env: env.name.to_string(),
                    })
                    .set(v);
            }
        }
    }
    for (name, help, family) in dora {
        registry.register(name, help, family);
    }
    let latest_of_each = latest_per_env(&all);
    let (phases, weights, last_verdicts) = rollout_gauges(&latest_of_each);
    for d in c.deliveries(None, 100_000)? {
        deliveries
            .get_or_create(&DeliveryLabel {
                channel: d.channel,
                event: d.notice.kind.as_str().to_owned(),
                status: d.status,
            })
            .inc();
    }
    registry.register(
        "deployments",
        "Finished deployments by environment, kind and outcome",
        deployments,
    );
    registry.register(
        "deployments_in_progress",
        "Deployments in progress or waiting, by environment",
        in_progress,
    );
    registry.register(
        "deployment_duration_seconds",
        "Time from request to outcome of finished deployments",
        durations,
    );
    registry.register("rollbacks", "Deployments rolled back, by reason", rollbacks);
    registry.register(
        "analysis_verdicts",
        "The last canary analysis verdict of each canary deployment",
        verdicts,
    );
    registry.register(
        "deployment_phase",
        "1 for the phase of each environment's latest deployment (its id, release and phase as labels)",
        phases,
    );
    registry.register(
        "canary_weight",
        "Percent of traffic on the new release of each environment's latest deployment, if a canary",
        weights,
    );
    registry.register(
        "analysis_last_verdict",
        "The latest analysis verdict of each environment's latest judged deployment: 1 for its verdict, 0 for the others (continue, no_worse, fail)",
        last_verdicts,
    );
    registry.register(
        "notification_deliveries",
        "Notification deliveries by channel, event and status",
        deliveries,
    );
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .map_err(|e| ControlError::Internal(format!("metrics: {e}")))?;
    Ok(out)
}

const STATUS_HTML: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="10">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ page.service }} status</title>
<style>
body{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem;color:#1b1f24}
.badge{display:inline-block;padding:.2rem .6rem;border-radius:.4rem;color:#fff;font-weight:600}
.operational{background:#1a7f37}.scheduled_maintenance{background:#0969da}
.degraded_performance{background:#bf8700}.service_disruption{background:#cf222e}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.4rem;border-bottom:1px solid #d0d7de}
small{color:#57606a}
</style></head><body>
<h1>{{ page.service }}</h1>
<p id="overall"><span class="badge {{ page.status }}">{{ page.label }}</span></p>
<h2>Environments</h2>
<table><tr><th>Environment</th><th>Status</th><th>Release</th><th>Now</th></tr>
{% for e in page.environments %}<tr id="env-{{ e.name }}"><td>{{ e.name }}</td><td><span class="badge {{ e.status }}">{{ e.label }}</span></td>
<td>{{ e.version or "—" }}{% if e.fleet %}<br><small class="fleet">{{ e.fleet.serving }} of {{ e.fleet.hosts }} hosts serving{% if e.fleet.failed %}, {{ e.fleet.failed }} failed{% endif %}</small>{% endif %}{% if e.drift %}<br><small class="drift">{{ e.drift }} difference(s) from what should run</small>{% endif %}</td><td>{% if e.deployment %}deploying {{ e.deployment.version }} ({{ e.deployment.phase }}{% if e.deployment.weight %}, {{ e.deployment.weight }}%{% endif %}){% endif %}</td></tr>
{% endfor %}</table>
<h2>Recent incidents</h2>
{% for i in page.incidents %}<p class="incident"><b>{{ i.env }}</b>: {{ i.version }} {{ i.outcome | replace("_", " ") }}{% if i.reason %}: {{ i.reason }}{% endif %}<br><small>deployment {{ i.deployment }}, {{ i.started }}{% if i.resolved %} – {{ i.resolved }}{% endif %}</small></p>
{% else %}<p>No incidents in the last 30 days.</p>{% endfor %}
<p><small>Updated {{ generated }} · <a href="/status.json">JSON</a></small></p>
</body></html>
"#;

/// The status page as HTML (escaped by the template engine).
pub fn status_html(page: &StatusPage) -> Result<String, ControlError> {
    #[derive(Serialize, schemars::JsonSchema)]
    struct Shown<'a> {
        #[serde(flatten)]
        incident: &'a Incident,
        started: String,
        resolved: Option<String>,
    }
    let incidents: Vec<Shown<'_>> = page
        .incidents
        .iter()
        .map(|i| Shown {
            incident: i,
            started: gantry_core::governance::rfc3339(i.started_at),
            resolved: i.resolved_at.map(gantry_core::governance::rfc3339),
        })
        .collect();
    let mut engine = minijinja::Environment::new();
    engine.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    let mut value =
        serde_json::to_value(page).map_err(|e| ControlError::Internal(e.to_string()))?;
    value["incidents"] =
        serde_json::to_value(incidents).map_err(|e| ControlError::Internal(e.to_string()))?;
    engine
        .render_str(
            STATUS_HTML,
            minijinja::context! {
                page => value,
                generated => gantry_core::governance::rfc3339(page.generated_at),
            },
        )
        .map_err(|e| ControlError::Internal(format!("status page: {e}")))
}
