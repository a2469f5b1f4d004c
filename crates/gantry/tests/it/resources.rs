//! The standards' resource triggers without a metrics server: the target
//! reads each instance's CPU and memory from /proc, and a canary over its
//! limit is rolled back, the reason naming the resource, the instance and
//! the value. Real instances (the sample service's CPU and memory knobs).

use crate::harness::*;
use gantry_core::analysis::resources::Side;
use gantry_core::Deployment;

/// Canary steps as in `canary.rs`, with an explicit limit per instance: a
/// quarter of a core (a healthy sample instance under the harness' load
/// uses a few hundredths), so the test does not depend on the machine's
/// size or load; two spinning threads use far more even on a busy machine.
const CANARY_LIMITED: &str = r#"strategy = "canary"
canary = { steps = [{ weight = 10, pause = "2s" }, { weight = 50, pause = "2s" }, { weight = 100 }], interval = "250ms", max_wait = "20s", promotion_tolerance = 0.1 }
resources = { cpu_cores = 0.25, memory_mb = 1024 }
"#;

/// The new release's instance the reason names (a rollback empties
/// `new_instances`; their health stays, by id).
fn named_instance(d: &Deployment, reason: &str) -> String {
    let prefix = format!("production-d{}-", d.id);
    let named = d
        .health
        .keys()
        .find(|id| id.starts_with(&prefix) && reason.contains(&format!(" of {id} at ")));
    named
        .unwrap_or_else(|| panic!("no new instance named in {reason:?}"))
        .clone()
}

#[test]
fn a_cpu_burning_canary_is_rolled_back_by_the_built_in_resource_rule() {
    let (g, load) = serving(CANARY_LIMITED, &[("1.2.0", "\"burn_cpu_threads\": 2")]);
    let plan = g
        .gantry(&["plan", "1.2.0", "--env", "production"])
        .ok()
        .stdout;
    assert!(
        plan.contains("CPU of a new instance above 80% of its limit (0.25 cores) rolls back")
            && plan
                .contains("memory of a new instance above 85% of its limit (1024 MiB) rolls back")
            && plan.contains("above 90% of either limit is resource exhaustion"),
        "the plan says what counts:\n{plan}"
    );
    let run = g.gantry(&["deploy", "1.2.0", "--env", "production"]);
    let (_, failed) = load.finish();
    run.fails_with(3, "rolled_back");
    let d = g.latest("production");
    let reason = d.reason.as_deref().unwrap();
    let instance = named_instance(&d, reason);
    assert!(
        reason.starts_with("canary analysis at 10%: ")
            && reason.contains(&format!("CPU of {instance} at "))
            && reason.contains("of its 0.25 cores")
            && reason.contains("for 3 readings in a row")
            && reason.contains("the old release's instances at most"),
        "the reason names the resource, the instance, the value and the limit: {reason}"
    );
    assert_eq!(d.canary.as_ref().map(|c| c.weight), Some(10));
    // The figures behind it are kept with the deployment.
    let watch = d.resources.as_ref().expect("resource figures are kept");
    let new = watch
        .latest
        .iter()
        .find(|f| f.side == Side::New)
        .expect("a figure of the new instance");
    assert!(new.cpu_share().unwrap() > 0.8, "{new:?}");
    let old = watch
        .latest
        .iter()
        .find(|f| f.side == Side::Old)
        .expect("a figure of the old instance");
    assert!(old.cpu_share().unwrap() < 0.8, "{old:?}");
    assert!(old.memory_bytes > 0, "{old:?}");
    assert_eq!(g.get_env("production").1, "hello from 1.0.0\n");
    assert!(failed < 60, "{failed} user requests failed");
    let log = g.gantry(&["log", &d.id.to_string()]).ok();
    assert!(
        log.stdout
            .contains("rolling back: canary analysis at 10%: "),
        "{}",
        log.stdout
    );
    assert!(
        log.stdout.contains(&format!("CPU of {instance}")),
        "{}",
        log.stdout
    );
    // The latest figures of both releases, under the log.
    assert!(
        log.stdout.contains("resources at the latest look:")
            && log.stdout.contains(&format!("  {instance} (new): CPU "))
            && log.stdout.contains(" (old): CPU "),
        "{}",
        log.stdout
    );
}

