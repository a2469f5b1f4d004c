use crate::harness::*;
use gantry_api::TrafficQuery;

#[test]
fn deploy_then_roll_back_serves_the_previous_release() {
    let g = Gantry::start();
    g.register("1.0.0", "");
    g.register("1.1.0", "");
    let run = g.gantry(&["deploy", "1.0.0", "--env", "production"]).ok();
    assert!(
        run.stdout.contains("succeeded") && run.stdout.contains("1.0.0 serves production"),
        "{}",
        run.stdout
    );
    assert_eq!(
        g.get_env("production"),
        (200, "hello from 1.0.0\n".to_owned())
    );
    g.gantry(&["deploy", "1.1.0", "--env", "production"]).ok();
    assert_eq!(
        g.get_env("production"),
        (200, "hello from 1.1.0\n".to_owned())
    );
    let instances = g.running_instances();
    assert_eq!(
        instances,
        ["production-d2-1", "production-d2-2"],
        "old instances were stopped"
    );

    let run = g.gantry(&["rollback", "--env", "production"]).ok();
    assert!(
        run.stdout.contains("1.0.0 serves production"),
        "{}",
        run.stdout
    );
    for _ in 0..20 {
        assert_eq!(
            g.get_env("production"),
            (200, "hello from 1.0.0\n".to_owned())
        );
    }
    let status = g.gantry(&["status"]).ok();
    let line = status
        .stdout
        .lines()
        .find(|l| l.starts_with("production"))
        .unwrap()
        .to_owned();
    assert!(line.contains("1.0.0") && line.contains("2/2"), "{line}");

    let history = g.gantry(&["history", "--env", "production"]).ok();
    let rows: Vec<&str> = history.stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{}", history.stdout);
    assert!(
        rows[0].contains("rollback") && rows[0].contains("1.0.0") && rows[0].contains("succeeded"),
        "{}",
        rows[0]
    );
    assert!(
        rows[2].starts_with("1 "),
        "newest first: {}",
        history.stdout
    );

    // The deployment log has every step with a timestamp.
    let log = g.gantry(&["log", "3"]).ok();
    for step in [
        "rollback of 1.0.0 to production requested by admin",
        "release 1.0.0 verified and unpacked",
        "started 2 instance(s)",
        "all new instances healthy",
        "traffic switched to 1.0.0",
        "previous instances stopped",
        "1.0.0 is live in production",
    ] {
        assert!(
            log.stdout.contains(step),
            "missing {step:?} in:\n{}",
            log.stdout
        );
    }
    assert!(
        log.stdout.lines().nth(2).unwrap().starts_with("20"),
        "lines start with a timestamp:\n{}",
        log.stdout
    );

    // Instance output is kept and viewable.
    let out = g.gantry(&["logs", "production-d3-1"]).ok();
    assert!(
        out.stdout.contains("sample service 1.0.0 listening"),
        "{}",
        out.stdout
    );
    g.gantry(&["logs", "nope"])
        .fails_with(1, "no output for instance nope");
}

#[test]
fn an_instance_that_never_becomes_healthy_is_rolled_back_with_the_reason() {
    let g = Gantry::start();
    g.register("1.0.0", "");
    g.register("1.1.0", "\"unhealthy\": true");
    g.gantry(&["deploy", "1.0.0", "--env", "staging"]).ok();
    let run = g.gantry(&["deploy", "1.1.0", "--env", "staging"]);
    run.fails_with(3, "rolled_back");
    let d = g.latest("staging");
    assert_eq!(d.phase, Phase::RolledBack);
    // It never answered healthy, so only the start timeout fails it (warm-up is not failure).
    assert_eq!(
        d.reason.as_deref(),
        Some(
            "instances did not become healthy within 5s: staging-d2-1 (GET /healthz answered HTTP 503)"
        )
    );
    assert_eq!(
        g.get_env("staging"),
        (200, "hello from 1.0.0\n".to_owned()),
        "the old release kept serving"
    );
    assert_eq!(
        g.running_instances(),
        ["staging-d1-1"],
        "the failed instance was stopped"
    );
}

#[test]
fn a_service_that_answers_503_while_warming_up_is_not_rolled_back() {
    // Probes run every 50 ms at start and the threshold is 3: before, the
    // third 503 (0.15 s in) rolled this release back.
    let g = Gantry::start();
    g.register("1.0.0", "\"warmup_ms\": 1500");
    g.gantry(&["deploy", "1.0.0", "--env", "staging"]).ok();
    assert_eq!(g.latest("staging").phase, Phase::Succeeded);
    assert_eq!(g.get_env("staging"), (200, "hello from 1.0.0\n".to_owned()));
}

