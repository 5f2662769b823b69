//! Envelope formats v1 and v2: one secret sealed under one data key.
//!
//! ```text
//! offset  size  field
//! 0       1     version       = 0x02 (0x01 for v1)
//! 1       1     suite id      = 0x01 (AES-256-GCM, random 96-bit nonce)
//! 2       16    data key id
//! 18      12    nonce
//! 30      n     ciphertext    (n = plaintext length)
//! 30+n    16    tag
//! ```
//!
//! The two versions share this layout and differ only in the associated data:
//! - v1: the header, zero-padded to 32 bytes ‖ the context's canonical encoding;
//! - v2 (written since 0.2): `SHA-256(domain ‖ canonical encoding)`, 32 bytes computed once per
//!   context object ([`EncryptionContext::v2_digest`]). The domain names the version and the
//!   suite; the key id is bound by the key itself (a tag verifies only under the data key that
//!   made it, and the opener refuses a header naming another key before any decryption).
//!
//! Every v1 envelope keeps opening. The full specification, with frozen vectors for both, is in
//! `docs/formats.md`.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use zeroize::Zeroizing;

use crate::aead::{AeadKey, Backend, NONCE_LEN, TAG_LEN};
use crate::context::EncryptionContext;
use crate::error::{DecryptError, FormatError, OpenError, ResealError, SealError};
use crate::key::{DataKey, KeyId, Plaintext, KEY_ID_LEN};
use crate::nonce;

/// The envelope format version this library writes.
pub const ENVELOPE_VERSION: u8 = 2;
/// The first envelope format version, still opened (and written only by the vector hook
/// [`hazmat::seal_envelope_v1_with_nonce`](crate::hazmat::seal_envelope_v1_with_nonce)).
pub const ENVELOPE_VERSION_V1: u8 = 1;
/// Bytes of the authenticated header (version, suite, key id).
pub const HEADER_LEN: usize = 2 + KEY_ID_LEN;
/// Bytes before the ciphertext (header and nonce): the prefix to reserve for
/// [`SealingKey::seal_in_place`].
pub const PREFIX_LEN: usize = HEADER_LEN + NONCE_LEN;
/// Bytes an envelope adds to its plaintext.
pub const OVERHEAD: usize = PREFIX_LEN + TAG_LEN;
/// Largest plaintext one envelope holds (64 MiB).
pub const MAX_PLAINTEXT_LEN: usize = 64 << 20;
/// Largest envelope the parser accepts.
pub const MAX_ENVELOPE_LEN: usize = MAX_PLAINTEXT_LEN + OVERHEAD;

/// Largest number of messages one data key may seal with random 96-bit nonces
/// (NIST SP 800-38D §8.3): 2^32.
pub const MAX_SEALS_PER_KEY: u64 = 1 << 32;

/// An algorithm suite: what the suite id byte of an envelope means.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Suite {
    /// AES-256-GCM with a random 96-bit nonce and a 128-bit tag. Suite id 1.
    Aes256GcmRandomNonce,
}

impl Suite {
    /// The id byte.
    pub const fn id(self) -> u8 {
        match self {
            Suite::Aes256GcmRandomNonce => 1,
        }
    }

    /// The suite for an id byte.
    pub fn from_id(id: u8) -> Result<Self, FormatError> {
        match id {
            1 => Ok(Suite::Aes256GcmRandomNonce),
            suite => Err(FormatError::UnknownSuite {
                what: "envelope",
                suite,
            }),
        }
    }
}

/// The public part of an envelope, read without any key: lets a store pick the data key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeHeader {
    version: u8,
    suite: Suite,
    key_id: KeyId,
    nonce: [u8; NONCE_LEN],
    plaintext_len: usize,
}

