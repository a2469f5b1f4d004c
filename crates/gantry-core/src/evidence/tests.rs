//! Tests of reading evidence reports (JUnit, coverage, SARIF, ...). Kept as
//! one file though long: the sample reports are shared fixtures; one test
//! module per format would scatter them.

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

const LCOV: &str = "TN:\nSF:src/lib.rs\nDA:1,1\nDA:2,0\nLF:2\nLH:1\nend_of_record\nSF:src/main.rs\nDA:1,3\nDA:2,1\nDA:3,1\nDA:4,1\nDA:5,1\nDA:6,1\nDA:7,1\nDA:8,1\nend_of_record\n";

/// As coverage tools write it: the DTD line, a header, and each line of
/// each class, repeated under its method. 3 of 4 lines covered.
const COBERTURA: &str = r#"<?xml version="1.0" ?>
<!DOCTYPE coverage SYSTEM "http://cobertura.sourceforge.net/xml/coverage-04.dtd">
<coverage lines-valid="4" lines-covered="3" line-rate="0.75" branch-rate="0" version="7.4" timestamp="1700000000">
  <sources><source>/src</source></sources>
  <packages>
    <package name="app" line-rate="0.75">
      <classes>
        <class name="lib.py" filename="app/lib.py" line-rate="0.75">
          <methods>
            <method name="f" signature="()">
              <lines><line number="1" hits="5"/><line number="2" hits="0"/></lines>
            </method>
          </methods>
          <lines>
            <line number="1" hits="5"/>
            <line number="2" hits="0"/>
            <line number="3" hits="1" branch="true" condition-coverage="50% (1/2)"/>
            <line number="4" hits="12"/>
          </lines>
        </class>
      </classes>
    </package>
  </packages>
</coverage>
"#;

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
    let e = parse(EvidenceKind::Unit, &[b'<', 0xff, 0x00]).unwrap_err();
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
    let e = parse(
        EvidenceKind::Security,
        b"{\"version\": \"2.1.0\", \"runs\": [{}]}",
    )
    .unwrap_err();
    assert!(e.message.contains("runs[0] has no tool.driver"), "{e}");
}

