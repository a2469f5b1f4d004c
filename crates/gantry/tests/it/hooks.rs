//! Hooks at the rollout's points against a real controller: a program that
//! holds, then lets a blue-green switch go on, or stops it; a signed POST
//! that holds a switch with 423; the end told to a program.

use crate::harness::*;
use gantry_core::Phase;
use std::time::Duration;

/// A hook program that answers what its `gate` file says and writes down
/// the environment it was given.
struct Gate {
    dir: tempfile::TempDir,
}

impl Gate {
    fn new() -> Gate {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("hook.sh"),
            format!(
                "env > {d}/env.txt\ncase \"$(cat {d}/gate)\" in\n  pass) exit 0 ;;\n  hold) echo \"waiting for the review of $GANTRY_VERSION\"; exit 75 ;;\n  *) echo 'feature flags are off' >&2; exit 1 ;;\nesac\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("done.sh"),
            format!("echo \"$GANTRY_VERSION\" >> {d}/done.txt\n"),
        )
        .unwrap();
        let g = Gate { dir };
        g.set("pass");
        g
    }

    fn set(&self, answer: &str) {
        std::fs::write(self.dir.path().join("gate"), answer).unwrap();
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    fn tail(&self) -> String {
        let d = self.dir.path().display();
        format!(
            "\n[[environments.production.hooks]]\nname = \"flags\"\nat = \"before_promotion\"\ncommand = [\"/bin/sh\", \"{d}/hook.sh\"]\nretry = \"1s\"\nhold = \"1m\"\n\n[[environments.production.hooks]]\nname = \"announce\"\nat = \"after_rollout\"\ncommand = [\"/bin/sh\", \"{d}/done.sh\"]\n"
        )
    }
}

#[test]
fn a_program_hook_holds_the_switch_lets_it_go_on_and_stops_it() {
    let gate = Gate::new();
    let (g, load) = serving(&gate.tail(), &[("1.1.0", ""), ("1.2.0", "")]);
    wait_until(
        "1.0.0 told to the after_rollout hook",
        Duration::from_secs(10),
        || gate.file("done.txt") == "1.0.0\n",
    );

    // The plan says what the rollout waits for, and whom it tells.
    let plan = g
        .gantry(&["plan", "1.1.0", "--env", "production"])
        .ok()
        .stdout;
    assert!(
        plan.contains("- The rollout waits for its hook \"flags\" at before_promotion: `/bin/sh")
            && plan.contains("- Told, not asked: hook \"announce\" at after_rollout"),
        "{plan}"
    );

    // Held: the new release is up, and the old one still takes every request.
    gate.set("hold");
    let id = deploy_id(
        &g.gantry(&["deploy", "1.1.0", "--env", "production", "--detach"])
            .ok(),
    );
    wait_until("the hook holds the switch", Duration::from_secs(20), || {
        g.log_of(id).contains("holds the rollout")
    });
    let log = g.log_of(id);
    assert!(
        log.contains("hook \"flags\" (before_promotion): holds the rollout: /bin/sh exited 75 (hold): waiting for the review of 1.1.0"),
        "{log}"
    );
    assert_eq!(g.latest("production").phase, Phase::Switching);
    assert_eq!(g.get_env("production").1, "hello from 1.0.0\n");
    // Only what it is told reaches the hook: not the controller's environment.
    let env = gate.file("env.txt");
    assert!(env.contains("GANTRY_VERSION=1.1.0"), "{env}");
    assert!(env.contains("GANTRY_HOOK_POINT=before_promotion"), "{env}");
    assert!(env.contains("GANTRY_PREVIOUS_VERSION=1.0.0"), "{env}");
    assert!(!env.contains("HOME="), "a cleared environment: {env}");

    // Asked again after `retry`: it passes, the switch goes on.
    gate.set("pass");
    let d = g.wait_finished(id);
    assert_eq!(d.phase, Phase::Succeeded, "{:?}", d.reason);
    assert!(g
        .log_of(id)
        .contains("hook \"flags\" (before_promotion): passed in"));
    wait_until(
        "1.1.0 told to the after_rollout hook",
        Duration::from_secs(10),
        || gate.file("done.txt") == "1.0.0\n1.1.0\n",
    );

    // A failed hook stops the switch: rolled back, its words in the reason.
    gate.set("fail");
    g.gantry(&["deploy", "1.2.0", "--env", "production"])
        .fails_with(3, "rolled_back");
    let reason = g.latest("production").reason.unwrap();
    assert!(
        reason.starts_with("hook \"flags\" (before_promotion) failed: /bin/sh failed (exit status: 1): feature flags are off"),
        "{reason}"
    );
    assert_eq!(g.get_env("production").1, "hello from 1.1.0\n");
    let (ok, failed) = load.finish();
    assert_eq!(failed, 0, "{ok} answered");
}

#[test]
fn a_signed_post_holds_a_canary_step_with_423_then_lets_it_go_on() {
    let hook = Receiver::start(&[423]);
    let tail = format!(
        "strategy = \"canary\"\ncanary = {{ steps = [{{ weight = 50, pause = \"1s\" }}, {{ weight = 100 }}], interval = \"250ms\", max_wait = \"30s\" }}\n\n[[environments.production.hooks]]\nname = \"ci\"\nat = \"before_traffic_increase\"\nurl = \"{}\"\nsecret = {{ env = \"GANTRY_HOOK_SECRET\" }}\nretry = \"1s\"\n",
        hook.url("/confirm")
    );
    let g = Gantry::start_with_env_and_tail("300ms", &[("GANTRY_HOOK_SECRET", "hook-key")], &tail);
    g.register("1.0.0", "");
    g.register("1.1.0", "");
    g.gantry(&["deploy", "1.0.0", "--env", "production"]).ok();
    let load = Load::start(g.port("production"));
    g.gantry(&["deploy", "1.1.0", "--env", "production"]).ok();
    let d = g.latest("production");
    assert_eq!(d.phase, Phase::Succeeded);
    let log = g.log_of(d.id);
    assert!(
        log.contains("hook \"ci\" (before_traffic_increase): holds the rollout: HTTP 423 (hold)"),
        "{log}"
    );
    // Asked before 1.0.0's first traffic? No: a first deployment has no
    // canary step. Asked twice before 1.1.0's 50%: held, then passed.
    let got = hook.received();
    assert_eq!(got.len(), 2, "{got:?}");
    let body = got[1].json();
    assert_eq!(body["point"], "before_traffic_increase");
    assert_eq!(body["version"], "1.1.0");
    assert_eq!(body["previous_version"], "1.0.0");
    let signature = &got[1].headers["x-gantry-signature"];
    assert!(
        signature.starts_with("sha256=") && signature.len() == 7 + 64,
        "{signature}"
    );
    assert!(got[1].headers.contains_key("x-gantry-timestamp"));
    let (ok, failed) = load.finish();
    assert_eq!(failed, 0, "{ok} answered");
}

#[test]
fn hooks_are_checked_at_their_fields() {
    let g = Gantry::start();
    let bad = std::fs::read_to_string(g.config_path()).unwrap()
        + "\n[[environments.production.hooks]]\nname = \"x\"\nat = \"before_lunch\"\ncommand = [\"/bin/true\"]\nurl = \"ftp://example\"\nretry = \"0s\"\n";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gantry.toml");
    std::fs::write(&path, bad).unwrap();
    let run = g
        .gantry(&["validate", "--config", path.to_str().unwrap()])
        .fails_with(
            4,
            "environments.production.hooks[0].at: \"before_lunch\" is not a point of the rollout",
        );
    for needle in [
        "environments.production.hooks[0]: both command and url",
        "environments.production.hooks[0].retry: expected a duration from 1s to 10m",
    ] {
        assert!(run.stderr.contains(needle), "{needle}: {}", run.stderr);
    }
}
