//! Decoding the spanned TOML tree into [`Config`], collecting every problem.

use crate::*;
use std::net::IpAddr;
use std::ops::Range;

mod artifacts;
mod governance;
mod notify;
mod rollout;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

const DAY_MS: u64 = 86_400_000;

/// Environment variables Gantry sets itself; a config may not override them.
const RESERVED_ENV_PREFIX: &str = "GANTRY_";

type Val<'i> = Spanned<DeValue<'i>>;

struct Walker<'s> {
    file: &'s str,
    source: &'s str,
    diags: Vec<Diagnostic>,
}

impl<'s> Walker<'s> {
    fn push(&mut self, severity: Severity, span: Range<usize>, path: &str, message: String) {
        let (line, column) = line_col(self.source, span.start);
        let (source_line, span_chars) = span_on_line(self.source, &span);
        self.diags.push(Diagnostic {
            severity,
            file: self.file.to_owned(),
            line,
            column,
            path: path.to_owned(),
            message,
            source_line,
            span_chars,
        });
    }
    fn error(&mut self, span: Range<usize>, path: &str, message: impl Into<String>) {
        self.push(Severity::Error, span, path, message.into());
    }
    fn warn(&mut self, span: Range<usize>, path: &str, message: impl Into<String>) {
        self.push(Severity::Warning, span, path, message.into());
    }

    /// Reports keys of `table` that are not in `allowed`, with a suggestion.
    /// Reports each key of `table` that the schema type `S` does not list:
    /// the schema types are the one list of allowed keys.
    fn check_keys<S: schemars::JsonSchema>(&mut self, table: &DeTable<'_>, path: &str) {
        let allowed = crate::schema::keys::<S>();
        #[cfg(test)]
        checked_tables::record::<S>(table, path);
        for (key, _) in table.iter() {
            let k: &str = key.get_ref();
            if !allowed.iter().any(|a| a == k) {
                let hint = match closest(k, allowed) {
                    Some(s) => format!("; did you mean {s:?}?"),
                    None => String::new(),
                };
                self.error(
                    key.span(),
                    &join(path, k),
                    format!(
                        "unknown key {k:?}{hint} (expected one of: {})",
                        allowed.join(", ")
                    ),
                );
            }
        }
    }