#[test]
fn a_healthy_canary_under_explicit_limits_passes_the_resource_rules() {
    let (g, load) = serving(CANARY_LIMITED, &[("1.1.0", "")]);
    let run = g.gantry(&["deploy", "1.1.0", "--env", "production"]).ok();
    let (_, failed) = load.finish();
    assert!(run.stdout.contains("canary complete"), "{}", run.stdout);
    assert_eq!(failed, 0);
    let d = g.latest("production");
    let watch = d
        .resources
        .as_ref()
        .expect("the canary's looks read both releases");
    // It was measured, and stayed below the threshold.
    let new = watch
        .latest
        .iter()
        .find(|f| f.side == Side::New)
        .expect("a figure of the new instance");
    let share = new.cpu_share().expect("a CPU rate after the first look");
    assert!(share < 0.8, "{new:?}");
    assert!(new.memory_bytes > 1 << 20, "{new:?}");
    assert_eq!(new.cpu_limit_cores, 0.25);
    assert_eq!(new.memory_limit_bytes, 1 << 30);
}

#[test]
fn a_canary_holding_too_much_memory_is_rolled_back_by_the_memory_rule() {
    let tail = CANARY_LIMITED.replace("memory_mb = 1024", "memory_mb = 96");
    let (g, load) = serving(&tail, &[("1.2.0", "\"hold_memory_mb\": 128")]);
    let run = g.gantry(&["deploy", "1.2.0", "--env", "production"]);
    load.finish();
    run.fails_with(3, "rolled_back");
    let d = g.latest("production");
    let reason = d.reason.as_deref().unwrap();
    let instance = named_instance(&d, reason);
    assert!(
        reason.starts_with(&format!(
            "canary analysis at 10%: resource exhaustion: memory of {instance} at "
        )) && reason.contains("of its 96.0 MiB resident"),
        "{reason}"
    );
}

#[test]
fn a_release_burning_cpu_through_a_blue_green_bake_is_rolled_back() {
    let g = Gantry::start_with_tail("3s", "resources = { cpu_cores = 0.25 }\n");
    g.register("1.0.0", "");
    g.register("1.1.0", "\"burn_cpu_threads\": 2");
    g.gantry(&["deploy", "1.0.0", "--env", "production"]).ok();
    let run = g.gantry(&["deploy", "1.1.0", "--env", "production"]);
    run.fails_with(3, "rolled_back");
    let d = g.latest("production");
    let reason = d.reason.as_deref().unwrap();
    let instance = named_instance(&d, reason);
    assert!(
        reason.starts_with("resource rules during the bake: ")
            && reason.contains(&format!("CPU of {instance} at "))
            && reason.contains("of its 0.25 cores"),
        "{reason}"
    );
    assert_eq!(g.get_env("production").1, "hello from 1.0.0\n");
}

/// On a fleet the readings are taken on each host by `gantry host serve`
/// (real OpenSSH into lab hosts, as in `fleet.rs`): a release burning CPU on
/// one host only is rolled back, the reason naming that host's instance.
#[test]
fn a_canary_burning_cpu_on_one_fleet_host_is_rolled_back_naming_that_hosts_instance() {
    use crate::fleet_ssh::{skipped, FleetLab, LAB_UP};
    if skipped() {
        return;
    }
    let lab = FleetLab::start(2, &[], LAB_UP);
    let g = crate::fleet::fleet_gantry(&lab, CANARY_LIMITED, "");
    g.register("1.0.0", "");
    g.register(
        "2.0.0",
        "\"burn_cpu_threads\": 2, \"errors_where_home_contains\": \"/h2/\"",
    );
    g.gantry(&["deploy", "1.0.0", "--env", "production"]).ok();
    let run = g.gantry(&["deploy", "2.0.0", "--env", "production"]);
    run.fails_with(3, "rolled_back");
    let d = g.latest("production");
    let reason = d.reason.as_deref().unwrap();
    let instance = named_instance(&d, reason);
    assert!(
        instance.ends_with("@h2") && reason.starts_with("canary analysis at 10%: "),
        "{reason}"
    );
    // h1's instances of 2.0.0 were read too, and were quiet.
    let watch = d.resources.as_ref().unwrap();
    let quiet = watch
        .latest
        .iter()
        .find(|f| f.side == Side::New && f.instance.ends_with("@h1"))
        .unwrap_or_else(|| panic!("{watch:?}"));
    assert!(quiet.cpu_share().unwrap() < 0.8, "{quiet:?}");
}
