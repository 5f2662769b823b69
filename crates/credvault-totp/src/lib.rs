#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod extract;
#[doc(hidden)]
pub mod fuzzing;
mod otp;
mod replay;
mod secret;
mod uri;

pub use error::{OtpError, VerifyError};
pub use extract::{extract_code, Extracted, Reason, MAX_MESSAGE_LEN};
pub use otp::{
    Algorithm, Clock, Code, FixedClock, Kind, Otp, Submission, SystemClock, DEFAULT_SKEW,
    STEAM_DIGITS,
};
pub use replay::{GuardError, MemoryReplayGuard, ReplayGuard};
pub use secret::{TotpSecret, MAX_SECRET_LEN, RECOMMENDED_MIN_BITS};
pub use uri::MAX_URI_LEN;