    fn table<'t, 'i>(&mut self, v: &'t Val<'i>, path: &str) -> Option<&'t DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.error(
                    v.span(),
                    path,
                    format!("expected a table, found {}", describe(other)),
                );
                None
            }
        }
    }

    fn string(&mut self, v: &Val<'_>, path: &str) -> Option<String> {
        match v.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            other => {
                self.error(
                    v.span(),
                    path,
                    format!("expected a string, found {}", describe(other)),
                );
                None
            }
        }
    }

    fn non_empty_string(&mut self, v: &Val<'_>, path: &str) -> Option<String> {
        let s = self.string(v, path)?;
        if s.trim().is_empty() {
            self.error(v.span(), path, "must not be empty");
            return None;
        }
        Some(s)
    }

    fn bool(&mut self, v: &Val<'_>, path: &str) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                self.error(
                    v.span(),
                    path,
                    format!("expected true or false, found {}", describe(other)),
                );
                None
            }
        }
    }

    fn count(&mut self, v: &Val<'_>, path: &str, min: u64, max: u64) -> Option<u32> {
        let n = match v.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok(),
            other => {
                self.error(
                    v.span(),
                    path,
                    format!("expected an integer, found {}", describe(other)),
                );
                return None;
            }
        };
        match n {
            Some(n) if n >= min as i64 && n <= max as i64 => Some(n as u32),
            _ => {
                self.error(
                    v.span(),
                    path,
                    format!("expected an integer from {min} to {max}"),
                );
                None
            }
        }
    }

    /// A number (integer or float) within `min..=max`.
    fn number(&mut self, v: &Val<'_>, path: &str, min: f64, max: f64) -> Option<f64> {
        let n = match v.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .ok()
                .map(|n| n as f64),
            DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
            other => {
                self.error(
                    v.span(),
                    path,
                    format!("expected a number, found {}", describe(other)),
                );
                return None;
            }
        };
        match n {
            Some(n) if n.is_finite() && n >= min && n <= max => Some(n),
            _ => {
                self.error(
                    v.span(),
                    path,
                    format!("expected a number from {min} to {max}"),
                );
                None
            }
        }
    }

    /// A rule threshold: a number, or `false` to turn the rule off.
    fn threshold(&mut self, v: &Val<'_>, path: &str, min: f64, max: f64) -> Option<Option<f64>> {
        match v.get_ref() {
            DeValue::Boolean(false) => Some(None),
            DeValue::Boolean(true) => {
                self.error(
                    v.span(),
                    path,
                    "expected a number, or false to turn the rule off",
                );
                None
            }
            _ => self.number(v, path, min, max).map(Some),
        }
    }

    fn duration(&mut self, v: &Val<'_>, path: &str) -> Option<u64> {
        let s = match v.get_ref() {
            DeValue::String(s) => s.to_string(),
            other => {
                self.error(
                    v.span(),
                    path,
                    format!(
                        "expected a duration string such as \"500ms\" or \"2s\", found {}",
                        describe(other)
                    ),
                );
                return None;
            }
        };
        match humantime::parse_duration(&s) {
            Ok(d) if d.as_millis() <= u64::MAX as u128 => Some(d.as_millis() as u64),
            _ => {
                self.error(
                    v.span(),
                    path,
                    format!("{s:?} is not a duration; expected e.g. \"500ms\", \"2s\", \"1m\""),
                );
                None
            }
        }
    }

    fn string_list(&mut self, v: &Val<'_>, path: &str) -> Option<Vec<String>> {
        let DeValue::Array(items) = v.get_ref() else {
            self.error(
                v.span(),
                path,
                format!(
                    "expected an array of strings, found {}",
                    describe(v.get_ref())
                ),
            );
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (n, item) in items.iter().enumerate() {
            match self.string(item, &format!("{path}[{n}]")) {
                Some(s) => out.push(s),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// A list of strings handed to exec (a program and its arguments).
    fn exec_list(&mut self, v: &Val<'_>, path: &str) -> Option<Vec<String>> {
        let list = self.string_list(v, path)?;
        let DeValue::Array(items) = v.get_ref() else {
            return None;
        };
        let mut ok = true;
        for (n, (item, s)) in items.iter().zip(&list).enumerate() {
            ok &= self.exec_safe(item.span(), &format!("{path}[{n}]"), s);
        }
        ok.then_some(list)
    }

    /// Refuses a NUL character in a string handed to exec (program,
    /// argument, environment, file name): the OS cannot carry one, so the
    /// instance would otherwise fail only when a deployment starts it.
    fn exec_safe(&mut self, span: Range<usize>, path: &str, s: &str) -> bool {
        if !s.contains('\0') {
            return true;
        }
        self.error(
            span,
            path,
            "contains a NUL character (\\u0000), which programs' arguments, environment and file names cannot carry; remove it",
        );
        false
    }

    /// An HTTP request path: absolute, without spaces or control
    /// characters (a line break would split the request and inject headers).
    fn request_path(&mut self, v: &Val<'_>, path: &str) -> Option<String> {
        let s = self.string(v, path)?;
        if s.starts_with('/') && !s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Some(s);
        }
        self.error(
            v.span(),
            path,
            format!("{s:?} is not a request path; expected an absolute path starting with '/', without spaces or control characters, such as \"/healthz\""),
        );
        None
    }

    /// A table of environment variables: NAME = "value".
    fn env_vars(&mut self, v: &Val<'_>, path: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(t) = self.table(v, path) else {
            return out;
        };
        for (key, value) in t.iter() {
            let name: &str = key.get_ref();
            let p = join(path, name);
            self.check_env_name(key.span(), &p, name);
            if let Some(s) = self.string(value, &p) {
                check_placeholders(self, value.span(), &p, &s);
                self.exec_safe(value.span(), &p, &s);
                if looks_secret(name) {
                    self.warn(
                        key.span(),
                        &p,
                        format!("{name} looks like a secret; reference it under `secrets` instead of storing its value here"),
                    );
                }
                out.insert(name.to_owned(), s);
            }
        }
        out
    }

    fn secrets(&mut self, v: &Val<'_>, path: &str) -> BTreeMap<String, SecretRef> {
        let mut out = BTreeMap::new();
        let Some(t) = self.table(v, path) else {
            return out;
        };
        for (key, value) in t.iter() {
            let name: &str = key.get_ref();
            let p = join(path, name);
            self.check_env_name(key.span(), &p, name);
            if let Some(secret) = self.secret_ref(value, &p) {
                out.insert(name.to_owned(), secret);
            }
        }
        out
    }

    /// `{ env = "VARIABLE" }` or `{ file = "/path" }`.
    fn secret_ref(&mut self, value: &Val<'_>, p: &str) -> Option<SecretRef> {
        let st = self.table(value, p)?;
        self.check_keys::<crate::schema::SecretSection>(st, p);
        match (st.get("env"), st.get("file")) {
            (Some(e), None) => {
                let ep = join(p, "env");
                let name = self.non_empty_string(e, &ep)?;
                // The OS cannot look these up: std::env::var refuses them.
                let problem = if name.contains('=') {
                    "must not contain '='"
                } else if name.contains('\0') {
                    "must not contain NUL (\\u0000)"
                } else {
                    return Some(SecretRef::Env(name));
                };
                self.error(
                    e.span(),
                    &ep,
                    format!("{name:?} {problem}; expected the name of a variable in the controller's environment, such as \"DATABASE_URL\""),
                );
                None
            }
            (None, Some(f)) => {
                let fp = join(p, "file");
                let file = self.non_empty_string(f, &fp)?;
                self.exec_safe(f.span(), &fp, &file)
                    .then(|| SecretRef::File(PathBuf::from(file)))
            }
            _ => {
                self.error(
                    value.span(),
                    p,
                    "a secret needs exactly one of `env = \"VARIABLE\"` or `file = \"/path\"`",
                );
                None
            }
        }
    }

    fn check_env_name(&mut self, span: Range<usize>, path: &str, name: &str) {
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            self.error(
                span,
                path,
                format!("{name:?} is not a valid environment variable name"),
            );
        } else if name.starts_with(RESERVED_ENV_PREFIX) {
            self.error(span, path, format!("{name} is reserved: variables starting with {RESERVED_ENV_PREFIX} are set by Gantry"));
        }
    }
}

