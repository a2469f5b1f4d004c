//! Commands for people and rules: users, tokens, approvals, evidence, gates.

use crate::client::Client;
use crate::exit_code::{Exit, ExitCode};
use crate::output::Output;
use crate::term::{errln, out, outln};
use crate::time::time;
use anyhow::Context;
use clap::Subcommand;
use gantry_api::{
    DeliveryQuery, EvidenceQuery, EvidenceRecord, GatesQuery, NewToken, NewUser, PlanApproval,
    RehearsalRequest, TokenQuery, VerdictRequest,
};
use gantry_core::evidence::Report;
use gantry_core::DeploymentId;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user with one or more roles (viewer, deployer, approver, admin).
    Add {
        name: String,
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
    },
    List {
        #[command(flatten)]
        output: Output,
    },
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
        #[command(flatten)]
        output: Output,
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
    List {
        version: String,
        #[command(flatten)]
        output: Output,
    },
}

pub async fn user(c: &Client, cmd: UserCommand) -> Exit {
    match cmd {
        UserCommand::Add { name, roles } => {
            let u = c.create_user(&NewUser { name, roles }).await?;
            let roles: Vec<&str> = u.roles.iter().map(|r| r.as_str()).collect();
            outln!("user {} added with role(s) {}", u.name, roles.join(", "));
        }
        UserCommand::List { output } => {
            let users = c.users().await?;
            output.show(&users, |users| {
                outln!("{:<24} {:<28} {:<22} BY", "NAME", "ROLES", "CREATED");
                for u in users {
                    let roles: Vec<&str> = u.roles.iter().map(|r| r.as_str()).collect();
                    outln!(
                        "{:<24} {:<28} {:<22} {}",
                        u.name,
                        roles.join(","),
                        time(u.created_at),
                        u.created_by
                    );
                }
            })?;
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
                .create_token(&NewToken {
                    user,
                    label,
                    expires_in: expires,
                })
                .await?;
            let (id, user) = (&t.id, &t.user);
            if let Some(old) = &t.revoked {
                errln!("token {old}, which someone else minted for {user}, is revoked: this one replaces it");
            }
            if t.minted_by != *user {
                errln!(
                    "minted by {} for {user}: it may not give verdicts; {user} mints their own with it (`gantry token create --user {user}`, which revokes this one)",
                    t.minted_by
                );
            }
            errln!(
                "token {id} for {user} (expires {}); shown once, store it now:",
                time(t.expires_at)
            );
            outln!("{}", t.token);
        }
        TokenCommand::List { user, output } => {
            let tokens = c.tokens(&TokenQuery { user }).await?;
            output.show(&tokens, |tokens| {
                outln!(
                    "{:<18} {:<16} {:<12} {:<22} {:<22} STATE",
                    "ID",
                    "USER",
                    "LABEL",
                    "CREATED",
                    "EXPIRES"
                );
                for t in tokens {
                    let state = if t.revoked_at.is_some() {
                        format!("revoked by {}", t.revoked_by.as_deref().unwrap_or("?"))
                    } else {
                        "active".to_owned()
                    };
                    outln!(
                        "{:<18} {:<16} {:<12} {:<22} {:<22} {state}",
                        t.id,
                        t.user,
                        t.label.as_deref().unwrap_or("-"),
                        time(t.created_at),
                        time(t.expires_at),
                    );
                }
            })?;
        }
        TokenCommand::Revoke { id } => {
            c.revoke_token(&id).await?;
            outln!("token {id} revoked");
        }
    }
    Ok(ExitCode::Success)
}

pub async fn verdict(c: &Client, id: DeploymentId, approve: bool, comment: Option<String>) -> Exit {
    let request = VerdictRequest {
        comment: comment.unwrap_or_default(),
    };
    let v = if approve {
        c.approve(id, &request).await?
    } else {
        c.reject(id, &request).await?
    };
    let what = if approve { "approved" } else { "rejected" };
    outln!("deployment {id}: {what} by {}", v.by);
    Ok(ExitCode::Success)
}

pub async fn approvals(c: &Client, output: Output) -> Exit {
    let pending = c.approvals().await?;
    output.show(&pending, |pending| {
        if pending.is_empty() {
            outln!("nothing awaits approval");
            return;
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
            let state = if p.overdue {
                "OVERDUE".to_owned()
            } else {
                p.phase.to_string()
            };
            outln!(
                "{:<6} {:<12} {:<10} {:<10} {:<12} {:<9} {:<22} {state}",
                p.deployment,
                p.env,
                p.version,
                p.change.as_str(),
                p.requested_by,
                format!("{}/{}", p.approved, p.required),
                time(p.review_by),
            );
        }
    })?;
    Ok(ExitCode::Success)
}

