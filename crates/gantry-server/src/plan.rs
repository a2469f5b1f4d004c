//! The deployment plan of the standards' template (purpose, scope,
//! preconditions, steps, validation, rollback plan, communications, review
//! and approval), rendered as Markdown from the config, the release, its
//! gates and its evidence. Approving a plan attaches it as evidence.
//! Functions over the controller's public reads and `record_evidence`.

pub use gantry_api::Plan;

use crate::controller::{now_ms, ControlError, Controller};
use gantry_config::{Environment, Strategy};
use gantry_core::evidence::{EvidenceKind, Report};
use gantry_core::governance::{rfc3339, FreezeSpan};
use gantry_core::machine::{seconds, Pause, SmokeProbe};
use gantry_store::EvidenceRecord;
use serde::Serialize;

const TEMPLATE: &str = include_str!("plan.md");
const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

#[derive(Serialize, schemars::JsonSchema)]
struct Freeze {
    name: String,
    when: String,
}

#[derive(Serialize, schemars::JsonSchema)]
struct Check {
    name: String,
    critical: bool,
    what: String,
}

#[derive(Serialize, schemars::JsonSchema)]
struct PlanApproval {
    by: String,
    at: String,
    comment: String,
}

fn strategy_text(env: &Environment) -> String {
    match &env.strategy {
        Strategy::BlueGreen => format!(
            "blue-green: a full new pool, verified while it takes no traffic, then all traffic at once; the old pool stays warm for {}",
            seconds(env.bake_ms)
        ),
        Strategy::Canary(c) => {
            let steps: Vec<String> = c.steps.iter().map(|s| format!("{}%", s.weight)).collect();
            format!("canary: {}, judged live against the stable release", steps.join(" → "))
        }
        Strategy::Rolling(r) => format!(
            "rolling: batches with max surge {} and max unavailable {}",
            r.max_surge, r.max_unavailable
        ),
    }
}

fn steps(env: &Environment, version: &str, previous: Option<&str>) -> Vec<String> {
    let mut s = vec![format!(
        "Verify the artifact of {version} against its SHA-256 and unpack it read-only"
    )];
    let smoke = if env.smoke.is_some() {
        " and pass the smoke checks"
    } else {
        ""
    };
    match &env.strategy {
        Strategy::BlueGreen => {
            s.push(format!(
                "Start {} new instance(s) of {version} beside the current ones",
                env.instances
            ));
            s.push(format!(
                "Wait until every new instance is healthy{smoke}, with no user traffic on them"
            ));
            s.push(format!(
                "Switch all traffic to {version} in one routing change"
            ));
            match previous {
                Some(p) => {
                    s.push(format!(
                        "Keep {p} warm for {} while {version} serves alone",
                        seconds(env.bake_ms)
                    ));
                    s.push(format!("Stop the instances of {p}"));
                }
                None => s.push(format!(
                    "Watch {version}'s health for {}",
                    seconds(env.bake_ms)
                )),
            }
        }
        Strategy::Canary(c) => {
            s.push(format!(
                "Start {} new instance(s) of {version}",
                env.instances
            ));
            s.push(format!(
                "Wait until every new instance is healthy{smoke}, with no user traffic on them"
            ));
            s.push(
                "Snapshot the stable release's health baseline (error rate, P50, P99)".to_owned(),
            );
            for step in &c.steps {
                let pause = match step.pause {
                    Pause::For { ms: 0 } => String::new(),
                    Pause::For { ms } => format!(" for {}", seconds(ms)),
                    Pause::UntilPromoted => " until someone runs `gantry promote`".to_owned(),
                };
                s.push(format!(
                    "Send {}% of traffic to {version}{pause}, judged live",
                    step.weight
                ));
            }
            s.push("Stop the previous instances".to_owned());
        }
        Strategy::Rolling(r) => {
            s.push(format!(
                "Replace the {} instance(s) in batches (up to {} extra, up to {} out of service at a time)",
                env.instances, r.max_surge, r.max_unavailable
            ));
            s.push(format!(
                "Each new instance healthy{smoke} before it takes traffic and an old one stops"
            ));
        }
    }
    s.push(format!("Record {version} as what serves {}", env.name));
    s
}

