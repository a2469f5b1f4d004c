//! A controller of this version started on a data directory that the
//! previous version left mid-deployment resumes what was in flight. The
//! previous version stored a deployment's strategy as two optional settings
//! (`settings.canary`, `settings.rolling`); its rows are made here from ours,
//! the controller killed, exactly as that version wrote them.

use crate::harness::*;
use gantry_core::machine::{RollStage, RollingSettings};
use gantry_core::StrategySettings;
use std::time::Duration;

/// With the controller down: every deployment row back in the previous
/// version's shape, and the schema (version and tables) with it, so the
/// next start upgrades the data directory as it would after an upgrade of
/// the binary.
fn as_the_previous_version_left_it(g: &Gantry) {
    let conn = rusqlite::Connection::open(g.data().join("gantry.db")).unwrap();
    conn.execute_batch(
        r#"UPDATE deployments SET state = json_set(
            json_remove(state, '$.settings.strategy'),
            '$.settings.canary',
            CASE WHEN json_extract(state, '$.settings.strategy.kind') = 'canary'
                THEN json_remove(json_extract(state, '$.settings.strategy'), '$.kind') END,
            '$.settings.rolling',
            CASE WHEN json_extract(state, '$.settings.strategy.kind') = 'rolling'
                THEN json_remove(json_extract(state, '$.settings.strategy'), '$.kind') END
        );"#,
    )
    .unwrap();
    let old: String = conn
        .query_row(
            "SELECT state FROM deployments ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        old.contains(r#""canary":{"steps""#) || old.contains(r#""rolling":{"max_surge""#),
        "{old}"
    );
    assert!(!old.contains("strategy"), "{old}");
    // That version had run the first 6 migrations: the strategy rewrite is
    // the 7th, and the tables of later ones did not exist yet.
    conn.execute_batch(
        "DROP TABLE incidents; DROP TABLE applied_migrations; ALTER TABLE releases DROP COLUMN migrations; ALTER TABLE releases DROP COLUMN committed_at; DROP TABLE deployment_closures;",
    )
    .unwrap();
    conn.pragma_update(None, "user_version", 6).unwrap();
}

#[test]
fn a_canary_held_at_its_step_by_the_previous_version_resumes_and_is_promoted() {
    let tail = r#"strategy = "canary"
canary = { steps = [{ weight = 10, pause = "until-promoted" }, { weight = 100 }], interval = "250ms", max_wait = "20s" }
"#;
    let (mut g, load) = serving(tail, &[("1.1.0", "")]);
    let id = deploy_id(
        &g.gantry(&["deploy", "1.1.0", "--env", "production", "--detach"])
            .ok(),
    );
    wait_until("the 10% step", Duration::from_secs(20), || {
        g.deployment(id)
            .canary
            .as_ref()
            .is_some_and(|c| c.weight == 10)
    });
    g.kill_server();
    as_the_previous_version_left_it(&g);
    g.start_server();

    let d = g.deployment(id);
    assert_eq!(d.phase, Phase::Canary, "{d:?}");
    let StrategySettings::Canary(canary) = &d.settings.strategy else {
        panic!("not a canary: {:?}", d.settings.strategy);
    };
    assert_eq!(canary.steps[0].weight, 10, "{d:?}");
    assert_eq!(d.canary.as_ref().map(|c| c.weight), Some(10), "{d:?}");
    // The old shape is gone from the wire, not only from the type.
    let raw = g.api_json(&format!("/deployments/{id}"));
    assert_eq!(raw["settings"]["strategy"]["kind"], "canary", "{raw}");
    assert!(raw["settings"].get("canary").is_none(), "{raw}");
    g.gantry(&["promote", &id.to_string()]).ok();
    let d = g.wait_finished(id);
    let (_, failed) = load.finish();
    assert_eq!(d.phase, Phase::Succeeded, "{d:?}");
    assert_eq!(failed, 0, "no user request failed across the upgrade");
    let log = g.log_of(id);
    for line in [
        "controller restarted; resuming in phase canary",
        "promoted by admin at 10%",
        "traffic: 100% to 1.1.0",
        "1.1.0 is live in production",
    ] {
        assert!(log.contains(line), "missing {line:?} in:\n{log}");
    }
}

#[test]
fn a_rolling_update_held_at_its_smoke_checks_by_the_previous_version_resumes() {
    // The first batch's non-critical smoke check fails (1.1.0 is not "from
    // 1.0"), so the update waits for a decision mid-flight.
    let tail = r#"strategy = "rolling"
rolling = { max_surge = 1, max_unavailable = 0 }

[environments.production.smoke]
timeout = "20s"

[[environments.production.smoke.checks]]
name = "still-on-1.0"
path = "/"
body_contains = "from 1.0"
critical = false
"#;
    let (mut g, load) = serving(tail, &[("1.1.0", "")]);
    let id = deploy_id(
        &g.gantry(&["deploy", "1.1.0", "--env", "production", "--detach"])
            .ok(),
    );
    wait_until("the smoke hold", Duration::from_secs(20), || {
        g.deployment(id).smoke.as_ref().is_some_and(|s| s.held)
    });
    g.kill_server();
    as_the_previous_version_left_it(&g);
    g.start_server();

    let d = g.deployment(id);
    assert_eq!(d.phase, Phase::Rolling, "{d:?}");
    assert!(
        matches!(d.rolling.as_ref().map(|r| &r.stage), Some(RollStage::Smoke)),
        "{d:?}"
    );
    assert_eq!(
        d.settings.strategy,
        StrategySettings::Rolling(RollingSettings {
            max_surge: 1,
            max_unavailable: 0,
            judge: None,
        }),
        "{d:?}"
    );
    g.gantry(&["promote", &id.to_string()]).ok();
    let d = g.wait_finished(id);
    let (_, failed) = load.finish();
    assert_eq!(d.phase, Phase::Succeeded, "{d:?}");
    assert_eq!(failed, 0, "no user request failed across the upgrade");
    let log = g.log_of(id);
    for line in [
        "controller restarted; resuming in phase rolling",
        "batch 2: starting 1 instance(s) of 1.1.0 (2 of 2)",
        "rolling update complete",
        "1.1.0 is live in production",
    ] {
        assert!(log.contains(line), "missing {line:?} in:\n{log}");
    }
    assert_eq!(
        g.running_instances(),
        [format!("production-d{id}-1"), format!("production-d{id}-2")]
    );
}