fn check_placeholders(w: &mut Walker<'_>, span: Range<usize>, path: &str, s: &str) {
    let mut rest = s;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let ph = &rest[start..start + len + 1];
        if !PLACEHOLDERS.contains(&ph) {
            w.error(
                span.clone(),
                path,
                format!(
                    "unknown placeholder {ph}; known: {}",
                    PLACEHOLDERS.join(" ")
                ),
            );
        }
        rest = &rest[start + len + 1..];
    }
}

fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ["PASSWORD", "SECRET", "TOKEN", "PRIVATE_KEY", "API_KEY"]
        .iter()
        .any(|w| upper.contains(w))
}

pub(crate) fn decode(file: &str, source: &str) -> (Option<Config>, Vec<Diagnostic>) {
    let mut w = Walker {
        file,
        source,
        diags: Vec::new(),
    };
    let root = match DeTable::parse(source) {
        Ok(root) => root,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            w.error(span, "", format!("not valid TOML: {}", e.message().trim()));
            return (None, w.diags);
        }
    };
    let root_span = root.span();
    let root = root.get_ref();
    w.check_keys::<crate::schema::File>(root, "");

    let at_start = root_span.start..root_span.start;
    let service = required_table(&mut w, root, &at_start, "service", decode_service);
    let health = required_table(&mut w, root, &at_start, "health", decode_health);
    let signing = match root.get("signing") {
        Some(v) => decode_signing(&mut w, v),
        None => Some(Signing::default()),
    };
    let analysis = match root.get("analysis") {
        Some(v) => decode_analysis(&mut w, v),
        None => Some(AnalysisPolicy::default()),
    };
    let retention = match root.get("retention") {
        Some(v) => w.table(v, "retention").and_then(|t| {
            w.check_keys::<crate::schema::RetentionSection>(t, "retention");
            let mut at_least_a_day = |key: &str, default: u64| match t.get(key) {
                Some(a) => {
                    let path = join("retention", key);
                    let ms = w.duration(a, &path)?;
                    if ms < DAY_MS {
                        w.error(
                            a.span(),
                            &path,
                            "must be at least one day (the standards keep these records a year)",
                        );
                        return None;
                    }
                    Some(ms)
                }
                None => Some(default),
            };
            let standard = Retention::standard();
            let audit_ms = at_least_a_day("audit", standard.audit_ms);
            let deployments_ms = at_least_a_day("deployments", standard.deployments_ms);
            Some(Retention {
                audit_ms: audit_ms?,
                deployments_ms: deployments_ms?,
            })
        }),
        None => Some(Retention::standard()),
    };
    let artifacts = match root.get("artifacts") {
        Some(v) => artifacts::decode_artifacts(&mut w, v),
        None => Some(ArtifactLimits::standard()),
    };
    let (env_names, environments) = match root.get("environments") {
        Some(v) => decode_environments(&mut w, v, signing.as_ref()),
        None => {
            w.error(
                at_start,
                "environments",
                "missing required table [environments]; define at least one environment",
            );
            (None, None)
        }
    };
    let notify = match root.get("notify") {
        Some(v) => notify::decode_notify(&mut w, v, env_names.as_deref()),
        None => Some(Vec::new()),
    };
    let config = match (
        service,
        health,
        signing,
        analysis,
        retention,
        artifacts,
        environments,
        notify,
    ) {
        (
            Some(service),
            Some(health),
            Some(signing),
            Some(analysis),
            Some(retention),
            Some(artifacts),
            Some(environments),
            Some(notify),
        ) => Some(Config {
            service,
            health,
            signing,
            analysis,
            retention,
            artifacts,
            environments,
            notify,
        }),
        _ => None,
    };
    let mut diags = w.diags;
    diags.sort_by_key(|d| (d.line, d.column));
    (config, diags)
}

