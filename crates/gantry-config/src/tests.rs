//! Tests of loading and checking `gantry.toml`. Kept as one file though
//! long: the cases share the same minimal configs and diagnostic helpers;
//! one test module per concern would scatter those fixtures.

use super::*;

fn errors_of(src: &str) -> Vec<String> {
    match parse("gantry.toml", src) {
        Ok(_) => vec![],
        Err(ConfigError::Invalid { errors, .. }) => errors.iter().map(|d| d.to_string()).collect(),
        Err(e) => vec![e.to_string()],
    }
}

mod hosts;
mod migrations;
mod resources;
mod schema_keys;
mod schema_ranges;

#[test]
fn starter_file_is_valid_and_has_the_four_environments() {
    let loaded = parse("gantry.toml", STARTER).expect("starter validates");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(
        loaded.config.environment_names(),
        ["development", "integration", "staging", "production"],
        "file order is kept"
    );
    let prod = loaded.config.environment("production").unwrap();
    assert_eq!(prod.instances, 2);
    assert_eq!(prod.bake_ms, 30_000);
    assert_eq!(
        loaded.config.environment("staging").unwrap().strategy,
        Strategy::Rolling(Rolling::standard())
    );
    assert_eq!(prod.env.get("RUST_LOG").map(String::as_str), Some("warn"));
    assert_eq!(loaded.config.health.failure_threshold, 3);
}

#[test]
fn every_error_is_reported_at_once_with_location_and_path() {
    let src = r#"
[service]
name = "hello"
comand = "bin/hello"
args = ["--port", "{prot}"]

[health]
path = "healthz"
interval = "soon"
failure_threshold = 0

[environments.production]
listen = "localhost"
instances = "two"
strategy = "linear"
"#;
    let errors = errors_of(src);
    insta::assert_snapshot!(errors.join("\n"));
    assert_eq!(errors.len(), 9, "{errors:#?}");
}

#[test]
fn toml_syntax_errors_are_located() {
    let errors = errors_of("[service]\nname = \"x\nfoo");
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("gantry.toml:3:4: error: not valid TOML"),
        "{}",
        errors[0]
    );
    assert!(errors[0].contains("not valid TOML"));
}

#[test]
fn secrets_are_references_and_plain_secret_values_warn() {
    let src = STARTER.replace(
        "[service.secrets]",
        "[service.secrets]\nDATABASE_URL = { env = \"HELLO_DB\" }\nAPI_TOKEN_FILE = { file = \"/run/secrets/t\" }\nBROKEN = { env = \"A\", file = \"/b\" }",
    );
    let errors = errors_of(&src);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("service.secrets.BROKEN: a secret needs exactly one of"),
        "{}",
        errors[0]
    );

    let src = STARTER.replace(
        "RUST_LOG = \"info\"",
        "RUST_LOG = \"info\"\nDB_PASSWORD = \"hunter2\"",
    );
    let loaded = parse("gantry.toml", &src).unwrap();
    assert_eq!(loaded.warnings.len(), 1);
    assert!(loaded.warnings[0]
        .to_string()
        .contains("DB_PASSWORD looks like a secret"));
    assert!(
        !loaded.warnings[0].to_string().contains("hunter2"),
        "the value is never echoed"
    );
}

#[test]
fn reserved_and_duplicate_things_are_refused() {
    let src = STARTER
        .replace("RUST_LOG = \"info\"", "GANTRY_TOKEN = \"x\"")
        .replace("127.0.0.1:8082", "127.0.0.1:8081");
    let errors = errors_of(&src);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors
        .iter()
        .any(|e| e.contains("GANTRY_TOKEN is reserved")));
    assert!(errors
        .iter()
        .any(|e| e.contains("already used by environment \"development\"")));
}

#[test]
fn require_signature_needs_keys() {
    let src = STARTER.replace("require_signature = false", "require_signature = true");
    let errors = errors_of(&src);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].contains("environments.production.require_signature: requires at least one key")
    );
}

#[test]
fn checked_in_schema_is_current() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schema/gantry.schema.json"
    );
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        checked_in == json_schema(),
        "schema/gantry.schema.json is stale; run `cargo run -- schema > schema/gantry.schema.json`"
    );
}

#[test]
fn canary_steps_and_analysis_rules_are_validated() {
    let src = STARTER.replace(
        "[environments.production]\nlisten = \"127.0.0.1:8080\"\ninstances = 2\nstrategy = \"blue-green\"",
        "[environments.production]\nlisten = \"127.0.0.1:8080\"\ninstances = 2\nstrategy = \"canary\"\ncanary = { steps = [{ weight = 50, pause = \"1m\" }, { weight = 20 }, { weight = 80 }], promotion_tolerance = 5, max_pause = \"0s\" }",
    ) + "\n[analysis]\nmax_error_rate = 0.02\nmax_p95_factor = 2\nalpha = 2\n";
    let errors = errors_of(&src);
    let joined = errors.join("\n");
    assert!(
        joined.contains(
            "environments.production.canary.steps[1]: a step before the last needs a pause"
        ),
        "{joined}"
    );
    assert!(
        joined.contains("steps[1].weight: weights must rise step by step; 20 follows 50"),
        "{joined}"
    );
    assert!(
        joined
            .contains("steps[2].weight: the last step must send all traffic (weight 100), not 80"),
        "{joined}"
    );
    assert!(joined.contains("analysis.max_p95_factor: unknown key \"max_p95_factor\"; did you mean \"max_p99_factor\"?"), "{joined}");
    assert!(
        joined.contains("analysis.alpha: expected a number from 0.000000001 to 0.5"),
        "{joined}"
    );
    assert!(
        joined.contains(
            "environments.production.canary.promotion_tolerance: expected a number from 0 to 1"
        ),
        "{joined}"
    );
    assert!(
        joined.contains("environments.production.canary.max_pause: must be longer than zero"),
        "{joined}"
    );
    assert_eq!(errors.len(), 7, "{joined}");
}

