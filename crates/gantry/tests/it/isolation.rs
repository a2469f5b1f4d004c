//! A deployed release is untrusted code: it must not reach the controller's
//! tokens, database, other releases or logs, nor signal the controller, and
//! it must still deploy and serve.

use crate::harness::*;

/// A release whose `bin/gantry` is an attacker's script: it tries each way
/// into the controller, prints what happened, then serves as the sample does.
fn attacker_artifact(g: &Gantry, data: &str, controller_pid: u32) -> std::path::PathBuf {
    let script = format!(
        r#"#!/bin/sh
D='{data}'
try() {{ name=$1; shift; if "$@" >/dev/null 2>&1; then echo "ATTACK $name: GOT IN"; else echo "ATTACK $name: denied"; fi; }}
try read-admin-token cat "$D/admin.token"
try read-router-token cat "$D/router.token"
try read-database head -c 16 "$D/gantry.db"
try read-database-wal head -c 16 "$D/gantry.db-wal"
try write-database sh -c "echo x >> '$D/gantry.db'"
try list-data-dir ls "$D"
try read-other-release cat "$D/releases/1.0.0/sample.json"
try list-other-release ls "$D/releases/1.0.0"
try read-instance-log cat "$D/instances/development-d1-1/output.log"
try signal-controller kill -0 {controller_pid}
try read-controller-environ head -c 16 /proc/{controller_pid}/environ
try write-own-release sh -c "echo x > ./planted"
try read-ssh-keys ls /root
if env | grep -q '^GANTRY_DATA_DIR=\|^GANTRY_TOKEN=\|^LEAK_CANARY='; then echo "ATTACK controller-env: GOT IN"; else echo "ATTACK controller-env: denied"; fi
# Positive controls: what a release needs still works.
if cat ./sample.json >/dev/null && echo ok > "$TMPDIR/scratch-file"; then echo "CONTROL own-files: ok"; else echo "CONTROL own-files: FAILED"; fi
echo "CONTROL user: $(id -u)"
exec '{gantry}' "$@"
"#,
        gantry = instance_binary()
    );
    let path = g.dir.path().join("attacker.tar");
    make_tar(
        &path,
        &[
            ("bin/gantry", 0o755, script.as_bytes()),
            ("sample.json", 0o644, br#"{"version": "1.1.0"}"#),
        ],
    );
    path
}

#[test]
fn a_release_cannot_reach_the_controller_and_still_deploys() {
    // The test config lets instances run the installed gantry binary
    // (`service.sandbox.read`), nothing else.
    let g = Gantry::start_full("300ms", "", &[("LEAK_CANARY", "controller-only")]);
    let controller_pid = g.server.as_ref().unwrap().id();
    let data = g.data().canonicalize().unwrap();
    g.register("1.0.0", "");
    g.gantry(&["deploy", "1.0.0", "--env", "development"]).ok();

    let artifact = attacker_artifact(&g, data.to_str().unwrap(), controller_pid);
    g.gantry(&[
        "release",
        "create",
        "1.1.0",
        "--artifact",
        artifact.to_str().unwrap(),
    ])
    .ok();
    g.gantry(&["deploy", "1.1.0", "--env", "staging"]).ok();
    assert_eq!(
        g.get_env("staging"),
        (200, "hello from 1.1.0\n".to_owned()),
        "the confined release deployed and serves"
    );

    let log = std::fs::read_to_string(data.join("instances/staging-d2-1/output.log")).unwrap();
    let attacks: Vec<&str> = log.lines().filter(|l| l.starts_with("ATTACK ")).collect();
    assert_eq!(attacks.len(), 14, "every attempt ran:\n{log}");
    for line in &attacks {
        assert!(line.ends_with(": denied"), "{line}\n{log}");
    }
    assert!(log.contains("CONTROL own-files: ok"), "{log}");
    // The controller runs as root here (as in CI): instances run as nobody.
    if nix::unistd::geteuid().is_root() {
        assert!(log.contains("CONTROL user: 65534"), "{log}");
    }
    // The controller's secrets and state are its own alone.
    use std::os::unix::fs::PermissionsExt;
    for f in [
        "admin.token",
        "router.token",
        "gantry.db",
        "gantry.db-wal",
        "gantry.db-shm",
    ] {
        let mode = std::fs::metadata(data.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    for d in ["instances", "artifacts", "routers"] {
        let mode = std::fs::metadata(data.join(d))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700, "{d}");
    }
    // Nothing was planted in the release tree.
    assert!(!data.join("releases/1.1.0/planted").exists());
}

#[test]
fn run_as_root_or_an_unknown_user_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gantry.toml");
    std::fs::write(
        &config,
        "[service]\nname = \"s\"\ncommand = \"bin/app\"\nrun_as = \"root\"\n\n[health]\npath = \"/\"\n\n[environments.production]\nlisten = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(GANTRY)
        .args(["validate", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("service.run_as"), "{text}");
    assert!(text.contains("must not run as root"), "{text}");
}
