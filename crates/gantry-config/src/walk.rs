//! Decoding the spanned TOML tree into [`Config`], collecting every problem.

use crate::*;
use std::net::IpAddr;
use std::ops::Range;

mod artifacts;
mod canary;
mod env_vars;
mod environments;
mod fleet;
mod governance;
mod hooks;
mod hosts;
mod metrics;
pub(crate) mod migrations;
mod notify;
mod rollout;
mod service;
mod source;
use canary::{decode_analysis, decode_canary};
use env_vars::check_placeholders;
use environments::decode_environments;
use service::{decode_health, decode_service, decode_signing};
use source::{closest, line_col, span_on_line};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

const DAY_MS: u64 = 86_400_000;

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

    /// An integer in the range the schema gives `key` of the table type
    /// `S` (at `table`): the schema is the one statement of the range.
    fn count<S: schemars::JsonSchema>(
        &mut self,
        v: &Val<'_>,
        table: &str,
        key: &str,
    ) -> Option<u32> {
        let (min, max) = crate::schema::range::<S>(key);
        self.count_within(v, &join(table, key), min as u64, max as u64)
    }

    /// An integer within `min..=max`. Only for a range narrower than the
    /// schema's, read from it and narrowed by another key (a rolling
    /// update's surge is at most the environment's instances).
    fn count_within(&mut self, v: &Val<'_>, path: &str, min: u64, max: u64) -> Option<u32> {
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

    /// A number (integer or float) in the range the schema gives `key` of
    /// the table type `S` (at `table`).
    fn number<S: schemars::JsonSchema>(
        &mut self,
        v: &Val<'_>,
        table: &str,
        key: &str,
    ) -> Option<f64> {
        let (min, max) = crate::schema::range::<S>(key);
        self.number_within(v, &join(table, key), min, max)
    }

    /// A number (integer or float) within `min..=max`.
    fn number_within(&mut self, v: &Val<'_>, path: &str, min: f64, max: f64) -> Option<f64> {
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

    /// A rule threshold: a number in the range the schema gives `key` of
    /// the table type `S` (at `table`), or `false` to turn the rule off.
    fn threshold<S: schemars::JsonSchema>(
        &mut self,
        v: &Val<'_>,
        table: &str,
        key: &str,
    ) -> Option<Option<f64>> {
        let path = &join(table, key);
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
            _ => self.number::<S>(v, table, key).map(Some),
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
}

/// Parses `source` as TOML and hands its root to `decode`, gathering every
/// diagnostic (a syntax error is one, located).
fn decode_toml<T>(
    file: &str,
    source: &str,
    decode: impl FnOnce(&mut Walker<'_>, &Spanned<DeTable<'_>>) -> Option<T>,
) -> (Option<T>, Vec<Diagnostic>) {
    let mut w = Walker {
        file,
        source,
        diags: Vec::new(),
    };
    let out = match DeTable::parse(source) {
        Ok(root) => decode(&mut w, &root),
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            w.error(span, "", format!("not valid TOML: {}", e.message().trim()));
            None
        }
    };
    let mut diags = w.diags;
    diags.sort_by_key(|d| (d.line, d.column));
    (out, diags)
}

pub(crate) fn decode(file: &str, source: &str) -> (Option<Config>, Vec<Diagnostic>) {
    decode_toml(file, source, decode_config)
}

fn decode_config(w: &mut Walker<'_>, root: &Spanned<DeTable<'_>>) -> Option<Config> {
    let root_span = root.span();
    let root = root.get_ref();
    w.check_keys::<crate::schema::File>(root, "");

    let at_start = root_span.start..root_span.start;
    let service = required_table(w, root, &at_start, "service", decode_service);
    let health = required_table(w, root, &at_start, "health", decode_health);
    let signing = match root.get("signing") {
        Some(v) => decode_signing(w, v),
        None => Some(Signing::default()),
    };
    let analysis = match root.get("analysis") {
        Some(v) => decode_analysis(w, v),
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
                            "must be at least one day (the standards keep the audit trail a year, access logs 90 days, instance output 30 days)",
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
            let access_logs_ms = at_least_a_day("access_logs", standard.access_logs_ms);
            let instance_output_ms =
                at_least_a_day("instance_output", standard.instance_output_ms);
            let mut at_least_a_mib = |key: &str, default: u64| match t.get(key) {
                Some(v) => {
                    let path = join("retention", key);
                    let bytes = artifacts::size(w, v, &path)?;
                    if bytes < 1 << 20 {
                        w.error(v.span(), &path, "must be at least \"1MiB\"");
                        return None;
                    }
                    Some(bytes)
                }
                None => Some(default),
            };
            let access_logs_bytes = at_least_a_mib("access_logs_size", standard.access_logs_bytes);
            let instance_output_bytes =
                at_least_a_mib("instance_output_size", standard.instance_output_bytes);
            Some(Retention {
                audit_ms: audit_ms?,
                deployments_ms: deployments_ms?,
                access_logs_ms: access_logs_ms?,
                access_logs_bytes: access_logs_bytes?,
                instance_output_ms: instance_output_ms?,
                instance_output_bytes: instance_output_bytes?,
            })
        }),
        None => Some(Retention::standard()),
    };
    let drift_interval_ms = match root.get("drift") {
        Some(v) => w.table(v, "drift").and_then(|t| {
            w.check_keys::<crate::schema::DriftSection>(t, "drift");
            match t.get("interval") {
                Some(i) => {
                    let ms = w.duration(i, "drift.interval")?;
                    if ms != 0 && !(1_000..=DAY_MS).contains(&ms) {
                        w.error(
                            i.span(),
                            "drift.interval",
                            "expected \"0s\" (off) or a duration from 1s to 1d",
                        );
                        return None;
                    }
                    Some(ms)
                }
                None => Some(60_000),
            }
        }),
        None => Some(60_000),
    };
    let artifacts = match root.get("artifacts") {
        Some(v) => artifacts::decode_artifacts(w, v),
        None => Some(ArtifactLimits::standard()),
    };
    let (env_names, environments) = match root.get("environments") {
        Some(v) => decode_environments(w, v, signing.as_ref()),
        None => {
            w.error(
                at_start,
                "environments",
                "missing required table [environments]; define at least one environment",
            );
            (None, None)
        }
    };
    let hosts = match root.get("hosts") {
        Some(v) => hosts::decode_hosts(w, v),
        None => Some(Vec::new()),
    };
    let ssh = match root.get("ssh") {
        Some(v) => hosts::decode_ssh(w, v),
        None => Some(SshSettings::default()),
    };
    let mut environments = environments;
    let env_hosts_ok = match root.get("environments") {
        Some(v) => hosts::resolve_environment_hosts(w, v, hosts.as_deref(), &mut environments),
        None => true,
    };
    let metrics = match root.get("metrics") {
        Some(v) => metrics::decode_metrics(w, v),
        None => Some(Metrics::default()),
    };
    if let (Some(a), Some(m)) = (&analysis, &metrics) {
        if !a.queries.is_empty() && m.prometheus.is_none() {
            let at = root
                .get("analysis")
                .map(|v| v.span())
                .unwrap_or(root_span.start..root_span.start);
            w.error(
                at,
                "analysis.queries",
                "queries need a metrics server to ask; add [metrics.prometheus] with its url",
            );
        }
    }
    let notify = match root.get("notify") {
        Some(v) => notify::decode_notify(w, v, env_names.as_deref()),
        None => Some(Vec::new()),
    };
    let store = match root.get("store") {
        Some(v) => decode_store(w, v),
        None => Some(StoreSettings::default()),
    };
    match (
        service,
        health,
        signing,
        analysis,
        retention,
        drift_interval_ms,
        artifacts,
        environments,
        notify,
        hosts,
        ssh,
        metrics,
        store,
    ) {
        (
            Some(service),
            Some(health),
            Some(signing),
            Some(analysis),
            Some(retention),
            Some(drift_interval_ms),
            Some(artifacts),
            Some(environments),
            Some(notify),
            Some(hosts),
            Some(ssh),
            Some(metrics),
            Some(store),
        ) if env_hosts_ok => Some(Config {
            drift_interval_ms,
            service,
            health,
            signing,
            analysis,
            retention,
            artifacts,
            environments,
            notify,
            hosts,
            ssh,
            metrics,
            store,
        }),
        _ => None,
    }
}