impl EnvelopeHeader {
    /// Parses and checks the structure of `envelope` (length limits, version, suite). Does no
    /// cryptography: a header that parses may still fail to open.
    pub fn parse(envelope: &[u8]) -> Result<Self, FormatError> {
        if envelope.len() < OVERHEAD {
            return Err(FormatError::TooShort {
                what: "envelope",
                len: envelope.len(),
                min: OVERHEAD,
            });
        }
        if envelope.len() > MAX_ENVELOPE_LEN {
            return Err(FormatError::TooLong {
                what: "envelope",
                len: envelope.len(),
                max: MAX_ENVELOPE_LEN,
            });
        }
        let version = envelope[0];
        if version != ENVELOPE_VERSION && version != ENVELOPE_VERSION_V1 {
            return Err(FormatError::UnsupportedVersion {
                what: "envelope",
                version,
            });
        }
        let suite = Suite::from_id(envelope[1])?;
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&envelope[2..HEADER_LEN]);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&envelope[HEADER_LEN..PREFIX_LEN]);
        Ok(Self {
            version,
            suite,
            key_id: KeyId::from_bytes(id),
            nonce,
            plaintext_len: envelope.len() - OVERHEAD,
        })
    }

    /// Format version.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// Algorithm suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// The data key that sealed it.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The nonce.
    pub fn nonce(&self) -> &[u8; NONCE_LEN] {
        &self.nonce
    }

    /// Length of the plaintext inside.
    pub fn plaintext_len(&self) -> usize {
        self.plaintext_len
    }
}

impl fmt::Debug for EnvelopeHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvelopeHeader")
            .field("version", &self.version)
            .field("suite", &self.suite)
            .field("key_id", &self.key_id)
            .field("plaintext_len", &self.plaintext_len)
            .finish_non_exhaustive()
    }
}

fn header_bytes(version: u8, suite: Suite, key_id: KeyId) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0] = version;
    h[1] = suite.id();
    h[2..].copy_from_slice(key_id.as_bytes());
    h
}

/// Length of v1's associated data's first part: the header, zero-padded to two 16-byte blocks.
const AAD_PREFIX_LEN: usize = 32;

fn aad_prefix_v1(suite: Suite, key_id: KeyId) -> [u8; AAD_PREFIX_LEN] {
    let mut p = [0u8; AAD_PREFIX_LEN];
    p[..HEADER_LEN].copy_from_slice(&header_bytes(ENVELOPE_VERSION_V1, suite, key_id));
    p
}

/// A 16-byte aligned scratch buffer for the associated data.
#[repr(align(16))]
struct AadBuf([u8; 256]);

/// Calls `f` with v1's associated data: header ‖ zero padding to 32 bytes ‖ canonical context.
///
/// The buffer is assembled with aligned 16-byte block copies, matching how GHASH reads it back
/// (unaligned byte copies cost a store-forwarding stall per block; see docs/PERFORMANCE.md).
fn with_aad<R>(
    prefix: &[u8; AAD_PREFIX_LEN],
    ctx: &EncryptionContext,
    f: impl FnOnce(&[u8]) -> R,
) -> R {
    let padded = ctx.padded_bytes();
    let len = AAD_PREFIX_LEN + ctx.canonical_bytes().len();
    let blocks = prefix.chunks_exact(16).chain(padded.chunks_exact(16));
    if AAD_PREFIX_LEN + padded.len() <= 256 {
        let mut buf = AadBuf([0u8; 256]);
        for (d, s) in buf.0.chunks_exact_mut(16).zip(blocks) {
            d.copy_from_slice(s);
        }
        f(&buf.0[..len])
    } else {
        let mut v = Vec::with_capacity(AAD_PREFIX_LEN + padded.len());
        blocks.for_each(|b| v.extend_from_slice(b));
        f(&v[..len])
    }
}

/// When a [`SealingKey`] should ask for rotation. The hard limit,
/// [`MAX_SEALS_PER_KEY`], is not configurable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsageLimits {
    rotate_after: u64,
}

impl UsageLimits {
    /// Default rotation threshold: ⌊0.9 × 2^32⌋ messages.
    pub const DEFAULT_ROTATE_AFTER: u64 =
        MAX_SEALS_PER_KEY / 10 * 9 + (MAX_SEALS_PER_KEY % 10) * 9 / 10;

    /// Ask for rotation once `n` messages were sealed (capped at the hard limit).
    pub const fn rotate_after(n: u64) -> Self {
        Self {
            rotate_after: if n > MAX_SEALS_PER_KEY {
                MAX_SEALS_PER_KEY
            } else {
                n
            },
        }
    }

