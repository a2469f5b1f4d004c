//! Commands for people and rules: users, tokens, approvals, evidence, gates.

use crate::client::Client;
use crate::exit_code::{Exit, ExitCode};
use crate::term::{errln, outln};
use anyhow::Context;
use clap::Subcommand;
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user with one or more roles (viewer, deployer, approver, admin).
    Add {
        name: String,
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
    },
    List,
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Issue an API token for a user; it is printed once and never stored.
    Create {
        #[arg(long)]
        user: String,
        #[arg(long)]
        label: Option<String>,
        /// Lifetime, e.g. 90d or 12h (default: no expiry).
        #[arg(long)]
        expires: Option<String>,
    },
    List {
        #[arg(long)]
        user: Option<String>,
    },
    Revoke {
        id: String,
    },
}

#[derive(Subcommand)]
pub enum EvidenceCommand {
    /// Attach a report to a release: JUnit XML (unit, integration), SARIF
    /// (security), Cobertura XML or LCOV (coverage).
    Add {
        version: String,
        #[arg(long)]
        kind: String,
        file: PathBuf,
    },
    /// The evidence attached to a release.
    List { version: String },
}

pub async fn user(c: &Client, cmd: UserCommand) -> Exit {
    match cmd {
        UserCommand::Add { name, roles } => {
            let u = c
                .post("/users", json!({"name": name, "roles": roles}))
                .await?;
            outln!(
                "user {} added with role(s) {}",
                u["name"].as_str().unwrap_or("?"),
                u["roles"]
            );
        }
        UserCommand::List => {
            let users: Vec<Value> = c.get("/users").await?;
            outln!("{:<24} {:<28} {:<22} BY", "NAME", "ROLES", "CREATED");
            for u in users {
                let roles: Vec<&str> = u["roles"]
                    .as_array()
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                outln!(
                    "{:<24} {:<28} {:<22} {}",
                    u["name"].as_str().unwrap_or("?"),
                    roles.join(","),
                    crate::time::time(&u["created_at"]),
                    u["created_by"].as_str().unwrap_or("?")
                );
            }
        }
    }
    Ok(ExitCode::Success)
}

pub async fn token(c: &Client, cmd: TokenCommand) -> Exit {
    match cmd {
        TokenCommand::Create {
            user,
            label,
            expires,
        } => {
            let t = c
                .post(
                    "/tokens",
                    json!({"user": user, "label": label, "expires_in": expires}),
                )
                .await?;
            let (id, user) = (
                t["id"].as_str().unwrap_or("?"),
                t["user"].as_str().unwrap_or("?"),
            );
            if let Some(old) = t["revoked"].as_str() {
                errln!("token {old}, which someone else minted for {user}, is revoked: this one replaces it");
            }
            if t["minted_by"].as_str().is_some_and(|by| by != user) {
                errln!(
                    "minted by {} for {user}: it may not give verdicts; {user} mints their own with it (`gantry token create --user {user}`, which revokes this one)",
                    t["minted_by"].as_str().unwrap_or("?")
                );
            }
            errln!(
                "token {id} for {user} (expires {}); shown once, store it now:",
                crate::time::time(&t["expires_at"])
            );
            outln!("{}", t["token"].as_str().unwrap_or(""));
        }
        TokenCommand::List { user } => {
            let path = match user {
                Some(u) => format!("/tokens?user={u}"),
                None => "/tokens".to_owned(),
            };
            let tokens: Vec<Value> = c.get(&path).await?;
            outln!(
                "{:<18} {:<16} {:<12} {:<22} {:<22} STATE",
                "ID",
                "USER",
                "LABEL",
                "CREATED",
                "EXPIRES"
            );
            for t in tokens {
                let state = if t["revoked_at"].is_i64() {
                    format!("revoked by {}", t["revoked_by"].as_str().unwrap_or("?"))
                } else {
                    "active".to_owned()
                };
                outln!(
                    "{:<18} {:<16} {:<12} {:<22} {:<22} {state}",
                    t["id"].as_str().unwrap_or("?"),
                    t["user"].as_str().unwrap_or("?"),
                    t["label"].as_str().unwrap_or("-"),
                    crate::time::time(&t["created_at"]),
                    crate::time::time(&t["expires_at"]),
                );
            }
        }
        TokenCommand::Revoke { id } => {
            c.post(&format!("/tokens/{id}/revoke"), json!({})).await?;
            outln!("token {id} revoked");
        }
    }
    Ok(ExitCode::Success)
}

pub async fn verdict(c: &Client, id: i64, approve: bool, comment: Option<String>) -> Exit {
    let what = if approve { "approve" } else { "reject" };
    let v = c
        .post(
            &format!("/deployments/{id}/{what}"),
            json!({"comment": comment.unwrap_or_default()}),
        )
        .await?;
    outln!(
        "deployment {id}: {}d by {}",
        what,
        v["by"].as_str().unwrap_or("?")
    );
    Ok(ExitCode::Success)
}

