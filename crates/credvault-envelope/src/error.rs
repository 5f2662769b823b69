//! Error types.
//!
//! Two kinds, on purpose (see `docs/decisions/0002-errors.md`): failures of the cryptography
//! itself ([`DecryptError`], and the opaque variants that wrap it) say nothing about *why*, so
//! they cannot serve as an oracle; failures of parsing, configuration and limits are detailed
//! `#[non_exhaustive]` enums that name the field and the reason, never a secret value.

use crate::KeyId;

/// The one error for "this did not decrypt / authenticate".
///
/// Returned for a wrong key, a wrong encryption context, a flipped bit or a truncated tag
/// alike. It deliberately carries no detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("decryption failed")]
pub struct DecryptError;

/// The operating system's random number generator failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the operating system random number generator is unavailable")]
pub struct RandomError;

/// A byte string (envelope, wrapped key, key text) is not well formed.
///
/// These describe public structure only; no variant carries secret bytes.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Shorter than the smallest valid encoding.
    #[error("{what}: {len} bytes is shorter than the minimum of {min}")]
    TooShort {
        /// What was being parsed.
        what: &'static str,
        /// Length received.
        len: usize,
        /// Minimum length.
        min: usize,
    },
    /// Longer than the size limit.
    #[error("{what}: {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// What was being parsed.
        what: &'static str,
        /// Length received.
        len: usize,
        /// Maximum length.
        max: usize,
    },
    /// The version byte names a format this library does not know.
    #[error("{what}: unsupported format version {version}")]
    UnsupportedVersion {
        /// What was being parsed.
        what: &'static str,
        /// The version byte found.
        version: u8,
    },
    /// The suite or algorithm id is unknown.
    #[error("{what}: unknown algorithm suite {suite}")]
    UnknownSuite {
        /// What was being parsed.
        what: &'static str,
        /// The suite id found.
        suite: u8,
    },
    /// Any other structural problem.
    #[error("{what}: {reason}")]
    Malformed {
        /// What was being parsed.
        what: &'static str,
        /// Why it is malformed.
        reason: &'static str,
    },
}

/// Why an [`EncryptionContext`](crate::EncryptionContext) entry was refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    /// The key is empty.
    #[error("encryption context: keys must not be empty")]
    EmptyKey,
    /// The key is longer than [`MAX_KEY_LEN`](crate::context::MAX_KEY_LEN).
    #[error("encryption context: key of {len} bytes exceeds the limit of {max}")]
    KeyTooLong {
        /// Length of the key.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The value for `key` is longer than [`MAX_VALUE_LEN`](crate::context::MAX_VALUE_LEN).
    #[error("encryption context: value for key {key:?} is {len} bytes, over the limit of {max}")]
    ValueTooLong {
        /// The key (context keys are public names, never secrets).
        key: String,
        /// Length of the value.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// More entries than [`MAX_ENTRIES`](crate::context::MAX_ENTRIES).
    #[error("encryption context: more than {max} entries")]
    TooManyEntries {
        /// Limit.
        max: usize,
    },
    /// The canonical encoding would exceed [`MAX_ENCODED_LEN`](crate::context::MAX_ENCODED_LEN).
    #[error("encryption context: encoded size {len} exceeds the limit of {max}")]
    TooLarge {
        /// Encoded length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The key is already present with a different value.
    #[error("encryption context: key {key:?} is already set")]
    DuplicateKey {
        /// The key.
        key: String,
    },
}

/// Sealing refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The data key has sealed the maximum number of messages allowed for random 96-bit
    /// nonces (NIST SP 800-38D, 2^32). Rotate the data key.
    #[error("data key {key_id} reached its usage limit of {limit} messages; rotate it")]
    UsageLimitReached {
        /// The exhausted key.
        key_id: KeyId,
        /// The limit.
        limit: u64,
    },
    /// The plaintext exceeds [`MAX_PLAINTEXT_LEN`](crate::MAX_PLAINTEXT_LEN).
    #[error("plaintext of {len} bytes exceeds the limit of {max}")]
    PlaintextTooLong {
        /// Length received.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The in-place buffer does not start with the reserved prefix.
    #[error("in-place buffer of {len} bytes is shorter than the {prefix}-byte reserved prefix")]
    BufferTooShort {
        /// Length received.
        len: usize,
        /// Required prefix.
        prefix: usize,
    },
    /// No nonce could be generated.
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// Opening (or verifying) an envelope failed.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The bytes are not an envelope this library can read; nothing was decrypted.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The envelope names another data key (key ids are public), so a store picked the wrong
    /// key; nothing was decrypted.
    #[error("envelope was sealed under data key {envelope}, not {key}")]
    WrongKey {
        /// Key id in the envelope header.
        envelope: KeyId,
        /// Key id of the key used.
        key: KeyId,
    },
    /// Authentication failed. Opaque by design.
    #[error(transparent)]
    Decrypt(#[from] DecryptError),
}

/// Re-sealing an envelope from one data key to another failed.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResealError {
    /// The old envelope did not open.
    #[error("re-seal: {0}")]
    Open(#[from] OpenError),
    /// The new key refused to seal.
    #[error("re-seal: {0}")]
    Seal(#[from] SealError),
}
