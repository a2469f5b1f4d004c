use crate::harness::*;
use std::process::Command;

#[test]
fn releases_are_registered_content_addressed_and_immutable() {
    let g = Gantry::start();
    let a = g.artifact("1.0.0", "");
    let run = g
        .gantry(&[
            "release",
            "create",
            "1.0.0",
            "--artifact",
            a.to_str().unwrap(),
            "--git-sha",
            "0123456789abcdef0123456789abcdef01234567",
        ])
        .ok();
    assert!(
        run.stdout.contains("release 1.0.0 registered: sha256"),
        "{}",
        run.stdout
    );
    // Same content again: accepted, nothing changes.
    g.gantry(&[
        "release",
        "create",
        "1.0.0",
        "--artifact",
        a.to_str().unwrap(),
    ])
    .ok();
    // Different content under the same version: refused.
    let other = g.artifact("1.0.0", "\"latency_ms\": 1");
    g.gantry(&[
        "release",
        "create",
        "1.0.0",
        "--artifact",
        other.to_str().unwrap(),
    ])
    .fails_with(1, "release 1.0.0 already exists with different content");
    let r = g.release("1.0.0");
    assert_eq!(
        r.git_sha.as_deref(),
        Some("0123456789abcdef0123456789abcdef01234567")
    );
    let blob = g.data().join("artifacts/sha256").join(r.digest.as_hex());
    assert_eq!(
        std::fs::read(&blob).unwrap(),
        std::fs::read(&a).unwrap(),
        "stored by its SHA-256"
    );
    assert!(std::fs::metadata(&blob).unwrap().permissions().readonly());
    let list = g.gantry(&["release", "list"]).ok();
    assert!(
        list.stdout.contains("1.0.0") && list.stdout.contains("01234567"),
        "{}",
        list.stdout
    );
}

#[test]
fn bad_release_input_is_refused_and_changes_nothing() {
    let g = Gantry::start();
    let a = g.artifact("1.0.0", "");
    let a = a.to_str().unwrap();
    g.gantry(&["release", "create", "1.0", "--artifact", a])
        .fails_with(1, "\"1.0\" is not a semantic version");
    g.gantry(&["release", "create", "v1.0.0", "--artifact", a])
        .fails_with(1, "is not a semantic version");
    g.gantry(&[
        "release",
        "create",
        "1.0.0",
        "--artifact",
        "/no/such/file.tar",
    ])
    .fails_with(1, "cannot read artifact /no/such/file.tar");
    let junk = g.dir.path().join("junk.bin");
    std::fs::write(&junk, b"just some bytes").unwrap();
    g.gantry(&[
        "release",
        "create",
        "1.0.0",
        "--artifact",
        junk.to_str().unwrap(),
    ])
    .fails_with(1, "neither a tarball (.tar, .tar.gz) nor an executable");
    g.gantry(&[
        "release",
        "create",
        "1.0.0",
        "--artifact",
        a,
        "--git-sha",
        "not-a-sha",
    ])
    .fails_with(1, "git SHA \"not-a-sha\" is not a hex commit id");
    g.gantry(&["release", "show", "9.9.9"])
        .fails_with(1, "release 9.9.9 is not registered");
    assert!(g.releases().is_empty(), "nothing was registered");
    let blobs: Vec<_> = std::fs::read_dir(g.data().join("artifacts/sha256"))
        .unwrap()
        .collect();
    assert!(blobs.is_empty(), "no artifact was stored");
}

