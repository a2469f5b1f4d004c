//! Fleets over real OpenSSH: hosts made by `scripts/fleet-lab` (network
//! namespaces, each with Debian's sshd and its own host key), reached through
//! `gantry_server::fleet::ssh` and the `gantry hosts` commands. Needs root (the
//! lab makes namespaces); `GANTRY_FLEET_TESTS=skip` skips these tests where
//! that is impossible, and they fail otherwise, never pass silently.

use crate::harness::{output_within, GANTRY};
use gantry_config::{Host, SshKey, SshSettings};
use gantry_server::fleet::ssh::{BinaryImage, Bootstrapped, HostError, SshHosts};
use gantry_server::fleet::trust;
use serde::Deserialize;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// One host of the lab, as `fleet-lab up` prints it.
#[derive(Debug, Clone, Deserialize)]
pub struct LabHost {
    pub name: String,
    pub address: std::net::IpAddr,
    pub port: u16,
    pub user: String,
    pub site: Option<String>,
    pub host_key_fingerprint: String,
    pub key: PathBuf,
    pub home: PathBuf,
}

#[derive(Debug, Deserialize)]
struct LabJson {
    id: String,
    hosts: Vec<LabHost>,
}

/// A running lab; `Drop` tears it down, so a failed assertion leaves nothing behind.
pub struct FleetLab {
    script: PathBuf,
    pub id: String,
    pub hosts: Vec<LabHost>,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether the fleet tests are to be skipped here (no root, no namespaces).
pub(crate) fn skipped() -> bool {
    std::env::var("GANTRY_FLEET_TESTS").as_deref() == Ok("skip")
}

impl FleetLab {
    /// Starts `n` hosts, failing the test if that takes longer than `deadline`.
    pub fn start(n: usize, sites: &[&str], deadline: Duration) -> FleetLab {
        Self::start_with(n, sites, &[], deadline)
    }

