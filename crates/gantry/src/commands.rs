//! One function per command. Each returns the process exit code.

use crate::cli::{Cli, Command, HostCommand};
use crate::client;
use crate::deployments as deploy;
use crate::exit_code::{Exit, ExitCode};
use crate::governance as gov;
use crate::term::{errln, out, outln};
use anyhow::{bail, Context};
use gantry_api::{Action, DeployRequest, GatesQuery, RollbackRequest};

pub async fn run(cli: Cli) -> Exit {
    let data_dir = cli.data_dir.clone();
    let server = cli.server.clone();
    let connect = || client::connect(&data_dir, server.as_deref());
    match cli.command {
        Command::Demo { keep, fleet: None } => crate::demo::run(keep).await,
        Command::Demo {
            keep,
            fleet: Some(hosts),
        } => crate::demo_fleet::run(hosts, keep).await,
        Command::Init { path, force } => init(&path, force),
        Command::Validate { config, release } => validate(&config, release.as_deref()).await,
        Command::Backup { to, store } => backup(&data_dir, to, store),
        Command::Store(crate::cli::StoreCommand::Copy { from, to }) => {
            store_copy(&data_dir, from, to)
        }
        Command::Hosts(args) => crate::hosts::run(&data_dir, server.as_deref(), args).await,
        Command::Schema => {
            out!("{}", gantry_config::json_schema());
            Ok(ExitCode::Success)
        }
        Command::Completions { shell } => crate::cli_docs::completions(shell),
        Command::Man { output } => crate::cli_docs::man(output.as_deref()),
        Command::Openapi => {
            out!("{}", gantry_server::openapi_document());
            Ok(ExitCode::Success)
        }
        Command::Server {
            config,
            listen,
            store,
            advertise_url,
            header_timeout,
            idle_timeout,
            max_connections,
        } => {
            let exe = std::env::current_exe().context("cannot find the gantry executable")?;
            let d = gantry_server::API_LIMITS;
            let limits = gantry_server::ConnectionLimits {
                header_timeout: header_timeout.map_or(d.header_timeout, Into::into),
                idle_timeout: idle_timeout.map_or(d.idle_timeout, Into::into),
                max_connections: max_connections.unwrap_or(d.max_connections),
            };
            match gantry_server::run(gantry_server::ServerOptions {
                data_dir,
                config_path: config,
                listen,
                exe,
                limits,
                store,
                advertise_url,
            })
            .await
            {
                Ok(()) => Ok(ExitCode::Success),
                // An invalid config exits 4, as `gantry validate` does.
                Err(gantry_server::ServerError::Config(c)) => {
                    errln!("{}", c.render());
                    Ok(ExitCode::InvalidConfig)
                }
                Err(other) => Err(other.into()),
            }
        }
        Command::Host {
            command: HostCommand::Serve { stdio: _ },
        } => {
            let exe = std::env::current_exe().context("cannot find the gantry executable")?;
            let options = gantry_server::fleet::ServeOptions { data_dir, exe };
            gantry_server::fleet::serve(tokio::io::stdin(), tokio::io::stdout(), options).await?;
            Ok(ExitCode::Success)
        }
        Command::Router {
            state_dir,
            listen,
            token_file,
            metrics_listen,
            environment,
            access_log_keep_secs,
            access_log_max_bytes,
        } => {
            let admin_token = std::fs::read_to_string(&token_file)
                .with_context(|| format!("cannot read router token {}", token_file.display()))?
                .trim()
                .to_owned();
            gantry_router::serve(gantry_router::RouterOptions {
                state_dir,
                listen,
                admin_token,
                limits: gantry_router::listener::ConnectionLimits::PUBLIC,
                metrics_listen,
                environment,
                access_log: Some(gantry_router::access_log::AccessLogSettings {
                    keep: std::time::Duration::from_secs(access_log_keep_secs),
                    max_bytes: access_log_max_bytes,
                    ..gantry_router::access_log::AccessLogSettings::STANDARD
                }),
            })
            .await?;
            Ok(ExitCode::Success)
        }
        Command::SampleService(args) => crate::sample::run(args).await.map(|()| ExitCode::Success),
        Command::Release(rc) => crate::releases::run(&connect()?, rc).await,
        Command::Deploy {
            version,
            env,
            detach,
            change,
            reason,
            at,
            until,
        } => {
            let request = DeployRequest {
                env,
                version,
                change,
                reason,
                at,
                until,
            };
            deploy::deploy(&connect()?, request, detach).await
        }
        Command::Schedule { env, output } => deploy::schedule(&connect()?, env, output).await,
        Command::Incidents { env, open, output } => {
            crate::incidents::list(&connect()?, env, open, output).await
        }
        Command::Incident(cmd) => crate::incidents::incident(&connect()?, cmd).await,
        Command::Close {
            id,
            summary,
            evidence,
        } => crate::incidents::close_deployment(&connect()?, id, summary, evidence).await,
        Command::Drift { output } => crate::incidents::drift(&connect()?, output).await,
        Command::Converge { output } => crate::incidents::converge(&connect()?, output).await,
        Command::Dora { env, since, output } => {
            crate::incidents::dora(&connect()?, env, since, output).await
        }
        Command::Approve { id, comment } => gov::verdict(&connect()?, id, true, comment).await,
        Command::Reject { id, comment } => gov::verdict(&connect()?, id, false, comment).await,
        Command::Approvals { output } => gov::approvals(&connect()?, output).await,
        Command::User(cmd) => gov::user(&connect()?, cmd).await,
        Command::Token(cmd) => gov::token(&connect()?, cmd).await,
        Command::Evidence(cmd) => gov::evidence(&connect()?, cmd).await,
        Command::Gates {
            version,
            env,
            output,
        } => gov::gates(&connect()?, &version, &env, output).await,
        Command::Plan {
            version,
            env,
            write,
            output,
            approve,
            comment,
        } => {
            let approval = approve.then(|| comment.unwrap_or_default());
            let query = GatesQuery { version, env };
            gov::plan(&connect()?, query, write, approval, output).await
        }
        Command::ReleaseNotes {
            version,
            repo,
            since,
            until,
            known_issues,
            date,
        } => {
            let (since, until) = match (since, until) {
                (Some(s), Some(u)) => (Some(s), Some(u)),
                (s, u) => {
                    // The registered releases know their commits; without a
                    // controller, the tags decide.
                    let registered = match connect() {
                        Ok(c) => c.releases().await.ok(),
                        Err(_) => None,
                    };
                    let (prev, this) = registered
                        .map(|rs| crate::releases::commits_of(&rs, &version))
                        .unwrap_or_default();
                    (s.or(prev), u.or(this))
                }
            };
            let today = gantry_core::governance::rfc3339(gantry_server::controller::now_ms());
            let (path, text) = crate::release_notes::write(&crate::release_notes::Options {
                version,
                repo,
                until,
                since,
                known_issues,
                date: date.unwrap_or_else(|| today[..10].to_owned()),
            })?;
            out!("{text}");
            errln!("wrote {}", path.display());
            Ok(ExitCode::Success)
        }
        Command::Rehearse { version, env } => gov::rehearse(&connect()?, &version, &env).await,
        Command::Notifications {
            deployment,
            limit,
            output,
        } => gov::notifications(&connect()?, deployment, limit, output).await,
        Command::Whoami { output } => gov::whoami(&connect()?, output).await,
        Command::Rollback { env, to, detach } => {
            deploy::rollback(&connect()?, RollbackRequest { env, to }, detach).await
        }
        Command::Abort { id } => deploy::act(&connect()?, id, Action::Abort).await,
        Command::Promote { id } => deploy::act(&connect()?, id, Action::Promote).await,
        Command::Pause { id } => deploy::act(&connect()?, id, Action::Pause).await,
        Command::Resume { id } => deploy::act(&connect()?, id, Action::Resume).await,
        Command::Status { output } => deploy::status(&connect()?, output).await,
        Command::Cluster { output } => crate::cluster::show(&connect()?, output).await,
        Command::History { env, limit, output } => {
            deploy::history(&connect()?, &env, limit, output).await
        }
        Command::Log { id, output } => deploy::log(&connect()?, id, output).await,
        Command::Audit(cmd) => crate::audit::run(connect, cmd).await,
        Command::Logs {
            instance,
            env,
            access,
            release,
            since,
            follow,
            bytes,
        } => {
            let since = match since {
                Some(s) => {
                    Some(crate::time::since(&s).map_err(|e| anyhow::anyhow!("--since: {e}"))?)
                }
                None => None,
            };
            let query = gantry_api::LogsQuery {
                env,
                access,
                release,
                instance,
                since,
                cursor: None,
                bytes: Some(bytes),
            };
            deploy::logs(&connect()?, query, follow).await
        }
        Command::Shutdown { workloads } => deploy::shutdown(&connect()?, workloads).await,
    }
}

