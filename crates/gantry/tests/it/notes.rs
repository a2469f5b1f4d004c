//! `gantry release-notes` on a real git repository.

use crate::harness::*;
use std::path::Path;
use std::process::Command;

fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn commit(repo: &Path, message: &str) -> String {
    git(repo, &["commit", "--allow-empty", "-q", "-m", message]);
    git(repo, &["rev-parse", "HEAD"])
}

#[test]
fn release_notes_come_from_the_commits_since_the_previous_release() {
    let g = Gantry::start();
    let repo = g.dir.path().join("service");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    commit(&repo, "feat: the first feature");
    let v1 = commit(&repo, "fix: the first fix");
    git(&repo, &["tag", "v1.0.0"]);
    commit(&repo, "feat(api): approvals over HTTP");
    commit(&repo, "fix: freezes end on time");
    commit(&repo, "perf: gates in one query");
    commit(&repo, "docs: explain gates");
    let v2 = commit(
        &repo,
        "feat!: per-user tokens\n\nBREAKING CHANGE: the shared token is gone\nUpgrade-Note: run `gantry token create` for each user",
    );
    let later = commit(&repo, "feat: something after the release");

    // Registered releases know their commits: the range is theirs, not HEAD's.
    let artifact = g.artifact("1.0.0", "");
    g.gantry(&[
        "release",
        "create",
        "1.0.0",
        "--artifact",
        artifact.to_str().unwrap(),
        "--git-sha",
        &v1,
    ])
    .ok();
    let artifact = g.artifact("1.1.0", "");
    g.gantry(&[
        "release",
        "create",
        "1.1.0",
        "--artifact",
        artifact.to_str().unwrap(),
        "--git-sha",
        &v2,
    ])
    .ok();
    let repo_arg = repo.to_str().unwrap();
    let run = g
        .gantry(&[
            "release-notes",
            "1.1.0",
            "--repo",
            repo_arg,
            "--date",
            "2026-11-22",
            "--known-issue",
            "slow first request",
        ])
        .ok();
    let text = std::fs::read_to_string(repo.join("docs/releases/1.1.0.md")).unwrap();
    assert_eq!(run.stdout, text);
    assert!(
        text.starts_with("## Release 1.1.0 - 2026-11-22\n"),
        "{text}"
    );
    let short = |s: &str| s[..7].to_owned();
    for needle in [
        format!("Changes since {}.", &v1[..12]),
        "### New Features\n\n- **api**: approvals over HTTP".to_owned(),
        format!("- per-user tokens ({})", short(&v2)),
        "### Improvements\n\n- gates in one query".to_owned(),
        "### Bug Fixes\n\n- freezes end on time".to_owned(),
        "### Breaking Changes\n\n- the shared token is gone".to_owned(),
        "### Known Issues\n\n- slow first request".to_owned(),
        "### Upgrade Notes\n\n- run `gantry token create` for each user".to_owned(),
    ] {
        assert!(text.contains(&needle), "{needle:?} in:\n{text}");
    }
    for absent in [
        "the first feature",
        "explain gates",
        "something after the release",
        &short(&later),
    ] {
        assert!(
            !text.contains(absent),
            "{absent:?} should not be in:\n{text}"
        );
    }

    // Written again: hand-added known issues stay.
    let edited = text.replace(
        "- slow first request",
        "- slow first request\n- memory grows under load",
    );
    std::fs::write(repo.join("docs/releases/1.1.0.md"), edited).unwrap();
    g.gantry(&["release-notes", "1.1.0", "--repo", repo_arg])
        .ok();
    let again = std::fs::read_to_string(repo.join("docs/releases/1.1.0.md")).unwrap();
    assert!(
        again.contains("- slow first request\n- memory grows under load\n"),
        "{again}"
    );

    // With the next registered release, its commit starts the range.
    let run = g
        .gantry(&["release-notes", "2.0.0", "--repo", repo_arg])
        .ok();
    assert!(
        run.stdout
            .contains(&format!("Changes since {}.", &v2[..12])),
        "{}",
        run.stdout
    );
    // Without a controller, the previous v* tag starts the range and HEAD ends it.
    let run = g
        .gantry(&[
            "--server",
            "http://127.0.0.1:9",
            "release-notes",
            "2.0.0",
            "--repo",
            repo_arg,
        ])
        .ok();
    assert!(
        run.stdout.contains("Changes since v1.0.0."),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("something after the release"),
        "{}",
        run.stdout
    );

    // Bad input.
    g.gantry(&["release-notes", "one", "--repo", repo_arg])
        .fails_with(1, "\"one\" is not a semantic version");
    g.gantry(&[
        "release-notes",
        "1.1.0",
        "--repo",
        repo_arg,
        "--until",
        "nope",
    ])
    .fails_with(1, "nope is not a commit of");
}
