//! Errors.

use credvault_store::StoreError;

/// What went wrong. Names the field or record and the reason, never a state, a cookie or a
/// value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The store refused or failed (access denied, unknown credential, audit...).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A browser state that is not a `storageState` document this crate accepts.
    #[error("invalid browser state: {reason}")]
    InvalidState {
        /// Where and why (a path such as `cookies[3].name`, never a value).
        reason: String,
    },
    /// A setting out of range.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// Which setting.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A stored record does not match its MAC (changed outside the vault), or a saved state
    /// older than one saved before was put back. Nothing of it was used.
    #[error("integrity check failed: the stored {record} was changed outside the vault")]
    Integrity {
        /// `session`, `session config`, `lease` or `lease waiter`.
        record: &'static str,
    },
    /// No lease was granted within the wait.
    #[error("no {kind} lease on the credential within {waited_ms} ms")]
    WaitTimedOut {
        /// The kind asked for.
        kind: &'static str,
        /// How long it waited.
        waited_ms: u64,
    },
    /// The lease is no longer held: it expired (no heartbeat in time) or was released.
    #[error("lease {id} is no longer held (expired or released)")]
    LeaseLost {
        /// The lease's id.
        id: String,
    },
    /// The credential's configuration forbids this (sessions of this kind are not stored).
    #[error("{0}")]
    Refused(String),
    /// The login callback failed; nothing was saved.
    #[error("login failed: {0}")]
    Login(String),
    /// The session database failed.
    #[error("session database: {0}")]
    Database(String),
    /// The session key file could not be read or made.
    #[error("session key {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

impl From<rusqlite::Error> for SessionError {
    fn from(e: rusqlite::Error) -> Self {
        // rusqlite's messages name tables and constraints, never bound values.
        Self::Database(e.to_string())
    }
}
