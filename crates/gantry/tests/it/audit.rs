//! The audit trail through the real controller: actions recorded with their
//! outcome, refused requests too, and tampering found wherever it happens.

use crate::harness::*;
use gantry_api::EvidenceRecord;
use gantry_core::audit::{AuditRecord, Checkpoint};
use gantry_core::evidence::Report;
use serde_json::Value;

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
    let finished: Vec<AuditRecord> = lines
        .iter()
        .map(|l| serde_json::from_str::<AuditRecord>(l).unwrap())
        .filter(|r| r.entry.action == "deployment.finished")
        .collect();
    assert_eq!(finished.len(), 2);
    // `detail` is free-form JSON text.
    let detail: Value = serde_json::from_str(&finished[1].entry.detail).unwrap();
    assert_eq!(finished[1].entry.outcome, "rolled_back");
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

/// A controller with some history, the auditor's checkpoint of it (kept
/// outside the data directory) and the pinned public key, then more history.
fn trail_with_checkpoint() -> (Gantry, std::path::PathBuf, String) {
    let g = Gantry::start();
    g.register("1.0.0", "");
    g.gantry(&["deploy", "1.0.0", "--env", "development"]).ok();
    let key = g
        .gantry(&["audit", "public-key"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    assert_eq!(key.len(), 64, "{key}");
    let cp = g.data().join("../auditor-checkpoint.json");
    g.gantry(&["audit", "checkpoint", "--output", cp.to_str().unwrap()])
        .ok();
    g.register("1.1.0", "");
    g.gantry(&["deploy", "1.1.0", "--env", "development"]).ok();
    g.gantry(&[
        "audit",
        "verify",
        "--checkpoint",
        cp.to_str().unwrap(),
        "--public-key",
        &key,
    ])
    .ok();
    (g, cp, key)
}

fn checkpoint_seq(cp: &std::path::Path) -> u64 {
    let checkpoint: Checkpoint =
        serde_json::from_str(&std::fs::read_to_string(cp).unwrap()).unwrap();
    checkpoint.seq
}

fn verify_against(g: &Gantry, cp: &std::path::Path, key: &str) -> Run {
    g.gantry(&[
        "audit",
        "verify",
        "--checkpoint",
        cp.to_str().unwrap(),
        "--public-key",
        key,
    ])
}

fn db(g: &Gantry) -> rusqlite::Connection {
    rusqlite::Connection::open(g.data().join("gantry.db")).unwrap()
}

fn max_seq(db: &rusqlite::Connection) -> u64 {
    db.query_row("SELECT MAX(seq) FROM audit", [], |r| r.get(0))
        .unwrap()
}

/// What an attacker with the data directory does after changing records:
/// drop every guard, point the head at the new end, and remove the
/// controller's own checkpoints (they could re-sign them with the key too).
fn cover_tracks(db: &rusqlite::Connection) {
    db.execute_batch(
        "DROP TRIGGER IF EXISTS audit_head_forward;
         DROP TRIGGER IF EXISTS audit_checkpoints_below_anchor;
         UPDATE audit_head SET seq = (SELECT MAX(seq) FROM audit),
                               hash = (SELECT hash FROM audit ORDER BY seq DESC LIMIT 1);
         DELETE FROM audit_checkpoints;",
    )
    .unwrap();
}

#[test]
fn the_key_file_is_private_and_a_plain_delete_is_refused() {
    let (g, _, key) = trail_with_checkpoint();
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(g.data().join("audit.key")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let db = db(&g);
    for sql in [
        "DELETE FROM audit WHERE seq = (SELECT MAX(seq) FROM audit)",
        "DELETE FROM audit WHERE seq = 1",
    ] {
        let err = db.execute(sql, []).unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    // The stored checkpoints are signed with the printed key.
    let stored: String = db
        .query_row(
            "SELECT public_key FROM audit_checkpoints LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, key);
}

#[test]
fn deleting_the_newest_records_is_found_and_their_numbers_are_not_reused() {
    let (g, cp, key) = trail_with_checkpoint();
    let db = db(&g);
    let (end, at_cp) = (max_seq(&db), checkpoint_seq(&cp));
    assert!(end > at_cp + 2);
    // Naively: drop the guard and delete the newest records, cutting into
    // what the checkpoint covers.
    db.execute_batch(&format!(
        "DROP TRIGGER audit_delete_below_anchor; DELETE FROM audit WHERE seq > {};",
        at_cp - 2
    ))
    .unwrap();
    g.gantry(&["audit", "verify"]).fails_with(
        5,
        &format!("records {}..{end} were removed from the end", at_cp - 1),
    );
    // The next record takes a new number: the gap stays visible.
    g.register("2.0.0", "");
    assert!(max_seq(&db) > end, "sequence numbers are not reused");
    g.gantry(&["audit", "verify"])
        .fails_with(5, &format!("records {}..{end} are missing", at_cp - 1));

    // Thoroughly: also delete the new ones, rewind the head, drop the
    // controller's checkpoints. The chain alone now looks whole; the
    // auditor's checkpoint does not.
    db.execute(&format!("DELETE FROM audit WHERE seq > {}", at_cp - 2), [])
        .unwrap();
    db.execute_batch(
        "DROP TRIGGER audit_head_forward;
         UPDATE audit_head SET seq = (SELECT MAX(seq) FROM audit),
                               hash = (SELECT hash FROM audit ORDER BY seq DESC LIMIT 1);",
    )
    .unwrap();
    // The controller's own newest checkpoint still tells...
    g.gantry(&["audit", "verify"])
        .fails_with(5, "(the trail was cut short)");
    // ...until that is gone too.
    cover_tracks(&db);
    assert!(g
        .gantry(&["audit", "verify"])
        .ok()
        .stdout
        .contains("intact"));
    verify_against(&g, &cp, &key).fails_with(
        5,
        &format!(
            "records {}..{at_cp} were removed (the trail was cut short)",
            at_cp - 1
        ),
    );
}

#[test]
fn a_rewrite_with_every_later_hash_recomputed_is_found_by_the_checkpoint() {
    let (g, cp, key) = trail_with_checkpoint();
    let db = db(&g);
    let at_cp = checkpoint_seq(&cp);
    let export = g.data().join("../before.jsonl");
    g.gantry(&["audit", "export", "--output", export.to_str().unwrap()])
        .ok();
    // Rewrite record 3 and recompute every hash after it, as someone with
    // the database file can.
    db.execute_batch("DROP TRIGGER audit_append_only;").unwrap();
    let mut rows: Vec<AuditRecord> = std::fs::read_to_string(&export)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    rows[2].entry.actor = "mallory".into();
    let mut prev = rows[2].prev_hash.clone();
    for r in &mut rows[2..] {
        r.prev_hash = prev.clone();
        r.hash = gantry_core::audit::record_hash(r.seq, &r.entry, &r.prev_hash);
        db.execute(
            "UPDATE audit SET actor = ?1, prev_hash = ?2, hash = ?3 WHERE seq = ?4",
            rusqlite::params![r.entry.actor, r.prev_hash, r.hash, r.seq],
        )
        .unwrap();
        prev = r.hash.clone();
    }
    db.execute_batch("DROP TRIGGER audit_head_forward;")
        .unwrap();
    cover_tracks(&db);
    assert!(g
        .gantry(&["audit", "verify"])
        .ok()
        .stdout
        .contains("intact"));
    verify_against(&g, &cp, &key).fails_with(
        5,
        &format!("BROKEN at record {at_cp}: its hash differs from the checkpoint"),
    );
    // The same with an export, offline.
    let forged = g.data().join("../forged.jsonl");
    g.gantry(&["audit", "export", "--output", forged.to_str().unwrap()])
        .ok();
    g.gantry(&[
        "audit",
        "verify",
        "--file",
        forged.to_str().unwrap(),
        "--checkpoint",
        cp.to_str().unwrap(),
        "--public-key",
        &key,
    ])
    .fails_with(5, "the trail was rewritten at or before record");
    // A checkpoint altered by hand, or checked against another key, is refused.
    let text = std::fs::read_to_string(&cp).unwrap();
    let altered = g.data().join("../altered.json");
    std::fs::write(
        &altered,
        text.replace(&format!("\"seq\": {at_cp}"), "\"seq\": 2"),
    )
    .unwrap();
    verify_against(&g, &altered, &key).fails_with(5, "signature does not match");
    verify_against(&g, &cp, &"ab".repeat(32)).fails_with(1, "--public-key");
}

#[test]
fn deleting_the_oldest_records_under_a_forged_anchor_is_found() {
    let (g, cp, key) = trail_with_checkpoint();
    let db = db(&g);
    let hash3: String = db
        .query_row("SELECT hash FROM audit WHERE seq = 3", [], |r| r.get(0))
        .unwrap();
    db.execute_batch(&format!(
        "DROP TRIGGER audit_delete_below_anchor; DROP TRIGGER audit_anchor_on_record;
         DELETE FROM audit WHERE seq <= 3;
         INSERT INTO audit_anchor (id, seq, hash) VALUES (1, 3, '{hash3}');"
    ))
    .unwrap();
    cover_tracks(&db);
    assert!(g
        .gantry(&["audit", "verify"])
        .ok()
        .stdout
        .contains("intact"));
    verify_against(&g, &cp, &key)
        .fails_with(5, "records 1..3 were removed since the checkpoint of");
}

#[test]
fn token_less_requests_are_refused_without_growing_the_audit_trail_much() {
    let g = Gantry::start();
    let url = g.api_url();
    let db = rusqlite::Connection::open(g.data().join("gantry.db")).unwrap();
    let size = |db: &rusqlite::Connection| -> (i64, i64) {
        db.query_row(
            "SELECT COUNT(*), COALESCE(SUM(length(action) + length(subject) + length(outcome)
                + length(detail) + length(actor) + 150), 0) FROM audit",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    };
    let before = size(&db);
    let body = format!(
        "{{\"env\": \"development\", \"version\": \"{}\"}}",
        "9".repeat(60_000)
    );
    for _ in 0..200 {
        let (code, _) = http(&url, "POST", "/api/v1/deployments", None, &body);
        assert_eq!(code, 401);
    }
    let (code, _) = http(&url, "POST", "/api/v1/deployments", Some("wrong"), &body);
    assert_eq!(code, 401);
    let after = size(&db);
    let (records, bytes) = (after.0 - before.0, after.1 - before.1);
    assert!(records <= 21, "{records} records for 201 refusals");
    assert!(bytes < 16 * 1024, "{bytes} bytes for 201 refusals");
    // What is recorded says what was refused, why and from where, not the body.
    let (detail, outcome): (String, String) = db
        .query_row(
            "SELECT detail, outcome FROM audit WHERE actor = 'anonymous' ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(outcome, "refused 401");
    assert!(detail.contains("missing bearer token"), "{detail}");
    assert!(detail.contains("\"peer\":\"127.0.0.1\""), "{detail}");
    assert!(!detail.contains("9999"), "{detail}");
    assert!(g.deployments(None).is_empty());
}

/// PUTs `body` as it is (no JSON content type, as the CLI sends a report)
/// and reads the whole answer: status, `Content-Length` if any, body.
fn put_raw(base: &str, path: &str, token: &str, body: &[u8]) -> (u16, Option<usize>, Vec<u8>) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&resp[..split]).to_ascii_lowercase();
    assert!(
        !head.contains("transfer-encoding: chunked"),
        "a known-length answer keeps its length: {head}"
    );
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|n| n.trim().parse().unwrap());
    (status, length, resp[split + 4..].to_vec())
}

/// The audit record of the last request with `action`.
fn last_record(g: &Gantry, action: &str) -> AuditRecord {
    let page = g.audit_page(Some(10_000));
    page.records
        .iter()
        .rev()
        .find(|r| r.entry.action == action)
        .unwrap_or_else(|| panic!("no {action:?} on the trail: {:?}", page.records))
        .clone()
}

#[test]
fn an_answer_too_large_to_read_for_the_trail_reaches_the_client_whole() {
    let g = Gantry::start();
    g.register("1.0.0", "");
    // Twenty failing cases with long names: the answer lists them all, and
    // is far over the 64 KiB the audit layer reads.
    let long = "n".repeat(5000);
    let cases: String = (0..20)
        .map(|i| format!("<testcase classname=\"c{i}\" name=\"{long}\"><failure/></testcase>"))
        .collect();
    let report = format!("<testsuite name=\"s\">{cases}</testsuite>");
    let (status, length, body) = put_raw(
        &g.api_url(),
        "/api/v1/releases/1.0.0/evidence/unit?file=big.xml",
        &g.token(),
        report.as_bytes(),
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    assert!(body.len() > 100_000, "the answer is {} bytes", body.len());
    assert_eq!(length, Some(body.len()), "the answer's length is kept");
    let answer: EvidenceRecord = serde_json::from_slice(&body).unwrap();
    let Report::Junit { failed, .. } = answer.report else {
        panic!("a JUnit report: {:?}", answer.report)
    };
    assert_eq!(failed.len(), 20);
    assert_eq!(failed[19], format!("c19.{long}"));
    // The action is on the trail all the same, saying its answer was not read.
    let record = last_record(&g, "PUT /api/v1/releases/1.0.0/evidence/unit");
    assert_eq!(record.entry.outcome, "done 201");
    assert_eq!(
        record.entry.subject,
        "release 1.0.0 evidence unit (big.xml)"
    );
    let detail: Value = serde_json::from_str(&record.entry.detail).unwrap();
    let unread = detail["answer"].as_str().unwrap_or_default();
    assert!(
        unread.contains("over 65536 bytes, passed to the client unread"),
        "{detail}"
    );
    assert!(verify_ok(&g));
}

fn verify_ok(g: &Gantry) -> bool {
    g.gantry(&["audit", "verify"])
        .ok()
        .stdout
        .starts_with("audit trail intact")
}

#[test]
fn the_trail_names_what_each_action_acted_on() {
    let g = Gantry::start();
    g.register("1.0.0", "");
    g.gantry(&["deploy", "1.0.0", "--env", "development"]).ok();
    let report = "<testsuite name=\"s\"><testcase name=\"t\"/></testsuite>";
    let (status, _, body) = put_raw(
        &g.api_url(),
        "/api/v1/releases/1.0.0/evidence/unit?file=unit.xml",
        &g.token(),
        report.as_bytes(),
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    // The evidence record's id (1) is not a deployment's.
    let answer: EvidenceRecord = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer.id, 1);
    let evidence = last_record(&g, "PUT /api/v1/releases/1.0.0/evidence/unit");
    assert_eq!(
        evidence.entry.subject,
        "release 1.0.0 evidence unit (unit.xml)"
    );
    let release = last_record(&g, "PUT /api/v1/releases/1.0.0");
    assert_eq!(release.entry.subject, "release 1.0.0");
    let deployment = last_record(&g, "POST /api/v1/deployments");
    assert_eq!(deployment.entry.subject, "deployment 1");
    // A refused action names what was asked for: its path.
    g.gantry(&["abort", "1"]).fails_with(1, "already finished");
    let refused = last_record(&g, "POST /api/v1/deployments/1/abort");
    assert_eq!(refused.entry.outcome, "refused 409");
    assert_eq!(refused.entry.subject, "/api/v1/deployments/1/abort");
}
