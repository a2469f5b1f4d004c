//! `gantry demo`, the README's first command, passes on this machine: its
//! own checks (no failed user request, the rollbacks, the audit chain) are
//! the assertions.

use crate::harness::*;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn the_demo_runs_the_whole_loop_and_passes() {
    let dir = tempfile::tempdir().unwrap();
    let child = spawn_demo(Command::new(GANTRY), &[], dir.path());
    let out = output_within(child, Duration::from_secs(240), &["demo"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("demo passed"), "{stdout}");
    assert!(stdout.contains("0 failed"), "{stdout}");
    assert!(stdout.contains("chain verified"), "{stdout}");
}

/// `gantry demo ARGS` run by `cmd` (the binary, or a wrapper that runs
/// it), with a clean environment in `dir`, its output piped.
fn spawn_demo(mut cmd: Command, args: &[&str], dir: &std::path::Path) -> std::process::Child {
    cmd.arg("demo")
        .args(args)
        .current_dir(dir)
        .env_remove("GANTRY_TOKEN")
        .env_remove("GANTRY_DATA_DIR")
        .env("GANTRY_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn fleet_demo(hosts: &str, dir: &std::path::Path) -> std::process::Child {
    spawn_demo(Command::new(GANTRY), &["--fleet", hosts], dir)
}

/// The lab id in the demo's "lab ID up in …" line.
fn lab_id(stdout: &str) -> Option<String> {
    stdout.lines().find_map(|l| {
        l.strip_prefix("lab ")?
            .split_once(" up in ")
            .map(|(id, _)| id.to_owned())
    })
}

/// Nothing of lab `id` is left: neither its directory nor a namespace.
fn assert_lab_gone(id: &str) {
    let root = std::env::var("GANTRY_LAB_ROOT").unwrap_or_else(|_| "/var/lib/gantry-lab".into());
    let dir = std::path::Path::new(&root).join(id);
    assert!(!dir.exists(), "{} is left behind", dir.display());
    let spaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let spaces = String::from_utf8_lossy(&spaces.stdout);
    let prefix = format!("gantry-lab-{id}-");
    assert!(
        !spaces.lines().any(|l| l.starts_with(&prefix)),
        "namespaces of lab {id} are left behind:\n{spaces}"
    );
}

#[test]
fn the_fleet_demo_rolls_out_on_three_lab_hosts_and_tears_the_lab_down() {
    if crate::fleet_ssh::skipped() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let child = fleet_demo("3", dir.path());
    let out = output_within(child, Duration::from_secs(300), &["demo", "--fleet", "3"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fleet demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "demo passed",
        "wave all: batch 1/3: hosts h1",
        "rolling update complete: 3 of 3 host(s) serve 1.1.0",
        "rolling 1.1.0 to staging: 3 host batches",
        "canary 1.1.0 to production, 3 hosts",
        "promoted; 0 of",
        "rolled back, h3 named",
        "fleet-wide rollback to 1.0.0 (3 routers serve)",
        "0 failed (+",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    // Every host's key was pinned, against the fingerprint the lab printed.
    for h in ["h1", "h2", "h3"] {
        assert!(stdout.contains(&format!("{h}: pinned SHA256:")), "{stdout}");
    }
    let id = lab_id(&stdout).expect("the demo names its lab");
    assert!(stdout.contains(&format!("lab {id} down in")), "{stdout}");
    assert_lab_gone(&id);
}

#[test]
fn an_interrupted_fleet_demo_tears_its_lab_down() {
    if crate::fleet_ssh::skipped() {
        return;
    }
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = fleet_demo("2", dir.path());
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Interrupt once the controller is deploying to the lab.
    let mut seen = String::new();
    let end = std::time::Instant::now() + Duration::from_secs(120);
    while !seen.contains("== deploying 1.0.0") {
        let left = end.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push_str(&(line + "\n")),
            Err(_) => {
                let _ = child.kill();
                panic!("the demo never started deploying:\n{seen}");
            }
        }
    }
    let id = lab_id(&seen).expect("the demo names its lab");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let mut stderr = String::new();
    let mut pipe = child.stderr.take().unwrap();
    let status = {
        let mut status = None;
        wait_until(
            "the interrupted demo to exit",
            Duration::from_secs(60),
            || {
                status = child.try_wait().unwrap();
                status.is_some()
            },
        );
        status.unwrap()
    };
    std::io::Read::read_to_string(&mut pipe, &mut stderr).unwrap();
    seen.extend(rx.iter().map(|l| l + "\n"));
    assert_eq!(status.code(), Some(1), "{seen}\n{stderr}");
    assert!(stderr.contains("demo failed: interrupted"), "{stderr}");
    assert!(seen.contains(&format!("lab {id} down in")), "{seen}");
    assert_lab_gone(&id);
}

#[test]
fn the_fleet_demo_needs_root_and_at_most_50_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let too_many = fleet_demo("51", dir.path());
    let out = output_within(
        too_many,
        Duration::from_secs(10),
        &["demo", "--fleet", "51"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("51 is not in 1..=50"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // As an ordinary user (nobody, when the tests run as root): refused
    // before anything is made, with the reason.
    let cmd = if nix::unistd::geteuid().is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            instance_binary(),
        ]);
        c
    } else {
        Command::new(GANTRY)
    };
    let child = spawn_demo(cmd, &["--fleet", "2"], std::path::Path::new("/"));
    let out = output_within(child, Duration::from_secs(10), &["demo", "--fleet", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("gantry demo --fleet needs root: it makes network namespaces"),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
