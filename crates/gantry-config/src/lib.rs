//! `gantry.toml`: one service, its health check and its environments.
//!
//! The file is parsed once into validated types ([`Config`]). Parsing never
//! stops at the first problem: every error is collected with its file, line,
//! column and field path, and warnings are kept apart from errors, so that
//! `gantry validate` can show everything that is wrong in one go.
//!
//! Secrets are never values in this file: a secret names an environment
//! variable or a file, and is resolved only when an instance starts.

mod hosts;
mod render;
mod schema;
mod settings;
mod walk;

pub use hosts::{FleetPlan, Host, HostShare, SshKey, SshSettings, Wave, DEFAULT_HOST_DATA_DIR};
pub use schema::json_schema;

use gantry_core::EnvName;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The starter file written by `gantry init`. It is tested to validate.
pub const STARTER: &str = include_str!("starter.toml");

/// Placeholders allowed in `service.args` and env values.
pub const PLACEHOLDERS: &[&str] = &[
    "{port}",
    "{release_dir}",
    "{version}",
    "{env}",
    "{instance}",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub service: Service,
    pub health: Health,
    pub signing: Signing,
    /// The rules that judge a canary (the standards' numbers by default).
    pub analysis: AnalysisPolicy,
    pub retention: Retention,
    /// How often drift is looked for (0: never).
    pub drift_interval_ms: u64,
    /// How large an artifact may unpack.
    pub artifacts: ArtifactLimits,
    /// In the order the file lists them.
    pub environments: Vec<Environment>,
    /// Who hears about deployments, and how.
    pub notify: Vec<NotifyChannel>,
    /// Fleet hosts (`[hosts.NAME]`), sorted by name; empty when all runs locally.
    pub hosts: Vec<Host>,
    /// How hosts are reached (`[ssh]`).
    pub ssh: SshSettings,
    /// Where the state is kept (`[store]`).
    pub store: StoreSettings,
    /// Where metrics beyond the routers' come from (`[metrics]`).
    pub metrics: Metrics,
}

/// Metric sources beyond the routers' own counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    pub prometheus: Option<Prometheus>,
}

/// A Prometheus server the analysis' queries are asked of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prometheus {
    /// Base URL, such as `http://127.0.0.1:9090`.
    pub url: String,
    pub bearer_token: Option<Credential>,
    pub timeout_ms: u64,
}

/// A secret-bearing setting: written in the file (warned about) or referenced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Plain(String),
    Secret(SecretRef),
}

/// One notification channel (`[[notify]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyChannel {
    pub name: String,
    pub kind: gantry_core::notify::ChannelKind,
    /// The events it hears (the standards' routing for its kind by default).
    pub events: Vec<gantry_core::notify::NoticeKind>,
    /// Only these environments; all when empty.
    pub environments: Vec<EnvName>,
    pub target: NotifyTarget,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyTarget {
    /// A Slack incoming webhook.
    Slack {
        url: Credential,
    },
    /// PagerDuty Events API v2.
    Pagerduty {
        routing_key: Credential,
        url: String,
    },
    Email(EmailChannel),
    /// A JSON POST signed with HMAC-SHA256 of the secret.
    Webhook {
        url: String,
        secret: Credential,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailChannel {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<Credential>,
    pub from: String,
    pub to: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain SMTP (loopback relays only).
    None,
    /// Upgrade with STARTTLS (required).
    StartTls,
    /// TLS from the first byte (SMTPS).
    Tls,
}

impl Config {
    pub fn environment(&self, name: &str) -> Option<&Environment> {
        self.environments.iter().find(|e| e.name.as_str() == name)
    }
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }
    pub fn environment_names(&self) -> Vec<String> {
        self.environments
            .iter()
            .map(|e| e.name.to_string())
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    /// Relative to the release directory, or absolute.
    pub command: String,
    pub args: Vec<String>,
    /// The environment variable that carries the instance's port.
    pub port_env: String,
    pub env: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, SecretRef>,
    /// The user instances run as when the controller is root (default `nobody`).
    pub run_as: Option<String>,
    pub sandbox: Sandbox,
}

/// Landlock confinement of instances: what they may reach beyond the system
/// directories, their release and their scratch directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub enabled: bool,
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
}

impl Default for Sandbox {
    fn default() -> Sandbox {
        Sandbox {
            enabled: true,
            read: Vec::new(),
            write: Vec::new(),
        }
    }
}

/// Where the controller keeps its state (`[store]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// Where the PostgreSQL URL is read from (it carries a password); SQLite
    /// in the data directory when `None`.
    pub url: Option<SecretRef>,
    /// With PostgreSQL, how long the leader's lease holds unless renewed:
    /// the longest a dead leader keeps the others from taking over.
    pub lease_ms: u64,
    /// How often the leader renews its lease (and every controller
    /// heartbeats, and a follower asks whether the lease is free).
    pub renew_ms: u64,
}