fn analysis_rules(c: &Controller) -> Vec<String> {
    let a = &c.config().analysis;
    let mut out = Vec::new();
    if let Some(x) = a.max_error_rate {
        out.push(format!("error rate above {}% rolls back", x * 100.0));
    }
    if let Some(x) = a.max_error_rate_increase {
        out.push(format!(
            "error rate above the baseline + {} points rolls back",
            x * 100.0
        ));
    }
    if let Some(x) = a.max_error_rate_ratio {
        out.push(format!("error rate above {x}× the baseline rolls back"));
    }
    if let Some(x) = a.max_p99_factor {
        out.push(format!("P99 latency above {x}× the baseline rolls back"));
    }
    if let Some(x) = a.max_p50_factor {
        out.push(format!("P50 latency above {x}× the baseline rolls back"));
    }
    if a.compare_errors {
        out.push(
            "the canary's share of errors (5xx, no answer) above its share of traffic rolls back"
                .to_owned(),
        );
    }
    if a.compare_client_errors {
        out.push(
            "the canary's share of 4xx answers above its share of traffic rolls back (4xx count in no other rule)"
                .to_owned(),
        );
    }
    out.push(format!(
        "each rule is an anytime-valid sequential test; false-rollback budget {}",
        a.alpha
    ));
    out
}

/// The resource rules judged on the target's own readings during a canary
/// or a bake, each with its limit.
fn resource_rules(r: &gantry_config::ResourcePolicy) -> Vec<String> {
    let cpu_limit = r
        .cpu_cores
        .map_or("the host's cores".to_owned(), |c| format!("{c} cores"));
    let memory_limit = r.memory_bytes.map_or("the host's memory".to_owned(), |b| {
        format!("{} MiB", b >> 20)
    });
    let mut out = Vec::new();
    let pct = |x: f64| format!("{:.0}%", x * 100.0);
    if let Some(x) = r.max_cpu {
        out.push(format!(
            "CPU of a new instance above {} of its limit ({cpu_limit}) rolls back",
            pct(x)
        ));
    }
    if let Some(x) = r.max_memory {
        out.push(format!(
            "memory of a new instance above {} of its limit ({memory_limit}) rolls back",
            pct(x)
        ));
    }
    if let Some(x) = r.exhaustion {
        out.push(format!(
            "above {} of either limit is resource exhaustion",
            pct(x)
        ));
    }
    if !out.is_empty() {
        out.push(format!(
            "resource rules fire after {} bad readings in a row, and not when the old release's instances are as far over (the load, not the release)",
            r.consecutive
        ));
    }
    out
}