#[test]
fn a_canary_config_becomes_steps_and_rules() {
    let src = STARTER.replace(
        "[environments.production]\nlisten = \"127.0.0.1:8080\"\ninstances = 2\nstrategy = \"blue-green\"",
        "[environments.production]\nlisten = \"127.0.0.1:8080\"\ninstances = 2\nstrategy = \"canary\"\ncanary = { steps = [{ weight = 10, pause = \"30s\" }, { weight = 50, pause = \"until-promoted\" }, { weight = 100 }], interval = \"500ms\", promotion_tolerance = 0.01, max_pause = \"15m\" }",
    ) + "\n[analysis]\nmax_error_rate = 0.02\nmax_p50_factor = false\n";
    let config = parse("gantry.toml", &src).unwrap().config;
    let Strategy::Canary(c) = &config.environment("production").unwrap().strategy else {
        panic!("canary")
    };
    assert_eq!(
        c.steps,
        [
            CanaryStep {
                weight: 10,
                pause: Pause::For { ms: 30_000 }
            },
            CanaryStep {
                weight: 50,
                pause: Pause::UntilPromoted
            },
            CanaryStep {
                weight: 100,
                pause: Pause::For { ms: 0 }
            },
        ]
    );
    assert_eq!(c.interval_ms, 500);
    assert_eq!((c.promotion_tolerance, c.max_pause_ms), (0.01, 900_000));
    assert_eq!(config.analysis.max_error_rate, Some(0.02));
    assert_eq!(
        config.analysis.max_p50_factor, None,
        "false turns a rule off"
    );
    assert_eq!(
        config.analysis.max_p99_factor,
        Some(3.0),
        "others keep the standards' defaults"
    );
    // strategy = "canary" without a table: the standards' 10 → 50 → 100.
    let src = STARTER.replace(
        "strategy = \"blue-green\"\nbake = \"2s\"",
        "strategy = \"canary\"\nbake = \"2s\"",
    );
    let config = parse("gantry.toml", &src).unwrap().config;
    assert_eq!(
        config.environment("integration").unwrap().strategy,
        Strategy::Canary(Canary::standard())
    );
}

const BASE: &str = r#"
[service]
name = "hello"
command = "bin/hello"

[health]
path = "/healthz"

[environments.production]
listen = "127.0.0.1:8080"
instances = 3
"#;

