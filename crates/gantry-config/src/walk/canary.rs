//! Decoding `[analysis]` and an environment's `canary`: the statistical
//! policy and the canary steps it judges.

use super::*;

pub(super) fn decode_analysis(w: &mut Walker<'_>, v: &Val<'_>) -> Option<AnalysisPolicy> {
    let t = w.table(v, "analysis")?;
    w.check_keys::<crate::schema::AnalysisSection>(t, "analysis");
    // Rule thresholds: a number in range, or false to turn the rule off.
    // (Their ranges, like every number's, are the schema's.)
    type Section = crate::schema::AnalysisSection;
    type Field = fn(&mut AnalysisPolicy) -> &mut Option<f64>;
    let thresholds: [(&str, Field); 6] = [
        ("max_error_rate", |p| &mut p.max_error_rate),
        ("max_error_rate_increase", |p| {
            &mut p.max_error_rate_increase
        }),
        ("max_error_rate_ratio", |p| &mut p.max_error_rate_ratio),
        ("max_p99_factor", |p| &mut p.max_p99_factor),
        ("max_p50_factor", |p| &mut p.max_p50_factor),
        ("compare_slow_factor", |p| &mut p.compare_slow_factor),
    ];
    let mut p = AnalysisPolicy::default();
    let mut ok = true;
    for (key, value) in t.iter() {
        let key: &str = key.get_ref();
        let path = join("analysis", key);
        let good = if let Some((_, field)) = thresholds.iter().find(|(k, _)| *k == key) {
            w.threshold::<Section>(value, "analysis", key)
                .map(|n| *field(&mut p) = n)
                .is_some()
        } else {
            match key {
                "alpha" => w
                    .number::<Section>(value, "analysis", key)
                    .map(|n| p.alpha = n)
                    .is_some(),
                "min_requests" => w
                    .count::<Section>(value, "analysis", key)
                    .map(|n| p.min_requests = n as u64)
                    .is_some(),
                "compare_errors" => w.bool(value, &path).map(|b| p.compare_errors = b).is_some(),
                "compare_client_errors" => w
                    .bool(value, &path)
                    .map(|b| p.compare_client_errors = b)
                    .is_some(),
                "promotion_margin" => w
                    .number::<Section>(value, "analysis", key)
                    .map(|n| p.promotion_margin = n)
                    .is_some(),
                "queries" => super::metrics::decode_queries(w, value, &path)
                    .map(|q| p.queries = q)
                    .is_some(),
                _ => true, // reported by check_keys
            }
        };
        ok &= good;
    }
    ok.then_some(p)
}

pub(super) fn decode_canary(w: &mut Walker<'_>, v: &Val<'_>, path: &str) -> Option<Canary> {
    let t = w.table(v, path)?;
    w.check_keys::<crate::schema::CanarySection>(t, path);
    let std = Canary::standard();
    let interval_ms = optional_duration(w, t, &join(path, "interval"), "interval", std.interval_ms);
    let max_wait_ms = optional_duration(w, t, &join(path, "max_wait"), "max_wait", std.max_wait_ms);
    let max_pause_ms = optional_duration(
        w,
        t,
        &join(path, "max_pause"),
        "max_pause",
        std.max_pause_ms,
    );
    let promotion_tolerance = match t.get("promotion_tolerance") {
        None => Some(std.promotion_tolerance),
        Some(v) => w.number::<crate::schema::CanarySection>(v, path, "promotion_tolerance"),
    };
    let steps = match t.get("steps") {
        None => Some(std.steps),
        Some(sv) => decode_steps(w, sv, &join(path, "steps")),
    };
    Some(Canary {
        steps: steps?,
        interval_ms: interval_ms?,
        max_wait_ms: max_wait_ms?,
        promotion_tolerance: promotion_tolerance?,
        max_pause_ms: max_pause_ms?,
    })
}

fn decode_steps(w: &mut Walker<'_>, v: &Val<'_>, path: &str) -> Option<Vec<CanaryStep>> {
    let DeValue::Array(items) = v.get_ref() else {
        w.error(v.span(), path, format!("expected an array of steps such as [{{ weight = 10, pause = \"2m\" }}, {{ weight = 100 }}], found {}", describe(v.get_ref())));
        return None;
    };
    if items.is_empty() {
        w.error(
            v.span(),
            path,
            "needs at least one step; the last has weight 100",
        );
        return None;
    }
    let mut steps = Vec::new();
    let mut ok = true;
    let mut previous = 0;
    for (n, item) in items.iter().enumerate() {
        let p = format!("{path}[{n}]");
        let last = n + 1 == items.len();
        let Some(st) = w.table(item, &p) else {
            ok = false;
            continue;
        };
        w.check_keys::<crate::schema::StepSection>(st, &p);
        let weight = match st.get("weight") {
            Some(wv) => w.count::<crate::schema::StepSection>(wv, &p, "weight"),
            None => {
                w.error(
                    item.span(),
                    &p,
                    "missing required key \"weight\" (percent of traffic, 1 to 100)",
                );
                None
            }
        };
        if let Some(weight) = weight {
            if weight <= previous {
                w.error(
                    item.span(),
                    &join(&p, "weight"),
                    format!("weights must rise step by step; {weight} follows {previous}"),
                );
                ok = false;
            }
            if last && weight != 100 {
                w.error(
                    item.span(),
                    &join(&p, "weight"),
                    format!("the last step must send all traffic (weight 100), not {weight}"),
                );
                ok = false;
            }
            previous = weight;
        }
        let pause = match st.get("pause") {
            Some(pv) => {
                let pp = join(&p, "pause");
                match pv.get_ref() {
                    DeValue::String(s) if s.as_ref() == "until-promoted" => {
                        Some(Pause::UntilPromoted)
                    }
                    DeValue::String(_) => w.duration(pv, &pp).map(|ms| Pause::For { ms }),
                    other => {
                        w.error(pv.span(), &pp, format!("expected a duration such as \"2m\" or \"until-promoted\", found {}", describe(other)));
                        None
                    }
                }
            }
            None if last => Some(Pause::For { ms: 0 }),
            None => {
                w.error(
                    item.span(),
                    &p,
                    "a step before the last needs a pause: a duration such as \"2m\", or \"until-promoted\" to wait for `gantry promote`",
                );
                None
            }
        };
        match (weight, pause) {
            (Some(weight), Some(pause)) => steps.push(CanaryStep { weight, pause }),
            _ => ok = false,
        }
    }
    ok.then_some(steps)
}
