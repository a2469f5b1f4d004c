//! `gantry demo`: the whole loop on this machine, for real. A temporary data
//! directory, a real controller process, three releases of the sample
//! service through the four environments, one release caught failing its
//! health check and rolled back by itself, and a timed manual rollback
//! measured at the router. Prints a summary and exits 0 only if every step
//! behaved as expected.

use crate::client::{self, Client};
use crate::exit_code::ExitCode;
use crate::term::{errln, outln};
use anyhow::{bail, ensure, Context, Result};
use gantry_api::{
    DeployRequest, ListQuery, NewToken, NewUser, RollbackRequest, ShutdownRequest, VerdictRequest,
};
use gantry_core::{Deployment, Phase};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const ENVIRONMENTS: [&str; 4] = ["development", "integration", "staging", "production"];

/// One line of the summary table.
pub(crate) struct Row {
    pub(crate) what: String,
    pub(crate) outcome: String,
    pub(crate) seconds: f64,
}

pub async fn run(keep: bool) -> crate::exit_code::Exit {
    let tmp = tempfile::Builder::new().prefix("gantry-demo-").tempdir()?;
    let dir = tmp.path().to_owned();
    outln!("gantry demo: data directory {}", dir.display());
    let config = dir.join("gantry.toml");
    std::fs::write(&config, local_config()?)?;
    let server = start_controller(&dir, &config).await?;
    let result = scenario(&dir).await;
    // Stop everything the demo started, whatever happened.
    stop_controller(&dir, server).await;
    if keep {
        let kept = tmp.keep();
        outln!("kept {}", kept.display());
    }
    Ok(report(result))
}

/// Stops the controller and every instance and router it runs.
pub(crate) async fn stop_controller(dir: &Path, mut server: tokio::process::Child) {
    if let Ok(c) = client::connect(&dir.join("data"), None) {
        let _ = c
            .shutdown(&ShutdownRequest {
                stop_workloads: true,
            })
            .await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), server.wait()).await;
    let _ = server.start_kill();
}

/// Prints the summary table of a passed demo, or why it failed.
pub(crate) fn report(result: Result<Vec<Row>>) -> ExitCode {
    match result {
        Ok(rows) => {
            outln!("\nsummary");
            outln!("{:<48} {:<28} {:>8}", "STEP", "OUTCOME", "SECONDS");
            for r in &rows {
                outln!("{:<48} {:<28} {:>8.2}", r.what, r.outcome, r.seconds);
            }
            outln!("\ndemo passed");
            ExitCode::Success
        }
        Err(e) => {
            errln!("demo failed: {e:#}");
            ExitCode::Error
        }
    }
}

