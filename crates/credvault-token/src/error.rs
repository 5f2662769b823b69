//! Errors: opaque for every cryptographic failure, detailed for malformed keys.

/// A Fernet token was rejected. Opaque by design: bad encoding, wrong key, tampering, expiry,
/// a timestamp too far in the future and bad padding all look the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid or expired token")]
pub struct InvalidToken;

/// An AES-CBC-HMAC ciphertext did not authenticate or decrypt. Opaque by design.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("decryption failed")]
pub struct DecryptError;

/// A key could not be used. Never contains key material.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key text is not base64 (Fernet keys are URL-safe base64 of 32 bytes).
    #[error("key is not valid base64")]
    Base64,
    /// The key has the wrong length.
    #[error("key must be {expected} bytes, got {found}")]
    Length {
        /// Required length in bytes.
        expected: usize,
        /// Length found.
        found: usize,
    },
    /// A MultiFernet needs at least one key.
    #[error("at least one key is required")]
    NoKeys,
    /// The operating system's random generator failed.
    #[error("the operating system random number generator is unavailable")]
    Random,
}
