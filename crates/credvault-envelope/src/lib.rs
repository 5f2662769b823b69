#![doc = include_str!("../README.md")]
//!
//! # Modules
//!
//! - [`EncryptionContext`]: public key/value pairs bound into every ciphertext.
//! - [`DataKey`], [`SealingKey`], [`OpeningKey`]: the per-tenant data key and its roles.
//! - [`MasterKey`], [`LocalKeyring`], [`WrappedKey`]: the master-key joint and the local
//!   provider.
//! - [`hazmat`]: explicit-nonce AES-GCM for test vectors only.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

extern crate alloc;

mod aead;
pub mod context;
mod envelope;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod hazmat;
mod key;
mod keyring;
mod master;
mod nonce;

pub use aead::Backend;
pub use context::EncryptionContext;
pub use envelope::{
    EnvelopeHeader, OpeningKey, SealingKey, Suite, UsageLimits, ENVELOPE_VERSION,
    ENVELOPE_VERSION_V1, HEADER_LEN, MAX_ENVELOPE_LEN, MAX_PLAINTEXT_LEN, MAX_SEALS_PER_KEY,
    OVERHEAD, PREFIX_LEN,
};
pub use error::{
    ContextError, DecryptError, FormatError, OpenError, RandomError, ResealError, SealError,
};
pub use key::{DataKey, KeyId, Plaintext, DATA_KEY_LEN, KEY_ID_LEN};
pub use keyring::{
    KeyringError, LocalKeyring, KEY_TEXT_MAGIC, LOCAL_PROVIDER_ID, MAX_KEY_TEXT_LEN, MAX_VERSIONS,
};
pub use master::{
    generate_data_key, needs_rewrap, MasterKey, MasterKeyRef, ProviderError, WrappedKey,
    MAX_PROVIDER_ID_LEN, MAX_WRAPPED_KEY_LEN, MAX_WRAP_PAYLOAD_LEN, WRAPPED_KEY_VERSION,
};
pub use nonce::reseed_nonce_generator;
