//! `gantry demo --fleet N`: a fleet rollout end to end on lab hosts made on
//! this machine. The lab script (`scripts/fleet-lab`, carried inside the
//! binary) makes N network namespaces, each running Debian's real sshd with
//! its own host key and home; a real controller deploys to every one of them
//! over OpenSSH: host keys pinned against the fingerprints the lab printed,
//! first deploys, under load from a client spreading over every host's
//! routers a rolling update by host batches (in waves by site) on staging
//! and a canary across the fleet on production, a release that fails on one
//! host only (rolled back everywhere, that host named), and a fleet-wide
//! rollback timed until every router answers the old release. The lab is
//! torn down at the end, on failure and on Ctrl-C too.

use crate::client::{self, Client};
use crate::demo::{
    build_artifact, deploy, free_port, git_head, report, roll_back, start_controller,
    stop_controller, took, wait_finished, Load, Row, SERVICE,
};
use crate::exit_code::{Exit, ExitCode};
use crate::term::{errln, outln};
use anyhow::{anyhow, bail, ensure, Context, Result};
use gantry_core::Phase;
use serde::Deserialize;
use serde_json::json;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The lab script, carried by the binary so the demo needs no checkout.
const LAB_SCRIPT: &str = include_str!("../../../scripts/fleet-lab");

/// What a failing release's 500 answers say (the sample service's words).
const FAULTY_MARKER: &str = "error from 1.2.0";

/// One host of the lab, as `fleet-lab up` prints it.
#[derive(Debug, Deserialize)]
struct LabHost {
    name: String,
    address: IpAddr,
    port: u16,
    user: String,
    site: Option<String>,
    host_key_fingerprint: String,
    key: PathBuf,
}

#[derive(Debug, Deserialize)]
struct LabJson {
    id: String,
    hosts: Vec<LabHost>,
}

/// A lab brought up by the script; dropping it tears the lab down, so an
/// error, a panic or an interruption leaves no namespace or sshd behind.
struct Lab {
    script: tempfile::TempPath,
    id: String,
    hosts: Vec<LabHost>,
}