/// The lease's default: a leader SIGKILLed is replaced within about this
/// plus one renewal period, under the 5 s the issue asks of a failover.
pub const DEFAULT_LEASE_MS: u64 = 3_000;
pub const DEFAULT_RENEW_MS: u64 = 1_000;

impl Default for StoreSettings {
    fn default() -> StoreSettings {
        StoreSettings {
            url: None,
            lease_ms: DEFAULT_LEASE_MS,
            renew_ms: DEFAULT_RENEW_MS,
        }
    }
}

/// Where a secret's value comes from. The value itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub path: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub failure_threshold: u32,
    pub start_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Signing {
    /// minisign public keys (the base64 line of a `.pub` file).
    pub public_keys: Vec<String>,
}

/// How long records are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Audit records older than this are pruned (the chain stays verifiable).
    pub audit_ms: u64,
    /// Finished deployments (with their events, log and approvals) older than
    /// this are pruned; the one each environment runs is always kept.
    pub deployments_ms: u64,
    /// The routers' access logs: how long and how much (per environment).
    pub access_logs_ms: u64,
    pub access_logs_bytes: u64,
    /// Instance output: how long after the instance stopped, and how much
    /// per instance.
    pub instance_output_ms: u64,
    pub instance_output_bytes: u64,
}

impl Retention {
    /// The standards: a year.
    pub fn standard() -> Retention {
        Retention {
            audit_ms: 365 * 86_400_000,
            deployments_ms: 365 * 86_400_000,
            access_logs_ms: 90 * 86_400_000,
            access_logs_bytes: 1 << 30,
            instance_output_ms: 30 * 86_400_000,
            instance_output_bytes: 64 << 20,
        }
    }
}

/// Bounds on what an artifact may unpack to (`[artifacts]`), so a small
/// archive cannot fill the disk or the inode table.
/// Sent as it is to fleet hosts, which unpack within the same bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArtifactLimits {
    /// The most bytes an archive's entries may hold altogether.
    pub max_unpacked_bytes: u64,
    /// The most entries (files, directories, links) an archive may hold.
    pub max_entries: u64,
}

impl ArtifactLimits {
    /// 2 GiB (the upload limit) in at most 100,000 entries.
    pub fn standard() -> ArtifactLimits {
        ArtifactLimits {
            max_unpacked_bytes: 2 << 30,
            max_entries: 100_000,
        }
    }
}