    /// [`FleetLab::start`] with more `fleet-lab up` arguments (`--home-mb M`).
    pub fn start_with(n: usize, sites: &[&str], more: &[&str], deadline: Duration) -> FleetLab {
        let script = repo().join("scripts/fleet-lab");
        let mut cmd = Command::new(&script);
        cmd.arg("up").arg(n.to_string()).args(more);
        if !sites.is_empty() {
            cmd.arg("--sites").arg(sites.join(","));
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run scripts/fleet-lab");
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let end = Instant::now() + deadline;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= end {
                // SIGTERM: the script's trap tears down what it made so far.
                let _ = Command::new("kill").arg(child.id().to_string()).status();
                let _ = child.wait();
                panic!("fleet-lab up {n} took longer than {deadline:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let (out, err) = (out.join().unwrap(), err.join().unwrap());
        assert!(
            status.success(),
            "fleet-lab up {n} failed (root needed; GANTRY_FLEET_TESTS=skip skips): {err}"
        );
        let lab: LabJson = serde_json::from_str(&out).expect("fleet-lab prints JSON");
        FleetLab {
            script,
            id: lab.id,
            hosts: lab.hosts,
        }
    }

    /// `cut`, `crash`, `stop-sshd`, `rekey` or `heal` one host.
    pub fn fault(&self, host: &str, what: &str) {
        let out = Command::new(&self.script)
            .args(["fault", &self.id, host, what])
            .stdin(Stdio::null())
            .output()
            .expect("run fleet-lab fault");
        assert!(
            out.status.success(),
            "fleet-lab fault {host} {what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `fault rekey`, then waits (10 s deadline) until the restarted sshd
    /// offers the new key: `rekey` HUPs sshd, which is briefly not listening.
    pub async fn rekey(&self, host: &Host) {
        self.fault(&host.name, "rekey");
        let old = &self
            .hosts
            .iter()
            .find(|h| h.name == host.name)
            .unwrap()
            .host_key_fingerprint;
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(keys) = trust::scan(host, Duration::from_secs(2)).await {
                if keys.iter().all(|k| &k.fingerprint != old) {
                    return;
                }
            }
            assert!(
                Instant::now() < end,
                "{} never offered its new key",
                host.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The lab's hosts as the config would describe them.
    pub fn config_hosts(&self) -> Vec<Host> {
        self.hosts
            .iter()
            .map(|h| Host {
                name: h.name.clone(),
                address: h.address.to_string(),
                user: Some(h.user.clone()),
                port: h.port,
                site: h.site.clone(),
                labels: [("tier".to_owned(), "web".to_owned())].into(),
                key: SshKey::File(h.key.clone()),
                data_dir: ".gantry".into(),
            })
            .collect()
    }

    /// The `[hosts.*]` tables of a gantry.toml for this lab.
    pub fn hosts_toml(&self) -> String {
        let mut s = String::new();
        for h in &self.hosts {
            s.push_str(&format!(
                "\n[hosts.{}]\naddress = \"{}\"\nport = {}\nuser = \"{}\"\nkey = {{ file = {:?} }}\nlabels = {{ tier = \"web\" }}\n",
                h.name, h.address, h.port, h.user, h.key
            ));
            if let Some(site) = &h.site {
                s.push_str(&format!("site = \"{site}\"\n"));
            }
        }
        s
    }
}

impl Drop for FleetLab {
    fn drop(&mut self) {
        let _ = Command::new(&self.script)
            .args(["down", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Lab bring-up deadline: each host is up in well under a second.
pub(crate) const LAB_UP: Duration = Duration::from_secs(20);

fn settings(connect_timeout_ms: u64, max_connecting: u32) -> SshSettings {
    SshSettings {
        connect_timeout_ms,
        max_connecting,
        ..SshSettings::default()
    }
}

/// Pins the lab hosts' keys (as `gantry hosts trust --yes` would) in `ssh`'s file.
async fn pin(ssh: &SshHosts, hosts: &[Host]) {
    for h in hosts {
        let keys = trust::scan(h, Duration::from_secs(5)).await.unwrap();
        trust::write_pins(ssh.known_hosts(), h, &keys).unwrap();
    }
}

struct Cli {
    code: i32,
    stdout: String,
    stderr: String,
}

fn gantry(data: &Path, args: &[&str]) -> Cli {
    let child = Command::new(GANTRY)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = output_within(child, Duration::from_secs(60), args);
    Cli {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// A gantry.toml: the starter, production on every lab host.
fn fleet_config(dir: &Path, lab: &FleetLab) -> PathBuf {
    let src = gantry_config::STARTER.replacen(
        "[environments.production]\n",
        "[environments.production]\nhosts = [{ labels = { tier = \"web\" } }]\n",
        1,
    ) + &lab.hosts_toml()
        + "\n[ssh]\nconnect_timeout = \"3s\"\n";
    let path = dir.join("gantry.toml");
    std::fs::write(&path, src).unwrap();
    path
}

#[test]
fn hosts_trust_pins_exactly_the_lab_fingerprints_and_changing_one_needs_replace() {
    if skipped() {
        return;
    }
    let lab = FleetLab::start(3, &["eu", "us"], LAB_UP);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let config = fleet_config(dir.path(), &lab);
    let config = config.to_str().unwrap();

    // Before trust: every host refused, naming the command to run.
    let before = gantry(&data, &["hosts", "--config", config]);
    assert_eq!(before.code, 1, "{}{}", before.stdout, before.stderr);
    assert!(
        before.stdout.contains("run `gantry hosts trust h1`"),
        "{}",
        before.stdout
    );

    // No terminal and no --yes: fingerprints shown, nothing pinned.
    let shown = gantry(&data, &["hosts", "trust", "--config", config]);
    assert_eq!(shown.code, 1, "{}", shown.stderr);
    for h in &lab.hosts {
        assert!(
            shown.stdout.contains(&h.host_key_fingerprint),
            "{}",
            shown.stdout
        );
    }
    assert!(
        shown.stderr.contains("not pinning without confirmation"),
        "{}",
        shown.stderr
    );
    assert!(!data.join("known_hosts").exists());

    // A wrong --expect pins nothing for that host.
    let wrong = gantry(
        &data,
        &[
            "hosts",
            "trust",
            "h1",
            "--config",
            config,
            "--expect",
            "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ],
    );
    assert_eq!(wrong.code, 1);
    assert!(
        wrong.stderr.contains("no key matches --expect"),
        "{}",
        wrong.stderr
    );
    assert!(!data.join("known_hosts").exists());

    // The right --expect for h1, --yes for the rest.
    let h1 = &lab.hosts[0].host_key_fingerprint;
    let r = gantry(
        &data,
        &["hosts", "trust", "h1", "--config", config, "--expect", h1],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let r = gantry(&data, &["hosts", "trust", "--config", config, "--yes"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let pins = std::fs::read_to_string(data.join("known_hosts")).unwrap();
    let mut pinned: Vec<String> = pins
        .lines()
        .map(|l| trust::fingerprint(l.split_whitespace().nth(2).unwrap()).unwrap())
        .collect();
    let mut expected: Vec<String> = lab
        .hosts
        .iter()
        .map(|h| h.host_key_fingerprint.clone())
        .collect();
    pinned.sort();
    expected.sort();
    assert_eq!(
        pinned, expected,
        "exactly the lab's keys, once each:\n{pins}"
    );

    let listed = gantry(&data, &["hosts", "--config", config, "--output", "json"]);
    assert_eq!(listed.code, 0, "{}{}", listed.stdout, listed.stderr);
    let rows: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    for (row, h) in rows.as_array().unwrap().iter().zip(&lab.hosts) {
        assert_eq!(row["name"], h.name.as_str());
        assert_eq!(row["reachable"], true, "{row}");
        assert_eq!(row["pinned"][0], h.host_key_fingerprint.as_str());
        assert_eq!(row["site"], h.site.as_deref().unwrap());
    }

    // A new key on h2: refused by `hosts`, and trust will not overwrite the pin without --replace.
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(lab.rekey(&lab.config_hosts()[1]));
    let listed = gantry(&data, &["hosts", "--config", config]);
    assert_eq!(listed.code, 1);
    assert!(
        listed.stdout.contains("NOT the one pinned"),
        "{}",
        listed.stdout
    );
    let r = gantry(
        &data,
        &["hosts", "trust", "h2", "--config", config, "--yes"],
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("(CHANGED)") && r.stderr.contains("--replace"),
        "{}{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(
        std::fs::read_to_string(data.join("known_hosts")).unwrap(),
        pins
    );
    let r = gantry(
        &data,
        &[
            "hosts",
            "trust",
            "h2",
            "--config",
            config,
            "--yes",
            "--replace",
        ],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(gantry(&data, &["hosts", "--config", config]).code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_changed_host_keys_refuse_that_host_only() {
    if skipped() {
        return;
    }
    let lab = FleetLab::start(3, &[], LAB_UP);
    let data = tempfile::tempdir().unwrap();
    let ssh = SshHosts::open(data.path(), &settings(3000, 16)).unwrap();
    let hosts = lab.config_hosts();
    // h1 never pinned.
    pin(&ssh, &hosts[1..]).await;

    let e = ssh.connect(&hosts[0]).await.unwrap_err();
    assert!(
        matches!(&e, HostError::UnknownHostKey { host, .. } if host == "h1"),
        "{e:?}"
    );
    assert!(e.to_string().contains("run `gantry hosts trust h1`"), "{e}");
    for h in &hosts[1..] {
        let s = ssh.connect(h).await.unwrap_or_else(|e| panic!("{e}"));
        s.check().await.unwrap();
        s.close().await.unwrap();
    }

    // h2 gets a new key: refused; h3 unaffected.
    lab.rekey(&hosts[1]).await;
    let e = ssh.connect(&hosts[1]).await.unwrap_err();
    assert!(
        matches!(&e, HostError::HostKey { host, .. } if host == "h2"),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("gantry hosts trust h2 --replace"),
        "{e}"
    );
    ssh.connect(&hosts[2]).await.unwrap().close().await.unwrap();

    // A key in the system-wide known_hosts would not count, nor would ~/.ssh/config:
    // ssh runs with Gantry's own config file only.
    let config = std::fs::read_to_string(ssh.config_file(&hosts[0].key)).unwrap();
    assert!(
        config.contains("GlobalKnownHostsFile /dev/null"),
        "{config}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_is_uploaded_once_verified_and_launched() {
    if skipped() {
        return;
    }
    let lab = FleetLab::start(2, &[], LAB_UP);
    let data = tempfile::tempdir().unwrap();
    let ssh = SshHosts::open(data.path(), &settings(3000, 16)).unwrap();
    let hosts = lab.config_hosts();
    pin(&ssh, &hosts).await;
    let gantry = BinaryImage::of(Path::new(GANTRY)).unwrap();
    let home = &lab.hosts[0].home;
    let stored = home.join(".gantry/bin").join(&gantry.sha256);

    let session = ssh.connect(&hosts[0]).await.unwrap();
    let first = session
        .bootstrap(&gantry)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let Bootstrapped::Uploaded { bytes, took } = first else {
        panic!("first bootstrap uploads, got {first:?}");
    };
    assert_eq!(bytes, gantry.len);
    eprintln!(
        "upload of {:.1} MB to one host: {:.2} s",
        bytes as f64 / 1e6,
        took.as_secs_f64()
    );
    assert_eq!(std::fs::read(&stored).unwrap().len() as u64, gantry.len);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&stored).unwrap().permissions().mode() & 0o777,
        0o555
    );
    session.close().await.unwrap();

    // A new connection: the host says present, nothing is sent.
    let session = ssh.connect(&hosts[0]).await.unwrap();
    let started = Instant::now();
    assert_eq!(
        session.bootstrap(&gantry).await.unwrap(),
        Bootstrapped::Present
    );
    eprintln!(
        "bootstrap, binary present: {:.3} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        ssh.cap_use().peak_transfers,
        1,
        "the second bootstrap transferred nothing"
    );

    // Bytes that do not have the claimed digest: refused, nothing left behind.
    let fake = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(fake.path(), b"not the gantry binary").unwrap();
    let claimed = "0".repeat(63) + "1";
    let lie = BinaryImage {
        path: fake.path().to_path_buf(),
        sha256: claimed.clone(),
        len: 21,
    };
    let e = session.bootstrap(&lie).await.unwrap_err();
    assert!(
        matches!(&e, HostError::Upload { host, .. } if host == "h1"),
        "{e:?}"
    );
    assert!(e.to_string().contains("SHA-256"), "{e}");
    let left: Vec<_> = std::fs::read_dir(home.join(".gantry/bin"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        left,
        [gantry.sha256.as_str()],
        "no file for the bad digest, no temp file"
    );

    // The launcher execs <dir>/bin/<sha256> host serve --stdio with the rest of stdin:
    // a stand-in binary that shows its arguments and echoes its input.
    let echo = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(echo.path(), "#!/bin/sh\necho \"args: $*\"\nexec cat\n").unwrap();
    let echo = BinaryImage::of(echo.path()).unwrap();
    assert!(matches!(
        session.bootstrap(&echo).await.unwrap(),
        Bootstrapped::Uploaded { .. }
    ));
    let mut serve = session.launch_host_serve(&echo.sha256).await.unwrap();
    let mut out = BufReader::new(&mut serve.stdout);
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), out.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    assert!(
        line.starts_with("args: --data-dir /") && line.ends_with(" host serve --stdio\n"),
        "{line}"
    );
    serve.stdin.write_all(b"ping\n").await.unwrap();
    serve.stdin.flush().await.unwrap();
    line.clear();
    tokio::time::timeout(Duration::from_secs(10), out.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(line, "ping\n", "the channel carries bytes both ways");
    let (code, _) = tokio::time::timeout(Duration::from_secs(10), serve.finish())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code, Some(0), "closing stdin ends it");

    // And the real binary starts there (it runs: neither 126 nor 127 from the shell).
    let serve = session.launch_host_serve(&gantry.sha256).await.unwrap();
    let (code, stderr) = tokio::time::timeout(Duration::from_secs(10), serve.finish())
        .await
        .unwrap()
        .unwrap();
    assert!(!matches!(code, Some(126) | Some(127)), "{code:?}: {stderr}");
    assert!(!stderr.contains("not found"), "{stderr}");

    // One session per host at most: while host serve holds it, another
    // command on that host waits; it goes through once the channel ends.
    let data = tempfile::tempdir().unwrap();
    let one = SshHosts::open(
        data.path(),
        &SshSettings {
            max_sessions_per_host: 1,
            ..settings(3000, 16)
        },
    )
    .unwrap();
    pin(&one, &hosts[..1]).await;
    let session = one.connect(&hosts[0]).await.unwrap();
    let serve = session.launch_host_serve(&echo.sha256).await.unwrap();
    let waiting = tokio::time::timeout(Duration::from_millis(1500), session.bootstrap(&echo)).await;
    assert!(waiting.is_err(), "a second session waited for the slot");
    serve.finish().await.unwrap();
    let after = tokio::time::timeout(Duration::from_secs(10), session.bootstrap(&echo))
        .await
        .expect("the slot is free once host serve ends")
        .unwrap();
    assert_eq!(after, Bootstrapped::Present);
}

/// Figures for the report (not run by default): connecting and bootstrapping
/// 10 hosts with and without the caps. `cargo test -p gantry --test it
/// fleet_ssh::figures -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run by hand"]
async fn figures() {
    let lab = FleetLab::start(10, &[], LAB_UP);
    let hosts = lab.config_hosts();
    let gantry = BinaryImage::of(Path::new(GANTRY)).unwrap();
    for (max_connecting, max_transfers) in [(1u32, 1u32), (4, 4), (10, 10)] {
        let data = tempfile::tempdir().unwrap();
        let ssh = SshHosts::open(
            data.path(),
            &SshSettings {
                max_transfers,
                ..settings(5000, max_connecting)
            },
        )
        .unwrap();
        pin(&ssh, &hosts).await;
        let started = Instant::now();
        let sessions: Vec<_> = futures_util::future::join_all(hosts.iter().map(|h| ssh.connect(h)))
            .await
            .into_iter()
            .map(|s| s.unwrap())
            .collect();
        let connect = started.elapsed();
        let started = Instant::now();
        for r in futures_util::future::join_all(sessions.iter().map(|s| s.bootstrap(&gantry))).await
        {
            r.unwrap();
        }
        let upload = started.elapsed();
        let started = Instant::now();
        for r in futures_util::future::join_all(sessions.iter().map(|s| s.bootstrap(&gantry))).await
        {
            assert_eq!(r.unwrap(), Bootstrapped::Present);
        }
        let present = started.elapsed();
        eprintln!(
            "10 hosts, max_connecting {max_connecting}, max_transfers {max_transfers}: connect {:.2} s, upload {:.1} MB each {:.2} s, again (present) {:.3} s",
            connect.as_secs_f64(),
            gantry.len as f64 / 1e6,
            upload.as_secs_f64(),
            present.as_secs_f64()
        );
        for s in sessions {
            s.close().await.unwrap();
        }
        // A fresh home for the next round's uploads.
        for h in &lab.hosts {
            let _ = std::fs::remove_dir_all(h.home.join(".gantry"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_explained_and_a_cut_host_fails_within_the_timeout() {
    if skipped() {
        return;
    }
    let lab = FleetLab::start(3, &[], LAB_UP);
    let data = tempfile::tempdir().unwrap();
    let ssh = SshHosts::open(data.path(), &settings(2000, 16)).unwrap();
    let mut hosts = lab.config_hosts();
    pin(&ssh, &hosts).await;

    // A key the host does not know.
    let keys = tempfile::tempdir().unwrap();
    let other = keys.path().join("id_ed25519");
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(ok.success());
    hosts[0].key = SshKey::File(other.clone());
    let e = ssh.connect(&hosts[0]).await.unwrap_err();
    assert!(
        matches!(&e, HostError::Auth { host, .. } if host == "h1"),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains("refused login as gantry-lab")
            && text.contains(&other.display().to_string())
            && text.contains("authorized_keys"),
        "{text}"
    );

    // A cut cable: unreachable within connect_timeout (2 s), not hanging; others fine.
    lab.fault("h2", "cut");
    let started = Instant::now();
    let e = ssh.connect(&hosts[1]).await.unwrap_err();
    let took = started.elapsed();
    eprintln!(
        "cut host refused after {:.2} s (connect_timeout 2 s)",
        took.as_secs_f64()
    );
    assert!(
        matches!(&e, HostError::Unreachable { host, .. } if host == "h2"),
        "{e:?}"
    );
    assert!(took < Duration::from_secs(6), "not hanging: {took:?}");
    assert!(
        took >= Duration::from_millis(1900),
        "it waited for the timeout: {took:?}"
    );
    ssh.connect(&hosts[2]).await.unwrap().close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connecting_cap_holds() {
    if skipped() {
        return;
    }
    let lab = FleetLab::start(6, &[], LAB_UP);
    let hosts = lab.config_hosts();
    let mut figures = Vec::new();
    for cap in [1u32, 2, 6] {
        let data = tempfile::tempdir().unwrap();
        let ssh = SshHosts::open(data.path(), &settings(5000, cap)).unwrap();
        pin(&ssh, &hosts).await;
        let started = Instant::now();
        let sessions = futures_util::future::join_all(hosts.iter().map(|h| ssh.connect(h))).await;
        let took = started.elapsed();
        let sessions: Vec<_> = sessions
            .into_iter()
            .map(|s| s.unwrap_or_else(|e| panic!("{e}")))
            .collect();
        let peak = ssh.cap_use().peak_connecting;
        assert!(peak <= cap as usize, "cap {cap}, peak {peak}");
        assert_eq!(
            peak,
            cap as usize,
            "with {} hosts waiting the cap fills",
            hosts.len()
        );
        // Every master is open and usable at once.
        for s in &sessions {
            s.check().await.unwrap();
        }
        figures.push(format!("cap {cap}: {:.2} s", took.as_secs_f64()));
        for s in sessions {
            s.close().await.unwrap();
        }
    }
    eprintln!("connecting {} hosts: {}", hosts.len(), figures.join(", "));
}

/// The fencing token hosts will see: one more at every controller start,
/// kept in the controller's SQLite store.
#[test]
fn every_controller_start_raises_the_epoch() {
    let mut g = crate::harness::Gantry::start();
    let epoch = |g: &crate::harness::Gantry| -> i64 {
        let db = rusqlite::Connection::open(g.data().join("gantry.db")).unwrap();
        db.query_row("SELECT epoch FROM controller_epoch", [], |r| r.get(0))
            .unwrap()
    };
    let first = epoch(&g);
    assert!(first >= 1);
    g.kill_server();
    g.start_server();
    assert_eq!(epoch(&g), first + 1);
}