/// Decodes the top-level table `name`, reporting it missing at `at`.
fn required_table<T>(
    w: &mut Walker<'_>,
    root: &DeTable<'_>,
    at: &Range<usize>,
    name: &str,
    decode: impl FnOnce(&mut Walker<'_>, &Val<'_>) -> Option<T>,
) -> Option<T> {
    match root.get(name) {
        Some(v) => decode(w, v),
        None => {
            w.error(at.clone(), name, format!("missing required table [{name}]"));
            None
        }
    }
}

fn decode_analysis(w: &mut Walker<'_>, v: &Val<'_>) -> Option<AnalysisPolicy> {
    let t = w.table(v, "analysis")?;
    w.check_keys::<crate::schema::AnalysisSection>(t, "analysis");
    // Rule thresholds: a number in range, or false to turn the rule off.
    type Field = fn(&mut AnalysisPolicy) -> &mut Option<f64>;
    let thresholds: [(&str, f64, f64, Field); 6] = [
        ("max_error_rate", 0.0, 1.0, |p| &mut p.max_error_rate),
        ("max_error_rate_increase", 0.0, 1.0, |p| {
            &mut p.max_error_rate_increase
        }),
        ("max_error_rate_ratio", 1.0, 1000.0, |p| {
            &mut p.max_error_rate_ratio
        }),
        ("max_p99_factor", 1.0, 1000.0, |p| &mut p.max_p99_factor),
        ("max_p50_factor", 1.0, 1000.0, |p| &mut p.max_p50_factor),
        ("compare_slow_factor", 1.0, 1000.0, |p| {
            &mut p.compare_slow_factor
        }),
    ];
    let mut p = AnalysisPolicy::default();
    let mut ok = true;
    for (key, value) in t.iter() {
        let key: &str = key.get_ref();
        let path = join("analysis", key);
        let good = if let Some((_, min, max, field)) = thresholds.iter().find(|(k, ..)| *k == key) {
            w.threshold(value, &path, *min, *max)
                .map(|n| *field(&mut p) = n)
                .is_some()
        } else {
            match key {
                "alpha" => w
                    .number(value, &path, 1e-9, 0.5)
                    .map(|n| p.alpha = n)
                    .is_some(),
                "min_requests" => w
                    .count(value, &path, 1, 1_000_000)
                    .map(|n| p.min_requests = n as u64)
                    .is_some(),
                "compare_errors" => w.bool(value, &path).map(|b| p.compare_errors = b).is_some(),
                "compare_client_errors" => w
                    .bool(value, &path)
                    .map(|b| p.compare_client_errors = b)
                    .is_some(),
                "promotion_margin" => w
                    .number(value, &path, 0.0, 10.0)
                    .map(|n| p.promotion_margin = n)
                    .is_some(),
                _ => true, // reported by check_keys
            }
        };
        ok &= good;
    }
    ok.then_some(p)
}

