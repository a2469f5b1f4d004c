//! Logs with the standards' retention, against a real controller and
//! router: the access log as JSON lines filtered by release and time, a
//! release logging at ERROR during its rollout reported in the deployment
//! log and notified, and `gantry logs` following an instance's output.

use crate::harness::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn the_access_log_has_a_json_line_per_request_filtered_by_release_and_time() {
    let g = Gantry::start();
    g.register("1.0.0", "");
    g.gantry(&["deploy", "1.0.0", "--env", "production"]).ok();
    for n in 0..25 {
        let (status, _) = http(
            &format!("http://127.0.0.1:{}", g.port("production")),
            "GET",
            &format!("/?order={n}"),
            None,
            "",
        );
        assert_eq!(status, 200);
    }
    let mut lines: Vec<serde_json::Value> = Vec::new();
    wait_until("25 access log lines", Duration::from_secs(10), || {
        let out = g
            .gantry(&["logs", "--access", "--env", "production", "--since", "10m"])
            .ok()
            .stdout;
        lines = out
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON lines"))
            .filter(|l: &serde_json::Value| {
                l["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("/?order="))
            })
            .collect();
        lines.len() == 25
    });
    let l = &lines[7];
    assert_eq!(
        (
            l["release"].as_str(),
            l["pool"].as_str(),
            l["method"].as_str(),
            l["status"].as_u64()
        ),
        (Some("1.0.0"), Some("stable"), Some("GET"), Some(200))
    );
    assert_eq!(l["path"], "/?order=7");
    assert!(l["duration_ms"].as_f64().is_some_and(|d| d >= 0.0));
    assert!(l["upstream"]
        .as_str()
        .is_some_and(|u| u.starts_with("127.0.0.1:")));
    assert!(l["time"]
        .as_str()
        .is_some_and(|t| t.starts_with("20") && t.ends_with('Z')));
    // Filters: another release has none, and nothing is from the future.
    let none = g
        .gantry(&[
            "logs",
            "--access",
            "--env",
            "production",
            "--release",
            "9.9.9",
            "--since",
            "1h",
        ])
        .ok()
        .stdout;
    assert_eq!(none, "");
    let later = g
        .gantry(&[
            "logs",
            "--access",
            "--env",
            "production",
            "--since",
            "2099-01-01T00:00:00Z",
        ])
        .ok()
        .stdout;
    assert_eq!(later, "");
    g.gantry(&[
        "logs",
        "--access",
        "--env",
        "production",
        "--since",
        "yesterday-ish",
    ])
    .fails_with(1, "--since: \"yesterday-ish\" is neither a duration");
    assert!(g.data().join("routers/production/access.log").exists());
}

#[test]
fn a_release_logging_errors_during_its_rollout_is_reported_and_notified_and_logs_follow() {
    let hook = Receiver::start(&[200]);
    let g = Gantry::start_with_env_and_tail(
        "3s",
        &[("LOGS_HOOK_SECRET", "s3cret")],
        &format!(
            "\n[[notify]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"{}\"\nsecret = {{ env = \"LOGS_HOOK_SECRET\" }}\nevents = [\"errors_logged\"]\n",
            hook.url("/gantry")
        ),
    );
    g.register("1.0.0", "");
    g.register("1.1.0", "\"error_rate\": 0.02, \"log_errors\": true");
    g.gantry(&["deploy", "1.0.0", "--env", "production"]).ok();
    let load = Load::start(g.port("production"));
    let id = deploy_id(
        &g.gantry(&["deploy", "1.1.0", "--env", "production", "--detach"])
            .ok(),
    );
    wait_until("the ERROR lines reported", Duration::from_secs(30), || {
        g.log_of(id).contains("at ERROR level")
    });
    let log = g.log_of(id);
    assert!(
        log.contains("logged") && log.contains("the first: ERROR request"),
        "{log}"
    );
    wait_until("the errors_logged notice", Duration::from_secs(20), || {
        hook.received()
            .iter()
            .any(|r| r.json()["event"] == "errors_logged")
    });
    let notice = hook
        .received()
        .into_iter()
        .find(|r| r.json()["event"] == "errors_logged")
        .unwrap()
        .json();
    assert!(
        notice["notice"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("injected fault in 1.1.0")),
        "{notice}"
    );
    let _ = load.finish();

    // `gantry logs -f` follows one instance's output as it is written.
    let d = g.wait_finished(id);
    let instance = d.new_instances[0].id.clone();
    let mut follow = Command::new(GANTRY)
        .arg("--data-dir")
        .arg(g.data())
        .args(["logs", &instance, "--follow", "--bytes", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(follow.stdout.take().unwrap());
    let load = Load::start(g.port("production"));
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !seen.contains("ERROR request") {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing followed: {seen}"
        );
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        seen.push_str(&line);
    }
    let _ = follow.kill();
    let _ = follow.wait();
    let _ = load.finish();
    assert!(seen.contains("ERROR request"), "{seen}");
    // Every instance of the environment, prefixed by its id.
    let all = g.gantry(&["logs", "--env", "production"]).ok().stdout;
    assert!(all.contains(&format!("{instance} | ")), "{all}");
}