/// `gantry store copy`: SQLite state into an empty PostgreSQL database.
fn store_copy(data_dir: &std::path::Path, from: Option<String>, to: String) -> Exit {
    let from = match from {
        Some(f) => match f.strip_prefix("sqlite:") {
            Some(path) => std::path::PathBuf::from(path),
            None => bail!("--from: {f:?}; expected sqlite:PATH"),
        },
        None => data_dir.join("gantry.db"),
    };
    let to = match to.strip_prefix("env:") {
        Some(var) => std::env::var(var)
            .map_err(|_| anyhow::anyhow!("--to: the variable {var} is not set"))?,
        None => to,
    };
    let to = gantry_store::DatabaseUrl::new(to);
    // The PostgreSQL client blocks: off the CLI's async runtime.
    let (source, target) = (from.clone(), to.clone());
    let artifacts = data_dir.join("artifacts");
    let (summary, shared) = std::thread::spawn(move || -> anyhow::Result<_> {
        let summary = gantry_store::copy_sqlite_to_postgres(&source, &target)?;
        // The artifacts too, so any controller on the database can deploy them.
        let blobs = gantry_store::Blobs::open(&artifacts)?;
        let db = gantry_store::PgStore::connect(&target)?;
        let mut shared = 0;
        for entry in std::fs::read_dir(blobs.dir())?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Ok(digest) = gantry_core::Digest::try_from(name) {
                gantry_store::SharedBlobs::upload_blob(&db, &blobs, &digest)?;
                shared += 1;
            }
        }
        Ok((summary, shared))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the copy panicked"))??;
    for (table, rows) in &summary.tables {
        outln!("{table:<20} {rows:>8} row(s)");
    }
    outln!("{:<20} {shared:>8} file(s)", "artifacts");
    outln!(
        "copied {} into {to}; its audit chain verifies over {} record(s)",
        from.display(),
        summary.audit_records
    );
    Ok(ExitCode::Success)
}

/// `gantry backup`: the store's consistent snapshot, checked once written.
fn backup(
    data_dir: &std::path::Path,
    to: Option<std::path::PathBuf>,
    store: Option<String>,
) -> Exit {
    let url = store
        .or_else(|| std::env::var("GANTRY_DATABASE_URL").ok())
        .filter(|u| !u.trim().is_empty())
        .map(gantry_store::DatabaseUrl::new);
    let stamp = crate::time::time(gantry_server::controller::now_ms()).replace([':', '-'], "");
    let to = match to {
        Some(p) => p,
        None => {
            let dir = data_dir.join("backups");
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot make {}", dir.display()))?;
            let ext = if url.is_some() { "pgdump" } else { "db" };
            dir.join(format!("store-{stamp}.{ext}"))
        }
    };
    let summary = match &url {
        Some(url) => gantry_store::backup::backup_postgres(url, &to)?,
        None => gantry_store::backup::backup_sqlite(&data_dir.join("gantry.db"), &to)?,
    };
    outln!(
        "backup written: {} ({} bytes, sha256 {})",
        summary.path.display(),
        summary.bytes,
        summary.sha256
    );
    if let (Some(d), Some(a)) = (summary.deployments, summary.audit_records) {
        outln!("it holds {d} deployment(s); its audit chain verifies over {a} record(s)");
    }
    if let Some(n) = summary.dump_entries {
        outln!("pg_restore lists {n} entries in it");
    }
    Ok(ExitCode::Success)
}

fn init(path: &std::path::Path, force: bool) -> Exit {
    if path.exists() && !force {
        bail!(
            "{} already exists; pass --force to overwrite it",
            path.display()
        );
    }
    std::fs::write(path, gantry_config::STARTER)
        .with_context(|| format!("cannot write {}", path.display()))?;
    outln!(
        "wrote {}; check it with `gantry validate --config {}`",
        path.display(),
        path.display()
    );
    Ok(ExitCode::Success)
}

/// With a Prometheus configured and reachable, each query rule's PromQL
/// (placeholders filled with sample values) goes to its parser; what it
/// refuses is returned by field. An unreachable server is only a warning:
/// the file is still valid where the server runs.
async fn check_queries(config: &gantry_config::Config) -> Vec<String> {
    use gantry_core::analysis::queries::Reading;
    let (Some(p), false) = (
        &config.metrics.prometheus,
        config.analysis.queries.is_empty(),
    ) else {
        return Vec::new();
    };
    let client = match gantry_server::prometheus::PrometheusClient::new(p) {
        Ok(c) => c,
        Err(e) => return vec![e],
    };
    let scope = gantry_server::prometheus::QueryScope {
        env: "validate",
        release: "0.0.0",
        pool: "0.0.0",
        interval_ms: 1_000,
    };
    let mut refused = Vec::new();
    for (n, rule) in config.analysis.queries.iter().enumerate() {
        for (field, query) in rule.promql() {
            let resolved = gantry_server::prometheus::resolve(query, &scope);
            match client.instant(&resolved).await {
                Reading::Error { reason }
                    if reason.starts_with("Prometheus refused the query (HTTP 400)") =>
                {
                    refused.push(format!("analysis.queries[{n}].{field}: {reason}"));
                }
                Reading::Error { reason } => {
                    errln!("warning: analysis.queries[{n}].{field} not checked by Prometheus: {reason}");
                }
                _ => {}
            }
        }
    }
    refused
}

/// Why a release's migrations could not deploy under `config`: its file's
/// problems, or each environment without the backup and restore a breaking
/// migration needs.
fn check_release_migrations(
    config: &gantry_config::Config,
    artifact: &std::path::Path,
) -> Vec<String> {
    use gantry_core::machine::migrations::MigrationKind;
    let migrations = gantry_server::artifact::detect_kind(artifact)
        .and_then(|kind| gantry_server::artifact::migrations(kind, artifact));
    let migrations = match migrations {
        Ok(m) => m,
        Err(e) => return vec![format!("{}: {e}", artifact.display())],
    };
    let Some(breaking) = migrations
        .iter()
        .find(|m| m.kind == MigrationKind::Breaking)
    else {
        return Vec::new();
    };
    config
        .environments
        .iter()
        .filter(|e| e.database.is_none())
        .map(|e| {
            format!(
                "environments.{}.database: not set, but {} carries the breaking migration {} (a backup before it and a restore on rollback are needed)",
                e.name,
                artifact.display(),
                breaking.id
            )
        })
        .collect()
}

async fn validate(path: &std::path::Path, release: Option<&std::path::Path>) -> Exit {
    match gantry_config::load(path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                errln!("{}\n", w.render());
            }
            let mut refused = check_queries(&loaded.config).await;
            if let Some(artifact) = release {
                refused.extend(check_release_migrations(&loaded.config, artifact));
            }
            if !refused.is_empty() {
                for line in &refused {
                    errln!("{}: error: {line}", path.display());
                }
                return Ok(ExitCode::InvalidConfig);
            }
            outln!(
                "{} is valid: service {:?}, environments {}",
                path.display(),
                loaded.config.service.name,
                loaded.config.environment_names().join(", ")
            );
            Ok(ExitCode::Success)
        }
        Err(e) => {
            errln!("{}", e.render());
            Ok(ExitCode::InvalidConfig)
        }
    }
}
