use super::*;

const JUNIT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="all" tests="4">
  <testsuite name="api" tests="3">
    <testcase classname="api.auth" name="rejects_bad_token" time="0.01"/>
    <testcase classname="api.auth" name="accepts_token" time="0.01"/>
    <testcase classname="api.deploy" name="refuses_freeze" time="0.02">
      <failure message="expected 409">assertion failed</failure>
    </testcase>
  </testsuite>
  <testsuite name="store">
    <testcase classname="store" name="migrates"><skipped/></testcase>
  </testsuite>
</testsuites>"#;

const SARIF: &str = r#"{
  "version": "2.1.0",
  "runs": [{
    "tool": {"driver": {"name": "cargo-audit", "rules": [
      {"id": "RUSTSEC-1", "properties": {"security-severity": "9.8"}},
      {"id": "RUSTSEC-2", "defaultConfiguration": {"level": "note"}}
    ]}},
    "results": [
      {"ruleId": "RUSTSEC-1", "message": {"text": "heap overflow"},
       "locations": [{"physicalLocation": {"artifactLocation": {"uri": "Cargo.lock"}}}]},
      {"ruleId": "RUSTSEC-2", "message": {"text": "unmaintained"}},
      {"ruleId": "lint", "level": "warning", "message": {"text": "weak hash"}}
    ]
  }]
}"#;

const LCOV: &str = "TN:\nSF:src/lib.rs\nDA:1,1\nDA:2,0\nLF:10\nLH:9\nend_of_record\nSF:src/main.rs\nDA:1,3\nDA:2,1\nend_of_record\n";

#[test]
fn junit_counts_test_cases_and_names_failures() {
    let r = parse(EvidenceKind::Unit, JUNIT.as_bytes()).unwrap();
    assert_eq!(
        r,
        Report::Junit {
            tests: 4,
            failures: 1,
            errors: 0,
            skipped: 1,
            failed: vec!["api.deploy.refuses_freeze".into()],
        }
    );
    let pct = r.pass_pct().unwrap();
    assert!((pct - 200.0 / 3.0).abs() < 1e-9, "{pct}");
}

#[test]
fn bad_junit_is_refused_with_the_reason() {
    let truncated = &JUNIT[..JUNIT.len() / 2];
    let e = parse(EvidenceKind::Unit, truncated.as_bytes()).unwrap_err();
    assert_eq!(e.format, "JUnit XML");
    assert!(e.message.starts_with("malformed XML"), "{e}");
    let e = parse(EvidenceKind::Unit, b"<coverage line-rate=\"1\"/>").unwrap_err();
    assert!(e.message.contains("root element is <coverage>"), "{e}");
    let e = parse(EvidenceKind::Integration, b"<testsuites></testsuites>").unwrap_err();
    assert!(e.message.contains("no <testcase>"), "{e}");
    let e = parse(EvidenceKind::Unit, &[0xff, 0xfe, 0x00]).unwrap_err();
    assert!(e.message.contains("not UTF-8"), "{e}");
}

#[test]
fn sarif_severities_come_from_scores_then_levels() {
    let r = parse(EvidenceKind::Security, SARIF.as_bytes()).unwrap();
    let Report::Sarif {
        findings,
        worst,
        tools,
    } = &r
    else {
        panic!("{r:?}")
    };
    assert_eq!(tools, &["cargo-audit"]);
    assert_eq!(findings.get(&FindingSeverity::Critical), Some(&1));
    assert_eq!(findings.get(&FindingSeverity::Medium), Some(&1));
    assert_eq!(findings.get(&FindingSeverity::Low), Some(&1));
    assert!(
        worst[0].starts_with("[critical] RUSTSEC-1: heap overflow (Cargo.lock)"),
        "{worst:?}"
    );
    assert_eq!(
        r.summary(),
        "3 finding(s) from cargo-audit: 1 critical, 1 medium, 1 low"
    );
}

