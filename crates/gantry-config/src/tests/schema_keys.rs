//! The schema types are the one description of the keys: these tests walk
//! files that use every key, and files that leave out every required key, and
//! hold the walker to what the schema says.

use super::errors_of;
use crate::{json_schema, walk};
use std::collections::{BTreeMap, BTreeSet};

/// Every key the schema documents, in every table it describes, and one key
/// no table knows (`zz_unknown`) in each table.
pub(super) const EVERY_KEY: &str = r#"
zz_unknown = 1

[service]
name = "hello"
command = "bin/hello"
args = ["--port", "{port}"]
port_env = "PORT"
env = { RUST_LOG = "info" }
run_as = "nobody"
zz_unknown = 1
[service.secrets.DB]
env = "DB_PASSWORD"
zz_unknown = 1
[service.secrets.KEY]
file = "/run/key"
zz_unknown = 1
[service.sandbox]
read = ["/etc/hello"]
write = ["/var/lib/hello"]
zz_unknown = 1

[health]
path = "/healthz"
interval = "1s"
timeout = "1s"
failure_threshold = 3
start_timeout = "30s"
zz_unknown = 1

[signing]
public_keys = []
zz_unknown = 1

[analysis]
alpha = 0.01
min_requests = 50
max_error_rate = 0.01
max_error_rate_increase = 0.005
max_error_rate_ratio = 1.5
max_p99_factor = 3
max_p50_factor = 1.5
compare_errors = true
compare_client_errors = true
compare_slow_factor = 3
promotion_margin = 0.5
zz_unknown = 1

[[analysis.queries]]
name = "queue"
query = 'max(queue{release="{release}"})'
above_baseline = 10
consecutive = 3
no_data = "wait"
no_data_timeout = "2m"
zz_unknown = 1

[[analysis.queries]]
name = "orders"
query = 'sum(rate(orders_total{env="{env}",pool="{pool}"}[{interval}]))'
below_baseline = 0.8
zz_unknown = 1

[[analysis.queries]]
name = "cpu"
query = "max(cpu)"
above = 0.8
zz_unknown = 1

[[analysis.queries]]
name = "idle"
query = "min(idle)"
below = 0.1
zz_unknown = 1

[[analysis.queries]]
name = "payments"
errors = 'sum(payments_failed_total{release="{release}"})'
total = 'sum(payments_total{release="{release}"})'
max_ratio = 0.02
compare = true
zz_unknown = 1

[[analysis.queries]]
name = "checkouts"
successes = 'sum(checkouts_ok_total{release="{release}"})'
total = 'sum(checkouts_total{release="{release}"})'
zz_unknown = 1

[metrics]
zz_unknown = 1

[metrics.prometheus]
url = "http://127.0.0.1:9090"
bearer_token = { env = "PROM_TOKEN" }
timeout = "5s"
zz_unknown = 1

[retention]
audit = "365d"
deployments = "365d"
access_logs = "90d"
access_logs_size = "1GiB"
instance_output = "30d"
instance_output_size = 67108864
zz_unknown = 1

[drift]
interval = "1m"
zz_unknown = 1

[artifacts]
max_unpacked_size = "2GiB"
max_entries = 100000
zz_unknown = 1

[[notify]]
name = "hook"
kind = "webhook"
events = ["failed"]
environments = ["staging"]
url = "https://hooks.example.com/gantry"
secret = { env = "HOOK_SECRET" }
zz_unknown = 1

[[notify]]
name = "pager"
kind = "pagerduty"
routing_key = "R0UT1NG"
zz_unknown = 1

[[notify]]
name = "mail"
kind = "email"
from = "gantry@example.com"
to = ["ops@example.com"]
zz_unknown = 1
[notify.smtp]
host = "smtp.example.com"
port = 587
tls = "starttls"
username = "gantry"
password = { env = "SMTP_PASSWORD" }
zz_unknown = 1

[hosts.web-1]
address = "10.0.0.5"
user = "deploy"
port = 22
site = "eu-west"
labels = { tier = "web" }
key = { file = "/etc/passwd", zz_unknown = 1 }
data_dir = ".gantry"
zz_unknown = 1

[store]
lease = "3s"
renew_every = "1s"
zz_unknown = 1
[store.url]
env = "GANTRY_DATABASE_URL"
zz_unknown = 1

[ssh]
known_hosts = "known_hosts"
connect_timeout = "10s"
max_connecting = 16
max_sessions_per_host = 8
max_transfers = 8
zz_unknown = 1

