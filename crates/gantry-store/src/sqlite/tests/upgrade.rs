//! Rows written by earlier versions are read by this one: the data
//! directory of a controller that stopped mid-deployment is opened by the
//! next version, which resumes where the old one was.

use super::super::migrations::{MIGRATIONS, STRATEGY_REWRITE};
use super::*;
use gantry_core::machine::{RollStage, StrategySettings};
use gantry_core::{step, Effect, Event};
use rusqlite::Connection;

/// A canary at its first step (10%), as stored before the strategy was one
/// value: `settings.canary` set, `settings.rolling` null.
const CANARY_MID_FLIGHT: &str = r#"{"id":1,"env":"production","kind":"deploy","version":"1.1.0","previous_version":"1.0.0",
"settings":{"instances":2,"health":{"interval_ms":1000,"startup_interval_ms":100,"failure_threshold":3,"start_timeout_ms":5000},"bake_ms":3000,
"canary":{"steps":[{"weight":10,"pause":{"kind":"for","ms":60000}},{"weight":50,"pause":{"kind":"until_promoted"}},{"weight":100,"pause":{"kind":"for","ms":0}}],
"analysis":{"alpha":0.01,"min_requests":50,"max_error_rate":0.01,"max_error_rate_increase":0.005,"max_error_rate_ratio":1.5,"max_p99_factor":3.0,"max_p50_factor":1.5,"compare_errors":true,"compare_client_errors":true,"compare_slow_factor":3.0,"promotion_margin":0.5},
"interval_ms":1000,"max_wait_ms":60000},"rolling":null,"smoke":null,"freezes":[]},
"phase":"canary","phase_since":40,"created_at":0,"finished_at":null,"requested_by":"alice",
"old_instances":[{"id":"i1","port":9001}],"new_instances":[{"id":"i2","port":9002}],"traffic_on_new":true,
"health":{"i2":{"up":true,"consecutive_failures":0,"last_detail":"healthy"}},"reason":null,
"canary":{"step":0,"weight":10,"baseline":{"requests":10000,"errors":10,"p50_ms":10.0,"p99_ms":40.0},"limits":{"p99_ms":120.0,"p50_ms":15.0,"compare_ms":120.0},
"step_start":[{"requests":0,"errors":0,"client_errors":0,"over_p99_limit":0,"over_p50_limit":0,"over_compare_limit":0},{"requests":0,"errors":0,"client_errors":0,"over_p99_limit":0,"over_p50_limit":0,"over_compare_limit":0}],
"step_started_at":50,"paused_at":null,"waiting_logged":false,
"last":{"reports":[{"rule":"error_rate","description":"canary error rate above 1.00%","status":"passing","observed":0.0,"threshold":0.01,"events":0,"samples":100,"evidence":0.0099,"needed":2400.0}],"verdict":{"verdict":"continue","waiting":false}}},
"rolling":null,"smoke":null,"change":null}"#;

/// A rolling update verifying its second batch, one old instance retired, as
/// stored before the strategy was one value: `settings.rolling` set.
const ROLLING_MID_FLIGHT: &str = r#"{"id":2,"env":"staging","kind":"deploy","version":"1.1.0","previous_version":"1.0.0",
"settings":{"instances":2,"health":{"interval_ms":1000,"startup_interval_ms":100,"failure_threshold":3,"start_timeout_ms":5000},"bake_ms":3000,
"canary":null,"rolling":{"max_surge":1,"max_unavailable":0},"smoke":null,"freezes":[]},
"phase":"rolling","phase_since":10,"created_at":0,"finished_at":null,"requested_by":"alice",
"old_instances":[{"id":"i1","port":9001},{"id":"i2","port":9002}],"new_instances":[{"id":"i11","port":9011},{"id":"i12","port":9012}],"traffic_on_new":true,
"health":{"i11":{"up":true,"consecutive_failures":0,"last_detail":"healthy"},"i12":{"up":false,"consecutive_failures":0,"last_detail":""}},"reason":null,
"canary":null,"rolling":{"batch":2,"routed":1,"retired":[{"id":"i2","port":9002}],"stage":{"stage":"verify"},"stage_since":60,"restored_unrouted":false,"rollback_routed":false},
"smoke":null,"change":null}"#;

/// A finished blue-green deployment of the same era: neither set.
const BLUE_GREEN_DONE: &str = r#"{"id":3,"env":"development","kind":"deploy","version":"1.0.0","previous_version":null,
"settings":{"instances":1,"health":{"interval_ms":1000,"startup_interval_ms":50,"failure_threshold":3,"start_timeout_ms":5000},"bake_ms":0,
"canary":null,"rolling":null,"smoke":null,"freezes":[]},
"phase":"succeeded","phase_since":90,"created_at":0,"finished_at":90,"requested_by":"alice",
"old_instances":[],"new_instances":[{"id":"i5","port":9005}],"traffic_on_new":true,"health":{},"reason":null,
"canary":null,"rolling":null,"smoke":null,"change":null}"#;

