#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod b64;
mod cbc_hmac;
mod error;
mod etm;
mod fernet;
#[doc(hidden)]
pub mod fuzzing;
pub mod hazmat;
mod hmac256;
mod iv;
mod secret;

pub use cbc_hmac::{
    Algorithm, CbcHmacKey, IV_LEN, MAX_PLAINTEXT_LEN as CBC_HMAC_MAX_PLAINTEXT_LEN,
};
pub use error::{DecryptError, InvalidToken, KeyError};
pub use fernet::{
    unix_now, Fernet, MultiFernet, RotationReport, MAX_CLOCK_SKEW, MAX_PLAINTEXT_LEN, MAX_TOKEN_LEN,
};
pub use hmac256::{HmacSha256, HmacSha256Key, OUT as HMAC_SHA256_LEN};
pub use iv::reseed_iv_generator;
pub use secret::Plaintext;