    /// The rotation threshold.
    pub const fn threshold(&self) -> u64 {
        self.rotate_after
    }
}

impl Default for UsageLimits {
    fn default() -> Self {
        Self::rotate_after(Self::DEFAULT_ROTATE_AFTER)
    }
}

/// A data key ready to open and verify envelopes (the decrypt-only role of an old key).
pub struct OpeningKey {
    id: KeyId,
    aead: AeadKey,
    /// The v1 header for this key (version 1, suite 1, this key id), padded: the constant
    /// first part of v1's associated data.
    aad_prefix: [u8; AAD_PREFIX_LEN],
    /// The header of every envelope this key seals (version 2, suite 1, this key id).
    header: [u8; HEADER_LEN],
}

impl OpeningKey {
    /// Expands `key` on the default backend.
    pub fn new(key: &DataKey) -> Self {
        Self::with_backend(key, Backend::default())
    }

    /// Expands `key` on a chosen backend.
    pub fn with_backend(key: &DataKey, backend: Backend) -> Self {
        let aead = match AeadKey::new(backend, key.expose_secret()) {
            Ok(k) => k,
            // Every backend supports 32-byte keys, the only size a DataKey has.
            Err(_) => unreachable!("AES-256 is supported by every backend"),
        };
        Self {
            id: key.id(),
            aead,
            aad_prefix: aad_prefix_v1(Suite::Aes256GcmRandomNonce, key.id()),
            header: header_bytes(ENVELOPE_VERSION, Suite::Aes256GcmRandomNonce, key.id()),
        }
    }

    /// The data key's id.
    pub fn key_id(&self) -> KeyId {
        self.id
    }

    /// Parses the header and checks that it names this key. Afterwards the envelope's header
    /// bytes equal `self.header` (v2) or `self.aad_prefix[..HEADER_LEN]` (v1): versions 1 and
    /// 2 with suite 1 are the only ones `parse` accepts, so callers authenticate with the
    /// precomputed prefix ([`Self::authenticate`]).
    fn check(&self, envelope: &[u8]) -> Result<EnvelopeHeader, OpenError> {
        let header = EnvelopeHeader::parse(envelope)?;
        if header.key_id != self.id {
            return Err(OpenError::WrongKey {
                envelope: header.key_id,
                key: self.id,
            });
        }
        Ok(header)
    }

    /// Calls `f` with the associated data of an envelope of `version` (1 or 2) under `ctx`:
    /// the one place that decides it, for sealing and opening alike.
    fn authenticate<R>(
        &self,
        version: u8,
        ctx: &EncryptionContext,
        f: impl FnOnce(&[u8]) -> R,
    ) -> R {
        if version == ENVELOPE_VERSION_V1 {
            with_aad(&self.aad_prefix, ctx, f)
        } else {
            f(ctx.v2_digest())
        }
    }

    /// Opens `envelope` sealed under this key and `ctx`.
    pub fn open(&self, envelope: &[u8], ctx: &EncryptionContext) -> Result<Plaintext, OpenError> {
        let header = self.check(envelope)?;
        self.open_checked(&header, envelope, ctx)
    }