#[test]
fn the_4xx_comparison_is_on_by_default_and_can_be_turned_off() {
    let config = parse("gantry.toml", STARTER).unwrap().config;
    assert!(config.analysis.compare_client_errors, "on by default");
    let off = parse(
        "gantry.toml",
        &(STARTER.to_owned() + "\n[analysis]\ncompare_client_errors = false\n"),
    )
    .unwrap()
    .config;
    assert!(!off.analysis.compare_client_errors);
    assert!(off.analysis.compare_errors, "the 5xx comparison stays on");
    let errors = errors_of(&(STARTER.to_owned() + "\n[analysis]\ncompare_client_errors = 0.1\n"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("analysis.compare_client_errors: expected true or false, found"),
        "{errors:?}"
    );
}

#[test]
fn rolling_smoke_and_sticky_settings_are_decoded() {
    let src = format!(
        r#"{BASE}strategy = "rolling"
rolling = {{ max_surge = 2 }}
sticky = {{ header = "X-User" }}

[environments.production.smoke]
timeout = "1m"

[[environments.production.smoke.checks]]
name = "home"
path = "/"
body_contains = "hello"

[[environments.production.smoke.checks]]
name = "status"
path = "/status.json"
critical = false
json = {{ pointer = "/ok", equals = true }}

[[environments.production.smoke.checks]]
name = "script"
command = ["./smoke.sh", "--quick"]
timeout = "30s"
"#
    );
    let loaded = parse("gantry.toml", &src).expect("valid");
    let prod = loaded.config.environment("production").unwrap();
    assert_eq!(
        prod.strategy,
        Strategy::Rolling(Rolling {
            max_surge: 2,
            max_unavailable: 0,
            analysis_ms: 0,
        })
    );
    assert_eq!(prod.sticky, Some(Sticky::Header("x-user".into())));
    let smoke = prod.smoke.as_ref().unwrap();
    assert_eq!(smoke.timeout_ms, 60_000);
    assert_eq!(smoke.checks.len(), 3);
    assert!(smoke.checks[0].critical);
    assert!(!smoke.checks[1].critical);
    match &smoke.checks[1].probe {
        SmokeProbe::Http {
            json_pointer,
            json_equals,
            expect_status,
            method,
            ..
        } => {
            assert_eq!(json_pointer.as_deref(), Some("/ok"));
            assert_eq!(json_equals.as_deref(), Some("true"));
            assert_eq!((*expect_status, method.as_str()), (200, "GET"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        smoke.checks[2].probe,
        SmokeProbe::Command {
            argv: vec!["./smoke.sh".into(), "--quick".into()]
        }
    );
    assert_eq!(smoke.checks[2].timeout_ms, 30_000);
}

#[test]
fn bad_rolling_smoke_and_sticky_settings_are_refused() {
    let src = format!(
        r#"{BASE}strategy = "rolling"
rolling = {{ max_surge = 0, max_unavailable = 0 }}
sticky = {{ cookie = "a b", header = "x" }}

[environments.production.smoke]
timeout = "soon"

[[environments.production.smoke.checks]]
name = "home"
path = "home"
method = "FETCH"
expect_status = 700

[[environments.production.smoke.checks]]
name = "home"
command = []
body_contains = "x"

[[environments.production.smoke.checks]]
name = "both"
path = "/"
command = ["true"]
json = {{ pointer = "status" }}
"#
    );
    let errors = errors_of(&src);
    let want = [
        "environments.production.rolling: max_surge and max_unavailable are both 0",
        "environments.production.sticky: set exactly one of cookie",
        "environments.production.smoke.timeout: \"soon\" is not a duration",
        "environments.production.smoke.checks[0].path: \"home\" is not a request path",
        "environments.production.smoke.checks[0].method: unknown method \"FETCH\"",
        "environments.production.smoke.checks[0].expect_status: expected an integer from 100 to 599",
        "environments.production.smoke.checks[1].body_contains: body_contains applies to HTTP checks",
        "environments.production.smoke.checks[1].command: expected a program and its arguments",
        "environments.production.smoke.checks[2]: set exactly one of path",
    ];
    for w in want {
        assert!(
            errors.iter().any(|e| e.contains(w)),
            "missing {w:?} in {errors:#?}"
        );
    }
    // Settings for another strategy are a mistake, not silently ignored.
    let src = format!("{BASE}strategy = \"canary\"\nrolling = {{ max_surge = 1 }}\n");
    let errors = errors_of(&src);
    assert!(
        errors[0].contains("rolling settings are set but the strategy is not \"rolling\""),
        "{errors:?}"
    );
}

#[test]
fn retention_defaults_to_a_year_and_refuses_less_than_a_day() {
    let loaded = parse("gantry.toml", BASE).unwrap();
    assert_eq!(loaded.config.retention.audit_ms, 365 * 86_400_000);
    let src = format!("[retention]\naudit = \"400d\"\n{BASE}");
    assert_eq!(
        parse("gantry.toml", &src)
            .unwrap()
            .config
            .retention
            .audit_ms,
        400 * 86_400_000
    );
    let errors = errors_of(&format!("[retention]\naudit = \"1h\"\n{BASE}"));
    assert!(
        errors[0].contains("retention.audit: must be at least one day"),
        "{errors:?}"
    );
}

#[test]
fn artifact_limits_default_and_are_validated() {
    let loaded = parse("gantry.toml", BASE).unwrap();
    assert_eq!(loaded.config.artifacts, ArtifactLimits::standard());
    let src = format!("[artifacts]\nmax_unpacked_size = \"512MiB\"\nmax_entries = 500\n{BASE}");
    assert_eq!(
        parse("gantry.toml", &src).unwrap().config.artifacts,
        ArtifactLimits {
            max_unpacked_bytes: 512 << 20,
            max_entries: 500
        }
    );
    let src = format!("[artifacts]\nmax_unpacked_size = 1048576\n{BASE}");
    assert_eq!(
        parse("gantry.toml", &src)
            .unwrap()
            .config
            .artifacts
            .max_unpacked_bytes,
        1 << 20
    );
    let errors = errors_of(&format!(
        "[artifacts]\nmax_unpacked_size = \"2 parsecs\"\nmax_entries = 0\nmax_size = 1\n{BASE}"
    ));
    let joined = errors.join("\n");
    assert!(
        joined.contains("artifacts.max_unpacked_size: expected a size such as \"512MiB\""),
        "{joined}"
    );
    assert!(
        joined.contains("artifacts.max_entries: expected an integer from 1 to"),
        "{joined}"
    );
    assert!(
        joined.contains("artifacts.max_size: unknown key \"max_size\""),
        "{joined}"
    );
    assert_eq!(errors.len(), 3, "no phantom errors: {joined}");
}

#[test]
fn governance_tables_are_decoded_and_bad_ones_named() {
    let loaded = parse("gantry.toml", STARTER).unwrap();
    let prod = loaded.config.environment("production").unwrap();
    assert_eq!(prod.approval.required, 1);
    assert_eq!(
        prod.approval.lead_time,
        gantry_core::governance::LeadTime::BusinessDays(5)
    );
    assert_eq!(prod.gates, GatePolicy::standard());
    assert_eq!(prod.freezes.len(), 1);
    assert!(!loaded.config.environment("staging").unwrap().optional);

    let src = STARTER.replace(
        "required = 1\nlead_time = \"5 business days\"",
        "required = 11\nlead_time = \"five business days\"",
    )
    .replace("weekly = { from = \"fri 16:00\", to = \"mon 08:00\" }", "weekly = { from = \"friday 4pm\", to = \"mon 08:00\" }")
    .replace("max_severity = \"medium\"", "max_severity = \"severe\"")
        + "\n[[environments.staging.freeze]]\nname = \"backwards\"\nfrom = \"2027-01-02T00:00:00Z\"\nto = \"2027-01-01T00:00:00Z\"\n";
    let errors = errors_of(&src).join("\n");
    for needle in [
        "environments.production.approval.required: expected an integer from 0 to 10",
        "environments.production.approval.lead_time: \"five\" business days: expected a whole number from 0 to 60",
        "environments.production.freeze[0].weekly.from: \"friday 4pm\" is not a weekday and time",
        "environments.production.gates.max_severity: unknown severity \"severe\"",
        "environments.staging.freeze[0].to: must be later than from",
    ] {
        assert!(errors.contains(needle), "{needle:?} in:\n{errors}");
    }
    // rehearsal_in is checked against the environments only once they all decode.
    let src = STARTER.replace("# rehearsal_in = \"staging\"", "rehearsal_in = \"qa\"");
    let errors = errors_of(&src).join("\n");
    assert!(
        errors.contains("environments.production.gates.rehearsal_in: \"qa\" is not an environment before production"),
        "{errors}"
    );
}

#[test]
fn notification_channels_are_validated() {
    let good = STARTER.to_owned()
        + r#"
[[notify]]
name = "hooks"
kind = "webhook"
url = "http://127.0.0.1:9/hook"
secret = { env = "HOOK_SECRET" }
environments = ["production"]

[[notify]]
name = "mail"
kind = "email"
smtp = { host = "smtp.example.com" }
from = "gantry@example.com"
to = ["ops@example.com"]
"#;
    let loaded = parse("gantry.toml", &good).expect("valid channels");
    assert_eq!(loaded.config.notify.len(), 2);
    let mail = &loaded.config.notify[1];
    assert!(
        matches!(&mail.target, NotifyTarget::Email(e) if e.port == 587 && e.tls == SmtpTls::StartTls)
    );
    assert_eq!(
        mail.events,
        gantry_core::notify::NoticeKind::standard_for(gantry_core::notify::ChannelKind::Email)
    );

    let bad = STARTER.to_owned()
        + r#"
[[notify]]
name = "a"
kind = "teams"

[[notify]]
name = "b"
kind = "webhook"
url = "http://x"

[[notify]]
name = "c"
kind = "slack"
url = "http://x"
events = ["deployed"]

[[notify]]
name = "d"
kind = "pagerduty"
routing_key = "plain-key"
environments = ["qa"]

[[notify]]
name = "e"
kind = "email"
smtp = { host = "h", tls = "ssl" }
from = "not-an-address"
to = []
"#;
    let errors = errors_of(&bad).join("\n");
    for needle in [
        "notify[0].kind: unknown channel kind \"teams\"",
        "notify[1].secret: a webhook (its payloads are signed with HMAC-SHA256) channel needs \"secret\"",
        "notify[2].events: unknown event \"deployed\"",
        "notify[3].environments: \"qa\" is not an environment",
        "notify[4].smtp.tls: unknown tls mode \"ssl\"",
        "notify[4].to: give at least one recipient",
    ] {
        assert!(errors.contains(needle), "{needle:?} in:\n{errors}");
    }
    // A plain secret is allowed, and warned about.
    let plain = STARTER.to_owned()
        + "\n[[notify]]\nname = \"pd\"\nkind = \"pagerduty\"\nrouting_key = \"abc\"\n";
    let loaded = parse("gantry.toml", &plain).unwrap();
    assert!(loaded
        .warnings
        .iter()
        .any(|w| w.path == "notify[0].routing_key"));
}

/// Every error of `src`, as diagnostics (empty when it is valid).
fn diagnostics_of(src: &str) -> Vec<Diagnostic> {
    match parse("gantry.toml", src) {
        Ok(_) => vec![],
        Err(ConfigError::Invalid { errors, .. }) => errors,
        Err(e) => panic!("{e}"),
    }
}

/// 1-based line of the first occurrence of `needle` in `src`.
fn line_of(src: &str, needle: &str) -> usize {
    let at = src
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in source"));
    src[..at].matches('\n').count() + 1
}

/// `src` with the first `old` after `section` replaced by `new`.
fn mutate(src: &str, section: &str, old: &str, new: &str) -> String {
    let start = src
        .find(section)
        .unwrap_or_else(|| panic!("no {section:?}"));
    let at = start
        + src[start..]
            .find(old)
            .unwrap_or_else(|| panic!("no {old:?} after {section:?}"));
    format!("{}{new}{}", &src[..at], &src[at + old.len()..])
}

#[test]
fn listens_on_overlapping_addresses_are_refused() {
    // Routers bind with SO_REUSEPORT, so the kernel would not refuse these:
    // the wildcard environment would take the other's traffic.
    for (first, second) in [
        ("0.0.0.0:8081", "127.0.0.1:8081"),
        ("127.0.0.1:8081", "0.0.0.0:8081"),
        ("[::]:8081", "127.0.0.1:8081"),
        ("0.0.0.0:8081", "[::]:8081"),
        ("[::ffff:127.0.0.1]:8081", "127.0.0.1:8081"),
        ("127.0.0.1:8081", "127.0.0.1:8081"),
    ] {
        let src = STARTER
            .replace("\"127.0.0.1:8081\"", &format!("{first:?}"))
            .replace("\"127.0.0.1:8082\"", &format!("{second:?}"));
        let errors = diagnostics_of(&src);
        assert_eq!(errors.len(), 1, "{first} / {second}: {errors:#?}");
        let e = &errors[0];
        assert_eq!(e.path, "environments.integration.listen");
        assert_eq!(e.line, line_of(&src, "[environments.integration]") + 1);
        assert_eq!(e.column, "listen = ".len() + 1, "{e}");
        assert!(
            e.message
                .contains(&format!("{second:?} overlaps {first:?}"))
                && e.message.contains("environment \"development\""),
            "{e}"
        );
    }
    // Different ports, or different specific addresses, are fine.
    for (first, second) in [
        ("0.0.0.0:8081", "127.0.0.1:8082"),
        ("127.0.0.1:8081", "127.0.0.2:8081"),
        ("0.0.0.0:8081", "[::1]:8081"),
    ] {
        let src = STARTER
            .replace("\"127.0.0.1:8081\"", &format!("{first:?}"))
            .replace("\"127.0.0.1:8082\"", &format!("{second:?}"));
        assert_eq!(diagnostics_of(&src), [], "{first} / {second}");
    }
}

#[test]
fn nul_bytes_in_anything_passed_to_exec_are_refused() {
    let smoke = "\n[environments.staging.smoke]\n[[environments.staging.smoke.checks]]\nname = \"script\"\ncommand = [\"./smoke.sh\", \"a\\u0000b\"]\n";
    let cases: [(String, &str); 6] = [
        (
            STARTER.replace("command = \"bin/hello\"", "command = \"bin/he\\u0000llo\""),
            "service.command",
        ),
        (
            STARTER.replace(
                "args = [\"--port\", \"{port}\"]",
                "args = [\"--port\\u0000\", \"{port}\"]",
            ),
            "service.args[0]",
        ),
        (
            STARTER.replace("RUST_LOG = \"info\"", "RUST_LOG = \"in\\u0000fo\""),
            "service.env.RUST_LOG",
        ),
        (
            STARTER.replace("RUST_LOG = \"warn\"", "RUST_LOG = \"\\u0000\""),
            "environments.production.env.RUST_LOG",
        ),
        (
            STARTER.replace(
                "[service.secrets]",
                "[service.secrets]\nKEY = { file = \"/run/k\\u0000\" }",
            ),
            "service.secrets.KEY.file",
        ),
        (
            mutate(
                STARTER,
                "[environments.staging]",
                "\n[environments.production]",
                &format!("{smoke}\n[environments.production]"),
            ),
            "environments.staging.smoke.checks[0].command[1]",
        ),
    ];
    for (src, path) in cases {
        let errors = diagnostics_of(&src);
        assert_eq!(errors.len(), 1, "{path}: {errors:#?}");
        assert_eq!(errors[0].path, path);
        assert!(errors[0].message.contains("NUL"), "{}", errors[0]);
        assert_eq!(errors[0].line, line_of(&src, "\\u0000"), "{}", errors[0]);
    }
}

#[test]
fn secret_references_must_name_a_possible_variable() {
    for (name, expected) in [
        ("A=B", "must not contain '='"),
        ("A\\u0000B", "must not contain NUL"),
        ("", "must not be empty"),
    ] {
        let src = STARTER.replace(
            "[service.secrets]",
            &format!("[service.secrets]\nDATABASE_URL = {{ env = \"{name}\" }}"),
        );
        let errors = diagnostics_of(&src);
        assert_eq!(errors.len(), 1, "{name}: {errors:#?}");
        assert_eq!(errors[0].path, "service.secrets.DATABASE_URL.env");
        assert!(errors[0].message.contains(expected), "{}", errors[0]);
    }
    // The same rule for a channel's secret.
    let src = STARTER.to_owned()
        + "\n[[notify]]\nname = \"pd\"\nkind = \"pagerduty\"\nrouting_key = { env = \"PD=KEY\" }\n";
    let errors = diagnostics_of(&src);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].path, "notify[0].routing_key.env");
}

#[test]
fn health_and_smoke_paths_are_request_paths() {
    for bad in [
        "/healthz\\r\\nX-Injected: 1",
        "/health z",
        "healthz",
        "/a\\tb",
        "",
    ] {
        let src = STARTER.replace("path = \"/healthz\"", &format!("path = \"{bad}\""));
        let errors = diagnostics_of(&src);
        assert_eq!(errors.len(), 1, "{bad}: {errors:#?}");
        assert_eq!(errors[0].path, "health.path");
        assert!(
            errors[0]
                .message
                .contains("expected an absolute path starting with '/'"),
            "{}",
            errors[0]
        );
        let smoke = format!("\n[environments.staging.smoke]\n[[environments.staging.smoke.checks]]\nname = \"home\"\npath = \"{bad}\"\n");
        let src = mutate(
            STARTER,
            "[environments.staging]",
            "\n[environments.production]",
            &format!("{smoke}\n[environments.production]"),
        );
        let errors = diagnostics_of(&src);
        assert_eq!(errors.len(), 1, "{bad}: {errors:#?}");
        assert_eq!(errors[0].path, "environments.staging.smoke.checks[0].path");
    }
}

fn webhook(url: &str) -> String {
    STARTER.to_owned()
        + &format!(
            "\n[[notify]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = {{ env = \"HOOK_SECRET\" }}\n"
        )
}

#[test]
fn notification_urls_must_be_http_urls() {
    for good in [
        "http://127.0.0.1:9/hook",
        "https://hooks.example.com/gantry?team=ops",
        "https://[::1]:8443/x",
    ] {
        assert_eq!(diagnostics_of(&webhook(good)), [], "{good}");
    }
    for (bad, expected) in [
        ("file:///etc/passwd", "scheme \"file\""),
        ("not a url", "spaces"),
        ("not-a-url", "not a URL"),
        ("http://example.com:99999/", "not a URL"),
        (
            "http://example.com/\\r\\nX-Injected: 1",
            "control characters",
        ),
        ("http://exa mple.com/", "spaces"),
        ("http://", "not a URL"),
        ("mailto:ops@example.com", "scheme \"mailto\""),
    ] {
        let src = webhook(bad);
        let errors = diagnostics_of(&src);
        assert_eq!(errors.len(), 1, "{bad}: {errors:#?}");
        let e = &errors[0];
        assert_eq!(e.path, "notify[0].url");
        assert_eq!(e.line, line_of(&src, &format!("url = \"{bad}")));
        assert!(
            e.message.contains("expected an http:// or https:// URL"),
            "{e}"
        );
        assert!(e.message.contains(expected), "{bad}: {e}");
    }
    // PagerDuty's URL and a Slack URL written in the file obey the same rule.
    let src = STARTER.to_owned()
        + "\n[[notify]]\nname = \"pd\"\nkind = \"pagerduty\"\nrouting_key = { env = \"PD\" }\nurl = \"ftp://events.example.com/\"\n\n[[notify]]\nname = \"chat\"\nkind = \"slack\"\nurl = \"javascript:alert(1)\"\n";
    let paths: Vec<String> = diagnostics_of(&src).into_iter().map(|d| d.path).collect();
    assert_eq!(paths, ["notify[0].url", "notify[1].url"]);
}

fn mail(smtp: &str, from: &str, to: &str) -> String {
    STARTER.to_owned()
        + &format!(
            "\n[[notify]]\nname = \"mail\"\nkind = \"email\"\nsmtp = {{ {smtp} }}\nfrom = \"{from}\"\nto = [\"{to}\"]\n"
        )
}

#[test]
fn email_fields_refuse_line_breaks_and_bad_addresses() {
    let ok = mail(
        "host = \"smtp.example.com\", username = \"gantry\", password = { env = \"SMTP_PASSWORD\" }",
        "Gantry <gantry@example.com>",
        "ops@example.com",
    );
    assert_eq!(diagnostics_of(&ok), []);
    let host = "host = \"smtp.example.com\"";
    for (src, path) in [
        (
            mail(
                "host = \"smtp.example.com\\r\\nRCPT TO:<x@y>\"",
                "g@example.com",
                "o@example.com",
            ),
            "notify[0].smtp.host",
        ),
        (
            mail(
                "host = \"smtp example.com\"",
                "g@example.com",
                "o@example.com",
            ),
            "notify[0].smtp.host",
        ),
        (
            mail(
                "host = \"smtp.example.com\", username = \"u\\nAUTH\"",
                "g@example.com",
                "o@example.com",
            ),
            "notify[0].smtp.username",
        ),
        (
            mail(
                host,
                "g@example.com\\r\\nBcc: all@example.com",
                "o@example.com",
            ),
            "notify[0].from",
        ),
        (
            mail(
                host,
                "g@example.com",
                "o@example.com\\nBcc: all@example.com",
            ),
            "notify[0].to[0]",
        ),
        (mail(host, "g@example.com", "o@"), "notify[0].to[0]"),
        (
            mail(host, "g@example.com", "a@example.com, b@example.com"),
            "notify[0].to[0]",
        ),
        (mail(host, "nobody", "o@example.com"), "notify[0].from"),
    ] {
        let errors = diagnostics_of(&src);
        assert_eq!(errors.len(), 1, "{path}: {errors:#?}");
        assert_eq!(errors[0].path, path, "{}", errors[0]);
    }
}

#[test]
fn an_smtp_password_is_never_sent_in_plain_text_off_this_machine() {
    let pw = "password = { env = \"SMTP_PASSWORD\" }, username = \"gantry\"";
    let src = mail(
        &format!("host = \"smtp.example.com\", tls = \"none\", {pw}"),
        "g@example.com",
        "o@example.com",
    );
    let errors = diagnostics_of(&src);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].path, "notify[0].smtp.password");
    assert!(
        errors[0].message.contains("tls = \"none\""),
        "{}",
        errors[0]
    );
    // ...and the channel's other mistakes are still reported beside it.
    let src = mail(
        &format!("host = \"smtp.example.com\", tls = \"none\", {pw}"),
        "nobody",
        "o@example.com",
    );
    let paths: Vec<String> = diagnostics_of(&src).into_iter().map(|d| d.path).collect();
    assert_eq!(paths, ["notify[0].smtp.password", "notify[0].from"]);
    // Loopback relays may take plain text, and TLS may carry a password anywhere.
    for smtp in [
        format!("host = \"127.0.0.1\", tls = \"none\", {pw}"),
        format!("host = \"localhost\", tls = \"none\", {pw}"),
        format!("host = \"::1\", tls = \"none\", {pw}"),
        format!("host = \"smtp.example.com\", tls = \"starttls\", {pw}"),
        "host = \"smtp.example.com\", tls = \"none\"".to_owned(),
    ] {
        assert_eq!(
            diagnostics_of(&mail(&smtp, "g@example.com", "o@example.com")),
            [],
            "{smtp}"
        );
    }
}

