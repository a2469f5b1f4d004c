//! Decoding the rollout tables of an environment: `rolling`, `smoke`,
//! `sticky` and `resources`.

use super::{describe, join, optional_duration, Val, Walker};
use crate::{ResourcePolicy, Rolling, SmokeCheck, SmokeProbe, SmokeSettings, Sticky};
use toml::de::DeValue;

const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"];

pub(super) fn decode_rolling(
    w: &mut Walker<'_>,
    v: Option<&Val<'_>>,
    path: &str,
    instances: Option<u32>,
) -> Option<Rolling> {
    let Some(v) = v else {
        return Some(Rolling::standard());
    };
    let t = w.table(v, path)?;
    w.check_keys::<crate::schema::RollingSection>(t, path);
    let std = Rolling::standard();
    // The schema's range, narrowed to the environment's instances.
    let mut bounded = |key: &str| {
        let (min, max) = crate::schema::range::<crate::schema::RollingSection>(key);
        let max = instances.map_or(max as u64, |n| u64::from(n).min(max as u64));
        t.get(key)
            .map(|v| w.count_within(v, &join(path, key), min as u64, max))
    };
    let surge = bounded("max_surge").unwrap_or(Some(std.max_surge));
    let unavailable = bounded("max_unavailable").unwrap_or(Some(std.max_unavailable));
    let analysis_ms =
        optional_duration(w, t, &join(path, "analysis"), "analysis", 0).and_then(|ms| {
            if ms <= 3_600_000 {
                return Some(ms);
            }
            let v = t.get("analysis")?;
            w.error(
                v.span(),
                &join(path, "analysis"),
                "expected at most \"1h\" per batch",
            );
            None
        });
    let (surge, unavailable, analysis_ms) = (surge?, unavailable?, analysis_ms?);
    if surge == 0 && unavailable == 0 {
        w.error(
            v.span(),
            path,
            "max_surge and max_unavailable are both 0, so no instance could ever be replaced; raise one of them",
        );
        return None;
    }
    Some(Rolling {
        max_surge: surge,
        max_unavailable: unavailable,
        analysis_ms,
    })
}

pub(super) fn decode_sticky(w: &mut Walker<'_>, v: &Val<'_>, path: &str) -> Option<Sticky> {
    let t = w.table(v, path)?;
    w.check_keys::<crate::schema::StickySection>(t, path);
    let token = |w: &mut Walker<'_>, v: &Val<'_>, p: &str| -> Option<String> {
        let s = w.non_empty_string(v, p)?;
        if s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            Some(s)
        } else {
            w.error(
                v.span(),
                p,
                format!("{s:?} is not a valid name; use letters, digits, '-' and '_'"),
            );
            None
        }
    };
    match (t.get("cookie"), t.get("header")) {
        (Some(c), None) => token(w, c, &join(path, "cookie")).map(Sticky::Cookie),
        (None, Some(h)) => {
            token(w, h, &join(path, "header")).map(|h| Sticky::Header(h.to_ascii_lowercase()))
        }
        _ => {
            w.error(
                v.span(),
                path,
                "set exactly one of cookie = \"NAME\" (the router sets it) or header = \"NAME\" (the client sends it)",
            );
            None
        }
    }
}

pub(super) fn decode_smoke(w: &mut Walker<'_>, v: &Val<'_>, path: &str) -> Option<SmokeSettings> {
    let t = w.table(v, path)?;
    w.check_keys::<crate::schema::SmokeSection>(t, path);
    let timeout_ms = optional_duration(w, t, &join(path, "timeout"), "timeout", 300_000);
    let ratio = match t.get("max_noncritical_failure_ratio") {
        Some(rv) => {
            w.number::<crate::schema::SmokeSection>(rv, path, "max_noncritical_failure_ratio")
        }
        None => Some(0.1),
    };
    let checks = match t.get("checks") {
        Some(cv) => decode_checks(w, cv, &join(path, "checks")),
        None => {
            w.error(
                v.span(),
                path,
                "missing required key \"checks\": [[...smoke.checks]] tables, each with a path or a command",
            );
            None
        }
    };
    Some(SmokeSettings {
        checks: checks?,
        timeout_ms: timeout_ms?,
        max_noncritical_failure_ratio: ratio?,
    })
}

