//! The AES-GCM backends behind one private type: ring (default) and RustCrypto `aes-gcm`.
//!
//! Both produce byte-identical output; the test suite runs every case against each.

use crate::error::DecryptError;

/// Length of a GCM nonce, in bytes (96 bits: the only size this crate uses).
pub(crate) const NONCE_LEN: usize = 12;
/// Length of a GCM tag, in bytes.
pub(crate) const TAG_LEN: usize = 16;

/// An AES-GCM implementation.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// `ring`'s AES-GCM (feature `ring`, on by default).
    #[cfg(feature = "ring")]
    Ring,
    /// RustCrypto's `aes-gcm` (feature `rustcrypto`).
    #[cfg(feature = "rustcrypto")]
    RustCrypto,
}

#[cfg(not(any(feature = "ring", feature = "rustcrypto")))]
compile_error!(
    "credvault-envelope needs at least one AEAD backend: enable feature `ring` or `rustcrypto`"
);

impl Default for Backend {
    /// ring when compiled in, else RustCrypto.
    fn default() -> Self {
        #[cfg(feature = "ring")]
        {
            Backend::Ring
        }
        #[cfg(not(feature = "ring"))]
        {
            Backend::RustCrypto
        }
    }
}

impl Backend {
    /// Every backend compiled into this build.
    pub const ALL: &'static [Backend] = &[
        #[cfg(feature = "ring")]
        Backend::Ring,
        #[cfg(feature = "rustcrypto")]
        Backend::RustCrypto,
    ];

    /// A short name for reports.
    pub const fn name(self) -> &'static str {
        match self {
            #[cfg(feature = "ring")]
            Backend::Ring => "ring",
            #[cfg(feature = "rustcrypto")]
            Backend::RustCrypto => "rustcrypto",
        }
    }
}

/// An expanded AES-GCM key on one backend. Key schedules of the RustCrypto backend are wiped
/// on drop (`aes` `zeroize` feature); ring does not wipe its key schedule (see threat model).
// Variants differ in size (ring ~550 B, RustCrypto AES-128 less); keys are built once per
// tenant and used on every seal, so they stay inline rather than behind a pointer.
#[allow(clippy::large_enum_variant)]
pub(crate) enum AeadKey {
    #[cfg(feature = "ring")]
    Ring(ring::aead::LessSafeKey),
    #[cfg(feature = "rustcrypto")]
    Rc128(aes_gcm::Aes128Gcm),
    #[cfg(feature = "rustcrypto")]
    Rc192(aes_gcm::AesGcm<aes::Aes192, aes_gcm::aead::consts::U12>),
    #[cfg(feature = "rustcrypto")]
    Rc256(aes_gcm::Aes256Gcm),
}

/// The key length is not one this backend supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UnsupportedKeyLen;

impl AeadKey {
    /// Expands a key of 16, 24 or 32 bytes (ring has no AES-192).
    pub(crate) fn new(backend: Backend, key: &[u8]) -> Result<Self, UnsupportedKeyLen> {
        match backend {
            #[cfg(feature = "ring")]
            Backend::Ring => {
                use ring::aead;
                let alg = match key.len() {
                    16 => &aead::AES_128_GCM,
                    32 => &aead::AES_256_GCM,
                    _ => return Err(UnsupportedKeyLen),
                };
                let unbound = aead::UnboundKey::new(alg, key).map_err(|_| UnsupportedKeyLen)?;
                Ok(AeadKey::Ring(aead::LessSafeKey::new(unbound)))
            }
            #[cfg(feature = "rustcrypto")]
            Backend::RustCrypto => {
                use aes_gcm::KeyInit;
                let bad = |_| UnsupportedKeyLen;
                Ok(match key.len() {
                    16 => AeadKey::Rc128(aes_gcm::Aes128Gcm::new_from_slice(key).map_err(bad)?),
                    24 => AeadKey::Rc192(aes_gcm::AesGcm::new_from_slice(key).map_err(bad)?),
                    32 => AeadKey::Rc256(aes_gcm::Aes256Gcm::new_from_slice(key).map_err(bad)?),
                    _ => return Err(UnsupportedKeyLen),
                })
            }
        }
    }