    /// `open` after `check` accepted `header` for `envelope`.
    fn open_checked(
        &self,
        header: &EnvelopeHeader,
        envelope: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<Plaintext, OpenError> {
        // Wrapped in Plaintext at once, so every exit path wipes it.
        let mut out = Plaintext::new(envelope[PREFIX_LEN..].to_vec(), header.plaintext_len);
        let (body, tag) = out.buf_mut().split_at_mut(header.plaintext_len);
        let tag: &[u8; TAG_LEN] = (&*tag).try_into().map_err(|_| DecryptError)?;
        self.authenticate(header.version, ctx, |aad| {
            self.aead.open_in_place(&header.nonce, aad, body, tag)
        })?;
        Ok(out)
    }

    /// Opens `envelope` in place, without allocating, and returns the plaintext inside it.
    ///
    /// On any failure no plaintext is left in `envelope`: the ciphertext region is zeroed.
    /// On success the caller owns plaintext bytes in its own buffer and must wipe them.
    pub fn open_in_place<'a>(
        &self,
        envelope: &'a mut [u8],
        ctx: &EncryptionContext,
    ) -> Result<&'a [u8], OpenError> {
        let header = self.check(envelope)?;
        let (prefix_and_body, tag) = envelope.split_at_mut(PREFIX_LEN + header.plaintext_len);
        let tag: &[u8; TAG_LEN] = (&*tag).try_into().map_err(|_| DecryptError)?;
        let body = &mut prefix_and_body[PREFIX_LEN..];
        self.authenticate(header.version, ctx, |aad| {
            self.aead.open_in_place(&header.nonce, aad, body, tag)
        })?;
        Ok(body)
    }

    /// Checks that `envelope` authenticates under this key and `ctx` without handing out the
    /// plaintext (it is decrypted into a scratch buffer that is wiped). For client-side
    /// encryption: the vault verifies what a client sealed and stores it verbatim.
    pub fn verify(
        &self,
        envelope: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<EnvelopeHeader, OpenError> {
        let header = self.check(envelope)?;
        drop(self.open_checked(&header, envelope, ctx)?);
        Ok(header)
    }
}