#[test]
fn one_bad_field_gives_exactly_one_error_at_that_field() {
    // The starter, with cross-references between environments to break.
    let base = STARTER.replace("# rehearsal_in = \"staging\"", "rehearsal_in = \"staging\"")
        + "\n[[notify]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"https://hooks.example.com/gantry\"\nsecret = { env = \"HOOK_SECRET\" }\nenvironments = [\"staging\", \"production\"]\n";
    assert_eq!(diagnostics_of(&base), []);
    let cases = [
        ("[service]", "command = \"bin/hello\"", "command = \"\""),
        ("[service]", "\"{port}\"", "\"{prot}\""),
        ("[service.env]", "RUST_LOG = \"info\"", "RUST_LOG = 1"),
        ("[health]", "path = \"/healthz\"", "path = \"healthz\""),
        ("[health]", "interval = \"1s\"", "interval = \"soon\""),
        ("[health]", "failure_threshold = 3", "failure_threshold = 0"),
        ("[signing]", "public_keys = []", "public_keys = [\"x\"]"),
        ("[retention]", "audit = \"365d\"", "audit = \"1h\""),
        (
            "[environments.development]",
            "listen = \"127.0.0.1:8081\"",
            "listen = \"127.0.0.1:99999\"",
        ),
        (
            "[environments.development]",
            "instances = 1",
            "instances = 0",
        ),
        ("[service]", "name = \"hello\"", "name = \"hel lo\""),
        (
            "[environments.production.approval]",
            "lead_time = \"5 business days\"",
            "lead_time = \"soon\"",
        ),
        (
            "[[notify]]\nname = \"hook\"",
            "{ env = \"HOOK_SECRET\" }",
            "{ env = \"HOOK=SECRET\" }",
        ),
        (
            "[environments.integration]",
            "strategy = \"blue-green\"",
            "strategy = \"linear\"",
        ),
        (
            "[environments.staging]",
            "bake = \"10s\"",
            "bake = \"10 parsecs\"",
        ),
        ("[environments.staging]", "bake = \"10s\"", "baek = \"10s\""),
        (
            "[environments.staging]",
            "listen = \"127.0.0.1:8083\"",
            "listen = \"nowhere\"",
        ),
        (
            "[environments.staging]",
            "instances = 2",
            "instances = \"two\"",
        ),
        (
            "[environments.staging]",
            "strategy = \"rolling\"",
            "strategy = \"linear\"",
        ),
        ("[environments.staging]", "max_surge = 1", "max_surge = -1"),
        (
            "[environments.production]",
            "strategy = \"blue-green\"",
            "strategy = 7",
        ),
        (
            "[environments.production]",
            "bake = \"30s\"",
            "bake = \"forever\"",
        ),
        (
            "[environments.production]",
            "listen = \"127.0.0.1:8080\"",
            "listen = \"0.0.0.0:8083\"",
        ),
        (
            "[environments.production]",
            "require_signature = false",
            "require_signature = \"no\"",
        ),
        (
            "[environments.production.approval]",
            "required = 1",
            "required = 11",
        ),
        (
            "[environments.production.gates]",
            "unit = 100",
            "unit = 101",
        ),
        (
            "[environments.production.gates]",
            "max_severity = \"medium\"",
            "max_severity = \"severe\"",
        ),
        (
            "[environments.production.gates]",
            "rehearsal_in = \"staging\"",
            "rehearsal_in = \"qa\"",
        ),
        (
            "[[environments.production.freeze]]",
            "from = \"fri 16:00\"",
            "from = \"friday\"",
        ),
        (
            "[environments.production.env]",
            "RUST_LOG = \"warn\"",
            "RUST_LOG = false",
        ),
        (
            "[[notify]]\nname = \"hook\"",
            "kind = \"webhook\"",
            "kind = \"teams\"",
        ),
        (
            "[[notify]]\nname = \"hook\"",
            "url = \"https://hooks.example.com/gantry\"",
            "url = \"not a url\"",
        ),
        (
            "[[notify]]\nname = \"hook\"",
            "\"staging\", \"production\"",
            "\"staging\", \"qa\"",
        ),
    ];
    for (section, old, new) in cases {
        let src = mutate(&base, section, old, new);
        let errors = diagnostics_of(&src);
        assert_eq!(
            errors.len(),
            1,
            "{new:?} in {section} gives {} errors:\n{}",
            errors.len(),
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
        let start = src.find(section).unwrap();
        let line = line_of(&src[start..], new) + src[..start].matches('\n').count();
        assert_eq!(errors[0].line, line, "{new:?} in {section}: {}", errors[0]);
    }
    // A broken [environments] table is one error, not one more for every
    // channel that names an environment.
    let src = "environments = 5\n".to_owned()
        + &base[..base.find("[environments.development]").unwrap()]
        + &base[base.find("[[notify]]\nname = \"hook\"").unwrap()..];
    let errors = diagnostics_of(&src);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].path, "environments");
}

