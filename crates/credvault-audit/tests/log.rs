//! The log writer: chain, checkpoints, anchor, rotation, group commit, fail-closed writes,
//! torn-tail recovery, keyed identifiers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{event, eventually, fast_config, key, verify_dir};
use credvault_audit::{
    anchor_path, read_event_files, segment_path, segment_paths, verify_files, Action, Anchor,
    AnchorCheck, AuditEvent, AuditKey, AuditLog, Durability, HashedField, LogConfig, LogError,
    ProblemKind, Query, VerifyOptions,
};

#[test]
fn a_written_log_verifies_with_key_and_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let (log, report) =
        AuditLog::open(dir.path(), key(), fast_config().checkpoint_every(10)).unwrap();
    assert!(report.created);
    let mut seqs = Vec::new();
    for i in 0..95 {
        seqs.push(log.record(&event(i)).unwrap().seq);
    }
    log.close().unwrap();
    // genesis (0), checkpoint (1), then events with a checkpoint after every 10th.
    assert_eq!(seqs[0], 2);
    assert!(seqs.windows(2).all(|w| w[1] > w[0]));
    let r = verify_dir(dir.path(), true);
    assert!(r.is_intact(), "{:?}", r.problem);
    assert_eq!(r.events, 95);
    // 1 at creation, 9 by count, 1 on close
    assert_eq!(r.checkpoints_checked, 11);
    assert_eq!(r.anchor, AnchorCheck::Authenticated);
    assert_eq!(r.records, 1 + 95 + 11);
    assert_eq!(r.last_seq, Some(106));

    // Without the key the chain and anchor still check; checkpoints are counted unchecked.
    let r = verify_dir(dir.path(), false);
    assert!(r.is_intact());
    assert_eq!(r.checkpoints_unchecked, 11);
    assert_eq!(r.anchor, AnchorCheck::Matched);
}

#[test]
fn events_read_back_equal_events_written() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = AuditLog::open(dir.path(), key(), fast_config()).unwrap();
    let written: Vec<AuditEvent> = (0..40).map(event).collect();
    for e in &written {
        log.record(e).unwrap();
    }
    log.close().unwrap();
    let read = read_event_files(&segment_paths(dir.path()).unwrap(), &Query::new()).unwrap();
    assert_eq!(read.unreadable, 0);
    let events: Vec<AuditEvent> = read.events.into_iter().map(|e| e.event).collect();
    assert_eq!(events, written);
}

#[test]
fn reopening_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let (log, report) = AuditLog::open(dir.path(), key(), fast_config()).unwrap();
        assert_eq!(report.created, round == 0);
        assert!(report.torn_tail.is_none());
        for i in 0..20 {
            log.record(&event(i)).unwrap();
        }
        // dropped without close: the anchor lags, which is allowed
        if round == 2 {
            log.close().unwrap();
        }
    }
    let r = verify_dir(dir.path(), true);
    assert!(r.is_intact(), "{:?}", r.problem);
    assert_eq!(r.events, 60);
}

#[test]
fn rotation_continues_the_chain_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = fast_config().max_segment_bytes(4096).checkpoint_every(1000);
    let (log, _) = AuditLog::open(dir.path(), key(), config.clone()).unwrap();
    for i in 0..200 {
        log.record(&event(i)).unwrap();
    }
    log.close().unwrap();
    let segments = segment_paths(dir.path()).unwrap();
    assert!(segments.len() > 5, "{} segments", segments.len());
    for s in &segments {
        let len = std::fs::metadata(s).unwrap().len();
        assert!(len < 4096 + 2048, "segment of {len} bytes");
    }
    let r = verify_dir(dir.path(), true);
    assert!(r.is_intact(), "{:?}", r.problem);
    assert_eq!(r.events, 200);
    assert_eq!(r.segments, segments.len());

    // Reopen and keep going in the last segment.
    let (log, report) = AuditLog::open(dir.path(), key(), config).unwrap();
    assert_eq!(report.segments as usize, segments.len());
    log.record(&event(999)).unwrap();
    log.close().unwrap();
    assert!(verify_dir(dir.path(), true).is_intact());

    let key = key();
    let options = VerifyOptions {
        key: Some(&key),
        anchor: None,
    };
    // A middle file missing: records missing.
    let mut missing = segments.clone();
    missing.remove(2);
    let r = verify_files(&missing, options).unwrap();
    assert_eq!(r.problem.unwrap().kind, ProblemKind::Deleted);
    // Two files swapped: out of order.
    let mut swapped = segments.clone();
    swapped.swap(1, 3);
    let r = verify_files(&swapped, options).unwrap();
    assert_eq!(r.problem.unwrap().kind, ProblemKind::Reordered);
    // A file given twice: a copy.
    let mut twice = segments.clone();
    twice.insert(3, segments[1].clone());
    let r = verify_files(&twice, options).unwrap();
    assert_eq!(r.problem.unwrap().kind, ProblemKind::Inserted);
}