fn decode_canary(w: &mut Walker<'_>, v: &Val<'_>, path: &str) -> Option<Canary> {
    let t = w.table(v, path)?;
    w.check_keys::<crate::schema::CanarySection>(t, path);
    let std = Canary::standard();
    let interval_ms = optional_duration(w, t, &join(path, "interval"), "interval", std.interval_ms);
    let max_wait_ms = optional_duration(w, t, &join(path, "max_wait"), "max_wait", std.max_wait_ms);
    let steps = match t.get("steps") {
        None => Some(std.steps),
        Some(sv) => decode_steps(w, sv, &join(path, "steps")),
    };
    Some(Canary {
        steps: steps?,
        interval_ms: interval_ms?,
        max_wait_ms: max_wait_ms?,
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
            Some(wv) => w.count(wv, &join(&p, "weight"), 1, 100),
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

fn decode_service(w: &mut Walker<'_>, v: &Val<'_>) -> Option<Service> {
    let t = w.table(v, "service")?;
    w.check_keys::<crate::schema::ServiceSection>(t, "service");
    let name = required(w, t, v, "service", "name", |w, v, p| {
        let s = w.non_empty_string(v, p)?;
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            w.error(
                v.span(),
                p,
                format!("{s:?} may contain only letters, digits, '-' and '_'"),
            );
            return None;
        }
        Some(s)
    });
    let command = required(w, t, v, "service", "command", |w, v, p| {
        let s = w.non_empty_string(v, p)?;
        w.exec_safe(v.span(), p, &s).then_some(s)
    });
    let args = match t.get("args") {
        Some(a) => w.exec_list(a, "service.args").inspect(|args| {
            for (n, arg) in args.iter().enumerate() {
                check_placeholders(w, a.span(), &format!("service.args[{n}]"), arg);
            }
        }),
        None => Some(Vec::new()),
    };
    let port_env = match t.get("port_env") {
        Some(p) => w.non_empty_string(p, "service.port_env").inspect(|name| {
            w.check_env_name(p.span(), "service.port_env", name);
        }),
        None => Some("PORT".to_owned()),
    };
    let env = t
        .get("env")
        .map(|e| w.env_vars(e, "service.env"))
        .unwrap_or_default();
    let secrets = t
        .get("secrets")
        .map(|s| w.secrets(s, "service.secrets"))
        .unwrap_or_default();
    let run_as = match t.get("run_as") {
        Some(v) => w.non_empty_string(v, "service.run_as").and_then(|name| {
            let ok = name.len() <= 32
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !ok {
                w.error(
                    v.span(),
                    "service.run_as",
                    format!(
                        "{name:?} is not a user name (letters, digits, '-', '_', '.'; at most 32)"
                    ),
                );
                return None;
            }
            if name == "root" {
                w.error(
                    v.span(),
                    "service.run_as",
                    "instances must not run as root: a deployed release is untrusted code",
                );
                return None;
            }
            Some(Some(name))
        }),
        None => Some(None),
    };
    let sandbox = match t.get("sandbox") {
        Some(v) => decode_sandbox(w, v),
        None => Some(Sandbox::default()),
    };
    Some(Service {
        name: name?,
        command: command?,
        args: args?,
        port_env: port_env?,
        env,
        secrets,
        run_as: run_as?,
        sandbox: sandbox?,
    })
}

/// `sandbox = false`, or `sandbox = { read = [...], write = [...] }` of absolute paths.
fn decode_sandbox(w: &mut Walker<'_>, v: &Val<'_>) -> Option<Sandbox> {
    if let DeValue::Boolean(enabled) = v.get_ref() {
        return Some(Sandbox {
            enabled: *enabled,
            ..Sandbox::default()
        });
    }
    let t = w.table(v, "service.sandbox")?;
    w.check_keys::<crate::schema::SandboxPaths>(t, "service.sandbox");
    let mut paths = |key: &str| -> Option<Vec<PathBuf>> {
        let Some(list) = t.get(key) else {
            return Some(Vec::new());
        };
        let at = format!("service.sandbox.{key}");
        let items = w.string_list(list, &at)?;
        let mut ok = true;
        for (n, p) in items.iter().enumerate() {
            if !p.starts_with('/') || p.contains('\0') || p.split('/').any(|c| c == "..") {
                w.error(
                    list.span(),
                    &format!("{at}[{n}]"),
                    format!("{p:?} must be an absolute path without \"..\""),
                );
                ok = false;
            }
        }
        ok.then(|| items.into_iter().map(PathBuf::from).collect())
    };
    let read = paths("read");
    let write = paths("write");
    Some(Sandbox {
        enabled: true,
        read: read?,
        write: write?,
    })
}

fn decode_health(w: &mut Walker<'_>, v: &Val<'_>) -> Option<Health> {
    let t = w.table(v, "health")?;
    w.check_keys::<crate::schema::HealthSection>(t, "health");
    let path = required(w, t, v, "health", "path", |w, v, p| w.request_path(v, p));
    let interval = optional_duration(w, t, "health.interval", "interval", 1000);
    let timeout = optional_duration(w, t, "health.timeout", "timeout", 1000);
    let start_timeout = optional_duration(w, t, "health.start_timeout", "start_timeout", 30_000);
    let threshold = match t.get("failure_threshold") {
        Some(v) => w.count(v, "health.failure_threshold", 1, 100),
        None => Some(3),
    };
    Some(Health {
        path: path?,
        interval_ms: interval?,
        timeout_ms: timeout?,
        failure_threshold: threshold?,
        start_timeout_ms: start_timeout?,
    })
}

fn decode_signing(w: &mut Walker<'_>, v: &Val<'_>) -> Option<Signing> {
    let t = w.table(v, "signing")?;
    w.check_keys::<crate::schema::SigningSection>(t, "signing");
    let Some(keys_v) = t.get("public_keys") else {
        return Some(Signing::default());
    };
    let keys = w.string_list(keys_v, "signing.public_keys")?;
    let mut ok = true;
    for (n, k) in keys.iter().enumerate() {
        // A minisign public key is 42 bytes, base64: 56 characters starting "RW".
        if k.len() != 56 || !k.starts_with("RW") {
            w.error(
                keys_v.span(),
                &format!("signing.public_keys[{n}]"),
                "expected a minisign public key: the 56-character line starting with \"RW\" from a .pub file",
            );
            ok = false;
        }
    }
    ok.then_some(Signing { public_keys: keys })
}

/// Every environment, and the names of all of them. The names are kept even
/// where an environment's other fields fail, so that what refers to an
/// environment (`rehearsal_in`, a channel's `environments`) still finds it:
/// one bad value makes one error, not more about its neighbours. No names
/// when the table itself is unusable: then nothing can be checked against it.
fn decode_environments(
    w: &mut Walker<'_>,
    v: &Val<'_>,
    signing: Option<&Signing>,
) -> (Option<Vec<String>>, Option<Vec<Environment>>) {
    let Some(t) = w.table(v, "environments") else {
        return (None, None);
    };
    if t.is_empty() {
        w.error(v.span(), "environments", "define at least one environment");
        return (None, None);
    }
    // File order, not the map's sorted order: it is the promotion order.
    let mut entries: Vec<_> = t.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    let names: Vec<String> = entries
        .iter()
        .map(|(k, _)| k.get_ref().to_string())
        .collect();
    let mut out = Vec::new();
    let mut ok = true;
    let mut listens: Vec<(SocketAddr, &str)> = Vec::new();
    for (key, value) in &entries {
        let name: &str = key.get_ref();
        let path = join("environments", name);
        let env_name = match name.parse::<EnvName>() {
            Ok(n) => Some(n),
            Err(e) => {
                w.error(key.span(), &path, format!("bad environment name: {e}"));
                None
            }
        };
        let (listen, env) = decode_environment(w, value, &path, signing);
        if let Some(listen) = listen {
            let taken = listens
                .iter()
                .find_map(|(a, other)| Some((a, other, overlap(*a, listen)?)));
            if let Some((a, other, why)) = taken {
                w.error(
                    span_at(value, &["listen"]).unwrap_or(value.span()),
                    &join(&path, "listen"),
                    format!("\"{listen}\" overlaps \"{a}\", already used by environment {other:?} ({why}): both routers would take its connections; give each environment a port of its own"),
                );
                ok = false;
            }
            listens.push((listen, name));
        }
        match (env_name, env) {
            (Some(n), Some(mut env)) => {
                env.name = n;
                out.push(env);
            }
            _ => ok = false,
        }
    }
    for env in &out {
        let Some(r) = &env.gates.rehearsal_in else {
            continue;
        };
        let at = names.iter().position(|n| n == env.name.as_str());
        if names[..at.unwrap_or(0)].contains(r) {
            continue;
        }
        let value = entries
            .iter()
            .find(|(k, _)| k.get_ref() == env.name.as_str());
        let span = value
            .and_then(|(_, v)| span_at(v, &["gates", "rehearsal_in"]))
            .unwrap_or(v.span().start..v.span().start);
        let p = join(
            &join("environments", env.name.as_str()),
            "gates.rehearsal_in",
        );
        w.error(
            span,
            &p,
            format!(
                "{r:?} is not an environment before {} in the promotion order; expected one of: {}",
                env.name,
                names[..at.unwrap_or(0)].join(", ")
            ),
        );
        ok = false;
    }
    (Some(names), ok.then_some(out))
}

/// Why two router addresses would share connections, if they would. Routers
/// bind with SO_REUSEPORT, so the OS does not refuse the second: it would
/// quietly split or take the first environment's traffic.
fn overlap(a: SocketAddr, b: SocketAddr) -> Option<&'static str> {
    if a.port() != b.port() || a.port() == 0 {
        return None;
    }
    let (a, b) = (a.ip().to_canonical(), b.ip().to_canonical());
    let every_v6 = |ip: IpAddr| matches!(ip, IpAddr::V6(v6) if v6.is_unspecified());
    let every_v4 = |ip: IpAddr| matches!(ip, IpAddr::V4(v4) if v4.is_unspecified());
    if a == b {
        Some("the same address and port")
    } else if every_v6(a) || every_v6(b) {
        // Dual-stack: "::" takes IPv4 connections too.
        Some("\"::\" listens on every address, IPv4 included, at that port")
    } else if (every_v4(a) && b.is_ipv4()) || (every_v4(b) && a.is_ipv4()) {
        Some("\"0.0.0.0\" listens on every IPv4 address at that port")
    } else {
        None
    }
}

/// The span of the value at `keys` below the table `v`, if it is there.
fn span_at(v: &Val<'_>, keys: &[&str]) -> Option<Range<usize>> {
    let mut v = v;
    for key in keys {
        let DeValue::Table(t) = v.get_ref() else {
            return None;
        };
        v = t.get(*key)?;
    }
    Some(v.span())
}

fn decode_environment(
    w: &mut Walker<'_>,
    v: &Val<'_>,
    path: &str,
    signing: Option<&Signing>,
) -> (Option<SocketAddr>, Option<Environment>) {
    let Some(t) = w.table(v, path) else {
        return (None, None);
    };
    w.check_keys::<crate::schema::EnvironmentSection>(t, path);
    let listen = required(w, t, v, path, "listen", |w, v, p| {
        let s = w.string(v, p)?;
        match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                w.error(
                    v.span(),
                    p,
                    format!("{s:?} is not an address; expected IP:PORT such as \"127.0.0.1:8080\""),
                );
                None
            }
        }
    });
    let instances = match t.get("instances") {
        Some(v) => w.count(v, &join(path, "instances"), 1, 64),
        None => Some(1),
    };
    let strategy = match t.get("strategy") {
        Some(v) => {
            let p = join(path, "strategy");
            match w.string(v, &p).as_deref() {
                Some("blue-green") => Some(Strategy::BlueGreen),
                Some("canary") => match t.get("canary") {
                    Some(c) => decode_canary(w, c, &join(path, "canary")).map(Strategy::Canary),
                    None => Some(Strategy::Canary(Canary::standard())),
                },
                Some("rolling") => {
                    rollout::decode_rolling(w, t.get("rolling"), &join(path, "rolling"), instances)
                        .map(Strategy::Rolling)
                }
                Some(s) => {
                    w.error(
                        v.span(),
                        &p,
                        format!(
                            "unknown strategy {s:?}; expected one of: {}",
                            Strategy::NAMES.join(", ")
                        ),
                    );
                    None
                }
                None => None,
            }
        }
        None => Some(Strategy::BlueGreen),
    };
    for (key, wanted) in [("canary", "canary"), ("rolling", "rolling")] {
        let mismatch = match &strategy {
            Some(Strategy::Canary(_)) => wanted != "canary",
            Some(Strategy::Rolling(_)) => wanted != "rolling",
            Some(Strategy::BlueGreen) => true,
            None => false,
        };
        if let (Some(c), true) = (t.get(key), mismatch) {
            w.error(
                c.span(),
                &join(path, key),
                format!("{key} settings are set but the strategy is not {wanted:?}; set strategy = {wanted:?}"),
            );
        }
    }
    let smoke = match t.get("smoke") {
        Some(sv) => rollout::decode_smoke(w, sv, &join(path, "smoke")).map(Some),
        None => Some(None),
    };
    let sticky = match t.get("sticky") {
        Some(sv) => rollout::decode_sticky(w, sv, &join(path, "sticky")).map(Some),
        None => Some(None),
    };
    let bake = optional_duration(w, t, &join(path, "bake"), "bake", 10_000);
    let flag = |w: &mut Walker<'_>, key: &str| match t.get(key) {
        Some(b) => w.bool(b, &join(path, key)),
        None => Some(false),
    };
    let optional = flag(w, "optional");
    let auto_deploy = flag(w, "auto_deploy");
    let approval = match t.get("approval") {
        Some(a) => governance::decode_approval(w, a, &join(path, "approval")),
        None => Some(ApprovalPolicy::none()),
    };
    let freezes = match t.get("freeze") {
        Some(f) => governance::decode_freezes(w, f, &join(path, "freeze")),
        None => Some(Vec::new()),
    };
    let gates = match t.get("gates") {
        Some(g) => governance::decode_gates(w, g, &join(path, "gates")),
        None => Some(GatePolicy::none()),
    };
    let require_signature = match t.get("require_signature") {
        Some(rv) => {
            let p = join(path, "require_signature");
            let b = w.bool(rv, &p);
            if b == Some(true) && signing.is_some_and(|s| s.public_keys.is_empty()) {
                w.error(
                    rv.span(),
                    &p,
                    "requires at least one key in signing.public_keys",
                );
                None
            } else {
                b
            }
        }
        None => Some(false),
    };
    let env = t
        .get("env")
        .map(|e| w.env_vars(e, &join(path, "env")))
        .unwrap_or_default();
    let secrets = t
        .get("secrets")
        .map(|s| w.secrets(s, &join(path, "secrets")))
        .unwrap_or_default();
    let env = (|| {
        Some(Environment {
            name: "placeholder".parse().expect("valid literal"),
            listen: listen?,
            instances: instances?,
            strategy: strategy?,
            bake_ms: bake?,
            require_signature: require_signature?,
            env,
            secrets,
            smoke: smoke?,
            sticky: sticky?,
            optional: optional?,
            auto_deploy: auto_deploy?,
            approval: approval?,
            freezes: freezes?,
            gates: gates?,
        })
    })();
    (listen, env)
}