/// `[store]`: the PostgreSQL URL, only as a reference (it carries a
/// password), and the leader's lease with its renewal period.
fn decode_store(w: &mut Walker<'_>, v: &Val<'_>) -> Option<StoreSettings> {
    let t = w.table(v, "store")?;
    w.check_keys::<crate::schema::StoreSection>(t, "store");
    let Some(url) = t.get("url") else {
        w.error(
            v.span(),
            "store.url",
            "missing required key \"url\": the PostgreSQL database's URL, as { env = \"GANTRY_DATABASE_URL\" } or { file = \"/path\" }",
        );
        return None;
    };
    if let DeValue::String(_) = url.get_ref() {
        w.error(
            url.span(),
            "store.url",
            "the database URL carries a password, so it is not written in the config; reference it as { env = \"GANTRY_DATABASE_URL\" } or { file = \"/path\" }",
        );
        return None;
    }
    let url = Some(w.secret_ref(url, "store.url")?);
    let lease_ms = match t.get("lease") {
        None => Some(crate::DEFAULT_LEASE_MS),
        Some(d) => w.duration(d, "store.lease").and_then(|ms| {
            if (1_000..=60_000).contains(&ms) {
                Some(ms)
            } else {
                w.error(
                    d.span(),
                    "store.lease",
                    "expected a duration from 1s to 60s",
                );
                None
            }
        }),
    };
    let renew_ms = match t.get("renew_every") {
        None => Some(crate::DEFAULT_RENEW_MS),
        Some(d) => w.duration(d, "store.renew_every"),
    };
    let (lease_ms, renew_ms) = (lease_ms?, renew_ms?);
    if renew_ms < 100 || renew_ms * 2 > lease_ms {
        let at = t.get("renew_every").map_or(v.span(), |d| d.span());
        w.error(
            at,
            "store.renew_every",
            format!(
                "expected a duration from 100ms to half of store.lease ({}ms), so that one late renewal does not lose the lease; found {renew_ms}ms",
                lease_ms / 2
            ),
        );
        return None;
    }
    Some(StoreSettings {
        url,
        lease_ms,
        renew_ms,
    })
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
            if ms == 0 && key != "bake" && key != "watch" {
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
