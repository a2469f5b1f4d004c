//! Crash safety: the controller is killed with SIGKILL and started again.

use crate::harness::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn killed_mid_bake_the_deployment_resumes_and_users_see_no_failure() {
    let mut g = Gantry::start_with("2s", "");
    g.register("1.0.0", "");
    g.register("1.1.0", "");
    g.gantry(&["deploy", "1.0.0", "--env", "production"]).ok();
    let id = deploy_id(
        &g.gantry(&["deploy", "1.1.0", "--env", "production", "--detach"])
            .ok(),
    );
    g.wait_phase(id, Phase::Baking);

    // Constant user traffic while the controller dies and comes back.
    let port = g.port("production");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        std::thread::spawn(move || {
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (status, _) = http(&format!("http://127.0.0.1:{port}"), "GET", "/", None, "");
                if status == 200 { &ok } else { &failed }.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    g.kill_server();
    // Users keep being served while the controller is down.
    let served_before = ok.load(Ordering::Relaxed);
    wait_until(
        "50 more user requests served with the controller down",
        Duration::from_secs(20),
        || ok.load(Ordering::Relaxed) >= served_before + 50,
    );
    g.start_server();
    let d = g.wait_finished(id);
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();

    assert_eq!(d.phase, Phase::Succeeded, "{d:?}");
    let log = g.gantry(&["log", &id.to_string()]).ok();
    assert!(
        log.stdout
            .contains("controller restarted; resuming in phase baking"),
        "{}",
        log.stdout
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no user request failed ({} succeeded)",
        ok.load(Ordering::Relaxed)
    );
    assert!(ok.load(Ordering::Relaxed) > 10);
    assert_eq!(
        g.running_instances(),
        ["production-d2-1", "production-d2-2"],
        "nothing leaked or doubled"
    );
    assert_eq!(g.get_env("production").1, "hello from 1.1.0\n");
}

#[test]
fn killed_at_any_point_a_deployment_ends_cleanly_after_restart() {
    let mut g = Gantry::start_with("200ms", "");
    g.register("1.0.0", "");
    g.register("1.1.0", "");
    g.register("1.2.0", "\"unhealthy\": true");
    g.gantry(&["deploy", "1.0.0", "--env", "staging"]).ok();
    // Kill at different moments of a good and of a failing deployment.
    let mut n = 0;
    for (version, delay_ms) in [
        ("1.1.0", 0),
        ("1.0.0", 40),
        ("1.1.0", 120),
        ("1.2.0", 30),
        ("1.0.0", 250),
        ("1.2.0", 150),
    ] {
        n += 1;
        let run = g.gantry(&["deploy", version, "--env", "staging", "--detach"]);
        let id = deploy_id(&run.ok());
        // The kill point, not a wait: the crash lands `delay_ms` into the
        // deployment, wherever it then stands; the rounds spread the kill
        // points over its phases. Nothing here waits for a condition.
        std::thread::sleep(Duration::from_millis(delay_ms));
        g.kill_server();
        g.start_server();
        let d = g.wait_finished(id);
        let expected = if version == "1.2.0" {
            Phase::RolledBack
        } else {
            Phase::Succeeded
        };
        assert_eq!(
            d.phase, expected,
            "round {n}: deploying {version}, killed after {delay_ms}ms: {d:?}"
        );
        // Exactly the instances that serve the environment run.
        let env = g
            .status()
            .environments
            .into_iter()
            .find(|e| e.name == "staging")
            .unwrap();
        let mut serving: Vec<String> = env.instances.iter().map(|i| i.id.clone()).collect();
        serving.sort();
        wait_until(
            "only serving instances to run",
            Duration::from_secs(10),
            || g.running_instances() == serving,
        );
        let (status, body) = g.get_env("staging");
        assert_eq!(status, 200, "round {n}");
        assert_eq!(
            body,
            format!("hello from {}\n", env.version.as_deref().unwrap()),
            "round {n}"
        );
    }
}

#[test]
fn a_restarted_controller_adopts_running_instances_and_restarts_dead_ones() {
    let mut g = Gantry::start();
    g.register("1.0.0", "");
    g.gantry(&["deploy", "1.0.0", "--env", "production"]).ok();
    let pids_before = g.instance_processes();
    assert_eq!(pids_before.len(), 2);
    g.kill_server();
    // While the controller is down one instance dies.
    let (victim, victim_pid) = pids_before[0].clone();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until("the victim to die", Duration::from_secs(5), || {
        !g.running_instances().contains(&victim)
    });
    let (status, body) = g.get_env("production");
    let router_log =
        std::fs::read_to_string(g.data().join("routers/production/router.log")).unwrap_or_default();
    assert_eq!(
        status, 200,
        "the router still serves from the survivor: {body}\nrouter log:\n{router_log}"
    );
    g.start_server();
    // One reading of /proc, used for the checks too: a restart passes
    // through a launcher process carrying the same id, so two readings can
    // disagree.
    let mut pids_after = Vec::new();
    wait_until(
        "the dead instance to be restarted",
        Duration::from_secs(10),
        || {
            pids_after = g.instance_processes();
            pids_after.len() == 2 && pids_after[0].0 != pids_after[1].0
        },
    );
    assert_eq!(
        pids_after[1], pids_before[1],
        "the live instance was adopted, not replaced"
    );
    assert_ne!(
        pids_after[0].1, victim_pid,
        "the dead one runs again under its id"
    );
    assert_eq!(pids_after[0].0, victim);
}
