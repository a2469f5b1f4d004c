//! Calling the operator's hooks at the rollout's points: a program (its
//! argument vector, no shell, a cleared environment) or a signed HTTP POST,
//! each bounded in time and in what is read back. The machine decides what
//! the answers mean (`gantry_core::machine::hooks`).

use gantry_config::{Credential, HookConfig};
use gantry_core::machine::hooks::{Hook, HookAnswer, HookCall, HookOutcome, HookPoint};
use gantry_core::Deployment;
use std::time::{Duration, Instant};

/// Exit status that holds the rollout (sysexits' EX_TEMPFAIL: "try again later").
pub const HOLD_EXIT: i32 = 75;
/// HTTP status that holds the rollout (423 Locked).
pub const HOLD_STATUS: u16 = 423;
/// The most of a hook's output or answer kept for the log.
const DETAIL_BYTES: usize = 512;
/// The most of an HTTP answer read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// What a hook is told: the deployment and the point, as JSON (the HTTP
/// body) and as environment variables (a program's).
#[derive(Debug, serde::Serialize)]
struct HookRequest<'a> {
    point: &'a str,
    deployment: i64,
    env: &'a str,
    version: String,
    previous_version: Option<String>,
    requested_by: &'a str,
}

/// Calls every hook of `point` at once and gathers their answers.
pub async fn run(
    d: &Deployment,
    point: HookPoint,
    configured: &[HookConfig],
    http: &reqwest::Client,
) -> Vec<HookOutcome> {
    // The secret comes from the running config, never from the record.
    let secret = |name: &str| {
        configured
            .iter()
            .find(|h| h.hook.name == name)
            .and_then(|h| h.secret.as_ref())
    };
    let request = HookRequest {
        point: point.as_str(),
        deployment: d.id,
        env: d.env.as_str(),
        version: d.version.to_string(),
        previous_version: d.previous_version.as_ref().map(|v| v.to_string()),
        requested_by: &d.requested_by,
    };
    let calls = d
        .settings
        .hooks
        .iter()
        .filter(|h| h.at == point)
        .map(|h| call(h, &request, secret(&h.name), http));
    futures_util::future::join_all(calls).await
}

async fn call(
    hook: &Hook,
    request: &HookRequest<'_>,
    secret: Option<&Credential>,
    http: &reqwest::Client,
) -> HookOutcome {
    let started = Instant::now();
    let limit = Duration::from_millis(hook.timeout_ms);
    let answer = match &hook.call {
        HookCall::Command { argv } => command(argv, request, limit).await,
        HookCall::Http { url } => post(url, request, secret, limit, http).await,
    };
    HookOutcome {
        hook: hook.name.clone(),
        answer,
        took_ms: started.elapsed().as_millis() as u64,
    }
}

/// The tail of `text`, trimmed, at most `DETAIL_BYTES`.
fn tail(text: &str) -> String {
    let text = text.trim();
    let mut start = text.len().saturating_sub(DETAIL_BYTES);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

async fn command(argv: &[String], r: &HookRequest<'_>, limit: Duration) -> HookAnswer {
    let Some((program, args)) = argv.split_first() else {
        return HookAnswer::Fail {
            detail: "empty command".to_owned(),
        };
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        // Nothing of the controller's environment (its tokens, its
        // database URL) reaches the hook: only what it is told.
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GANTRY_HOOK_POINT", r.point)
        .env("GANTRY_DEPLOYMENT", r.deployment.to_string())
        .env("GANTRY_ENV", r.env)
        .env("GANTRY_VERSION", &r.version)
        .env(
            "GANTRY_PREVIOUS_VERSION",
            r.previous_version.as_deref().unwrap_or(""),
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return HookAnswer::Fail {
                detail: format!("cannot run {program}: {e}"),
            }
        }
    };
    let out = match tokio::time::timeout(limit, child.wait_with_output()).await {
        Err(_) => {
            return HookAnswer::Fail {
                detail: format!("{program} did not finish within {}ms", limit.as_millis()),
            }
        }
        Ok(Err(e)) => {
            return HookAnswer::Fail {
                detail: format!("{program}: {e}"),
            }
        }
        Ok(Ok(out)) => out,
    };
    let mut said = String::from_utf8_lossy(&out.stdout).into_owned();
    if said.trim().is_empty() {
        said = String::from_utf8_lossy(&out.stderr).into_owned();
    }
    let said = tail(&said);
    match out.status.code() {
        Some(0) => HookAnswer::Pass,
        Some(HOLD_EXIT) => HookAnswer::Hold {
            detail: format!("{program} exited {HOLD_EXIT} (hold): {said}"),
        },
        _ => HookAnswer::Fail {
            detail: format!("{program} failed ({}): {said}", out.status),
        },
    }
}

async fn post(
    url: &str,
    r: &HookRequest<'_>,
    secret: Option<&Credential>,
    limit: Duration,
    http: &reqwest::Client,
) -> HookAnswer {
    let body = serde_json::to_vec(r).unwrap_or_default();
    let mut req = http
        .post(url)
        .timeout(limit)
        .header("content-type", "application/json");
    if let Some(secret) = secret {
        let key = match crate::notify::credential("the hook's secret", secret) {
            Ok(k) => k,
            Err(e) => return HookAnswer::Fail { detail: e },
        };
        let timestamp = crate::controller::now_ms() / 1000;
        req = req
            .header("x-gantry-timestamp", timestamp.to_string())
            .header(
                "x-gantry-signature",
                crate::notify::webhook_signature(key.as_bytes(), timestamp, &body),
            );
    }
    let resp = match req.body(body).send().await {
        Ok(resp) => resp,
        Err(e) if e.is_timeout() => {
            return HookAnswer::Fail {
                detail: format!("no answer within {}ms", limit.as_millis()),
            }
        }
        // Without the URL: it may carry a token in its query.
        Err(e) => {
            return HookAnswer::Fail {
                detail: format!("cannot reach the hook: {}", e.without_url()),
            }
        }
    };
    let status = resp.status().as_u16();
    let text = match crate::smoke::read_bounded(resp, MAX_ANSWER_BYTES).await {
        Ok(t) => tail(&t),
        Err(e) => e,
    };
    match status {
        200..=299 => HookAnswer::Pass,
        HOLD_STATUS => HookAnswer::Hold {
            detail: format!("HTTP {status} (hold): {text}"),
        },
        _ => HookAnswer::Fail {
            detail: format!("HTTP {status}: {text}"),
        },
    }
}
