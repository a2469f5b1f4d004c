//! One function per command. Each returns the process exit code.

use crate::cli::{Cli, Command, ReleaseCommand};
use crate::client::{self, Client};
use crate::exit_code::{Exit, ExitCode};
use crate::term::{errln, out, outln};
use crate::time::{clock, time};
use anyhow::{bail, Context};
use base64::Engine as _;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::time::Duration;

pub async fn run(cli: Cli) -> Exit {
    let data_dir = cli.data_dir.clone();
    let server = cli.server.clone();
    let connect = || client::connect(&data_dir, server.as_deref());
    match cli.command {
        Command::Demo { keep } => crate::demo::run(keep).await,
        Command::Init { path, force } => init(&path, force),
        Command::Validate { config } => validate(&config),
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
        Command::Router {
            state_dir,
            listen,
            token_file,
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
            })
            .await?;
            Ok(ExitCode::Success)
        }
        Command::SampleService(args) => crate::sample::run(args).await.map(|()| ExitCode::Success),
        Command::Release(rc) => release(&connect()?, rc).await,
        Command::Deploy {
            version,
            env,
            detach,
            change,
            reason,
        } => {
            let c = connect()?;
            let d = c
                .post(
                    "/deployments",
                    json!({"env": env, "version": version, "change": change, "reason": reason}),
                )
                .await?;
            follow(&c, &d, detach).await
        }
        Command::Approve { id, comment } => {
            crate::governance::verdict(&connect()?, id, true, comment).await
        }
        Command::Reject { id, comment } => {
            crate::governance::verdict(&connect()?, id, false, comment).await
        }
        Command::Approvals => crate::governance::approvals(&connect()?).await,
        Command::User(cmd) => crate::governance::user(&connect()?, cmd).await,
        Command::Token(cmd) => crate::governance::token(&connect()?, cmd).await,
        Command::Evidence(cmd) => crate::governance::evidence(&connect()?, cmd).await,
        Command::Gates { version, env } => {
            crate::governance::gates(&connect()?, &version, &env).await
        }
        Command::Plan {
            version,
            env,
            output,
            approve,
            comment,
        } => {
            let c = connect()?;
            if approve {
                let v = c
                    .post(
                        "/plans/approve",
                        json!({"version": version, "env": env, "comment": comment.unwrap_or_default()}),
                    )
                    .await?;
                outln!(
                    "plan for {version} → {env} approved by {} (sha256 {}), attached as evidence {}",
                    v["by"].as_str().unwrap_or("?"),
                    v["digest"].as_str().unwrap_or("?"),
                    v["evidence"]
                );
                return Ok(ExitCode::Success);
            }
            let v = c
                .send_get(&format!("/plans?version={version}&env={env}"))
                .await?;
            let markdown = v["markdown"].as_str().unwrap_or_default();
            match output {
                Some(path) => {
                    std::fs::write(&path, markdown)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    outln!("wrote the plan to {}", path.display());
                }
                None => out!("{markdown}"),
            }
            Ok(ExitCode::Success)
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
                        Ok(c) => c.get::<Vec<Value>>("/releases").await.ok(),
                        Err(_) => None,
                    };
                    let (prev, this) = registered
                        .map(|rs| commits_of(&rs, &version))
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
        Command::Rehearse { version, env } => {
            crate::governance::rehearse(&connect()?, &version, &env).await
        }
        Command::Notifications { deployment, limit } => {
            let mut path = format!("/notifications?limit={limit}");
            if let Some(d) = deployment {
                path.push_str(&format!("&deployment={d}"));
            }
            let list: Vec<Value> = connect()?.get(&path).await?;
            outln!(
                "{:<6} {:<14} {:<20} {:<6} {:<10} {:<8} LAST ERROR",
                "ID",
                "CHANNEL",
                "EVENT",
                "DEPL",
                "STATUS",
                "ATTEMPTS"
            );
            for d in list {
                outln!(
                    "{:<6} {:<14} {:<20} {:<6} {:<10} {:<8} {}",
                    d["id"],
                    d["channel"].as_str().unwrap_or("?"),
                    d["notice"]["kind"].as_str().unwrap_or("?"),
                    d["notice"]["deployment"],
                    d["status"].as_str().unwrap_or("?"),
                    d["attempts"],
                    d["last_error"].as_str().unwrap_or("")
                );
            }
            Ok(ExitCode::Success)
        }
        Command::Whoami => {
            let v = connect()?.send_get("/whoami").await?;
            outln!("{} ({})", v["user"].as_str().unwrap_or("?"), v["roles"]);
            Ok(ExitCode::Success)
        }
        Command::Rollback { env, to, detach } => {
            let c = connect()?;
            let d = c.post("/rollbacks", json!({"env": env, "to": to})).await?;
            follow(&c, &d, detach).await
        }
        Command::Abort { id } => request(&connect()?, id, "abort").await,
        Command::Promote { id } => request(&connect()?, id, "promote").await,
        Command::Pause { id } => request(&connect()?, id, "pause").await,
        Command::Resume { id } => request(&connect()?, id, "resume").await,
        Command::Status => status(&connect()?).await,
        Command::History { env, limit } => history(&connect()?, &env, limit).await,
        Command::Log { id } => log(&connect()?, id).await,
        Command::Audit(cmd) => crate::audit::run(connect, cmd).await,
        Command::Logs { instance, bytes } => {
            out!(
                "{}",
                connect()?
                    .get_text(&format!("/instances/{instance}/log?bytes={bytes}"))
                    .await?
            );
            Ok(ExitCode::Success)
        }
        Command::Shutdown { workloads } => {
            connect()?
                .post("/shutdown", json!({"stop_workloads": workloads}))
                .await?;
            outln!(
                "controller stopping{}",
                if workloads {
                    " with its instances and routers"
                } else {
                    ""
                }
            );
            Ok(ExitCode::Success)
        }
    }
}

