//! The JSON Schema of `gantry.toml`, generated from the file-shaped types
//! below. They describe the file as written (durations as strings); the
//! decoder in `walk.rs` turns that into the validated [`crate::Config`].
//! They are also the one list of keys and of numeric ranges: the walker asks
//! [`keys`] which keys a table accepts and [`range`] which values a number
//! may take, so the schema and the decoder cannot disagree about them.

// The types are used (the walker names them for their keys) but their fields
// and variants are only described, never read: a file is decoded by the walker.
#![expect(
    dead_code,
    reason = "fields and variants exist to be described, not read"
)]

use schemars::JsonSchema;
use std::collections::BTreeMap;
use std::sync::OnceLock;

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
    /// How long records are kept.
    #[serde(default)]
    retention: Option<RetentionSection>,
    /// How often drift is looked for (what runs against what should).
    #[serde(default)]
    drift: Option<DriftSection>,
    /// How large a release archive may unpack.
    #[serde(default)]
    artifacts: Option<ArtifactsSection>,
    /// Channels that hear about deployments: Slack, PagerDuty, email, signed webhooks.
    #[serde(default)]
    notify: Vec<NotifySection>,
    /// Fleet hosts by name, reached over SSH; environments list them in `hosts`.
    #[serde(default)]
    hosts: BTreeMap<String, HostSection>,
    /// How the controller reaches hosts, and how many at once.
    #[serde(default)]
    ssh: Option<SshSection>,
    /// Metric sources beyond the routers' own counts.
    #[serde(default)]
    metrics: Option<MetricsSection>,
    /// Where the controller keeps its state: SQLite in the data directory unless a
    /// PostgreSQL database is named here.
    #[serde(default)]
    store: Option<StoreSection>,
    /// Environments in promotion order, e.g. development, integration, staging, production.
    environments: BTreeMap<String, EnvironmentSection>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoreSection {
    /// The PostgreSQL database's URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE). It
    /// carries a password, so it is referenced: { env = "GANTRY_DATABASE_URL" } or
    /// { file = "/path" }. `gantry server --store URL` overrides it.
    url: SecretSection,
    /// With several controllers on one database: how long the leader's lease holds
    /// unless renewed, from 1s to 60s (default "3s"). A dead leader is replaced within
    /// about this plus one renewal period.
    #[serde(default)]
    lease: Option<String>,
    /// How often the leader renews its lease, from 100ms to half of `lease` (default
    /// "1s"), so that one late renewal does not lose it.
    #[serde(default)]
    renew_every: Option<String>,
}

/// A fleet host. Names, sites and labels: letters, digits, '.', '-', '_'.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HostSection {
    /// IP address or DNS name; (address, port) is unique across hosts.
    address: String,
    /// SSH login (default: the controller's user).
    #[serde(default)]
    user: Option<String>,
    /// SSH port (default 22).
    #[serde(default)]
    #[schemars(range(min = 1, max = 65535))]
    port: Option<u16>,
    /// Region or zone, the unit of waves.
    #[serde(default)]
    site: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// "agent" (SSH_AUTH_SOCK) or { file = "/abs/path" }; the key is never stored.
    key: HostKeyValue,
    /// Gantry's directory on the host, relative to its HOME or absolute (default ".gantry").
    #[serde(default)]
    data_dir: Option<String>,
}