#[test]
fn the_watch_after_a_full_rollout_is_the_standards_30_minutes_in_the_starter_and_bounded() {
    let starter = parse("gantry.toml", STARTER).unwrap().config;
    let prod = starter.environment("production").unwrap();
    assert_eq!(prod.watch_ms, 30 * 60_000);
    let s = starter.deploy_settings(prod, gantry_core::DeploymentKind::Deploy);
    assert_eq!(s.watch.as_ref().unwrap().duration_ms, 30 * 60_000);
    assert_eq!(
        s.watch.unwrap().interval_ms,
        10_000,
        "30 looks… every 10 s at most"
    );
    let rollback = starter.deploy_settings(prod, gantry_core::DeploymentKind::Rollback);
    assert!(rollback.watch.is_none(), "a rollback is not watched");
    assert_eq!(starter.environment("staging").unwrap().watch_ms, 0);

    let with = |watch: &str| STARTER.replacen("watch = \"30m\"", &format!("watch = {watch}"), 1);
    assert!(errors_of(&with("\"0s\"")).is_empty(), "0s: no watch");
    // Absent on the last environment: off, with a warning naming the field;
    // "0s" says no watch on purpose, without one.
    let warnings = |src: &str| -> Vec<String> {
        parse("gantry.toml", src)
            .unwrap()
            .warnings
            .iter()
            .map(|w| w.to_string())
            .collect()
    };
    let absent = STARTER.replacen("watch = \"30m\"\n", "", 1);
    assert_eq!(
        parse("gantry.toml", &absent)
            .unwrap()
            .config
            .environment("production")
            .unwrap()
            .watch_ms,
        0
    );
    let said = warnings(&absent);
    assert!(
        said.len() == 1 && said[0].contains("environments.production.watch: absent, so the last environment of the promotion order is not watched"),
        "{said:?}"
    );
    assert!(warnings(&with("\"0s\"")).is_empty());
    let errors = errors_of(&with("\"25h\""));
    assert!(
        errors.len() == 1 && errors[0].contains("environments.production.watch: longer than a day"),
        "{errors:?}"
    );
    let rolling = STARTER.replacen(
        "rolling = { max_surge = 1, max_unavailable = 0 }",
        "rolling = { max_surge = 1, max_unavailable = 0, analysis = \"2h\" }",
        1,
    );
    let errors = errors_of(&rolling);
    assert!(
        errors.len() == 1
            && errors[0].contains("environments.staging.rolling.analysis: expected at most \"1h\""),
        "{errors:?}"
    );
    assert_eq!(
        errors_of(&with("\"500ms\"")),
        [format!(
            "gantry.toml:{}:9: error: environments.production.watch: shorter than the analysis needs to look at the release even once; expected \"0s\" (no watch) or at least \"1s\"",
            STARTER.lines().position(|l| l.starts_with("watch = ")).unwrap() + 1
        )]
    );
    let errors = errors_of(&with("30"));
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].contains("environments.production.watch"),
        "{errors:?}"
    );
}