#[test]
fn coverage_from_cobertura_or_lcov() {
    let c = parse(EvidenceKind::Coverage, COBERTURA.as_bytes()).unwrap();
    assert_eq!(
        c,
        Report::Cobertura {
            lines_valid: 4,
            lines_covered: 3
        }
    );
    assert_eq!(c.coverage_pct(), Some(75.0));
    let l = parse(EvidenceKind::Coverage, LCOV.as_bytes()).unwrap();
    assert_eq!(
        l,
        Report::Lcov {
            files: 2,
            lines_found: 10,
            lines_hit: 9
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
    assert!(e.message.contains("no <class> <line> records"), "{e}");
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

// ---- hostile and lying reports ----

/// `open` repeated `depth` times around `inner`, then the matching `close`s.
fn nested(head: &str, open: &str, inner: &str, close: &str, depth: usize, tail: &str) -> String {
    format!(
        "{head}{}{inner}{}{tail}",
        open.repeat(depth),
        close.repeat(depth)
    )
}

fn deep_junit(depth: usize) -> String {
    nested(
        "<testsuites>",
        "<testsuite>",
        r#"<testcase name="t"/>"#,
        "</testsuite>",
        depth,
        "</testsuites>",
    )
}

fn deep_cobertura(depth: usize) -> String {
    nested(
        "<coverage>",
        "<a>",
        r#"<class><lines><line number="1" hits="1"/></lines></class>"#,
        "</a>",
        depth,
        "</coverage>",
    )
}

#[test]
fn deeply_nested_xml_is_refused_before_parsing() {
    // The reports of issue 10: each aborted the controller with a stack overflow.
    let junit = deep_junit(200_000);
    assert!(junit.len() > 1_400_000, "{}", junit.len());
    let e = parse(EvidenceKind::Unit, junit.as_bytes()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "JUnit XML: line 1: elements are nested more than 256 levels deep; refused before parsing"
    );
    let cobertura = deep_cobertura(3_070);
    assert!(cobertura.len() < 25_000, "{}", cobertura.len());
    let e = parse(EvidenceKind::Coverage, cobertura.as_bytes()).unwrap_err();
    assert_eq!(e.format, "Cobertura XML");
    assert!(
        e.message.contains("nested more than 256 levels deep"),
        "{e}"
    );
    // The limit counts what the parser would descend into, no more.
    let e = parse(EvidenceKind::Unit, deep_junit(MAX_XML_DEPTH).as_bytes()).unwrap_err();
    assert!(e.message.contains("nested more than"), "{e}");
    parse(EvidenceKind::Unit, deep_junit(MAX_XML_DEPTH - 2).as_bytes()).unwrap();
    parse(
        EvidenceKind::Coverage,
        deep_cobertura(MAX_XML_DEPTH - 4).as_bytes(),
    )
    .unwrap();
}

#[test]
fn the_depth_limit_sits_far_below_the_stack() {
    // The deepest report accepted parses on a thread with a quarter of the
    // 2 MiB stack a tokio worker or blocking thread has. (Measured: it needs
    // under 192 KiB in a release build and under 256 KiB in a debug one;
    // 2 MiB overflows at about 3,000 levels in release.)
    let report = deep_junit(MAX_XML_DEPTH - 1);
    let parsed = std::thread::Builder::new()
        .stack_size(512 << 10)
        .spawn(move || parse(EvidenceKind::Unit, report.as_bytes()))
        .unwrap()
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(parsed.pass_pct(), Some(100.0));
}

#[test]
fn the_depth_scan_skips_markup_that_is_not_an_element() {
    // Comments, CDATA, processing instructions and attribute values may hold
    // any number of `<a>`: they are not elements and do not count.
    let noise = "<a><a><a><a><a><a><a><a><a><a>".repeat(100);
    let report = format!(
        r#"<testsuites><!-- {noise} --><?pi {noise}?><testsuite name="{}"><testcase name="t"><system-out><![CDATA[{noise}]]></system-out></testcase></testsuite></testsuites>"#,
        noise.replace('<', "&lt;")
    );
    parse(EvidenceKind::Unit, report.as_bytes()).unwrap();
    // A `>` inside a quoted value does not end the tag early, so elements
    // after it are still counted.
    let sly = nested(
        "<testsuites>",
        r#"<testsuite name="a>b" x='>'>"#,
        r#"<testcase name="t"/>"#,
        "</testsuite>",
        MAX_XML_DEPTH,
        "</testsuites>",
    );
    let e = parse(EvidenceKind::Unit, sly.as_bytes()).unwrap_err();
    assert!(e.message.contains("nested more than"), "{e}");
}

#[test]
fn deeply_nested_json_is_refused_before_parsing() {
    let deep = format!(
        r#"{{"version":"2.1.0","runs":[],"x":{}1{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let e = parse(EvidenceKind::Security, deep.as_bytes()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "SARIF: line 1: arrays and objects are nested more than 64 levels deep; refused before parsing"
    );
    // Brackets inside strings, escaped quotes included, are not nesting.
    let in_strings = format!(
        r#"{{"version":"2.1.0","x":"\"{}","runs":[{{"tool":{{"driver":{{"name":"t"}}}}}}]}}"#,
        "[{".repeat(1000)
    );
    parse(EvidenceKind::Security, in_strings.as_bytes()).unwrap();
}

#[test]
fn a_report_over_the_size_limit_is_refused() {
    let big = vec![b' '; MAX_REPORT_BYTES + 1];
    let e = parse(EvidenceKind::Coverage, &big).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "coverage report: the report is {} bytes, larger than the limit of 64 MiB",
            MAX_REPORT_BYTES + 1
        )
    );
}

#[test]
fn cobertura_coverage_comes_from_the_line_records() {
    // Header raised from 3 to 4 covered lines: 100% said, 75% measured.
    let lying = COBERTURA.replace(r#"lines-covered="3""#, r#"lines-covered="4""#);
    let e = parse(EvidenceKind::Coverage, lying.as_bytes()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Cobertura XML: the header says lines-covered=\"4\" but the <line> records give 3 of 4 lines covered (75.0%)"
    );
    let lying = COBERTURA.replace(
        r#"line-rate="0.75" branch-rate"#,
        r#"line-rate="1" branch-rate"#,
    );
    let e = parse(EvidenceKind::Coverage, lying.as_bytes()).unwrap_err();
    assert!(
        e.message
            .contains("header says line-rate=\"1\" but the <line> records give 3 of 4"),
        "{e}"
    );
    let lying = COBERTURA.replace(r#"lines-valid="4""#, r#"lines-valid="3""#);
    let e = parse(EvidenceKind::Coverage, lying.as_bytes()).unwrap_err();
    assert!(e.message.contains("lines-valid=\"3\""), "{e}");
    // Without a header the records alone decide; a rounded rate agrees.
    let bare = COBERTURA
        .replace(r#"lines-valid="4" lines-covered="3" line-rate="0.75""#, "")
        .replace("<coverage ", r#"<coverage line-rate="0.7500" "#);
    let c = parse(EvidenceKind::Coverage, bare.as_bytes()).unwrap();
    assert_eq!(c.coverage_pct(), Some(75.0));
}

#[test]
fn cobertura_refuses_negative_hits_and_line_numbers() {
    for (from, to, what) in [
        (
            r#"<line number="2" hits="0"/>"#,
            r#"<line number="2" hits="-1"/>"#,
            r#"<line hits="-1"> is not a whole number ≥ 0"#,
        ),
        (
            r#"<line number="4" hits="12"/>"#,
            r#"<line number="-4" hits="12"/>"#,
            r#"<line number="-4"> is not a whole number ≥ 0"#,
        ),
        (
            r#"<line number="4" hits="12"/>"#,
            r#"<line number="4"/>"#,
            "<line> has no hits attribute",
        ),
    ] {
        let bad = COBERTURA.replacen(from, to, 1);
        assert_ne!(bad, COBERTURA);
        let e = parse(EvidenceKind::Coverage, bad.as_bytes()).unwrap_err();
        assert!(e.message.contains(what), "{what:?} in {e}");
        assert!(e.message.starts_with("line "), "{e}");
    }
}

#[test]
fn lcov_coverage_comes_from_the_da_records() {
    // LH raised from 1 to 2: the DA: lines say 1 of 2.
    let lying = LCOV.replace("LH:1", "LH:2");
    let e = parse(EvidenceKind::Coverage, lying.as_bytes()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "LCOV: line 6: the record for src/lib.rs says LH:2 but its DA: lines give LH:1"
    );
    let lying = LCOV.replace("LF:2", "LF:20");
    let e = parse(EvidenceKind::Coverage, lying.as_bytes()).unwrap_err();
    assert!(
        e.message.contains("says LF:20 but its DA: lines give LF:2"),
        "{e}"
    );
    // A summary with no DA: lines behind it measures nothing.
    let e = parse(
        EvidenceKind::Coverage,
        b"SF:a.rs\nLF:0\nLH:0\nend_of_record\n",
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "LCOV: no DA: line records: nothing was measured"
    );
}

#[test]
fn sarif_must_be_version_2_1_0() {
    for (version, said) in [
        (
            r#""version": "2.0.0","#,
            r#"version is "2.0.0"; Gantry reads SARIF "2.1.0""#,
        ),
        (
            r#""version": 2.1,"#,
            r#"version is 2.1; Gantry reads SARIF "2.1.0""#,
        ),
        ("", r#"no "version": expected "2.1.0""#),
    ] {
        let sarif = SARIF.replace(r#""version": "2.1.0","#, version);
        let e = parse(EvidenceKind::Security, sarif.as_bytes()).unwrap_err();
        assert!(e.message.contains(said), "{said:?} in {e}");
    }
}

#[test]
fn a_security_severity_that_is_not_a_score_is_refused() {
    for bad in [
        r#""NaN""#,
        r#""-1""#,
        r#""10.5""#,
        r#""high""#,
        r#""inf""#,
        "-0.5",
        "true",
    ] {
        // On the rule, where cargo-audit puts it, and on the result.
        let on_rule = SARIF.replace(
            r#""security-severity": "9.8""#,
            &format!(r#""security-severity": {bad}"#),
        );
        let e = parse(EvidenceKind::Security, on_rule.as_bytes()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("SARIF: runs[0].tool.driver.rules[0]: security-severity {bad} is not a score from 0 to 10")
        );
        let on_result = SARIF.replace(
            r#""message": {"text": "weak hash"}"#,
            &format!(r#""message": {{"text": "weak hash"}}, "properties": {{"security-severity": {bad}}}"#),
        );
        let e = parse(EvidenceKind::Security, on_result.as_bytes()).unwrap_err();
        assert!(
            e.message
                .starts_with("runs[0].results[2]: security-severity"),
            "{e}"
        );
    }
    for (good, severity) in [
        ("0", FindingSeverity::Low),
        (r#""10""#, FindingSeverity::Critical),
        ("7", FindingSeverity::High),
    ] {
        let sarif = SARIF.replace(
            r#""security-severity": "9.8""#,
            &format!(r#""security-severity": {good}"#),
        );
        let Report::Sarif { findings, .. } =
            parse(EvidenceKind::Security, sarif.as_bytes()).unwrap()
        else {
            panic!()
        };
        assert!(findings.contains_key(&severity), "{good}: {findings:?}");
    }
}

#[test]
fn an_external_doctype_is_accepted_an_internal_subset_is_not() {
    // COBERTURA carries the DOCTYPE line coverage tools write.
    assert!(COBERTURA.contains("<!DOCTYPE coverage SYSTEM"));
    parse(EvidenceKind::Coverage, COBERTURA.as_bytes()).unwrap();
    let public = COBERTURA.replace("SYSTEM", r#"PUBLIC "-//Cobertura//DTD Coverage 04//EN""#);
    parse(EvidenceKind::Coverage, public.as_bytes()).unwrap();
    // Entities come only from an internal subset, which is refused…
    let entities = COBERTURA.replace(
        r#"coverage-04.dtd">"#,
        r#"coverage-04.dtd" [<!ENTITY n "4">]>"#,
    );
    let e = parse(EvidenceKind::Coverage, entities.as_bytes()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Cobertura XML: line 2: the DOCTYPE declares an internal subset ([…]); only a reference to an external DTD is accepted, and it is not fetched"
    );
    // …and the external DTD is never read, so its entities are unknown.
    let reference = COBERTURA.replace(r#"number="4""#, r#"number="&n;""#);
    let e = parse(EvidenceKind::Coverage, reference.as_bytes()).unwrap_err();
    assert!(e.message.starts_with("malformed XML"), "{e}");
}

fn utf16(text: &str, big_endian: bool) -> Vec<u8> {
    let mut out = if big_endian {
        vec![0xFE, 0xFF]
    } else {
        vec![0xFF, 0xFE]
    };
    for unit in text.encode_utf16() {
        out.extend(if big_endian {
            unit.to_be_bytes()
        } else {
            unit.to_le_bytes()
        });
    }
    out
}

#[test]
fn byte_order_marks_and_utf16_are_read() {
    let bom = |text: &str| [b"\xEF\xBB\xBF".as_slice(), text.as_bytes()].concat();
    let junit = parse(EvidenceKind::Unit, JUNIT.as_bytes()).unwrap();
    let sarif = parse(EvidenceKind::Security, SARIF.as_bytes()).unwrap();
    let cobertura = parse(EvidenceKind::Coverage, COBERTURA.as_bytes()).unwrap();
    let lcov = parse(EvidenceKind::Coverage, LCOV.as_bytes()).unwrap();
    assert_eq!(parse(EvidenceKind::Unit, &bom(JUNIT)).unwrap(), junit);
    assert_eq!(parse(EvidenceKind::Security, &bom(SARIF)).unwrap(), sarif);
    assert_eq!(
        parse(EvidenceKind::Coverage, &bom(COBERTURA)).unwrap(),
        cobertura
    );
    assert_eq!(parse(EvidenceKind::Coverage, &bom(LCOV)).unwrap(), lcov);
    for big_endian in [false, true] {
        let junit16 = JUNIT.replace("UTF-8", "UTF-16");
        assert_eq!(
            parse(EvidenceKind::Unit, &utf16(&junit16, big_endian)).unwrap(),
            junit
        );
        let cobertura16 = COBERTURA.replace(
            r#"<?xml version="1.0" ?>"#,
            r#"<?xml version="1.0" encoding="UTF-16"?>"#,
        );
        assert_eq!(
            parse(EvidenceKind::Coverage, &utf16(&cobertura16, big_endian)).unwrap(),
            cobertura
        );
    }
    // Broken UTF-16 is refused, not guessed at.
    let e = parse(
        EvidenceKind::Unit,
        &[0xFF, 0xFE, b'<', 0, 0x00, 0xD8, b'a', 0],
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "JUnit XML: not UTF-16 text: unpaired surrogate 0xd800"
    );
    let e = parse(EvidenceKind::Unit, &[0xFF, 0xFE, b'<']).unwrap_err();
    assert!(e.message.contains("odd number of bytes"), "{e}");
}

#[test]
fn reports_that_would_parse_into_a_huge_tree_are_refused_before_parsing() {
    // Each of these is well under the size limit, but parsed it would take
    // 15 to 20 times its size in memory.
    let elements = format!(
        "<testsuites>{}<testcase name=\"t\"/></testsuites>",
        "<a/>".repeat(MAX_XML_NODES as usize)
    );
    let e = parse(EvidenceKind::Unit, elements.as_bytes()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "JUnit XML: the report has more than 4000000 elements; refused before parsing"
    );
    let twelve = r#"<a a="" b="" c="" d="" e="" f="" g="" h="" i="" j="" k="" l=""/>"#;
    let attributes = format!(
        "<coverage>{}</coverage>",
        twelve.repeat(MAX_XML_ATTRIBUTES / 12 + 1)
    );
    let e = parse(EvidenceKind::Coverage, attributes.as_bytes()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Cobertura XML: the report has more than 4000000 attributes; refused before parsing"
    );
    let values = format!(
        r#"{{"version":"2.1.0","runs":[],"x":[{}0]}}"#,
        "0,".repeat(MAX_JSON_VALUES)
    );
    let e = parse(EvidenceKind::Security, values.as_bytes()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "SARIF: the report has more than 4000000 values; refused before parsing"
    );
}

mod depth_scan {
    use super::super::input::check_xml;
    use super::MAX_XML_DEPTH;
    use proptest::prelude::*;

    /// Text that looks like markup: element tags, brackets, quotes.
    fn look_alike() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "<a>", "</a>", "<a/>", ">", "]]", "?", "'", "\"", "[", "=", " ",
        ]);
        prop::collection::vec(piece, 0..8).prop_map(|v| v.concat())
    }

    /// Markup that is not an element, though it may hold what looks like one.
    fn noise() -> impl Strategy<Value = String> {
        prop_oneof![
            look_alike().prop_map(|b| format!("<!--{b}-->")),
            look_alike()
                .prop_filter("ends a CDATA section", |b| !b.contains("]]>"))
                .prop_map(|b| format!("<![CDATA[{b}]]>")),
            look_alike()
                .prop_filter("ends a PI", |b| !b.contains("?>"))
                .prop_map(|b| format!("<?pi {b}?>")),
            look_alike().prop_map(|b| {
                let text = b.replace('<', "&lt;");
                format!(
                    r#"<e v="{}" w='{}'/>"#,
                    text.replace('"', ""),
                    text.replace('\'', "")
                )
            }),
            Just("text &amp; more > still text".to_owned()),
            Just(String::new()),
        ]
    }

    /// One level: an open tag with a quoted attribute that may hold `>`, `[`
    /// and `'`, and noise before it.
    fn level() -> impl Strategy<Value = String> {
        (look_alike(), noise()).prop_map(|(value, noise)| {
            format!(
                r#"{noise}<l v="{}">"#,
                value.replace('<', "&lt;").replace('"', "")
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The scan refuses exactly the documents the parser would descend
        /// deeper than the limit into: it never counts noise as nesting, and
        /// no noise hides an element from it.
        #[test]
        fn the_scan_counts_the_depth_the_parser_sees(
            levels in prop::collection::vec(level(), MAX_XML_DEPTH - 6..MAX_XML_DEPTH + 6),
            inner in noise(),
        ) {
            let doc = format!("<r>{}{inner}{}</r>", levels.concat(), "</l>".repeat(levels.len()));
            let parsed = roxmltree::Document::parse(&doc);
            // The generator writes well-formed XML only.
            prop_assert!(parsed.is_ok(), "{:?}", parsed.err());
            let parsed = parsed.unwrap();
            // How many elements are open at once; an empty element (`<e/>`,
            // always written so here) has no content to descend into.
            let depth = parsed
                .descendants()
                .filter(|n| n.is_element() && !n.has_tag_name("e"))
                .map(|n| n.ancestors().filter(|a| a.is_element()).count())
                .max()
                .unwrap_or(0);
            prop_assert!(depth > levels.len());
            prop_assert_eq!(check_xml("t", &doc).is_ok(), depth <= MAX_XML_DEPTH);
        }
    }
}

#[test]
fn large_honest_reports_parse_in_linear_time() {
    // Each took time in the square of its size: finding a Cobertura line's
    // row scanned the text from the start for every line, and every SARIF
    // result searched the rules one by one. Here both finish in well under
    // a second; before, minutes.
    let lines: String = (1..=100_000)
        .map(|n| format!("<line number=\"{n}\" hits=\"{}\"/>\n", n % 2))
        .collect();
    let cobertura = format!(
        r#"<coverage lines-valid="100000" lines-covered="50000"><packages><package><classes><class filename="a.rs"><lines>{lines}</lines></class></classes></package></packages></coverage>"#
    );
    let sarif_rules: Vec<String> = (0..50_000)
        .map(|n| format!(r#"{{"id":"R{n}","properties":{{"security-severity":"5"}}}}"#))
        .collect();
    let sarif_results: Vec<String> = (0..50_000)
        .map(|n| format!(r#"{{"ruleId":"R{n}","message":{{"text":"m"}}}}"#))
        .collect();
    let sarif = format!(
        r#"{{"version":"2.1.0","runs":[{{"tool":{{"driver":{{"name":"t","rules":[{}]}}}},"results":[{}]}}]}}"#,
        sarif_rules.join(","),
        sarif_results.join(",")
    );
    let started = std::time::Instant::now();
    let c = parse(EvidenceKind::Coverage, cobertura.as_bytes()).unwrap();
    assert_eq!(c.coverage_pct(), Some(50.0));
    let Report::Sarif { findings, .. } = parse(EvidenceKind::Security, sarif.as_bytes()).unwrap()
    else {
        panic!()
    };
    assert_eq!(findings.get(&FindingSeverity::Medium), Some(&50_000));
    // A wide margin: a slow shared machine, a debug build.
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
}