/// "agent", or a private key file.
#[derive(JsonSchema)]
#[serde(untagged)]
pub(crate) enum HostKeyValue {
    Agent(String),
    File(KeyFileSection),
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyFileSection {
    /// Absolute path of the private key on the controller's machine.
    file: String,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SshSection {
    /// Pinned host keys, relative to the data directory or absolute (default "known_hosts");
    /// written only by `gantry hosts trust`.
    #[serde(default)]
    known_hosts: Option<String>,
    /// How long opening a connection may take (default 10s).
    #[serde(default)]
    connect_timeout: Option<String>,
    /// Connections being opened at once, fleet-wide (default 16).
    #[serde(default)]
    #[schemars(range(min = 1, max = 256))]
    max_connecting: Option<u32>,
    /// Sessions at once on one host's connection; keep below sshd's MaxSessions (default 8).
    #[serde(default)]
    #[schemars(range(min = 1, max = 64))]
    max_sessions_per_host: Option<u32>,
    /// Uploads at once, fleet-wide (default 8).
    #[serde(default)]
    #[schemars(range(min = 1, max = 256))]
    max_transfers: Option<u32>,
}

/// A host's name, or a selector of every host carrying all the given labels.
#[derive(JsonSchema)]
#[serde(untagged)]
pub(crate) enum HostRefValue {
    Name(String),
    Selector(HostSelectorSection),
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HostSelectorSection {
    /// Every host whose labels include all of these.
    labels: BTreeMap<String, String>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MetricsSection {
    /// A Prometheus server the analysis' queries ask.
    #[serde(default)]
    prometheus: Option<PrometheusSection>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PrometheusSection {
    /// Base URL, e.g. "http://127.0.0.1:9090".
    url: String,
    /// Sent as `Authorization: Bearer …`; a reference ({ env = … } / { file = … }).
    #[serde(default)]
    bearer_token: Option<CredentialValue>,
    /// Longest a query may take (default 5s, 100ms to 1m).
    #[serde(default)]
    timeout: Option<String>,
}

/// A rule on a metric query's value, read at each look of the analysis.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuerySection {
    /// Named in verdicts and the log; unique.
    name: String,
    /// A gauge rule's PromQL; placeholders {env}, {release}, {pool}, {interval} are filled in
    /// (the release judged: the new one; the previous one for the baseline). A rule has one of
    /// query, errors or successes.
    #[serde(default)]
    query: Option<String>,
    /// A count rule's PromQL counter of failed events (e.g. sum(checkout_failed_total{release=
    /// "{release}"})), read for the new release and the old one; with total.
    #[serde(default)]
    errors: Option<String>,
    /// A count rule's counter of successful events (errors are total minus these); with total.
    #[serde(default)]
    successes: Option<String>,
    /// A count rule's counter of every event.
    #[serde(default)]
    total: Option<String>,
    /// A count rule: the new release's error ratio may not be above this (judged with the
    /// same anytime-valid tests as the router's error rate).
    #[serde(default)]
    #[schemars(range(min = 0.0001, max = 0.9999))]
    max_ratio: Option<f64>,
    /// A count rule: the new release's share of errors may not be above its share of events
    /// while both releases serve (default true).
    #[serde(default)]
    compare: Option<bool>,
    /// Bad when the value is above this.
    #[serde(default)]
    #[schemars(range(min = -1e15, max = 1e15))]
    above: Option<f64>,
    /// Bad when the value is below this.
    #[serde(default)]
    #[schemars(range(min = -1e15, max = 1e15))]
    below: Option<f64>,
    /// Bad when the value is above this multiple of its value before the rollout.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1e6))]
    above_baseline: Option<f64>,
    /// Bad when the value is below this multiple of its value before the rollout.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1e6))]
    below_baseline: Option<f64>,
    /// Bad readings in a row that fail the rule (default 3).
    #[serde(default)]
    #[schemars(range(min = 1, max = 100))]
    consecutive: Option<u32>,
    /// When the query returns no series, fails, or Prometheus is unreachable: "wait" (default:
    /// no promotion meanwhile, then roll back at no_data_timeout), "fail" (at once) or "pass"
    /// (said in the log).
    #[serde(default)]
    no_data: Option<String>,
    /// How long no data may last before no_data decides (default 2m, at most 1h).
    #[serde(default)]
    no_data_timeout: Option<String>,
}

/// A secret as a plain string (warned about) or a reference.
#[derive(JsonSchema)]
#[serde(untagged)]
pub(crate) enum CredentialValue {
    Plain(String),
    Secret(SecretSection),
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ChannelKindName {
    Slack,
    Pagerduty,
    Email,
    Webhook,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NotifySection {
    /// Unique among channels; names the channel in delivery records.
    name: String,
    kind: ChannelKindName,
    /// scheduled, approval_requested, starting, complete, failed, rollback_initiated
    /// (default: the standards' routing for the kind).
    #[serde(default)]
    events: Vec<String>,
    /// Only these environments (default: all).
    #[serde(default)]
    environments: Vec<String>,
    /// Slack: the incoming webhook URL; webhook: where to POST; PagerDuty: the Events API v2 URL.
    #[serde(default)]
    url: Option<CredentialValue>,
    /// PagerDuty integration (routing) key.
    #[serde(default)]
    routing_key: Option<CredentialValue>,
    /// Webhook: the HMAC-SHA256 key its payloads are signed with.
    #[serde(default)]
    secret: Option<CredentialValue>,
    /// Email: the SMTP server.
    #[serde(default)]
    smtp: Option<SmtpSection>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Vec<String>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SmtpSection {
    host: String,
    /// Default 587 (starttls), 465 (tls), 25 (none).
    #[serde(default)]
    #[schemars(range(min = 1, max = 65_535))]
    port: Option<u16>,
    /// none, starttls (default) or tls.
    #[serde(default)]
    tls: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<CredentialValue>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DriftSection {
    /// How often (default "1m", from 1s to 1d; "0s" turns the periodic check off).
    #[serde(default)]
    interval: Option<String>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetentionSection {
    /// Audit records older than this are pruned, e.g. "365d" (the default; at least a day).
    #[serde(default)]
    audit: Option<String>,
    /// Finished deployments older than this are pruned, e.g. "365d" (the default; at least a
    /// day); the one each environment runs is always kept.
    #[serde(default)]
    deployments: Option<String>,
    /// The routers' access logs (JSON lines, rotated daily and at 64 MiB) are kept this long,
    /// e.g. "90d" (the default, the standards'; at least a day).
    #[serde(default)]
    access_logs: Option<String>,
    /// And at most this much per environment, all files together (default "1GiB").
    #[serde(default)]
    access_logs_size: Option<SizeValue>,
    /// Instance output is kept this long after the instance stopped, e.g. "30d" (the default,
    /// the standards'; at least a day).
    #[serde(default)]
    instance_output: Option<String>,
    /// And at most this much per instance while it runs (default "64MiB"): past it, the older
    /// half is cut away.
    #[serde(default)]
    instance_output_size: Option<SizeValue>,
}

/// A size: a number of bytes, or a string such as "512MiB" or "2GiB".
#[derive(JsonSchema)]
#[serde(untagged)]
pub(crate) enum SizeValue {
    Bytes(u64),
    Text(String),
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ArtifactsSection {
    /// The most an archive may unpack to, all entries together (default "2GiB").
    #[serde(default)]
    max_unpacked_size: Option<SizeValue>,
    /// The most entries (files, directories, links) an archive may hold (default 100000).
    #[serde(default)]
    #[schemars(range(min = 1, max = u32::MAX))]
    max_entries: Option<u32>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServiceSection {
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
    /// The user instances run as when the controller runs as root (default "nobody"; never root).
    #[serde(default)]
    run_as: Option<String>,
    /// Landlock confinement of instances: `false` turns it off; a table adds paths.
    #[serde(default)]
    sandbox: Option<SandboxSection>,
}

/// `false`, or the paths an instance may reach beyond its release, the system
/// directories and its scratch directory.
#[derive(JsonSchema)]
#[serde(untagged)]
pub(crate) enum SandboxSection {
    Enabled(bool),
    Paths(SandboxPaths),
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SandboxPaths {
    /// Absolute paths the instance may read (and execute).
    #[serde(default)]
    read: Vec<String>,
    /// Absolute paths the instance may write.
    #[serde(default)]
    write: Vec<String>,
}

/// Exactly one of `env` or `file`.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SecretSection {
    /// Name of a variable in the controller's environment.
    #[serde(default)]
    env: Option<String>,
    /// Path of a file holding the value.
    #[serde(default)]
    file: Option<String>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthSection {
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
pub(crate) struct SigningSection {
    /// minisign public keys: the 56-character base64 line of a .pub file.
    #[serde(default)]
    public_keys: Vec<String>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnvironmentSection {
    /// Public address of the environment's router, IP:PORT.
    listen: String,
    /// Where the router serves its counters for Prometheus (`GET /metrics` only, on a
    /// listener of its own), IP:PORT; on a fleet, on every host. Absent: not served.
    #[serde(default)]
    metrics_listen: Option<String>,
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
    /// After the full rollout, judge the new release against the health baseline this long
    /// (old instances still warm), e.g. "30m" as the standards ask; "0s" or absent: no watch.
    /// From 1s (the rules look every watch/60, between 250ms and 10s) to 24h.
    #[serde(default)]
    watch: Option<String>,
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
    /// Batches of a rolling update (with strategy = "rolling"); default max_surge 1, max_unavailable 0.
    #[serde(default)]
    rolling: Option<RollingSection>,
    /// Checks run against each new instance before it takes traffic.
    #[serde(default)]
    smoke: Option<SmokeSection>,
    /// Keep a user on one release during a rollout. Exactly one of `cookie` or `header`.
    #[serde(default)]
    sticky: Option<StickySection>,
    /// A release may skip this environment on its way along the promotion path.
    #[serde(default)]
    optional: Option<bool>,
    /// Deploy each new release here when it is created (its gates permitting).
    #[serde(default)]
    auto_deploy: Option<bool>,
    /// Approvals a change needs here; none if absent.
    #[serde(default)]
    approval: Option<ApprovalSection>,
    /// Windows in which only emergency changes deploy.
    #[serde(default)]
    freeze: Vec<FreezeSection>,
    /// Evidence a release needs before it deploys here; each gate defaults to the standards' number.
    #[serde(default)]
    gates: Option<GatesSection>,
    /// Fleet hosts it runs on: names and { labels = {...} } selectors. Absent: the controller's machine.
    #[serde(default)]
    hosts: Vec<HostRefValue>,
    /// How a rollout walks the hosts: batches, failure budget, waves by site.
    #[serde(default)]
    fleet: Option<FleetSection>,
    /// Each instance's CPU and memory limits and the rules on Gantry's own
    /// readings of them during a rollout (default: the host's size, the standards' numbers).
    #[serde(default)]
    resources: Option<ResourcesSection>,
    /// The operator's checks at the rollout's points, whose answers go on, hold or stop it.
    #[serde(default)]
    hooks: Vec<HookSection>,
    /// The backup before a release's first breaking migration and the restore a rollback
    /// runs; without it, a release with a breaking migration is refused here.
    #[serde(default)]
    database: Option<DatabaseSection>,
}

/// An environment's database commands, each a program and its arguments run without a
/// shell on the controller's machine, with the environment's variables and secrets and
/// GANTRY_BACKUP_DIR (a directory kept for the deployment).
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DatabaseSection {
    /// Takes a backup (point-in-time recovery) before the first breaking migration.
    backup: Vec<String>,
    /// Returns the database to that backup when the deployment rolls back.
    restore: Vec<String>,
    /// One run's limit (default 30m, 1s to 6h).
    #[serde(default)]
    timeout: Option<String>,
}

/// A release's `gantry-migrations.toml` (in its artifact's top directory).
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MigrationsFile {
    /// In the order they run.
    #[serde(default)]
    migration: Vec<MigrationSection>,
}

/// One migration of a release.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MigrationSection {
    /// Unique; once applied in an environment it never runs there again.
    id: String,
    /// additive (left in place on rollback), breaking (the environment's backup before,
    /// its restore on rollback) or data (its reverse runs on rollback).
    kind: String,
    /// A program and its arguments, run from the release directory, confined as the
    /// release's instances are, with the environment's variables and secrets.
    run: Vec<String>,
    /// Data migrations only: undoes run.
    #[serde(default)]
    reverse: Option<Vec<String>>,
    /// One run's limit (default 10m, 1s to 6h).
    #[serde(default)]
    timeout: Option<String>,
}

/// A hook: a program (exit 0 goes on, 75 holds, else stops) or a signed POST (2xx goes on,
/// 423 holds, else stops), called at one point of the rollout.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HookSection {
    /// Named in the log; unique in the environment.
    name: String,
    /// before_rollout, before_traffic_increase, before_promotion (asked: the rollout waits),
    /// after_rollout or on_rollback (told).
    at: String,
    /// A program and its arguments, run without a shell and with a cleared environment
    /// (GANTRY_HOOK_POINT, GANTRY_ENV, GANTRY_VERSION, … are set).
    #[serde(default)]
    command: Option<Vec<String>>,
    /// An http(s) URL that receives a JSON POST.
    #[serde(default)]
    url: Option<String>,
    /// Signs the POST (x-gantry-signature, as the webhook notifications); a reference.
    #[serde(default)]
    secret: Option<CredentialValue>,
    /// One call's limit (default 30s, 100ms to 10m).
    #[serde(default)]
    timeout: Option<String>,
    /// How long holds may hold the rollout before counting as a failure (default 10m, at most 24h).
    #[serde(default)]
    hold: Option<String>,
    /// Asked again this long after a hold (default 15s, 1s to 10m).
    #[serde(default)]
    retry: Option<String>,
}

/// The standards' resource triggers, judged on the target's own readings of
/// each instance (its process tree): CPU above 80% and memory above 85% of the
/// instance's limit roll back; above 90% is "resource exhaustion".
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResourcesSection {
    /// CPU limit of one instance in cores, e.g. 0.5 (default: the host's cores).
    #[serde(default)]
    #[schemars(range(min = 0.01, max = 1024))]
    cpu_cores: Option<f64>,
    /// Memory limit of one instance in MiB (default: the host's memory).
    #[serde(default)]
    #[schemars(range(min = 1, max = 16_777_216))]
    memory_mb: Option<u32>,
    /// Share of the CPU limit above which a reading is bad (default 0.8), or false.
    #[serde(default)]
    #[schemars(extend("minimum" = 0.01, "maximum" = 1))]
    max_cpu: Option<Threshold>,
    /// Share of the memory limit above which a reading is bad (default 0.85), or false.
    #[serde(default)]
    #[schemars(extend("minimum" = 0.01, "maximum" = 1))]
    max_memory: Option<Threshold>,
    /// Share of either limit called "resource exhaustion" (default 0.9), or false.
    #[serde(default)]
    #[schemars(extend("minimum" = 0.01, "maximum" = 1))]
    exhaustion: Option<Threshold>,
    /// Bad readings in a row of one instance that roll back (default 3).
    #[serde(default)]
    #[schemars(range(min = 1, max = 100))]
    consecutive: Option<u32>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FleetSection {
    /// Cumulative batch targets within a wave, e.g. [1, "10%", "50%", "100%"]; the last "100%".
    #[serde(default)]
    batches: Vec<HostShareValue>,
    /// Instead of `batches`: at most this many hosts (a count or "N%" of each wave) out of
    /// service at once; batches of that size, one after another.
    #[serde(default)]
    max_unavailable: Option<HostShareValue>,
    /// Hosts (a count or "N%") that may fail before the whole rollout rolls back (default 0);
    /// below the number of hosts.
    #[serde(default)]
    max_failed: Option<HostShareValue>,
    /// Sites in rollout order; each a full rollout, the next only once it is healthy.
    /// Every host of the environment must have one of these sites.
    #[serde(default)]
    waves: Vec<String>,
}

/// A number of hosts, or a share such as "10%".
#[derive(JsonSchema)]
#[serde(untagged)]
pub(crate) enum HostShareValue {
    Count(u32),
    Percent(String),
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApprovalSection {
    /// Approvals from the approver role (default 1; the requester's own never counts).
    #[serde(default)]
    #[schemars(range(min = 0, max = 10))]
    required: Option<u32>,
    /// How long a normal change waits after it is requested: "5 business days" (default) or a duration.
    #[serde(default)]
    lead_time: Option<String>,
    /// Within how long an emergency change must get its approvals afterwards (default "2days").
    #[serde(default)]
    emergency_review: Option<String>,
    /// Whether standard (pre-approved) changes skip approvals here (default false).
    #[serde(default)]
    allow_standard: Option<bool>,
}

/// Either `from` and `to`, or `weekly`.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FreezeSection {
    name: String,
    /// RFC 3339 instant, e.g. "2026-12-20T00:00:00Z".
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    weekly: Option<WeeklySection>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WeeklySection {
    /// Weekday and time in UTC, e.g. "fri 16:00".
    from: String,
    /// Weekday and time in UTC, e.g. "mon 08:00".
    to: String,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GatesSection {
    /// Unit test pass rate in percent (default 100), or false.
    #[serde(default)]
    #[schemars(extend("minimum" = 0, "maximum" = 100))]
    unit: Option<Threshold>,
    /// Integration test pass rate in percent (default 95), or false.
    #[serde(default)]
    #[schemars(extend("minimum" = 0, "maximum" = 100))]
    integration: Option<Threshold>,
    /// Line coverage in percent (default 80), or false.
    #[serde(default)]
    #[schemars(extend("minimum" = 0, "maximum" = 100))]
    coverage: Option<Threshold>,
    /// Worst security finding allowed: low, medium (default), high, critical; or false.
    #[serde(default)]
    max_severity: Option<serde_json::Value>,
    /// An earlier environment where a rollback rehearsal must have passed.
    #[serde(default)]
    rehearsal_in: Option<String>,
    /// Whether an approved deployment plan is needed (default false).
    #[serde(default)]
    plan: Option<bool>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum StrategyName {
    BlueGreen,
    Canary,
    Rolling,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RollingSection {
    /// Instances that may run above `instances` during the update (default 1; at most `instances`).
    #[serde(default)]
    #[schemars(range(min = 0, max = 64))]
    max_surge: Option<u32>,
    /// Instances that may be out of service below `instances` (default 0; at most `instances`).
    #[serde(default)]
    #[schemars(range(min = 0, max = 64))]
    max_unavailable: Option<u32>,
    /// After each batch takes traffic, and while the old release still serves beside it: judge
    /// the new release against the old on their live counts (the `[analysis]` rules) this long,
    /// e.g. "30s" (at most 1h), before the next batch. Absent: batches go on once healthy.
    #[serde(default)]
    analysis: Option<String>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SmokeSection {
    /// The whole suite's time limit (default 5m).
    #[serde(default)]
    timeout: Option<String>,
    /// Failed non-critical checks, as a share, above which the rollout pauses for a decision (default 0.1).
    #[serde(default)]
    #[schemars(range(min = 0, max = 1))]
    max_noncritical_failure_ratio: Option<f64>,
    checks: Vec<CheckSection>,
}

/// One check: exactly one of `path` (HTTP) or `command`.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckSection {
    /// Unique within the environment.
    name: String,
    /// A failure rolls back at once (default true).
    #[serde(default)]
    critical: Option<bool>,
    /// One attempt's time limit (default 10s).
    #[serde(default)]
    timeout: Option<String>,
    /// HTTP method (default GET).
    #[serde(default)]
    method: Option<String>,
    /// Request path on the instance, starting with '/'.
    #[serde(default)]
    path: Option<String>,
    /// Expected HTTP status (default 200).
    #[serde(default)]
    #[schemars(range(min = 100, max = 599))]
    expect_status: Option<u16>,
    /// Text the body must contain.
    #[serde(default)]
    body_contains: Option<String>,
    /// A JSON field of the body and the value it must equal.
    #[serde(default)]
    json: Option<JsonCheckSection>,
    /// A program and its arguments, run without a shell with GANTRY_SMOKE_URL set; exit 0 passes.
    #[serde(default)]
    command: Option<Vec<String>>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JsonCheckSection {
    /// RFC 6901 pointer, e.g. "/status".
    pointer: String,
    /// The value the field must equal.
    equals: serde_json::Value,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StickySection {
    /// Cookie the router sets on a user's first answer and reads after.
    #[serde(default)]
    cookie: Option<String>,
    /// Header clients send (e.g. a user id).
    #[serde(default)]
    header: Option<String>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CanarySection {
    /// Rising weights, the last 100.
    #[serde(default)]
    steps: Vec<StepSection>,
    /// Time between two looks at the metrics (default 1s).
    #[serde(default)]
    interval: Option<String>,
    /// Longest a timed step waits for enough data before rolling back (default 10m).
    #[serde(default)]
    max_wait: Option<String>,
    /// A timed step moves on only when the data bounds the canary's error and
    /// slow-request rates within this many rate points of stable's (default
    /// 0.005, the standards' 0.5 points; 1 turns the requirement off).
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    promotion_tolerance: Option<f64>,
    /// Longest a timed step gathers that evidence; then the deployment holds
    /// for `gantry promote` or `gantry abort` (default 10m, never less than the pause).
    #[serde(default)]
    max_pause: Option<String>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StepSection {
    /// Percent of traffic to the new release.
    #[schemars(range(min = 1, max = 100))]
    weight: u32,
    /// A duration such as "2m", or "until-promoted". Required except on the last step.
    #[serde(default)]
    pause: Option<String>,
}

/// A rule's threshold, or false to turn the rule off. Its range is given
/// where it is used, with `extend` (schemars puts `range` only on numbers):
/// `minimum` and `maximum` beside the `anyOf` bound its number.
#[derive(JsonSchema)]
#[serde(untagged)]
pub(crate) enum Threshold {
    Number(f64),
    Off(bool),
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AnalysisSection {
    /// Chance of rolling back a canary that is no worse, over a whole rollout (default 0.01).
    #[serde(default)]
    #[schemars(range(min = 1e-9, max = 0.5))]
    alpha: Option<f64>,
    /// Canary requests before any rule judges (default 50).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1_000_000))]
    min_requests: Option<u64>,
    /// Absolute error rate (default 0.01).
    #[serde(default)]
    #[schemars(extend("minimum" = 0, "maximum" = 1))]
    max_error_rate: Option<Threshold>,
    /// Error rate above the baseline, as a fraction (default 0.005, i.e. 0.5 points).
    #[serde(default)]
    #[schemars(extend("minimum" = 0, "maximum" = 1))]
    max_error_rate_increase: Option<Threshold>,
    /// Error rate as a multiple of the baseline (default 1.5).
    #[serde(default)]
    #[schemars(extend("minimum" = 1, "maximum" = 1000))]
    max_error_rate_ratio: Option<Threshold>,
    /// P99 latency as a multiple of the baseline P99 (default 3).
    #[serde(default)]
    #[schemars(extend("minimum" = 1, "maximum" = 1000))]
    max_p99_factor: Option<Threshold>,
    /// P50 latency as a multiple of the baseline P50 (default 1.5).
    #[serde(default)]
    #[schemars(extend("minimum" = 1, "maximum" = 1000))]
    max_p50_factor: Option<Threshold>,
    /// Compare canary errors with stable's live (default true).
    #[serde(default)]
    compare_errors: Option<bool>,
    /// Compare the canary's share of 4xx answers with its share of traffic
    /// (default true); 4xx never count in the absolute error-rate rules.
    /// false turns the comparison off (e.g. for a release that retires routes).
    #[serde(default)]
    compare_client_errors: Option<bool>,
    /// Compare requests slower than this multiple of the baseline P99 (default 3).
    #[serde(default)]
    #[schemars(extend("minimum" = 1, "maximum" = 1000))]
    compare_slow_factor: Option<Threshold>,
    /// Relative worsening still called "no worse" for early promotion (default 0.5).
    #[serde(default)]
    #[schemars(range(min = 0, max = 10))]
    promotion_margin: Option<f64>,
    /// Rules on metric queries (needs [metrics.prometheus]), judged at every look of a canary
    /// step and of the watch; at most 32.
    #[serde(default)]
    queries: Vec<QuerySection>,
}

/// The schema as pretty JSON, as checked in under `schema/`.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(File);
    serde_json::to_string_pretty(&schema).expect("a schema always serializes") + "\n"
}

/// What the schema says of one table type: its keys in the schema's order,
/// and the inclusive range of each key it bounds.
struct TableSchema {
    keys: Vec<String>,
    ranges: BTreeMap<String, (f64, f64)>,
}

/// The table type `T`'s schema, read once from the generated schema (the
/// root's and each `$defs` entry's `properties`).
///
/// Panics if `T` is not part of the file's schema: a programming error that the
/// test walking every table catches, never a consequence of the input.
fn table<T: JsonSchema>() -> &'static TableSchema {
    static BY_TYPE: OnceLock<BTreeMap<String, TableSchema>> = OnceLock::new();
    let by_type = BY_TYPE.get_or_init(tables_by_type);
    let name = T::schema_name();
    match by_type.get(name.as_ref()) {
        Some(table) => table,
        None => panic!("{name} is not a table of the gantry.toml schema"),
    }
}

/// The keys a table described by `T` accepts, in the schema's order.
pub(crate) fn keys<T: JsonSchema>() -> &'static [String] {
    &table::<T>().keys
}

/// The inclusive range the schema gives `key` of the table type `T` (its
/// `minimum` and `maximum`): the one statement of that range, which the
/// walker enforces and the JSON Schema publishes.
///
/// Panics if the schema bounds no such key: a programming error that the
/// test walking every key of every table catches.
pub(crate) fn range<T: JsonSchema>(key: &str) -> (f64, f64) {
    match table::<T>().ranges.get(key) {
        Some(range) => *range,
        None => panic!(
            "{}.{key} has no minimum and maximum in the gantry.toml schema",
            T::schema_name()
        ),
    }
}

/// Every table type's schema by its schema name, the root under `File`;
/// with them, those of a release's migrations file (another file, whose
/// tables the same walker checks).
fn tables_by_type() -> BTreeMap<String, TableSchema> {
    let mut by_type = tables_of(schemars::schema_for!(File), &File::schema_name());
    by_type.extend(tables_of(
        schemars::schema_for!(MigrationsFile),
        &MigrationsFile::schema_name(),
    ));
    by_type
}

fn tables_of(schema: schemars::Schema, root_name: &str) -> BTreeMap<String, TableSchema> {
    let root = schema.as_value();
    let table = |v: &serde_json::Value| -> Option<TableSchema> {
        let properties = v.get("properties")?.as_object()?;
        let ranges = properties
            .iter()
            .filter_map(|(key, p)| {
                let bound = |k: &str| p.get(k).and_then(serde_json::Value::as_f64);
                Some((key.clone(), (bound("minimum")?, bound("maximum")?)))
            })
            .collect();
        Some(TableSchema {
            keys: properties.keys().cloned().collect(),
            ranges,
        })
    };
    let mut by_type = BTreeMap::new();
    if let Some(t) = table(root) {
        by_type.insert(root_name.to_owned(), t);
    }
    if let Some(defs) = root.get("$defs").and_then(|d| d.as_object()) {
        for (name, def) in defs {
            if let Some(t) = table(def) {
                by_type.insert(name.clone(), t);
            }
        }
    }
    by_type
}
