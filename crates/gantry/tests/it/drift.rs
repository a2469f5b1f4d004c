//! Drift against a real controller: an instance killed behind its back, a
//! file copied by hand into a release, a config changed under a running
//! environment; found by `gantry drift` and the periodic check (audited),
//! repaired by `gantry converge` where it can be.

use crate::harness::*;
use std::time::Duration;

fn drift(g: &Gantry) -> (i32, serde_json::Value) {
    let run = g.gantry(&["drift", "-o", "json"]);
    (run.code, serde_json::from_str(&run.stdout).unwrap())
}

fn kinds(report: &serde_json::Value) -> Vec<String> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn drift_is_found_audited_and_converged_and_a_config_change_is_named() {
    let hook = Receiver::start(&[200]);
    let mut g = Gantry::start_with_env_and_tail(
        "300ms",
        &[("DRIFT_HOOK_SECRET", "s3cret")],
        &format!(
            "\n[drift]\ninterval = \"1s\"\n\n[[notify]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"{}\"\nsecret = {{ env = \"DRIFT_HOOK_SECRET\" }}\nevents = [\"drift_detected\"]\n",
            hook.url("/drift")
        ),
    );
    g.register("1.0.0", "");
    g.gantry(&["deploy", "1.0.0", "--env", "production"]).ok();
    let (code, report) = drift(&g);
    assert_eq!((code, kinds(&report)), (0, vec![]), "{report}");

    // An instance killed behind the controller's back, a file copied by hand.
    let (id, pid) = g
        .instance_processes()
        .into_iter()
        .find(|(id, _)| id.starts_with("production-"))
        .unwrap();
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    std::fs::write(
        g.data().join("releases/1.0.0/copied-by-hand.txt"),
        "a manual file copy",
    )
    .unwrap();
    wait_until("both differences found", Duration::from_secs(10), || {
        kinds(&drift(&g).1) == ["instance_gone", "release_files"]
    });
    let (code, report) = drift(&g);
    assert_eq!(code, 7);
    let gone = &report["findings"][0];
    assert_eq!(gone["subject"], id.as_str());
    assert_eq!(gone["repairable"], true);
    assert!(
        report["findings"][1]["detail"]
            .as_str()
            .unwrap()
            .contains("copied-by-hand.txt"),
        "{report}"
    );
    // The periodic check put it on the audit trail, and notified it.
    wait_until("drift on the audit trail", Duration::from_secs(10), || {
        g.gantry(&["audit", "list"])
            .ok()
            .stdout
            .contains("drift.detected")
    });
    wait_until("the drift_detected notice", Duration::from_secs(20), || {
        hook.received()
            .iter()
            .any(|r| r.json()["event"] == "drift_detected")
    });
    let notice = hook
        .received()
        .into_iter()
        .find(|r| r.json()["event"] == "drift_detected")
        .unwrap()
        .json();
    assert_eq!(notice["notice"]["env"], "production", "{notice}");
    assert!(
        notice["notice"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("difference(s) from the recorded state")),
        "{notice}"
    );
    // `gantry status` names them (from the latest periodic check).
    wait_until(
        "gantry status names the drift",
        Duration::from_secs(10),
        || {
            let status = g.gantry(&["status"]).ok().stdout;
            status.contains("production has drifted:") && status.contains("release_files")
        },
    );

    // The public status page says how many, never what.
    let public_drift = |g: &Gantry| {
        let (code, page) = http(&g.api_url(), "GET", "/status.json", None, "");
        assert_eq!(code, 200, "{page}");
        let page: serde_json::Value = serde_json::from_str(&page).unwrap();
        let env = page["environments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "production")
            .cloned()
            .unwrap();
        assert!(!page.to_string().contains("copied-by-hand"), "{page}");
        env["drift"].as_u64().unwrap()
    };
    wait_until(
        "the status page counts the drift",
        Duration::from_secs(10),
        || public_drift(&g) == 2,
    );

    // Converged: restarted with its id, unpacked again; each repair audited.
    let run = g.gantry(&["converge"]).ok();
    assert!(
        run.stdout.contains(&format!("repaired instance_gone {id}"))
            && run.stdout.contains("repaired release_files release 1.0.0")
            && run.stdout.find("release_files") < run.stdout.find("instance_gone"),
        "{}",
        run.stdout
    );
    assert_eq!(drift(&g).0, 0);
    assert_eq!(public_drift(&g), 0);
    assert!(g.running_instances().contains(&id));
    assert!(!g.data().join("releases/1.0.0/copied-by-hand.txt").exists());
    assert_eq!(g.get_env("production").1, "hello from 1.0.0\n");
    let audit = g.gantry(&["audit", "list"]).ok().stdout;
    assert!(audit.contains("drift.repair"), "{audit}");
    wait_until(
        "the drift resolved on the audit trail",
        Duration::from_secs(10),
        || {
            g.gantry(&["audit", "list"])
                .ok()
                .stdout
                .contains("drift.resolved")
        },
    );

    // The config changed under the running environment: named, not repairable.
    g.kill_server();
    let config = std::fs::read_to_string(g.config_path()).unwrap();
    let changed = config.replacen("bake = \"300ms\"", "bake = \"2s\"", 4);
    assert_ne!(config, changed);
    std::fs::write(g.config_path(), changed).unwrap();
    g.start_server();
    let (code, report) = drift(&g);
    assert_eq!(code, 7, "{report}");
    let f = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["env"] == "production" && f["kind"] == "config")
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(f["subject"], "bake_ms");
    assert_eq!(f["repairable"], false);
    let run = g.gantry(&["converge"]);
    assert_eq!(run.code, 7, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("not repairable here: deploy to apply the config"),
        "{}",
        run.stdout
    );
}