#[test]
fn an_instance_that_crashes_at_start_is_rolled_back() {
    let g = Gantry::start();
    // A release whose settings the sample service refuses: it exits at once.
    g.register("1.0.0", "\"error_rate\": 7.0");
    let run = g.gantry(&["deploy", "1.0.0", "--env", "development"]);
    run.fails_with(
        3,
        "instance development-d1-1 exited: process exited with status 1",
    );
    assert!(g.running_instances().is_empty());
}

#[test]
fn a_release_that_crashes_under_traffic_during_the_bake_is_rolled_back() {
    let g = Gantry::start_with("5s", "");
    g.register("1.0.0", "");
    g.register("1.1.0", "\"crash_after\": 2");
    g.gantry(&["deploy", "1.0.0", "--env", "development"]).ok();
    let id = deploy_id(
        &g.gantry(&["deploy", "1.1.0", "--env", "development", "--detach"])
            .ok(),
    );
    g.wait_phase(id, Phase::Baking);
    // Three user requests: the third makes 1.1.0 exit.
    for _ in 0..3 {
        let _ = g.get_env("development");
    }
    let d = g.wait_finished(id);
    assert_eq!(d.phase, Phase::RolledBack);
    assert!(
        d.reason
            .as_deref()
            .unwrap()
            .contains("exited: process exited with status 3"),
        "{d:?}"
    );
    assert_eq!(
        g.get_env("development"),
        (200, "hello from 1.0.0\n".to_owned())
    );
}

#[test]
fn unknown_environments_and_versions_are_refused() {
    let g = Gantry::start();
    g.register("1.0.0", "");
    g.gantry(&["deploy", "1.0.0", "--env", "prod"]).fails_with(
        1,
        "environment \"prod\" is not defined; known: development, integration, staging, production",
    );
    g.gantry(&["deploy", "3.0.0", "--env", "staging"])
        .fails_with(1, "release 3.0.0 is not registered");
    g.gantry(&["deploy", "latest", "--env", "staging"])
        .fails_with(1, "\"latest\" is not a semantic version");
    g.gantry(&["rollback", "--env", "staging"])
        .fails_with(1, "nothing has been deployed to staging");
    g.gantry(&["history", "--env", "qa"])
        .fails_with(1, "environment \"qa\" is not defined");
    g.gantry(&["deploy", "1.0.0", "--env", "staging"]).ok();
    g.gantry(&["rollback", "--env", "staging"])
        .fails_with(1, "no earlier successful release than 1.0.0");
    g.gantry(&["rollback", "--env", "staging", "--to", "1.0.0"])
        .fails_with(1, "1.0.0 is already serving staging");
    g.register("1.1.0", "");
    g.gantry(&["rollback", "--env", "staging", "--to", "1.1.0"])
        .fails_with(1, "1.1.0 never succeeded in staging");
    assert_eq!(
        g.deployments(None).len(),
        1,
        "no refused request created a deployment"
    );
}

#[test]
fn one_deployment_per_environment_at_a_time() {
    let g = Gantry::start_with("3s", "");
    g.register("1.0.0", "");
    g.register("1.1.0", "");
    let id = deploy_id(
        &g.gantry(&["deploy", "1.0.0", "--env", "integration", "--detach"])
            .ok(),
    );
    g.gantry(&["deploy", "1.1.0", "--env", "integration"])
        .fails_with(
            1,
            &format!("environment integration already has deployment {id} of 1.0.0 in progress"),
        );
    // Other environments are not blocked.
    let other = deploy_id(
        &g.gantry(&["deploy", "1.1.0", "--env", "development", "--detach"])
            .ok(),
    );
    let (first, second) = (g.wait_finished(id), g.wait_finished(other));
    assert_eq!(first.phase, Phase::Succeeded, "{first:?}");
    assert_eq!(second.phase, Phase::Succeeded, "{second:?}");
}

#[test]
fn a_port_already_in_use_is_refused_before_anything_starts() {
    let g = Gantry::start();
    g.register("1.0.0", "");
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", g.port("staging"))).unwrap();
    g.gantry(&["deploy", "1.0.0", "--env", "staging"])
        .fails_with(
            1,
            &format!(
                "environment staging listens on 127.0.0.1:{}, which is not available",
                g.port("staging")
            ),
        );
    assert!(g.running_instances().is_empty());
    assert!(g.deployments(None).is_empty());
}

#[test]
fn abort_rolls_back_a_running_deployment() {
    let g = Gantry::start_with("10s", "");
    g.register("1.0.0", "");
    g.register("1.1.0", "");
    g.gantry(&["deploy", "1.0.0", "--env", "development"]).ok();
    let id = deploy_id(
        &g.gantry(&["deploy", "1.1.0", "--env", "development", "--detach"])
            .ok(),
    );
    g.wait_phase(id, Phase::Baking);
    g.gantry(&["abort", &id.to_string()]).ok();
    let d = g.wait_finished(id);
    assert_eq!(d.phase, Phase::RolledBack);
    assert_eq!(d.reason.as_deref(), Some("aborted by admin"));
    assert_eq!(
        g.get_env("development"),
        (200, "hello from 1.0.0\n".to_owned())
    );
    g.gantry(&["abort", &id.to_string()])
        .fails_with(1, "already finished");
}

