//! Evidence attached to a release and the gates that judge it.
//!
//! Reports come in the formats CI tools write: JUnit XML (tests), SARIF
//! (security scanners), Cobertura XML or LCOV (coverage). Each is parsed
//! into a small [`Report`]; a file that is malformed or truncated is
//! refused with what was wrong and where. [`evaluate`] holds every gate.

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
    fn from_score(score: f64) -> FindingSeverity {
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
                    .map(|ms| format!(", rollback took {}", crate::machine::seconds(ms)))
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

/// Why a report could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{format}: {message}")]
pub struct ParseError {
    pub format: &'static str,
    pub message: String,
}

fn err(format: &'static str, message: impl Into<String>) -> ParseError {
    ParseError {
        format,
        message: message.into(),
    }
}

/// Parses `bytes` as the report format `kind` expects, recognising the
/// format from the content (coverage may be Cobertura or LCOV).
pub fn parse(kind: EvidenceKind, bytes: &[u8]) -> Result<Report, ParseError> {
    let text =
        std::str::from_utf8(bytes).map_err(|e| err("report", format!("not UTF-8 text: {e}")))?;
    match kind {
        EvidenceKind::Unit | EvidenceKind::Integration => parse_junit(text),
        EvidenceKind::Security => parse_sarif(text),
        EvidenceKind::Coverage => {
            if text.trim_start().starts_with('<') {
                parse_cobertura(text)
            } else {
                parse_lcov(text)
            }
        }
        EvidenceKind::Rehearsal | EvidenceKind::Plan => Err(err(
            "report",
            "rehearsals and plans are recorded by Gantry, not parsed",
        )),
    }
}

fn xml<'a>(format: &'static str, text: &'a str) -> Result<roxmltree::Document<'a>, ParseError> {
    roxmltree::Document::parse(text).map_err(|e| err(format, format!("malformed XML: {e}")))
}

/// JUnit XML: `<testsuites>` or a single `<testsuite>`, counted from the
/// `<testcase>` elements themselves (attributes are often stale).
pub fn parse_junit(text: &str) -> Result<Report, ParseError> {
    let doc = xml("JUnit XML", text)?;
    let root = doc.root_element();
    if !matches!(root.tag_name().name(), "testsuites" | "testsuite") {
        return Err(err(
            "JUnit XML",
            format!(
                "the root element is <{}>, expected <testsuites> or <testsuite>",
                root.tag_name().name()
            ),
        ));
    }
    let (mut tests, mut failures, mut errors, mut skipped) = (0u64, 0u64, 0u64, 0u64);
    let mut failed = Vec::new();
    for case in root.descendants().filter(|n| n.has_tag_name("testcase")) {
        tests += 1;
        let has = |tag: &str| case.children().any(|c| c.has_tag_name(tag));
        let bad = if has("failure") {
            failures += 1;
            true
        } else if has("error") {
            errors += 1;
            true
        } else {
            if has("skipped") {
                skipped += 1;
            }
            false
        };
        if bad && failed.len() < 20 {
            let suite = case
                .ancestors()
                .find(|a| a.has_tag_name("testsuite"))
                .and_then(|s| s.attribute("name"))
                .unwrap_or("");
            let class = case.attribute("classname").unwrap_or(suite);
            failed.push(format!("{class}.{}", case.attribute("name").unwrap_or("?")));
        }
    }
    if tests == 0 {
        return Err(err(
            "JUnit XML",
            "the report has no <testcase>: nothing was tested",
        ));
    }
    Ok(Report::Junit {
        tests,
        failures,
        errors,
        skipped,
        failed,
    })
}

/// SARIF 2.1: every result of every run, with its severity from the
/// `security-severity` score of the result or its rule (as GitHub reads
/// it), else from its level (error → high, warning → medium, note → low).
pub fn parse_sarif(text: &str) -> Result<Report, ParseError> {
    use serde_json::Value;
    let v: Value =
        serde_json::from_str(text).map_err(|e| err("SARIF", format!("malformed JSON: {e}")))?;
    let runs = v
        .get("runs")
        .and_then(Value::as_array)
        .ok_or_else(|| err("SARIF", "no \"runs\" array: not a SARIF log"))?;
    let mut findings = BTreeMap::new();
    let mut tools = Vec::new();
    let mut worst: Vec<(FindingSeverity, String)> = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let driver = run
            .pointer("/tool/driver")
            .ok_or_else(|| err("SARIF", format!("runs[{i}] has no tool.driver")))?;
        let tool = driver
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("unnamed tool");
        tools.push(tool.to_owned());
        let rules = driver.get("rules").and_then(Value::as_array);
        let results = match run.get("results") {
            None | Some(Value::Null) => continue,
            Some(Value::Array(r)) => r,
            Some(_) => return Err(err("SARIF", format!("runs[{i}].results is not an array"))),
        };
        for r in results {
            let rule_id = r.get("ruleId").and_then(Value::as_str);
            let rule = r
                .get("ruleIndex")
                .and_then(Value::as_u64)
                .and_then(|ix| rules.and_then(|rs| rs.get(ix as usize)))
                .or_else(|| {
                    rules.and_then(|rs| {
                        rs.iter()
                            .find(|x| x.get("id").and_then(Value::as_str) == rule_id)
                    })
                });
            let score = |v: Option<&Value>| {
                v.and_then(|p| p.pointer("/properties/security-severity"))
                    .and_then(|s| {
                        s.as_str()
                            .and_then(|s| s.parse::<f64>().ok())
                            .or(s.as_f64())
                    })
            };
            let level = r
                .get("level")
                .and_then(Value::as_str)
                .or_else(|| {
                    rule.and_then(|x| x.pointer("/defaultConfiguration/level"))
                        .and_then(Value::as_str)
                })
                .unwrap_or("warning");
            let severity = match score(Some(r)).or(score(rule)) {
                Some(s) => FindingSeverity::from_score(s),
                None => match level {
                    "error" => FindingSeverity::High,
                    "warning" => FindingSeverity::Medium,
                    "note" => FindingSeverity::Low,
                    _ => continue, // "none": not a finding
                },
            };
            *findings.entry(severity).or_insert(0) += 1;
            let message = r
                .pointer("/message/text")
                .and_then(Value::as_str)
                .unwrap_or("");
            let file = r
                .pointer("/locations/0/physicalLocation/artifactLocation/uri")
                .and_then(Value::as_str)
                .unwrap_or("");
            worst.push((
                severity,
                format!("{}: {message} ({file})", rule_id.unwrap_or("?")),
            ));
        }
    }
    worst.sort_by_key(|w| std::cmp::Reverse(w.0));
    worst.truncate(10);
    Ok(Report::Sarif {
        tools,
        findings,
        worst: worst
            .into_iter()
            .map(|(s, w)| format!("[{}] {w}", s.as_str()))
            .collect(),
    })
}

