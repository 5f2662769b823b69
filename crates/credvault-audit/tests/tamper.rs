//! Tamper detection, as properties over logs of 10..10,000 events: every random deletion,
//! insertion, reordering, one-byte edit, truncation and replacement by a shorter valid chain is
//! detected, with the right kind; an unmodified log always verifies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use common::{event, fast_config, key};
use credvault_audit::{
    anchor_path, segment_path, verify_segments, Anchor, AuditLog, ProblemKind, VerifyOptions,
    VerifyReport,
};
use proptest::prelude::*;

/// A log of one segment, its anchor, and its line boundaries.
struct Built {
    bytes: Vec<u8>,
    anchor: Anchor,
    /// (start, end) of each line, end past the newline.
    lines: Vec<(usize, usize)>,
}

fn write_log(events: u64, checkpoint_every: u64) -> Built {
    let dir = tempfile::tempdir().unwrap();
    let config = fast_config()
        .checkpoint_every(checkpoint_every)
        .max_segment_bytes(u64::MAX);
    let (log, _) = AuditLog::open(dir.path(), key(), config).unwrap();
    for i in 0..events {
        // Written at once (no sync); the closing checkpoint waits for all of them.
        let _in_flight = log.submit(&event(i)).unwrap();
    }
    log.close().unwrap();
    let bytes = std::fs::read(segment_path(dir.path(), 1)).unwrap();
    let anchor = Anchor::load(&anchor_path(dir.path())).unwrap();
    let mut lines = Vec::new();
    let mut start = 0;
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\n' {
            lines.push((start, i + 1));
            start = i + 1;
        }
    }
    assert_eq!(start, bytes.len());
    Built {
        bytes,
        anchor,
        lines,
    }
}

/// Logs are written once per size and shared between cases.
fn built(events: u64) -> Arc<Built> {
    static CACHE: OnceLock<Mutex<HashMap<u64, Arc<Built>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(b) = cache.lock().unwrap().get(&events) {
        return Arc::clone(b);
    }
    let b = Arc::new(write_log(events, 97));
    cache.lock().unwrap().insert(events, Arc::clone(&b));
    b
}

fn verify(bytes: &[u8], anchor: Option<&Anchor>, with_key: bool) -> VerifyReport {
    let key = key();
    verify_segments(
        &[bytes],
        VerifyOptions {
            key: with_key.then_some(&key),
            anchor,
        },
    )
}

fn kind(bytes: &[u8], log: &Built) -> Option<ProblemKind> {
    let with = verify(bytes, Some(&log.anchor), true);
    with.problem.map(|p| p.kind)
}

/// Sizes spread over 10..=10,000 events; most recur so that logs are reused between cases.
fn sizes() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 10u64..40,
        2 => prop::sample::select(vec![100u64, 317, 1000]),
        1 => prop::sample::select(vec![4096u64, 10_000]),
        1 => 40u64..=10_000,
    ]
}

fn without_line(log: &Built, i: usize) -> Vec<u8> {
    let (s, e) = log.lines[i];
    [&log.bytes[..s], &log.bytes[e..]].concat()
}

fn lines_of(log: &Built) -> Vec<&[u8]> {
    log.lines.iter().map(|&(s, e)| &log.bytes[s..e]).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn unmodified_logs_verify(n in sizes()) {
        let log = built(n);
        for with_key in [true, false] {
            let r = verify(&log.bytes, Some(&log.anchor), with_key);
            prop_assert!(r.is_intact(), "{:?}", r.problem);
            prop_assert_eq!(r.events, n);
        }
        prop_assert!(verify(&log.bytes, None, true).is_intact());
    }

    #[test]
    fn a_deleted_record_is_detected(n in sizes(), pick in any::<prop::sample::Index>()) {
        let log = built(n);
        let i = pick.index(log.lines.len());
        let bytes = without_line(&log, i);
        // The last record gone is indistinguishable from a log cut at that line.
        let expected = if i + 1 == log.lines.len() { ProblemKind::Truncated } else { ProblemKind::Deleted };
        prop_assert_eq!(kind(&bytes, &log), Some(expected));
        if i + 1 < log.lines.len() {
            // Without the anchor, a deletion inside the chain is still found.
            prop_assert_eq!(verify(&bytes, None, false).problem.map(|p| p.kind), Some(ProblemKind::Deleted));
        }
    }

    #[test]
    fn an_inserted_copy_is_detected(n in sizes(), from in any::<prop::sample::Index>(), to in any::<prop::sample::Index>()) {
        let log = built(n);
        let mut lines = lines_of(&log);
        let copy = lines[from.index(lines.len())];
        let at = to.index(lines.len() + 1);
        lines.insert(at, copy);
        let bytes = lines.concat();
        prop_assert_eq!(kind(&bytes, &log), Some(ProblemKind::Inserted));
        prop_assert_eq!(verify(&bytes, None, false).problem.map(|p| p.kind), Some(ProblemKind::Inserted));
    }

    #[test]
    fn reordered_records_are_detected(n in sizes(), a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>(), swap in any::<bool>()) {
        let log = built(n);
        let mut lines = lines_of(&log);
        let (i, j) = (a.index(lines.len()), b.index(lines.len()));
        prop_assume!(i != j);
        if swap {
            lines.swap(i, j);
        } else {
            let l = lines.remove(i);
            lines.insert(j, l);
        }
        let bytes = lines.concat();
        prop_assert_eq!(kind(&bytes, &log), Some(ProblemKind::Reordered));
        prop_assert_eq!(verify(&bytes, None, false).problem.map(|p| p.kind), Some(ProblemKind::Reordered));
    }

    #[test]
    fn a_one_byte_edit_is_detected(n in sizes(), at in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let log = built(n);
        let mut bytes = log.bytes.clone();
        let pos = at.index(bytes.len());
        bytes[pos] ^= xor;
        prop_assert_eq!(kind(&bytes, &log), Some(ProblemKind::Edited));
        prop_assert_eq!(verify(&bytes, None, false).problem.map(|p| p.kind), Some(ProblemKind::Edited));
    }

    #[test]
    fn truncation_at_any_offset_is_detected(n in sizes(), at in any::<prop::sample::Index>()) {
        let log = built(n);
        let cut = at.index(log.bytes.len());
        prop_assert_eq!(kind(&log.bytes[..cut], &log), Some(ProblemKind::Truncated));
    }

    #[test]
    fn an_older_copy_of_the_log_is_detected(n in sizes(), at in any::<prop::sample::Index>()) {
        // An older copy: the log as it was after some earlier checkpoint (a valid chain).
        let log = built(n);
        let checkpoints: Vec<usize> = lines_of(&log)
            .iter()
            .enumerate()
            .filter(|(_, l)| {
                let needle = b"\"type\":\"checkpoint\"";
                l.windows(needle.len()).any(|w| w == needle)
            })
            .map(|(i, _)| i)
            .collect();
        let i = checkpoints[at.index(checkpoints.len() - 1)];
        let older = &log.bytes[..log.lines[i].1];
        prop_assert!(verify(older, None, true).is_intact());
        prop_assert_eq!(kind(older, &log), Some(ProblemKind::Truncated));
    }

    #[test]
    fn another_shorter_log_is_detected(n in sizes(), shorter in 1u64..10) {
        // A whole new log, written with the same key, shorter than the original.
        let log = built(n);
        let other = write_log(n.min(shorter), 3);
        prop_assert!(verify(&other.bytes, None, true).is_intact());
        prop_assert_eq!(kind(&other.bytes, &log), Some(ProblemKind::Replaced));
    }
}