impl Lab {
    /// `fleet-lab up N [--sites …]`, bounded by `deadline` and by a signal:
    /// either stops the script with SIGTERM, whose trap removes what it made.
    async fn up(
        n: u16,
        sites: Option<&str>,
        deadline: Duration,
        interrupt: &Interrupt,
    ) -> Result<Lab> {
        let script = write_script()?;
        let mut cmd = tokio::process::Command::new("bash");
        cmd.arg(&script).arg("up").arg(n.to_string());
        if let Some(sites) = sites {
            cmd.arg("--sites").arg(sites);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run bash for the lab script")?;
        let pid = child.id().context("the lab script ended at once")?;
        let stdout = read_all(child.stdout.take());
        let stderr = read_all(child.stderr.take());
        let stopped = tokio::select! {
            status = child.wait() => Ok(status?),
            () = tokio::time::sleep(deadline) => Err(format!("took longer than {}s", deadline.as_secs())),
            () = interrupt.fired() => Err("was interrupted".to_owned()),
        };
        let status = match stopped {
            Ok(status) => status,
            Err(why) => {
                terminate(pid);
                let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
                // The lab's id is the script's pid: `down` is idempotent.
                down(&script, &pid.to_string());
                bail!("bringing the lab up {why}");
            }
        };
        let (stdout, stderr) = (stdout.await?, stderr.await?);
        ensure!(
            status.success(),
            "the lab did not come up ({status}): {}",
            stderr.trim()
        );
        let lab: LabJson =
            serde_json::from_str(&stdout).context("the lab script printed no lab description")?;
        Ok(Lab {
            script,
            id: lab.id,
            hosts: lab.hosts,
        })
    }

    /// `[hosts.NAME]` tables for the config, every host labelled `tier = "web"`.
    fn hosts_toml(&self) -> String {
        let q = |s: &str| serde_json::Value::from(s).to_string();
        let mut toml = String::new();
        for h in &self.hosts {
            toml.push_str(&format!(
                "\n[hosts.{}]\naddress = {}\nport = {}\nuser = {}\nkey = {{ file = {} }}\nlabels = {{ tier = \"web\" }}\n",
                h.name,
                q(&h.address.to_string()),
                h.port,
                q(&h.user),
                q(&h.key.to_string_lossy()),
            ));
            if let Some(site) = &h.site {
                toml.push_str(&format!("site = {}\n", q(site)));
            }
        }
        toml
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let started = Instant::now();
        if down(&self.script, &self.id) {
            outln!(
                "lab {} down in {:.2}s: its namespaces, sshds and every process in them are gone",
                self.id,
                started.elapsed().as_secs_f64()
            );
        } else {
            errln!(
                "tearing lab {} down failed; run `bash scripts/fleet-lab down {}` as root",
                self.id,
                self.id
            );
        }
    }
}

/// The embedded script in a private temporary file, run with `bash`.
fn write_script() -> Result<tempfile::TempPath> {
    let mut file = tempfile::Builder::new()
        .prefix("gantry-fleet-lab-")
        .tempfile()
        .context("cannot write the lab script to a temporary file")?;
    file.write_all(LAB_SCRIPT.as_bytes())?;
    Ok(file.into_temp_path())
}

/// `fleet-lab down ID`; whether it succeeded.
fn down(script: &Path, id: &str) -> bool {
    std::process::Command::new("bash")
        .arg(script)
        .args(["down", id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn terminate(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

fn read_all<R>(pipe: Option<R>) -> tokio::task::JoinHandle<String>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut s = String::new();
        if let Some(mut p) = pipe {
            let _ = tokio::io::AsyncReadExt::read_to_string(&mut p, &mut s).await;
        }
        s
    })
}

/// Ctrl-C (SIGINT) or SIGTERM, caught for the whole demo: once it is
/// installed neither signal ends the process by itself, so the demo stops
/// what it is doing and cleans up first.
#[derive(Clone)]
struct Interrupt(tokio::sync::watch::Receiver<bool>);

impl Interrupt {
    fn install() -> Result<Interrupt> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            let _ = tx.send(true);
        });
        Ok(Interrupt(rx))
    }

    /// Resolves once a signal has come (at once if one already has).
    async fn fired(&self) {
        let mut rx = self.0.clone();
        if rx.wait_for(|&fired| fired).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The effective user is root: `/proc/self` belongs to it.
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

pub async fn run(n: u16, keep: bool) -> Exit {
    if !is_root() {
        errln!("gantry demo --fleet needs root: it makes network namespaces (one per host, each with its own sshd) and installs openssh-server if it is absent");
        return Ok(ExitCode::Error);
    }
    let interrupt = Interrupt::install()?;
    let tmp = tempfile::Builder::new()
        .prefix("gantry-fleet-demo-")
        .tempdir()?;
    let dir = tmp.path().to_owned();
    outln!("gantry demo --fleet {n}: data directory {}", dir.display());
    // Two sites from four hosts up, as regions would be.
    let sites = (n >= 4).then_some("eu,us");
    let started = Instant::now();
    let lab = match Lab::up(n, sites, Duration::from_secs(20 + u64::from(n)), &interrupt).await {
        Ok(lab) => lab,
        Err(e) => {
            errln!("demo failed: {e:#}");
            return Ok(ExitCode::Error);
        }
    };
    let lab_up = Row {
        what: format!("lab up: {n} hosts (namespace, sshd, own key)"),
        outcome: "ready".into(),
        seconds: started.elapsed().as_secs_f64(),
    };
    outln!(
        "lab {} up in {:.2}s (network namespaces on a private bridge, one sshd each):",
        lab.id,
        lab_up.seconds
    );
    for h in &lab.hosts {
        outln!(
            "  {:<4} {:<15} site {:<4} {}",
            h.name,
            h.address,
            h.site.as_deref().unwrap_or("-"),
            h.host_key_fingerprint
        );
    }
    let result = run_in_lab(&dir, &lab, &interrupt).await;
    let started = Instant::now();
    drop(lab);
    let lab_down = Row {
        what: "lab down".into(),
        outcome: "nothing left".into(),
        seconds: started.elapsed().as_secs_f64(),
    };
    if keep {
        let kept = tmp.keep();
        outln!("kept {}", kept.display());
    }
    Ok(report(result.map(|rows| {
        std::iter::once(lab_up)
            .chain(rows)
            .chain([lab_down])
            .collect()
    })))
}

/// The controller's whole life in the lab, bounded in time and by a signal.
async fn run_in_lab(dir: &Path, lab: &Lab, interrupt: &Interrupt) -> Result<Vec<Row>> {
    let ports = Ports {
        staging: free_port()?,
        production: free_port()?,
    };
    let config = dir.join("gantry.toml");
    std::fs::write(&config, fleet_config(lab, ports.staging, ports.production))?;
    let server = tokio::select! {
        s = start_controller(dir, &config) => s?,
        () = interrupt.fired() => bail!("interrupted"),
    };
    let hosts = lab.hosts.len() as u64;
    let bound = Duration::from_secs(150 + 4 * hosts);
    let result = tokio::select! {
        r = tokio::time::timeout(bound, scenario(dir, &config, lab, ports)) => {
            r.unwrap_or_else(|_| Err(anyhow!("the scenario took longer than {}s", bound.as_secs())))
        }
        () = interrupt.fired() => Err(anyhow!("interrupted")),
    };
    stop_controller(dir, server).await;
    result
}

/// Two environments on every lab host, one instance each, each host's
/// routers on its own address: staging (optional on the promotion path)
/// rolls by host batches, in waves by site when the hosts have sites;
/// production is a canary whose steps set the weight on every host's router
/// at once.
fn fleet_config(lab: &Lab, staging: u16, production: u16) -> String {
    let batches = if lab.hosts.len() >= 2 {
        r#"[1, "50%", "100%"]"#
    } else {
        r#"["100%"]"#
    };
    let waves = if lab.hosts.iter().all(|h| h.site.is_some()) {
        r#", waves = ["eu", "us"]"#
    } else {
        ""
    };
    format!(
        r#"{SERVICE}
[ssh]
connect_timeout = "5s"

[environments.staging]
listen = "0.0.0.0:{staging}"
instances = 1
bake = "500ms"
optional = true
hosts = [{{ labels = {{ tier = "web" }} }}]
strategy = "rolling"
fleet = {{ batches = {batches}{waves} }}

[environments.production]
listen = "0.0.0.0:{production}"
instances = 1
bake = "1s"
hosts = [{{ labels = {{ tier = "web" }} }}]
strategy = "canary"
canary = {{ steps = [{{ weight = 10, pause = "3s" }}, {{ weight = 50, pause = "2s" }}, {{ weight = 100 }}], interval = "250ms", max_wait = "20s", promotion_tolerance = 0.1 }}
{}"#,
        lab.hosts_toml()
    )
}

/// Whether `reason` names `host` as a word ("h1" is not named by "h12").
fn names_host(reason: &str, host: &str) -> bool {
    reason
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_')
        .any(|w| w == host)
}

/// What each host's router answers on `/`, host by host.
async fn answers(http: &reqwest::Client, lab: &Lab, port: u16) -> Vec<String> {
    let asks = lab.hosts.iter().map(|h| async move {
        match http
            .get(format!("http://{}:{port}/", h.address))
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            Ok(r) => format!(
                "{} {}",
                r.status().as_u16(),
                r.text().await.unwrap_or_default().trim()
            ),
            Err(e) => format!("unreachable: {e}"),
        }
    });
    futures_util::future::join_all(asks).await
}

