//! The analysis' metric query rules against Debian's real Prometheus: the
//! controller writes a `file_sd` list of its instances, Prometheus scrapes
//! each release's own `/metrics`, and a canary is judged on its queries.
//! Skipped, with the reason printed, where `prometheus` is not installed.

use crate::harness::*;
use gantry_core::Phase;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A Prometheus of the test's own, scraping every second the instances
/// the controller lists in `targets`; stopped when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn installed() -> bool {
        let found = Command::new("prometheus")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            eprintln!("skipped: Debian's prometheus is not installed (apt-get install prometheus)");
        }
        found
    }

    fn start(port: u16, targets: &Path) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: gantry-instances\n    file_sd_configs:\n      - files: ['{}']\n        refresh_interval: 1s\n",
                targets.display()
            ),
        )
        .unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus starts");
        let p = Prometheus {
            child,
            port,
            _dir: dir,
        };
        wait_until("prometheus ready", Duration::from_secs(30), || {
            matches!(
                try_http(&p.base(), "GET", "/-/ready", None, ""),
                Ok((200, _))
            )
        });
        p
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// How many series `query` returns now.
    fn series(&self, query: &str) -> usize {
        let path = format!("/api/v1/query?query={}", encode(query));
        match try_http(&self.base(), "GET", &path, None, "") {
            Ok((200, body)) => serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["data"]["result"].as_array().map(Vec::len))
                .unwrap_or(0),
            _ => 0,
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A canary on production judged by `queries` (TOML of
/// `[[analysis.queries]]` tables) asked of a Prometheus on `prom_port`.
fn gantry_with_queries(prom_port: u16, queries: &str) -> Gantry {
    gantry_with(prom_port, queries, "strategy = \"canary\"\ncanary = { steps = [{ weight = 50, pause = \"5s\" }, { weight = 100 }], interval = \"250ms\", max_wait = \"60s\" }\n")
}

/// Production with `strategy` (TOML lines of its table), judged by `queries`.
fn gantry_with(prom_port: u16, queries: &str, strategy: &str) -> Gantry {
    Gantry::start_custom(|ports| {
        lifecycle_config(
            ports,
            "300ms",
            &format!(
                "\n[metrics.prometheus]\nurl = \"http://127.0.0.1:{prom_port}\"\ntimeout = \"2s\"\n\n[analysis]\nmax_p99_factor = false\nmax_p50_factor = false\ncompare_slow_factor = false\n{queries}"
            ),
            Lifecycle::Loose,
        ) + strategy
    })
}

const QUEUE: &str = r#"
[[analysis.queries]]
name = "queue depth"
query = 'max(sample_queue_depth{env="{env}",release="{release}"})'
above_baseline = 10
consecutive = 2
no_data_timeout = "20s"
"#;

#[test]
fn a_canary_whose_queue_backs_up_twentyfold_is_rolled_back_naming_the_query_and_values() {
    if !Prometheus::installed() {
        return;
    }
    let prom_port = free_port();
    let g = gantry_with_queries(prom_port, QUEUE);
    let prom = Prometheus::start(prom_port, &g.data().join("prometheus/instances.json"));
    g.register("1.0.0", "");
    g.register("1.1.0", "\"queue_depth\": 4");
    g.register("1.2.0", "\"queue_depth\": 60");
    g.gantry(&["deploy", "1.0.0", "--env", "production"]).ok();
    let load = Load::start(g.port("production"));
    wait_until(
        "Prometheus scrapes 1.0.0's instances by the controller's targets file",
        Duration::from_secs(30),
        || prom.series(r#"sample_queue_depth{env="production",release="1.0.0"}"#) == 2,
    );

    // A healthy queue: promoted once the query has data.
    g.gantry(&["deploy", "1.1.0", "--env", "production"]).ok();
    let d = g.latest("production");
    assert_eq!(d.phase, Phase::Succeeded);
    let judged = d.canary.unwrap().queries.last["queue depth"].clone();
    assert_eq!(
        judged.reading,
        gantry_core::analysis::queries::Reading::Value { value: 4.0 },
        "{judged:?}"
    );

    // 20× the queue: rolled back, the verdict names the query and the figures.
    g.gantry(&["deploy", "1.2.0", "--env", "production"])
        .fails_with(3, "rolled_back");
    let d = g.latest("production");
    let reason = d.reason.clone().unwrap();
    assert!(
        reason.starts_with("canary analysis at 50%: query rule \"queue depth\": above 10× the baseline 4 = 40 for 2 reading(s) in a row, latest 60 (query max(sample_queue_depth{env=\"production\",release=\"1.2.0\"}); baseline 4)"),
        "{reason}"
    );
    assert_eq!(g.get_env("production").1, "hello from 1.1.0\n");
    let (ok, failed) = load.finish();
    assert_eq!(failed, 0, "{ok} answered");
}

/// Payments that fail though every request answers 200: the router sees
/// nothing, the count rule sees the new release's share of the failures.
const PAYMENTS: &str = r#"
[[analysis.queries]]
name = "payments"
errors = 'sum(sample_payments_failed_total{env="{env}",release="{release}"})'
total = 'sum(sample_payments_total{env="{env}",release="{release}"})'
max_ratio = 0.05
no_data_timeout = "20s"
"#;

#[test]
fn a_count_rule_rolls_back_a_release_whose_payments_fail_unseen_by_the_router() {
    if !Prometheus::installed() {
        return;
    }
    let prom_port = free_port();
    let g = gantry_with_queries(prom_port, PAYMENTS);
    let prom = Prometheus::start(prom_port, &g.data().join("prometheus/instances.json"));
    g.register("1.0.0", "\"payment_failure_rate\": 0.01");
    g.register("1.1.0", "\"payment_failure_rate\": 0.01");
    g.register("1.2.0", "\"payment_failure_rate\": 0.25");
    g.gantry(&["deploy", "1.0.0", "--env", "production"]).ok();
    let load = Load::start(g.port("production"));
    wait_until(
        "Prometheus scrapes 1.0.0's payment counters",
        Duration::from_secs(30),
        || prom.series(r#"sample_payments_total{env="production",release="1.0.0"}"#) == 2,
    );

    // As many failures as the old release: promoted, the counts on record.
    g.gantry(&["deploy", "1.1.0", "--env", "production"]).ok();
    let d = g.latest("production");
    assert_eq!(d.phase, Phase::Succeeded);
    let canary = d.canary.unwrap();
    let track = &canary.queries.counts["payments"];
    let judged: u64 = track.windows.iter().map(|w| w.total).sum();
    assert!(judged >= 50, "{track:?}");
    let report = canary
        .last
        .unwrap()
        .reports
        .into_iter()
        .find(|r| r.rule == gantry_core::analysis::RuleKind::QueryErrorsVsStable)
        .expect("the count rule is judged with the router's rules");
    assert_eq!(report.status, gantry_core::analysis::RuleStatus::Passing);

    // A quarter of the payments fail, every request still answers 200.
    g.gantry(&["deploy", "1.2.0", "--env", "production"])
        .fails_with(3, "rolled_back");
    let reason = g.latest("production").reason.unwrap();
    eprintln!("rolled back: {reason}");
    assert!(
        reason.starts_with("canary analysis at 50%: query rule \"payments\": "),
        "{reason}"
    );
    assert!(
        reason.contains("error ratio above 5.00%")
            || reason.contains("share of errors above its share of events"),
        "{reason}"
    );
    assert_eq!(g.get_env("production").1, "hello from 1.1.0\n");
    let (ok, failed) = load.finish();
    assert_eq!(failed, 0, "{ok} answered");
}

#[test]
fn a_judged_rolling_batch_is_held_to_the_count_rule_too() {
    if !Prometheus::installed() {
        return;
    }
    let prom_port = free_port();
    let g = gantry_with(
        prom_port,
        PAYMENTS,
        "strategy = \"rolling\"\nrolling = { max_surge = 1, max_unavailable = 0, analysis = \"4s\" }\n",
    );
    let prom = Prometheus::start(prom_port, &g.data().join("prometheus/instances.json"));
    g.register("1.0.0", "\"payment_failure_rate\": 0.01");
    g.register("1.1.0", "\"payment_failure_rate\": 0.25");
    g.gantry(&["deploy", "1.0.0", "--env", "production"]).ok();
    let load = Load::start(g.port("production"));
    wait_until(
        "Prometheus scrapes 1.0.0's payment counters",
        Duration::from_secs(30),
        || prom.series(r#"sample_payments_total{env="production",release="1.0.0"}"#) == 2,
    );
    // Every request answers 200; a quarter of the first batch's payments fail.
    g.gantry(&["deploy", "1.1.0", "--env", "production"])
        .fails_with(3, "rolled_back");
    let d = g.latest("production");
    let reason = d.reason.clone().unwrap();
    assert!(
        reason.starts_with("analysis of batch 1: query rule \"payments\": "),
        "{reason}"
    );
    let log = g.log_of(d.id);
    assert!(!log.contains("batch 2: starting"), "{log}");
    assert_eq!(g.get_env("production").1, "hello from 1.0.0\n");
    let (ok, failed) = load.finish();
    assert_eq!(failed, 0, "{ok} answered");
}

#[test]
fn no_data_waits_then_rolls_back_saying_so_and_a_stopped_prometheus_is_explained() {
    if !Prometheus::installed() {
        return;
    }
    let prom_port = free_port();
    let g = gantry_with_queries(
        prom_port,
        r#"
[[analysis.queries]]
name = "checkout latency"
query = 'max(no_such_metric{release="{release}"})'
below = 1
no_data_timeout = "3s"
"#,
    );
    let mut prom = Prometheus::start(prom_port, &g.data().join("prometheus/instances.json"));
    g.register("1.0.0", "");
    g.register("1.1.0", "");
    g.gantry(&["deploy", "1.0.0", "--env", "production"]).ok();
    let load = Load::start(g.port("production"));

    // The query returns no series: no promotion on silence; rolled back at its deadline.
    g.gantry(&["deploy", "1.1.0", "--env", "production"])
        .fails_with(3, "rolled_back");
    let reason = g.latest("production").reason.unwrap();
    assert!(
        reason.contains(
            "query rule \"checkout latency\": no data: the query returned no series for 3"
        ) && reason.contains("no_data = \"wait\" gives up after 3s"),
        "{reason}"
    );

    // Prometheus gone mid-rollout: an explained state, never a promotion.
    let id = deploy_id(
        &g.gantry(&["deploy", "1.1.0", "--env", "production", "--detach"])
            .ok(),
    );
    g.wait_phase(id, Phase::Canary);
    prom.stop();
    let d = g.wait_finished(id);
    assert_eq!(d.phase, Phase::RolledBack);
    let reason = d.reason.unwrap();
    assert!(
        reason.contains("query failed: cannot connect to Prometheus"),
        "{reason}"
    );
    assert_eq!(g.get_env("production").1, "hello from 1.0.0\n");
    let (ok, failed) = load.finish();
    assert_eq!(failed, 0, "{ok} answered");
}

#[test]
fn validate_asks_prometheus_to_parse_each_query() {
    if !Prometheus::installed() {
        return;
    }
    let prom_port = free_port();
    let g = gantry_with_queries(
        prom_port,
        "\n[[analysis.queries]]\nname = \"broken\"\nquery = 'max(sample_queue_depth{release=\"{release}\"}'\nabove = 1\n",
    );
    let config = g.config_path();
    // No server to ask: valid, with a warning that the query went unchecked.
    let run = g
        .gantry(&["validate", "--config", config.to_str().unwrap()])
        .ok();
    assert!(
        run.stderr
            .contains("analysis.queries[0].query not checked by Prometheus: cannot connect"),
        "{}",
        run.stderr
    );
    let _prom = Prometheus::start(prom_port, &g.data().join("prometheus/instances.json"));
    let run = g
        .gantry(&["validate", "--config", config.to_str().unwrap()])
        .fails_with(
            4,
            "analysis.queries[0].query: Prometheus refused the query (HTTP 400)",
        );
    assert!(run.stderr.contains("parse error"), "{}", run.stderr);
}

/// The Grafana dashboard shipped for the routers' metrics: well formed as
/// Grafana's import expects (no Grafana here to import it into), and every
/// panel's query accepted by a real Prometheus.
#[test]
fn the_grafana_dashboard_is_well_formed_and_prometheus_accepts_every_query() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/grafana/gantry-router.json");
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(d["uid"], "gantry-router");
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(d["schemaVersion"].as_u64().unwrap() >= 30);
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["datasource", "environment"]);
    let panels = d["panels"].as_array().unwrap();
    assert!(panels.len() >= 6);
    let mut ids = std::collections::BTreeSet::new();
    let mut exprs = Vec::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "panel ids are unique"
        );
        assert_eq!(p["type"], "timeseries");
        for k in ["h", "w", "x", "y"] {
            assert!(p["gridPos"][k].is_u64(), "{p}");
        }
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty());
        for t in targets {
            assert!(t["refId"].is_string());
            exprs.push(t["expr"].as_str().unwrap().to_owned());
        }
    }
    if !Prometheus::installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let targets = dir.path().join("none.json");
    std::fs::write(&targets, "[]").unwrap();
    let prom = Prometheus::start(free_port(), &targets);
    for e in exprs {
        let q = e
            .replace("$__rate_interval", "1m")
            .replace("$environment", ".*");
        let path = format!("/api/v1/query?query={}", encode(&q));
        let (status, body) = try_http(&prom.base(), "GET", &path, None, "").unwrap();
        assert_eq!(status, 200, "{q}: {body}");
    }
}
