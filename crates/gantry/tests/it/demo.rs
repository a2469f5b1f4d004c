//! `gantry demo`, the README's first command, passes on this machine: its
//! own checks (no failed user request, the rollbacks, the audit chain) are
//! the assertions.

use crate::harness::*;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn the_demo_runs_the_whole_loop_and_passes() {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(GANTRY)
        .arg("demo")
        .current_dir(dir.path())
        .env_remove("GANTRY_TOKEN")
        .env_remove("GANTRY_DATA_DIR")
        .env("GANTRY_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
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
