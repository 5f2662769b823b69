//! credvault-audit beside its floors, in one run.
//!
//! - `audit_append_512`: 512 records made durable. The peer `naive_write_fsync` serializes each
//!   event, writes it and `fdatasync`s it, one at a time (what a log without group commit does).
//!   `group_commit_4x64` is the audit log with 4 writer threads, each keeping up to 64 records
//!   in flight (`submit`, then `wait` on every ticket: each record is counted only once
//!   acknowledged durable). `group_commit_4x1` has 4 writers each waiting for every record
//!   before the next; `per_record_4x1` is the log's `PerRecord` durability.
//! - `audit_verify_10k`: verifying a 10,000-event log (key and anchor) against plain SHA-256
//!   over the same bytes (`sha256_floor`), ring's SHA-256 in both.
//!
//! `cargo run -p credvault-benches --bin bench-report -- --peer naive_write_fsync audit_append`
//! `cargo run -p credvault-benches --bin bench-report -- --peer sha256_floor audit_verify`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

use credvault_audit::{
    anchor_path, segment_path, verify_segments, Action, Anchor, AuditEvent, AuditKey, AuditLog,
    Durability, LogConfig, Resource, VerifyOptions,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const RECORDS: u64 = 512;
const WRITERS: u64 = 4;

fn event(i: u64) -> AuditEvent {
    AuditEvent::new("tenant-7", "automation:invoice-sync", Action::Accessed)
        .with_resource(
            Resource::credential(format!("cred_{i:08}"))
                .with_name("stripe-live")
                .with_type("http_bearer_token")
                .with_environment("production"),
        )
        .with_source_ip("10.1.2.3")
        .with_request_id(format!("req-{i}"))
}

fn key() -> AuditKey {
    AuditKey::from_bytes(&[0x42; 32])
}

/// Time for `RECORDS` records from `WRITERS` threads, each with up to `window` in flight.
fn run_log(log: &AuditLog, window: usize) -> Duration {
    let per = RECORDS / WRITERS;
    let start = Instant::now();
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            s.spawn(move || {
                let mut tickets = Vec::with_capacity(window);
                for i in 0..per {
                    tickets.push(log.submit(&event(w * per + i)).unwrap());
                    if tickets.len() == window {
                        for t in tickets.drain(..) {
                            t.wait().unwrap();
                        }
                    }
                }
                for t in tickets.drain(..) {
                    t.wait().unwrap();
                }
            });
        }
    });
    start.elapsed()
}

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut g = c.benchmark_group("audit_append_512");
    g.throughput(Throughput::Elements(RECORDS));
    g.sample_size(10);

    let naive_path = dir.path().join("naive.jsonl");
    let mut naive = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&naive_path)
        .unwrap();
    g.bench_function("naive_write_fsync", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                for i in 0..RECORDS {
                    let mut line = serde_json::to_vec(&event(i)).unwrap();
                    line.push(b'\n');
                    naive.write_all(&line).unwrap();
                    naive.sync_data().unwrap();
                }
            }
            start.elapsed()
        })
    });

    let configs = [
        ("group_commit_4x64", Durability::default(), 64),
        ("group_commit_4x1", Durability::default(), 1),
        ("per_record_4x1", Durability::PerRecord, 1),
    ];
    for (name, durability, window) in configs {
        let (log, _) = AuditLog::open(
            &dir.path().join(name),
            key(),
            LogConfig::default()
                .durability(durability)
                .checkpoint_interval(None),
        )
        .unwrap();
        g.bench_function(name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| run_log(&log, window)).sum())
        });
        log.close().unwrap();
    }
    g.finish();
}

fn verify(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let config = LogConfig::default()
        .durability(Durability::NoSync)
        .checkpoint_interval(None)
        .max_segment_bytes(u64::MAX);
    let (log, _) = AuditLog::open(dir.path(), key(), config).unwrap();
    for i in 0..10_000 {
        log.record(&event(i)).unwrap();
    }
    log.close().unwrap();
    let bytes = std::fs::read(segment_path(dir.path(), 1)).unwrap();
    let anchor = Anchor::load(&anchor_path(dir.path())).unwrap();
    let key = key();
    let options = VerifyOptions {
        key: Some(&key),
        anchor: Some(&anchor),
    };
    let report = verify_segments(&[&bytes], options);
    assert!(report.is_intact() && report.events == 10_000);

    let mut g = c.benchmark_group("audit_verify_10k");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("sha256_floor", |b| {
        b.iter(|| {
            black_box(ring::digest::digest(
                &ring::digest::SHA256,
                black_box(&bytes),
            ))
        })
    });
    g.bench_function("credvault_verify", |b| {
        b.iter(|| black_box(verify_segments(&[black_box(&bytes)], options)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = append, verify
}
criterion_main!(benches);