/// A free port for an environment's router, below the kernel's ephemeral
/// range (32768 and up on Linux): a port the kernel hands out for `:0` or
/// for an outgoing connection can be taken again before the router binds
/// it, and the demo runs beside busy test suites.
pub(crate) fn free_port() -> Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    for _ in 0..200 {
        let n = seed.wrapping_add(NEXT.fetch_add(7919, Ordering::Relaxed));
        let port = 20_000 + (n % 10_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port between 20000 and 29999 on 127.0.0.1")
}

/// The sample service (its release carries the gantry binary) and its health check.
pub(crate) const SERVICE: &str = r#"[service]
name = "sample"
command = "bin/gantry"
args = ["sample-service", "--port", "{port}", "--settings", "sample.json"]

[health]
path = "/healthz"
interval = "200ms"
timeout = "500ms"
failure_threshold = 3
start_timeout = "5s"
"#;

/// The four environments on this machine.
fn local_config() -> Result<String> {
    let mut config = String::from(SERVICE);
    for env in ENVIRONMENTS {
        let (instances, bake) = match env {
            "production" => (2, "1s"),
            "staging" => (2, "0s"),
            _ => (1, "500ms"),
        };
        config.push_str(&format!(
            "\n[environments.{env}]\nlisten = \"127.0.0.1:{}\"\ninstances = {instances}\nbake = \"{bake}\"\n",
            free_port()?
        ));
        if env == "production" {
            // Production changes need an approver who is not the requester.
            config.push_str("approval = { required = 1, lead_time = \"0s\" }\n");
            // The standards watch a full rollout 30 minutes; the demo, a few seconds.
            config.push_str("watch = \"3s\"\n");
            config.push_str(
                "strategy = \"canary\"\ncanary = { steps = [{ weight = 10, pause = \"10s\" }, { weight = 50, pause = \"3s\" }, { weight = 100 }], interval = \"200ms\", max_wait = \"20s\", promotion_tolerance = 0.05 }\n",
            );
        }
        if env == "staging" {
            // A rolling update, smoke-checked before its first batch takes traffic.
            // Optional on the promotion path, so that the faulty 1.3.0 can go from
            // integration to production and be caught there by live analysis.
            config.push_str(
                "optional = true\nstrategy = \"rolling\"\nrolling = { max_surge = 1, max_unavailable = 0 }\n\n[environments.staging.smoke]\ntimeout = \"30s\"\n\n[[environments.staging.smoke.checks]]\nname = \"home\"\npath = \"/\"\nbody_contains = \"hello from\"\n",
            );
        }
    }
    Ok(config)
}

/// Starts `gantry server` on `config` with its data directory in `dir/data`
/// and its log in `dir/controller.log`, and waits until it serves.
pub(crate) async fn start_controller(
    dir: &Path,
    config_path: &Path,
) -> Result<tokio::process::Child> {
    let exe = std::env::current_exe()?;
    let data = dir.join("data");
    let log = std::fs::File::create(dir.join("controller.log"))?;
    let child = tokio::process::Command::new(&exe)
        .arg("--data-dir")
        .arg(&data)
        .args(["server", "--listen", "127.0.0.1:0", "--config"])
        .arg(config_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the controller")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !data.join(gantry_server::SERVER_FILE).exists() {
        if Instant::now() > deadline {
            bail!(
                "controller did not start; see {}",
                dir.join("controller.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    outln!(
        "controller started (log: {})",
        dir.join("controller.log").display()
    );
    Ok(child)
}

/// A release tarball of the sample service: the gantry binary and its settings.
pub(crate) fn build_artifact(dir: &Path, version: &str, settings: Value) -> Result<PathBuf> {
    let path = dir.join(format!("sample-{version}.tar.gz"));
    let file = std::fs::File::create(&path)?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    // Gantry refuses sparse entries; a freshly linked binary may have holes.
    tar.sparse(false);
    let exe = std::env::current_exe()?;
    tar.append_path_with_name(&exe, "bin/gantry")?;
    let json = serde_json::to_vec_pretty(&settings)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(json.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, "sample.json", json.as_slice())?;
    tar.into_inner()?.finish()?.flush()?;
    Ok(path)
}

pub(crate) fn git_head() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let sha = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && sha.len() == 40).then_some(sha)
}

/// Deploys and waits for the outcome; a deployment that waits for approval
/// is approved by `approver` (someone other than the requester), and one
/// still running after `within` is an error.
pub(crate) async fn deploy(
    c: &Client,
    approver: &Client,
    env: &str,
    version: &str,
    within: Duration,
) -> Result<Deployment> {
    let d = c
        .deploy(&DeployRequest {
            env: env.to_owned(),
            version: version.to_owned(),
            ..DeployRequest::default()
        })
        .await?;
    let id = d.id;
    if wait_started(c, id).await? {
        let comment = "reviewed in the demo".to_owned();
        let v = approver.approve(id, &VerdictRequest { comment }).await?;
        outln!(
            "  {env:<12} deployment {id} awaited approval; approved by {}",
            v.by
        );
    }
    wait_finished(c, id, within).await
}

/// Whether the deployment waits for approval (true) or has started (false).
async fn wait_started(c: &Client, id: i64) -> Result<bool> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c.deployment(id).await?.deployment.phase {
            Phase::AwaitingApproval => return Ok(true),
            Phase::Preparing if Instant::now() < deadline => {}
            _ => return Ok(false),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub(crate) async fn wait_finished(c: &Client, id: i64, within: Duration) -> Result<Deployment> {
    let deadline = Instant::now() + within;
    loop {
        let d = c.deployment(id).await?.deployment;
        if d.phase.is_terminal() {
            return Ok(d);
        }
        ensure!(
            Instant::now() < deadline,
            "deployment {id} did not finish within {}s",
            within.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub(crate) fn took(d: &Deployment) -> f64 {
    d.finished_at
        .map_or(0.0, |f| (f - d.created_at) as f64 / 1000.0)
}

/// A serde enum's word (`rolled_back`, `error_rate`), as the API spells it.
pub(crate) fn word(v: &impl serde::Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        _ => "?".to_owned(),
    }
}

/// How long one deployment of the local demo may take.
const DEPLOY_WITHIN: Duration = Duration::from_secs(60);

async fn scenario(dir: &Path) -> Result<Vec<Row>> {
    let data = dir.join("data");
    let c = client::connect(&data, None)?;
    let mut rows = Vec::new();
    let sha = git_head();

    outln!("\n== an approver for production (the requester may not approve their own change)");
    c.create_user(&NewUser {
        name: "avery".into(),
        roles: vec!["approver".into()],
    })
    .await?;
    let avery = NewToken {
        user: "avery".into(),
        label: None,
        expires_in: Some("1h".into()),
    };
    let issued = c.create_token(&avery).await?;
    let enrolment = c.as_holder_of(issued.token);
    // A token the admin minted may not give verdicts: avery mints her own
    // with it (which revokes it), so nobody else holds what she approves with.
    let own = enrolment.create_token(&avery).await?;
    let approver = c.as_holder_of(own.token);
    outln!("  user avery (approver) with a token she minted herself, expiring in an hour");

    outln!("\n== registering four releases of the sample service");
    let releases = [
        ("1.0.0", json!({"version": "1.0.0"})),
        ("1.1.0", json!({"version": "1.1.0"})),
        ("1.2.0", json!({"version": "1.2.0", "unhealthy": true})),
        ("1.3.0", json!({"version": "1.3.0", "error_rate": 0.05})),
    ];
    let mut load: Option<Load> = None;
    for (version, settings) in releases {
        let artifact = build_artifact(dir, version, settings)?;
        let bytes = std::fs::read(&artifact)?;
        let r = c
            .put_release(version, bytes, sha.as_deref(), None, None)
            .await?;
        let digest = r.digest.to_string();
        outln!(
            "  {version}: sha256 {} ({} bytes)",
            &digest[..digest.len().min(16)],
            r.size
        );
    }

    for version in ["1.0.0", "1.1.0"] {
        outln!("\n== deploying {version} through the environments");
        for env in ENVIRONMENTS {
            let d = deploy(&c, &approver, env, version, DEPLOY_WITHIN).await?;
            let phase = d.phase.as_str();
            outln!(
                "  {env:<12} {phase} in {:.2}s (deployment {})",
                took(&d),
                d.id
            );
            ensure!(
                d.phase == Phase::Succeeded,
                "deploying {version} to {env} ended {phase}: {}",
                d.reason.as_deref().unwrap_or("")
            );
            rows.push(Row {
                what: format!("deploy {version} to {env}"),
                outcome: "succeeded".into(),
                seconds: took(&d),
            });
            if env == "production" && load.is_none() {
                let prod = env_listen(&c, "production").await?;
                outln!("  (user traffic to production starts now: ~200 requests/s, bounded to 2 minutes)");
                load = Some(Load::start(
                    vec![format!("http://{prod}/")],
                    "error from 1.3.0".into(),
                    Duration::from_secs(120),
                ));
            }
        }
    }

    outln!("\n== deploying 1.2.0, whose health check fails, to development");
    let d = deploy(&c, &approver, "development", "1.2.0", DEPLOY_WITHIN).await?;
    let phase = d.phase.as_str();
    let reason = d.reason.as_deref().unwrap_or("");
    outln!("  {phase} in {:.2}s: {reason}", took(&d));
    ensure!(
        d.phase == Phase::RolledBack,
        "the unhealthy release was not rolled back (phase {phase})"
    );
    let failed_id = d.id;
    rows.push(Row {
        what: "deploy 1.2.0 (unhealthy) to development".into(),
        outcome: "rolled back by itself".into(),
        seconds: took(&d),
    });
    let status = c.status().await?;
    let serves = |env: &str| {
        status
            .environments
            .iter()
            .find(|e| e.name == env)
            .and_then(|e| e.version.clone())
            .unwrap_or_else(|| "nothing".to_owned())
    };
    let dev = serves("development");
    ensure!(
        dev == "1.1.0",
        "development should still run 1.1.0, runs {dev}"
    );
    outln!("  development still serves {dev}");

    outln!("\n== 1.3.0, which fails 5% of requests, on its promotion path (staging is optional)");
    for env in ["development", "integration"] {
        let d = deploy(&c, &approver, env, "1.3.0", DEPLOY_WITHIN).await?;
        let phase = d.phase.as_str();
        outln!(
            "  {env:<12} {phase} in {:.2}s (no analysis there: blue-green)",
            took(&d)
        );
        ensure!(
            d.phase == Phase::Succeeded,
            "deploying 1.3.0 to {env} ended {phase}: {}",
            d.reason.as_deref().unwrap_or("")
        );
    }
    outln!("\n== deploying 1.3.0 to production as a canary under load");
    let d = deploy(&c, &approver, "production", "1.3.0", DEPLOY_WITHIN).await?;
    let phase = d.phase.as_str();
    let reason = d.reason.as_deref().unwrap_or("");
    outln!("  {phase} in {:.2}s: {reason}", took(&d));
    ensure!(
        d.phase == Phase::RolledBack,
        "the faulty canary was not rolled back (phase {phase})"
    );
    ensure!(
        reason.starts_with("canary analysis at"),
        "rolled back for another reason than analysis: {reason}"
    );
    let canary = d.canary.as_ref();
    for r in canary
        .and_then(|c| c.last.as_ref())
        .map_or(&[][..], |a| &a.reports)
    {
        outln!(
            "    {:<15} {:<14} observed {:>6.2}% ({} of {}) vs {:>6.2}%  {}",
            word(&r.status),
            word(&r.rule),
            r.observed * 100.0,
            r.events,
            r.samples,
            r.threshold * 100.0,
            r.description
        );
    }
    rows.push(Row {
        what: "deploy 1.3.0 (5% errors) to production".into(),
        outcome: format!("caught at {}% by analysis", canary.map_or(0, |c| c.weight)),
        seconds: took(&d),
    });

    outln!("\n== rolling production back from 1.1.0 to 1.0.0, timed at the router");
    let listen = env_listen(&c, "production").await?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let body = http
        .get(format!("http://{listen}/"))
        .send()
        .await?
        .text()
        .await?;
    ensure!(
        body.contains("1.1.0"),
        "production should serve 1.1.0 before the rollback, got {body:?}"
    );
    let started = Instant::now();
    let id = roll_back(&c, "production").await?;
    // Serving "all traffic" = 20 consecutive answers from 1.0.0.
    let mut streak = 0;
    while streak < 20 {
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "production never returned to 1.0.0"
        );
        match http.get(format!("http://{listen}/")).send().await {
            Ok(resp) if resp.status().is_success() => {
                let text = resp.text().await.unwrap_or_default();
                streak = if text.contains("1.0.0") {
                    streak + 1
                } else {
                    0
                };
            }
            _ => streak = 0,
        }
    }
    let serving = started.elapsed().as_secs_f64();
    let d = wait_finished(&c, id, DEPLOY_WITHIN).await?;
    ensure!(
        d.phase == Phase::Succeeded,
        "rollback ended {}",
        d.phase.as_str()
    );
    outln!("  1.0.0 served all traffic {serving:.2}s after the rollback was requested; the rollback finished in {:.2}s", took(&d));
    rows.push(Row {
        what: "rollback production to 1.0.0 (router serves)".into(),
        outcome: "succeeded".into(),
        seconds: serving,
    });

    if let Some(load) = load.take() {
        let (ok, canary_errors, other_failures) = load.finish().await;
        outln!(
            "\n== user traffic to production: {ok} answered, {canary_errors} errors from the faulty 1.3.0 canary, {other_failures} other failures"
        );
        ensure!(
            other_failures == 0,
            "{other_failures} user requests failed outside the faulty canary"
        );
        rows.push(Row {
            what: format!(
                "user requests during production rollouts: {}",
                ok + canary_errors
            ),
            outcome: format!("{other_failures} failed (+{canary_errors} from 1.3.0)"),
            seconds: 0.0,
        });
    }

    outln!("\n== the record");
    let verdict = c.audit_verify().await?;
    ensure!(
        verdict.ok,
        "the audit trail does not verify: {}",
        verdict.reason.as_deref().unwrap_or("no reason given")
    );
    outln!(
        "  audit trail: {} records, hash chain verified",
        verdict.records
    );
    rows.push(Row {
        what: format!("audit trail: {} records", verdict.records),
        outcome: "chain verified".into(),
        seconds: 0.0,
    });
    let all = c
        .deployments(&ListQuery {
            env: None,
            limit: Some(1000),
        })
        .await?;
    let approved = all
        .iter()
        .filter(|d| d.change.as_ref().is_some_and(|c| !c.approvals.is_empty()))
        .count();
    outln!("  {approved} production deployment(s) approved by avery; see `gantry audit list`");

    outln!("\n== deployment log of the failed release");
    for e in c.deployment_log(failed_id).await?.log {
        outln!("  {}", e.message);
    }
    Ok(rows)
}

/// Asks for `env` to return to its previous release; the rollback's id.
pub(crate) async fn roll_back(c: &Client, env: &str) -> Result<i64> {
    let r = c
        .rollback(&RollbackRequest {
            env: env.to_owned(),
            to: None,
        })
        .await?;
    Ok(r.id)
}

async fn env_listen(c: &Client, env: &str) -> Result<String> {
    c.status()
        .await?
        .environments
        .into_iter()
        .find(|e| e.name == env)
        .map(|e| e.listen)
        .with_context(|| format!("{env} has no address"))
}

/// Steady user traffic in the background, bounded in time: one request
/// every few milliseconds, round-robin over `urls` (every host's router on a
/// fleet, as an external load balancer would spread them).
pub(crate) struct Load {
    counts: std::sync::Arc<LoadCounts>,
    task: tokio::task::JoinHandle<()>,
}

/// Answers so far: successes, errors whose body carries the faulty
/// release's marker (`error from 1.3.0`), and every other failure.
#[derive(Default)]
pub(crate) struct LoadCounts {
    stop: std::sync::atomic::AtomicBool,
    ok: std::sync::atomic::AtomicU64,
    faulty: std::sync::atomic::AtomicU64,
    other: std::sync::atomic::AtomicU64,
}

impl Load {
    pub(crate) fn start(urls: Vec<String>, faulty_marker: String, bound: Duration) -> Load {
        use std::sync::atomic::Ordering;
        let counts = std::sync::Arc::new(LoadCounts::default());
        let c = counts.clone();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("static client config");
            let deadline = Instant::now() + bound;
            for url in urls.iter().cycle() {
                if c.stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                    break;
                }
                let counter = match http.get(url).send().await {
                    Ok(r) if r.status().is_success() => &c.ok,
                    Ok(r) => {
                        let body = r.text().await.unwrap_or_default();
                        if body.contains(&faulty_marker) {
                            &c.faulty
                        } else {
                            &c.other
                        }
                    }
                    Err(_) => &c.other,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
        });
        Load { counts, task }
    }

    /// (answered, errors from the faulty release, other failures) so far.
    pub(crate) fn counts(&self) -> (u64, u64, u64) {
        self.counts.snapshot()
    }

    pub(crate) async fn finish(self) -> (u64, u64, u64) {
        let Load { counts, task } = self;
        counts
            .stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        match task.await {
            Ok(()) => counts.snapshot(),
            Err(_) => (0, 0, u64::MAX),
        }
    }
}

impl LoadCounts {
    fn snapshot(&self) -> (u64, u64, u64) {
        use std::sync::atomic::Ordering;
        (
            self.ok.load(Ordering::Relaxed),
            self.faulty.load(Ordering::Relaxed),
            self.other.load(Ordering::Relaxed),
        )
    }
}
