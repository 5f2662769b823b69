//! Every sink in this crate passes the audit-sink conformance suite from `credvault-test`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::key;
use credvault_audit::{
    read_event_files, segment_paths, AuditEvent, AuditLog, Durability, FanOut, FanOutPolicy,
    LogConfig, MemorySink, Query,
};
use credvault_test::{audit_sink_conformance, SinkHooks};

#[test]
fn memory_sink() {
    let sink = MemorySink::new();
    let read = || sink.events();
    let brk = || sink.fail_with(Some("broken"));
    audit_sink_conformance(
        &sink,
        SinkHooks {
            read_back: Some(&read),
            break_storage: Some(&brk),
        },
    )
    .unwrap();
}

#[test]
fn hash_chained_log_in_every_durability() {
    for durability in [
        Durability::default(),
        Durability::PerRecord,
        Durability::NoSync,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig::default()
            .durability(durability)
            .checkpoint_interval(None)
            .max_segment_bytes(256 * 1024);
        let (log, _) = AuditLog::open(dir.path(), key(), config).unwrap();
        let read = || -> Vec<AuditEvent> {
            read_event_files(&segment_paths(dir.path()).unwrap(), &Query::new())
                .unwrap()
                .events
                .into_iter()
                .map(|e| e.event)
                .collect()
        };
        let brk = || log.inject_write_failure_after(0);
        audit_sink_conformance(
            &log,
            SinkHooks {
                read_back: Some(&read),
                break_storage: Some(&brk),
            },
        )
        .unwrap_or_else(|v| panic!("{durability:?}: {v}"));
    }
}

#[test]
fn fan_out_and_tracing() {
    let a = Arc::new(MemorySink::new());
    let b = Arc::new(MemorySink::new());
    let fan = FanOut::new(FanOutPolicy::All)
        .with(a.clone())
        .with(b.clone());
    let read = || a.events();
    let brk = || b.fail_with(Some("second sink down"));
    audit_sink_conformance(
        &fan,
        SinkHooks {
            read_back: Some(&read),
            break_storage: Some(&brk),
        },
    )
    .unwrap();
    #[cfg(feature = "tracing")]
    audit_sink_conformance(&credvault_audit::TracingSink, SinkHooks::default()).unwrap();
}

#[test]
fn the_suite_catches_a_sink_that_drops_silently() {
    struct Dropper;
    impl credvault_audit::AuditSink for Dropper {
        fn record(&self, _: &AuditEvent) -> Result<(), credvault_audit::SinkError> {
            Ok(())
        }
    }
    let read = Vec::new;
    let v = audit_sink_conformance(
        &Dropper,
        SinkHooks {
            read_back: Some(&read),
            break_storage: None,
        },
    )
    .unwrap_err();
    assert_eq!(v.rule, "events read back equal the events sent, in order");
    let brk = || {};
    let v = audit_sink_conformance(
        &Dropper,
        SinkHooks {
            read_back: None,
            break_storage: Some(&brk),
        },
    )
    .unwrap_err();
    assert!(v.rule.contains("fail closed"), "{v}");
}
