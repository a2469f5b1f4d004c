//! `gantry incidents`, `gantry incident show|close`, `gantry dora`,
//! `gantry drift` and `gantry converge`.

use crate::cli::IncidentCommand;
use crate::client::Client;
use crate::exit_code::{Exit, ExitCode};
use crate::output::Output;
use crate::term::outln;
use crate::time::time;
use gantry_api::{
    CloseIncident, Dora, DoraQuery, IncidentQuery, IncidentRecord as Incident, Spread,
};

pub async fn list(c: &Client, env: Option<String>, open: bool, output: Output) -> Exit {
    let incidents = c
        .incidents(&IncidentQuery {
            env,
            open,
            limit: Some(1000),
        })
        .await?;
    output.show(&incidents, |incidents| {
        if incidents.is_empty() {
            outln!("no incident");
            return;
        }
        outln!(
            "{:<5} {:<12} {:<10} {:<10} {:<22} {:<22} {:<7} REASON",
            "ID",
            "ENV",
            "KIND",
            "RELEASE",
            "OPENED",
            "RESTORED",
            "STATE"
        );
        for i in incidents {
            let reason: String = i.reason.chars().take(80).collect();
            outln!(
                "{:<5} {:<12} {:<10} {:<10} {:<22} {:<22} {:<7} {reason}",
                i.id,
                i.env,
                i.kind.as_str(),
                i.release.as_deref().unwrap_or("-"),
                time(i.opened_at),
                time(i.restored_at),
                if i.closed.is_some() { "closed" } else { "open" },
            );
        }
    })?;
    Ok(ExitCode::Success)
}

fn show(i: &Incident) {
    outln!("incident {} in {} ({})", i.id, i.env, i.kind.as_str());
    outln!("  change record: deployment {}", i.deployment);
    outln!(
        "  release:       {} → {}",
        i.release.as_deref().unwrap_or("-"),
        i.restored_to.as_deref().unwrap_or("nothing")
    );
    outln!("  reason:        {}", i.reason);
    outln!("  opened:        {}", time(i.opened_at));
    outln!("  restored:      {}", time(i.restored_at));
    match &i.closed {
        Some(c) => {
            outln!("  closed:        {} by {}", time(c.at), c.by);
            outln!("  summary:       {}", c.summary);
            outln!("  follow-up:     {}", c.follow_up);
        }
        None => outln!(
            "  closed:        not yet (`gantry incident close {}`)",
            i.id
        ),
    }
}

pub async fn incident(c: &Client, cmd: IncidentCommand) -> Exit {
    match cmd {
        IncidentCommand::Show { id, output } => {
            let i = c.incident(id).await?;
            output.show(&i, show)?;
        }
        IncidentCommand::Close {
            id,
            summary,
            follow_up,
        } => {
            let i = c
                .close_incident(id, &CloseIncident { summary, follow_up })
                .await?;
            outln!("incident {} closed", i.id);
        }
    }
    Ok(ExitCode::Success)
}

/// Uploads each evidence file, then closes the record naming them.
pub async fn close_deployment(
    c: &Client,
    id: i64,
    summary: String,
    files: Vec<std::path::PathBuf>,
) -> Exit {
    use anyhow::Context as _;
    let mut evidence = Vec::new();
    for path in &files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .with_context(|| format!("--evidence {}: not a file", path.display()))?;
        let bytes = std::fs::read(path)
            .with_context(|| format!("--evidence {}: cannot read it", path.display()))?;
        evidence.push(c.add_deployment_evidence(id, &name, bytes).await?);
    }
    let closed = c
        .close_deployment(id, &gantry_api::CloseDeployment { summary, evidence })
        .await?;
    outln!(
        "deployment {} closed ({}) with {} evidence file(s)",
        closed.deployment,
        closed.status,
        closed.evidence.len()
    );
    Ok(ExitCode::Success)
}

fn days(ms: u64) -> String {
    let h = ms as f64 / 3_600_000.0;
    if h < 48.0 {
        format!("{h:.1} h")
    } else {
        format!("{:.1} days", h / 24.0)
    }
}

fn spread(s: &Option<Spread>, unit: fn(u64) -> String) -> String {
    match s {
        Some(s) => format!(
            "median {}, p90 {} ({} measured)",
            unit(s.median_ms),
            unit(s.p90_ms),
            s.count
        ),
        None => "nothing to measure".to_owned(),
    }
}

fn minutes(ms: u64) -> String {
    format!("{:.1} min", ms as f64 / 60_000.0)
}

fn pct(r: Option<f64>) -> String {
    r.map(|r| format!("{:.1}%", r * 100.0))
        .unwrap_or_else(|| "-".to_owned())
}

pub async fn dora(c: &Client, env: String, since: Option<String>, output: Output) -> Exit {
    let f = c.dora(&DoraQuery { env, since }).await?;
    output.show(&f, |f: &Dora| {
        outln!("DORA figures of {} from {} to {}", f.env, time(f.since), time(f.until));
        outln!(
            "  deployment frequency   {} ({} went live)",
            f.deployments_per_day
                .map(|d| format!("{d:.2} a day"))
                .unwrap_or_else(|| "no deployments".to_owned()),
            f.deployments
        );
        outln!("  lead time for changes  {}", spread(&f.lead_time, days));
        outln!(
            "  change failure rate    {} ({} of {} changes)",
            pct(f.change_failure_rate),
            f.failed_changes,
            f.changes
        );
        outln!("  time to restore        {}", spread(&f.time_to_restore, minutes));
        outln!(
            "  rework rate            {} ({} of {} deployments were rollbacks or emergency changes)",
            pct(f.rework_rate),
            f.rework,
            f.all_deployments
        );
    })?;
    Ok(ExitCode::Success)
}

fn findings(list: &[gantry_api::DriftFinding]) {
    for f in list {
        outln!(
            "  {:<12} {:<15} {}: {}{}",
            f.env,
            f.kind.as_str(),
            f.subject,
            f.detail,
            if f.repairable {
                ""
            } else {
                " (not repairable by converge)"
            }
        );
    }
}

pub async fn drift(c: &Client, output: Output) -> Exit {
    let r = c.drift().await?;
    output.show(&r, |r: &gantry_api::DriftReport| {
        if r.findings.is_empty() {
            outln!("no drift: what runs is what should");
        } else {
            outln!("{} difference(s):", r.findings.len());
            findings(&r.findings);
        }
        for s in &r.skipped {
            outln!("  not checked: {s}");
        }
    })?;
    Ok(if r.findings.is_empty() {
        ExitCode::Success
    } else {
        ExitCode::Drift
    })
}

pub async fn converge(c: &Client, output: Output) -> Exit {
    let r = c.converge().await?;
    output.show(&r, |r: &gantry_api::ConvergeReport| {
        if r.repairs.is_empty() {
            outln!("nothing to repair");
        }
        for rep in &r.repairs {
            outln!(
                "  {} {} {}: {}",
                if rep.repaired { "repaired" } else { "left" },
                rep.finding.kind.as_str(),
                rep.finding.subject,
                rep.outcome
            );
        }
        if !r.remaining.is_empty() {
            outln!("still differing:");
            findings(&r.remaining);
        }
    })?;
    Ok(if r.remaining.is_empty() {
        ExitCode::Success
    } else {
        ExitCode::Drift
    })
}
