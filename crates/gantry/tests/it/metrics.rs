//! What Prometheus reads: a router started by the controller with the
//! environment's `metrics_listen` serves its pools' counts there (and
//! promtool accepts them), and the controller's own `/metrics` says where
//! each environment's rollout stands.

use crate::harness::*;
use gantry_core::Phase;
use std::time::Duration;

const HELD_CANARY: &str = r#"strategy = "canary"
canary = { steps = [{ weight = 10, pause = "2s" }, { weight = 50, pause = "until-promoted" }, { weight = 100 }], interval = "250ms", max_wait = "20s", promotion_tolerance = 0.1 }
"#;

/// The value of the line starting with `series`, if there is one.
fn value_of(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[test]
fn the_router_serves_prometheus_on_its_metrics_address_and_the_controller_says_where_the_rollout_stands(
) {
    let port = free_port();
    let tail = format!("{HELD_CANARY}metrics_listen = \"127.0.0.1:{port}\"\n");
    let (g, load) = serving(&tail, &[("1.1.0", "")]);
    let metrics = format!("http://127.0.0.1:{port}");
    let id = deploy_id(
        &g.gantry(&["deploy", "1.1.0", "--env", "production", "--detach"])
            .ok(),
    );
    wait_until("the 50% step", Duration::from_secs(30), || {
        g.deployment(id)
            .deployment
            .canary
            .as_ref()
            .is_some_and(|c| c.weight == 50)
    });

    // The router: both releases' answers, by role, on the metrics address only.
    let mut text = String::new();
    wait_until(
        "the canary's answers in /metrics",
        Duration::from_secs(10),
        || {
            text = http(&metrics, "GET", "/metrics", None, "").1;
            value_of(
            &text,
            r#"gantry_router_requests_total{environment="production",release="1.1.0",pool="canary",code="2xx"}"#,
        )
        .is_some_and(|n| n > 0.0)
        },
    );
    let stable_2xx = value_of(
        &text,
        r#"gantry_router_requests_total{environment="production",release="1.0.0",pool="stable",code="2xx"}"#,
    );
    assert!(stable_2xx.is_some_and(|n| n > 200.0), "{text}");
    assert!(
        text.contains(r#"gantry_router_request_duration_seconds_bucket{environment="production",release="1.1.0",pool="canary",le="+Inf"}"#),
        "{text}"
    );
    assert_eq!(http(&metrics, "GET", "/routing", None, "").0, 404);
    if let Some(promtool) = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .iter()
        .find(|p| std::path::Path::new(p).is_file())
    {
        use std::io::Write;
        let mut child = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("promtool check skipped: promtool is not installed (apt-get install prometheus)");
    }

    // The controller: phase, weight and the latest verdict of the rollout.
    let (code, own) = http(&g.api_url(), "GET", "/metrics", Some(&g.token()), "");
    assert_eq!(code, 200);
    let labels = format!(r#"env="production",deployment="{id}",version="1.1.0""#);
    assert_eq!(
        value_of(
            &own,
            &format!(r#"gantry_deployment_phase{{{labels},phase="canary"}}"#)
        ),
        Some(1.0),
        "{own}"
    );
    assert_eq!(
        value_of(&own, &format!("gantry_canary_weight{{{labels}}}")),
        Some(50.0),
        "{own}"
    );
    let verdicts: Vec<f64> = ["continue", "no_worse", "fail"]
        .iter()
        .map(|v| {
            value_of(
                &own,
                &format!(r#"gantry_analysis_last_verdict{{{labels},verdict="{v}"}}"#),
            )
            .unwrap_or_else(|| panic!("no {v} verdict gauge in:\n{own}"))
        })
        .collect();
    assert_eq!(
        verdicts.iter().sum::<f64>(),
        1.0,
        "one verdict holds: {verdicts:?}"
    );
    assert_eq!(verdicts[2], 0.0, "a healthy canary is not failing");

    g.gantry(&["promote", &id.to_string()]).ok();
    let d = g.wait_finished(id);
    let (_, failed) = load.finish();
    assert_eq!((d.phase, failed), (Phase::Succeeded, 0));
    let (_, own) = http(&g.api_url(), "GET", "/metrics", Some(&g.token()), "");
    assert_eq!(
        value_of(
            &own,
            &format!(r#"gantry_deployment_phase{{{labels},phase="succeeded"}}"#)
        ),
        Some(1.0),
        "{own}"
    );
}
