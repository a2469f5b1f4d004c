//! Evidence attached to a release and the gates that judge it.
//!
//! Reports come in the formats CI tools write: JUnit XML (tests), SARIF
//! (security scanners), Cobertura XML or LCOV (coverage). [`parse`] reads
//! each into a small [`Report`]; a file that is malformed, truncated, too
//! large or too deeply nested, or whose summary disagrees with its records,
//! is refused with what was wrong and where. [`evaluate`] holds every gate.
//!
//! (The canary analysis's statistical evidence, its e-values, is another
//! thing: [`crate::analysis::e_values`].)

use crate::domain::Millis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a piece of evidence is about.
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
pub enum EvidenceKind {
    Unit,
    Integration,
    Security,
    Coverage,
    /// Written by Gantry: a deploy, rollback and redeploy in an environment.
    Rehearsal,
    /// Written by Gantry: an approved deployment plan.
    Plan,
}

impl EvidenceKind {
    /// The kinds a person may upload; rehearsals and plans come from Gantry itself.
    pub const UPLOADABLE: &[&str] = &["unit", "integration", "security", "coverage"];

    pub fn parse_uploadable(s: &str) -> Result<EvidenceKind, String> {
        match s {
            "unit" => Ok(EvidenceKind::Unit),
            "integration" => Ok(EvidenceKind::Integration),
            "security" => Ok(EvidenceKind::Security),
            "coverage" => Ok(EvidenceKind::Coverage),
            "rehearsal" | "plan" => Err(format!(
                "{s} evidence is recorded by Gantry itself (gantry rehearse / gantry plan approve), not uploaded"
            )),
            other => Err(format!(
                "unknown evidence kind {other:?}; expected one of: {}",
                Self::UPLOADABLE.join(", ")
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EvidenceKind::Unit => "unit",
            EvidenceKind::Integration => "integration",
            EvidenceKind::Security => "security",
            EvidenceKind::Coverage => "coverage",
            EvidenceKind::Rehearsal => "rehearsal",
            EvidenceKind::Plan => "plan",
        }
    }
}

/// Severity of a security finding.
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
pub enum FindingSeverity {
    Low,
    Medium,
    High,
    Critical,
}

impl FindingSeverity {
    pub const NAMES: &[&str] = &["low", "medium", "high", "critical"];

    pub fn parse(s: &str) -> Result<FindingSeverity, String> {
        crate::domain::parse_name("severity", s, Self::NAMES)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
    /// From a CVSS-like score, as SARIF's `security-severity` property carries it.
    pub(crate) fn from_score(score: f64) -> FindingSeverity {
        if score >= 9.0 {
            Self::Critical
        } else if score >= 7.0 {
            Self::High
        } else if score >= 4.0 {
            Self::Medium
        } else {
            Self::Low
        }
    }
}

/// What a report says, reduced to what the gates need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "format", rename_all = "snake_case")]
pub enum Report {
    Junit {
        tests: u64,
        failures: u64,
        errors: u64,
        skipped: u64,
        /// The first failing test cases, `suite.class.name`.
        failed: Vec<String>,
    },
    Sarif {
        tools: Vec<String>,
        findings: BTreeMap<FindingSeverity, u64>,
        /// The worst findings, `rule: message (file)`.
        worst: Vec<String>,
    },
    Cobertura {
        lines_valid: u64,
        lines_covered: u64,
    },
    Lcov {
        files: u64,
        lines_found: u64,
        lines_hit: u64,
    },
    /// A rollback rehearsal: deploy, roll back, redeploy.
    Rehearsal {
        env: String,
        passed: bool,
        deployments: Vec<i64>,
        rollback_ms: Option<u64>,
        detail: String,
    },
    /// A deployment plan and who approved it.
    Plan {
        env: String,
        approved_by: String,
        #[serde(default)]
        comment: String,
    },
}

impl Report {
    /// Pass rate in percent, for test reports.
    pub fn pass_pct(&self) -> Option<f64> {
        match self {
            Report::Junit {
                tests,
                failures,
                errors,
                skipped,
                ..
            } => {
                let ran = tests - skipped;
                (ran > 0).then(|| 100.0 * (ran - failures - errors) as f64 / ran as f64)
            }
            _ => None,
        }
    }
    /// Line coverage in percent, for coverage reports.
    pub fn coverage_pct(&self) -> Option<f64> {
        let (valid, covered) = match self {
            Report::Cobertura {
                lines_valid,
                lines_covered,
            } => (*lines_valid, *lines_covered),
            Report::Lcov {
                lines_found,
                lines_hit,
                ..
            } => (*lines_found, *lines_hit),
            _ => return None,
        };
        (valid > 0).then(|| 100.0 * covered as f64 / valid as f64)
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        match self {
            Report::Junit {
                tests,
                failures,
                errors,
                skipped,
                ..
            } => format!(
                "{tests} tests: {} passed, {failures} failed, {errors} errors, {skipped} skipped ({:.1}% pass)",
                tests - failures - errors - skipped,
                self.pass_pct().unwrap_or(0.0)
            ),
            Report::Sarif { findings, tools, .. } => {
                let parts: Vec<String> = findings
                    .iter()
                    .rev()
                    .map(|(s, n)| format!("{n} {}", s.as_str()))
                    .collect();
                let total: u64 = findings.values().sum();
                format!(
                    "{total} finding(s) from {}{}",
                    tools.join(", "),
                    if parts.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", parts.join(", "))
                    }
                )
            }
            Report::Cobertura { .. } | Report::Lcov { .. } => {
                format!("{:.1}% line coverage", self.coverage_pct().unwrap_or(0.0))
            }
            Report::Rehearsal {
                env,
                passed,
                deployments,
                rollback_ms,
                detail,
            } => format!(
                "rollback rehearsal in {env} {} (deployments {:?}{}){}",
                if *passed { "passed" } else { "failed" },
                deployments,
                rollback_ms
                    .map(|ms| format!(", rollback took {}", crate::time::seconds(ms)))
                    .unwrap_or_default(),
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(": {detail}")
                }
            ),
            Report::Plan {
                env,
                approved_by,
                comment,
            } => {
                let comment = if comment.is_empty() {
                    String::new()
                } else {
                    format!(": {comment}")
                };
                format!("deployment plan for {env} approved by {approved_by}{comment}")
            }
        }
    }
}

/// An environment's gates. `None` turns a gate off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GatePolicy {
    pub unit_pass_pct: Option<f64>,
    pub integration_pass_pct: Option<f64>,
    pub coverage_pct: Option<f64>,
    /// The worst finding severity allowed; anything above fails.
    pub max_severity: Option<FindingSeverity>,
    /// A rollback rehearsal must have passed in this environment.
    pub rehearsal_in: Option<String>,
    /// A deployment plan for the environment must be approved.
    pub plan_approved: bool,
}

