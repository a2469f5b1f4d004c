//! The CLI on its own, no controller: exit statuses of usage errors, shell
//! completions (run in a real bash) and man pages.

use crate::harness::*;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn gantry(args: &[&str]) -> Output {
    let child = Command::new(GANTRY)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    output_within(child, Duration::from_secs(60), args)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    for args in [
        &["deploy"][..],
        &["no-such-command"],
        &["status", "--bogus"],
    ] {
        let out = gantry(args);
        assert_eq!(out.status.code(), Some(2), "gantry {args:?}: {out:?}");
        assert!(text(&out.stderr).contains("Usage:"), "{out:?}");
    }
    let out = gantry(&["--help"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(text(&out.stdout).contains("completions"), "{out:?}");
    assert!(!text(&out.stdout).contains("sample-service"), "{out:?}");
}

/// What bash's completion offers for the words of `line` (the last word
/// being the one completed), with gantry's script loaded.
fn bash_completes(script: &std::path::Path, line: &[&str]) -> Vec<String> {
    let words = line.join(" ");
    let program = format!(
        "source {script}\nCOMP_WORDS=({words})\nCOMP_CWORD={cword}\nCOMP_LINE='{words}'\n\
         COMP_POINT=${{#COMP_LINE}}\n_gantry gantry '{current}' '{previous}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script = script.display(),
        cword = line.len() - 1,
        current = line[line.len() - 1],
        previous = line[line.len() - 2],
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .output()
        .unwrap();
    assert!(out.status.success(), "bash: {out:?}");
    text(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completion_is_valid_bash_and_completes_visible_commands_only() {
    let out = gantry(&["completions", "bash"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("gantry.bash");
    std::fs::write(&script, &out.stdout).unwrap();

    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(syntax.status.success(), "bash -n: {syntax:?}");

    assert_eq!(bash_completes(&script, &["gantry", "dep"]), ["deploy"]);
    // `router` and `sample-service` are hidden: only `rollback` starts with "ro".
    assert_eq!(bash_completes(&script, &["gantry", "ro"]), ["rollback"]);
    assert_eq!(
        bash_completes(&script, &["gantry", "sa"]),
        Vec::<String>::new()
    );
    assert_eq!(
        bash_completes(&script, &["gantry", "release", "cr"]),
        ["create"]
    );
    assert_eq!(
        bash_completes(&script, &["gantry", "rollback", "--e"]),
        ["--env"]
    );
}

#[test]
fn zsh_and_fish_completions_are_written() {
    for (shell, marker) in [("zsh", "#compdef gantry"), ("fish", "complete -c gantry")] {
        let out = gantry(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let script = text(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("rollback"), "{shell}: {script}");
    }
    let out = gantry(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn man_writes_gantry_1_and_a_page_per_visible_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    let out = gantry(&["man", "--output", pages.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let listed: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    let mut written: Vec<String> = std::fs::read_dir(&pages)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    written.sort();
    assert_eq!(listed.len(), written.len(), "{listed:?} vs {written:?}");
    for name in [
        "gantry.1",
        "gantry-deploy.1",
        "gantry-rollback.1",
        "gantry-release-create.1",
        "gantry-audit-verify.1",
        "gantry-completions.1",
    ] {
        assert!(
            written.iter().any(|w| w == name),
            "no {name} in {written:?}"
        );
    }
    for hidden in ["router", "sample-service", "help"] {
        assert!(
            !written.iter().any(|w| w.contains(hidden)),
            "a page for {hidden}: {written:?}"
        );
    }

    let root = std::fs::read_to_string(pages.join("gantry.1")).unwrap();
    for needle in [
        "\n.TH GANTRY 1 ",
        "\n.SH NAME\n",
        "\n.SH SYNOPSIS\n",
        "\n.SH SUBCOMMANDS\n",
        "gantry\\-deploy(1)",
        "gantry\\-rollback(1)",
        "\n.SH \"EXIT STATUS\"\n",
        "\\fB141\\fR",
    ] {
        assert!(root.contains(needle), "gantry.1 lacks {needle:?}:\n{root}");
    }
    assert!(!root.contains("gantry\\-router"), "{root}");
    let deploy = std::fs::read_to_string(pages.join("gantry-deploy.1")).unwrap();
    assert!(deploy.contains("\n.TH GANTRY-DEPLOY 1 "), "{deploy}");
    assert!(deploy.contains("\\-\\-env"), "{deploy}");
    // Every line is text or a known request: nothing clap_mangen escaped badly.
    for (name, page) in [("gantry.1", &root), ("gantry-deploy.1", &deploy)] {
        for line in page.lines().filter(|l| l.starts_with('.')) {
            let request = line[1..].split_whitespace().next().unwrap_or("");
            assert!(
                [
                    "TH", "SH", "SS", "TP", "PP", "IP", "RS", "RE", "br", "ie", "el", "sp", "B",
                    "I"
                ]
                .contains(&request),
                "{name}: unexpected roff request {line:?}"
            );
        }
    }

    // Without --output, gantry.1 goes to standard output.
    let out = gantry(&["man"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout), root);
}

#[test]
fn generated_output_to_a_closed_pipe_ends_quietly_with_141() {
    for args in [&["completions", "bash"][..], &["man"]] {
        let mut cmd = Command::new(GANTRY);
        cmd.args(args);
        let (status, stderr) = run_with_closed_stdout(cmd, Duration::from_secs(60));
        assert_eq!(status.code(), Some(141), "gantry {args:?}: {status}");
        assert!(stderr.is_empty(), "gantry {args:?} ends quietly: {stderr}");
    }
}