impl Default for ArtifactLimits {
    fn default() -> Self {
        Self::standard()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// Start the new release beside the old, verify, switch all traffic,
    /// keep the old warm through the bake window.
    BlueGreen,
    /// Shift traffic in steps, judging the new release live at each.
    Canary(Canary),
    /// Replace instances in batches, each healthy before the next.
    Rolling(Rolling),
}

impl Strategy {
    pub const NAMES: &[&str] = &["blue-green", "canary", "rolling"];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rolling {
    pub max_surge: u32,
    pub max_unavailable: u32,
    /// How long each batch is judged before the next (0: not judged).
    pub analysis_ms: u64,
}

impl Rolling {
    /// One extra instance at a time, none out of service.
    pub fn standard() -> Rolling {
        Rolling {
            max_surge: 1,
            max_unavailable: 0,
            analysis_ms: 0,
        }
    }
}

/// How the router keeps one user on one release during a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    /// A cookie of this name, set by the router on a user's first answer.
    Cookie(String),
    /// A header of this name (lowercase) that clients send, e.g. a user id.
    Header(String),
}

pub use gantry_core::machine::{SmokeCheck, SmokeProbe, SmokeSettings};

#[derive(Debug, Clone, PartialEq)]
pub struct Canary {
    pub steps: Vec<CanaryStep>,
    pub interval_ms: u64,
    pub max_wait_ms: u64,
    /// How close to stable's (rate points) the data must bound the canary's
    /// error and slow-request rates before a timed step moves on.
    pub promotion_tolerance: f64,
    /// Longest a timed step gathers that evidence before holding for a person.
    pub max_pause_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CanaryStep {
    pub weight: u32,
    pub pause: Pause,
}

pub use gantry_core::analysis::resources::ResourcePolicy;
pub use gantry_core::analysis::AnalysisPolicy;
pub use gantry_core::evidence::GatePolicy;
pub use gantry_core::governance::{ApprovalPolicy, FreezeWindow};
pub use gantry_core::machine::Pause;

impl Canary {
    /// The standards' 10 → 50 → 100, two minutes a step.
    pub fn standard() -> Canary {
        let pause = Pause::For { ms: 120_000 };
        Canary {
            steps: vec![
                CanaryStep { weight: 10, pause },
                CanaryStep { weight: 50, pause },
                CanaryStep {
                    weight: 100,
                    pause: Pause::For { ms: 0 },
                },
            ],
            interval_ms: 1000,
            max_wait_ms: 600_000,
            promotion_tolerance: gantry_core::machine::STANDARD_PROMOTION_TOLERANCE,
            max_pause_ms: gantry_core::machine::STANDARD_MAX_PAUSE_MS,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    pub name: EnvName,
    /// The public address the environment's router listens on.
    pub listen: SocketAddr,
    /// Where the router serves `GET /metrics` (Prometheus text), and
    /// nothing else; `None`: not served.
    pub metrics_listen: Option<SocketAddr>,
    pub instances: u32,
    pub strategy: Strategy,
    pub bake_ms: u64,
    /// The watch after a full rollout (0: none).
    pub watch_ms: u64,
    pub require_signature: bool,
    pub env: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, SecretRef>,
    /// Checks run against new instances before they take traffic.
    pub smoke: Option<SmokeSettings>,
    pub sticky: Option<Sticky>,
    /// A release may skip this environment on its way along the promotion path.
    pub optional: bool,
    /// Deploy each new release here as soon as it is created (gates permitting).
    pub auto_deploy: bool,
    /// Approvals, lead time and emergency review ([`ApprovalPolicy::none`] if not set).
    pub approval: ApprovalPolicy,
    /// Windows in which only emergency changes deploy.
    pub freezes: Vec<FreezeWindow>,
    /// Evidence a release needs before it deploys here.
    pub gates: GatePolicy,
    /// The fleet hosts it runs on, names resolved from `hosts` (names and
    /// label selectors); empty: it runs on the controller's machine.
    pub hosts: Vec<String>,
    /// Batches, failure budget and waves over `hosts` (None: not set).
    pub fleet: Option<FleetPlan>,
    /// Each instance's limits and the resource rules (`[environments.*.resources]`).
    pub resources: ResourcePolicy,
    /// The operator's hooks at the rollout's points.
    pub hooks: Vec<HookConfig>,
    /// The backup and restore that `breaking` migrations need (`None`: a
    /// release with one is refused here).
    pub database: Option<DatabaseCommands>,
}

/// An environment's database commands: the backup taken before a release's
/// first `breaking` migration and the restore a rollback runs. Argument
/// vectors run without a shell, from the controller's machine, with the
/// environment's variables and secrets and `GANTRY_BACKUP_DIR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseCommands {
    pub backup: Vec<String>,
    pub restore: Vec<String>,
    /// One run's limit.
    pub timeout_ms: u64,
}

/// The file in a release's artifact that declares its migrations.
pub const MIGRATIONS_FILE: &str = "gantry-migrations.toml";

/// Parses a release's migrations file (`file` names it in diagnostics):
/// every problem at once, each naming its field.
pub fn parse_migrations(
    file: &str,
    source: &str,
) -> Result<Vec<gantry_core::machine::migrations::Migration>, ConfigError> {
    let (migrations, diagnostics) = walk::migrations::decode(file, source);
    settle(file, migrations, diagnostics).map(|(m, _)| m)
}

/// A decoded value if no diagnostic is an error, else every error (and the
/// warnings) for `file`.
fn settle<T>(
    file: &str,
    decoded: Option<T>,
    diagnostics: Vec<Diagnostic>,
) -> Result<(T, Vec<Diagnostic>), ConfigError> {
    let (errors, warnings): (Vec<_>, Vec<_>) = diagnostics
        .into_iter()
        .partition(|d| d.severity == Severity::Error);
    match decoded {
        Some(v) if errors.is_empty() => Ok((v, warnings)),
        _ => Err(ConfigError::Invalid {
            file: file.to_owned(),
            errors,
            warnings,
        }),
    }
}

/// A hook as configured: what the deployment records, and the secret that
/// signs a URL hook's POST (a reference, kept out of the deployment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookConfig {
    pub hook: gantry_core::machine::hooks::Hook,
    pub secret: Option<Credential>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem in the file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Dotted field path, e.g. `environments.production.instances`.
    pub path: String,
    pub message: String,
    /// The line the problem starts on, without its line ending, kept so the
    /// diagnostic can show it ([`Diagnostic::render`]) without the file.
    pub source_line: String,
    /// How many characters of `source_line` from `column` the problem spans
    /// (to the line's end if it runs on; 0 for a point).
    pub span_chars: usize,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}:{}:{}: {sev}: ", self.file, self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a config could not be loaded: every error, plus the warnings.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("{} has {} error(s):\n{}", .file, .errors.len(), render(.errors))]
    Invalid {
        file: String,
        errors: Vec<Diagnostic>,
        warnings: Vec<Diagnostic>,
    },
}

fn render(ds: &[Diagnostic]) -> String {
    ds.iter()
        .map(|d| format!("  {d}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A valid config and the warnings found on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
}

/// Parse and validate `source`, naming it `file` in diagnostics.
pub fn parse(file: &str, source: &str) -> Result<Loaded, ConfigError> {
    let (config, diagnostics) = walk::decode(file, source);
    let (config, warnings) = settle(file, config, diagnostics)?;
    Ok(Loaded { config, warnings })
}

/// Read and validate the file at `path`.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let source = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    parse(&path.display().to_string(), &source)
}

#[cfg(test)]
mod tests;