/// The deployment plan of `version` into `env`, from what the controller reads out.
pub fn plan(c: &Controller, version: &str, env: &str) -> Result<Plan, ControlError> {
    let env = c.env(env)?.clone();
    let release = c.release(version)?;
    let v = release.version.to_string();
    let previous = c.env_state(&env.name)?.map(|s| s.version.to_string());
    let gates = c.gates(&release.version, &env)?;
    let evidence = c.evidence(&release.version)?;
    let newest = |kind: EvidenceKind| {
        evidence
            .iter()
            .filter(|e| e.kind == kind)
            .max_by_key(|e| e.id)
    };
    let rehearsal = newest(EvidenceKind::Rehearsal).map(|e| e.report.summary());
    let plan_approvals: Vec<PlanApproval> = evidence
        .iter()
        .filter_map(|e| match &e.report {
            Report::Plan {
                env: p, comment, ..
            } if p == env.name.as_str() => Some(PlanApproval {
                by: e.added_by.clone(),
                at: rfc3339(e.added_at),
                comment: comment.clone(),
            }),
            _ => None,
        })
        .collect();
    let a = &env.approval;
    let change_control = if a.required == 0 {
        "no approval needed; standard changes go at once".to_owned()
    } else {
        format!(
            "a normal change needs {} approval(s) from approvers other than the requester and a lead time of {}; emergency changes go at once and need their approvals within {}{}",
            a.required,
            a.lead_time,
            humantime::format_duration(std::time::Duration::from_millis(a.emergency_review_ms)),
            if a.allow_standard { "; standard changes are pre-approved" } else { "" }
        )
    };
    let freezes: Vec<Freeze> = env
        .freezes
        .iter()
        .map(|f| Freeze {
            name: f.name.clone(),
            when: match f.when {
                FreezeSpan::Once { from, to } => {
                    format!("{} to {}", rfc3339(from), rfc3339(to))
                }
                FreezeSpan::Weekly {
                    from_day,
                    from_minute,
                    to_day,
                    to_minute,
                } => format!(
                    "every week, {} {:02}:{:02} to {} {:02}:{:02} UTC",
                    DAYS[from_day as usize % 7],
                    from_minute / 60,
                    from_minute % 60,
                    DAYS[to_day as usize % 7],
                    to_minute / 60,
                    to_minute % 60
                ),
            },
        })
        .collect();
    let smoke: Vec<Check> = env
        .smoke
        .iter()
        .flat_map(|s| s.checks.iter())
        .map(|c| Check {
            name: c.name.clone(),
            critical: c.critical,
            what: match &c.probe {
                SmokeProbe::Http {
                    method,
                    path,
                    expect_status,
                    body_contains,
                    json_pointer,
                    json_equals,
                } => {
                    let mut w = format!("`{method} {path}` answers {expect_status}");
                    if let Some(b) = body_contains {
                        w.push_str(&format!(" with {b:?} in the body"));
                    }
                    if let (Some(p), Some(v)) = (json_pointer, json_equals) {
                        w.push_str(&format!(" and JSON `{p}` = `{v}`"));
                    }
                    w
                }
                SmokeProbe::Command { argv } => format!("`{}` exits 0", argv.join(" ")),
            },
        })
        .collect();
    let mut analysis = if matches!(env.strategy, Strategy::Canary(_)) {
        analysis_rules(c)
    } else {
        Vec::new()
    };
    if !matches!(env.strategy, Strategy::Rolling(_)) {
        analysis.extend(resource_rules(&env.resources));
    }
    let (hooks_asked, hooks_told): (Vec<_>, Vec<_>) =
        env.hooks.iter().map(|h| &h.hook).partition(|h| h.at.asks());
    let hook_line = |h: &&gantry_core::machine::hooks::Hook| {
        let call = match &h.call {
            gantry_core::machine::hooks::HookCall::Command { argv } => {
                format!(
                    "`{}` (exit 0 goes on, 75 holds, else stops)",
                    argv.join(" ")
                )
            }
            gantry_core::machine::hooks::HookCall::Http { url } => {
                format!("a signed POST to {url} (2xx goes on, 423 holds, else stops)")
            }
        };
        format!("hook \"{}\" at {}: {call}", h.name, h.at.as_str())
    };
    let hooks_asked: Vec<String> = hooks_asked.iter().map(hook_line).collect();
    let hooks_told: Vec<String> = hooks_told.iter().map(hook_line).collect();
    let (migrations_before, migrations_rollback) = migration_lines(c, &env, &release);
    let h = &c.config().health;
    let ctx = minijinja::context! {
        migrations_before => migrations_before,
        migrations_rollback => migrations_rollback,
        hooks_asked => hooks_asked,
        hooks_told => hooks_told,
        service => c.config().service.name,
        command => c.config().service.command,
        version => v,
        env => env.name.as_str(),
        generated_at => rfc3339(now_ms()),
        git_sha => release.git_sha,
        digest => release.digest.as_hex(),
        size => release.size,
        artifact_kind => release.artifact_kind,
        signed_by => release.signed_by,
        signature => match &release.signed_by {
            Some(key) => format!("signed (minisign key `{key}`)"),
            None => "not signed".to_owned(),
        },
        require_signature => env.require_signature,
        previous => previous,
        listen => env.listen.to_string(),
        instances => env.instances,
        strategy => strategy_text(&env),
        gates => gates,
        change_control => change_control,
        freezes => freezes,
        steps => steps(&env, &v, previous.as_deref()),
        health_path => h.path,
        failure_threshold => h.failure_threshold,
        start_timeout => seconds(h.start_timeout_ms),
        smoke => smoke,
        analysis => analysis,
        rehearsal => rehearsal,
        approvals_needed => if a.required == 0 { "none".to_owned() } else { format!("{} from the approver role", a.required) },
        plan_approvals => plan_approvals,
    };
    let mut engine = minijinja::Environment::new();
    engine.set_trim_blocks(true);
    let markdown = engine
        .render_str(TEMPLATE, ctx)
        .map_err(|e| ControlError::Internal(format!("plan template: {e}")))?;
    let (digest, _) = gantry_store::hash_bytes(markdown.as_bytes());
    Ok(Plan {
        version: v,
        env: env.name.to_string(),
        digest: digest.to_string(),
        markdown,
    })
}

