//! Sinks: the fail-closed contract, fan-out rules, the tracing sink; and the canary: no secret
//! value reaches a serialized record, a log file, `Debug` output or an export.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{fast_config, key};
use credvault_audit::{
    read_event_files, segment_paths, write_csv, write_jsonl, Action, AuditEvent, AuditLog,
    AuditSink, Details, FanOut, FanOutPolicy, FieldChange, LogConfig, MemorySink, Query, Resource,
    SinkError,
};

/// A sink that says it is durable and fails or succeeds as told.
struct Durable(MemorySink);

impl AuditSink for Durable {
    fn record(&self, event: &AuditEvent) -> Result<(), SinkError> {
        self.0.record(event)
    }
    fn is_durable(&self) -> bool {
        true
    }
}

fn ev() -> AuditEvent {
    AuditEvent::new("acme", "alice", Action::Accessed)
}

#[test]
fn memory_sink_records_and_fails_on_demand() {
    let sink = MemorySink::new();
    sink.record(&ev()).unwrap();
    sink.fail_with(Some("disk on fire"));
    let err = sink.record(&ev()).unwrap_err();
    assert_eq!(err.reason(), "disk on fire");
    assert_eq!(sink.events().len(), 1);
    sink.fail_with(None);
    sink.record(&ev()).unwrap();
    assert_eq!(sink.events().len(), 2);
}

#[test]
fn fan_out_all_fails_when_any_sink_fails() {
    let a = Arc::new(MemorySink::new());
    let b = Arc::new(MemorySink::new());
    let fan = FanOut::new(FanOutPolicy::All)
        .with(a.clone())
        .with(b.clone());
    fan.record(&ev()).unwrap();
    b.fail_with(Some("full"));
    assert!(fan.record(&ev()).is_err());
    // Every sink is still tried: the healthy one has the event.
    assert_eq!(a.events().len(), 2);
    assert_eq!(b.events().len(), 1);
}

#[test]
fn fan_out_any_durable_needs_one_durable_success() {
    let durable = Arc::new(Durable(MemorySink::new()));
    let volatile = Arc::new(MemorySink::new());
    let fan = FanOut::new(FanOutPolicy::AnyDurable)
        .with(durable.clone())
        .with(volatile.clone());
    assert!(fan.is_durable());
    volatile.fail_with(Some("down"));
    fan.record(&ev()).unwrap();
    let results = fan.record_all(&ev());
    assert!(results[0].is_ok() && results[1].is_err());
    // The durable sink failing is a failure even though a volatile sink recorded it.
    volatile.fail_with(None);
    durable.0.fail_with(Some("read-only fs"));
    let err = fan.record(&ev()).unwrap_err();
    assert!(err.to_string().contains("read-only fs"), "{err}");
    // Only non-durable sinks: never enough.
    let fan = FanOut::new(FanOutPolicy::AnyDurable).with(MemorySink::new());
    assert!(fan.record(&ev()).is_err());
    // No sink at all: refused, not ignored.
    assert!(FanOut::new(FanOutPolicy::All).record(&ev()).is_err());
}

#[test]
fn fan_out_with_a_failing_log_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = AuditLog::open(
        dir.path(),
        key(),
        LogConfig::default().checkpoint_interval(None),
    )
    .unwrap();
    let fan = FanOut::new(FanOutPolicy::AnyDurable)
        .with(log.clone())
        .with(MemorySink::new());
    fan.record(&ev()).unwrap();
    log.inject_write_failure_after(10);
    assert!(fan.record(&ev()).is_err());
}

#[cfg(feature = "tracing")]
mod tracing_sink {
    use std::fmt::Write as _;
    use std::sync::{Arc, Mutex};

