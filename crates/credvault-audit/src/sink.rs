//! Where events go: the [`AuditSink`] trait and its fail-closed contract, an in-memory sink,
//! a `tracing` sink, and a fan-out over several sinks.

use std::sync::{Arc, Mutex};

use crate::event::AuditEvent;

/// A sink could not record an event. The caller must refuse the operation the event describes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("audit sink {sink} could not record the event: {reason}")]
pub struct SinkError {
    sink: String,
    reason: String,
}

impl SinkError {
    /// An error from the sink named `sink`.
    pub fn new(sink: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            sink: sink.into(),
            reason: reason.into(),
        }
    }

    /// The sink's name.
    pub fn sink(&self) -> &str {
        &self.sink
    }

    /// Why it failed.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// A destination for audit events.
///
/// **Contract (fail closed):** `record` returns `Ok` only once the event is recorded as the sink
/// promises (durably, for a durable sink). If it returns an error, the caller must refuse the
/// operation and change nothing. Implementations must be safe to call from many threads.
pub trait AuditSink: Send + Sync {
    /// Records one event.
    ///
    /// # Errors
    /// [`SinkError`] if the event was not recorded.
    fn record(&self, event: &AuditEvent) -> Result<(), SinkError>;

    /// Whether an acknowledged event survives a crash of the process and of the machine.
    /// [`FanOut`] with [`FanOutPolicy::AnyDurable`] counts only durable sinks.
    fn is_durable(&self) -> bool {
        false
    }
}

impl<S: AuditSink + ?Sized> AuditSink for Arc<S> {
    fn record(&self, event: &AuditEvent) -> Result<(), SinkError> {
        (**self).record(event)
    }

    fn is_durable(&self) -> bool {
        (**self).is_durable()
    }
}

impl<S: AuditSink + ?Sized> AuditSink for Box<S> {
    fn record(&self, event: &AuditEvent) -> Result<(), SinkError> {
        (**self).record(event)
    }

    fn is_durable(&self) -> bool {
        (**self).is_durable()
    }
}

/// Keeps events in memory, for tests. Can be told to fail, to exercise fail-closed paths.
#[derive(Debug, Default)]
pub struct MemorySink {
    events: Mutex<Vec<AuditEvent>>,
    fail: Mutex<Option<String>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the events recorded so far.
    pub fn events(&self) -> Vec<AuditEvent> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// From now on, every `record` fails with `reason` (`None`: succeed again).
    pub fn fail_with(&self, reason: Option<&str>) {
        if let Ok(mut f) = self.fail.lock() {
            *f = reason.map(str::to_owned);
        }
    }
}

impl AuditSink for MemorySink {
    fn record(&self, event: &AuditEvent) -> Result<(), SinkError> {
        let fail = self
            .fail
            .lock()
            .map_err(|_| SinkError::new("memory", "lock poisoned"))?
            .clone();
        if let Some(reason) = fail {
            return Err(SinkError::new("memory", reason));
        }
        self.events
            .lock()
            .map_err(|_| SinkError::new("memory", "lock poisoned"))?
            .push(event.clone());
        Ok(())
    }
}

/// Emits each event as a structured `tracing` event (target `credvault::audit`, level INFO),
/// with one field per event field and the details as JSON. Not durable: what happens to the
/// event is up to the subscriber.
#[cfg(feature = "tracing")]
#[derive(Clone, Copy, Debug, Default)]
pub struct TracingSink;

#[cfg(feature = "tracing")]
impl AuditSink for TracingSink {
    fn record(&self, e: &AuditEvent) -> Result<(), SinkError> {
        let details = match &e.details {
            Some(d) => serde_json::to_string(d)
                .map_err(|err| SinkError::new("tracing", err.to_string()))?,
            None => String::new(),
        };
        tracing::info!(
            target: "credvault::audit",
            event_id = %e.id,
            time = %e.time,
            tenant = %e.tenant,
            actor = %e.actor,
            source_ip = e.source_ip.as_deref().unwrap_or(""),
            client_host = e.client_host.as_deref().unwrap_or(""),
            request_id = e.request_id.as_deref().unwrap_or(""),
            action = %e.action,
            outcome = e.outcome.as_str(),
            resource_id = e.resource.id.as_deref().unwrap_or(""),
            resource_name = e.resource.name.as_deref().unwrap_or(""),
            resource_type = e.resource.kind.as_deref().unwrap_or(""),
            environment = e.resource.environment.as_deref().unwrap_or(""),
            details = %details,
            "audit"
        );
        Ok(())
    }
}

/// When a [`FanOut`] counts an event as recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FanOutPolicy {
    /// Every sink must record it.
    All,
    /// At least one durable sink must record it (Vault's rule for several audit devices);
    /// failures of the others are returned by [`FanOut::record_all`] but do not fail `record`.
    AnyDurable,
}

/// Sends each event to several sinks, in order, and succeeds by its [`FanOutPolicy`].
pub struct FanOut {
    sinks: Vec<Box<dyn AuditSink>>,
    policy: FanOutPolicy,
}

impl std::fmt::Debug for FanOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOut")
            .field("sinks", &self.sinks.len())
            .field("policy", &self.policy)
            .finish()
    }
}

impl FanOut {
    /// A fan-out with no sinks yet (it records nothing and fails every event until a sink is
    /// added: an audit pipeline with no destination is refused, not ignored).
    pub fn new(policy: FanOutPolicy) -> Self {
        Self {
            sinks: Vec::new(),
            policy,
        }
    }

    /// Adds a sink.
    pub fn with(mut self, sink: impl AuditSink + 'static) -> Self {
        self.sinks.push(Box::new(sink));
        self
    }

    /// Records the event in every sink and returns each sink's result, in order.
    pub fn record_all(&self, event: &AuditEvent) -> Vec<Result<(), SinkError>> {
        self.sinks.iter().map(|s| s.record(event)).collect()
    }
}

impl AuditSink for FanOut {
    fn record(&self, event: &AuditEvent) -> Result<(), SinkError> {
        if self.sinks.is_empty() {
            return Err(SinkError::new("fan-out", "no sink configured"));
        }
        let results = self.record_all(event);
        match self.policy {
            FanOutPolicy::All => results
                .into_iter()
                .collect::<Result<Vec<()>, _>>()
                .map(|_| ()),
            FanOutPolicy::AnyDurable => {
                let durable_ok = self
                    .sinks
                    .iter()
                    .zip(&results)
                    .any(|(s, r)| s.is_durable() && r.is_ok());
                if durable_ok {
                    Ok(())
                } else {
                    let reasons: Vec<String> = results
                        .iter()
                        .filter_map(|r| r.as_ref().err().map(ToString::to_string))
                        .collect();
                    Err(SinkError::new(
                        "fan-out",
                        if reasons.is_empty() {
                            "no durable sink configured".to_owned()
                        } else {
                            format!(
                                "no durable sink recorded the event ({})",
                                reasons.join("; ")
                            )
                        },
                    ))
                }
            }
        }
    }

    /// Durable if any sink is: under `All` every sink recorded the event, under `AnyDurable`
    /// at least one durable sink did.
    fn is_durable(&self) -> bool {
        self.sinks.iter().any(|s| s.is_durable())
    }
}
