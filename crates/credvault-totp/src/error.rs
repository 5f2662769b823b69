//! Errors. None of them ever contains a secret or a code.

/// Why a secret or parameter set was refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OtpError {
    /// No secret was given (empty after removing spaces and dashes).
    #[error("secret is missing")]
    MissingSecret,
    /// The secret is not base32 (RFC 4648 alphabet A–Z, 2–7); the position is of the first bad
    /// character after normalisation, never the character itself.
    #[error("secret is not valid base32 (bad character at position {position})")]
    BadBase32 {
        /// Index of the first offending character.
        position: usize,
    },
    /// The secret is not hex.
    #[error("secret is not valid hex")]
    BadHex,
    /// The secret is longer than [`MAX_SECRET_LEN`](crate::MAX_SECRET_LEN).
    #[error("secret of {len} bytes exceeds the limit of {max}")]
    SecretTooLong {
        /// Length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Unknown hash algorithm name.
    #[error("unknown algorithm {name:?} (expected SHA1, SHA256 or SHA512)")]
    UnknownAlgorithm {
        /// The name given (algorithm names are public).
        name: String,
    },
    /// Digits outside 6..=8.
    #[error("digits must be 6, 7 or 8, got {digits}")]
    DigitsOutOfRange {
        /// The value given.
        digits: u32,
    },
    /// A period of zero (or not a number).
    #[error("period must be a positive number of seconds")]
    BadPeriod,
    /// A HOTP counter that is not a number.
    #[error("counter must be a non-negative integer")]
    BadCounter,
    /// The URI cannot be used.
    #[error("otpauth URI: {reason}")]
    BadUri {
        /// What is wrong (never the secret).
        reason: &'static str,
    },
}

/// Why a submitted code was refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The code does not match any step in the window (or is malformed). Opaque on purpose.
    #[error("invalid code")]
    Invalid,
    /// The code matched, but its step was already used (replay).
    #[error("code already used")]
    Replayed,
    /// The replay guard could not record the use; the code must not be accepted (fail closed).
    #[error("replay guard unavailable: {0}")]
    GuardUnavailable(String),
}