#[test]
fn metric_queries_are_checked_at_their_field() {
    let base = STARTER.replacen(
        "[environments.development]",
        "[metrics.prometheus]\nurl = \"http://127.0.0.1:9090\"\n\n[environments.development]",
        1,
    );
    let with = |src: &str, q: &str| format!("{src}\n[[analysis.queries]]\n{q}\n");
    let ok = with(
        &base,
        "name = \"q\"\nquery = 'max(x{release=\"{release}\"})'\nabove = 1",
    );
    assert!(errors_of(&ok).is_empty(), "{:?}", errors_of(&ok));
    for (q, expected) in [
        (
            "name = \"q\"\nquery = 'max(x{release=\"{version}\"})'\nabove = 1",
            "analysis.queries[0].query: unknown placeholder {version}; expected one of {env}, {release}, {pool}, {interval}",
        ),
        (
            "name = \"q\"\nquery = 'max(x)'",
            "analysis.queries[0]: no condition; set one of above, below, above_baseline",
        ),
        (
            "name = \"q\"\nquery = 'max(x)'\nabove = 1\nbelow_baseline = 0.5",
            "analysis.queries[0]: 2 conditions (above, below_baseline); set exactly one",
        ),
        (
            "name = \"q\"\nquery = 'max(x)'\nabove = \"high\"",
            "analysis.queries[0].above: expected a number, found string",
        ),
        (
            "name = \"q\"\nquery = 'max(x)'\nabove = 1\nno_data = \"ignore\"",
            "analysis.queries[0].no_data: \"ignore\" is not a no-data policy; expected \"wait\", \"fail\" or \"pass\"",
        ),
        (
            "name = \"q\"\nquery = 'max(x)'\nabove = 1\nno_data_timeout = \"2h\"",
            "analysis.queries[0].no_data_timeout: expected a duration from 1ms to 1h",
        ),
    ] {
        let errors = errors_of(&with(&base, q));
        assert!(
            errors.len() == 1 && errors[0].contains(expected),
            "{q}: {errors:#?}"
        );
    }
    // Queries with no server to ask.
    let errors = errors_of(&with(STARTER, "name = \"q\"\nquery = 'max(x)'\nabove = 1"));
    assert!(
        errors.iter().any(|e| e.contains(
            "analysis.queries: queries need a metrics server to ask; add [metrics.prometheus]"
        )),
        "{errors:#?}"
    );
    // A URL that is not http(s).
    let errors = errors_of(&base.replace("http://127.0.0.1:9090", "ftp://x"));
    assert!(
        errors[0].contains("metrics.prometheus.url: its scheme \"ftp\" is not http or https"),
        "{errors:#?}"
    );
}