#[test]
fn verify_detects_a_tampered_artifact() {
    let g = Gantry::start();
    g.register("1.0.0", "");
    g.register("1.1.0", "");
    g.gantry(&["release", "verify"]).ok();
    let digest = g.release("1.1.0").digest.as_hex().to_owned();
    let blob = g.data().join("artifacts/sha256").join(&digest);
    let mut perms = std::fs::metadata(&blob).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&blob, perms).unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[600] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    let run = g.gantry(&["release", "verify"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.stdout.contains("ok  1.0.0"), "{}", run.stdout);
    let bad = run
        .stdout
        .lines()
        .find(|l| l.starts_with("BAD 1.1.0"))
        .unwrap_or_else(|| panic!("{}", run.stdout));
    assert!(
        bad.contains(&format!("artifact {digest} is corrupt")),
        "{bad}"
    );
    // And a deployment of it refuses to start.
    let id = deploy_id(
        &g.gantry(&["deploy", "1.1.0", "--env", "development", "--detach"])
            .ok(),
    );
    let d = g.wait_finished(id);
    assert_eq!(d.phase, Phase::Failed);
    assert!(
        d.reason.as_deref().unwrap().contains("failed verification"),
        "{d:?}"
    );
}

/// The controller hashes a release once while its file stays unchanged; a
/// copy changed after it served (here, before a rollback to it) is hashed
/// again and refused.
#[test]
fn a_rollback_refuses_a_release_tampered_with_after_it_served() {
    let g = Gantry::start();
    g.register("1.0.0", "");
    g.register("1.1.0", "");
    for v in ["1.0.0", "1.1.0"] {
        let id = deploy_id(
            &g.gantry(&["deploy", v, "--env", "development", "--detach"])
                .ok(),
        );
        assert_eq!(g.wait_finished(id).phase, Phase::Succeeded);
    }
    let digest = g.release("1.0.0").digest.as_hex().to_owned();
    let blob = g.data().join("artifacts/sha256").join(&digest);
    let mut perms = std::fs::metadata(&blob).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&blob, perms).unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[600] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    let id = deploy_id(
        &g.gantry(&["rollback", "--env", "development", "--detach"])
            .ok(),
    );
    let d = g.wait_finished(id);
    assert_eq!(d.phase, Phase::Failed, "{d:?}");
    assert!(
        d.reason.as_deref().unwrap().contains("failed verification"),
        "{d:?}"
    );
}

struct KeyPair {
    public_line: String,
    secret: std::path::PathBuf,
}

