//! Reading events back: filters, and export as JSON Lines or CSV.
//!
//! Reading does not verify; run [`verify_files`](crate::verify_files) first when the answer
//! matters.

use std::io::{self, Write};
use std::path::PathBuf;

use serde::Serialize;

use crate::event::{Action, AuditEvent, Timestamp};
use crate::record::{Line, RecordType};
use crate::seal::{RecordSealer, SealedBody};
use base64::Engine as _;

/// Which events to return. Empty filters match everything.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Query {
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this action.
    pub action: Option<Action>,
    /// Only this credential (matched against resource id and name).
    pub resource: Option<String>,
    /// Only this actor. For a log that hashes actors, pass
    /// [`IdentifierHasher::hash`](crate::IdentifierHasher::hash) of the known value.
    pub actor: Option<String>,
    /// Only events at or after this time.
    pub since: Option<Timestamp>,
    /// Only events before this time.
    pub until: Option<Timestamp>,
}

impl Query {
    /// A query matching every event.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only this tenant.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Only this action.
    pub fn action(mut self, action: Action) -> Self {
        self.action = Some(action);
        self
    }

    /// Only this credential (id or name).
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    /// Only this actor (or its keyed hash).
    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    /// Only events in `[since, until)`.
    pub fn between(mut self, since: Option<Timestamp>, until: Option<Timestamp>) -> Self {
        self.since = since;
        self.until = until;
        self
    }

    /// Whether `e` matches.
    pub fn matches(&self, e: &AuditEvent) -> bool {
        self.tenant.as_ref().is_none_or(|t| *t == e.tenant)
            && self.action.as_ref().is_none_or(|a| *a == e.action)
            && self.actor.as_ref().is_none_or(|a| *a == e.actor)
            && self.resource.as_ref().is_none_or(|r| {
                e.resource.id.as_deref() == Some(r) || e.resource.name.as_deref() == Some(r)
            })
            && self.since.is_none_or(|s| e.time >= s)
            && self.until.is_none_or(|u| e.time < u)
    }
}

/// An event with its position in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LoggedEvent {
    /// The record's sequence number.
    pub seq: u64,
    /// The event.
    #[serde(flatten)]
    pub event: AuditEvent,
}

/// The matching events of a log, and how many lines could not be read as events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Events {
    /// Matching events, in log order.
    pub events: Vec<LoggedEvent>,
    /// Lines that are not records, event records whose body is not an event, and sealed
    /// events that do not open under the sealer given.
    pub unreadable: u64,
    /// Sealed events left unread: no sealer was given ([`read_events_opening`] reads them).
    pub sealed: u64,
}

/// The events in segments (bytes, in order) that match `query`. Sealed events are counted in
/// [`Events::sealed`], not read.
pub fn read_events(segments: &[&[u8]], query: &Query) -> Events {
    read_bytes(segments, query, None)
}

/// [`read_events`], opening sealed events with `sealer`.
pub fn read_events_opening(segments: &[&[u8]], query: &Query, sealer: &dyn RecordSealer) -> Events {
    read_bytes(segments, query, Some(sealer))
}

fn read_bytes(segments: &[&[u8]], query: &Query, sealer: Option<&dyn RecordSealer>) -> Events {
    let mut out = Events::default();
    let mut log = None;
    for seg in segments {
        read_segment(seg, query, sealer, &mut log, &mut out);
    }
    out
}

/// The events in segment files (in order) that match `query`. Sealed events are counted in
/// [`Events::sealed`], not read.
///
/// # Errors
/// A file could not be read.
pub fn read_event_files(paths: &[PathBuf], query: &Query) -> io::Result<Events> {
    read_files(paths, query, None)
}

/// [`read_event_files`], opening sealed events with `sealer`.
///
/// # Errors
/// A file could not be read.
pub fn read_event_files_opening(
    paths: &[PathBuf],
    query: &Query,
    sealer: &dyn RecordSealer,
) -> io::Result<Events> {
    read_files(paths, query, Some(sealer))
}