impl fmt::Debug for OpeningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpeningKey")
            .field("key_id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A data key ready to seal, counting what it sealed.
///
/// Nonces are random (96 bits); the key refuses to seal more than [`MAX_SEALS_PER_KEY`]
/// messages and reports [`should_rotate`](Self::should_rotate) past its [`UsageLimits`].
/// The count lives in memory: a store persists [`usage`](Self::usage) and restores it with
/// [`with_usage`](Self::with_usage).
pub struct SealingKey {
    opener: OpeningKey,
    sealed: AtomicU64,
    limits: UsageLimits,
}

impl SealingKey {
    /// Expands `key` on the default backend, with a usage count of zero.
    pub fn new(key: &DataKey) -> Self {
        Self::with_backend(key, Backend::default())
    }

    /// Expands `key` on a chosen backend, with a usage count of zero.
    pub fn with_backend(key: &DataKey, backend: Backend) -> Self {
        Self {
            opener: OpeningKey::with_backend(key, backend),
            sealed: AtomicU64::new(0),
            limits: UsageLimits::default(),
        }
    }

    /// Restores a persisted usage count.
    pub fn with_usage(self, sealed: u64) -> Self {
        self.sealed.store(sealed, Ordering::Relaxed);
        self
    }

    /// Sets the rotation threshold.
    pub fn with_limits(mut self, limits: UsageLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Messages sealed (or reserved) so far, including any restored count.
    pub fn usage(&self) -> u64 {
        self.sealed.load(Ordering::Relaxed)
    }

    /// True once usage reached the rotation threshold.
    pub fn should_rotate(&self) -> bool {
        self.usage() >= self.limits.rotate_after
    }

    /// The data key's id.
    pub fn key_id(&self) -> KeyId {
        self.opener.id
    }

    /// The decrypt side of this key.
    pub fn opener(&self) -> &OpeningKey {
        &self.opener
    }

    /// Opens an envelope sealed by this key; see [`OpeningKey::open`].
    pub fn open(&self, envelope: &[u8], ctx: &EncryptionContext) -> Result<Plaintext, OpenError> {
        self.opener.open(envelope, ctx)
    }

    /// Verifies an envelope without revealing it; see [`OpeningKey::verify`].
    pub fn verify(
        &self,
        envelope: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<EnvelopeHeader, OpenError> {
        self.opener.verify(envelope, ctx)
    }

    fn reserve(&self) -> Result<(), SealError> {
        // One atomic add on the hot path; a refused reservation is given back, so `usage`
        // never stays above the limit. (A u64 cannot overflow from concurrent overshoot.)
        let before = self.sealed.fetch_add(1, Ordering::Relaxed);
        if before >= MAX_SEALS_PER_KEY {
            self.sealed.fetch_sub(1, Ordering::Relaxed);
            return Err(SealError::UsageLimitReached {
                key_id: self.opener.id,
                limit: MAX_SEALS_PER_KEY,
            });
        }
        Ok(())
    }

    /// Seals `plaintext` under `ctx` into a new envelope.
    pub fn seal(&self, plaintext: &[u8], ctx: &EncryptionContext) -> Result<Vec<u8>, SealError> {
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(SealError::PlaintextTooLong {
                len: plaintext.len(),
                max: MAX_PLAINTEXT_LEN,
            });
        }
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.resize(PREFIX_LEN, 0);
        out.extend_from_slice(plaintext);
        self.seal_in_place(ctx, &mut out)?;
        Ok(out)
    }

    /// Seals without copying the plaintext: `buffer` holds [`PREFIX_LEN`] reserved bytes
    /// (any value) followed by the plaintext, and becomes the envelope. On error `buffer` is
    /// left as it was.
    pub fn seal_in_place(
        &self,
        ctx: &EncryptionContext,
        buffer: &mut Vec<u8>,
    ) -> Result<(), SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        nonce::fill(&mut nonce)?;
        self.seal_in_place_with_nonce(ctx, buffer, nonce)
    }

    /// The sealing step with a given nonce, writing the current version (v2). Only
    /// [`seal_in_place`](Self::seal_in_place) (random nonce) and the hazmat vector hook call it.
    pub(crate) fn seal_in_place_with_nonce(
        &self,
        ctx: &EncryptionContext,
        buffer: &mut Vec<u8>,
        nonce: [u8; NONCE_LEN],
    ) -> Result<(), SealError> {
        self.seal_version(ctx, buffer, nonce, ENVELOPE_VERSION)
    }

    /// Seals as `version` (1 or 2). Version 1 is written only by the hazmat vector hook.
    pub(crate) fn seal_version(
        &self,
        ctx: &EncryptionContext,
        buffer: &mut Vec<u8>,
        nonce: [u8; NONCE_LEN],
        version: u8,
    ) -> Result<(), SealError> {
        if buffer.len() < PREFIX_LEN {
            return Err(SealError::BufferTooShort {
                len: buffer.len(),
                prefix: PREFIX_LEN,
            });
        }
        let pt_len = buffer.len() - PREFIX_LEN;
        if pt_len > MAX_PLAINTEXT_LEN {
            return Err(SealError::PlaintextTooLong {
                len: pt_len,
                max: MAX_PLAINTEXT_LEN,
            });
        }
        self.reserve()?;
        let body = &mut buffer[PREFIX_LEN..];
        let tag = self.opener.authenticate(version, ctx, |aad| {
            self.opener.aead.seal_in_place(&nonce, aad, body)
        });
        let tag = match tag {
            Ok(t) => t,
            // Unreachable: GCM's per-message limit (~64 GiB) is far above MAX_PLAINTEXT_LEN.
            Err(_) => {
                return Err(SealError::PlaintextTooLong {
                    len: pt_len,
                    max: MAX_PLAINTEXT_LEN,
                })
            }
        };
        let header = if version == ENVELOPE_VERSION_V1 {
            &self.opener.aad_prefix[..HEADER_LEN]
        } else {
            &self.opener.header[..]
        };
        buffer[..HEADER_LEN].copy_from_slice(header);
        buffer[HEADER_LEN..PREFIX_LEN].copy_from_slice(&nonce);
        buffer.extend_from_slice(&tag);
        Ok(())
    }

    /// Re-encrypts an envelope from an old data key to this one, in memory: the plaintext
    /// lives only in a buffer that is wiped before this returns.
    pub fn reseal_from(
        &self,
        old: &OpeningKey,
        envelope: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<Vec<u8>, ResealError> {
        // Capacity for the new envelope up front, so no reallocation leaves plaintext behind.
        let mut buf = Zeroizing::new(Vec::with_capacity(envelope.len()));
        buf.extend_from_slice(envelope);
        let pt = old.open_in_place(&mut buf[..], ctx)?.len();
        buf.truncate(PREFIX_LEN + pt);
        self.seal_in_place(ctx, &mut buf)?;
        // `buf` now holds only the new envelope; take it out of its wiping wrapper.
        Ok(core::mem::take(&mut *buf))
    }
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealingKey")
            .field("key_id", &self.opener.id)
            .field("usage", &self.usage())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}
