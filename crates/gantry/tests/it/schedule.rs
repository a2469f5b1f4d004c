//! Scheduled changes against a real controller: a deploy that waits for
//! its time and then runs, announced to a webhook; one cancelled; times in
//! the past, windows that end before they begin and starts in a freeze
//! refused at their field.

use crate::harness::*;
use gantry_core::Phase;
use std::time::{Duration, SystemTime};

fn in_secs(secs: u64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(secs)).to_string()
}

#[test]
fn a_scheduled_deploy_waits_for_its_time_is_announced_listed_and_then_runs() {
    let hook = Receiver::start(&[]);
    let g = Gantry::start_with_env_and_tail(
        "300ms",
        &[("GANTRY_WEBHOOK_SECRET", "k")],
        &format!(
            "\n[[notify]]\nname = \"changes\"\nkind = \"webhook\"\nurl = \"{}\"\nsecret = {{ env = \"GANTRY_WEBHOOK_SECRET\" }}\nevents = [\"scheduled\"]\n",
            hook.url("/notices")
        ),
    );
    g.register("1.0.0", "");
    g.register("1.1.0", "");
    g.gantry(&["deploy", "1.0.0", "--env", "production"]).ok();
    let at = in_secs(4);
    let run = g
        .gantry(&[
            "deploy",
            "1.1.0",
            "--env",
            "production",
            "--at",
            &at,
            "--until",
            &in_secs(120),
        ])
        .ok();
    assert!(
        run.stdout.contains("is scheduled for") && run.stdout.contains("gantry abort"),
        "{}",
        run.stdout
    );
    let d = g.latest("production");
    assert_eq!(d.phase, Phase::AwaitingApproval);
    let listed = g.gantry(&["schedule"]).ok().stdout;
    assert!(
        listed.contains(&format!("{:<6} production", d.id)) && listed.contains("1.1.0"),
        "{listed}"
    );
    assert!(g
        .log_of(d.id)
        .contains(&format!("waiting: scheduled to start at {at}")));
    // Announced at the request, with its start.
    let start = gantry_core::time::parse_rfc3339(&at).unwrap();
    let ours = || {
        hook.received()
            .into_iter()
            .map(|r| r.json())
            .find(|n| n["notice"]["deployment"] == d.id)
    };
    wait_until("the scheduled notice", Duration::from_secs(10), || {
        ours().is_some()
    });
    let notice = ours().unwrap();
    assert_eq!(notice["event"], "scheduled", "{notice}");
    assert_eq!(notice["notice"]["start_after"], start, "{notice}");
    // Nothing moves before its time; then it runs to the end.
    assert_eq!(g.get_env("production").1, "hello from 1.0.0\n");
    let done = g.wait_finished(d.id);
    assert_eq!(done.phase, Phase::Succeeded, "{:?}", done.reason);
    let (code, log) = http(
        &g.api_url(),
        "GET",
        &format!("/api/v1/deployments/{}/log", d.id),
        Some(&g.token()),
        "",
    );
    assert_eq!(code, 200, "{log}");
    let log: serde_json::Value = serde_json::from_str(&log).unwrap();
    let prepared_at = log["log"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["message"] == "phase preparing")
        .map(|e| e["at"].as_i64().unwrap())
        .expect("it prepared");
    assert!(
        prepared_at >= start,
        "started at {prepared_at}, scheduled for {start}"
    );
    assert_eq!(g.get_env("production").1, "hello from 1.1.0\n");
    assert!(g
        .gantry(&["schedule"])
        .ok()
        .stdout
        .contains("no change is scheduled"));
}

#[test]
fn a_scheduled_deploy_is_cancelled_with_abort_and_bad_times_are_named() {
    let g = Gantry::start_with_tail(
        "100ms",
        r#"
[[environments.production.freeze]]
name = "the far freeze"
from = "2990-01-01T00:00:00Z"
to = "2999-01-01T00:00:00Z"
"#,
    );
    g.register("1.0.0", "");
    let id = deploy_id(
        &g.gantry(&[
            "deploy",
            "1.0.0",
            "--env",
            "production",
            "--at",
            &in_secs(3600),
            "--detach",
        ])
        .ok(),
    );
    g.gantry(&["abort", &id.to_string()]).ok();
    let d = g.wait_finished(id);
    assert_eq!(d.phase, Phase::Failed);
    assert!(d.reason.unwrap().starts_with("aborted by"));
    for (args, needle) in [
        (
            vec!["--at", "2001-01-01T00:00Z"],
            "at: 2001-01-01T00:00:00Z is in the past",
        ),
        (
            vec!["--at", "next tuesday"],
            "at: \"next tuesday\" is not a UTC time",
        ),
        (
            vec!["--at", "2990-06-01T00:00Z"],
            "at: production is frozen (the far freeze) at 2990-06-01T00:00:00Z",
        ),
    ] {
        let mut all = vec!["deploy", "1.0.0", "--env", "production"];
        all.extend(args);
        let run = g.gantry(&all);
        assert!(
            run.stderr.contains(needle),
            "{all:?}: {} {}",
            run.stdout,
            run.stderr
        );
    }
    let at = in_secs(3600);
    let run = g.gantry(&[
        "deploy",
        "1.0.0",
        "--env",
        "production",
        "--at",
        &at,
        "--until",
        &at,
    ]);
    assert!(
        run.stderr.contains("until: ") && run.stderr.contains("is not after the start"),
        "{}",
        run.stderr
    );
    // Nothing was created by the refusals.
    assert_eq!(g.deployments(None).len(), 1);
}