pub async fn evidence(c: &Client, cmd: EvidenceCommand) -> Exit {
    match cmd {
        EvidenceCommand::Add {
            version,
            kind,
            file,
        } => {
            let body = tokio::fs::File::open(&file)
                .await
                .with_context(|| format!("cannot read {}", file.display()))?;
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "report".to_owned());
            let e = c
                .put_evidence(&version, &kind, &EvidenceQuery { file: Some(name) }, body)
                .await?;
            let digest = e.digest.to_string();
            outln!(
                "evidence {} attached to {version}: {} ({}, sha256 {})",
                e.id,
                e.report.summary(),
                e.kind.as_str(),
                &digest[..digest.len().min(12)]
            );
        }
        EvidenceCommand::List { version, output } => {
            let list = c.evidence(&version).await?;
            output.show(&list, |list| {
                for e in list {
                    outln!(
                        "{:<4} {:<12} {:<24} {:<22} {:<10} {}",
                        e.id,
                        e.kind.as_str(),
                        e.file_name,
                        time(e.added_at),
                        e.added_by,
                        e.report.summary()
                    );
                }
            })?;
        }
    }
    Ok(ExitCode::Success)
}

pub async fn gates(c: &Client, version: &str, env: &str, output: Output) -> Exit {
    let v = c
        .gates(&GatesQuery {
            version: version.to_owned(),
            env: env.to_owned(),
        })
        .await?;
    output.show(&v, |v| {
        outln!("gates for {version} → {env}:");
        for g in &v.gates {
            outln!(
                "  {} {:<20} {}",
                if g.passed { "PASS" } else { "FAIL" },
                g.gate,
                g.detail
            );
        }
        if v.passed {
            outln!("all gates pass");
        } else {
            outln!("{version} may not enter {env} yet");
        }
    })?;
    Ok(if v.passed {
        ExitCode::Success
    } else {
        ExitCode::GateFailed
    })
}

/// The plan of `version` for `env`, printed, written to a file, or approved.
pub async fn plan(
    c: &Client,
    query: GatesQuery,
    write: Option<PathBuf>,
    approve: Option<String>,
    output: Output,
) -> Exit {
    if let Some(comment) = approve {
        let v = c
            .approve_plan(&PlanApproval {
                version: query.version.clone(),
                env: query.env.clone(),
                comment,
            })
            .await?;
        return output
            .show(&v, |v| {
                outln!(
                    "plan for {} → {} approved by {} (sha256 {}), attached as evidence {}",
                    v.version,
                    v.env,
                    v.by,
                    v.digest,
                    v.evidence
                );
            })
            .map(|()| ExitCode::Success);
    }
    let plan = c.plan(&query).await?;
    match write {
        Some(path) => {
            std::fs::write(&path, &plan.markdown)
                .with_context(|| format!("cannot write {}", path.display()))?;
            outln!("wrote the plan to {}", path.display());
        }
        None => output.show(&plan, |p| out!("{}", p.markdown))?,
    }
    Ok(ExitCode::Success)
}

pub async fn notifications(
    c: &Client,
    deployment: Option<DeploymentId>,
    limit: usize,
    output: Output,
) -> Exit {
    let list = c
        .notifications(&DeliveryQuery {
            deployment,
            limit: Some(limit),
        })
        .await?;
    output.show(&list, |list| {
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
                d.id,
                d.channel,
                d.notice.kind.as_str(),
                d.notice.deployment,
                d.status,
                d.attempts,
                d.last_error.as_deref().unwrap_or("")
            );
        }
    })?;
    Ok(ExitCode::Success)
}

pub async fn whoami(c: &Client, output: Output) -> Exit {
    let who = c.whoami().await?;
    output.show(&who, |who| {
        let roles: Vec<&str> = who.roles.iter().map(|r| r.as_str()).collect();
        outln!("{} ({})", who.user, roles.join(", "));
    })?;
    Ok(ExitCode::Success)
}

/// Starts a rehearsal and waits for its evidence.
pub async fn rehearse(c: &Client, version: &str, env: &str) -> Exit {
    let last = newest_id(&c.evidence(version).await?);
    c.rehearse(&RehearsalRequest {
        env: env.to_owned(),
        version: version.to_owned(),
    })
    .await?;
    outln!("rehearsing {version} in {env}: deploy, roll back, deploy again");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3600);
    loop {
        let list = c.evidence(version).await?;
        let outcome = list
            .iter()
            .filter(|e| e.id > last)
            .find_map(|e| match &e.report {
                Report::Rehearsal { passed, .. } => Some((e, *passed)),
                _ => None,
            });
        if let Some((e, passed)) = outcome {
            outln!("{}", e.report.summary());
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

fn newest_id(list: &[EvidenceRecord]) -> i64 {
    list.iter().map(|e| e.id).max().unwrap_or(0)
}
