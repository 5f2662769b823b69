//! The audit-sink contract.

use credvault_audit::{
    Action, AuditEvent, AuditSink, DenyReason, Details, FieldChange, Outcome, Resource, Timestamp,
};

use crate::Violation;

fn v(rule: &'static str, detail: impl Into<String>) -> Violation {
    Violation {
        suite: "audit sink",
        rule,
        detail: detail.into(),
    }
}

/// What the suite may do beyond `record`: read back what the sink recorded (in order), and
/// make the sink's storage fail. A sink offering neither is checked on what `record` returns.
#[derive(Default)]
pub struct SinkHooks<'a> {
    /// Every event recorded so far, in order.
    pub read_back: Option<&'a dyn Fn() -> Vec<AuditEvent>>,
    /// Makes every later write fail (a full disk, a dropped connection).
    pub break_storage: Option<&'a dyn Fn()>,
}

impl std::fmt::Debug for SinkHooks<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkHooks")
            .field("read_back", &self.read_back.is_some())
            .field("break_storage", &self.break_storage.is_some())
            .finish()
    }
}

/// Events covering every action and detail kind, and awkward text.
fn events() -> Vec<AuditEvent> {
    let mut out: Vec<AuditEvent> = Action::KNOWN
        .iter()
        .cloned()
        .chain([Action::Other("custom_action".into())])
        .enumerate()
        .map(|(i, a)| {
            AuditEvent::new(format!("tenant-{}", i % 2), "conformance", a)
                .at(Timestamp::from_unix_millis(1_790_000_000_000 + i as u64))
                .with_resource(
                    Resource::credential(format!("cred_{i}")).with_environment("production"),
                )
        })
        .collect();
    out.push(
        AuditEvent::new(
            "t\u{e9}n\u{e4}nt \"quoted\"\n\\",
            "actor\t\u{1f511}",
            Action::Updated,
        )
        .with_source_ip("2001:db8::1")
        .with_client_host("h\u{0}st")
        .with_request_id("x".repeat(64 * 1024))
        .with_details(Details::Updated {
            changes: vec![
                FieldChange::secret("password"),
                FieldChange::metadata("host", Some("a,b"), None::<&str>),
            ],
        }),
    );
    out.push(
        AuditEvent::new("t", "a", Action::AccessDenied)
            .with_outcome(Outcome::Denied)
            .with_details(Details::AccessDenied {
                reason: DenyReason::Expired,
            }),
    );
    out.push(
        AuditEvent::new("t", "apikey:0123456789ab", Action::Request)
            .with_source_ip("127.0.0.1")
            .with_client_host("vault.example.test")
            .with_request_id("req-1")
            .with_details(Details::Request {
                method: "GET".into(),
                route: "/api/credentials/{id}".into(),
                status: 200,
                latency_us: 1234,
                api_key: Some("0123456789ab".into()),
            }),
    );
    out
}

/// Runs the audit-sink contract against `sink`:
/// - every event, with any content, is accepted by a healthy sink;
/// - records from 8 threads at once are all accepted;
/// - with `read_back`, every accepted event is there, in order of acceptance per thread, equal to
///   what was sent;
/// - `is_durable` is stable;
/// - with `break_storage`, every later `record` fails (never a silent drop), and fails again on
///   retry.
pub fn audit_sink_conformance(sink: &dyn AuditSink, hooks: SinkHooks<'_>) -> Result<(), Violation> {
    let durable = sink.is_durable();
    let sent = events();
    for e in &sent {
        sink.record(e).map_err(|err| {
            v(
                "a healthy sink accepts every event",
                format!("{:?}: {err}", e.action),
            )
        })?;
    }
    // Concurrency: the sink is shared between threads.
    let threads: Vec<Vec<AuditEvent>> = (0..8)
        .map(|t| {
            (0..25)
                .map(|i| {
                    AuditEvent::new("tenant-c", format!("thread-{t}"), Action::Accessed)
                        .with_request_id(format!("{t}-{i}"))
                })
                .collect()
        })
        .collect();
    let results: Vec<Result<(), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = threads
            .iter()
            .map(|batch| {
                s.spawn(move || {
                    for e in batch {
                        sink.record(e).map_err(|err| err.to_string())?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect()
    });
    for r in results {
        r.map_err(|e| v("concurrent records are accepted", e))?;
    }
    if sink.is_durable() != durable {
        return Err(v("is_durable is stable", "changed between calls"));
    }
    if let Some(read) = hooks.read_back {
        let got = read();
        let first: Vec<&AuditEvent> = got.iter().take(sent.len()).collect();
        if first.len() != sent.len() || first.iter().zip(&sent).any(|(a, b)| *a != b) {
            return Err(v(
                "events read back equal the events sent, in order",
                format!("{} read, {} sent first", got.len(), sent.len()),
            ));
        }
        for batch in &threads {
            let actor = &batch[0].actor;
            let mine: Vec<&AuditEvent> = got.iter().filter(|e| &e.actor == actor).collect();
            if mine.len() != batch.len() || mine.iter().zip(batch).any(|(a, b)| *a != b) {
                return Err(v(
                    "concurrent events are all there, in each thread's order",
                    format!("{actor}: {} of {}", mine.len(), batch.len()),
                ));
            }
        }
    }
    if let Some(break_it) = hooks.break_storage {
        break_it();
        let e = AuditEvent::new("tenant-x", "conformance", Action::Accessed);
        for attempt in 0..3 {
            if sink.record(&e).is_ok() {
                return Err(v(
                    "a sink whose storage fails refuses the record (fail closed)",
                    format!("attempt {attempt} was accepted"),
                ));
            }
        }
    }
    Ok(())
}