/// Approves the plan as it renders now and attaches it to the release.
pub fn approve_plan(
    c: &Controller,
    version: &str,
    env: &str,
    by: &str,
    comment: &str,
) -> Result<(Plan, EvidenceRecord), ControlError> {
    let plan = plan(c, version, env)?;
    let release = c.release(version)?;
    let report = Report::Plan {
        env: plan.env.clone(),
        approved_by: by.to_owned(),
        comment: comment.to_owned(),
    };
    let name = format!("plan-{}-{}.md", plan.env, plan.version);
    let record = c.record_evidence(
        &release.version,
        EvidenceKind::Plan,
        &name,
        plan.markdown.as_bytes(),
        report,
        by,
    )?;
    Ok((plan, record))
}

/// The plan's lines on the release's migrations: what runs before the
/// rollout (preconditions) and how each is backed out (rollback plan).
fn migration_lines(
    c: &crate::Controller,
    env: &gantry_config::Environment,
    release: &gantry_store::ReleaseRecord,
) -> (Vec<String>, Vec<String>) {
    use gantry_core::machine::migrations::MigrationKind;
    let (mut before, mut rollback) = (Vec::new(), Vec::new());
    if release.migrations.is_empty() {
        return (before, rollback);
    }
    let pending = match c.pending_migrations(env, release) {
        Ok(p) => p,
        Err(e) => {
            before.push(format!("[ ] {e}"));
            return (before, rollback);
        }
    };
    let cmd = |argv: &[String]| format!("`{}`", argv.join(" "));
    let db = env.database.as_ref();
    let mut backed_up = false;
    for m in &release.migrations {
        if !pending.iter().any(|p| p.id == m.id) {
            before.push(format!(
                "[x] migration {} ({}) was already applied in {}: not run again",
                m.id,
                m.kind.as_str(),
                env.name
            ));
            continue;
        }
        if m.kind == MigrationKind::Breaking && !backed_up {
            backed_up = true;
            if let Some(db) = db {
                before.push(format!(
                    "[ ] a database backup by {} succeeds before the first breaking migration",
                    cmd(&db.backup)
                ));
            }
        }
        before.push(format!(
            "[ ] migration {} ({}) runs before any new instance starts: {} from the release directory, within {}",
            m.id,
            m.kind.as_str(),
            cmd(&m.run),
            gantry_core::machine::seconds(m.timeout_ms)
        ));
    }
    let mut restored = false;
    for m in release.migrations.iter().rev() {
        if !pending.iter().any(|p| p.id == m.id) {
            continue;
        }
        match m.kind {
            MigrationKind::Additive => rollback.push(format!(
                "Migration {} (additive) stays in place: the previous release ignores it.",
                m.id
            )),
            MigrationKind::Data => rollback.push(format!(
                "Migration {} (data): its reverse {} runs{}.",
                m.id,
                cmd(m.reverse.as_deref().unwrap_or_default()),
                if backed_up {
                    " (if it ran before the backup; else the restore undoes it)"
                } else {
                    ""
                }
            )),
            MigrationKind::Breaking if !restored => {
                restored = true;
                if let Some(db) = db {
                    rollback.push(format!(
                        "Migration {} (breaking) and every migration after the backup: the database is restored by {} from the backup taken before it.",
                        m.id,
                        cmd(&db.restore)
                    ));
                }
            }
            MigrationKind::Breaking => {}
        }
    }
    rollback.push(
        "Migrations are backed out only by an automatic or aborted rollback of this deployment; a later `gantry rollback` leaves them in place (a restore then would lose what was written since).".to_owned(),
    );
    (before, rollback)
}