fn read_files(
    paths: &[PathBuf],
    query: &Query,
    sealer: Option<&dyn RecordSealer>,
) -> io::Result<Events> {
    let mut out = Events::default();
    let mut log = None;
    for p in paths {
        let bytes = std::fs::read(p)?;
        read_segment(&bytes, query, sealer, &mut log, &mut out);
    }
    Ok(out)
}

/// The log id a genesis or segment record names.
fn log_id(l: &Line<'_>) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Named {
        log: String,
    }
    serde_json::from_slice::<Named>(l.body).ok().map(|n| n.log)
}

/// The event JSON of a sealed record of log `log`, or `None` if it does not open (a malformed
/// body, no genesis or segment record naming the log before it, another key or record).
fn open_sealed(
    l: &Line<'_>,
    log: Option<&str>,
    sealer: &dyn RecordSealer,
) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    let body = serde_json::from_slice::<SealedBody>(l.body).ok()?;
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(body.sealed)
        .ok()?;
    sealer.open(log?, l.seq, &sealed).ok()
}

fn read_segment(
    bytes: &[u8],
    query: &Query,
    sealer: Option<&dyn RecordSealer>,
    log: &mut Option<String>,
    out: &mut Events,
) {
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Some(l) = Line::parse(line) else {
            out.unreadable += 1;
            continue;
        };
        let opened;
        let body = match l.ty {
            RecordType::Event => l.body,
            RecordType::Genesis | RecordType::Segment => {
                if let Some(id) = log_id(&l) {
                    *log = Some(id);
                }
                continue;
            }
            RecordType::Sealed => {
                let Some(sealer) = sealer else {
                    out.sealed += 1;
                    continue;
                };
                let Some(pt) = open_sealed(&l, log.as_deref(), sealer) else {
                    out.unreadable += 1;
                    continue;
                };
                opened = pt;
                &opened[..]
            }
            RecordType::Checkpoint | RecordType::Recovery => continue,
        };
        match serde_json::from_slice::<AuditEvent>(body) {
            Ok(event) if query.matches(&event) => {
                out.events.push(LoggedEvent { seq: l.seq, event })
            }
            Ok(_) => {}
            Err(_) => out.unreadable += 1,
        }
    }
}

/// Writes events as JSON Lines: one object per event, its fields plus `seq`.
///
/// # Errors
/// The writer failed.
pub fn write_jsonl<W: Write>(events: &[LoggedEvent], mut w: W) -> io::Result<()> {
    for e in events {
        serde_json::to_writer(&mut w, e)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// The CSV columns written by [`write_csv`].
pub const CSV_COLUMNS: [&str; 15] = [
    "seq",
    "id",
    "time",
    "tenant",
    "actor",
    "source_ip",
    "client_host",
    "request_id",
    "action",
    "outcome",
    "resource_id",
    "resource_name",
    "resource_type",
    "environment",
    "details",
];

/// Writes events as CSV (RFC 4180) with a header row of [`CSV_COLUMNS`]; `details` is JSON.
///
/// # Errors
/// The writer failed.
pub fn write_csv<W: Write>(events: &[LoggedEvent], w: W) -> io::Result<()> {
    let mut csv = csv::Writer::from_writer(w);
    csv.write_record(CSV_COLUMNS)?;
    for LoggedEvent { seq, event: e } in events {
        let details = match &e.details {
            Some(d) => serde_json::to_string(d)?,
            None => String::new(),
        };
        let opt = |o: &Option<String>| o.clone().unwrap_or_default();
        csv.write_record([
            seq.to_string(),
            e.id.to_string(),
            e.time.to_string(),
            e.tenant.clone(),
            e.actor.clone(),
            opt(&e.source_ip),
            opt(&e.client_host),
            opt(&e.request_id),
            e.action.to_string(),
            e.outcome.as_str().to_owned(),
            opt(&e.resource.id),
            opt(&e.resource.name),
            opt(&e.resource.kind),
            opt(&e.resource.environment),
            details,
        ])?;
    }
    csv.flush()
}
