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
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{event, key, verify_dir};
use credvault_audit::{segment_paths, AuditLog, LogConfig, ProblemKind};

const CHILD_DIR: &str = "CREDVAULT_AUDIT_CRASH_CHILD_DIR";
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
    let (log, _) = AuditLog::open(dir.as_ref(), key(), child_config()).unwrap();
    let writers: Vec<_> = (0..2)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0.. {
                    let receipt = log.record(&event(t * 1_000_000 + i)).unwrap();
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
}

#[test]
fn killed_writers_leave_verifiable_logs() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut torn_tails = 0u64;
    let mut total_acked = 0usize;
    for run in 0..RUNS {
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        // From "before the log is even open" to "deep into writing".
        let delay = Duration::from_micros((rng >> 33) % 80_000);
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_writer_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| l.strip_prefix("ack ").and_then(|s| s.parse::<u64>().ok()))
                .collect::<Vec<u64>>()
        });
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