fn decode_checks(w: &mut Walker<'_>, v: &Val<'_>, path: &str) -> Option<Vec<SmokeCheck>> {
    let DeValue::Array(items) = v.get_ref() else {
        w.error(
            v.span(),
            path,
            format!(
                "expected an array of checks ([[...smoke.checks]] tables), found {}",
                describe(v.get_ref())
            ),
        );
        return None;
    };
    let mut out: Vec<SmokeCheck> = Vec::new();
    let mut ok = true;
    for (n, item) in items.iter().enumerate() {
        let p = format!("{path}[{n}]");
        match decode_check(w, item, &p) {
            Some(c) => {
                if out.iter().any(|o| o.name == c.name) {
                    w.error(
                        item.span(),
                        &join(&p, "name"),
                        format!("check names must be unique; {:?} appears twice", c.name),
                    );
                    ok = false;
                }
                out.push(c);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn decode_check(w: &mut Walker<'_>, v: &Val<'_>, path: &str) -> Option<SmokeCheck> {
    let t = w.table(v, path)?;
    w.check_keys::<crate::schema::CheckSection>(t, path);
    let name = match t.get("name") {
        Some(nv) => w.non_empty_string(nv, &join(path, "name")),
        None => {
            w.error(v.span(), path, "missing required key \"name\"");
            None
        }
    };
    let critical = match t.get("critical") {
        Some(cv) => w.bool(cv, &join(path, "critical")),
        None => Some(true),
    };
    let timeout_ms = optional_duration(w, t, &join(path, "timeout"), "timeout", 10_000);
    let http_keys = ["method", "expect_status", "body_contains", "json"];
    let probe = match (t.get("path"), t.get("command")) {
        (Some(pv), None) => decode_http(w, t, pv, path),
        (None, Some(cv)) => {
            for k in http_keys {
                if let Some(x) = t.get(k) {
                    w.error(
                        x.span(),
                        &join(path, k),
                        format!("{k} applies to HTTP checks (with a path), not to a command"),
                    );
                }
            }
            let p = join(path, "command");
            match w.exec_list(cv, &p) {
                Some(argv) if !argv.is_empty() && !argv[0].trim().is_empty() => {
                    Some(SmokeProbe::Command { argv })
                }
                Some(_) => {
                    w.error(
                        cv.span(),
                        &p,
                        "expected a program and its arguments, e.g. [\"./smoke.sh\", \"--quick\"]",
                    );
                    None
                }
                None => None,
            }
        }
        _ => {
            w.error(
                v.span(),
                path,
                "set exactly one of path = \"/...\" (an HTTP request to each new instance) or command = [\"program\", ...]",
            );
            None
        }
    };
    Some(SmokeCheck {
        name: name?,
        critical: critical?,
        timeout_ms: timeout_ms?,
        probe: probe?,
    })
}

fn decode_http(
    w: &mut Walker<'_>,
    t: &toml::de::DeTable<'_>,
    pv: &Val<'_>,
    path: &str,
) -> Option<SmokeProbe> {
    let p = join(path, "path");
    let req_path = w.request_path(pv, &p);
    let method = match t.get("method") {
        Some(mv) => {
            let mp = join(path, "method");
            w.string(mv, &mp).and_then(|m| {
                let upper = m.to_ascii_uppercase();
                if METHODS.contains(&upper.as_str()) {
                    Some(upper)
                } else {
                    w.error(
                        mv.span(),
                        &mp,
                        format!(
                            "unknown method {m:?}; expected one of: {}",
                            METHODS.join(", ")
                        ),
                    );
                    None
                }
            })
        }
        None => Some("GET".to_owned()),
    };
    let status = match t.get("expect_status") {
        Some(sv) => w
            .count::<crate::schema::CheckSection>(sv, path, "expect_status")
            .map(|s| s as u16),
        None => Some(200),
    };
    let body_contains = match t.get("body_contains") {
        Some(bv) => w.string(bv, &join(path, "body_contains")).map(Some),
        None => Some(None),
    };
    let json = match t.get("json") {
        Some(jv) => decode_json_check(w, jv, &join(path, "json")).map(Some),
        None => Some(None),
    };
    let json = json?;
    Some(SmokeProbe::Http {
        method: method?,
        path: req_path?,
        expect_status: status?,
        body_contains: body_contains?,
        json_pointer: json.as_ref().map(|(p, _)| p.clone()),
        json_equals: json.map(|(_, e)| e),
    })
}

/// `json = { pointer = "/status", equals = "ok" }`: the pointer, and the
/// expected value as JSON text.
fn decode_json_check(w: &mut Walker<'_>, v: &Val<'_>, path: &str) -> Option<(String, String)> {
    let t = w.table(v, path)?;
    w.check_keys::<crate::schema::JsonCheckSection>(t, path);
    let pointer = match t.get("pointer") {
        Some(pv) => {
            let p = join(path, "pointer");
            w.string(pv, &p).and_then(|s| {
                if s.is_empty() || s.starts_with('/') {
                    Some(s)
                } else {
                    w.error(
                        pv.span(),
                        &p,
                        format!("{s:?} is not a JSON pointer; expected e.g. \"/status\" or \"/checks/0/ok\""),
                    );
                    None
                }
            })
        }
        None => {
            w.error(v.span(), path, "missing required key \"pointer\"");
            None
        }
    };
    let equals = match t.get("equals") {
        Some(ev) => match toml_to_json(ev.get_ref()) {
            Some(j) => Some(j.to_string()),
            None => {
                w.error(
                    ev.span(),
                    &join(path, "equals"),
                    "expected a string, number, boolean, array or table",
                );
                None
            }
        },
        None => {
            w.error(v.span(), path, "missing required key \"equals\"");
            None
        }
    };
    Some((pointer?, equals?))
}

fn toml_to_json(v: &DeValue<'_>) -> Option<serde_json::Value> {
    use serde_json::Value;
    Some(match v {
        DeValue::String(s) => Value::String(s.to_string()),
        DeValue::Integer(i) => Value::from(i64::from_str_radix(i.as_str(), i.radix()).ok()?),
        DeValue::Float(f) => Value::from(f.as_str().replace('_', "").parse::<f64>().ok()?),
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(_) => return None,
        DeValue::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| toml_to_json(i.get_ref()))
                .collect::<Option<Vec<_>>>()?,
        ),
        DeValue::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| Some((k.get_ref().to_string(), toml_to_json(v.get_ref())?)))
                .collect::<Option<serde_json::Map<_, _>>>()?,
        ),
    })
}