fn required<T>(
    w: &mut Walker<'_>,
    t: &DeTable<'_>,
    parent: &Val<'_>,
    path: &str,
    key: &str,
    f: impl FnOnce(&mut Walker<'_>, &Val<'_>, &str) -> Option<T>,
) -> Option<T> {
    let p = join(path, key);
    match t.get(key) {
        Some(v) => f(w, v, &p),
        None => {
            let s = parent.span();
            w.error(
                s.start..s.start,
                &p,
                format!("missing required key {key:?}"),
            );
            None
        }
    }
}

fn optional_duration(
    w: &mut Walker<'_>,
    t: &DeTable<'_>,
    path: &str,
    key: &str,
    default_ms: u64,
) -> Option<u64> {
    match t.get(key) {
        Some(v) => {
            let ms = w.duration(v, path)?;
            if ms == 0 && key != "bake" {
                w.error(v.span(), path, "must be longer than zero");
                return None;
            }
            Some(ms)
        }
        None => Some(default_ms),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn describe(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => format!("string {s:?}"),
        DeValue::Integer(i) => format!("integer {}", i.as_str()),
        DeValue::Float(f) => format!("float {}", f.as_str()),
        DeValue::Boolean(b) => format!("boolean {b}"),
        DeValue::Datetime(d) => format!("datetime {d}"),
        DeValue::Array(_) => "an array".to_owned(),
        DeValue::Table(_) => "a table".to_owned(),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, source[line_start..offset].chars().count() + 1)
}

/// The text of the line `span` starts on (without its line ending) and how
/// many of its characters the span covers there (a span running onto later
/// lines is cut at the end of its first).
fn span_on_line(source: &str, span: &Range<usize>) -> (String, usize) {
    let start = floor_char_boundary(source, span.start.min(source.len()));
    let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = source[start..]
        .find('\n')
        .map_or(source.len(), |i| start + i);
    let line = &source[line_start..line_end];
    let line = line.strip_suffix('\r').unwrap_or(line);
    let end = floor_char_boundary(source, span.end.min(line_start + line.len()).max(start));
    (line.to_owned(), source[start..end].chars().count())
}

/// The nearest char boundary at or before `at` (spans from the parser may
/// point inside a multi-byte character of invalid input).
fn floor_char_boundary(source: &str, mut at: usize) -> usize {
    while !source.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// The allowed key closest to a mistyped one, if it is plausibly a typo.
fn closest<'a>(key: &str, allowed: &'a [String]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| (strsim::levenshtein(key, a), a.as_str()))
        .filter(|(d, a)| *d <= 2.max(a.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

/// Which schema types the walker checked tables against, and the keys those
/// tables held, on this thread: lets a test prove every table is checked.
#[cfg(test)]
pub(crate) mod checked_tables {
    use std::cell::RefCell;
    use std::collections::{BTreeMap, BTreeSet};
    use toml::de::DeTable;

    /// A checked table: its schema type, its path and the keys it held.
    type Table = (String, String, BTreeSet<String>);

    thread_local! {
        static SEEN: RefCell<Vec<Table>> = RefCell::default();
    }

    pub(super) fn record<S: schemars::JsonSchema>(table: &DeTable<'_>, path: &str) {
        let keys = table.iter().map(|(k, _)| k.get_ref().to_string()).collect();
        SEEN.with(|seen| {
            let entry = (S::schema_name().into_owned(), path.to_string(), keys);
            seen.borrow_mut().push(entry);
        });
    }

    /// Every table checked so far, emptied.
    pub(crate) fn take_paths() -> Vec<Table> {
        SEEN.with(|seen| std::mem::take(&mut *seen.borrow_mut()))
    }

    /// The keys seen in the tables of each schema type so far, emptied.
    pub(crate) fn take() -> BTreeMap<String, BTreeSet<String>> {
        let mut by_type: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (type_name, _, keys) in take_paths() {
            by_type.entry(type_name).or_default().extend(keys);
        }
        by_type
    }
}
