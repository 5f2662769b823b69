//! Event records sealed at rest: the chain verifies with the audit key alone, no event field is
//! in the files in the clear, the events read back with the sealer and only with it, and a
//! sealed body opens only for its own log and record. The format is frozen by a vector from
//! Python's `cryptography` (`tests/data/gen_sealed.py`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use base64::Engine as _;
use common::{event, fast_config, key, verify_dir};
use credvault_audit::{
    read_event_files, read_event_files_opening, segment_paths, AesGcmSealer, AuditEvent, AuditLog,
    RecordSealer,
};
use credvault_audit::{Query, RecordType};

const VECTOR: &str = include_str!("data/sealed.json");

fn sealer(k: u8) -> Arc<AesGcmSealer> {
    Arc::new(AesGcmSealer::new(&[k; 32]))
}

fn files(dir: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    for p in segment_paths(dir).unwrap() {
        all.extend(std::fs::read(p).unwrap());
    }
    all
}

#[test]
fn a_sealed_log_verifies_with_the_audit_key_and_reads_back_only_with_the_sealer() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = AuditLog::open(
        dir.path(),
        key(),
        fast_config()
            .checkpoint_every(7)
            .max_segment_bytes(4096)
            .sealed_with(sealer(1)),
    )
    .unwrap();
    let written: Vec<AuditEvent> = (0..60).map(event).collect();
    for e in &written {
        log.record(e).unwrap();
    }
    log.close().unwrap();
    assert!(segment_paths(dir.path()).unwrap().len() > 1, "no rotation");
    // Chain, checkpoints and anchor: the audit key alone.
    let r = verify_dir(dir.path(), true);
    assert!(r.is_intact(), "{:?}", r.problem);
    assert_eq!(r.events, 60);
    // Nothing of the events is in the files in the clear. Each needle holds a character
    // standard base64 never writes (`-`, `_`, `.`, `"`), so random ciphertext cannot contain
    // it by chance; the all-letter values are looked for as the JSON strings they would be.
    let bytes = String::from_utf8(files(dir.path())).unwrap();
    for needle in [
        "tenant-",
        "user-",
        "cred_",
        "name-",
        "10.0.",
        "req-",
        "\"accessed\"",
        "\"n8n\"",
    ] {
        assert!(
            !bytes.contains(needle),
            "{needle} is in the log in the clear"
        );
    }
    assert_eq!(bytes.matches("\"type\":\"sealed\"").count(), 60);
    let segs = segment_paths(dir.path()).unwrap();
    let plain = read_event_files(&segs, &Query::new()).unwrap();
    assert_eq!(
        (plain.events.len(), plain.sealed, plain.unreadable),
        (0, 60, 0)
    );
    let opened = read_event_files_opening(&segs, &Query::new(), &*sealer(1)).unwrap();
    assert_eq!(opened.unreadable, 0);
    let events: Vec<AuditEvent> = opened.events.into_iter().map(|e| e.event).collect();
    assert_eq!(events, written);
    // Another key opens nothing.
    let wrong = read_event_files_opening(&segs, &Query::new(), &*sealer(2)).unwrap();
    assert_eq!((wrong.events.len(), wrong.unreadable), (0, 60));
}

#[test]
fn a_log_sealed_from_some_point_on_keeps_its_clear_records() {
    let dir = tempfile::tempdir().unwrap();
    let written: Vec<AuditEvent> = (0..12).map(event).collect();
    let (log, _) = AuditLog::open(dir.path(), key(), fast_config()).unwrap();
    for e in &written[..5] {
        log.record(e).unwrap();
    }
    log.close().unwrap();
    let (log, _) = AuditLog::open(dir.path(), key(), fast_config().sealed_with(sealer(3))).unwrap();
    for e in &written[5..] {
        log.record(e).unwrap();
    }
    log.close().unwrap();
    assert!(verify_dir(dir.path(), true).is_intact());
    let segs = segment_paths(dir.path()).unwrap();
    let plain = read_event_files(&segs, &Query::new()).unwrap();
    assert_eq!((plain.events.len(), plain.sealed), (5, 7));
    let all = read_event_files_opening(&segs, &Query::new(), &*sealer(3)).unwrap();
    let events: Vec<AuditEvent> = all.events.into_iter().map(|e| e.event).collect();
    assert_eq!(events, written);
    // Filters apply to opened events.
    let one =
        read_event_files_opening(&segs, &Query::new().tenant("tenant-1"), &*sealer(3)).unwrap();
    assert_eq!(one.events.len(), 4);
}

#[test]
fn a_sealed_body_opens_only_for_its_log_and_record() {
    let s = AesGcmSealer::new(&[9; 32]);
    let log = "00112233445566778899aabbccddeeff";
    let sealed = s.seal(log, 41, b"{\"x\":1}").unwrap();
    assert_eq!(&*s.open(log, 41, &sealed).unwrap(), b"{\"x\":1}");
    assert!(s.open(log, 42, &sealed).is_err());
    assert!(s
        .open("ffeeddccbbaa99887766554433221100", 41, &sealed)
        .is_err());
    for i in 0..sealed.len() {
        let mut bad = sealed.clone();
        bad[i] ^= 0x01;
        assert!(s.open(log, 41, &bad).is_err(), "flip at {i} opened");
    }
    for n in 0..sealed.len() {
        assert!(s.open(log, 41, &sealed[..n]).is_err(), "cut at {n} opened");
    }
    // Two seals of one body differ (random nonces).
    assert_ne!(s.seal(log, 41, b"{\"x\":1}").unwrap(), sealed);
    assert_eq!(RecordType::Sealed.as_str(), "sealed");
}

#[test]
fn the_python_vector_opens_and_is_reproduced() {
    let v: serde_json::Value = serde_json::from_str(VECTOR).unwrap();
    let k: [u8; 32] = hex::decode(v["key_hex"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let nonce: [u8; 12] = hex::decode(v["nonce_hex"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let log = v["log"].as_str().unwrap();
    let seq = v["seq"].as_u64().unwrap();
    let event = v["event"].as_str().unwrap().as_bytes();
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(v["body"]["sealed"].as_str().unwrap())
        .unwrap();
    let s = AesGcmSealer::new(&k);
    assert_eq!(&*s.open(log, seq, &sealed).unwrap(), event);
    assert_eq!(s.seal_with_nonce(log, seq, event, nonce), sealed);
}
