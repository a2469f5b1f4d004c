//! The audit trail through the real controller: actions recorded with their
//! outcome, refused requests too, and tampering found wherever it happens.

use crate::harness::*;

fn export(g: &Gantry) -> Vec<String> {
    let path = g.data().join("../audit.jsonl");
    g.gantry(&["audit", "export", "--output", path.to_str().unwrap()])
        .ok();
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn verify_lines(g: &Gantry, lines: &[String]) -> Run {
    let path = g.data().join("../tampered.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    g.gantry(&["audit", "verify", "--file", path.to_str().unwrap()])
}

#[test]
fn actions_and_refusals_are_recorded_and_any_tampering_is_named() {
    let g = Gantry::start();
    g.register("1.0.0", "");
    g.register("1.1.0", "\"unhealthy\": true");
    g.gantry(&["deploy", "1.0.0", "--env", "development"]).ok();
    g.gantry(&["deploy", "1.1.0", "--env", "development"])
        .fails_with(3, "rolled_back");
    let (status, _) = http(
        &g.api_url(),
        "POST",
        "/api/v1/deployments",
        Some("wrong"),
        "{}",
    );
    assert_eq!(status, 401);
    g.gantry(&["abort", "1"]).fails_with(1, "already finished");

    let list = g.gantry(&["audit", "list", "--limit", "100"]).ok().stdout;
    for needle in [
        "PUT /api/v1/releases/1.0.0",
        "POST /api/v1/deployments",
        "deployment.finished",
        "rolled_back",
        "refused 401",
        "anonymous",
        "refused 409",
        "POST /api/v1/deployments/1/abort",
    ] {
        assert!(list.contains(needle), "missing {needle:?} in:\n{list}");
    }
    let verified = g.gantry(&["audit", "verify"]).ok().stdout;
    assert!(verified.starts_with("audit trail intact: "), "{verified}");

    // The rollback's reason is on the trail, with who asked for the deployment.
    let lines = export(&g);
    let finished: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["action"] == "deployment.finished")
        .collect();
    assert_eq!(finished.len(), 2);
    let detail: serde_json::Value =
        serde_json::from_str(finished[1]["detail"].as_str().unwrap()).unwrap();
    assert_eq!(finished[1]["outcome"], "rolled_back");
    assert_eq!(detail["requested_by"], "admin");
    assert!(detail["reason"]
        .as_str()
        .unwrap()
        .contains("did not become healthy"));

    // An export verifies offline; edits, removals and reorderings are named.
    assert!(verify_lines(&g, &lines).ok().stdout.contains("intact"));
    let mut edited = lines.clone();
    edited[2] = edited[2].replace("\"actor\":\"admin\"", "\"actor\":\"mallory\"");
    assert_ne!(edited[2], lines[2]);
    let out = verify_lines(&g, &edited).fails_with(5, "BROKEN at record 3");
    assert!(out.stdout.contains("edited"), "{}", out.stdout);
    let mut removed = lines.clone();
    removed.remove(1);
    verify_lines(&g, &removed).fails_with(5, "BROKEN at record 3: expected record 2 here");
    let mut reordered = lines.clone();
    reordered.swap(3, 4);
    verify_lines(&g, &reordered).fails_with(5, "BROKEN at record 5");
    let mut garbage = lines.clone();
    garbage[1] = "{\"seq\": \"two\"}".into();
    verify_lines(&g, &garbage).fails_with(1, "tampered.jsonl:2: not an audit record");

    // Someone with write access to the database drops the guard and edits a record.
    let db = rusqlite::Connection::open(g.data().join("gantry.db")).unwrap();
    let err = db
        .execute("UPDATE audit SET outcome = 'done 200' WHERE seq = 4", [])
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    db.execute_batch(
        "DROP TRIGGER audit_append_only; UPDATE audit SET outcome = 'done 200' WHERE seq = 4;",
    )
    .unwrap();
    let out = g
        .gantry(&["audit", "verify"])
        .fails_with(5, "BROKEN at record 4");
    assert!(out.stdout.contains("edited"), "{}", out.stdout);
}