/// Asks a running deployment to abort, promote, pause or resume.
async fn request(c: &Client, id: i64, what: &str) -> Exit {
    c.post(&format!("/deployments/{id}/{what}"), json!({}))
        .await?;
    outln!("deployment {id}: {what} requested");
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

fn validate(path: &std::path::Path) -> Exit {
    match gantry_config::load(path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                errln!("{}\n", w.render());
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

async fn release(c: &Client, rc: ReleaseCommand) -> Exit {
    match rc {
        ReleaseCommand::Create {
            version,
            artifact,
            git_sha,
            signature,
        } => {
            let bytes = std::fs::read(&artifact)
                .with_context(|| format!("cannot read artifact {}", artifact.display()))?;
            let sig = match &signature {
                Some(p) => {
                    let text = std::fs::read_to_string(p)
                        .with_context(|| format!("cannot read signature {}", p.display()))?;
                    Some(base64::engine::general_purpose::STANDARD.encode(text))
                }
                None => None,
            };
            let r = c
                .put_artifact(&version, bytes, git_sha.as_deref(), sig)
                .await?;
            outln!(
                "release {} registered: sha256 {} ({} bytes, {}){}",
                r["version"].as_str().unwrap_or("?"),
                r["digest"].as_str().unwrap_or("?"),
                r["size"],
                r["artifact_kind"].as_str().unwrap_or("?"),
                if r["signed_by"].is_string() {
                    ", signature verified"
                } else {
                    ", unsigned"
                }
            );
            Ok(ExitCode::Success)
        }
        ReleaseCommand::List => {
            let releases: Vec<Value> = c.get("/releases").await?;
            outln!(
                "{:<14} {:<14} {:<10} {:>10}  {:<8} created",
                "VERSION",
                "SHA256",
                "GIT",
                "SIZE",
                "SIGNED"
            );
            for r in releases {
                outln!(
                    "{:<14} {:<14} {:<10} {:>10}  {:<8} {}",
                    r["version"].as_str().unwrap_or("?"),
                    &r["digest"].as_str().unwrap_or("?")[..12],
                    r["git_sha"]
                        .as_str()
                        .map(|s| &s[..s.len().min(8)])
                        .unwrap_or("-"),
                    r["size"],
                    if r["signed_by"].is_string() {
                        "yes"
                    } else {
                        "no"
                    },
                    time(&r["created_at"])
                );
            }
            Ok(ExitCode::Success)
        }
        ReleaseCommand::Show { version } => {
            let r: Value = c.get(&format!("/releases/{version}")).await?;
            outln!("{}", serde_json::to_string_pretty(&r)?);
            Ok(ExitCode::Success)
        }
        ReleaseCommand::Verify => {
            let results: Vec<Value> =
                c.post("/releases/verify", json!({})).await.and_then(|v| {
                    client::ensure_ok(&v)?;
                    Ok(serde_json::from_value(v)?)
                })?;
            let mut bad = 0;
            for r in &results {
                let ok = r["ok"].as_bool() == Some(true);
                bad += usize::from(!ok);
                outln!(
                    "{} {:<14} {}",
                    if ok { "ok " } else { "BAD" },
                    r["version"].as_str().unwrap_or("?"),
                    r["detail"].as_str().unwrap_or("")
                );
            }
            outln!("{} release(s) checked, {bad} failed", results.len());
            Ok(if bad == 0 {
                ExitCode::Success
            } else {
                ExitCode::Error
            })
        }
    }
}

/// Shows a deployment's progress until it finishes; exit 3 unless it succeeded.
pub async fn follow(c: &Client, d: &Value, detach: bool) -> Exit {
    let id = d["id"].as_i64().context("answer has no deployment id")?;
    if detach {
        outln!("{id}");
        return Ok(ExitCode::Success);
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    let mut shown = 0;
    let finished = loop {
        let v = c.send_get(&format!("/deployments/{id}/log")).await?;
        let log = v["log"].as_array().cloned().unwrap_or_default();
        for entry in &log[shown..] {
            let line = format!(
                "  {}  {}",
                clock(&entry["at"]),
                entry["message"].as_str().unwrap_or("")
            );
            // A hidden bar (output is not a terminal) would swallow the line.
            if bar.is_hidden() {
                outln!("{line}");
            } else {
                bar.println(crate::term::clean(&line));
            }
        }
        shown = log.len();
        let dep = &v["deployment"];
        let phase = dep["phase"].as_str().unwrap_or("?");
        let status = format!(
            "deployment {id}: {} {} → {}",
            phase,
            dep["version"].as_str().unwrap_or("?"),
            dep["env"].as_str().unwrap_or("?")
        );
        bar.set_message(crate::term::clean(&status).into_owned());
        if matches!(phase, "succeeded" | "rolled_back" | "failed") {
            break dep.clone();
        }
        if phase == "awaiting_approval" {
            bar.finish_and_clear();
            outln!(
                "deployment {id} awaits approval: `gantry approve {id}` by an approver; `gantry log {id}` shows what it waits for"
            );
            return Ok(ExitCode::Success);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    bar.finish_and_clear();
    let phase = finished["phase"].as_str().unwrap_or("?");
    let took = finished["finished_at"].as_i64().unwrap_or(0)
        - finished["created_at"].as_i64().unwrap_or(0);
    match phase {
        "succeeded" => {
            outln!(
                "deployment {id} succeeded in {:.1}s: {} serves {}",
                took as f64 / 1000.0,
                finished["version"].as_str().unwrap_or("?"),
                finished["env"].as_str().unwrap_or("?")
            );
            Ok(ExitCode::Success)
        }
        _ => {
            outln!(
                "deployment {id} {phase} after {:.1}s: {}",
                took as f64 / 1000.0,
                finished["reason"].as_str().unwrap_or("no reason recorded")
            );
            Ok(ExitCode::DeployFailed)
        }
    }
}

async fn status(c: &Client) -> Exit {
    let v = c.send_get("/status").await?;
    outln!("service {}", v["service"].as_str().unwrap_or("?"));
    outln!(
        "{:<14} {:<22} {:<12} {:<10} IN PROGRESS",
        "ENVIRONMENT",
        "LISTEN",
        "RELEASE",
        "INSTANCES"
    );
    for e in v["environments"].as_array().cloned().unwrap_or_default() {
        let inst = e["instances"].as_array().cloned().unwrap_or_default();
        let up = inst
            .iter()
            .filter(|i| i["running"].as_bool() == Some(true))
            .count();
        let active = &e["active_deployment"];
        outln!(
            "{:<14} {:<22} {:<12} {:<10} {}",
            e["name"].as_str().unwrap_or("?"),
            e["listen"].as_str().unwrap_or("?"),
            e["version"].as_str().unwrap_or("-"),
            format!("{up}/{}", inst.len()),
            if active.is_object() {
                format!(
                    "#{} {} ({})",
                    active["id"],
                    active["version"].as_str().unwrap_or("?"),
                    active["phase"].as_str().unwrap_or("?")
                )
            } else {
                "-".into()
            }
        );
    }
    Ok(ExitCode::Success)
}

async fn history(c: &Client, env: &str, limit: usize) -> Exit {
    let list: Vec<Value> = c
        .get(&format!("/deployments?env={env}&limit={limit}"))
        .await?;
    outln!(
        "{:<5} {:<9} {:<10} {:<12} {:<20} {:>8}  REASON",
        "ID",
        "KIND",
        "VERSION",
        "OUTCOME",
        "STARTED",
        "TOOK"
    );
    for d in list {
        let took = match d["finished_at"].as_i64() {
            Some(f) => format!(
                "{:.1}s",
                (f - d["created_at"].as_i64().unwrap_or(f)) as f64 / 1000.0
            ),
            None => "-".into(),
        };
        outln!(
            "{:<5} {:<9} {:<10} {:<12} {:<20} {:>8}  {}",
            d["id"],
            d["kind"].as_str().unwrap_or("?"),
            d["version"].as_str().unwrap_or("?"),
            d["phase"].as_str().unwrap_or("?"),
            time(&d["created_at"]),
            took,
            d["reason"].as_str().unwrap_or("")
        );
    }
    Ok(ExitCode::Success)
}

async fn log(c: &Client, id: i64) -> Exit {
    let v = c.send_get(&format!("/deployments/{id}/log")).await?;
    let d = &v["deployment"];
    outln!(
        "deployment {id}: {} of {} to {} by {} ({})",
        d["kind"].as_str().unwrap_or("?"),
        d["version"].as_str().unwrap_or("?"),
        d["env"].as_str().unwrap_or("?"),
        d["requested_by"].as_str().unwrap_or("?"),
        d["phase"].as_str().unwrap_or("?")
    );
    if let Some(prev) = d["previous_version"].as_str() {
        outln!("previous release: {prev}");
    }
    for e in v["log"].as_array().cloned().unwrap_or_default() {
        outln!(
            "{}  {:<13} {}",
            time(&e["at"]).replace(
                'Z',
                &format!(".{:03}Z", e["at"].as_i64().unwrap_or(0) % 1000)
            ),
            e["phase"].as_str().unwrap_or(""),
            e["message"].as_str().unwrap_or("")
        );
    }
    if let Some(r) = d["reason"].as_str() {
        outln!("reason: {r}");
    }
    Ok(ExitCode::Success)
}

impl Client {
    pub async fn send_get(&self, path: &str) -> anyhow::Result<Value> {
        self.get::<Value>(path).await
    }
}

/// The git commits of the newest registered release before `version` and of
/// `version` itself, where they were registered with one.
fn commits_of(releases: &[Value], version: &str) -> (Option<String>, Option<String>) {
    let Ok(target) = semver::Version::parse(version) else {
        return (None, None);
    };
    let parsed = releases.iter().filter_map(|r| {
        let v = semver::Version::parse(r["version"].as_str()?).ok()?;
        Some((v, r["git_sha"].as_str()?.to_owned()))
    });
    let mut prev: Option<(semver::Version, String)> = None;
    let mut this = None;
    for (v, sha) in parsed {
        if v == target {
            this = Some(sha);
        } else if v < target && prev.as_ref().is_none_or(|(p, _)| v > *p) {
            prev = Some((v, sha));
        }
    }
    (prev.map(|(_, s)| s), this)
}
