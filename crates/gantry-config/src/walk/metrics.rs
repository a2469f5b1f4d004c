//! Decoding `[metrics.prometheus]` and the analysis' `[[analysis.queries]]`.

use super::{describe, join, Val, Walker};
use crate::{Metrics, Prometheus};
use gantry_core::analysis::queries::{Condition, CountCondition, NoData, QueryRule};
use toml::de::DeValue;

/// The placeholders a query may hold; the runtime fills them in.
const PLACEHOLDERS: &[&str] = &["env", "release", "pool", "interval"];

/// At most this many query rules: each is one HTTP call per look.
const MAX_QUERIES: usize = 32;

pub(super) fn decode_metrics(w: &mut Walker<'_>, v: &Val<'_>) -> Option<Metrics> {
    let t = w.table(v, "metrics")?;
    w.check_keys::<crate::schema::MetricsSection>(t, "metrics");
    let Some(p) = t.get("prometheus") else {
        return Some(Metrics::default());
    };
    let path = "metrics.prometheus";
    let pt = w.table(p, path)?;
    w.check_keys::<crate::schema::PrometheusSection>(pt, path);
    let url = super::required(w, pt, p, path, "url", |w, v, up| {
        super::notify::http_url(w, v, up)
    });
    let bearer_token = match pt.get("bearer_token") {
        Some(b) => super::notify::credential(w, b, &join(path, "bearer_token"), true).map(Some),
        None => Some(None),
    };
    let timeout_ms = match pt.get("timeout") {
        Some(d) => {
            let tp = join(path, "timeout");
            w.duration(d, &tp).and_then(|ms| {
                if (100..=60_000).contains(&ms) {
                    Some(ms)
                } else {
                    w.error(d.span(), &tp, "expected a duration from 100ms to 1m");
                    None
                }
            })
        }
        None => Some(5_000),
    };
    Some(Metrics {
        prometheus: Some(Prometheus {
            url: url?,
            bearer_token: bearer_token?,
            timeout_ms: timeout_ms?,
        }),
    })
}

