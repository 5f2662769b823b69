//! Frozen format vectors (docs/formats.md, "Audit log v1"), written by an independent Python
//! implementation (`tests/data/gen_vectors.py`, standard library only): a log with a torn line
//! and its recovery record, its anchor, and a keyed identifier.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use credvault_audit::{
    read_events, segment_path, verify_segments, Action, Anchor, AnchorCheck, AuditEvent, AuditKey,
    AuditLog, IdentifierHasher, LogConfig, ProblemKind, Query, VerifyOptions,
};

const LOG: &[u8] = include_bytes!("data/vectors.jsonl");
const ANCHOR: &[u8] = include_bytes!("data/vectors.anchor");
const EXPECTED: &str = include_str!("data/vectors.json");

fn expected() -> serde_json::Value {
    serde_json::from_str(EXPECTED).unwrap()
}

fn key() -> AuditKey {
    AuditKey::from_text(expected()["key_hex"].as_str().unwrap()).unwrap()
}

#[test]
fn the_python_log_verifies() {
    let x = expected();
    let key = key();
    let anchor = Anchor::parse(ANCHOR).unwrap();
    let r = verify_segments(
        &[LOG],
        VerifyOptions {
            key: Some(&key),
            anchor: Some(&anchor),
        },
    );
    assert!(r.is_intact(), "{:?}", r.problem);
    assert_eq!(r.records, x["records"].as_u64().unwrap());
    assert_eq!(r.events, x["events"].as_u64().unwrap());
    assert_eq!(r.checkpoints_checked, x["checkpoints"].as_u64().unwrap());
    assert_eq!(r.recovered_breaks, 1);
    assert_eq!(r.anchor, AnchorCheck::Authenticated);
    assert_eq!(r.log_id.as_deref(), x["log"].as_str());
    assert_eq!(r.head.as_deref(), x["head"].as_str());
}

#[test]
fn every_byte_flip_of_the_python_log_is_detected() {
    let key = key();
    let anchor = Anchor::parse(ANCHOR).unwrap();
    for i in 0..LOG.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = LOG.to_vec();
            bad[i] ^= bit;
            let r = verify_segments(
                &[&bad],
                VerifyOptions {
                    key: Some(&key),
                    anchor: Some(&anchor),
                },
            );
            assert!(r.problem.is_some(), "flip at byte {i} went unnoticed");
            assert_ne!(r.problem.unwrap().kind, ProblemKind::TornTail, "byte {i}");
        }
    }
    // A wrong key fails the anchor and the checkpoints.
    let other = AuditKey::from_bytes(&[1; 32]);
    let r = verify_segments(
        &[LOG],
        VerifyOptions {
            key: Some(&other),
            anchor: Some(&anchor),
        },
    );
    assert_eq!(r.problem.unwrap().kind, ProblemKind::BadCheckpoint);
    let r = verify_segments(
        &[LOG],
        VerifyOptions {
            key: Some(&other),
            anchor: None,
        },
    );
    assert_eq!(r.problem.unwrap().kind, ProblemKind::BadCheckpoint);
}

#[test]
fn events_read_and_reserialize_byte_for_byte() {
    let events = read_events(&[LOG], &Query::new());
    assert_eq!(events.events.len(), 2);
    let e: &AuditEvent = &events.events[0].event;
    assert_eq!(
        (e.tenant.as_str(), e.actor.as_str(), &e.action),
        ("acme", "alice", &Action::Accessed)
    );
    assert_eq!(e.time.as_unix_millis(), 1_790_000_001_500);
    // Our serializer writes the same canonical bytes as the independent writer.
    let bodies: Vec<&[u8]> = LOG
        .split(|b| *b == b'\n')
        .filter(|l| l.windows(16).any(|w| w == b"\"type\":\"event\",\""))
        .filter(|l| l.ends_with(b"}"))
        .map(|l| {
            let start = l.windows(8).position(|w| w == b"\"body\":{").unwrap() + 7;
            let end = l.len() - (",\"hash\":\"".len() + 64 + 2);
            &l[start..end]
        })
        .collect();
    assert_eq!(bodies.len(), 2);
    for (body, e) in bodies.iter().zip(&events.events) {
        assert_eq!(serde_json::to_vec(&e.event).unwrap(), *body);
    }
}

#[test]
fn keyed_identifiers_match() {
    let x = expected();
    let hasher = IdentifierHasher::new(&key(), x["log"].as_str().unwrap());
    assert_eq!(
        hasher.hash(x["identifier"]["value"].as_str().unwrap()),
        x["identifier"]["hashed"].as_str().unwrap()
    );
}

#[test]
fn head_tags_match() {
    let x = expected();
    let key = key();
    let seq = x["head_seq"].as_u64().unwrap();
    let r = verify_segments(&[LOG], VerifyOptions::default());
    assert_eq!(r.last_seq, Some(seq));
    assert_eq!(r.head.as_deref(), x["head"].as_str());
    let mut hash = [0u8; 32];
    hex::decode_to_slice(x["head"].as_str().unwrap(), &mut hash).unwrap();
    let mut tag = [0u8; 32];
    hex::decode_to_slice(x["head_tag"].as_str().unwrap(), &mut tag).unwrap();
    assert_eq!(key.head_tag(seq, &hash), tag);
    assert!(key.check_head_tag(seq, &hash, &tag));
    // Another record, another hash, another key: each fails.
    assert!(!key.check_head_tag(seq - 1, &hash, &tag));
    hash[31] ^= 1;
    assert!(!key.check_head_tag(seq, &hash, &tag));
    hash[31] ^= 1;
    assert!(!AuditKey::from_bytes(&[7; 32]).check_head_tag(seq, &hash, &tag));
}

#[test]
fn our_writer_continues_the_python_log() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(segment_path(dir.path(), 1), LOG).unwrap();
    std::fs::write(credvault_audit::anchor_path(dir.path()), ANCHOR).unwrap();
    let config = LogConfig::default().checkpoint_interval(None);
    let (log, report) = AuditLog::open(dir.path(), key(), config).unwrap();
    assert_eq!(report.last_seq, 5);
    assert_eq!(log.log_id(), expected()["log"].as_str().unwrap());
    log.record(&AuditEvent::new("acme", "carol", Action::Deleted))
        .unwrap();
    log.close().unwrap();
    let bytes = std::fs::read(segment_path(dir.path(), 1)).unwrap();
    assert_eq!(&bytes[..LOG.len()], LOG);
    let anchor = Anchor::load(&credvault_audit::anchor_path(dir.path())).unwrap();
    let key = key();
    let r = verify_segments(
        &[&bytes],
        VerifyOptions {
            key: Some(&key),
            anchor: Some(&anchor),
        },
    );
    assert!(r.is_intact(), "{:?}", r.problem);
    assert_eq!(r.events, 3);
}