#[test]
fn concurrent_writers_get_distinct_durable_records() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig::default()
        .checkpoint_interval(None)
        .checkpoint_every(50);
    let (log, _) = AuditLog::open(dir.path(), key(), config).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut seqs = Vec::new();
                // Half the records one at a time, half with several in flight.
                for i in 0..50 {
                    seqs.push(log.record(&event(t * 1000 + i)).unwrap().seq);
                }
                let tickets: Vec<_> = (50..100)
                    .map(|i| log.submit(&event(t * 1000 + i)).unwrap())
                    .collect();
                for ticket in tickets {
                    seqs.push(ticket.wait().unwrap().seq);
                }
                seqs
            })
        })
        .collect();
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    log.close().unwrap();
    all.sort_unstable();
    let before = all.len();
    all.dedup();
    assert_eq!(all.len(), before);
    assert_eq!(before, 400);
    let r = verify_dir(dir.path(), true);
    assert!(r.is_intact(), "{:?}", r.problem);
    assert_eq!(r.events, 400);
}

#[test]
fn per_record_durability_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig::default()
        .durability(Durability::PerRecord)
        .checkpoint_interval(None);
    let (log, _) = AuditLog::open(dir.path(), key(), config).unwrap();
    for i in 0..20 {
        log.record(&event(i)).unwrap();
    }
    log.close().unwrap();
    assert!(verify_dir(dir.path(), true).is_intact());
}

#[test]
fn a_failing_disk_refuses_the_record_and_every_later_one() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = AuditLog::open(
        dir.path(),
        key(),
        LogConfig::default().checkpoint_interval(None),
    )
    .unwrap();
    log.record(&event(0)).unwrap();
    log.inject_write_failure_after(100);
    let err = log.record(&event(1)).unwrap_err();
    assert!(matches!(err, LogError::Failed { .. }), "{err}");
    assert!(err.to_string().contains("No space left"), "{err}");
    // Fail closed: nothing more is accepted, not even a checkpoint.
    assert!(matches!(
        log.record(&event(2)),
        Err(LogError::Failed { .. })
    ));
    assert!(log.checkpoint().is_err());
    drop(log);

    // The half-written record is a torn tail: reported on verify, kept and skipped on reopen.
    let r = verify_dir(dir.path(), true);
    assert_eq!(r.problem.as_ref().unwrap().kind, ProblemKind::TornTail);
    assert_eq!(r.events, 1);
    let seg = segment_path(dir.path(), 1);
    let before = std::fs::read(&seg).unwrap();
    let (log, report) = AuditLog::open(dir.path(), key(), fast_config()).unwrap();
    let (path, offset, len) = report.torn_tail.clone().unwrap();
    assert_eq!(path, seg);
    assert_eq!(len, 100);
    let after = std::fs::read(&seg).unwrap();
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "torn bytes were overwritten"
    );
    assert_eq!(offset + len, before.len() as u64);
    log.record(&event(3)).unwrap();
    log.close().unwrap();
    let r = verify_dir(dir.path(), true);
    assert!(r.is_intact(), "{:?}", r.problem);
    assert_eq!(r.recovered_breaks, 1);
    assert_eq!(r.events, 2);
}

