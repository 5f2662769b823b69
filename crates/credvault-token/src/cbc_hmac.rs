//! AES-CBC-HMAC-SHA2 as an AEAD (RFC 7518 §5.2: A128CBC-HS256, A192CBC-HS384, A256CBC-HS512).
//!
//! Key `K = MAC_KEY ‖ ENC_KEY` (halves). `E = AES-CBC-PKCS7(ENC_KEY, IV, P)`;
//! `AL` = bit length of the associated data `A` as u64 BE; `T` = the leftmost half of
//! `HMAC(MAC_KEY, A ‖ IV ‖ E ‖ AL)`. The sealed form for storing secrets is `IV ‖ E ‖ T` with a
//! random IV — the "AES-CBC for encryption, HMAC-SHA2 for integrity" layout automation vaults use.

use core::fmt;

use aes::cipher::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Sha384, Sha512};
use zeroize::Zeroizing;

use crate::error::{DecryptError, KeyError};
use crate::etm::{Cipher, EtmKey, MacKey, MAX_MAC_LEN};
use crate::hmac256::HmacSha256Key;
use crate::iv;
use crate::secret::Plaintext;

/// Length of the IV.
pub const IV_LEN: usize = 16;
/// Largest plaintext sealed in one call (64 MiB).
pub const MAX_PLAINTEXT_LEN: usize = 64 << 20;

/// The three RFC 7518 algorithms.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// AES-128-CBC + HMAC-SHA-256, 32-byte key, 16-byte tag.
    A128CbcHs256,
    /// AES-192-CBC + HMAC-SHA-384, 48-byte key, 24-byte tag.
    A192CbcHs384,
    /// AES-256-CBC + HMAC-SHA-512, 64-byte key, 32-byte tag.
    A256CbcHs512,
}

impl Algorithm {
    /// Total key length `K` in bytes.
    pub const fn key_len(self) -> usize {
        match self {
            Algorithm::A128CbcHs256 => 32,
            Algorithm::A192CbcHs384 => 48,
            Algorithm::A256CbcHs512 => 64,
        }
    }

    /// Tag length `T_LEN` in bytes.
    pub const fn tag_len(self) -> usize {
        self.key_len() / 2
    }

    /// The JWE `enc` name.
    pub const fn jwe_name(self) -> &'static str {
        match self {
            Algorithm::A128CbcHs256 => "A128CBC-HS256",
            Algorithm::A192CbcHs384 => "A192CBC-HS384",
            Algorithm::A256CbcHs512 => "A256CBC-HS512",
        }
    }
}

/// An AES-CBC-HMAC-SHA2 key. Not `Clone`, `Debug` redacted, key bytes wiped on drop.
pub struct CbcHmacKey {
    alg: Algorithm,
    etm: EtmKey,
    _raw: Zeroizing<Vec<u8>>,
}

fn bad_len(alg: Algorithm, found: usize) -> KeyError {
    KeyError::Length {
        expected: alg.key_len(),
        found,
    }
}

impl CbcHmacKey {
    /// A key from `K` (MAC key first, then encryption key).
    pub fn new(alg: Algorithm, key: &[u8]) -> Result<Self, KeyError> {
        if key.len() != alg.key_len() {
            return Err(bad_len(alg, key.len()));
        }
        let (mac_key, enc_key) = key.split_at(alg.key_len() / 2);
        let e = |_| bad_len(alg, key.len());
        let (cipher, mac) = match alg {
            Algorithm::A128CbcHs256 => (
                Cipher::A128(aes::Aes128::new_from_slice(enc_key).map_err(e)?),
                MacKey::S256(HmacSha256Key::new(mac_key)),
            ),
            Algorithm::A192CbcHs384 => (
                Cipher::A192(aes::Aes192::new_from_slice(enc_key).map_err(e)?),
                MacKey::S384(<Hmac<Sha384> as Mac>::new_from_slice(mac_key).map_err(e)?),
            ),
            Algorithm::A256CbcHs512 => (
                Cipher::A256(aes::Aes256::new_from_slice(enc_key).map_err(e)?),
                MacKey::S512(<Hmac<Sha512> as Mac>::new_from_slice(mac_key).map_err(e)?),
            ),
        };
        Ok(Self {
            alg,
            etm: EtmKey::new(cipher, mac),
            _raw: Zeroizing::new(key.to_vec()),
        })
    }

    /// A new random key.
    pub fn generate(alg: Algorithm) -> Result<Self, KeyError> {
        let mut k = Zeroizing::new(vec![0u8; alg.key_len()]);
        getrandom::fill(&mut k).map_err(|_| KeyError::Random)?;
        Self::new(alg, &k)
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// Seals with a random IV: returns `IV ‖ E ‖ T`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
        let iv = iv::random_iv().ok_or(KeyError::Random)?;
        Ok(self.seal_with_iv(&iv, aad, plaintext))
    }

    /// Seals with a given IV into `IV ‖ E ‖ T`. The IV must be unpredictable; `hazmat` only.
    pub(crate) fn seal_with_iv(&self, iv: &[u8; IV_LEN], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let padded = (plaintext.len() / 16 + 1) * 16;
        let mut out = Vec::with_capacity(IV_LEN + padded + self.alg.tag_len());
        out.extend_from_slice(iv);
        out.extend_from_slice(plaintext);
        let al = al(aad);
        let mut mac = [0u8; MAX_MAC_LEN];
        // MAC input: A ‖ IV ‖ E ‖ AL.
        self.etm.seal(iv, &mut out, IV_LEN, aad, &al, &mut mac);
        out.extend_from_slice(&mac[..self.alg.tag_len()]);
        out
    }

    /// Opens `IV ‖ E ‖ T`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Plaintext, DecryptError> {
        let t = self.alg.tag_len();
        if sealed.len() < IV_LEN + 16 + t || sealed.len() > MAX_PLAINTEXT_LEN + IV_LEN + 16 + t {
            return Err(DecryptError);
        }
        let (iv_and_e, tag) = sealed.split_at(sealed.len() - t);
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&iv_and_e[..IV_LEN]);
        let mut out = Plaintext::new(iv_and_e.to_vec(), 0..0);
        let n = self
            .etm
            .open(&iv, out.buf_mut(), IV_LEN, aad, &al(aad), tag)
            .ok_or(DecryptError)?;
        out.set_range(IV_LEN..IV_LEN + n);
        Ok(out)
    }
}

/// AL: the bit length of the associated data, u64 big-endian.
fn al(aad: &[u8]) -> [u8; 8] {
    ((aad.len() as u64).wrapping_mul(8)).to_be_bytes()
}

impl fmt::Debug for CbcHmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CbcHmacKey({:?}, [REDACTED])", self.alg)
    }
}
