//! Events: their JSON shape (written by hand from docs/formats.md), forward compatibility,
//! timestamps, keys, queries and exports; and properties: arbitrary bytes never panic the
//! verifier or the reader, events survive the log unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{event, fast_config, key};
use credvault_audit::{
    read_events, segment_path, verify_segments, write_csv, write_jsonl, Action, AuditEvent,
    AuditKey, AuditLog, Details, EventId, Outcome, Query, Resource, TestStatus, Timestamp,
    VerifyOptions, CSV_COLUMNS,
};
use proptest::prelude::*;

#[test]
fn event_json_shape() {
    let id: EventId = "0f1e2d3c-4b5a-4987-8695-a4b3c2d1e0f0".parse().unwrap();
    let mut e = AuditEvent::new("acme", "alice", Action::Tested)
        .at(Timestamp::from_unix_millis(1_790_000_000_123))
        .with_resource(Resource::credential("cred_1").with_type("http_bearer_token"))
        .with_request_id("r-1")
        .with_details(Details::Tested {
            status: TestStatus::Failed,
            message: "401 Unauthorized".into(),
        });
    e.id = id;
    let expected = concat!(
        r#"{"id":"0f1e2d3c-4b5a-4987-8695-a4b3c2d1e0f0","time":"2026-09-21T14:13:20.123Z","#,
        r#""tenant":"acme","actor":"alice","request_id":"r-1","action":"tested","#,
        r#""resource":{"id":"cred_1","type":"http_bearer_token"},"outcome":"success","#,
        r#""details":{"kind":"tested","status":"failed","message":"401 Unauthorized"}}"#
    );
    assert_eq!(serde_json::to_string(&e).unwrap(), expected);
    let back: AuditEvent = serde_json::from_str(expected).unwrap();
    assert_eq!(back, e);
}

#[test]
fn newer_actions_and_details_still_read() {
    let json = r#"{"id":"0f1e2d3c-4b5a-4987-8695-a4b3c2d1e0f0","time":"2026-09-21T14:13:20.123Z",
        "tenant":"t","actor":"a","action":"quantum_rekeyed","outcome":"success",
        "details":{"kind":"quantum","qubits":7},"future_field":true}"#;
    let e: AuditEvent = serde_json::from_str(json).unwrap();
    assert_eq!(e.action, Action::Other("quantum_rekeyed".into()));
    assert_eq!(e.details, Some(Details::Unknown));
    assert_eq!(e.action.to_string(), "quantum_rekeyed");
}

#[test]
fn every_known_action_round_trips_and_outcomes_follow_actions() {
    for a in Action::KNOWN {
        let s = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Action>(&s).unwrap(), a);
    }
    assert_eq!(
        AuditEvent::new("t", "a", Action::AccessDenied).outcome,
        Outcome::Denied
    );
    assert_eq!(
        AuditEvent::new("t", "a", Action::AccessFailed).outcome,
        Outcome::Failure
    );
    assert_eq!(
        AuditEvent::new("t", "a", Action::Created).outcome,
        Outcome::Success
    );
}

#[test]
fn timestamps() {
    assert_eq!(
        Timestamp::from_unix_millis(0).to_string(),
        "1970-01-01T00:00:00.000Z"
    );
    assert_eq!(
        Timestamp::from_unix_millis(1_790_000_000_123).to_string(),
        "2026-09-21T14:13:20.123Z"
    );
    assert_eq!(
        "2026-09-21T14:13:20.123Z"
            .parse::<Timestamp>()
            .unwrap()
            .as_unix_millis(),
        1_790_000_000_123
    );
    assert_eq!(
        "2026-09-21".parse::<Timestamp>().unwrap().as_unix_millis(),
        1_790_000_000_123 - 51_200_123
    );
    for bad in [
        "",
        "yesterday",
        "2026-13-01",
        "2026-09-21T14:13:20",
        "1969-12-31T23:59:59Z",
    ] {
        assert!(bad.parse::<Timestamp>().is_err(), "{bad}");
    }
    // Distinct within a thread (past 256 and 65,536, where a counter reaching the variant
    // bits would collide), across threads, and across a reseed; always the v4 layout.
    let per_thread = 70_000;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                (0..per_thread)
                    .map(|i| {
                        if t == 3 && i == per_thread / 2 {
                            EventId::reseed();
                        }
                        *EventId::random().as_bytes()
                    })
                    .collect::<Vec<[u8; 16]>>()
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for t in threads {
        for b in t.join().unwrap() {
            assert_eq!(b[6] >> 4, 4, "version nibble");
            assert_eq!(b[8] >> 6, 0b10, "variant bits");
            ids.insert(b);
        }
    }
    assert_eq!(ids.len(), 4 * per_thread);
    let text = EventId::random().to_string();
    assert_eq!((text.len(), &text[14..15]), (36, "4"), "{text}");
}

#[test]
fn keys_from_text() {
    let hex = "42".repeat(32);
    let std_b64 = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";
    for text in [
        hex.as_str(),
        std_b64,
        std_b64.trim_end_matches('='),
        &format!("  {hex}\n"),
    ] {
        let k = AuditKey::from_text(text).unwrap();
        assert_eq!(k.to_hex().as_str(), hex);
    }
    let url = AuditKey::from_text("yMnKy8zNzs_Q0dLT1NXW19jZ2tvc3d7f4OHi4-Tl5uc=").unwrap();
    assert_eq!(
        url.to_hex().as_str(),
        hex::encode((200u8..232).collect::<Vec<_>>())
    );
    for bad in [
        "",
        "42",
        &"4".repeat(63),
        &"zz".repeat(32),
        "QkJC",
        &format!("{std_b64}QQ"),
    ] {
        let err = AuditKey::from_text(bad).unwrap_err();
        assert!(!err.to_string().contains(bad) || bad.is_empty());
    }
}