/// Polls every host's router until each has answered `version` `streak`
/// times in a row; how long that took.
async fn until_all_serve(
    http: &reqwest::Client,
    lab: &Lab,
    port: u16,
    version: &str,
    streak: u32,
    within: Duration,
) -> Result<Duration> {
    let started = Instant::now();
    let want = format!("200 hello from {version}");
    let mut runs = vec![0u32; lab.hosts.len()];
    while runs.iter().any(|&r| r < streak) {
        let now = answers(http, lab, port).await;
        for (run, answer) in runs.iter_mut().zip(&now) {
            *run = if *answer == want { *run + 1 } else { 0 };
        }
        if started.elapsed() > within {
            let late: Vec<String> = lab
                .hosts
                .iter()
                .zip(&now)
                .filter(|(_, a)| **a != want)
                .map(|(h, a)| format!("{}: {a}", h.name))
                .collect();
            bail!(
                "not every host's router answered {version} within {}s: {}",
                within.as_secs(),
                late.join("; ")
            );
        }
    }
    Ok(started.elapsed())
}

/// Runs this binary's `hosts trust`, pinning only keys whose fingerprints
/// match those the lab printed (known out of band, as an operator's
/// inventory would): no trust on first use.
fn pin_host_keys(data: &Path, config: &Path, lab: &Lab) -> Result<()> {
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("--data-dir")
        .arg(data)
        .args(["hosts", "trust", "--config"])
        .arg(config);
    for h in &lab.hosts {
        cmd.arg("--expect").arg(&h.host_key_fingerprint);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .context("cannot run `gantry hosts trust`")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "`gantry hosts trust` failed: {}{}",
        stdout.trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    for line in stdout.lines() {
        outln!("  {line}");
    }
    Ok(())
}

/// Each environment's router port (the same on every host).
#[derive(Clone, Copy)]
struct Ports {
    staging: u16,
    production: u16,
}

async fn scenario(dir: &Path, config: &Path, lab: &Lab, ports: Ports) -> Result<Vec<Row>> {
    let port = ports.production;
    let data = dir.join("data");
    let c = client::connect(&data, None)?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let n = lab.hosts.len();
    // Generous for 50 hosts: the first deploy uploads the binary and a release to each.
    let within = Duration::from_secs(60 + 2 * n as u64);
    let mut rows = Vec::new();

    outln!(
        "\n== pinning the hosts' SSH keys: only those matching the fingerprints the lab printed"
    );
    let started = Instant::now();
    pin_host_keys(&data, config, lab)?;
    rows.push(Row {
        what: format!("pin {n} host keys (gantry hosts trust --expect)"),
        outcome: "pinned".into(),
        seconds: started.elapsed().as_secs_f64(),
    });

    // The last host is the one a faulty release fails on.
    let bad = &lab.hosts[n - 1].name;
    outln!("\n== registering three releases of the sample service");
    let releases = [
        ("1.0.0", json!({"version": "1.0.0"})),
        ("1.1.0", json!({"version": "1.1.0"})),
        (
            "1.2.0",
            json!({"version": "1.2.0", "error_rate": 0.3, "errors_where_home_contains": format!("/{bad}/")}),
        ),
    ];
    let sha = git_head();
    for (version, settings) in releases {
        let artifact = build_artifact(dir, version, settings)?;
        let r = c
            .put_release(
                version,
                std::fs::read(&artifact)?,
                sha.as_deref(),
                None,
                None,
            )
            .await?;
        let digest = r.digest.to_string();
        outln!(
            "  {version}: sha256 {} ({} bytes)",
            &digest[..digest.len().min(16)],
            r.size
        );
    }

    outln!("\n== deploying 1.0.0 to production on all {n} hosts (first deploy: each host gets the gantry binary and the release over SSH)");
    let d = deploy_ok(&c, "production", "1.0.0", within).await?;
    for h in &lab.hosts {
        ensure!(
            d.new_instances
                .iter()
                .any(|i| i.host.as_deref() == Some(h.name.as_str())),
            "no instance of 1.0.0 on {}: {:?}",
            h.name,
            d.new_instances
        );
    }
    until_all_serve(&http, lab, port, "1.0.0", 1, Duration::from_secs(10)).await?;
    outln!(
        "  succeeded in {:.2}s; every host's router answers 1.0.0 on :{port}",
        took(&d)
    );
    rows.push(Row {
        what: format!("deploy 1.0.0 to production, {n} hosts (first)"),
        outcome: "succeeded".into(),
        seconds: took(&d),
    });

    outln!("\n== deploying 1.0.0 to staging on all {n} hosts (each host has the release already)");
    let d = deploy_ok(&c, "staging", "1.0.0", within).await?;
    until_all_serve(
        &http,
        lab,
        ports.staging,
        "1.0.0",
        1,
        Duration::from_secs(10),
    )
    .await?;
    outln!("  succeeded in {:.2}s", took(&d));
    rows.push(Row {
        what: format!("deploy 1.0.0 to staging, {n} hosts (first)"),
        outcome: "succeeded".into(),
        seconds: took(&d),
    });

    outln!("  (user traffic starts now: one client spreading requests over every host's routers, staging and production)");
    let urls = [ports.staging, ports.production]
        .into_iter()
        .flat_map(|p| {
            lab.hosts
                .iter()
                .map(move |h| format!("http://{}:{p}/", h.address))
        })
        .collect();
    let load = Load::start(
        urls,
        FAULTY_MARKER.into(),
        2 * within + Duration::from_secs(60),
    );
    let warm = Instant::now();
    while load.counts().0 < 5 * n as u64 {
        ensure!(
            warm.elapsed() < Duration::from_secs(10),
            "the client got no answers: {:?}",
            load.counts()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    outln!("\n== deploying 1.1.0 to staging, rolling by host batches, under load");
    let before = load.counts();
    let d = deploy_ok(&c, "staging", "1.1.0", within).await?;
    until_all_serve(
        &http,
        lab,
        ports.staging,
        "1.1.0",
        1,
        Duration::from_secs(10),
    )
    .await?;
    let failed = load.counts().2 - before.2;
    let mut batches = 0;
    for e in c.deployment_log(d.id).await?.log {
        if e.message.starts_with("wave ") || e.message.starts_with("rolling update complete") {
            batches += usize::from(e.message.contains(": batch "));
            outln!("  {}", e.message);
        }
    }
    outln!(
        "  succeeded in {:.2}s; {failed} user requests failed meanwhile",
        took(&d)
    );
    ensure!(batches > 0, "the rolling update logged no host batch");
    ensure!(
        failed == 0,
        "{failed} user requests failed during the rolling update"
    );
    rows.push(Row {
        what: format!("rolling 1.1.0 to staging: {batches} host batches"),
        outcome: "succeeded; 0 failed".into(),
        seconds: took(&d),
    });

    outln!("\n== deploying 1.1.0 to production as a canary across the fleet, under load");
    let before = load.counts();
    let d = deploy_ok(&c, "production", "1.1.0", within).await?;
    until_all_serve(&http, lab, port, "1.1.0", 1, Duration::from_secs(10)).await?;
    let after = load.counts();
    let (answered, failed) = (after.0 - before.0, after.2 - before.2);
    let judged: u64 = d
        .canary
        .as_ref()
        .map_or(0, |k| k.windows.iter().map(|w| w.canary.requests).sum());
    outln!(
        "  promoted in {:.2}s: 10% → 50% → 100% on all {n} routers at each step; the analysis judged {judged} canary requests summed over the hosts",
        took(&d)
    );
    outln!("  {answered} user requests answered during the rollout, {failed} failed");
    ensure!(
        failed == 0,
        "{failed} user requests failed during the 1.1.0 canary"
    );
    rows.push(Row {
        what: format!("canary 1.1.0 to production, {n} hosts"),
        outcome: format!("promoted; 0 of {answered} failed"),
        seconds: took(&d),
    });

    outln!("\n== deploying 1.2.0, which fails 30% of requests on {bad} only");
    let d = deploy(&c, &c, "production", "1.2.0", within).await?;
    let reason = d.reason.as_deref().unwrap_or("");
    outln!("  {} in {:.2}s: {reason}", d.phase.as_str(), took(&d));
    ensure!(
        d.phase == Phase::RolledBack,
        "the release bad on {bad} was not rolled back (phase {})",
        d.phase.as_str()
    );
    ensure!(
        names_host(reason, bad),
        "the verdict does not name {bad}: {reason}"
    );
    until_all_serve(&http, lab, port, "1.1.0", 1, Duration::from_secs(10)).await?;
    outln!("  every host's router serves 1.1.0 again");
    rows.push(Row {
        what: format!("canary 1.2.0 (bad on {bad} only)"),
        outcome: format!("rolled back, {bad} named"),
        seconds: took(&d),
    });

    outln!("\n== rolling the fleet back from 1.1.0 to 1.0.0, timed at every host's router");
    let started = Instant::now();
    let id = roll_back(&c, "production").await?;
    // Served fleet-wide = every router answered 1.0.0 five times in a row.
    until_all_serve(&http, lab, port, "1.0.0", 5, within).await?;
    let serving = started.elapsed().as_secs_f64();
    let d = wait_finished(&c, id, within).await?;
    ensure!(
        d.phase == Phase::Succeeded,
        "the rollback ended {}: {}",
        d.phase.as_str(),
        d.reason.as_deref().unwrap_or("")
    );
    outln!(
        "  every host's router answered 1.0.0 {serving:.2}s after the rollback was requested; the rollback finished in {:.2}s",
        took(&d)
    );
    rows.push(Row {
        what: format!("fleet-wide rollback to 1.0.0 ({n} routers serve)"),
        outcome: "succeeded".into(),
        seconds: serving,
    });

    let (ok, faulty, other) = load.finish().await;
    outln!(
        "\n== user traffic over {n} hosts' routers: {ok} answered, {faulty} errors from 1.2.0's canary on {bad}, {other} other failures"
    );
    ensure!(
        other == 0,
        "{other} user requests failed outside the faulty canary"
    );
    rows.push(Row {
        what: format!("user requests across {} routers: {}", 2 * n, ok + faulty),
        outcome: format!("{other} failed (+{faulty} from 1.2.0)"),
        seconds: 0.0,
    });
    Ok(rows)
}

/// Deploys `version` to `env`, which must succeed (no approval is
/// configured, so the requester is never asked to approve).
async fn deploy_ok(
    c: &Client,
    env: &str,
    version: &str,
    within: Duration,
) -> Result<gantry_core::Deployment> {
    let d = deploy(c, c, env, version, within).await?;
    ensure!(
        d.phase == Phase::Succeeded,
        "deploying {version} to {env} ended {}: {}",
        d.phase.as_str(),
        d.reason.as_deref().unwrap_or("")
    );
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::names_host;

    #[test]
    fn a_host_is_named_only_as_a_whole_word() {
        let reason = "canary analysis at 10%: the canary on host h3 is much worse; by host: h3 has";
        assert!(names_host(reason, "h3"));
        assert!(!names_host(reason, "h1"));
        assert!(!names_host("by host: h12 has the highest", "h1"));
        assert!(names_host("by host: h1 has", "h1"));
    }
}