[environments.staging]
listen = "127.0.0.1:18080"
metrics_listen = "127.0.0.1:19464"
hosts = ["web-1", { labels = { tier = "web" }, zz_unknown = 1 }]
fleet = { batches = ["100%"], max_failed = 0, waves = ["eu-west"], zz_unknown = 1 }
instances = 2
strategy = "rolling"
bake = "10s"
watch = "5m"
require_signature = false
env = { RUST_LOG = "debug" }
optional = false
auto_deploy = true
zz_unknown = 1
[environments.staging.secrets.TOKEN]
env = "STAGING_TOKEN"
zz_unknown = 1
[environments.staging.rolling]
max_surge = 1
max_unavailable = 0
analysis = "30s"
zz_unknown = 1
[environments.staging.sticky]
cookie = "gantry_release"
zz_unknown = 1
[environments.staging.smoke]
timeout = "5m"
max_noncritical_failure_ratio = 0.1
zz_unknown = 1
[[environments.staging.smoke.checks]]
name = "ready"
critical = true
timeout = "10s"
method = "GET"
path = "/ready"
expect_status = 200
body_contains = "ok"
zz_unknown = 1
[environments.staging.smoke.checks.json]
pointer = "/status"
equals = "ok"
zz_unknown = 1
[[environments.staging.smoke.checks]]
name = "script"
command = ["bin/smoke"]
zz_unknown = 1

[environments.production]
listen = "127.0.0.1:18081"
strategy = "canary"
hosts = ["web-1"]
fleet = { max_unavailable = 1 }
zz_unknown = 1
[environments.production.resources]
cpu_cores = 0.5
memory_mb = 512
max_cpu = 0.8
max_memory = 0.85
exhaustion = 0.9
consecutive = 3
zz_unknown = 1
[environments.production.canary]
interval = "1s"
max_wait = "10m"
promotion_tolerance = 0.005
max_pause = "10m"
zz_unknown = 1
[[environments.production.canary.steps]]
weight = 10
pause = "2m"
zz_unknown = 1
[[environments.production.canary.steps]]
weight = 100
[[environments.production.hooks]]
name = "flags"
at = "before_promotion"
command = ["/usr/local/bin/check-flags"]
timeout = "30s"
hold = "10m"
retry = "15s"
zz_unknown = 1
[[environments.production.hooks]]
name = "ci"
at = "before_traffic_increase"
url = "https://ci.example/confirm"
secret = { env = "HOOK_SECRET" }
zz_unknown = 1
[environments.production.database]
backup = ["/usr/local/bin/db-backup"]
restore = ["/usr/local/bin/db-restore"]
timeout = "30m"
zz_unknown = 1
[environments.production.sticky]
header = "X-User"
[environments.production.approval]
required = 1
lead_time = "5 business days"
emergency_review = "2days"
allow_standard = false
zz_unknown = 1
[[environments.production.freeze]]
name = "year-end"
from = "2026-12-20T00:00:00Z"
to = "2027-01-04T00:00:00Z"
zz_unknown = 1
[[environments.production.freeze]]
name = "weekend"
zz_unknown = 1
[environments.production.freeze.weekly]
from = "fri 16:00"
to = "mon 08:00"
zz_unknown = 1
[environments.production.gates]
unit = 100
integration = 95
coverage = 80
max_severity = "medium"
rehearsal_in = "staging"
plan = false
zz_unknown = 1
"#;