fn minisign_keypair(dir: &std::path::Path) -> KeyPair {
    let public = dir.join("test.pub");
    let secret = dir.join("test.key");
    let out = Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(&public)
        .arg("-s")
        .arg(&secret)
        .output()
        .expect("minisign is installed (the test command installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&public).unwrap();
    let public_line = text.lines().nth(1).unwrap().to_owned();
    KeyPair {
        public_line,
        secret,
    }
}

fn minisign_sign(key: &KeyPair, file: &std::path::Path) -> std::path::PathBuf {
    let out = Command::new("minisign")
        .arg("-S")
        .arg("-s")
        .arg(&key.secret)
        .arg("-m")
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::path::PathBuf::from(format!("{}.minisig", file.display()))
}

#[test]
fn minisign_signatures_are_verified_and_required_where_configured() {
    let keydir = tempfile::tempdir().unwrap();
    let key = minisign_keypair(keydir.path());
    let extra = format!("\n[signing]\npublic_keys = [\"{}\"]\n", key.public_line);
    let mut g = Gantry::start_with("300ms", &extra);
    // Production requires signatures.
    g.config = g.config.replace(
        "instances = 2\nbake = \"300ms\"",
        "instances = 2\nbake = \"300ms\"\nrequire_signature = true",
    );
    assert!(g.config.contains("require_signature = true"));
    std::fs::write(g.config_path(), &g.config).unwrap();
    g.gantry(&["shutdown"]).ok();
    let mut old = g.server.take().unwrap();
    old.wait().unwrap();
    g.start_server();

    let signed = g.artifact("2.0.0", "");
    let sig = minisign_sign(&key, &signed);
    let run = g
        .gantry(&[
            "release",
            "create",
            "2.0.0",
            "--artifact",
            signed.to_str().unwrap(),
            "--signature",
            sig.to_str().unwrap(),
        ])
        .ok();
    assert!(run.stdout.contains("signature verified"), "{}", run.stdout);
    assert_eq!(
        g.release("2.0.0").signed_by.as_deref(),
        Some(key.public_line.as_str())
    );

    // A tampered artifact with the original signature is refused.
    let tampered = g.dir.path().join("tampered.tar");
    let mut bytes = std::fs::read(&signed).unwrap();
    let n = bytes.len() - 1100;
    bytes[n] ^= 0x20;
    std::fs::write(&tampered, bytes).unwrap();
    g.gantry(&[
        "release",
        "create",
        "2.0.1",
        "--artifact",
        tampered.to_str().unwrap(),
        "--signature",
        sig.to_str().unwrap(),
    ])
    .fails_with(1, "signature does not verify");
    g.gantry(&["release", "show", "2.0.1"])
        .fails_with(1, "not registered");

    // A signature that is not minisign's format.
    let junk_sig = g.dir.path().join("junk.minisig");
    std::fs::write(&junk_sig, "untrusted comment: x\nnot base64!\n").unwrap();
    g.gantry(&[
        "release",
        "create",
        "2.0.2",
        "--artifact",
        signed.to_str().unwrap(),
        "--signature",
        junk_sig.to_str().unwrap(),
    ])
    .fails_with(1, "signature is not in minisign format");

    // An unsigned release may go to development but not to production.
    g.register("2.1.0", "");
    g.gantry(&["deploy", "2.1.0", "--env", "production"])
        .fails_with(1, "environment production requires a signed release; 2.1.0 was registered without a signature");
    assert!(g.deployments(None).is_empty(), "no deployment was created");
    g.gantry(&["deploy", "2.0.0", "--env", "production"]).ok();
}

/// DORA's lead time counts from the commit: given, or asked of the git
/// repository `gantry release create` runs in; without one, from the
/// registration.
#[test]
fn lead_time_counts_from_the_commit_the_repository_or_the_flag_names() {
    let g = Gantry::start();
    // A real repository with a commit made on 2026-02-03.
    let repo = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(repo.path())
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_DATE", "2026-02-03T04:05:06Z")
            .env("GIT_AUTHOR_DATE", "2026-02-03T04:05:06Z")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    git(&["init", "-q"]);
    git(&["commit", "-q", "--allow-empty", "-m", "feat: orders"]);
    let sha = git(&["rev-parse", "HEAD"]);
    let artifact = g.artifact("1.0.0", "");
    let out = Command::new(GANTRY)
        .arg("--data-dir")
        .arg(g.data())
        .args([
            "release",
            "create",
            "1.0.0",
            "--git-sha",
            &sha,
            "--artifact",
        ])
        .arg(&artifact)
        .current_dir(repo.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committed = |v: &str| g.release(v).committed_at;
    let feb = 1_770_091_506_000; // 2026-02-03T04:05:06Z
    assert_eq!(committed("1.0.0"), Some(feb));
    // Given by flag; refused when it is no time; absent without either.
    let a2 = g.artifact("1.1.0", "");
    g.gantry(&[
        "release",
        "create",
        "1.1.0",
        "--artifact",
        a2.to_str().unwrap(),
        "--commit-time",
        "2026-03-01T00:00:00Z",
    ])
    .ok();
    assert_eq!(committed("1.1.0"), Some(1_772_323_200_000));
    let a3 = g.artifact("1.2.0", "");
    g.gantry(&[
        "release",
        "create",
        "1.2.0",
        "--artifact",
        a3.to_str().unwrap(),
        "--commit-time",
        "last tuesday",
    ])
    .fails_with(1, "--commit-time:");
    g.register("1.2.0", "");
    assert_eq!(committed("1.2.0"), None);
    // Lead time of 1.0.0 in production: from February, not from now.
    g.gantry(&["deploy", "1.0.0", "--env", "production"]).ok();
    let dora = g.api_json("/dora?env=production&since=3650d");
    let median = dora["lead_time"]["median_ms"].as_u64().unwrap();
    let since_feb = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        - feb as u64;
    assert!(
        median + 60_000 >= since_feb && median <= since_feb + 60_000,
        "{median} vs {since_feb}"
    );
}