#[test]
fn count_rules_are_decoded_and_checked_at_their_field() {
    use gantry_core::analysis::queries::{Condition, CountCondition};
    let base = STARTER.replacen(
        "[environments.development]",
        "[metrics.prometheus]\nurl = \"http://127.0.0.1:9090\"\n\n[environments.development]",
        1,
    );
    let with = |q: &str| format!("{base}\n[[analysis.queries]]\nname = \"pay\"\n{q}\n");
    let ok = with("successes = 'sum(ok_total{release=\"{release}\"})'\ntotal = 'sum(all_total{release=\"{release}\"})'\nmax_ratio = 0.02");
    let config = parse("gantry.toml", &ok).unwrap().config;
    let rule = &config.analysis.queries[0];
    assert_eq!(rule.query, "sum(ok_total{release=\"{release}\"})");
    assert_eq!(
        rule.condition,
        Condition::Counts(CountCondition {
            total: "sum(all_total{release=\"{release}\"})".into(),
            successes: true,
            max_ratio: Some(0.02),
            compare: true,
        })
    );
    assert_eq!(
        rule.promql(),
        [
            ("successes", "sum(ok_total{release=\"{release}\"})"),
            ("total", "sum(all_total{release=\"{release}\"})")
        ]
    );
    for (q, expected) in [
        (
            "errors = 'sum(e)'",
            "analysis.queries[0].total: missing; a count rule needs the counter of every event",
        ),
        (
            "errors = 'sum(e)'\nquery = 'max(x)'\ntotal = 'sum(t)'",
            "analysis.queries[0]: 2 (query, errors); set exactly one of query, errors or successes",
        ),
        (
            "no_data = \"wait\"",
            "analysis.queries[0]: no query; set query (a gauge) or errors or successes with total",
        ),
        (
            "errors = 'sum(e)'\ntotal = 'sum(t{x=\"{version}\"})'",
            "analysis.queries[0].total: unknown placeholder {version}",
        ),
        (
            "errors = 'sum(e)'\ntotal = 'sum(t)'\nconsecutive = 2",
            "analysis.queries[0].consecutive: only for a gauge rule",
        ),
        (
            "errors = 'sum(e)'\ntotal = 'sum(t)'\nabove = 2",
            "analysis.queries[0].above: only for a gauge rule (query)",
        ),
        (
            "errors = 'sum(e)'\ntotal = 'sum(t)'\nmax_ratio = 1.5",
            "analysis.queries[0].max_ratio:",
        ),
        (
            "errors = 'sum(e)'\ntotal = 'sum(t)'\nmax_ratio = 0",
            "analysis.queries[0].max_ratio:",
        ),
        (
            "errors = 'sum(e)'\ntotal = 'sum(t)'\ncompare = false",
            "analysis.queries[0]: judges nothing: compare = false and no max_ratio",
        ),
        (
            "errors = 'sum(e)'\ntotal = 'sum(t)'\ncompare = \"yes\"",
            "analysis.queries[0].compare: expected true or false",
        ),
        (
            "query = 'max(x)'\nabove = 1\ntotal = 'sum(t)'",
            "analysis.queries[0].total: only for a count rule",
        ),
    ] {
        let errors = errors_of(&with(q));
        assert!(
            errors.len() == 1 && errors[0].contains(expected),
            "{q}: {errors:#?}"
        );
    }
}

