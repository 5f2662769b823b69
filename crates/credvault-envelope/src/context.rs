//! The encryption context: public key/value pairs bound into every ciphertext.
//!
//! A ciphertext sealed for `(tenant=a, credential=1, field=password)` fails to open under any
//! other context, so a row copied to another tenant, credential or field is refused.
//!
//! Canonical encoding (frozen, `docs/formats.md`): entries sorted by key bytes, then
//! `count: u16 BE` followed by, for each entry, `key_len: u16 BE ‖ key ‖ value_len: u16 BE ‖
//! value`. Lengths make the encoding injective: no two contexts encode alike.
//!
//! Envelope v1 authenticates that encoding itself. Envelope v2 authenticates its SHA-256
//! digest under a domain string ([`EncryptionContext::v2_digest`]), computed once per context
//! object, so the AEAD's associated data stays 32 bytes however large the context is.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::error::ContextError;

/// What envelope v2's context digest hashes before the canonical encoding: a domain string
/// naming the format version, a NUL, and the suite id (1, AES-256-GCM).
pub const V2_DIGEST_DOMAIN: &[u8] = b"credvault envelope v2 context\0\x01";

/// Most entries in one context.
pub const MAX_ENTRIES: usize = 64;
/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 128;
/// Longest value, in bytes.
pub const MAX_VALUE_LEN: usize = 1024;
/// Longest canonical encoding, in bytes.
pub const MAX_ENCODED_LEN: usize = 8 * 1024;

/// Public key/value strings (tenant, credential id, field, environment...) authenticated
/// with a ciphertext but not encrypted. Never put a secret in a context.
///
/// ```
/// use credvault_envelope::EncryptionContext;
/// let ctx = EncryptionContext::new()
///     .with("tenant", "acme")?
///     .with("field", "password")?;
/// assert_eq!(ctx.get("tenant"), Some("acme"));
/// # Ok::<(), credvault_envelope::ContextError>(())
/// ```
#[derive(Clone)]
pub struct EncryptionContext {
    entries: BTreeMap<String, String>,
    /// Canonical encoding followed by zeros up to a multiple of 16 bytes, so the AEAD's
    /// associated data can be assembled with aligned 16-byte block copies. Built on first
    /// use (reset by `insert`): a context built entry by entry encodes once, not per entry,
    /// and one only used for envelope v2 (which authenticates the digest) never does.
    encoded: OnceLock<Vec<u8>>,
    /// Length of the canonical encoding (without the padding), kept as entries are added.
    encoded_len: usize,
    /// Envelope v2's digest of the encoding, computed on first use (reset by `insert`).
    digest: OnceLock<[u8; 32]>,
}

impl PartialEq for EncryptionContext {
    /// Equal entries (whether a digest was computed yet does not matter).
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Eq for EncryptionContext {}

impl fmt::Debug for EncryptionContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptionContext")
            .field("entries", &self.entries)
            .finish()
    }
}

impl Default for EncryptionContext {
    fn default() -> Self {
        Self::new()
    }
}

impl EncryptionContext {
    /// An empty context.
    pub fn new() -> Self {
        Self {
            entries: BTreeMap::new(),
            encoded: OnceLock::new(),
            encoded_len: 2,
            digest: OnceLock::new(),
        }
    }

    /// Adds an entry, builder style.
    pub fn with(
        mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Self, ContextError> {
        self.insert(key, value)?;
        Ok(self)
    }

    /// Adds an entry. A key may be set once: setting it again is an error, so a context can
    /// never be silently redirected.
    pub fn insert(
        &mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<(), ContextError> {
        let key = key.into();
        let value = value.into();
        if key.is_empty() {
            return Err(ContextError::EmptyKey);
        }
        if key.len() > MAX_KEY_LEN {
            return Err(ContextError::KeyTooLong {
                len: key.len(),
                max: MAX_KEY_LEN,
            });
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(ContextError::ValueTooLong {
                key,
                len: value.len(),
                max: MAX_VALUE_LEN,
            });
        }
        if self.entries.contains_key(&key) {
            return Err(ContextError::DuplicateKey { key });
        }
        if self.entries.len() >= MAX_ENTRIES {
            return Err(ContextError::TooManyEntries { max: MAX_ENTRIES });
        }
        let new_len = self.encoded_len + 4 + key.len() + value.len();
        if new_len > MAX_ENCODED_LEN {
            return Err(ContextError::TooLarge {
                len: new_len,
                max: MAX_ENCODED_LEN,
            });
        }
        self.entries.insert(key, value);
        self.encoded_len = new_len;
        self.encoded = OnceLock::new();
        self.digest = OnceLock::new();
        Ok(())
    }

    /// The value for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    /// Entries in canonical (sorted) order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The canonical encoding that goes into the associated data.
    pub fn canonical_bytes(&self) -> &[u8] {
        &self.padded_bytes()[..self.encoded_len]
    }

    /// `SHA-256(V2_DIGEST_DOMAIN ‖ canonical encoding)`: what envelope v2 authenticates in
    /// place of the encoding. Computed once per context object, on first use; a context kept
    /// and reused across seals and opens pays for it once.
    pub fn v2_digest(&self) -> &[u8; 32] {
        self.digest.get_or_init(|| {
            // The encoding is streamed into the hash as `encode` would lay it out (one
            // function writes both), so no encoding is built for v2.
            let mut h = Sha256::new();
            h.update(V2_DIGEST_DOMAIN);
            write_canonical(&self.entries, |b| h.update(b));
            h.finalize().into()
        })
    }

    /// The canonical encoding zero-padded to a multiple of 16 bytes.
    pub(crate) fn padded_bytes(&self) -> &[u8] {
        self.encoded.get_or_init(|| {
            let mut out = Vec::with_capacity(self.encoded_len.div_ceil(16) * 16);
            write_canonical(&self.entries, |b| out.extend_from_slice(b));
            debug_assert_eq!(out.len(), self.encoded_len);
            out.resize(out.len().div_ceil(16) * 16, 0);
            out
        })
    }
}

/// The canonical encoding, piece by piece: entry count, then each entry's key length, key,
/// value length and value, lengths as big-endian u16, entries in key order.
fn write_canonical(entries: &BTreeMap<String, String>, mut out: impl FnMut(&[u8])) {
    // Lengths were checked against limits far below u16::MAX on insert.
    out(&(entries.len() as u16).to_be_bytes());
    for (k, v) in entries {
        out(&(k.len() as u16).to_be_bytes());
        out(k.as_bytes());
        out(&(v.len() as u16).to_be_bytes());
        out(v.as_bytes());
    }
}
