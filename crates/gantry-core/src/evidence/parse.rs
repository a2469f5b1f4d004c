//! The report formats CI tools write, read into a [`Report`].
//!
//! Figures come from a report's records, never from its summary: test
//! counts from the `<testcase>` elements, coverage from the Cobertura
//! `<line>` elements and the LCOV `DA:` lines. A summary that disagrees with
//! its records is refused with both figures, since one of them is a lie.

use super::error::{err, ParseError};
use super::input::{self, MAX_XML_NODES};
use super::{EvidenceKind, FindingSeverity, Report};
use std::collections::{BTreeMap, HashMap};

const JUNIT: &str = "JUnit XML";
const SARIF: &str = "SARIF";
const COBERTURA: &str = "Cobertura XML";
const LCOV: &str = "LCOV";

/// Parses `bytes` as the report format `kind` expects, recognising the
/// format from the content (coverage may be Cobertura or LCOV). The size
/// and nesting depth are bounded before any parser runs (see
/// [`super::MAX_XML_DEPTH`]), so hostile input is refused, never a crash.
pub fn parse(kind: EvidenceKind, bytes: &[u8]) -> Result<Report, ParseError> {
    let format = match kind {
        EvidenceKind::Unit | EvidenceKind::Integration => JUNIT,
        EvidenceKind::Security => SARIF,
        EvidenceKind::Coverage => "coverage report",
        EvidenceKind::Rehearsal | EvidenceKind::Plan => {
            return Err(err(
                "report",
                "rehearsals and plans are recorded by Gantry, not parsed",
            ))
        }
    };
    let text = input::decode(format, bytes)?;
    match kind {
        EvidenceKind::Security => parse_sarif(&text),
        EvidenceKind::Coverage if text.trim_start().starts_with('<') => parse_cobertura(&text),
        EvidenceKind::Coverage => parse_lcov(&text),
        _ => parse_junit(&text),
    }
}

/// Parses XML whose depth [`input::check_xml`] has bounded. A DOCTYPE is let
/// through to the parser only once the check has seen that it has no
/// internal subset: an external DTD is never fetched, so no entity but the
/// five predefined ones can be referenced.
fn xml<'a>(format: &'static str, text: &'a str) -> Result<roxmltree::Document<'a>, ParseError> {
    input::check_size(format, text.len())?;
    input::check_xml(format, text)?;
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        nodes_limit: MAX_XML_NODES,
    };
    roxmltree::Document::parse_with_options(text, options).map_err(|e| match e {
        roxmltree::Error::NodesLimitReached => err(
            format,
            format!("the report has more than {MAX_XML_NODES} XML nodes; refused"),
        ),
        e => err(format, format!("malformed XML: {e}")),
    })
}