#[test]
fn an_unset_secret_fails_the_start_naming_it_and_nothing_runs() {
    let extra = "\n[service.secrets]\nSAMPLE_SECRET = { env = \"GANTRY_TEST_SECRET_SOURCE\" }\n";
    let g = Gantry::start_with("300ms", extra);
    g.register("1.0.0", "");
    // The controller was started without the variable: the start fails, naming it.
    let run = g.gantry(&["deploy", "1.0.0", "--env", "development"]);
    run.fails_with(3, "secret SAMPLE_SECRET: environment variable GANTRY_TEST_SECRET_SOURCE is not set on the controller");
    assert!(
        g.running_instances().is_empty(),
        "no instance started without its secret"
    );
}

#[test]
fn a_resolved_secret_is_given_to_the_instance_and_nowhere_else() {
    let extra = "\n[service.secrets]\nSAMPLE_SECRET = { env = \"GANTRY_TEST_SECRET_SOURCE\" }\n";
    let secret = "s3cr3t-value-7d1f";
    let g = Gantry::start_full("300ms", extra, &[("GANTRY_TEST_SECRET_SOURCE", secret)]);
    g.register("1.0.0", "");
    g.gantry(&["deploy", "1.0.0", "--env", "development"]).ok();
    // The instance has it.
    let (_, pid) = g
        .instance_processes()
        .into_iter()
        .find(|(id, _)| id == "development-d1-1")
        .expect("instance process");
    let environ = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap())
        .into_owned();
    assert!(environ.contains(&format!("SAMPLE_SECRET={secret}")));
    // The store, the artifacts, the logs and the API do not.
    for entry in walk(&g.data()) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(secret),
            "secret found in {}",
            entry.display()
        );
    }
    assert!(!g.controller_log().contains(secret));
    // The answer as sent, every field of it.
    assert!(!g.api_json("/deployments/1").to_string().contains(secret));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        } else if p.is_file() {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_router_counts_what_each_release_served() {
    let g = Gantry::start();
    g.register("1.0.0", "\"error_rate\": 0.25");
    g.gantry(&["deploy", "1.0.0", "--env", "integration"]).ok();
    let refused = g
        .try_call(g.client().traffic(&TrafficQuery {
            env: "integration".into(),
            above_ms: Some("abc".into()),
        }))
        .unwrap_err();
    assert_eq!(refused.status(), Some(400), "{refused}");
    for _ in 0..40 {
        let _ = g.get_env("integration");
    }
    let pools = g.traffic("integration", Some("0,60000"));
    let pool = pools
        .into_iter()
        .find(|p| p.name == "1.0.0")
        .expect("a pool named after the release");
    assert_eq!(pool.requests, 40, "{pool:?}");
    assert_eq!(
        pool.errors, 10,
        "one request in four fails by design: {pool:?}"
    );
    assert_eq!(
        pool.slower_than[0].requests, 40,
        "every answer takes some time: {pool:?}"
    );
    assert_eq!(
        pool.slower_than[1].requests, 0,
        "none takes a minute: {pool:?}"
    );
    let refused = g
        .try_call(g.client().traffic(&TrafficQuery {
            env: "staging".into(),
            above_ms: None,
        }))
        .unwrap_err();
    assert_eq!(
        refused.status(),
        Some(409),
        "nothing deployed there yet: {refused}"
    );
    assert!(
        refused.to_string().contains("its router is not running"),
        "{refused}"
    );
}

#[test]
fn a_fleet_whose_hosts_cannot_be_reached_fails_naming_them_and_nothing_starts_here() {
    // The environment runs on a host that does not exist (TEST-NET-1): the
    // deployment fails before anything changes, saying which host and what
    // to check, and nothing starts on the controller's machine in its stead.
    let key = tempfile::NamedTempFile::new().unwrap();
    let tail = format!(
        "hosts = [\"web-1\"]\n\n[hosts.web-1]\naddress = \"192.0.2.10\"\nkey = {{ file = \"{}\" }}\n\n[ssh]\nconnect_timeout = \"1s\"\n",
        key.path().display()
    );
    let g = Gantry::start_with_tail("300ms", &tail);
    g.register("1.0.0", "");
    g.gantry(&["deploy", "1.0.0", "--env", "production"])
        .fails_with(3, "no host could prepare it: host web-1 (192.0.2.10:22)");
    assert!(g.running_instances().is_empty(), "nothing started locally");
    let d = g.latest("production");
    assert_eq!(d.phase, gantry_core::Phase::Failed);
    assert!(d.new_instances.is_empty());
}
