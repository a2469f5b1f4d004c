//! The router's `/metrics` read by Debian's real Prometheus tools:
//! `promtool check metrics` on the text, and a `prometheus` server that
//! scrapes it and answers PromQL. Skipped, saying so, when they are not
//! installed (`apt-get install prometheus`; `scripts/test` installs it).

use super::*;
use std::process::{Child, Command, Stdio};

fn tool(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([std::path::PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A router with a fast and a slow pool that has served some traffic,
/// including a 404 and a 503.
async fn router_with_traffic(dir: &Path) -> AdminInfo {
    let info = start_router(dir).await;
    let (fast, slow) = (status_upstream().await, slow_upstream("slow", 60).await);
    let r = routing(1, vec![("1.0.0", 1, vec![fast]), ("2.0.0", 1, vec![slow])]);
    assert_eq!(put_routing(&info, "t0ken", &r).await, 200);
    // Round robin: the even requests go to 1.0.0, the odd to 2.0.0.
    for path in ["/", "/", "/status/404", "/", "/status/503", "/", "/", "/"] {
        get(info.listen, path).await;
    }
    info
}

#[tokio::test]
async fn metrics_are_served_alone_on_their_listener_and_count_what_stats_counts() {
    let dir = tempfile::tempdir().unwrap();
    let info = router_with_traffic(dir.path()).await;
    let metrics = info.metrics.expect("the metrics listener is announced");
    let (status, body) = get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    // Four answers each: 1.0.0 two 200s, a 404 and a 503; 2.0.0 four 200s.
    assert!(
        body.contains(r#"gantry_router_requests_total{environment="production",release="1.0.0",pool="stable",code="4xx"} 1"#),
        "{body}"
    );
    assert!(
        body.contains(r#"gantry_router_requests_total{environment="production",release="2.0.0",pool="canary",code="2xx"} 4"#),
        "{body}"
    );
    assert!(
        body.contains(r#"gantry_router_request_duration_seconds_bucket{environment="production",release="2.0.0",pool="canary",le="0.05"} 0"#),
        "every slow answer took over 50 ms: {body}"
    );
    assert!(
        body.contains(r#"gantry_router_request_duration_seconds_bucket{environment="production",release="2.0.0",pool="canary",le="0.1"} 4"#),
        "{body}"
    );
    // Only GET /metrics: no admin route, with or without the token.
    assert_eq!(get(metrics, "/routing").await.0, 404);
    assert_eq!(get(metrics, "/stats").await.0, 404);
    let put = Request::put(format!("http://{metrics}/metrics"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(client().request(put).await.unwrap().status().as_u16(), 405);
    // And the admin listener does not serve it.
    assert_eq!(stats(&info, "").await.0, 200);
    let (status, _) = get(info.admin, "/metrics").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn promtool_accepts_the_metrics_text() {
    let Some(promtool) = tool("promtool") else {
        eprintln!("skipped: promtool is not installed (apt-get install prometheus)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let info = router_with_traffic(dir.path()).await;
    let (_, body) = get(info.metrics.unwrap(), "/metrics").await;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A process this test started, stopped when the test ends however it ends.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The single value of an instant PromQL query, once there is one.
async fn query(prometheus: SocketAddr, promql: &str) -> Option<f64> {
    let req = Request::get(format!(
        "http://{prometheus}/api/v1/query?query={}",
        url_encode(promql)
    ))
    .body(Full::new(Bytes::new()))
    .unwrap();
    // Refused until the server is up.
    let resp = client().request(req).await.ok()?;
    if resp.status() != 200 {
        return None;
    }
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_router_and_answers_p99_and_counts() {
    let Some(prometheus) = tool("prometheus") else {
        eprintln!("skipped: prometheus is not installed (apt-get install prometheus)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let info = router_with_traffic(dir.path()).await;
    let metrics = info.metrics.unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: gantry-router\n    static_configs:\n      - targets: ['{metrics}']\n"
        ),
    )
    .unwrap();
    let web: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _server = Started(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let p99 = r#"histogram_quantile(0.99, sum by (le) (gantry_router_request_duration_seconds_bucket{environment="production",release="2.0.0"}))"#;
    let served = r#"sum(gantry_router_requests_total{environment="production",code="2xx"})"#;
    let deadline = Instant::now() + Duration::from_secs(60);
    let (p99, served) = loop {
        if let (Some(p), Some(s)) = (query(web, p99).await, query(web, served).await) {
            break (p, s);
        }
        assert!(
            Instant::now() < deadline,
            "prometheus did not answer within 60s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // 60 ms answers fall in the (0.05, 0.1] bucket; the quantile is interpolated within it.
    assert!(p99 > 0.05 && p99 <= 0.1, "P99 {p99} s");
    // 8 requests: one 404 and one 503, the rest 2xx.
    assert_eq!(served, 6.0);
}
