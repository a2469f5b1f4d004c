//! Commands that start, follow, steer and show deployments.

use crate::client::Client;
use crate::exit_code::{Exit, ExitCode};
use crate::output::Output;
use crate::term::outln;
use crate::time::{clock, time, time_ms};
use gantry_api::{Action, DeployRequest, ListQuery, RollbackRequest, ShutdownRequest};
use gantry_core::{Deployment, DeploymentId, Phase};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::time::Duration;

pub async fn deploy(c: &Client, request: DeployRequest, detach: bool) -> Exit {
    let d = c.deploy(&request).await?;
    follow(c, d.id, detach).await
}

pub async fn rollback(c: &Client, request: RollbackRequest, detach: bool) -> Exit {
    let d = c.rollback(&request).await?;
    follow(c, d.id, detach).await
}

/// Scheduled changes still to start: each one's window and what it waits for.
pub async fn schedule(c: &Client, env: Option<String>, output: Output) -> Exit {
    let all = c
        .deployments(&ListQuery {
            env,
            limit: Some(1000),
        })
        .await?;
    let mut upcoming: Vec<Deployment> = all
        .into_iter()
        .filter(|d| {
            d.phase == Phase::AwaitingApproval
                && d.change.as_ref().is_some_and(|c| c.scheduled_at.is_some())
        })
        .collect();
    upcoming.sort_by_key(|d| d.change.as_ref().and_then(|c| c.start_after));
    output.show(&upcoming, |upcoming| {
        if upcoming.is_empty() {
            outln!("no change is scheduled");
            return;
        }
        outln!(
            "{:<6} {:<12} {:<10} {:<10} {:<22} {:<22} {:<9} BY",
            "ID",
            "ENV",
            "VERSION",
            "CHANGE",
            "STARTS",
            "WINDOW ENDS",
            "APPROVED"
        );
        for d in upcoming {
            let Some(c) = d.change.as_ref() else { continue };
            let approved = c.approvals.iter().filter(|a| a.approved).count();
            outln!(
                "{:<6} {:<12} {:<10} {:<10} {:<22} {:<22} {:<9} {}",
                d.id,
                d.env,
                d.version,
                c.change.as_str(),
                time(c.start_after),
                time(c.window_end),
                format!("{approved}/{}", c.required_before),
                d.requested_by
            );
        }
    })?;
    Ok(ExitCode::Success)
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
    let multi = MultiProgress::new();
    let bar = multi.add(ProgressBar::new_spinner());
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    let mut hosts = HostLines::default();
    let mut shown = 0;
    let finished = loop {
        let v = c.deployment_log(id).await?;
        for entry in v.log.iter().skip(shown) {
            let line = format!("  {}  {}", clock(entry.at), entry.message);
            // A hidden bar (output is not a terminal) would swallow the line.
            if bar.is_hidden() {
                outln!("{line}");
            } else {
                let _ = multi.println(crate::term::clean(&line));
            }
        }
        shown = shown.max(v.log.len());
        let d = v.deployment;
        hosts.show(&multi, &bar, &d);
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
            match d.change.as_ref().and_then(|c| c.scheduled_at) {
                Some(at) => outln!(
                    "deployment {id} is scheduled for {}: `gantry schedule` lists it, `gantry abort {id}` cancels it",
                    time(at)
                ),
                None => outln!(
                    "deployment {id} awaits approval: `gantry approve {id}` by an approver; `gantry log {id}` shows what it waits for"
                ),
            }
            return Ok(ExitCode::Success);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    bar.finish_and_clear();
    hosts.finish();
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

/// Per-host progress of a fleet deployment: a bar per host in a terminal
/// (healthy instances of expected, and the host's stage), or a plain line
/// whenever a host's stage changes.
#[derive(Default)]
struct HostLines {
    bars: BTreeMap<String, ProgressBar>,
    stages: BTreeMap<String, String>,
}

impl HostLines {
    fn show(&mut self, multi: &MultiProgress, spinner: &ProgressBar, d: &Deployment) {
        for p in crate::fleet_progress::hosts(d) {
            if spinner.is_hidden() {
                if self.stages.get(&p.host) != Some(&p.stage) {
                    outln!(
                        "  {}  host {}: {}",
                        clock(crate::time::now_ms()),
                        p.host,
                        p.stage
                    );
                    self.stages.insert(p.host.clone(), p.stage.clone());
                }
                continue;
            }
            let bar = self.bars.entry(p.host.clone()).or_insert_with(|| {
                let bar = multi.insert_before(spinner, ProgressBar::new(p.expected));
                bar.set_style(
                    ProgressStyle::with_template("  {prefix:<16} [{bar:20}] {pos}/{len} {msg}")
                        .expect("valid template")
                        .progress_chars("=> "),
                );
                bar.set_prefix(crate::term::clean(&p.host).into_owned());
                bar
            });
            bar.set_length(p.expected);
            bar.set_position(p.healthy);
            bar.set_message(crate::term::clean(&p.stage).into_owned());
        }
    }

    /// Leaves each host's last state on the screen.
    fn finish(&self) {
        for bar in self.bars.values() {
            bar.abandon();
        }
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
        for e in v.environments.iter().filter(|e| !e.drift.is_empty()) {
            outln!();
            outln!(
                "{} has drifted: {} difference(s) (gantry drift; gantry converge repairs what it can)",
                e.name,
                e.drift.len()
            );
            for f in &e.drift {
                outln!("  {} {}: {}", f.kind.as_str(), f.subject, f.detail);
            }
        }
        for e in v.environments.iter().filter(|e| !e.hosts.is_empty()) {
            outln!();
            outln!("{} on {} host(s)", e.name, e.hosts.len());
            outln!(
                "  {:<16} {:<12} {:<10} FAILED",
                "HOST",
                "RELEASE",
                "INSTANCES"
            );
            for h in &e.hosts {
                outln!(
                    "  {:<16} {:<12} {:<10} {}",
                    h.host,
                    h.release.as_deref().unwrap_or("-"),
                    format!("{}/{}", h.up, h.expected),
                    match (&h.failed, h.failed_in) {
                        (Some(why), Some(id)) => format!("in #{id}: {why}"),
                        (Some(why), None) => why.clone(),
                        _ => "-".into(),
                    }
                );
            }
        }
    })?;
    // Several controllers on one database: which leads, and the others.
    if !output.is_json() {
        if let Ok(cluster) = c.cluster().await {
            if cluster.store == "postgresql" {
                outln!();
                crate::cluster::print(&cluster);
            }
        }
    }
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
        if let Some(watch) = d.resources.as_ref().filter(|w| !w.latest.is_empty()) {
            outln!("resources at the latest look:");
            for line in gantry_core::analysis::resources::describe(&watch.latest) {
                outln!("  {line}");
            }
        }
    })?;
    Ok(ExitCode::Success)
}

/// The end of one instance's output.
/// Prints a page of lines and, following, each page written since.
pub async fn logs(c: &Client, mut query: gantry_api::LogsQuery, follow: bool) -> Exit {
    loop {
        let page = c.logs(&query).await?;
        let instances: std::collections::BTreeSet<&str> = page
            .lines
            .iter()
            .filter_map(|l| l.instance.as_deref())
            .collect();
        // Prefixed by the instance only when several speak.
        let prefixed = instances.len() > 1 || (query.instance.is_none() && !query.access);
        for l in &page.lines {
            match (&l.instance, prefixed) {
                (Some(i), true) => outln!("{i} | {}", l.text),
                _ => outln!("{}", l.text),
            }
        }
        if !follow {
            return Ok(ExitCode::Success);
        }
        query.cursor = Some(page.cursor);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
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