impl GatePolicy {
    /// The standards: unit 100%, integration ≥ 95%, coverage ≥ 80%, no high
    /// or critical finding; `rehearsal_in` and the plan are per environment.
    pub fn standard() -> GatePolicy {
        GatePolicy {
            unit_pass_pct: Some(100.0),
            integration_pass_pct: Some(95.0),
            coverage_pct: Some(80.0),
            max_severity: Some(FindingSeverity::Medium),
            rehearsal_in: None,
            plan_approved: false,
        }
    }
    /// No gate at all: an environment without a `gates` table.
    pub fn none() -> GatePolicy {
        GatePolicy {
            unit_pass_pct: None,
            integration_pass_pct: None,
            coverage_pct: None,
            max_severity: None,
            rehearsal_in: None,
            plan_approved: false,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.unit_pass_pct.is_none()
            && self.integration_pass_pct.is_none()
            && self.coverage_pct.is_none()
            && self.max_severity.is_none()
            && self.rehearsal_in.is_none()
            && !self.plan_approved
    }
}

/// One piece of evidence as the gates see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Evidence {
    pub id: i64,
    pub kind: EvidenceKind,
    pub report: Report,
    pub added_at: Millis,
}

/// One gate's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GateResult {
    pub gate: String,
    pub passed: bool,
    pub detail: String,
    /// The evidence the verdict rests on.
    pub evidence: Option<i64>,
}

