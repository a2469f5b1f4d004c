use crate::harness::*;
use std::process::Command;

fn gantry_in(dir: &std::path::Path, args: &[&str]) -> Run {
    let out = Command::new(GANTRY)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

#[test]
fn init_writes_a_valid_starter_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    gantry_in(dir.path(), &["init"]).ok();
    let run = gantry_in(dir.path(), &["validate"]).ok();
    assert!(
        run.stdout
            .contains("environments development, integration, staging, production"),
        "{}",
        run.stdout
    );
    gantry_in(dir.path(), &["init"]).fails_with(1, "already exists; pass --force");
    gantry_in(dir.path(), &["init", "--force"]).ok();
}

#[test]
fn validate_reports_every_error_with_location_and_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    let bad = gantry_config::STARTER
        .replace("command = \"bin/hello\"", "comand = \"bin/hello\"")
        .replace(
            "instances = 2\nstrategy = \"blue-green\"\nbake = \"30s\"",
            "instances = \"many\"\nstrategy = \"blue-green\"\nbake = \"30s\"",
        )
        .replace(
            "failure_threshold = 3",
            "failure_threshold = 3\nretries = 2",
        );
    std::fs::write(dir.path().join("gantry.toml"), bad).unwrap();
    let run = gantry_in(dir.path(), &["validate"]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    // cargo's form: the message, where, then the line with a caret under the span.
    let at = lines
        .iter()
        .position(|l| {
            l.starts_with(
                "error: service.comand: unknown key \"comand\"; did you mean \"command\"?",
            )
        })
        .unwrap_or_else(|| panic!("{}", run.stderr));
    assert_eq!(
        lines[at + 1..at + 5],
        [
            " --> gantry.toml:7:1",
            "  |",
            "7 | comand = \"bin/hello\"",
            "  | ^^^^^^",
        ],
        "{}",
        run.stderr
    );
    let instances = lines
        .iter()
        .position(|l| l.contains("environments.production.instances"))
        .unwrap_or_else(|| panic!("{}", run.stderr));
    let (source, caret) = (lines[instances + 3], lines[instances + 4]);
    assert!(
        source.ends_with(" | instances = \"many\""),
        "{}",
        run.stderr
    );
    assert_eq!(
        caret.find('^'),
        source.find("\"many\""),
        "the caret is under the value: {}",
        run.stderr
    );
    assert!(caret.ends_with(" ^^^^^^"), "{}", run.stderr);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("error: service.command: missing required key \"command\"")),
        "{}",
        run.stderr
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("error: health.retries: unknown key")),
        "{}",
        run.stderr
    );
    assert!(
        lines.iter().any(|l| l.contains(
            "environments.production.instances: expected an integer, found string \"many\""
        )),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("4 error(s)"), "{}", run.stderr);
}

#[test]
fn validate_shows_warnings_with_their_source_line_and_still_passes() {
    let dir = tempfile::tempdir().unwrap();
    let with_secret = gantry_config::STARTER.replace(
        "[service.env]\nRUST_LOG = \"info\"\n",
        "[service.env]\nRUST_LOG = \"info\"\nAPI_TOKEN = \"hunter2\"\n",
    );
    assert_ne!(with_secret, gantry_config::STARTER);
    std::fs::write(dir.path().join("gantry.toml"), with_secret).unwrap();
    let run = gantry_in(dir.path(), &["validate"]).ok();
    assert!(
        run.stdout.contains("gantry.toml is valid"),
        "{}",
        run.stdout
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    let at = lines
        .iter()
        .position(|l| {
            l.starts_with("warning: service.env.API_TOKEN: API_TOKEN looks like a secret")
        })
        .unwrap_or_else(|| panic!("{}", run.stderr));
    let (source, caret) = (lines[at + 3], lines[at + 4]);
    assert!(
        source.ends_with(" | API_TOKEN = \"hunter2\""),
        "{}",
        run.stderr
    );
    assert_eq!(caret.find('^'), source.find("API_TOKEN"), "{}", run.stderr);
    assert!(caret.ends_with(" ^^^^^^^^^"), "{}", run.stderr);
}

#[test]
fn validate_names_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    gantry_in(dir.path(), &["validate", "--config", "nope.toml"])
        .fails_with(4, "cannot read config file nope.toml");
}

#[test]
fn schema_command_prints_the_checked_in_schema() {
    let dir = tempfile::tempdir().unwrap();
    let run = gantry_in(dir.path(), &["schema"]).ok();
    let checked_in = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schema/gantry.schema.json"
    ))
    .unwrap();
    assert_eq!(run.stdout, checked_in);
}

#[test]
fn server_refuses_an_invalid_config_with_every_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gantry.toml"), "[service]\nname = 3\n").unwrap();
    let run = gantry_in(
        dir.path(),
        &["--data-dir", "d", "server", "--listen", "127.0.0.1:0"],
    );
    assert_eq!(run.code, 4, "an invalid configuration exits 4");
    assert!(
        run.stderr
            .contains("service.name: expected a string, found integer 3"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("missing required table [health]"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(" --> gantry.toml:2:8\n  |\n2 | name = 3\n  |        ^\n"),
        "the server shows the source line and a caret too: {}",
        run.stderr
    );
}
