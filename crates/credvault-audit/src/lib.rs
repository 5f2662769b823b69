//! Audit events for credential vaults, fail-closed sinks, and a tamper-evident log.
//!
//! ```
//! use credvault_audit::{
//!     verify_files, Action, Anchor, AuditEvent, AuditKey, AuditLog, Details, DenyReason,
//!     LogConfig, Resource, VerifyOptions,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let key = AuditKey::generate()?;
//! let key_text = key.to_hex();
//! let (log, _) = AuditLog::open(dir.path(), key, LogConfig::default())?;
//!
//! // Every access is recorded, durably, before it is allowed to proceed.
//! let event = AuditEvent::new("acme", "alice", Action::AccessDenied)
//!     .with_resource(Resource::credential("cred_42").with_name("stripe").with_environment("production"))
//!     .with_source_ip("203.0.113.7")
//!     .with_details(Details::AccessDenied { reason: DenyReason::Expired });
//! let receipt = log.record(&event)?;
//! assert_eq!(receipt.seq, 2); // after the genesis record and the first checkpoint
//! log.close()?;
//!
//! // Anyone holding the key checks every hash, link and checkpoint, and the anchor.
//! let key = AuditKey::from_text(&key_text)?;
//! let anchor = Anchor::load(&credvault_audit::anchor_path(dir.path()))?;
//! let segments = credvault_audit::segment_paths(dir.path())?;
//! let report = verify_files(&segments, VerifyOptions { key: Some(&key), anchor: Some(&anchor) })?;
//! assert!(report.is_intact());
//! assert_eq!(report.events, 1);
//! # Ok(())
//! # }
//! ```
//!
//! - [`AuditEvent`]: who, when, from where, what, outcome and details. No field accepts a
//!   secret type, and field changes of secret fields carry no values ([`FieldChange`]).
//! - [`AuditSink`]: the fail-closed contract (an error means the operation must be refused),
//!   with [`MemorySink`], `TracingSink` (feature `tracing`) and [`FanOut`].
//! - [`AuditLog`]: hash-chained JSON Lines segments with group commit, HMAC-SHA256 checkpoints,
//!   an anchor file, size-based rotation, torn-tail recovery and keyed identifiers
//!   ([`IdentifierHasher`]). The format is in `docs/formats.md` ("Audit log v1").
//! - [`verify_files`] / [`verify_segments`]: a [`VerifyReport`] naming the first problem and
//!   its [`ProblemKind`]; [`read_events`] with a [`Query`], exported by [`write_jsonl`] and
//!   [`write_csv`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod chain;
mod event;
#[doc(hidden)]
pub mod fuzzing;
mod json;
mod key;
mod log;
mod query;
mod record;
mod seal;
mod sink;
mod verify;

pub use chain::{Appended, ChainRecord, ChainTip, ChainWriter};
pub use event::{
    Action, AuditEvent, DenyReason, Details, DlpCount, EventId, FieldChange, Outcome, Resource,
    TestStatus, Timestamp, TimestampError,
};
pub use key::{AuditKey, HashedField, IdentifierHasher, KeyFormatError, HASHED_PREFIX};
pub use log::{
    anchor_path, segment_path, segment_paths, AuditLog, Durability, LogConfig, LogError, LogLock,
    OpenReport, Receipt, Ticket,
};
pub use query::{
    read_event_files, read_event_files_opening, read_events, read_events_opening, write_csv,
    write_jsonl, Events, LoggedEvent, Query, CSV_COLUMNS,
};
pub use record::RecordType;
pub use seal::{AesGcmSealer, RecordSealer, SealError};
#[cfg(feature = "tracing")]
pub use sink::TracingSink;
pub use sink::{AuditSink, FanOut, FanOutPolicy, MemorySink, SinkError};
pub use verify::{
    verify_files, verify_segments, Anchor, AnchorCheck, AnchorError, Problem, ProblemKind,
    VerifyOptions, VerifyReport,
};
