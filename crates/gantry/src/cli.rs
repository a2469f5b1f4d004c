//! The command line as clap reads it: every command, its arguments and the
//! help text that `--help`, the completions and the man page show.
//! `commands::run` acts on what is parsed here; `main` only wires the two.

use crate::output::Output;
use crate::{audit, governance, sample};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "gantry",
    version,
    about = "Ship releases gradually, watch them, roll them back by themselves."
)]
pub struct Cli {
    /// Controller data directory (finds the controller and its token).
    #[arg(
        long,
        global = true,
        env = "GANTRY_DATA_DIR",
        default_value = ".gantry"
    )]
    pub data_dir: PathBuf,
    /// Controller URL, e.g. http://127.0.0.1:7878 (default: from the data directory).
    #[arg(long, global = true, env = "GANTRY_SERVER")]
    pub server: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the whole loop on this machine in a temporary directory, and report.
    Demo {
        /// Keep the temporary data directory for inspection.
        #[arg(long)]
        keep: bool,
        /// Run a fleet rollout instead, on N lab hosts made on this machine
        /// (network namespaces, each with its own sshd; needs root), torn
        /// down at the end.
        #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "5",
              value_parser = clap::value_parser!(u16).range(1..=50))]
        fleet: Option<u16>,
    },
    /// Write a commented starter gantry.toml.
    Init {
        #[arg(default_value = "gantry.toml")]
        path: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Check gantry.toml and report every problem at once.
    Validate {
        #[arg(long, default_value = "gantry.toml")]
        config: PathBuf,
        /// Also check a release artifact's migrations (its gantry-migrations.toml) against the
        /// config: every breaking one needs each environment's database backup and restore.
        #[arg(long, value_name = "ARTIFACT")]
        release: Option<PathBuf>,
    },
    /// Print the JSON Schema of gantry.toml.
    Schema,
    /// The state's store: copy an installation's SQLite state into PostgreSQL.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Write a consistent snapshot of the state while controllers run: SQLite's online copy
    /// (its audit chain verified), or pg_dump's custom format for PostgreSQL (--store, or
    /// GANTRY_DATABASE_URL).
    Backup {
        /// The new file (default: backups/store-TIME.db or .pgdump in the data directory).
        #[arg(long)]
        to: Option<PathBuf>,
        /// The PostgreSQL database (else GANTRY_DATABASE_URL, else the data directory's SQLite).
        #[arg(long)]
        store: Option<String>,
    },
    /// Fleet hosts: with a controller running, what each runs and how (reachable, last seen,
    /// releases, instances and health, routers, free disk); without one, the config's hosts,
    /// their pinned keys and whether this machine reaches them.
    Hosts(crate::hosts::HostsArgs),
    /// Print the OpenAPI 3 document of the controller's HTTP API.
    Openapi,
    /// Run the controller.
    Server {
        #[arg(long, default_value = "gantry.toml")]
        config: PathBuf,
        #[arg(long, default_value = "127.0.0.1:7878")]
        listen: std::net::SocketAddr,
        /// Keep the state in PostgreSQL at this URL
        /// (postgres://USER:PASSWORD@HOST:PORT/DATABASE) instead of SQLite in
        /// the data directory. Best given by the environment variable, so the
        /// password is not on the command line; it is never printed.
        #[arg(
            long,
            env = "GANTRY_DATABASE_URL",
            hide_env_values = true,
            value_name = "URL"
        )]
        store: Option<gantry_server::DatabaseUrl>,
        /// With several controllers on one database: the URL the others
        /// forward writes to while this one leads [default: http:// and the
        /// listening address; required when listening on 0.0.0.0].
        #[arg(long, value_name = "URL")]
        advertise_url: Option<String>,
        /// Time a client has to send a request's headers; an idle HTTP/1
        /// connection waits as long for its next request [default: 10s].
        #[arg(long)]
        header_timeout: Option<humantime::Duration>,
        /// Time a connection may stay open with no request in flight [default: 60s].
        #[arg(long)]
        idle_timeout: Option<humantime::Duration>,
        /// Connections served at once; more wait to be accepted [default: 256].
        #[arg(long)]
        max_connections: Option<usize>,
    },
    /// Register and inspect releases.
    #[command(subcommand)]
    Release(ReleaseCommand),
    /// Deploy a registered release to an environment.
    Deploy {
        version: String,
        #[arg(long)]
        env: String,
        /// Print the deployment id and return at once.
        #[arg(long)]
        detach: bool,
        /// standard, normal or emergency (default: normal where approvals are
        /// required, standard elsewhere).
        #[arg(long)]
        change: Option<String>,
        /// Why: kept on the deployment and the audit trail.
        #[arg(long)]
        reason: Option<String>,
        /// Schedule it: not before this UTC time (e.g. 2026-12-01T10:00Z);
        /// announced now and again a day before. `gantry abort ID` cancels it.
        #[arg(long)]
        at: Option<String>,
        /// The end of its window: if it has not started by then, it does not start.
        #[arg(long, requires = "at")]
        until: Option<String>,
    },
    /// Scheduled changes still to start, soonest first.
    Schedule {
        #[arg(long)]
        env: Option<String>,
        #[command(flatten)]
        output: Output,
    },
    /// Incidents (one per rollback), newest first.
    Incidents {
        #[arg(long)]
        env: Option<String>,
        /// Only those not closed yet.
        #[arg(long)]
        open: bool,
        #[command(flatten)]
        output: Output,
    },
    /// What runs against what should: instances, routers, release files, config (exit 7 if any differs).
    Drift {
        #[command(flatten)]
        output: Output,
    },
    /// Repair what drift finds repairable; each repair is audited (exit 7 if drift remains).
    Converge {
        #[command(flatten)]
        output: Output,
    },
    /// DORA figures of an environment from Gantry's records.
    Dora {
        #[arg(long)]
        env: String,
        /// How far back, e.g. 90d (default 30d).
        #[arg(long)]
        since: Option<String>,
        #[command(flatten)]
        output: Output,
    },
    /// One incident: show it, or close it with what was learned.
    #[command(subcommand)]
    Incident(IncidentCommand),
    /// Close a finished deployment's change record: its final status, what was validated,
    /// and the evidence (screenshots, logs) as files.
    Close {
        id: i64,
        #[arg(long)]
        summary: String,
        /// A file to keep as evidence (repeat for each; at most 20, 16 MiB each).
        #[arg(long)]
        evidence: Vec<PathBuf>,
    },
    /// Approve a deployment (approver role; never your own).
    Approve {
        id: i64,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Reject a deployment: a waiting one fails, a running emergency change rolls back.
    Reject {
        id: i64,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Deployments awaiting approval and emergency changes still owed theirs.
    Approvals {
        #[command(flatten)]
        output: Output,
    },
    /// Users and their roles.
    #[command(subcommand)]
    User(governance::UserCommand),
    /// API tokens.
    #[command(subcommand)]
    Token(governance::TokenCommand),
    /// Test, security and coverage reports attached to a release.
    #[command(subcommand)]
    Evidence(governance::EvidenceCommand),
    /// Whether a release may enter an environment: each gate, pass or fail and why.
    Gates {
        version: String,
        #[arg(long)]
        env: String,
        #[command(flatten)]
        output: Output,
    },
    /// Who the API token belongs to.
    Whoami {
        #[command(flatten)]
        output: Output,
    },
    /// Notification deliveries and their outcomes, newest first.
    Notifications {
        #[arg(long)]
        deployment: Option<i64>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        output: Output,
    },
    /// The deployment plan of VERSION for ENV (Markdown), or approve it with --approve.
    Plan {
        version: String,
        #[arg(long)]
        env: String,
        /// Write the plan's Markdown to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        write: Option<PathBuf>,
        #[command(flatten)]
        output: Output,
        /// Approve the plan as it stands (approver role); it is attached to the release.
        #[arg(long)]
        approve: bool,
        #[arg(long, requires = "approve")]
        comment: Option<String>,
    },
    /// Release notes from the conventional commits since the previous release,
    /// written to docs/releases/VERSION.md of the repository.
    ReleaseNotes {
        version: String,
        /// The service's git repository.
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// Start of the range (default: the previous registered release's commit, else the
        /// newest v* tag before it).
        #[arg(long)]
        since: Option<String>,
        /// End of the range (default: the release's registered commit, else HEAD).
        #[arg(long)]
        until: Option<String>,
        /// A known issue to list (repeatable); those already in the file are kept.
        #[arg(long = "known-issue")]
        known_issues: Vec<String>,
        /// The release date (default: today, UTC).
        #[arg(long)]
        date: Option<String>,
    },
    /// Rollback rehearsal: deploy VERSION, roll back, deploy it again; recorded as evidence.
    Rehearse {
        version: String,
        #[arg(long)]
        env: String,
    },
    /// Return an environment to its last good release (or --to one).
    Rollback {
        #[arg(long)]
        env: String,
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        detach: bool,
    },
    /// Stop a running deployment and roll it back.
    Abort { id: i64 },
    /// Move a canary to its next step now.
    Promote { id: i64 },
    /// Hold a canary at its current step (analysis goes on and can still roll back).
    Pause { id: i64 },
    /// Let a paused canary's step clock run again.
    Resume { id: i64 },
    /// What runs where (and, with PostgreSQL, which controller leads).
    Status {
        #[command(flatten)]
        output: Output,
    },
    /// The controllers sharing the store: each one's API and last heartbeat,
    /// the leader, its epoch and when its lease expires.
    Cluster {
        #[command(flatten)]
        output: Output,
    },
    /// Deployments of an environment, newest first.
    History {
        #[arg(long)]
        env: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        output: Output,
    },
    /// The deployment log: every step with its time.
    Log {
        id: i64,
        #[command(flatten)]
        output: Output,
    },
    /// The audit trail: who did what, when, to what, with which outcome.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Instance output (one instance, or every running one of --env), or an environment's
    /// access log (--access: JSON lines); --follow goes on printing what is written.
    Logs {
        /// One instance's output.
        instance: Option<String>,
        #[arg(long)]
        env: Option<String>,
        /// The routers' access log instead of instance output.
        #[arg(long)]
        access: bool,
        /// Only this release's instances (or access log lines).
        #[arg(long)]
        release: Option<String>,
        /// Access log lines from this long ago (e.g. 15m) or from this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        #[arg(short, long)]
        follow: bool,
        /// How much of each log's end to print first, in bytes (at most 1 MiB).
        #[arg(long, default_value_t = 65536)]
        bytes: u64,
    },
    /// Stop the controller (and with --workloads, every instance and router).
    Shutdown {
        #[arg(long)]
        workloads: bool,
    },
    /// Print the shell completion script for SHELL.
    ///
    /// Install it for bash with `gantry completions bash >
    /// ~/.local/share/bash-completion/completions/gantry`, for zsh as `_gantry` in a
    /// directory on `$fpath`, for fish with `gantry completions fish >
    /// ~/.config/fish/completions/gantry.fish`.
    Completions { shell: clap_complete::Shell },
    /// Print the man page gantry(1); --output writes it and a page per subcommand.
    Man {
        /// Write gantry.1 and gantry-SUBCOMMAND.1 pages into DIR (made if missing).
        #[arg(long, value_name = "DIR")]
        output: Option<PathBuf>,
    },
    /// A fleet host's end of the controller's channel (started over SSH).
    #[command(hide = true)]
    Host {
        #[command(subcommand)]
        command: HostCommand,
    },
    /// The data plane (started by the controller).
    #[command(hide = true)]
    Router {
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        token_file: PathBuf,
        /// Serve `GET /metrics` (Prometheus text) on this address.
        #[arg(long)]
        metrics_listen: Option<std::net::SocketAddr>,
        /// The environment's name, as the metrics' label.
        #[arg(long, default_value = "")]
        environment: String,
        /// How long rotated access logs are kept, in seconds (default: 90 days).
        #[arg(long, default_value_t = 90 * 86_400)]
        access_log_keep_secs: u64,
        /// The most all access logs may take together, in bytes (default: 1 GiB).
        #[arg(long, default_value_t = 1 << 30)]
        access_log_max_bytes: u64,
    },
    /// The sample HTTP service used by the demo and tests.
    #[command(hide = true)]
    SampleService(sample::SampleArgs),
}

#[derive(Subcommand)]
pub enum ReleaseCommand {
    /// Register an artifact (tarball or executable) as VERSION.
    Create {
        version: String,
        #[arg(long)]
        artifact: PathBuf,
        #[arg(long)]
        git_sha: Option<String>,
        /// A minisign signature of the artifact (.minisig).
        #[arg(long)]
        signature: Option<PathBuf>,
        /// When the commit was made (RFC 3339), for DORA's lead time; by default asked of
        /// the git repository here when it has --git-sha.
        #[arg(long)]
        commit_time: Option<String>,
    },
    /// Registered releases, oldest version first.
    List {
        #[command(flatten)]
        output: Output,
    },
    /// One release: its digest, commit and signature.
    Show {
        version: String,
        #[command(flatten)]
        output: Output,
    },
    /// Re-check every stored artifact's checksum.
    Verify {
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Subcommand)]
pub enum HostCommand {
    /// Serve the controller's typed requests on stdin, answering on stdout,
    /// until stdin closes; on the host's data directory (--data-dir).
    /// Logs go to stderr.
    Serve {
        /// Speak the protocol on stdin and stdout (the one transport there is).
        #[arg(long, required = true)]
        stdio: bool,
    },
}

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Copy SQLite state (releases, deployments, the audit chain, users, …) into an empty
    /// PostgreSQL database, then check it (row counts, the audit chain).
    Copy {
        /// `sqlite:PATH` (default: the data directory's gantry.db).
        #[arg(long)]
        from: Option<String>,
        /// The PostgreSQL URL, or `env:VAR` to read it from VAR (keeps the password off the
        /// command line).
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand)]
pub enum IncidentCommand {
    /// Everything recorded of one incident.
    Show {
        id: i64,
        #[command(flatten)]
        output: Output,
    },
    /// Close a restored incident (approver role): what happened, and what follows.
    Close {
        id: i64,
        #[arg(long)]
        summary: String,
        #[arg(long)]
        follow_up: String,
    },
}
