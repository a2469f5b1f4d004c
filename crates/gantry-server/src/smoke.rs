//! Runs an environment's smoke checks against new instances, directly on
//! their ports (never through the router: they take no traffic yet).
//!
//! Every check runs against every instance, all at once, each within its own
//! time limit and the whole suite within the suite's. Commands run without a
//! shell, with `GANTRY_SMOKE_URL` naming the instance.

use gantry_core::machine::{SmokeCheck, SmokeProbe, SmokeResult, SmokeSettings};
use gantry_core::InstanceRef;
use std::time::{Duration, Instant};

/// Output kept from a failed command, for the log.
const COMMAND_DETAIL_BYTES: usize = 300;
/// Body kept from a failed HTTP check, for the log.
const BODY_DETAIL_CHARS: usize = 120;
/// The most of an answer a smoke check reads: a release is untrusted and
/// must not make the controller hold gigabytes.
const MAX_BODY_BYTES: usize = 1 << 20;

/// The body as text, refused past `limit` bytes.
pub(crate) async fn read_bounded(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<String, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("body unreadable: {e}"))?
    {
        if body.len() + chunk.len() > limit {
            return Err(format!(
                "body is larger than {} KiB; smoke checks read at most that",
                limit / 1024
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Every check against every instance, at once, within the suite's timeout.
pub async fn run_suite(
    http: &reqwest::Client,
    settings: &SmokeSettings,
    instances: &[InstanceRef],
) -> Vec<SmokeResult> {
    let mut jobs = tokio::task::JoinSet::new();
    for instance in instances {
        for check in &settings.checks {
            let (http, check, instance) = (http.clone(), check.clone(), instance.clone());
            jobs.spawn(async move { run_check(&http, &check, &instance).await });
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(settings.timeout_ms);
    let mut results = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, jobs.join_next()).await {
            Ok(Some(Ok(r))) => results.push(r),
            Ok(Some(Err(e))) => tracing::error!(error = %e, "a smoke check task failed"),
            Ok(None) => break,
            Err(_) => break, // The machine's own deadline rolls the deployment back.
        }
    }
    // A stable order for the log and the API: by check as configured, then instance.
    let order = |r: &SmokeResult| {
        let c = settings.checks.iter().position(|c| c.name == r.check);
        let i = instances.iter().position(|i| i.id == r.instance);
        (c, i)
    };
    results.sort_by_key(order);
    results
}

async fn run_check(
    http: &reqwest::Client,
    check: &SmokeCheck,
    instance: &InstanceRef,
) -> SmokeResult {
    let started = Instant::now();
    let base = format!("http://{}", crate::probe::instance_addr(instance));
    let limit = Duration::from_millis(check.timeout_ms);
    let outcome = match &check.probe {
        SmokeProbe::Http {
            method,
            path,
            expect_status,
            body_contains,
            json_pointer,
            json_equals,
        } => {
            let expect = HttpExpectation {
                status: *expect_status,
                body_contains: body_contains.as_deref(),
                json: json_pointer.as_deref().zip(json_equals.as_deref()),
            };
            http_check(http, method, &format!("{base}{path}"), limit, &expect).await
        }
        SmokeProbe::Command { argv } => command_check(argv, &base, limit).await,
    };
    let (passed, detail) = match outcome {
        Ok(d) => (true, d),
        Err(d) => (false, d),
    };
    SmokeResult {
        check: check.name.clone(),
        instance: instance.id.clone(),
        critical: check.critical,
        passed,
        detail,
        elapsed_ms: started.elapsed().as_millis() as u64,
    }
}

struct HttpExpectation<'a> {
    status: u16,
    body_contains: Option<&'a str>,
    /// Pointer and expected value as JSON text.
    json: Option<(&'a str, &'a str)>,
}

async fn http_check(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    limit: Duration,
    expect: &HttpExpectation<'_>,
) -> Result<String, String> {
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|_| format!("invalid method {method:?}"))?;
    let resp = http
        .request(method.clone(), url)
        .timeout(limit)
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                format!("{method} timed out after {}ms", limit.as_millis())
            } else {
                format!("{method} failed: {e}")
            }
        })?;
    let status = resp.status().as_u16();
    let body = read_bounded(resp, MAX_BODY_BYTES)
        .await
        .map_err(|e| format!("HTTP {status}, {e}"))?;
    let excerpt: String = body.chars().take(BODY_DETAIL_CHARS).collect();
    if status != expect.status {
        return Err(format!(
            "HTTP {status}, expected {}: {excerpt:?}",
            expect.status
        ));
    }
    if let Some(needle) = expect.body_contains {
        if !body.contains(needle) {
            return Err(format!("body does not contain {needle:?}: {excerpt:?}"));
        }
    }
    if let Some((pointer, equals)) = expect.json {
        let doc: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| format!("body is not JSON ({e}): {excerpt:?}"))?;
        let want: serde_json::Value =
            serde_json::from_str(equals).map_err(|e| format!("expected value: {e}"))?;
        match doc.pointer(pointer) {
            Some(got) if *got == want => {}
            Some(got) => return Err(format!("{pointer} is {got}, expected {want}")),
            None => return Err(format!("{pointer} is missing from the body")),
        }
    }
    Ok(format!("HTTP {status}"))
}

