//! Errors.

use credvault_store::StoreError;

/// What went wrong. Names the record or setting and the reason, never a message body or a
/// code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TfaError {
    /// The store refused or failed (unknown credential, access denied, audit...).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The session key could not be read or made.
    #[error(transparent)]
    Session(#[from] credvault_session::SessionError),
    /// A setting or argument out of range.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// Which.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A stored record does not match its MAC (changed outside the vault); nothing of it was
    /// used.
    #[error("integrity check failed: the stored {record} was changed outside the vault")]
    Integrity {
        /// `route` or `code`.
        record: &'static str,
    },
    /// No code arrived within the wait.
    #[error("no code arrived within {waited_ms} ms")]
    Timeout {
        /// How long it waited.
        waited_ms: u64,
    },
    /// The receiver could not start or serve (address, TLS).
    #[error("{0}")]
    Receiver(String),
    /// The database failed.
    #[error("two-factor database: {0}")]
    Database(String),
}

impl From<rusqlite::Error> for TfaError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Database(e.to_string())
    }
}
