//! Errors. Crypto failures are opaque ([`StoreError::Corrupt`] names the credential, never the
//! check that failed); everything else names the field or object and the reason, never a value.

use credvault_audit::DenyReason;
use credvault_schema::ValidationErrors;

use crate::storage::StorageError;

/// What a store operation can fail with.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A backup is malformed or does not authenticate ([`crate::backup`]).
    #[error(transparent)]
    Backup(#[from] crate::backup::BackupError),
    /// An argument is malformed (an id, a field name, a filter).
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was invalid.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A stored record does not match its record MAC: it was changed outside the vault (or
    /// written before record MACs and not upgraded yet). Nothing of it was used or shown;
    /// the failure is recorded as `integrity_failure`.
    #[error("integrity check failed: the stored {record} {id:?} was changed outside the vault")]
    Integrity {
        /// `credential` or `data key`.
        record: &'static str,
        /// The record's id (as stored).
        id: String,
    },
    /// No such tenant. Operations never fall back to another tenant.
    #[error("unknown tenant {tenant:?}")]
    UnknownTenant {
        /// The tenant asked for.
        tenant: String,
    },
    /// The tenant exists already.
    #[error("tenant {tenant:?} already exists")]
    TenantExists {
        /// The tenant.
        tenant: String,
    },
    /// No such credential in this tenant.
    #[error("no credential {credential:?} in this tenant")]
    NotFound {
        /// The id or name asked for.
        credential: String,
    },
    /// The credential type is not registered.
    #[error("unknown credential type {name:?}")]
    UnknownType {
        /// The type name.
        name: String,
    },
    /// The fields do not validate against the type.
    #[error("credential does not validate: {0}")]
    Validation(#[from] ValidationErrors),
    /// Another active credential has this name in this environment.
    #[error("an active credential named {name:?} already exists in environment {environment:?}")]
    NameTaken {
        /// The name.
        name: String,
        /// The environment.
        environment: String,
    },
    /// Optimistic concurrency: the credential changed since the version the caller read.
    #[error("credential changed: expected version {expected}, found {found}")]
    VersionConflict {
        /// The version the caller expected.
        expected: u64,
        /// The version stored.
        found: u64,
    },
    /// Access refused by policy (recorded as `access_denied`).
    #[error("access denied: {}", deny_text(*.reason))]
    AccessDenied {
        /// Why.
        reason: DenyReason,
    },
    /// A field that the credential's type does not have, or that is not set.
    #[error("field {field:?}: {reason}")]
    Field {
        /// The field.
        field: String,
        /// Why.
        reason: &'static str,
    },
    /// The stored ciphertext of this credential did not open: it was altered, moved from
    /// another row or tenant, or its data key is gone. Only this credential is affected.
    #[error("credential {credential} is corrupt: its sealed data does not open")]
    Corrupt {
        /// The credential.
        credential: String,
    },
    /// A client-sealed envelope was refused. The reason says only what its clear header shows
    /// (not an envelope; a data key that is not this tenant's active key) or that it does not
    /// open (another context, or altered bytes: these two are not told apart, so the store is
    /// no decryption oracle).
    #[error("the sealed credential was refused: {}", .reason.text())]
    SealedRejected {
        /// Why.
        reason: SealRejection,
    },
    /// An attachment ([`Scope::open_attachment`](crate::Scope::open_attachment)) does not
    /// open: sealed for another tenant, credential or name, altered, or under a data key
    /// retired since. Which of these is not told.
    #[error("attachment {name:?} does not open here")]
    AttachmentDoesNotOpen {
        /// The attachment's name.
        name: String,
    },
    /// The audit sink refused the event; the operation was not performed and nothing changed.
    #[error("audit refused ({0}); the operation was not performed")]
    Audit(String),
    /// Another process held the vault's write lock (its database or its audit log) past the
    /// lock timeout (`VaultOptions::lock_timeout`); the operation was not performed and
    /// nothing changed. Retrying later is safe.
    #[error("the vault's {resource} is busy: another process held its lock past the timeout; nothing was changed")]
    Busy {
        /// `database` or `audit log`.
        resource: &'static str,
    },
    /// The storage backend failed.
    #[error(transparent)]
    Storage(StorageError),
    /// The master key provider failed (unavailable, or a wrapped key did not unwrap).
    #[error("master key: {0}")]
    MasterKey(#[from] credvault_envelope::ProviderError),
    /// The tenant's data key reached its usage limit; rotate it.
    #[error("the tenant's data key reached its usage limit; rotate the tenant key")]
    KeyExhausted,
    /// A TOTP operation on a credential without an authenticator key, or with a bad one.
    #[error("totp: {reason}")]
    Totp {
        /// Why.
        reason: String,
    },
    /// The tenant accepts only credentials sealed by the client (`create_sealed`): a plaintext
    /// create, or an update carrying secret values, is refused (recorded as `access_denied`).
    #[error("this tenant accepts only client-sealed secrets (create_sealed); nothing was stored")]
    ClientSealedOnly,
    /// Too many wrong one-time codes for this credential: verification is refused, without
    /// looking at the code, until the lock-out ends (recorded as `access_denied`, reason
    /// `throttled`).
    #[error("too many wrong codes for this credential; try again in {retry_after_secs} s")]
    Throttled {
        /// Seconds until verification is accepted again.
        retry_after_secs: u64,
    },
    /// The operation is not supported here (no tester for a test kind, for instance).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The system random source failed.
    #[error("the system random source failed")]
    Random,
    /// The vault's audit log refused to open or to write (its message names the file).
    #[error(transparent)]
    AuditLog(credvault_audit::LogError),
    /// Vault files (key file, directory) could not be used.
    #[error("{what} {path}: {reason}")]
    Vault {
        /// What file.
        what: &'static str,
        /// Its path.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Why a client-sealed credential was refused ([`StoreError::SealedRejected`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealRejection {
    /// The bytes are not a credvault envelope.
    NotAnEnvelope,
    /// Sealed under a data key that is not this tenant's active key: another tenant's key, a
    /// retired one, or a key from another vault (fetch it again with `client_data_key`).
    WrongKey,
    /// Does not open under the key and the credential's context (tenant, credential id,
    /// environment, type): sealed for another credential or environment, or altered. Build
    /// the envelope with `SealedCredential::seal`, which uses the exact context.
    DoesNotOpen,
}

impl SealRejection {
    fn text(self) -> &'static str {
        match self {
            Self::NotAnEnvelope => "it is not a credvault envelope",
            Self::WrongKey => "it is sealed under a data key that is not this tenant's active key",
            Self::DoesNotOpen => {
                "it does not open under the tenant's key with this credential's context (tenant, id, environment, type), or it was altered"
            }
        }
    }
}

fn deny_text(r: DenyReason) -> &'static str {
    match r {
        DenyReason::Inactive => "the credential is inactive",
        DenyReason::Expired => "the credential has expired",
        DenyReason::WrongTenant => "the credential belongs to another tenant",
        DenyReason::UnknownTenant => "unknown tenant",
        DenyReason::UnknownCredential => "no such credential",
        DenyReason::Forbidden => "forbidden",
        DenyReason::Throttled => "too many wrong codes",
        _ => "refused",
    }
}

impl From<crate::storage::HookError> for StoreError {
    fn from(e: crate::storage::HookError) -> Self {
        match e {
            crate::storage::HookError::Busy => Self::Busy {
                resource: "audit log",
            },
            other => Self::Audit(other.to_string()),
        }
    }
}

impl From<StorageError> for StoreError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Hook(h) => h.into(),
            StorageError::Busy { resource } => Self::Busy { resource },
            StorageError::NameTaken { name, environment } => Self::NameTaken { name, environment },
            StorageError::VersionConflict { expected, found } => {
                Self::VersionConflict { expected, found }
            }
            StorageError::TenantExists { tenant } => Self::TenantExists { tenant },
            other => Self::Storage(other),
        }
    }
}

impl From<crate::ids::IdError> for StoreError {
    fn from(e: crate::ids::IdError) -> Self {
        match e {
            crate::ids::IdError::Invalid { what, reason } => Self::Invalid {
                what,
                reason: reason.into(),
            },
            crate::ids::IdError::Random => Self::Random,
        }
    }
}
