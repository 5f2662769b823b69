//! **Hazardous:** raw AES-GCM with a caller-chosen nonce.
//!
//! For known-answer test vectors and interoperability checks only. Reusing a nonce under one
//! key destroys both confidentiality and authenticity; use [`SealingKey`](crate::SealingKey)
//! for anything real. Only 96-bit nonces and 128-bit tags are supported; other sizes are
//! rejected before any cryptography runs.

use crate::aead::{AeadKey, Backend, NONCE_LEN, TAG_LEN};
use crate::error::DecryptError;

/// Why a raw AES-GCM call was refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HazmatError {
    /// The backend has no AES variant with this key length (ring has no AES-192).
    #[error("unsupported AES key length: {0} bytes on this backend")]
    UnsupportedKeyLength(usize),
    /// Only 12-byte nonces are supported.
    #[error("unsupported nonce length: {0} bytes (only 12)")]
    UnsupportedNonceLength(usize),
    /// The input is shorter than a tag.
    #[error("ciphertext shorter than the 16-byte tag")]
    TooShort,
    /// Authentication failed (opaque).
    #[error(transparent)]
    Decrypt(#[from] DecryptError),
}

/// AES-GCM (128, 192 or 256-bit key) with explicit nonces.
pub struct RawAesGcm {
    key: AeadKey,
}

impl RawAesGcm {
    /// Expands `key` on `backend`.
    pub fn new(backend: Backend, key: &[u8]) -> Result<Self, HazmatError> {
        AeadKey::new(backend, key)
            .map(|key| Self { key })
            .map_err(|_| HazmatError::UnsupportedKeyLength(key.len()))
    }

    fn nonce(nonce: &[u8]) -> Result<[u8; NONCE_LEN], HazmatError> {
        nonce
            .try_into()
            .map_err(|_| HazmatError::UnsupportedNonceLength(nonce.len()))
    }

    /// Returns ciphertext ‖ tag.
    pub fn seal(&self, nonce: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, HazmatError> {
        let nonce = Self::nonce(nonce)?;
        let mut out = Vec::with_capacity(plaintext.len() + TAG_LEN);
        out.extend_from_slice(plaintext);
        let tag = self.key.seal_in_place(&nonce, aad, &mut out)?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Opens ciphertext ‖ tag.
    pub fn open(
        &self,
        nonce: &[u8],
        aad: &[u8],
        ciphertext_and_tag: &[u8],
    ) -> Result<Vec<u8>, HazmatError> {
        let nonce = Self::nonce(nonce)?;
        let split = ciphertext_and_tag
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(HazmatError::TooShort)?;
        let (ct, tag) = ciphertext_and_tag.split_at(split);
        let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| HazmatError::TooShort)?;
        let mut out = ct.to_vec();
        self.key.open_in_place(&nonce, aad, &mut out, &tag)?;
        Ok(out)
    }
}

impl core::fmt::Debug for RawAesGcm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("RawAesGcm([REDACTED])")
    }
}

/// Seals an envelope (the current version, v2) with a caller-chosen nonce, to check the
/// frozen format vectors in `docs/formats.md`. Never use a nonce twice under one key.
pub fn seal_envelope_with_nonce(
    key: &crate::SealingKey,
    nonce: &[u8; NONCE_LEN],
    plaintext: &[u8],
    ctx: &crate::EncryptionContext,
) -> Result<Vec<u8>, crate::SealError> {
    seal_version(key, nonce, plaintext, ctx, crate::ENVELOPE_VERSION)
}

/// Seals an envelope in the **v1** format (header and context encoding as associated data)
/// with a caller-chosen nonce, to check v1's frozen vectors. The library writes v2; v1
/// envelopes keep opening.
pub fn seal_envelope_v1_with_nonce(
    key: &crate::SealingKey,
    nonce: &[u8; NONCE_LEN],
    plaintext: &[u8],
    ctx: &crate::EncryptionContext,
) -> Result<Vec<u8>, crate::SealError> {
    seal_version(key, nonce, plaintext, ctx, crate::ENVELOPE_VERSION_V1)
}

fn seal_version(
    key: &crate::SealingKey,
    nonce: &[u8; NONCE_LEN],
    plaintext: &[u8],
    ctx: &crate::EncryptionContext,
    version: u8,
) -> Result<Vec<u8>, crate::SealError> {
    let mut buf = Vec::with_capacity(crate::OVERHEAD + plaintext.len());
    buf.resize(crate::PREFIX_LEN, 0);
    buf.extend_from_slice(plaintext);
    key.seal_version(ctx, &mut buf, *nonce, version)?;
    Ok(buf)
}