pub async fn approvals(c: &Client) -> Exit {
    let pending: Vec<Value> = c.get("/approvals").await?;
    if pending.is_empty() {
        outln!("nothing awaits approval");
        return Ok(ExitCode::Success);
    }
    outln!(
        "{:<6} {:<12} {:<10} {:<10} {:<12} {:<9} {:<22} STATE",
        "ID",
        "ENV",
        "VERSION",
        "CHANGE",
        "BY",
        "APPROVED",
        "REVIEW BY"
    );
    for p in pending {
        let state = if p["overdue"].as_bool() == Some(true) {
            "OVERDUE".to_owned()
        } else {
            p["phase"].as_str().unwrap_or("?").to_owned()
        };
        outln!(
            "{:<6} {:<12} {:<10} {:<10} {:<12} {:<9} {:<22} {state}",
            p["deployment"],
            p["env"].as_str().unwrap_or("?"),
            p["version"].as_str().unwrap_or("?"),
            p["change"].as_str().unwrap_or("?"),
            p["requested_by"].as_str().unwrap_or("?"),
            format!("{}/{}", p["approved"], p["required"]),
            crate::time::time(&p["review_by"]),
        );
    }
    Ok(ExitCode::Success)
}

pub async fn evidence(c: &Client, cmd: EvidenceCommand) -> Exit {
    match cmd {
        EvidenceCommand::Add {
            version,
            kind,
            file,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "report".to_owned());
            let e = c
                .put_bytes(
                    &format!("/releases/{version}/evidence/{kind}"),
                    &[("file", name.as_str())],
                    bytes,
                )
                .await?;
            outln!(
                "evidence {} attached to {version}: {} ({}, sha256 {})",
                e["id"],
                summary(&e),
                e["kind"].as_str().unwrap_or("?"),
                &e["digest"].as_str().unwrap_or("?")
                    [..12.min(e["digest"].as_str().unwrap_or("?").len())]
            );
        }
        EvidenceCommand::List { version } => {
            let list: Vec<Value> = c.get(&format!("/releases/{version}/evidence")).await?;
            for e in list {
                outln!(
                    "{:<4} {:<12} {:<24} {:<22} {:<10} {}",
                    e["id"],
                    e["kind"].as_str().unwrap_or("?"),
                    e["file_name"].as_str().unwrap_or("?"),
                    crate::time::time(&e["added_at"]),
                    e["added_by"].as_str().unwrap_or("?"),
                    summary(&e)
                );
            }
        }
    }
    Ok(ExitCode::Success)
}

/// The report's one-line summary, as the core words it.
fn summary(e: &Value) -> String {
    serde_json::from_value::<gantry_core::evidence::Report>(e["report"].clone())
        .map(|r| r.summary())
        .unwrap_or_else(|_| e["report"].to_string())
}

pub async fn gates(c: &Client, version: &str, env: &str) -> Exit {
    let v = c
        .send_get(&format!("/gates?version={version}&env={env}"))
        .await?;
    outln!("gates for {version} → {env}:");
    for g in v["gates"].as_array().cloned().unwrap_or_default() {
        outln!(
            "  {} {:<20} {}",
            if g["passed"].as_bool() == Some(true) {
                "PASS"
            } else {
                "FAIL"
            },
            g["gate"].as_str().unwrap_or("?"),
            g["detail"].as_str().unwrap_or("")
        );
    }
    if v["passed"].as_bool() == Some(true) {
        outln!("all gates pass");
        Ok(ExitCode::Success)
    } else {
        outln!("{version} may not enter {env} yet");
        Ok(ExitCode::GateFailed)
    }
}

/// Starts a rehearsal and waits for its evidence.
pub async fn rehearse(c: &Client, version: &str, env: &str) -> Exit {
    let before: Vec<Value> = c.get(&format!("/releases/{version}/evidence")).await?;
    let last = before
        .iter()
        .filter_map(|e| e["id"].as_i64())
        .max()
        .unwrap_or(0);
    c.post("/rehearsals", json!({"env": env, "version": version}))
        .await?;
    outln!("rehearsing {version} in {env}: deploy, roll back, deploy again");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3600);
    loop {
        let list: Vec<Value> = c.get(&format!("/releases/{version}/evidence")).await?;
        if let Some(e) = list
            .iter()
            .find(|e| e["kind"] == "rehearsal" && e["id"].as_i64().unwrap_or(0) > last)
        {
            outln!("{}", summary(e));
            let passed = e["report"]["passed"].as_bool() == Some(true);
            return Ok(if passed {
                ExitCode::Success
            } else {
                ExitCode::DeployFailed
            });
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no rehearsal outcome after an hour; `gantry history --env {env}` shows its deployments"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