/// Judges `evidence` (the newest of each kind counts) against `policy`
/// for a deployment into `env`.
pub fn evaluate(policy: &GatePolicy, env: &str, evidence: &[Evidence]) -> Vec<GateResult> {
    let newest = |kind: EvidenceKind, pick: &dyn Fn(&Report) -> bool| {
        evidence
            .iter()
            .filter(|e| e.kind == kind && pick(&e.report))
            .max_by_key(|e| (e.added_at, e.id))
    };
    let missing = |gate: &str, what: &str| GateResult {
        gate: gate.to_owned(),
        passed: false,
        detail: format!("no {what} evidence attached"),
        evidence: None,
    };
    let mut out = Vec::new();
    for (gate, kind, min) in [
        ("unit tests", EvidenceKind::Unit, policy.unit_pass_pct),
        (
            "integration tests",
            EvidenceKind::Integration,
            policy.integration_pass_pct,
        ),
    ] {
        let Some(min) = min else { continue };
        out.push(match newest(kind, &|_| true) {
            None => missing(gate, kind.as_str()),
            Some(e) => {
                let pct = e.report.pass_pct().unwrap_or(0.0);
                let mut detail = format!("{}; needs ≥ {min}%", e.report.summary());
                if let Report::Junit { failed, .. } = &e.report {
                    if !failed.is_empty() {
                        detail.push_str(&format!("; failing: {}", failed.join(", ")));
                    }
                }
                GateResult {
                    gate: gate.to_owned(),
                    passed: pct + 1e-9 >= min,
                    detail,
                    evidence: Some(e.id),
                }
            }
        });
    }
    if let Some(min) = policy.coverage_pct {
        out.push(match newest(EvidenceKind::Coverage, &|_| true) {
            None => missing("coverage", "coverage"),
            Some(e) => GateResult {
                gate: "coverage".to_owned(),
                passed: e.report.coverage_pct().unwrap_or(0.0) + 1e-9 >= min,
                detail: format!("{}; needs ≥ {min}%", e.report.summary()),
                evidence: Some(e.id),
            },
        });
    }
    if let Some(max) = policy.max_severity {
        out.push(match newest(EvidenceKind::Security, &|_| true) {
            None => missing("security findings", "security"),
            Some(e) => {
                let (above, worst) = match &e.report {
                    Report::Sarif {
                        findings, worst, ..
                    } => (
                        findings
                            .iter()
                            .filter(|(s, _)| **s > max)
                            .map(|(_, n)| n)
                            .sum::<u64>(),
                        worst.clone(),
                    ),
                    _ => (0, Vec::new()),
                };
                let mut detail =
                    format!("{}; allows none above {}", e.report.summary(), max.as_str());
                if above > 0 {
                    detail.push_str(&format!("; worst: {}", worst.join("; ")));
                }
                GateResult {
                    gate: "security findings".to_owned(),
                    passed: above == 0,
                    detail,
                    evidence: Some(e.id),
                }
            }
        });
    }
    if let Some(rehearsal_env) = &policy.rehearsal_in {
        let found = newest(
            EvidenceKind::Rehearsal,
            &|r| matches!(r, Report::Rehearsal { env, .. } if env == rehearsal_env),
        );
        out.push(match found {
            None => missing(
                "rollback rehearsal",
                &format!("rollback rehearsal in {rehearsal_env}"),
            ),
            Some(e) => GateResult {
                gate: "rollback rehearsal".to_owned(),
                passed: matches!(e.report, Report::Rehearsal { passed: true, .. }),
                detail: e.report.summary(),
                evidence: Some(e.id),
            },
        });
    }
    if policy.plan_approved {
        let found = newest(
            EvidenceKind::Plan,
            &|r| matches!(r, Report::Plan { env: e, .. } if e == env),
        );
        out.push(match found {
            None => missing(
                "deployment plan",
                &format!("approved deployment plan for {env}"),
            ),
            Some(e) => GateResult {
                gate: "deployment plan".to_owned(),
                passed: true,
                detail: e.report.summary(),
                evidence: Some(e.id),
            },
        });
    }
    out
}

mod error;
mod input;
mod parse;
#[cfg(test)]
mod tests;

pub use error::ParseError;
pub use input::{
    MAX_JSON_DEPTH, MAX_JSON_VALUES, MAX_REPORT_BYTES, MAX_XML_ATTRIBUTES, MAX_XML_DEPTH,
    MAX_XML_NODES,
};
pub use parse::parse;