#[test]
fn a_failing_rotation_refuses_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let config = fast_config().max_segment_bytes(2048);
    let (log, _) = AuditLog::open(dir.path(), key(), config).unwrap();
    // The next segment's name is taken by a directory: renaming it into place fails.
    std::fs::create_dir(segment_path(dir.path(), 2)).unwrap();
    let mut failed = None;
    for i in 0..100 {
        if let Err(e) = log.record(&event(i)) {
            failed = Some(e);
            break;
        }
    }
    assert!(
        matches!(failed, Some(LogError::Failed { .. })),
        "{failed:?}"
    );
    assert!(log.record(&event(0)).is_err());
}

#[test]
fn open_refuses_a_tampered_or_cut_log_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = AuditLog::open(dir.path(), key(), fast_config()).unwrap();
    for i in 0..10 {
        log.record(&event(i)).unwrap();
    }
    log.close().unwrap();
    let seg = segment_path(dir.path(), 1);
    let good = std::fs::read(&seg).unwrap();

    // One byte edited in the middle.
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    std::fs::write(&seg, &bad).unwrap();
    let err = AuditLog::open(dir.path(), key(), fast_config()).unwrap_err();
    assert!(
        matches!(&err, LogError::Corrupt { problem, .. } if problem.kind == ProblemKind::Edited),
        "{err}"
    );
    assert_eq!(std::fs::read(&seg).unwrap(), bad);

    // Cut before the anchored checkpoint (at a line boundary, so not a torn tail).
    let cut = good[..good.len() - 1]
        .iter()
        .rposition(|b| *b == b'\n')
        .unwrap()
        + 1;
    std::fs::write(&seg, &good[..cut]).unwrap();
    let err = AuditLog::open(dir.path(), key(), fast_config()).unwrap_err();
    assert!(
        matches!(&err, LogError::Corrupt { problem, .. } if problem.kind == ProblemKind::Truncated),
        "{err}"
    );

    // Another key: the anchor does not authenticate.
    std::fs::write(&seg, &good).unwrap();
    let other = AuditKey::from_bytes(&[9; 32]);
    let err = AuditLog::open(dir.path(), other, fast_config()).unwrap_err();
    assert!(
        matches!(&err, LogError::Corrupt { problem, .. } if problem.kind == ProblemKind::BadCheckpoint),
        "{err}"
    );
    assert!(AuditLog::open(dir.path(), key(), fast_config()).is_ok());
}

#[test]
fn two_handles_on_one_directory_write_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = AuditLog::open(dir.path(), key(), fast_config().max_segment_bytes(4096)).unwrap();
    let (b, _) = AuditLog::open(dir.path(), key(), fast_config().max_segment_bytes(4096)).unwrap();
    let mut seqs = Vec::new();
    for i in 0..120 {
        // Alternating, so each write has to take in the other handle's records and rotations.
        let log = if i % 3 == 0 { &a } else { &b };
        seqs.push(log.record(&event(i)).unwrap().seq);
    }
    // The other handle rotates several segments while this one is idle: its next write has to
    // follow through all of them.
    for i in 120..160 {
        seqs.push(b.record(&event(i)).unwrap().seq);
    }
    seqs.push(a.record(&event(160)).unwrap().seq);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    a.close().unwrap();
    b.close().unwrap();
    let r = verify_dir(dir.path(), true);
    assert!(r.is_intact(), "{:?}", r.problem);
    assert_eq!(r.events, 161);
    assert!(
        segment_paths(dir.path()).unwrap().len() > 4,
        "too few rotations happened"
    );
    let events = read_event_files(&segment_paths(dir.path()).unwrap(), &Query::default()).unwrap();
    let got: Vec<_> = events
        .events
        .iter()
        .map(|e| e.event.request_id.clone())
        .collect();
    let want: Vec<_> = (0..161).map(|i| event(i).request_id).collect();
    assert_eq!(got, want);
}

