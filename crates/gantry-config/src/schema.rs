//! The JSON Schema of `gantry.toml`, generated from the file-shaped types
//! below. They describe the file as written (durations as strings); the
//! decoder in `walk.rs` turns that into the validated [`crate::Config`].
//! A test keeps the keys of both in step.

#![allow(dead_code)] // The types exist to be described, not constructed.

use schemars::JsonSchema;
use std::collections::BTreeMap;

/// One service, its health check, its signing keys and its environments.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "gantry.toml")]
pub(crate) struct File {
    service: ServiceSection,
    health: HealthSection,
    #[serde(default)]
    signing: Option<SigningSection>,
    /// Rules that judge a canary; the standards' numbers by default.
    #[serde(default)]
    analysis: Option<AnalysisSection>,
    /// Environments in promotion order, e.g. development, integration, staging, production.
    environments: BTreeMap<String, EnvironmentSection>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct ServiceSection {
    /// Letters, digits, '-' and '_'.
    name: String,
    /// Program to run, relative to the release directory or absolute.
    command: String,
    /// Arguments; placeholders {port} {release_dir} {version} {env} {instance}.
    #[serde(default)]
    args: Vec<String>,
    /// Environment variable carrying the instance's port (default PORT).
    #[serde(default)]
    port_env: Option<String>,
    /// Plain settings for every environment. Never secrets.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Secrets by reference, resolved when an instance starts.
    #[serde(default)]
    secrets: BTreeMap<String, SecretSection>,
}

/// Exactly one of `env` or `file`.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct SecretSection {
    /// Name of a variable in the controller's environment.
    #[serde(default)]
    env: Option<String>,
    /// Path of a file holding the value.
    #[serde(default)]
    file: Option<String>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct HealthSection {
    /// HTTP path probed on each instance; 2xx is healthy.
    path: String,
    /// Duration between probes, e.g. "1s" (default 1s).
    #[serde(default)]
    interval: Option<String>,
    /// Probe timeout, e.g. "1s" (default 1s).
    #[serde(default)]
    timeout: Option<String>,
    /// Consecutive failures that make an instance unhealthy (default 3).
    #[serde(default)]
    #[schemars(range(min = 1, max = 100))]
    failure_threshold: Option<u32>,
    /// How long new instances may take to become healthy (default 30s).
    #[serde(default)]
    start_timeout: Option<String>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct SigningSection {
    /// minisign public keys: the 56-character base64 line of a .pub file.
    #[serde(default)]
    public_keys: Vec<String>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct EnvironmentSection {
    /// Public address of the environment's router, IP:PORT.
    listen: String,
    /// Number of instances (default 1).
    #[serde(default)]
    #[schemars(range(min = 1, max = 64))]
    instances: Option<u32>,
    /// Rollout strategy (default "blue-green").
    #[serde(default)]
    strategy: Option<StrategyName>,
    /// How long the new release serves with the old kept warm (default 10s).
    #[serde(default)]
    bake: Option<String>,
    /// Refuse releases without a valid minisign signature.
    #[serde(default)]
    require_signature: Option<bool>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    secrets: BTreeMap<String, SecretSection>,
    /// Steps of a canary rollout (with strategy = "canary"); default 10% → 50% → 100%, 2 minutes a step.
    #[serde(default)]
    canary: Option<CanarySection>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum StrategyName {
    BlueGreen,
    Canary,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct CanarySection {
    /// Rising weights, the last 100.
    #[serde(default)]
    steps: Vec<StepSection>,
    /// Time between two looks at the metrics (default 1s).
    #[serde(default)]
    interval: Option<String>,
    /// Longest a timed step waits for enough data before rolling back (default 10m).
    #[serde(default)]
    max_wait: Option<String>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct StepSection {
    /// Percent of traffic to the new release.
    #[schemars(range(min = 1, max = 100))]
    weight: u32,
    /// A duration such as "2m", or "until-promoted". Required except on the last step.
    #[serde(default)]
    pause: Option<String>,
}

/// A rule's threshold, or false to turn the rule off.
#[derive(JsonSchema)]
#[serde(untagged)]
enum Threshold {
    Number(f64),
    Off(bool),
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct AnalysisSection {
    /// Chance of rolling back a canary that is no worse, over a whole rollout (default 0.01).
    #[serde(default)]
    alpha: Option<f64>,
    /// Canary requests before any rule judges (default 50).
    #[serde(default)]
    min_requests: Option<u64>,
    /// Absolute error rate (default 0.01).
    #[serde(default)]
    max_error_rate: Option<Threshold>,
    /// Error rate above the baseline, as a fraction (default 0.005, i.e. 0.5 points).
    #[serde(default)]
    max_error_rate_increase: Option<Threshold>,
    /// Error rate as a multiple of the baseline (default 1.5).
    #[serde(default)]
    max_error_rate_ratio: Option<Threshold>,
    /// P99 latency as a multiple of the baseline P99 (default 3).
    #[serde(default)]
    max_p99_factor: Option<Threshold>,
    /// P50 latency as a multiple of the baseline P50 (default 1.5).
    #[serde(default)]
    max_p50_factor: Option<Threshold>,
    /// Compare canary errors with stable's live (default true).
    #[serde(default)]
    compare_errors: Option<bool>,
    /// Compare requests slower than this multiple of the baseline P99 (default 3).
    #[serde(default)]
    compare_slow_factor: Option<Threshold>,
    /// Relative worsening still called "no worse" for early promotion (default 0.5).
    #[serde(default)]
    promotion_margin: Option<f64>,
}

/// The schema as pretty JSON, as checked in under `schema/`.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(File);
    serde_json::to_string_pretty(&schema).expect("a schema always serializes") + "\n"
}