/// JUnit XML: `<testsuites>` or a single `<testsuite>`, counted from the
/// `<testcase>` elements themselves (attributes are often stale).
fn parse_junit(text: &str) -> Result<Report, ParseError> {
    let doc = xml(JUNIT, text)?;
    let root = doc.root_element();
    if !matches!(root.tag_name().name(), "testsuites" | "testsuite") {
        return Err(err(
            JUNIT,
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
            JUNIT,
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

/// A `security-severity` property of `on`, if it has one: a score from 0 to
/// 10, as a number or a numeric string. Anything else is refused rather than
/// read as low: a scanner that wrote `"NaN"` did not mean "harmless".
fn security_severity(
    on: &serde_json::Value,
    at: impl Fn() -> String,
) -> Result<Option<f64>, ParseError> {
    use serde_json::Value;
    let Some(raw) = on.pointer("/properties/security-severity") else {
        return Ok(None);
    };
    let score = match raw {
        Value::String(s) => s.trim().parse::<f64>().ok(),
        Value::Number(n) => n.as_f64(),
        _ => None,
    };
    match score {
        Some(s) if s.is_finite() && (0.0..=10.0).contains(&s) => Ok(Some(s)),
        _ => Err(err(
            SARIF,
            format!(
                "{}: security-severity {raw} is not a score from 0 to 10",
                at()
            ),
        )),
    }
}

/// SARIF 2.1.0: every result of every run, with its severity from the
/// `security-severity` score of the result or its rule (as GitHub reads
/// it), else from its level (error → high, warning → medium, note → low).
fn parse_sarif(text: &str) -> Result<Report, ParseError> {
    use serde_json::Value;
    input::check_size(SARIF, text.len())?;
    input::check_json(SARIF, text)?;
    let v: Value =
        serde_json::from_str(text).map_err(|e| err(SARIF, format!("malformed JSON: {e}")))?;
    match v.get("version") {
        Some(Value::String(version)) if version == "2.1.0" => {}
        Some(other) => {
            return Err(err(
                SARIF,
                format!("version is {other}; Gantry reads SARIF \"2.1.0\""),
            ))
        }
        None => {
            return Err(err(
                SARIF,
                "no \"version\": expected \"2.1.0\", the SARIF version Gantry reads",
            ))
        }
    }
    let runs = v
        .get("runs")
        .and_then(Value::as_array)
        .ok_or_else(|| err(SARIF, "no \"runs\" array: not a SARIF log"))?;
    let mut findings = BTreeMap::new();
    let mut tools = Vec::new();
    let mut worst: Vec<(FindingSeverity, String)> = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let driver = run
            .pointer("/tool/driver")
            .ok_or_else(|| err(SARIF, format!("runs[{i}] has no tool.driver")))?;
        let tool = driver
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("unnamed tool");
        tools.push(tool.to_owned());
        let rules = driver.get("rules").and_then(Value::as_array);
        let rule_scores = rules
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(j, rule)| {
                security_severity(rule, || format!("runs[{i}].tool.driver.rules[{j}]"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Looked up once per result: a map keeps a large log linear.
        let mut rule_by_id: HashMap<&str, usize> = HashMap::new();
        for (j, rule) in rules.into_iter().flatten().enumerate() {
            if let Some(id) = rule.get("id").and_then(Value::as_str) {
                rule_by_id.entry(id).or_insert(j);
            }
        }
        let results = match run.get("results") {
            None | Some(Value::Null) => continue,
            Some(Value::Array(r)) => r,
            Some(_) => return Err(err(SARIF, format!("runs[{i}].results is not an array"))),
        };
        for (k, r) in results.iter().enumerate() {
            let rule_id = r.get("ruleId").and_then(Value::as_str);
            let rule_index = r
                .get("ruleIndex")
                .and_then(Value::as_u64)
                .and_then(|ix| usize::try_from(ix).ok())
                .filter(|&ix| rules.is_some_and(|rs| ix < rs.len()))
                .or_else(|| rule_id.and_then(|id| rule_by_id.get(id).copied()));
            let rule = rule_index.and_then(|ix| rules.and_then(|rs| rs.get(ix)));
            let score = match security_severity(r, || format!("runs[{i}].results[{k}]"))? {
                Some(s) => Some(s),
                None => rule_index.and_then(|ix| rule_scores[ix]),
            };
            let level = r
                .get("level")
                .and_then(Value::as_str)
                .or_else(|| {
                    rule.and_then(|x| x.pointer("/defaultConfiguration/level"))
                        .and_then(Value::as_str)
                })
                .unwrap_or("warning");
            let severity = match score {
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

/// How far a Cobertura `line-rate` may stray from the rate of its records
/// before it counts as disagreeing: tools round it, to four places or fewer.
const LINE_RATE_SLACK: f64 = 0.01;

/// Cobertura XML: coverage counted from the `<line number=".." hits="..">`
/// elements of each `<class>` (the copies under `<method>` are not counted
/// twice). The `<coverage>` header's `lines-valid`, `lines-covered` and
/// `line-rate` must agree with those records where present.
fn parse_cobertura(text: &str) -> Result<Report, ParseError> {
    let doc = xml(COBERTURA, text)?;
    let root = doc.root_element();
    if !root.has_tag_name("coverage") {
        return Err(err(
            COBERTURA,
            format!(
                "the root element is <{}>, expected <coverage>",
                root.tag_name().name()
            ),
        ));
    }
    let (mut valid, mut covered) = (0u64, 0u64);
    for line in root.descendants().filter(|n| n.has_tag_name("line")) {
        // Only on error: finding the row scans the text from its start.
        let at = |message: String| {
            let row = doc.text_pos_at(line.range().start).row;
            err(COBERTURA, format!("line {row}: {message}"))
        };
        let count = |name: &str| -> Result<u64, ParseError> {
            let v = line
                .attribute(name)
                .ok_or_else(|| at(format!("<line> has no {name} attribute")))?;
            v.trim()
                .parse::<u64>()
                .map_err(|_| at(format!("<line {name}={v:?}> is not a whole number ≥ 0")))
        };
        count("number")?;
        let hits = count("hits")?;
        let of_a_class = line
            .parent()
            .filter(|p| p.has_tag_name("lines"))
            .and_then(|p| p.parent())
            .is_some_and(|c| c.has_tag_name("class"));
        if of_a_class {
            valid += 1;
            covered += u64::from(hits > 0);
        }
    }
    if valid == 0 {
        return Err(err(
            COBERTURA,
            "the report has no <class> <line> records: nothing was measured",
        ));
    }
    let header = |name: &str| -> Result<Option<(&str, f64)>, ParseError> {
        root.attribute(name)
            .map(|v| {
                v.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .map(|x| (v, x))
                    .ok_or_else(|| err(COBERTURA, format!("{name}={v:?} is not a number ≥ 0")))
            })
            .transpose()
    };
    let rate = covered as f64 / valid as f64;
    let records = format!(
        "the <line> records give {covered} of {valid} lines covered ({:.1}%)",
        100.0 * rate
    );
    if let Some((v, x)) = header("lines-valid")? {
        if x != valid as f64 {
            return Err(err(
                COBERTURA,
                format!("the header says lines-valid={v:?} but {records}"),
            ));
        }
    }
    if let Some((v, x)) = header("lines-covered")? {
        if x != covered as f64 {
            return Err(err(
                COBERTURA,
                format!("the header says lines-covered={v:?} but {records}"),
            ));
        }
    }
    if let Some((v, x)) = header("line-rate")? {
        if (x - rate).abs() > LINE_RATE_SLACK {
            return Err(err(
                COBERTURA,
                format!("the header says line-rate={v:?} but {records}"),
            ));
        }
    }
    Ok(Report::Cobertura {
        lines_valid: valid,
        lines_covered: covered,
    })
}

/// One `SF:` record being read.
struct LcovRecord {
    path: String,
    /// The `LF:` and `LH:` summaries, with the line they are on.
    lines_found: Option<(u64, usize)>,
    lines_hit: Option<(u64, usize)>,
    /// Counted from the `DA:` lines.
    da_found: u64,
    da_hit: u64,
}

/// LCOV tracefile: `SF:` … `DA:` lines … `LF:`/`LH:` … `end_of_record`.
/// Coverage is counted from the `DA:` lines; `LF:`/`LH:` must agree with
/// them. A record left open at the end means the file was cut short.
fn parse_lcov(text: &str) -> Result<Report, ParseError> {
    input::check_size(LCOV, text.len())?;
    let (mut files, mut found, mut hit) = (0u64, 0u64, 0u64);
    let mut open: Option<LcovRecord> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        let at = |m: &str| err(LCOV, format!("line {}: {m}", n + 1));
        let int = |v: &str| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| at(&format!("{v:?} is not a count")))
        };
        if let Some(path) = line.strip_prefix("SF:") {
            if let Some(prev) = &open {
                return Err(at(&format!(
                    "record for {} has no end_of_record",
                    prev.path
                )));
            }
            open = Some(LcovRecord {
                path: path.to_owned(),
                lines_found: None,
                lines_hit: None,
                da_found: 0,
                da_hit: 0,
            });
        } else if line == "end_of_record" {
            let rec = open.take().ok_or_else(|| at("end_of_record without SF:"))?;
            for (summary, said, counted) in [
                ("LF", rec.lines_found, rec.da_found),
                ("LH", rec.lines_hit, rec.da_hit),
            ] {
                if let Some((said, on)) = said.filter(|(said, _)| *said != counted) {
                    return Err(err(
                        LCOV,
                        format!(
                            "line {on}: the record for {} says {summary}:{said} but its DA: lines give {summary}:{counted}",
                            rec.path
                        ),
                    ));
                }
            }
            files += 1;
            found += rec.da_found;
            hit += rec.da_hit;
        } else if let Some(rest) = line.strip_prefix("DA:") {
            let rec = open.as_mut().ok_or_else(|| at("DA: outside a record"))?;
            let mut parts = rest.split(',');
            let _line_no = int(parts.next().unwrap_or(""))?;
            let count = int(parts.next().unwrap_or(""))?;
            rec.da_found += 1;
            rec.da_hit += u64::from(count > 0);
        } else if let Some(v) = line.strip_prefix("LF:") {
            open.as_mut()
                .ok_or_else(|| at("LF: outside a record"))?
                .lines_found = Some((int(v)?, n + 1));
        } else if let Some(v) = line.strip_prefix("LH:") {
            open.as_mut()
                .ok_or_else(|| at("LH: outside a record"))?
                .lines_hit = Some((int(v)?, n + 1));
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
    if let Some(rec) = open {
        return Err(err(
            LCOV,
            format!(
                "truncated: the record for {} has no end_of_record",
                rec.path
            ),
        ));
    }
    if files == 0 {
        return Err(err(LCOV, "no SF: record: not an LCOV tracefile"));
    }
    if found == 0 {
        return Err(err(LCOV, "no DA: line records: nothing was measured"));
    }
    Ok(Report::Lcov {
        files,
        lines_found: found,
        lines_hit: hit,
    })
}
