//! Crash safety: a writer process killed (SIGKILL) at random moments, 60 times over the same
//! log, leaves a log that verifies through every acknowledged record; a torn tail is reported,
//! then kept and skipped when the next writer opens the log.
//!
//! The writer is this test binary run again as a child, with the ignored test
//! `crash_writer_child` selected and the log directory in an environment variable. A process
//! kill keeps what the kernel has already accepted; what a power loss could lose is covered by
//! the `fsync` before each acknowledgement, which this test cannot cut.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

use common::{event, key, verify_dir};
use credvault_audit::{segment_paths, AuditLog, LogConfig, ProblemKind};

const CHILD_DIR: &str = "CREDVAULT_AUDIT_CRASH_CHILD_DIR";
/// Records per writer thread (unset: until killed).
const CHILD_COUNT: &str = "CREDVAULT_AUDIT_CRASH_CHILD_COUNT";
/// Added to the event numbers, so that several children write distinct events.
const CHILD_BASE: &str = "CREDVAULT_AUDIT_CRASH_CHILD_BASE";
const RUNS: u64 = 60;

fn child_config() -> LogConfig {
    LogConfig::default()
        .checkpoint_every(25)
        .max_segment_bytes(8 * 1024)
        .checkpoint_interval(Some(Duration::from_millis(5)))
}

#[test]
#[ignore = "the writer half of `killed_writers_leave_verifiable_logs`, run by it as a child process"]
fn crash_writer_child() {
    let dir = std::env::var(CHILD_DIR).expect(
        "run by killed_writers_leave_verifiable_logs, with CREDVAULT_AUDIT_CRASH_CHILD_DIR set",
    );
    let count: u64 = std::env::var(CHILD_COUNT).map_or(u64::MAX, |c| c.parse().unwrap());
    let base: u64 = std::env::var(CHILD_BASE).map_or(0, |c| c.parse().unwrap());
    let (log, _) = AuditLog::open(dir.as_ref(), key(), child_config()).unwrap();
    let writers: Vec<_> = (0..2)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..count {
                    let receipt = log.record(&event(base + t * 1_000_000 + i)).unwrap();
                    // Printed only once durable: the parent's proof of acknowledgement.
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {}", receipt.seq).unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    log.close().unwrap();
}

/// The sequence number of an "ack N" line; the test harness may print its "test ... " label
/// at the start of the first one.
fn ack_of(line: &str) -> Option<u64> {
    line.find("ack ")
        .and_then(|at| line[at + 4..].trim().parse().ok())
}

fn spawn_writer(dir: &std::path::Path, count: Option<u64>, base: u64) -> std::process::Child {
    let mut cmd = credvault_test::child_test("crash_writer_child");
    cmd.env(CHILD_DIR, dir)
        .env(CHILD_BASE, base.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(n) = count {
        cmd.env(CHILD_COUNT, n.to_string());
    }
    cmd.spawn().unwrap()
}

fn acks(child: &mut std::process::Child) -> std::thread::JoinHandle<Vec<u64>> {
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| ack_of(&l))
            .collect()
    })
}