#[test]
fn a_held_lock_times_out_the_record_and_leaves_the_log_usable() {
    let dir = tempfile::tempdir().unwrap();
    let config = fast_config().lock_timeout(Duration::from_millis(30));
    let (log, _) = AuditLog::open(dir.path(), key(), config).unwrap();
    log.record(&event(0)).unwrap();
    // Another process's writer, as far as the lock is concerned, which takes it directly
    // without asking: it gets it once the handle's lease ends (1 ms after its last write).
    let other = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("audit.lock"))
        .unwrap();
    assert!(eventually(|| other.try_lock().is_ok()));
    let err = log.record(&event(1)).unwrap_err();
    assert!(matches!(err, LogError::LockTimeout { .. }), "{err}");
    assert!(err.to_string().contains("held the lock"), "{err}");
    other.unlock().unwrap();
    log.record(&event(2)).unwrap();
    log.close().unwrap();
    let r = verify_dir(dir.path(), true);
    assert!(r.is_intact(), "{:?}", r.problem);
    // The timed-out record was never written.
    assert_eq!(r.events, 2);
}

#[test]
fn a_record_appended_by_someone_else_that_does_not_link_fails_the_log_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = AuditLog::open(dir.path(), key(), fast_config()).unwrap();
    log.record(&event(0)).unwrap();
    // A line that parses but does not link to the head (a forged append).
    let seg = segment_path(dir.path(), 1);
    let text = std::fs::read(&seg).unwrap();
    let first = &text[..=text.iter().position(|b| *b == b'\n').unwrap()];
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    std::io::Write::write_all(&mut f, first).unwrap();
    let err = log.record(&event(1)).unwrap_err();
    assert!(matches!(err, LogError::Failed { .. }), "{err}");
    assert!(err.to_string().contains("does not link"), "{err}");
    assert!(log.record(&event(2)).is_err());
}

#[test]
fn an_idle_log_still_writes_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let config = fast_config().checkpoint_interval(Some(Duration::from_millis(20)));
    let (log, _) = AuditLog::open(dir.path(), key(), config).unwrap();
    let receipt = log.record(&event(0)).unwrap();
    // No more events: the timer alone must checkpoint the event (and move the anchor past it).
    let anchored = || {
        Anchor::load(&anchor_path(dir.path()))
            .map(|a| a.seq > receipt.seq)
            .unwrap_or(false)
    };
    assert!(eventually(anchored));
    let r = verify_dir(dir.path(), true);
    assert!(r.is_intact(), "{:?}", r.problem);
    assert_eq!(r.events, 1);
    // ...and once the chain is checkpointed, the timer adds no empty checkpoints.
    let before = r.records;
    std::thread::sleep(Duration::from_millis(120));
    assert_eq!(verify_dir(dir.path(), true).records, before);
    drop(log);
}

#[test]
fn hashed_identifiers_hide_values_and_find_records() {
    let dir = tempfile::tempdir().unwrap();
    let config = fast_config().hashed_fields([HashedField::Actor, HashedField::SourceIp]);
    let (log, _) = AuditLog::open(dir.path(), key(), config).unwrap();
    let e = AuditEvent::new("acme", "alice@example.com", Action::Accessed)
        .with_source_ip("198.51.100.23");
    log.record(&e).unwrap();
    log.record(
        &AuditEvent::new("acme", "bob@example.com", Action::Accessed)
            .with_source_ip("198.51.100.24"),
    )
    .unwrap();
    let hasher = log.identifier_hasher();
    log.close().unwrap();
    let bytes = std::fs::read(segment_path(dir.path(), 1)).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    assert!(!text.contains("alice@example.com"));
    assert!(!text.contains("198.51.100.23"));
    let found = read_event_files(
        &segment_paths(dir.path()).unwrap(),
        &Query::new().actor(hasher.hash("alice@example.com")),
    )
    .unwrap();
    assert_eq!(found.events.len(), 1);
    assert_eq!(
        found.events[0].event.source_ip.as_deref(),
        Some(hasher.hash("198.51.100.23").as_str())
    );
    // The salt is per log: the same value hashes differently in another log.
    let dir2 = tempfile::tempdir().unwrap();
    let (log2, _) = AuditLog::open(dir2.path(), key(), fast_config()).unwrap();
    assert_ne!(
        log2.identifier_hasher().hash("alice@example.com"),
        hasher.hash("alice@example.com")
    );
}