async fn command_check(argv: &[String], base: &str, limit: Duration) -> Result<String, String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("empty command".to_owned());
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        .env("GANTRY_SMOKE_URL", base)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| format!("{program} did not finish within {}ms", limit.as_millis()))?
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        return Ok("exit status 0".to_owned());
    }
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    if text.trim().is_empty() {
        text = String::from_utf8_lossy(&out.stdout).into_owned();
    }
    let text = text.trim();
    let start = text.len().saturating_sub(COMMAND_DETAIL_BYTES);
    let tail = text.get(start..).unwrap_or(text);
    Err(format!("{program} failed ({}): {tail}", out.status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A one-shot HTTP server (a release's instance) that answers `head`
    /// then `body_len` bytes of `x`.
    async fn instance(head: &'static str, body_len: usize) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("{head}Content-Length: {body_len}\r\n\r\n").as_bytes())
                    .await;
                let chunk = vec![b'x'; 64 * 1024];
                let mut left = body_len;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if s.write_all(&chunk[..n]).await.is_err() {
                        break;
                    }
                    left -= n;
                }
            }
        });
        format!("http://{addr}")
    }

    fn client() -> reqwest::Client {
        crate::probe::http_client()
    }

    fn expect_ok() -> HttpExpectation<'static> {
        HttpExpectation {
            status: 200,
            body_contains: Some("x"),
            json: None,
        }
    }

    #[tokio::test]
    async fn a_release_cannot_make_a_smoke_check_read_an_endless_body() {
        let url = instance("HTTP/1.1 200 OK\r\n", 64 << 20).await;
        let err = http_check(
            &client(),
            "GET",
            &url,
            Duration::from_secs(10),
            &expect_ok(),
        )
        .await
        .unwrap_err();
        assert!(err.contains("body is larger than 1024 KiB"), "{err}");
        // A body within the bound is read and judged.
        let url = instance("HTTP/1.1 200 OK\r\n", 1000).await;
        http_check(
            &client(),
            "GET",
            &url,
            Duration::from_secs(10),
            &expect_ok(),
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_redirect_is_an_answer_not_followed() {
        let target = instance("HTTP/1.1 200 OK\r\n", 10).await;
        let head: &'static str = Box::leak(
            format!("HTTP/1.1 302 Found\r\nLocation: {target}/elsewhere\r\n").into_boxed_str(),
        );
        let url = instance(head, 0).await;
        let err = http_check(
            &client(),
            "GET",
            &url,
            Duration::from_secs(10),
            &expect_ok(),
        )
        .await
        .unwrap_err();
        assert!(err.starts_with("HTTP 302, expected 200"), "{err}");
    }

    #[tokio::test]
    async fn the_suite_really_runs_its_checks_against_the_instance() {
        let url = instance("HTTP/1.1 200 OK\r\n", 10).await;
        let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
        let instances = [InstanceRef {
            id: "i1".into(),
            port,
            host: None,
        }];
        let settings = SmokeSettings {
            checks: vec![SmokeCheck {
                name: "home".into(),
                critical: true,
                timeout_ms: 10_000,
                probe: SmokeProbe::Http {
                    method: "GET".into(),
                    path: "/".into(),
                    expect_status: 200,
                    body_contains: Some("x".into()),
                    json_pointer: None,
                    json_equals: None,
                },
            }],
            timeout_ms: 10_000,
            max_noncritical_failure_ratio: 0.1,
        };
        let results = run_suite(&client(), &settings, &instances).await;
        assert_eq!(results.len(), 1);
        assert!(results[0].passed, "{:?}", results[0]);
    }
}