    use credvault_audit::{
        Action, AuditEvent, AuditSink, DenyReason, Details, Resource, TracingSink,
    };
    use tracing::field::{Field, Visit};
    use tracing::span;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<String>>>);

    struct Fields(String);

    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            write!(self.0, "{}={:?} ", field.name(), value).unwrap();
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            write!(self.0, "{}={} ", field.name(), value).unwrap();
        }
    }

    impl tracing::Subscriber for Capture {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
            span::Id::from_u64(1)
        }
        fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
        fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let mut f = Fields(format!("{} ", event.metadata().target()));
            event.record(&mut f);
            self.0.lock().unwrap().push(f.0);
        }
        fn enter(&self, _: &span::Id) {}
        fn exit(&self, _: &span::Id) {}
    }

    #[test]
    fn each_event_becomes_a_structured_tracing_event() {
        let capture = Capture::default();
        let e = AuditEvent::new("acme", "alice", Action::AccessDenied)
            .with_resource(Resource::credential("cred_1").with_name("stripe"))
            .with_details(Details::AccessDenied {
                reason: DenyReason::Expired,
            });
        tracing::subscriber::with_default(capture.clone(), || TracingSink.record(&e)).unwrap();
        let lines = capture.0.lock().unwrap().clone();
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert!(line.starts_with("credvault::audit "), "{line}");
        for needle in [
            "tenant=acme",
            "actor=alice",
            "action=access_denied",
            "outcome=denied",
            "resource_id=cred_1",
            "resource_name=stripe",
            r#"details={"kind":"access_denied","reason":"expired"}"#,
        ] {
            assert!(line.contains(needle), "{needle} missing from {line}");
        }
    }
}

const CANARY: &str = "canary-s3cr3t-7f2a9c";

#[test]
fn no_secret_value_reaches_a_record() {
    // What a store does when a secret field changes and when it is read: the events carry the
    // field names. The canary is the secret value held by the caller all along.
    let secret = zeroize::Zeroizing::new(String::from(CANARY));
    let updated = AuditEvent::new("acme", "alice", Action::Updated)
        .with_resource(Resource::credential("cred_9").with_type("postgres"))
        .with_details(Details::Updated {
            changes: vec![
                FieldChange::secret("password"),
                FieldChange::metadata("host", Some("db1"), Some("db2")),
            ],
        });
    let accessed =
        AuditEvent::new("acme", "agent-7", Action::Accessed).with_details(Details::Accessed {
            service: Some("n8n".into()),
            fields: vec!["password".into()],
        });
    let failed = AuditEvent::new("acme", "alice", Action::AccessFailed).with_details(
        Details::AccessFailed {
            reason: "decryption failed".into(),
        },
    );
    assert_eq!(secret.len(), CANARY.len());

    let dir = tempfile::tempdir().unwrap();
    let (log, _) = AuditLog::open(dir.path(), key(), fast_config()).unwrap();
    for e in [&updated, &accessed, &failed] {
        log.record(e).unwrap();
        assert!(!serde_json::to_string(e).unwrap().contains(CANARY));
        assert!(!format!("{e:?}").contains(CANARY));
    }
    log.close().unwrap();
    let mut all = Vec::new();
    for p in segment_paths(dir.path()).unwrap() {
        all.extend(std::fs::read(p).unwrap());
    }
    let events = read_event_files(&segment_paths(dir.path()).unwrap(), &Query::new()).unwrap();
    write_jsonl(&events.events, &mut all).unwrap();
    write_csv(&events.events, &mut all).unwrap();
    assert_eq!(events.events.len(), 3);
    assert!(!String::from_utf8_lossy(&all).contains(CANARY));
    // The secret field's change is recorded, by name, without values.
    let Some(Details::Updated { changes }) = &events.events[0].event.details else {
        panic!("no update details");
    };
    assert!(
        changes[0].is_secret() && changes[0].field() == "password" && changes[0].old().is_none()
    );
    assert_eq!(changes[1].new_value(), Some("db2"));
}

#[test]
fn key_debug_is_redacted() {
    let k = key();
    let hex = k.to_hex();
    assert!(!format!("{k:?}").contains(&hex[..16]));
    assert!(format!("{k:?}").contains("redacted"));
}