#[test]
fn the_log_is_an_audit_sink() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = AuditLog::open(
        dir.path(),
        key(),
        LogConfig::default().checkpoint_interval(None),
    )
    .unwrap();
    let sink: Arc<dyn credvault_audit::AuditSink> = Arc::new(log.clone());
    assert!(sink.is_durable());
    sink.record(&event(1)).unwrap();
    log.inject_write_failure_after(0);
    assert!(sink.record(&event(2)).is_err());
    let nosync = tempfile::tempdir().unwrap();
    let (fast, _) = AuditLog::open(nosync.path(), key(), fast_config()).unwrap();
    assert!(!credvault_audit::AuditSink::is_durable(&fast));
    assert!(anchor_path(dir.path()).exists());
}

#[test]
fn a_line_torn_by_another_writer_is_recovered_by_the_next_write() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = AuditLog::open(dir.path(), key(), fast_config()).unwrap();
    log.record(&event(0)).unwrap();
    // Another process was killed halfway through its write.
    let seg = segment_path(dir.path(), 1);
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    std::io::Write::write_all(&mut f, b"{\"v\":1,\"seq\":3,\"prev\":\"00").unwrap();
    drop(f);
    let torn = verify_dir(dir.path(), true);
    assert_eq!(torn.problem.unwrap().kind, ProblemKind::TornTail);
    log.record(&event(1)).unwrap();
    log.close().unwrap();
    let r = verify_dir(dir.path(), true);
    assert!(r.is_intact(), "{:?}", r.problem);
    assert_eq!(r.recovered_breaks, 1);
    assert_eq!(r.events, 2);
}

/// A writer on its own handle that never pauses for more than 200 µs, until `done` is set
/// (or 20 s have passed, which fails the test). Returns how many records it wrote.
fn busy_writer(
    log: AuditLog,
    done: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let start = std::time::Instant::now();
        let mut n = 1_000;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the other side never got the lock from the busy handle"
            );
            log.record(&event(n)).unwrap();
            n += 1;
            std::thread::sleep(Duration::from_micros(200));
        }
        log.close().unwrap();
        n - 1_000
    })
}

#[test]
fn a_busy_handle_lets_another_handle_write_while_it_keeps_writing() {
    let dir = tempfile::tempdir().unwrap();
    // A lease far longer than the test: only the other handle's asking can end it.
    let leasing = fast_config().lock_lease(Some(Duration::from_secs(600)));
    let (a, _) = AuditLog::open(dir.path(), key(), leasing).unwrap();
    a.record(&event(0)).unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = busy_writer(a, Arc::clone(&done));
    // The other handle keeps no lease of its own.
    let other = fast_config()
        .lock_lease(None)
        .lock_timeout(Duration::from_secs(10));
    let (b, _) = AuditLog::open(dir.path(), key(), other).unwrap();
    for i in 0..20 {
        b.record(&event(100_000 + i)).unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let written = writer.join().unwrap();
    b.close().unwrap();
    let r = verify_dir(dir.path(), true);
    assert!(r.is_intact(), "{:?}", r.problem);
    assert_eq!(r.events, 1 + written + 20);
}

#[test]
fn the_log_lock_taken_from_outside_waits_for_a_busy_handle_to_let_go() {
    let dir = tempfile::tempdir().unwrap();
    let config = fast_config()
        .lock_lease(Some(Duration::from_secs(600)))
        .lock_timeout(Duration::from_secs(10));
    let (a, _) = AuditLog::open(dir.path(), key(), config).unwrap();
    a.record(&event(0)).unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = busy_writer(a, Arc::clone(&done));
    let held = credvault_audit::LogLock::acquire(dir.path(), Duration::from_secs(10)).unwrap();
    // While it is held, nothing is appended.
    let before = std::fs::read(segment_path(dir.path(), 1)).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(std::fs::read(segment_path(dir.path(), 1)).unwrap(), before);
    drop(held);
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let written = writer.join().unwrap();
    let r = verify_dir(dir.path(), true);
    assert!(r.is_intact(), "{:?}", r.problem);
    assert_eq!(r.events, 1 + written);
}
