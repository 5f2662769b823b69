//! The private encrypt-then-MAC core shared by Fernet and AES-CBC-HMAC-SHA2: AES-CBC with
//! PKCS#7 padding, HMAC-SHA2 over caller-given parts, constant-time (optionally truncated)
//! tag checks. Not public API.

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, InnerIvInit};
use aes::{Aes128, Aes192, Aes256};
use cbc::cipher::block_padding::Pkcs7;
use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha384, Sha512};

/// An expanded AES key (schedules are wiped on drop by the `aes` crate's `zeroize` feature).
#[derive(Clone)]
pub(crate) enum Cipher {
    A128(Aes128),
    A192(Aes192),
    A256(Aes256),
}

/// A pre-keyed HMAC: the inner and outer pads are hashed once, cloned per message.
#[derive(Clone)]
pub(crate) enum MacKey {
    S256(Hmac<Sha256>),
    S384(Hmac<Sha384>),
    S512(Hmac<Sha512>),
}

/// Largest MAC output (SHA-512).
pub(crate) const MAX_MAC_LEN: usize = 64;

impl Cipher {
    /// AES with a 16, 24 or 32-byte key.
    pub(crate) fn from_key(key: &[u8]) -> Option<Self> {
        use aes::cipher::KeyInit;
        Some(match key.len() {
            16 => Cipher::A128(Aes128::new_from_slice(key).ok()?),
            24 => Cipher::A192(Aes192::new_from_slice(key).ok()?),
            32 => Cipher::A256(Aes256::new_from_slice(key).ok()?),
            _ => return None,
        })
    }
}

impl MacKey {
    /// A placeholder MAC key for raw-cipher hazmat helpers that never MAC.
    pub(crate) fn unused() -> Self {
        MacKey::S256(match <Hmac<Sha256> as Mac>::new_from_slice(&[]) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        })
    }
}

pub(crate) struct EtmKey {
    cipher: Cipher,
    mac: MacKey,
}

macro_rules! cbc_enc {
    ($c:expr, $iv:expr, $buf:expr, $len:expr) => {
        cbc::Encryptor::inner_iv_init($c.clone(), $iv.into())
            .encrypt_padded_mut::<Pkcs7>($buf, $len)
            .map(|c| c.len())
    };
}

macro_rules! cbc_dec {
    ($c:expr, $iv:expr, $buf:expr) => {
        cbc::Decryptor::inner_iv_init($c.clone(), $iv.into())
            .decrypt_padded_mut::<Pkcs7>($buf)
            .map(|p| p.len())
    };
}

fn mac_parts<M: Mac + Clone>(m: &M, parts: &[&[u8]], out: &mut [u8; MAX_MAC_LEN]) -> usize {
    let mut m = m.clone();
    for p in parts {
        m.update(p);
    }
    let tag = m.finalize().into_bytes();
    out[..tag.len()].copy_from_slice(&tag);
    tag.len()
}

fn verify_parts<M: Mac + Clone>(m: &M, parts: &[&[u8]], tag: &[u8]) -> bool {
    let mut m = m.clone();
    for p in parts {
        m.update(p);
    }
    // Constant-time; compares the leftmost `tag.len()` bytes (RFC 7518 truncation).
    m.verify_truncated_left(tag).is_ok()
}

impl EtmKey {
    pub(crate) fn new(cipher: Cipher, mac: MacKey) -> Self {
        Self { cipher, mac }
    }

    /// Pads and encrypts `buf[start..]` in place under `iv`, growing `buf` by the padding.
    pub(crate) fn encrypt(&self, iv: &[u8; 16], buf: &mut Vec<u8>, start: usize) {
        let pt_len = buf.len() - start;
        let padded = (pt_len / 16 + 1) * 16;
        buf.resize(start + padded, 0);
        let region = &mut buf[start..];
        let r = match &self.cipher {
            Cipher::A128(c) => cbc_enc!(c, iv, region, pt_len),
            Cipher::A192(c) => cbc_enc!(c, iv, region, pt_len),
            Cipher::A256(c) => cbc_enc!(c, iv, region, pt_len),
        };
        // The buffer was sized for the padding above, so padding cannot fail.
        debug_assert_eq!(r.ok(), Some(padded));
    }

    /// Decrypts `buf` in place and strips PKCS#7 padding; returns the plaintext length. Call only
    /// after the MAC verified (encrypt-then-MAC: no padding oracle).
    pub(crate) fn decrypt(&self, iv: &[u8; 16], buf: &mut [u8]) -> Option<usize> {
        if buf.is_empty() || buf.len() % 16 != 0 {
            return None;
        }
        let r = match &self.cipher {
            Cipher::A128(c) => cbc_dec!(c, iv, buf),
            Cipher::A192(c) => cbc_dec!(c, iv, buf),
            Cipher::A256(c) => cbc_dec!(c, iv, buf),
        };
        r.ok()
    }

    /// The full MAC over the concatenation of `parts`; returns its length.
    pub(crate) fn mac(&self, parts: &[&[u8]], out: &mut [u8; MAX_MAC_LEN]) -> usize {
        match &self.mac {
            MacKey::S256(m) => mac_parts(m, parts, out),
            MacKey::S384(m) => mac_parts(m, parts, out),
            MacKey::S512(m) => mac_parts(m, parts, out),
        }
    }

    /// Constant-time check of `tag` against the leftmost bytes of the MAC.
    pub(crate) fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        match &self.mac {
            MacKey::S256(m) => verify_parts(m, parts, tag),
            MacKey::S384(m) => verify_parts(m, parts, tag),
            MacKey::S512(m) => verify_parts(m, parts, tag),
        }
    }
}