/// The schema types are the one list of keys: the walker checks every table
/// the schema describes, accepts each key the schema lists there and rejects
/// a key it does not, naming the schema's keys in the message.
#[test]
fn walker_accepts_exactly_the_keys_the_schema_lists_in_every_table() {
    let schema: serde_json::Value = serde_json::from_str(&json_schema()).unwrap();
    let props = |v: &serde_json::Value| -> Vec<String> {
        v["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    let mut documented: BTreeMap<String, Vec<String>> = BTreeMap::new();
    documented.insert("File".into(), props(&schema));
    for (name, def) in schema["$defs"].as_object().unwrap() {
        if def.get("properties").is_some() {
            documented.insert(name.clone(), props(def));
        }
    }

    walk::checked_tables::take();
    let errors = errors_of(EVERY_KEY);
    let checked = walk::checked_tables::take();

    assert_eq!(
        checked.keys().collect::<Vec<_>>(),
        documented.keys().collect::<Vec<_>>(),
        "the walker checks a table against every schema type that has keys"
    );
    for (name, keys) in &documented {
        let mut in_fixture: Vec<&String> = checked[name]
            .iter()
            .filter(|k| *k != "zz_unknown")
            .collect();
        in_fixture.sort();
        let mut listed: Vec<&String> = keys.iter().collect();
        listed.sort();
        assert_eq!(in_fixture, listed, "the fixture holds every key of {name}");
    }

    let unknown: Vec<&String> = errors
        .iter()
        .filter(|e| e.contains("unknown key"))
        .collect();
    let tables_with_unknown = EVERY_KEY.matches("zz_unknown = 1").count();
    assert_eq!(unknown.len(), tables_with_unknown, "{unknown:#?}");
    for e in &unknown {
        assert!(
            e.contains("unknown key \"zz_unknown\""),
            "a documented key was refused: {e}"
        );
        let listed = e.split("(expected one of: ").nth(1).unwrap();
        let listed: Vec<&str> = listed.split(')').next().unwrap().split(", ").collect();
        assert!(
            documented.values().any(|keys| keys == &listed),
            "the message lists a schema type's keys: {e}"
        );
    }
}

/// Every table with its required keys left out (and what a table needs to be
/// walked at all, such as a channel's kind).
const NO_REQUIRED_KEY: &str = r#"
[service]
[health]
[analysis]
[[analysis.queries]]
above = 1
[metrics.prometheus]
[store]
[[notify]]
name = "mail"
kind = "email"
from = "gantry@example.com"
to = ["ops@example.com"]
[notify.smtp]
[[notify]]
[hosts.web-1]
key = {}
[hosts.web-2]
[environments.production]
strategy = "canary"
hosts = [{}]
[environments.production.canary]
[[environments.production.canary.steps]]
[[environments.production.hooks]]
command = ["/bin/true"]
[environments.production.database]
[environments.production.smoke]
[environments.staging]
[environments.staging.smoke]
[[environments.staging.smoke.checks]]
path = "/ready"
[environments.staging.smoke.checks.json]
[[environments.staging.freeze]]
[environments.staging.freeze.weekly]
"#;

/// The walker demands exactly the keys the schema marks required: for every
/// table it checks, each required key left out is reported, and nothing else
/// is reported missing. (The walker's own checks stay the judge of *how* a key
/// is required; this keeps them and the schema from drifting apart.)
#[test]
fn walker_demands_exactly_the_keys_the_schema_requires() {
    let schema: serde_json::Value = serde_json::from_str(&json_schema()).unwrap();
    let required = |v: &serde_json::Value| -> Vec<String> {
        v.get("required")
            .and_then(|r| r.as_array())
            .map(|r| r.iter().map(|k| k.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    let mut required_by_type: BTreeMap<String, Vec<String>> = BTreeMap::new();
    required_by_type.insert("File".into(), required(&schema));
    for (name, def) in schema["$defs"].as_object().unwrap() {
        required_by_type.insert(name.clone(), required(def));
    }

    let mut types_with_a_missing_key = BTreeSet::new();
    for src in [NO_REQUIRED_KEY, "[signing]\n"] {
        walk::checked_tables::take();
        let errors = errors_of(src);
        let tables = walk::checked_tables::take_paths();
        let mut expected = BTreeSet::new();
        for (type_name, path, present) in &tables {
            for key in &required_by_type[type_name] {
                if !present.contains(key) {
                    expected.insert((path.clone(), key.clone()));
                    types_with_a_missing_key.insert(type_name.clone());
                }
            }
        }
        let mut reported = BTreeSet::new();
        for e in &errors {
            let Some((head, tail)) = e.split_once(": missing required ") else {
                continue;
            };
            // `key "K"` for a value, `table [K]` for a root section.
            let key = tail.split(['"', '[', ']']).nth(1).unwrap().to_string();
            let path = head.rsplit(": ").next().unwrap();
            let table = match path.strip_suffix(&key) {
                Some("") => "",
                Some(rest) if rest.ends_with('.') => &rest[..rest.len() - 1],
                _ => path,
            };
            reported.insert((table.to_string(), key));
        }
        assert_eq!(reported, expected, "{errors:#?}");
    }
    let types_with_required: BTreeSet<String> = required_by_type
        .iter()
        .filter(|(_, keys)| !keys.is_empty())
        .map(|(name, _)| name.clone())
        .collect();
    assert_eq!(
        types_with_a_missing_key, types_with_required,
        "the fixtures leave out a required key of every table type that has one"
    );
}
