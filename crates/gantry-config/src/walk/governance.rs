//! Decoding the governance tables of an environment: `approval`, `freeze`
//! and `gates`.

use super::{describe, join, Val, Walker};
use gantry_core::evidence::{FindingSeverity, GatePolicy};
use gantry_core::governance::{ApprovalPolicy, FreezeSpan, FreezeWindow, LeadTime};
use toml::de::DeValue;

const DAYS: &[&str] = &["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// The standards: changes need approval, five business days ahead, and
/// emergency changes are reviewed within two days.
pub(super) fn decode_approval(
    w: &mut Walker<'_>,
    v: &Val<'_>,
    path: &str,
) -> Option<ApprovalPolicy> {
    let t = w.table(v, path)?;
    w.check_keys::<crate::schema::ApprovalSection>(t, path);
    let required = match t.get("required") {
        Some(r) => w.count::<crate::schema::ApprovalSection>(r, path, "required"),
        None => Some(1),
    };
    let lead_time = match t.get("lead_time") {
        Some(l) => lead_time(w, l, &join(path, "lead_time")),
        None => Some(LeadTime::BusinessDays(5)),
    };
    let emergency_review = match t.get("emergency_review") {
        Some(e) => w.duration(e, &join(path, "emergency_review")),
        None => Some(2 * 86_400_000),
    };
    let allow_standard = match t.get("allow_standard") {
        Some(a) => w.bool(a, &join(path, "allow_standard")),
        None => Some(false),
    };
    Some(ApprovalPolicy {
        required: required?,
        lead_time: lead_time?,
        emergency_review_ms: emergency_review?,
        allow_standard: allow_standard?,
    })
}

/// `"5 business days"`, or a plain duration such as `"48h"` or `"0s"`.
fn lead_time(w: &mut Walker<'_>, v: &Val<'_>, path: &str) -> Option<LeadTime> {
    if let DeValue::String(s) = v.get_ref() {
        let words: Vec<&str> = s.split_whitespace().collect();
        if let [n, "business", "days" | "day"] = words.as_slice() {
            return match n.parse::<u32>() {
                Ok(n) if n <= 60 => Some(LeadTime::BusinessDays(n)),
                _ => {
                    w.error(
                        v.span(),
                        path,
                        format!("{n:?} business days: expected a whole number from 0 to 60"),
                    );
                    None
                }
            };
        }
    }
    w.duration(v, path).map(LeadTime::Ms)
}

pub(super) fn decode_freezes(
    w: &mut Walker<'_>,
    v: &Val<'_>,
    path: &str,
) -> Option<Vec<FreezeWindow>> {
    let DeValue::Array(items) = v.get_ref() else {
        w.error(
            v.span(),
            path,
            format!(
                "expected an array of tables ([[{path}]]) with name and from/to or weekly, found {}",
                describe(v.get_ref())
            ),
        );
        return None;
    };
    let mut out = Vec::new();
    let mut ok = true;
    for (n, item) in items.iter().enumerate() {
        match decode_freeze(w, item, &format!("{path}[{n}]")) {
            Some(f) => out.push(f),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn decode_freeze(w: &mut Walker<'_>, v: &Val<'_>, path: &str) -> Option<FreezeWindow> {
    let t = w.table(v, path)?;
    w.check_keys::<crate::schema::FreezeSection>(t, path);
    let name = super::required(w, t, v, path, "name", |w, v, p| w.non_empty_string(v, p));
    let when = match (t.get("from"), t.get("to"), t.get("weekly")) {
        (Some(f), Some(to), None) => {
            let from = instant(w, f, &join(path, "from"));
            let until = instant(w, to, &join(path, "to"));
            match (from, until) {
                (Some(from), Some(until)) if from < until => {
                    Some(FreezeSpan::Once { from, to: until })
                }
                (Some(_), Some(_)) => {
                    w.error(to.span(), &join(path, "to"), "must be later than from");
                    None
                }
                _ => None,
            }
        }
        (None, None, Some(wk)) => weekly(w, wk, &join(path, "weekly")),
        _ => {
            w.error(
                v.span(),
                path,
                "a freeze needs either from and to (RFC 3339 instants) or weekly = { from = \"fri 16:00\", to = \"mon 08:00\" }",
            );
            None
        }
    };
    Some(FreezeWindow {
        name: name?,
        when: when?,
    })
}

fn instant(w: &mut Walker<'_>, v: &Val<'_>, path: &str) -> Option<i64> {
    let s = w.string(v, path)?;
    match humantime::parse_rfc3339_weak(&s) {
        Ok(t) => t
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_millis() as i64),
        Err(_) => {
            w.error(
                v.span(),
                path,
                format!("{s:?} is not an instant; expected RFC 3339 in UTC such as \"2026-12-20T00:00:00Z\""),
            );
            None
        }
    }
}

fn weekly(w: &mut Walker<'_>, v: &Val<'_>, path: &str) -> Option<FreezeSpan> {
    let t = w.table(v, path)?;
    w.check_keys::<crate::schema::WeeklySection>(t, path);
    let mut point = |key: &str| -> Option<(u32, u32)> {
        let p = join(path, key);
        let Some(pv) = t.get(key) else {
            w.error(v.span(), &p, format!("missing required key {key:?}"));
            return None;
        };
        let s = w.string(pv, &p)?;
        let parsed = s.split_once(' ').and_then(|(day, time)| {
            let d = DAYS.iter().position(|x| day.eq_ignore_ascii_case(x))? as u32;
            let (h, m) = time.split_once(':')?;
            let (h, m) = (h.parse::<u32>().ok()?, m.parse::<u32>().ok()?);
            (h < 24 && m < 60).then_some((d, h * 60 + m))
        });
        if parsed.is_none() {
            w.error(
                pv.span(),
                &p,
                format!("{s:?} is not a weekday and time; expected e.g. \"fri 16:00\" (UTC)"),
            );
        }
        parsed
    };
    let (from, to) = (point("from"), point("to"));
    let ((from_day, from_minute), (to_day, to_minute)) = (from?, to?);
    if (from_day, from_minute) == (to_day, to_minute) {
        w.error(v.span(), path, "from and to are the same moment");
        return None;
    }
    Some(FreezeSpan::Weekly {
        from_day,
        from_minute,
        to_day,
        to_minute,
    })
}

/// Each gate defaults to the standards' number; `false` turns it off.
pub(super) fn decode_gates(w: &mut Walker<'_>, v: &Val<'_>, path: &str) -> Option<GatePolicy> {
    let t = w.table(v, path)?;
    w.check_keys::<crate::schema::GatesSection>(t, path);
    let std = GatePolicy::standard();
    let mut pct = |key: &str, default: Option<f64>| match t.get(key) {
        Some(pv) => w.threshold::<crate::schema::GatesSection>(pv, path, key),
        None => Some(default),
    };
    let unit = pct("unit", std.unit_pass_pct);
    let integration = pct("integration", std.integration_pass_pct);
    let coverage = pct("coverage", std.coverage_pct);
    let max_severity = match t.get("max_severity") {
        Some(sv) => match sv.get_ref() {
            DeValue::Boolean(false) => Some(None),
            _ => {
                let p = join(path, "max_severity");
                let s = w.string(sv, &p)?;
                match FindingSeverity::parse(&s) {
                    Ok(s) => Some(Some(s)),
                    Err(e) => {
                        w.error(sv.span(), &p, e);
                        None
                    }
                }
            }
        },
        None => Some(std.max_severity),
    };
    let rehearsal_in = match t.get("rehearsal_in") {
        Some(rv) => w.string(rv, &join(path, "rehearsal_in")).map(Some),
        None => Some(None),
    };
    let plan = match t.get("plan") {
        Some(pv) => w.bool(pv, &join(path, "plan")),
        None => Some(false),
    };
    Some(GatePolicy {
        unit_pass_pct: unit?,
        integration_pass_pct: integration?,
        coverage_pct: coverage?,
        max_severity: max_severity?,
        rehearsal_in: rehearsal_in?,
        plan_approved: plan?,
    })
}