#[test]
fn bad_sarif_is_refused() {
    let e = parse(EvidenceKind::Security, &SARIF.as_bytes()[..100]).unwrap_err();
    assert!(e.message.starts_with("malformed JSON"), "{e}");
    let e = parse(EvidenceKind::Security, b"{\"version\": \"2.1.0\"}").unwrap_err();
    assert!(e.message.contains("no \"runs\""), "{e}");
    let e = parse(EvidenceKind::Security, b"{\"runs\": [{}]}").unwrap_err();
    assert!(e.message.contains("runs[0] has no tool.driver"), "{e}");
}

#[test]
fn coverage_from_cobertura_or_lcov() {
    let c = parse(
        EvidenceKind::Coverage,
        br#"<?xml version="1.0"?><coverage line-rate="0.8" lines-valid="200" lines-covered="170"><packages/></coverage>"#,
    )
    .unwrap();
    assert_eq!(c.coverage_pct(), Some(85.0));
    let l = parse(EvidenceKind::Coverage, LCOV.as_bytes()).unwrap();
    assert_eq!(
        l,
        Report::Lcov {
            files: 2,
            lines_found: 12,
            lines_hit: 11
        }
    );
}

#[test]
fn bad_coverage_is_refused() {
    let cut = &LCOV[..LCOV.len() - 15];
    let e = parse(EvidenceKind::Coverage, cut.as_bytes()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "LCOV: truncated: the record for src/main.rs has no end_of_record"
    );
    let e = parse(EvidenceKind::Coverage, b"SF:a\nDA:1,x\nend_of_record\n").unwrap_err();
    assert_eq!(e.to_string(), "LCOV: line 2: \"x\" is not a count");
    let e = parse(EvidenceKind::Coverage, b"hello world\n").unwrap_err();
    assert!(e.message.contains("is not LCOV"), "{e}");
    let e = parse(
        EvidenceKind::Coverage,
        b"<coverage lines-valid=\"10\" lines-covered=\"11\"/>",
    )
    .unwrap_err();
    assert!(e.message.contains("larger"), "{e}");
    let e = parse(EvidenceKind::Coverage, b"<coverage><packages>").unwrap_err();
    assert_eq!(e.format, "Cobertura XML");
}

fn ev(id: i64, kind: EvidenceKind, src: &str) -> Evidence {
    Evidence {
        id,
        kind,
        report: parse(kind, src.as_bytes()).unwrap(),
        added_at: id,
    }
}

#[test]
fn gates_judge_the_newest_evidence_of_each_kind() {
    let mut policy = GatePolicy::standard();
    policy.rehearsal_in = Some("staging".into());
    policy.plan_approved = true;
    let passing_junit =
        r#"<testsuite name="s"><testcase name="a"/><testcase name="b"/></testsuite>"#;
    let evidence = vec![
        ev(1, EvidenceKind::Unit, JUNIT),
        ev(2, EvidenceKind::Unit, passing_junit),
        ev(3, EvidenceKind::Security, SARIF),
        ev(4, EvidenceKind::Coverage, LCOV),
    ];
    let results = evaluate(&policy, "production", &evidence);
    let by = |g: &str| results.iter().find(|r| r.gate == g).unwrap();
    assert!(by("unit tests").passed, "{:?}", by("unit tests"));
    assert_eq!(by("unit tests").evidence, Some(2));
    assert!(!by("integration tests").passed);
    assert_eq!(
        by("integration tests").detail,
        "no integration evidence attached"
    );
    assert!(by("coverage").passed);
    assert!(!by("security findings").passed);
    assert!(by("security findings").detail.contains("RUSTSEC-1"));
    assert!(!by("rollback rehearsal").passed);
    assert!(!by("deployment plan").passed);

    let rehearsal = Evidence {
        id: 5,
        kind: EvidenceKind::Rehearsal,
        report: Report::Rehearsal {
            env: "staging".into(),
            passed: true,
            deployments: vec![7, 8, 9],
            rollback_ms: Some(2100),
            detail: String::new(),
        },
        added_at: 5,
    };
    let results = evaluate(&policy, "production", &[rehearsal]);
    assert!(results
        .iter()
        .any(|r| r.gate == "rollback rehearsal" && r.passed));
}
