//! Commands that start, follow, steer and show deployments.

use crate::client::Client;
use crate::exit_code::{Exit, ExitCode};
use crate::output::Output;
use crate::term::{out, outln};
use crate::time::{clock, time, time_ms};
use gantry_api::{Action, DeployRequest, ListQuery, LogQuery, RollbackRequest, ShutdownRequest};
use gantry_core::{Deployment, DeploymentId, Phase};
use indicatif::{ProgressBar, ProgressStyle};
use std::time::Duration;

pub async fn deploy(c: &Client, request: DeployRequest, detach: bool) -> Exit {
    let d = c.deploy(&request).await?;
    follow(c, d.id, detach).await
}

pub async fn rollback(c: &Client, request: RollbackRequest, detach: bool) -> Exit {
    let d = c.rollback(&request).await?;
    follow(c, d.id, detach).await
}

/// Asks a running deployment to abort, promote, pause or resume.
pub async fn act(c: &Client, id: DeploymentId, action: Action) -> Exit {
    c.act(id, action).await?;
    outln!("deployment {id}: {} requested", action.as_str());
    Ok(ExitCode::Success)
}

/// Shows a deployment's progress until it finishes; exit 3 unless it succeeded.
pub async fn follow(c: &Client, id: DeploymentId, detach: bool) -> Exit {
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
        let v = c.deployment_log(id).await?;
        for entry in v.log.iter().skip(shown) {
            let line = format!("  {}  {}", clock(entry.at), entry.message);
            // A hidden bar (output is not a terminal) would swallow the line.
            if bar.is_hidden() {
                outln!("{line}");
            } else {
                bar.println(crate::term::clean(&line));
            }
        }
        shown = shown.max(v.log.len());
        let d = v.deployment;
        let status = format!(
            "deployment {id}: {} {} → {}",
            d.phase.as_str(),
            d.version,
            d.env
        );
        bar.set_message(crate::term::clean(&status).into_owned());
        if d.phase.is_terminal() {
            break d;
        }
        if d.phase == Phase::AwaitingApproval {
            bar.finish_and_clear();
            outln!(
                "deployment {id} awaits approval: `gantry approve {id}` by an approver; `gantry log {id}` shows what it waits for"
            );
            return Ok(ExitCode::Success);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    bar.finish_and_clear();
    let took = took_secs(&finished).unwrap_or(0.0);
    if finished.phase == Phase::Succeeded {
        outln!(
            "deployment {id} succeeded in {took:.1}s: {} serves {}",
            finished.version,
            finished.env
        );
        Ok(ExitCode::Success)
    } else {
        outln!(
            "deployment {id} {} after {took:.1}s: {}",
            finished.phase.as_str(),
            finished.reason.as_deref().unwrap_or("no reason recorded")
        );
        Ok(ExitCode::DeployFailed)
    }
}

fn took_secs(d: &Deployment) -> Option<f64> {
    d.finished_at.map(|f| (f - d.created_at) as f64 / 1000.0)
}

pub async fn status(c: &Client, output: Output) -> Exit {
    let v = c.status().await?;
    output.show(&v, |v| {
        outln!("service {}", v.service);
        outln!(
            "{:<14} {:<22} {:<12} {:<10} IN PROGRESS",
            "ENVIRONMENT",
            "LISTEN",
            "RELEASE",
            "INSTANCES"
        );
        for e in &v.environments {
            let up = e.instances.iter().filter(|i| i.running).count();
            outln!(
                "{:<14} {:<22} {:<12} {:<10} {}",
                e.name,
                e.listen,
                e.version.as_deref().unwrap_or("-"),
                format!("{up}/{}", e.instances.len()),
                match &e.active_deployment {
                    Some(a) => format!("#{} {} ({})", a.id, a.version, a.phase),
                    None => "-".into(),
                }
            );
        }
    })?;
    Ok(ExitCode::Success)
}

pub async fn history(c: &Client, env: &str, limit: usize, output: Output) -> Exit {
    let list = c
        .deployments(&ListQuery {
            env: Some(env.to_owned()),
            limit: Some(limit),
        })
        .await?;
    output.show(&list, |list| {
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
            outln!(
                "{:<5} {:<9} {:<10} {:<12} {:<20} {:>8}  {}",
                d.id,
                kind_word(d),
                d.version,
                d.phase.as_str(),
                time(d.created_at),
                took_secs(d).map_or("-".into(), |t| format!("{t:.1}s")),
                d.reason.as_deref().unwrap_or("")
            );
        }
    })?;
    Ok(ExitCode::Success)
}

fn kind_word(d: &Deployment) -> &'static str {
    match d.kind {
        gantry_core::DeploymentKind::Deploy => "deploy",
        gantry_core::DeploymentKind::Rollback => "rollback",
    }
}

pub async fn log(c: &Client, id: DeploymentId, output: Output) -> Exit {
    let v = c.deployment_log(id).await?;
    output.show(&v, |v| {
        let d = &v.deployment;
        outln!(
            "deployment {id}: {} of {} to {} by {} ({})",
            kind_word(d),
            d.version,
            d.env,
            d.requested_by,
            d.phase.as_str()
        );
        if let Some(prev) = &d.previous_version {
            outln!("previous release: {prev}");
        }
        for e in &v.log {
            outln!("{}  {:<13} {}", time_ms(e.at), e.phase, e.message);
        }
        if let Some(r) = &d.reason {
            outln!("reason: {r}");
        }
    })?;
    Ok(ExitCode::Success)
}

/// The end of one instance's output.
pub async fn instance_log(c: &Client, instance: &str, bytes: u64) -> Exit {
    let text = c
        .instance_log(instance, &LogQuery { bytes: Some(bytes) })
        .await?;
    out!("{text}");
    Ok(ExitCode::Success)
}

pub async fn shutdown(c: &Client, stop_workloads: bool) -> Exit {
    c.shutdown(&ShutdownRequest { stop_workloads }).await?;
    outln!(
        "controller stopping{}",
        if stop_workloads {
            " with its instances and routers"
        } else {
            ""
        }
    );
    Ok(ExitCode::Success)
}