/// `[environments.*.resources]`: limits and thresholds, each within the
/// schema's range; what is not set keeps the standards' number.
pub(super) fn decode_resources(
    w: &mut Walker<'_>,
    v: &Val<'_>,
    path: &str,
) -> Option<ResourcePolicy> {
    use crate::schema::ResourcesSection as S;
    let t = w.table(v, path)?;
    w.check_keys::<S>(t, path);
    let std = ResourcePolicy::default();
    let mut ok = true;
    let mut policy = std.clone();
    if let Some(v) = t.get("cpu_cores") {
        match w.number::<S>(v, path, "cpu_cores") {
            Some(n) => policy.cpu_cores = Some(n),
            None => ok = false,
        }
    }
    if let Some(v) = t.get("memory_mb") {
        match w.count::<S>(v, path, "memory_mb") {
            Some(n) => policy.memory_bytes = Some(u64::from(n) << 20),
            None => ok = false,
        }
    }
    for (key, slot) in [
        ("max_cpu", &mut policy.max_cpu),
        ("max_memory", &mut policy.max_memory),
        ("exhaustion", &mut policy.exhaustion),
    ] {
        if let Some(v) = t.get(key) {
            match w.threshold::<S>(v, path, key) {
                Some(n) => *slot = n,
                None => ok = false,
            }
        }
    }
    if let Some(v) = t.get("consecutive") {
        match w.count::<S>(v, path, "consecutive") {
            Some(n) => policy.consecutive = n,
            None => ok = false,
        }
    }
    ok.then_some(policy)
}