#[test]
fn a_router_metrics_address_is_decoded_and_a_bad_or_taken_one_named() {
    let src = STARTER.replace(
        "listen = \"127.0.0.1:8081\"",
        "listen = \"127.0.0.1:8081\"\nmetrics_listen = \"127.0.0.1:9464\"",
    );
    let config = parse("gantry.toml", &src).unwrap().config;
    let dev = &config.environments[0];
    assert_eq!(dev.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
    assert_eq!(config.environments[1].metrics_listen, None);
    for (value, wanted) in [
        ("\"nowhere\"", "is not an address; expected IP:PORT"),
        ("\"127.0.0.1:8081\"", "overlaps \"127.0.0.1:8081\""),
        ("\"0.0.0.0:8082\"", "overlaps"),
    ] {
        let src = STARTER.replace(
            "listen = \"127.0.0.1:8081\"",
            &format!("listen = \"127.0.0.1:8081\"\nmetrics_listen = {value}"),
        );
        let errors = errors_of(&src);
        assert!(
            errors
                .iter()
                .any(|e| e.contains("metrics_listen") && e.contains(wanted))
                || errors.iter().any(|e| e.contains(wanted)),
            "{value}: {errors:#?}"
        );
    }
}

#[test]
fn the_store_url_is_a_reference_never_a_written_password() {
    let good = STARTER.to_owned() + "\n[store]\nurl = { env = \"GANTRY_DATABASE_URL\" }\n";
    let loaded = parse("gantry.toml", &good).expect("a referenced URL");
    assert_eq!(
        loaded.config.store.url,
        Some(SecretRef::Env("GANTRY_DATABASE_URL".into()))
    );
    let from_file = STARTER.to_owned() + "\n[store]\nurl = { file = \"/run/gantry/db-url\" }\n";
    let loaded = parse("gantry.toml", &from_file).expect("a URL in a file");
    assert_eq!(
        loaded.config.store.url,
        Some(SecretRef::File("/run/gantry/db-url".into()))
    );
    assert_eq!(
        parse("gantry.toml", STARTER).unwrap().config.store.url,
        None,
        "SQLite in the data directory by default"
    );

    let written = STARTER.to_owned() + "\n[store]\nurl = \"postgres://gantry:hunter2@db/gantry\"\n";
    let errors = errors_of(&written).join("\n");
    assert!(
        errors.contains("store.url: the database URL carries a password, so it is not written in the config; reference it as { env = \"GANTRY_DATABASE_URL\" }"),
        "{errors}"
    );
    assert!(!errors.contains("hunter2"), "{errors}");
    let missing = STARTER.to_owned() + "\n[store]\n";
    let errors = errors_of(&missing).join("\n");
    assert!(
        errors.contains("store.url: missing required key \"url\""),
        "{errors}"
    );
}

#[test]
fn the_leader_lease_defaults_to_3s_renewed_every_second_and_is_bounded_at_its_fields() {
    let store = parse("gantry.toml", STARTER).unwrap().config.store;
    assert_eq!((store.lease_ms, store.renew_ms), (3_000, 1_000));
    let set = STARTER.to_owned()
        + "\n[store]\nurl = { env = \"GANTRY_DATABASE_URL\" }\nlease = \"10s\"\nrenew_every = \"2500ms\"\n";
    let store = parse("gantry.toml", &set).unwrap().config.store;
    assert_eq!((store.lease_ms, store.renew_ms), (10_000, 2_500));
    for (table, wanted) in [
        ("lease = \"500ms\"", "store.lease: expected a duration from 1s to 60s"),
        ("lease = \"2m\"", "store.lease: expected a duration from 1s to 60s"),
        ("lease = 3", "store.lease: expected a duration string"),
        (
            "renew_every = \"2s\"",
            "store.renew_every: expected a duration from 100ms to half of store.lease (1500ms), so that one late renewal does not lose the lease; found 2000ms",
        ),
        (
            "renew_every = \"50ms\"",
            "store.renew_every: expected a duration from 100ms to half of store.lease (1500ms)",
        ),
        ("leases = \"3s\"", "leases"),
    ] {
        let src = STARTER.to_owned()
            + "\n[store]\nurl = { env = \"GANTRY_DATABASE_URL\" }\n"
            + table
            + "\n";
        let errors = errors_of(&src).join("\n");
        assert!(errors.contains(wanted), "{table}: {errors}");
    }
}

#[test]
fn hooks_are_decoded_with_their_defaults_and_a_rollback_takes_only_its_own() {
    use gantry_core::machine::hooks::{HookCall, HookPoint};
    let src = STARTER.to_owned()
        + "\n[[environments.production.hooks]]\nname = \"flags\"\nat = \"before_promotion\"\ncommand = [\"/usr/local/bin/check-flags\", \"--env\", \"production\"]\n\n[[environments.production.hooks]]\nname = \"ci\"\nat = \"on_rollback\"\nurl = \"https://ci.example/rolled-back\"\nsecret = { env = \"HOOK_SECRET\" }\ntimeout = \"5s\"\n";
    let config = parse("gantry.toml", &src).unwrap().config;
    let prod = config.environment("production").unwrap();
    let [flags, ci] = &prod.hooks[..] else {
        panic!("{:?}", prod.hooks)
    };
    assert_eq!(flags.hook.at, HookPoint::BeforePromotion);
    assert_eq!(
        flags.hook.call,
        HookCall::Command {
            argv: vec![
                "/usr/local/bin/check-flags".into(),
                "--env".into(),
                "production".into()
            ]
        }
    );
    assert_eq!(
        (
            flags.hook.timeout_ms,
            flags.hook.hold_ms,
            flags.hook.retry_ms
        ),
        (30_000, 600_000, 15_000)
    );
    assert!(flags.secret.is_none());
    assert_eq!(ci.hook.timeout_ms, 5_000);
    assert!(matches!(ci.secret, Some(crate::Credential::Secret(_))));
    // The secret stays in the config: the deployment records the hook only.
    let deploy = config.deploy_settings(prod, gantry_core::DeploymentKind::Deploy);
    assert_eq!(deploy.hooks.len(), 2);
    assert!(!serde_json::to_string(&deploy)
        .unwrap()
        .contains("HOOK_SECRET"));
    let rollback = config.deploy_settings(prod, gantry_core::DeploymentKind::Rollback);
    assert_eq!(
        rollback
            .hooks
            .iter()
            .map(|h| h.name.as_str())
            .collect::<Vec<_>>(),
        ["ci"]
    );
    // Bad ones, each at its field.
    for (hook, expected) in [
        (
            "name = \"a\"\nat = \"before_rollout\"",
            "environments.production.hooks[0]: no call; set command",
        ),
        (
            "name = \"a\"\nat = \"before_rollout\"\ncommand = []",
            "environments.production.hooks[0].command: empty",
        ),
        (
            "name = \"a\"\nat = \"before_rollout\"\ncommand = [\"/bin/true\"]\nsecret = { env = \"K\" }",
            "environments.production.hooks[0].secret: only for a url hook",
        ),
        (
            "name = \"a\"\nat = \"before_rollout\"\nurl = \"ftp://x\"",
            "environments.production.hooks[0].url:",
        ),
        (
            "name = \"a\"\nat = \"before_rollout\"\ncommand = [\"/bin/true\"]\ntimeout = \"1h\"",
            "environments.production.hooks[0].timeout: expected a duration from 100ms to 10m",
        ),
    ] {
        let errors = errors_of(&format!(
            "{STARTER}\n[[environments.production.hooks]]\n{hook}\n"
        ));
        assert!(
            errors.len() == 1 && errors[0].contains(expected),
            "{hook}: {errors:#?}"
        );
    }
    let twice = format!(
        "{STARTER}\n[[environments.production.hooks]]\nname = \"a\"\nat = \"after_rollout\"\ncommand = [\"/bin/true\"]\n\n[[environments.production.hooks]]\nname = \"a\"\nat = \"on_rollback\"\ncommand = [\"/bin/true\"]\n"
    );
    assert!(errors_of(&twice)[0]
        .contains("environments.production.hooks[1].name: \"a\" is already a hook's name"));
}

#[test]
fn the_drift_interval_is_a_minute_by_default_off_at_zero_and_bounded() {
    let config = parse("gantry.toml", STARTER).unwrap().config;
    assert_eq!(config.drift_interval_ms, 60_000);
    let with = |v: &str| format!("{STARTER}\n[drift]\ninterval = {v}\n");
    assert_eq!(
        parse("gantry.toml", &with("\"0s\""))
            .unwrap()
            .config
            .drift_interval_ms,
        0
    );
    for bad in ["\"10ms\"", "\"2d\""] {
        let errors = errors_of(&with(bad));
        assert!(
            errors.len() == 1
                && errors[0]
                    .contains("drift.interval: expected \"0s\" (off) or a duration from 1s to 1d"),
            "{bad}: {errors:#?}"
        );
    }
}