/// Cobertura XML: `<coverage lines-valid=".." lines-covered="..">`, or
/// its `line-rate` when the counts are missing (then per mille of lines).
pub fn parse_cobertura(text: &str) -> Result<Report, ParseError> {
    let doc = xml("Cobertura XML", text)?;
    let root = doc.root_element();
    if !root.has_tag_name("coverage") {
        return Err(err(
            "Cobertura XML",
            format!(
                "the root element is <{}>, expected <coverage>",
                root.tag_name().name()
            ),
        ));
    }
    let num = |name: &str| -> Result<Option<f64>, ParseError> {
        root.attribute(name)
            .map(|v| {
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| err("Cobertura XML", format!("{name}={v:?} is not a number")))
            })
            .transpose()
    };
    match (
        num("lines-valid")?,
        num("lines-covered")?,
        num("line-rate")?,
    ) {
        (Some(valid), Some(covered), _) if covered <= valid => Ok(Report::Cobertura {
            lines_valid: valid as u64,
            lines_covered: covered as u64,
        }),
        (Some(_), Some(_), _) => Err(err(
            "Cobertura XML",
            "lines-covered is larger than lines-valid",
        )),
        (_, _, Some(rate)) if rate <= 1.0 => Ok(Report::Cobertura {
            lines_valid: 1000,
            lines_covered: (rate * 1000.0).round() as u64,
        }),
        _ => Err(err(
            "Cobertura XML",
            "<coverage> has neither lines-valid and lines-covered nor a line-rate between 0 and 1",
        )),
    }
}

/// One `SF:` record being read: file, LF, LH, DA lines found and hit.
type LcovRecord = (String, Option<u64>, Option<u64>, u64, u64);

/// LCOV tracefile: `SF:` … `LF:`/`LH:` (or `DA:` lines) … `end_of_record`.
/// A record left open at the end means the file was cut short.
pub fn parse_lcov(text: &str) -> Result<Report, ParseError> {
    let (mut files, mut found, mut hit) = (0u64, 0u64, 0u64);
    let mut open: Option<LcovRecord> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        let at = |m: &str| err("LCOV", format!("line {}: {m}", n + 1));
        let int = |v: &str| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| at(&format!("{v:?} is not a count")))
        };
        if let Some(path) = line.strip_prefix("SF:") {
            if let Some((prev, ..)) = &open {
                return Err(at(&format!("record for {prev} has no end_of_record")));
            }
            open = Some((path.to_owned(), None, None, 0, 0));
        } else if line == "end_of_record" {
            let (_, lf, lh, da_found, da_hit) =
                open.take().ok_or_else(|| at("end_of_record without SF:"))?;
            files += 1;
            found += lf.unwrap_or(da_found);
            hit += lh.unwrap_or(da_hit);
        } else if let Some(rest) = line.strip_prefix("DA:") {
            let rec = open.as_mut().ok_or_else(|| at("DA: outside a record"))?;
            let mut parts = rest.split(',');
            let _line_no = int(parts.next().unwrap_or(""))?;
            let count = int(parts.next().unwrap_or(""))?;
            rec.3 += 1;
            if count > 0 {
                rec.4 += 1;
            }
        } else if let Some(v) = line.strip_prefix("LF:") {
            open.as_mut().ok_or_else(|| at("LF: outside a record"))?.1 = Some(int(v)?);
        } else if let Some(v) = line.strip_prefix("LH:") {
            open.as_mut().ok_or_else(|| at("LH: outside a record"))?.2 = Some(int(v)?);
        } else if line.is_empty()
            || line.starts_with("TN:")
            || line.starts_with("FN")
            || line.starts_with("BR")
            || line.starts_with('#')
        {
        } else if open.is_none() {
            return Err(at(&format!("{line:?} is not LCOV")));
        }
    }
    if let Some((path, ..)) = open {
        return Err(err(
            "LCOV",
            format!("truncated: the record for {path} has no end_of_record"),
        ));
    }
    if files == 0 {
        return Err(err("LCOV", "no SF: record: not an LCOV tracefile"));
    }
    if hit > found {
        return Err(err("LCOV", "more lines hit (LH) than found (LF)"));
    }
    Ok(Report::Lcov {
        files,
        lines_found: found,
        lines_hit: hit,
    })
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

#[cfg(test)]
mod tests;
