//! The detector corpus (`data/corpus.json`, 66 snippets written by hand): logs, JSON, HTML,
//! emails and code, each with the exact findings expected, in order, including near-misses that
//! must not match (invalid Luhn, SSN 000-/666-/9xx-, versions, UUIDs, git SHAs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use credvault_dlp::{Action, Scanner};

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    text: String,
    expect: Vec<String>,
}

fn corpus() -> Vec<Case> {
    serde_json::from_str(include_str!("data/corpus.json")).unwrap()
}

#[test]
fn every_snippet_yields_exactly_the_expected_findings() {
    let scanner = Scanner::builtin();
    let cases = corpus();
    assert!(cases.len() >= 60);
    let mut failures = Vec::new();
    for c in &cases {
        let got: Vec<String> = scanner
            .scan(c.text.as_bytes())
            .into_iter()
            .map(|f| f.detector)
            .collect();
        if got != c.expect {
            failures.push(format!(
                "{}: expected {:?}, got {:?}",
                c.name, c.expect, got
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let near = cases.iter().filter(|c| c.name.starts_with("near_")).count();
    assert!(near >= 15, "{near} near-misses");
}

#[test]
fn findings_never_carry_the_value_and_redaction_removes_it() {
    let scanner = Scanner::builtin();
    for c in corpus() {
        let findings = scanner.scan(c.text.as_bytes());
        let json = serde_json::to_string(&findings).unwrap();
        for f in &findings {
            let value = &c.text[f.range.clone()];
            assert!(
                !json.contains(value),
                "{}: finding serializes the value",
                c.name
            );
        }
        let cleaned = scanner.clean(&c.text, None).unwrap();
        for f in findings.iter().filter(|f| f.action == Action::Redact) {
            let value = &c.text[f.range.clone()];
            assert!(
                !cleaned.text.contains(value),
                "{}: {} left in {}",
                c.name,
                f.detector,
                cleaned.text
            );
            assert!(cleaned.text.contains(&format!("[redacted:{}]", f.detector)));
        }
        if findings.iter().all(|f| f.action == Action::Warn) {
            assert_eq!(cleaned.text, c.text, "{}: warn-only text changed", c.name);
        }
    }
}

#[test]
fn every_builtin_detector_compiles() {
    let scanner = Scanner::builtin();
    let names: Vec<&str> = scanner.detectors().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, credvault_dlp::builtin_detectors());
    assert_eq!(names.len(), 14);
}

#[test]
fn actions_redact_block_warn() {
    let text = "card 4111111111111111 for bob@example.com";
    let s = Scanner::builtin();
    let out = s.clean(text, None).unwrap();
    assert_eq!(out.text, "card [redacted:payment_card] for bob@example.com");
    assert_eq!(out.findings.len(), 2);
    let s = Scanner::builtin()
        .with_action("email", Action::Redact)
        .unwrap();
    assert_eq!(
        s.clean(text, None).unwrap().text,
        "card [redacted:payment_card] for [redacted:email]"
    );
    let s = Scanner::builtin()
        .with_action("payment_card", Action::Block)
        .unwrap();
    let blocked = s.clean(text, None).unwrap_err();
    assert_eq!(blocked.to_string(), "blocked by payment_card");
    assert_eq!(blocked.findings.len(), 2);
    let s = Scanner::builtin()
        .with_action("payment_card", Action::Warn)
        .unwrap();
    assert_eq!(s.clean(text, None).unwrap().text, text);
    assert!(Scanner::builtin()
        .with_action("nope", Action::Warn)
        .is_err());
    let s = Scanner::builtin().without("payment_card");
    assert_eq!(s.scan(text.as_bytes()).len(), 1);
}

#[test]
fn custom_detectors() {
    let s = Scanner::builtin()
        .with_custom("employee_id", r"\bEMP-[0-9]{6}\b", Action::Redact)
        .unwrap();
    let out = s.clean("ticket by EMP-004211 re EMP-12", None).unwrap();
    assert_eq!(out.text, "ticket by [redacted:employee_id] re EMP-12");
    for (name, pattern) in [
        ("Bad Name", "x"),
        ("email", "x"),
        ("ok_name", "(unclosed"),
        ("", "x"),
    ] {
        assert!(
            Scanner::builtin()
                .with_custom(name, pattern, Action::Warn)
                .is_err(),
            "{name}"
        );
    }
    let huge = format!("(?:{}){{1000}}", "[a-z]{100}");
    assert!(Scanner::empty()
        .with_custom("huge", &huge, Action::Warn)
        .is_err());
}