/// A data directory as the previous version left it: its migrations, and
/// these deployment rows.
fn previous_version_db(path: &std::path::Path, rows: &[(i64, &str, &str, bool, &str)]) {
    let conn = Connection::open(path).unwrap();
    let previous = STRATEGY_REWRITE;
    for (n, sql) in MIGRATIONS[..previous].iter().enumerate() {
        conn.execute_batch(sql).unwrap();
        conn.pragma_update(None, "user_version", n + 1).unwrap();
    }
    for (id, env, phase, active, state) in rows {
        conn.execute(
            "INSERT INTO deployments (id, env, version, kind, phase, active, created_at, finished_at, state)
             VALUES (?1, ?2, '1.1.0', 'deploy', ?3, ?4, 0, NULL, ?5)",
            rusqlite::params![id, env, phase, active, state],
        )
        .unwrap();
    }
}

#[test]
fn canary_and_rolling_deployments_stored_mid_flight_by_the_previous_version_resume() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gantry.db");
    previous_version_db(
        &path,
        &[
            (1, "production", "canary", true, CANARY_MID_FLIGHT),
            (2, "staging", "rolling", true, ROLLING_MID_FLIGHT),
            (3, "development", "succeeded", false, BLUE_GREEN_DONE),
        ],
    );
    let store = SqliteStore::open(&path).unwrap();
    let active = store.active_deployments().unwrap();
    assert_eq!(active.iter().map(|d| d.id).collect::<Vec<_>>(), [1, 2]);

    let canary = &active[0];
    let StrategySettings::Canary(c) = &canary.settings.strategy else {
        panic!("a canary: {:?}", canary.settings.strategy)
    };
    let weights: Vec<u32> = c.steps.iter().map(|s| s.weight).collect();
    assert_eq!(weights, [10, 50, 100]);
    assert_eq!(c.interval_ms, 1000);
    assert_eq!(
        canary.canary.as_ref().map(|s| (s.step, s.weight)),
        Some((0, 10))
    );
    // Resumed at its step: it looks at the metrics again and probes, no traffic moves.
    let t = step(canary, &Event::Resumed, 100);
    assert!(
        t.effects
            .iter()
            .any(|e| matches!(e, Effect::ObserveMetrics { .. })),
        "{:?}",
        t.effects
    );
    assert!(!t
        .effects
        .iter()
        .any(|e| matches!(e, Effect::ShiftTraffic { .. })));
    // Its metrics are judged with the stored settings: a clear regression rolls back.
    let bad = Event::MetricsObserved {
        canary: gantry_core::analysis::Counts {
            requests: 2000,
            errors: 400,
            ..Default::default()
        },
        stable: gantry_core::analysis::Counts {
            requests: 18000,
            errors: 18,
            ..Default::default()
        },
        hosts: Default::default(),
        queries: Default::default(),
        resources: Vec::new(),
    };
    let t = step(&t.deployment, &bad, 200);
    assert_eq!(t.deployment.phase, Phase::RollingBack, "{:?}", t.log);

    let rolling = &active[1];
    assert_eq!(
        rolling.settings.strategy,
        StrategySettings::Rolling(gantry_core::machine::RollingSettings {
            max_surge: 1,
            max_unavailable: 0,
            judge: None,
        })
    );
    let r = rolling.rolling.as_ref().unwrap();
    assert_eq!((r.batch, r.routed, &r.stage), (2, 1, &RollStage::Verify));
    // Resumed at its stage: the instance not up yet is probed; once up, its
    // batch takes traffic and the last old instance leaves the routing.
    let t = step(rolling, &Event::Resumed, 100);
    assert!(
        t.effects
            .iter()
            .any(|e| matches!(e, Effect::ProbeHealth { instance, .. } if instance.id == "i12")),
        "{:?}",
        t.effects
    );
    let t = step(
        &t.deployment,
        &Event::HealthObserved {
            instance: "i12".into(),
            probe: gantry_core::machine::Probe::Healthy,
        },
        150,
    );
    assert_eq!(
        t.deployment.rolling.as_ref().map(|r| &r.stage),
        Some(&RollStage::Route {
            retire: vec![gantry_core::InstanceRef {
                id: "i1".into(),
                port: 9001,
                host: None,
            }]
        })
    );

    let done = store.deployment(3).unwrap().unwrap();
    assert_eq!(done.settings.strategy, StrategySettings::BlueGreen);
    assert_eq!(done.phase, Phase::Succeeded);

    // Written back in the one shape, and read again the same.
    drop(store);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.active_deployments().unwrap(), active);
}