/// Four writer processes at once on one log, two of them killed (SIGKILL) while writing:
/// one chain, no fork (every acknowledged sequence number is distinct and in the log), every
/// record of the finished writers present exactly once, torn lines recovered by the others.
#[test]
fn processes_writing_at_once_share_one_chain() {
    const PER_THREAD: u64 = 150;
    let dir = tempfile::tempdir().unwrap();
    // Create the log first, so no child has to.
    AuditLog::open(
        dir.path(),
        key(),
        LogConfig::default().checkpoint_interval(None),
    )
    .unwrap()
    .0
    .close()
    .unwrap();
    let mut finishers: Vec<_> = (0..2)
        .map(|n| spawn_writer(dir.path(), Some(PER_THREAD), (n + 1) * 10_000_000))
        .collect();
    let mut victims: Vec<_> = (0..2)
        .map(|n| spawn_writer(dir.path(), None, (n + 3) * 10_000_000))
        .collect();
    let finisher_acks: Vec<_> = finishers.iter_mut().map(acks).collect();
    let victim_acks: Vec<_> = victims.iter_mut().map(acks).collect();
    for (n, v) in victims.iter_mut().enumerate() {
        std::thread::sleep(Duration::from_millis(40 + 30 * n as u64));
        v.kill().unwrap();
        v.wait().unwrap();
    }
    for f in &mut finishers {
        assert!(f.wait().unwrap().success(), "a writer process failed");
    }
    let mut all: Vec<u64> = Vec::new();
    for a in finisher_acks {
        let a = a.join().unwrap();
        assert_eq!(
            a.len() as u64,
            2 * PER_THREAD,
            "a finished writer's acknowledgements"
        );
        all.extend(a);
    }
    for a in victim_acks {
        all.extend(a.join().unwrap());
    }
    let acked = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(
        all.len(),
        acked,
        "two processes got the same sequence number"
    );

    // A torn line left by a victim after the finishers' last write is recovered by the next
    // writer; be that writer.
    let (log, _) = AuditLog::open(
        dir.path(),
        key(),
        LogConfig::default().checkpoint_interval(None),
    )
    .unwrap();
    log.close().unwrap();
    let report = verify_dir(dir.path(), true);
    assert!(report.is_intact(), "{:?}", report.problem);
    let events = credvault_audit::read_event_files(
        &segment_paths(dir.path()).unwrap(),
        &credvault_audit::Query::default(),
    )
    .unwrap();
    let logged: std::collections::HashMap<u64, Option<String>> = events
        .events
        .iter()
        .map(|e| (e.seq, e.event.request_id.clone()))
        .collect();
    for seq in &all {
        assert!(
            logged.contains_key(seq),
            "acknowledged record {seq} is not an event in the log"
        );
    }
    for n in 1..=2u64 {
        for t in 0..2 {
            for i in 0..PER_THREAD {
                let want = event(n * 10_000_000 + t * 1_000_000 + i).request_id;
                let found = logged.values().filter(|r| **r == want).count();
                assert_eq!(found, 1, "event {want:?} appears {found} times");
            }
        }
    }
    eprintln!(
        "4 processes: {acked} acknowledged, {} events, {} segments, {} torn lines recovered",
        report.events, report.segments, report.recovered_breaks
    );
}

#[test]
fn killed_writers_leave_verifiable_logs() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut torn_tails = 0u64;
    let mut total_acked = 0usize;
    for run in 0..RUNS {
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        // From "before the log is even open" to "deep into writing".
        let delay = Duration::from_micros((rng >> 33) % 80_000);
        let mut child = spawn_writer(dir.path(), None, 0);
        let reader = acks(&mut child);
        std::thread::sleep(delay);
        child.kill().unwrap();
        child.wait().unwrap();
        let acked = reader.join().unwrap();
        total_acked += acked.len();

        if segment_paths(dir.path()).unwrap().is_empty() {
            assert!(
                acked.is_empty(),
                "run {run}: records acknowledged but no segment exists"
            );
            continue;
        }
        let report = verify_dir(dir.path(), true);
        match &report.problem {
            None => {}
            Some(p) if p.kind == ProblemKind::TornTail => torn_tails += 1,
            Some(p) => panic!("run {run} (killed after {delay:?}): {p}"),
        }
        if let Some(&max) = acked.iter().max() {
            let last = report.last_seq.unwrap();
            assert!(
                last >= max,
                "run {run}: record {max} was acknowledged, the log ends at {last}"
            );
        }
    }
    // The survivor: opens the log (skipping any torn tail), appends, closes; all verifies.
    let (log, _) = AuditLog::open(
        dir.path(),
        key(),
        LogConfig::default().checkpoint_interval(None),
    )
    .unwrap();
    log.record(&event(7)).unwrap();
    log.close().unwrap();
    let report = verify_dir(dir.path(), true);
    assert!(report.is_intact(), "{:?}", report.problem);
    assert!(report.recovered_breaks >= torn_tails.min(1));
    assert!(
        total_acked > 0,
        "no child got as far as acknowledging a record"
    );
    eprintln!(
        "{RUNS} kills: {total_acked} acknowledged records, {torn_tails} torn tails seen, {} recovered, {} events in the log, {} segments",
        report.recovered_breaks, report.events, report.segments
    );
}