    /// Encrypts `in_out` in place and returns the tag. Fails only for inputs beyond GCM's
    /// length limit, which callers rule out first.
    pub(crate) fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], DecryptError> {
        match self {
            #[cfg(feature = "ring")]
            AeadKey::Ring(k) => {
                let n = ring::aead::Nonce::assume_unique_for_key(*nonce);
                let tag = k
                    .seal_in_place_separate_tag(n, ring::aead::Aad::from(aad), in_out)
                    .map_err(|_| DecryptError)?;
                let mut out = [0u8; TAG_LEN];
                out.copy_from_slice(tag.as_ref());
                Ok(out)
            }
            #[cfg(feature = "rustcrypto")]
            AeadKey::Rc128(k) => rc_seal(k, nonce, aad, in_out),
            #[cfg(feature = "rustcrypto")]
            AeadKey::Rc192(k) => rc_seal(k, nonce, aad, in_out),
            #[cfg(feature = "rustcrypto")]
            AeadKey::Rc256(k) => rc_seal(k, nonce, aad, in_out),
        }
    }

    /// Decrypts `in_out` in place if `tag` authenticates it. On failure the contents of
    /// `in_out` are overwritten with zeros, so no unauthenticated plaintext remains.
    pub(crate) fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), DecryptError> {
        let r = match self {
            #[cfg(feature = "ring")]
            AeadKey::Ring(k) => {
                let n = ring::aead::Nonce::assume_unique_for_key(*nonce);
                k.open_in_place_separate_tag(
                    n,
                    ring::aead::Aad::from(aad),
                    ring::aead::Tag::from(*tag),
                    in_out,
                    0..,
                )
                .map(|_| ())
                .map_err(|_| DecryptError)
            }
            #[cfg(feature = "rustcrypto")]
            AeadKey::Rc128(k) => rc_open(k, nonce, aad, in_out, tag),
            #[cfg(feature = "rustcrypto")]
            AeadKey::Rc192(k) => rc_open(k, nonce, aad, in_out, tag),
            #[cfg(feature = "rustcrypto")]
            AeadKey::Rc256(k) => rc_open(k, nonce, aad, in_out, tag),
        };
        if r.is_err() {
            crate::key::wipe(in_out);
        }
        r
    }
}

/// RustCrypto AES-GCM of any key size with a 96-bit nonce and 128-bit tag.
#[cfg(feature = "rustcrypto")]
trait RcAead:
    aes_gcm::aead::AeadInPlace<
    NonceSize = aes_gcm::aead::consts::U12,
    TagSize = aes_gcm::aead::consts::U16,
>
{
}
#[cfg(feature = "rustcrypto")]
impl<T> RcAead for T where
    T: aes_gcm::aead::AeadInPlace<
        NonceSize = aes_gcm::aead::consts::U12,
        TagSize = aes_gcm::aead::consts::U16,
    >
{
}

#[cfg(feature = "rustcrypto")]
fn rc_seal<A: RcAead>(
    k: &A,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    in_out: &mut [u8],
) -> Result<[u8; TAG_LEN], DecryptError> {
    let tag = k
        .encrypt_in_place_detached(aes_gcm::Nonce::from_slice(nonce), aad, in_out)
        .map_err(|_| DecryptError)?;
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(tag.as_slice());
    Ok(out)
}

#[cfg(feature = "rustcrypto")]
fn rc_open<A: RcAead>(
    k: &A,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    in_out: &mut [u8],
    tag: &[u8; TAG_LEN],
) -> Result<(), DecryptError> {
    k.decrypt_in_place_detached(
        aes_gcm::Nonce::from_slice(nonce),
        aad,
        in_out,
        aes_gcm::Tag::from_slice(tag),
    )
    .map_err(|_| DecryptError)
}