/// `[[analysis.queries]]`: rules on metric queries.
pub(super) fn decode_queries(
    w: &mut Walker<'_>,
    v: &Val<'_>,
    path: &str,
) -> Option<Vec<QueryRule>> {
    let DeValue::Array(items) = v.get_ref() else {
        w.error(
            v.span(),
            path,
            format!(
                "expected an array of tables ([[analysis.queries]]), found {}",
                describe(v.get_ref())
            ),
        );
        return None;
    };
    if items.len() > MAX_QUERIES {
        w.error(
            v.span(),
            path,
            format!("{} queries; at most {MAX_QUERIES}", items.len()),
        );
        return None;
    }
    let mut out: Vec<QueryRule> = Vec::new();
    let mut ok = true;
    for (n, item) in items.iter().enumerate() {
        let ip = format!("{path}[{n}]");
        match decode_query(w, item, &ip) {
            Some(rule) if out.iter().any(|r| r.name == rule.name) => {
                w.error(
                    item.span(),
                    &join(&ip, "name"),
                    format!("{:?} is already a query's name", rule.name),
                );
                ok = false;
            }
            Some(rule) => out.push(rule),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn decode_query(w: &mut Walker<'_>, v: &Val<'_>, path: &str) -> Option<QueryRule> {
    type Section = crate::schema::QuerySection;
    let t = w.table(v, path)?;
    w.check_keys::<Section>(t, path);
    let name = super::required(w, t, v, path, "name", |w, v, p| w.non_empty_string(v, p));
    let kinds: Vec<&str> = ["query", "errors", "successes"]
        .into_iter()
        .filter(|k| t.get(*k).is_some())
        .collect();
    let (query, condition) = match kinds.as_slice() {
        ["query"] => {
            let query = promql(w, t.get("query")?, &join(path, "query"));
            for key in ["total", "max_ratio", "compare"] {
                if let Some(x) = t.get(key) {
                    w.error(
                        x.span(),
                        &join(path, key),
                        "only for a count rule (errors or successes with total); a rule with query is a gauge",
                    );
                }
            }
            let condition = gauge_condition(w, t, v, path);
            (query, condition)
        }
        [counter] => {
            let key = *counter;
            let query = promql(w, t.get(key)?, &join(path, key));
            let condition = count_condition(w, t, v, path, key == "successes");
            (query, condition.map(Condition::Counts))
        }
        [] => {
            w.error(
                v.span(),
                path,
                "no query; set query (a gauge) or errors or successes with total (a count rule)",
            );
            (None, None)
        }
        many => {
            w.error(
                v.span(),
                path,
                format!(
                    "{} ({}); set exactly one of query, errors or successes",
                    many.len(),
                    many.join(", ")
                ),
            );
            (None, None)
        }
    };
    let consecutive = match t.get("consecutive") {
        Some(c) if matches!(condition, Some(Condition::Counts(_))) => {
            w.error(
                c.span(),
                &join(path, "consecutive"),
                "only for a gauge rule; a count rule fails on its evidence, not on readings in a row",
            );
            None
        }
        Some(c) => w.count::<Section>(c, path, "consecutive"),
        None => Some(3),
    };
    let no_data = match t.get("no_data") {
        Some(nd) => {
            let np = join(path, "no_data");
            match w.string(nd, &np).as_deref() {
                Some("wait") => Some(NoData::Wait),
                Some("fail") => Some(NoData::Fail),
                Some("pass") => Some(NoData::Pass),
                Some(other) => {
                    w.error(nd.span(), &np, format!("{other:?} is not a no-data policy; expected \"wait\", \"fail\" or \"pass\""));
                    None
                }
                None => None,
            }
        }
        None => Some(NoData::Wait),
    };
    let no_data_ms = match t.get("no_data_timeout") {
        Some(d) => {
            let dp = join(path, "no_data_timeout");
            w.duration(d, &dp).and_then(|ms| {
                if (1..=3_600_000).contains(&ms) {
                    Some(ms)
                } else {
                    w.error(d.span(), &dp, "expected a duration from 1ms to 1h");
                    None
                }
            })
        }
        None => Some(120_000),
    };
    Some(QueryRule {
        name: name?,
        query: query?,
        condition: condition?,
        consecutive: consecutive?,
        no_data: no_data?,
        no_data_ms: no_data_ms?,
    })
}

/// The first `{name}` in `query` that is not a known placeholder. PromQL's
/// own braces (label matchers) hold `=`, `~` or `"` after the first word.
fn unknown_placeholder(query: &str) -> Option<String> {
    let bytes = query.as_bytes();
    for (i, _) in query.match_indices('{') {
        let word_len = bytes[i + 1..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
            .count();
        if word_len > 0 && bytes.get(i + 1 + word_len) == Some(&b'}') {
            let word = &query[i + 1..i + 1 + word_len];
            if !PLACEHOLDERS.contains(&word) {
                return Some(word.to_owned());
            }
        }
    }
    None
}

/// A query's PromQL: bounded, with known placeholders only.
fn promql(w: &mut Walker<'_>, q: &Val<'_>, qp: &str) -> Option<String> {
    let s = w.non_empty_string(q, qp)?;
    if s.len() > 4096 {
        w.error(q.span(), qp, "longer than 4096 bytes");
        return None;
    }
    if let Some(bad) = unknown_placeholder(&s) {
        let known: Vec<String> = PLACEHOLDERS.iter().map(|p| format!("{{{p}}}")).collect();
        w.error(
            q.span(),
            qp,
            format!(
                "unknown placeholder {{{bad}}}; expected one of {}",
                known.join(", ")
            ),
        );
        return None;
    }
    Some(s)
}

/// A gauge rule's one condition.
fn gauge_condition(
    w: &mut Walker<'_>,
    t: &toml::de::DeTable<'_>,
    v: &Val<'_>,
    path: &str,
) -> Option<Condition> {
    type Section = crate::schema::QuerySection;
    type MakeCondition = fn(f64) -> Condition;
    const CONDITIONS: [(&str, MakeCondition); 4] = [
        ("above", Condition::Above),
        ("below", Condition::Below),
        ("above_baseline", Condition::AboveBaseline),
        ("below_baseline", Condition::BelowBaseline),
    ];
    let set: Vec<&str> = CONDITIONS
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| t.get(*k).is_some())
        .collect();
    match set.as_slice() {
        [key] => {
            let make = CONDITIONS.iter().find(|(k, _)| k == key).map(|(_, f)| *f)?;
            w.number::<Section>(t.get(*key)?, path, key).map(make)
        }
        [] => {
            w.error(v.span(), path, "no condition; set one of above, below, above_baseline (a multiple of the value before the rollout) or below_baseline");
            None
        }
        many => {
            w.error(
                v.span(),
                path,
                format!(
                    "{} conditions ({}); set exactly one",
                    many.len(),
                    many.join(", ")
                ),
            );
            None
        }
    }
}

/// A count rule's total and what it is held to.
fn count_condition(
    w: &mut Walker<'_>,
    t: &toml::de::DeTable<'_>,
    v: &Val<'_>,
    path: &str,
    successes: bool,
) -> Option<CountCondition> {
    type Section = crate::schema::QuerySection;
    let mut ok = true;
    for key in ["above", "below", "above_baseline", "below_baseline"] {
        if let Some(x) = t.get(key) {
            w.error(
                x.span(),
                &join(path, key),
                "only for a gauge rule (query); a count rule is held to max_ratio and compare",
            );
            ok = false;
        }
    }
    let total = match t.get("total") {
        Some(q) => promql(w, q, &join(path, "total")),
        None => {
            w.error(
                v.span(),
                &join(path, "total"),
                "missing; a count rule needs the counter of every event beside its errors or successes",
            );
            None
        }
    };
    let max_ratio = match t.get("max_ratio") {
        Some(m) => w.number::<Section>(m, path, "max_ratio").map(Some),
        None => Some(None),
    };
    let compare = match t.get("compare") {
        Some(c) => w.bool(c, &join(path, "compare")),
        None => Some(true),
    };
    let (total, max_ratio, compare) = (total?, max_ratio?, compare?);
    if !compare && max_ratio.is_none() {
        w.error(
            v.span(),
            path,
            "judges nothing: compare = false and no max_ratio; set max_ratio or leave compare on",
        );
        return None;
    }
    ok.then_some(CountCondition {
        total,
        successes,
        max_ratio,
        compare,
    })
}