fn log_bytes(n: u64) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = AuditLog::open(dir.path(), key(), fast_config()).unwrap();
    for i in 0..n {
        log.record(&event(i)).unwrap();
    }
    log.close().unwrap();
    std::fs::read(segment_path(dir.path(), 1)).unwrap()
}

#[test]
fn queries_filter_and_exports_parse_back() {
    let bytes = log_bytes(60);
    let all = read_events(&[&bytes], &Query::new());
    assert_eq!(all.events.len(), 60);
    let t1 = read_events(&[&bytes], &Query::new().tenant("tenant-1"));
    assert_eq!(t1.events.len(), 20);
    assert!(t1.events.iter().all(|e| e.event.tenant == "tenant-1"));
    let denied = read_events(
        &[&bytes],
        &Query::new().action(Action::AccessDenied).tenant("tenant-0"),
    );
    // i ≡ 3 (mod 6) and i ≡ 0 (mod 3): i in {3, 9, 15, ...}
    assert_eq!(denied.events.len(), 10);
    let since = Timestamp::from_unix_millis(1_790_000_000_000 + 50_000);
    let late = read_events(&[&bytes], &Query::new().between(Some(since), None));
    assert_eq!(late.events.len(), 10);
    let window = read_events(
        &[&bytes],
        &Query::new().between(
            Some(Timestamp::from_unix_millis(1_790_000_010_000)),
            Some(since),
        ),
    );
    assert_eq!(window.events.len(), 40);
    let one = read_events(&[&bytes], &Query::new().resource("cred_7"));
    assert_eq!(one.events.len(), 1);
    assert_eq!(one.events[0].event.resource.id.as_deref(), Some("cred_7"));

    let mut jsonl = Vec::new();
    write_jsonl(&t1.events, &mut jsonl).unwrap();
    let lines: Vec<serde_json::Value> = jsonl
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 20);
    assert_eq!(lines[0]["seq"], t1.events[0].seq);
    assert_eq!(lines[0]["tenant"], "tenant-1");

    let mut csv_bytes = Vec::new();
    write_csv(&t1.events, &mut csv_bytes).unwrap();
    let mut reader = csv::Reader::from_reader(csv_bytes.as_slice());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        CSV_COLUMNS
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 20);
    for (row, e) in rows.iter().zip(&t1.events) {
        assert_eq!(row[0], e.seq.to_string());
        assert_eq!(row[4], e.event.actor);
        assert_eq!(row[8], e.event.action.to_string());
        if let Some(d) = &e.event.details {
            // Quotes and newlines inside details survive the CSV quoting.
            assert_eq!(serde_json::from_str::<Details>(&row[14]).unwrap(), *d);
        }
    }
}

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[a-z0-9_\\-\"\\\\\n]{0,24}"]
}

fn arb_event() -> impl Strategy<Value = AuditEvent> {
    (
        arb_text(),
        arb_text(),
        0usize..12,
        arb_text(),
        proptest::option::of(arb_text()),
        0u64..4_000_000_000_000,
        proptest::option::of(arb_text()),
    )
        .prop_map(|(tenant, actor, a, other, ip, millis, detail)| {
            let action = Action::KNOWN
                .get(a)
                .cloned()
                .unwrap_or(Action::Other(format!("x_{}", other.len())));
            let mut e = AuditEvent::new(tenant, actor, action)
                .at(Timestamp::from_unix_millis(millis))
                .with_resource(Resource::credential(other.clone()).with_name(other));
            if let Some(ip) = ip {
                e = e.with_source_ip(ip);
            }
            if let Some(d) = detail {
                e = e.with_details(Details::AccessFailed { reason: d });
            }
            e
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        credvault_audit::fuzzing::verify_bytes(&data);
        let r = verify_segments(&[&data], VerifyOptions::default());
        prop_assert!(!r.is_intact() || r.records > 0);
    }

    #[test]
    fn record_shaped_garbage_never_panics(lines in proptest::collection::vec(
        (0u64..5, "[0-9a-f]{0,70}", prop::sample::select(vec!["event", "checkpoint", "genesis", "segment", "recovery", "x"]), "[ -~]{0,40}"),
        0..8,
    )) {
        let mut data = Vec::new();
        for (seq, hex, ty, body) in lines {
            data.extend_from_slice(format!(r#"{{"v":1,"seq":{seq},"prev":"{hex}","type":"{ty}","body":{body},"hash":"{hex}"}}"#).as_bytes());
            data.push(b'\n');
        }
        credvault_audit::fuzzing::verify_bytes(&data);
    }

    #[test]
    fn timestamps_round_trip(millis in 0u64..253_402_300_799_999) {
        let t = Timestamp::from_unix_millis(millis);
        prop_assert_eq!(t.to_string().parse::<Timestamp>().unwrap(), t);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn events_survive_the_log_unchanged(events in proptest::collection::vec(arb_event(), 1..20)) {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = AuditLog::open(dir.path(), key(), fast_config()).unwrap();
        for e in &events {
            log.record(e).unwrap();
        }
        log.close().unwrap();
        let bytes = std::fs::read(segment_path(dir.path(), 1)).unwrap();
        let k = key();
        let report = verify_segments(&[&bytes], VerifyOptions { key: Some(&k), anchor: None });
        prop_assert!(report.is_intact());
        let read: Vec<AuditEvent> = read_events(&[&bytes], &Query::new()).events.into_iter().map(|e| e.event).collect();
        prop_assert_eq!(read, events);
    }
}
