//! The private encrypt-then-MAC core shared by Fernet and AES-CBC-HMAC-SHA2: AES-CBC with
//! PKCS#7 padding, HMAC-SHA2 over caller-given parts, constant-time (optionally truncated)
//! tag checks. Not public API.

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, InnerIvInit};
use aes::{Aes128, Aes192, Aes256};
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::consts::U16;
use cbc::cipher::inout::InOutBuf;
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

/// Bytes encrypted between MAC updates. Interleaving lets the SHA-256 work of one chunk
/// execute while AES-CBC's serial chain for the next waits on latency; 256 measured best
/// (64 and 1024 both slower, docs/PERFORMANCE.md).
const SEAL_CHUNK: usize = 256;
/// Bytes MACed then decrypted per step. CBC decryption runs 8 blocks in parallel, so larger
/// chunks win; 1024 measured best.
const OPEN_CHUNK: usize = 1024;

/// Pads `buf[start..]` and returns the padded length (always 1..=16 bytes of padding).
fn pad_in_place(buf: &mut Vec<u8>, start: usize) -> usize {
    let pt_len = buf.len() - start;
    let pad = 16 - pt_len % 16;
    buf.resize(buf.len() + pad, pad as u8);
    pt_len + pad
}

/// Views whole 16-byte blocks of `data` as cipher blocks (callers pass multiples of 16).
fn blocks(data: &mut [u8]) -> InOutBuf<'_, '_, aes::Block> {
    let (blocks, tail) = InOutBuf::from(data).into_chunks::<U16>();
    debug_assert!(tail.is_empty());
    blocks
}

/// CBC encryption of whole blocks, chunk by chunk, each chunk MACed right after it is made.
///
/// The mode borrows the expanded key (`&C`): cloning an `aes` key, which carries both the AES-NI
/// and the software schedules, cost 78 ns a message.
fn enc_mac<C, M>(cipher: &C, mac: &mut M, iv: &[u8; 16], data: &mut [u8])
where
    C: aes::cipher::BlockEncrypt
        + aes::cipher::BlockCipher
        + aes::cipher::BlockSizeUser<BlockSize = aes::cipher::consts::U16>,
    M: Mac,
{
    let mut enc = cbc::Encryptor::<&C>::inner_iv_init(cipher, iv.into());
    for chunk in data.chunks_mut(SEAL_CHUNK) {
        enc.encrypt_blocks_inout_mut(blocks(chunk));
        mac.update(chunk);
    }
}

/// MACs each ciphertext chunk, then decrypts it in place.
fn mac_dec<C, M>(cipher: &C, mac: &mut M, iv: &[u8; 16], data: &mut [u8])
where
    C: aes::cipher::BlockDecrypt
        + aes::cipher::BlockCipher
        + aes::cipher::BlockSizeUser<BlockSize = aes::cipher::consts::U16>,
    M: Mac,
{
    let mut dec = cbc::Decryptor::<&C>::inner_iv_init(cipher, iv.into());
    for chunk in data.chunks_mut(OPEN_CHUNK) {
        mac.update(chunk);
        dec.decrypt_blocks_inout_mut(blocks(chunk));
    }
}

macro_rules! with_keys {
    ($self:expr, |$c:ident, $m:ident| $body:expr) => {
        match (&$self.cipher, &$self.mac) {
            (Cipher::A128($c), MacKey::S256(m)) => {
                let mut $m = m.clone();
                $body
            }
            (Cipher::A128($c), MacKey::S384(m)) => {
                let mut $m = m.clone();
                $body
            }
            (Cipher::A128($c), MacKey::S512(m)) => {
                let mut $m = m.clone();
                $body
            }
            (Cipher::A192($c), MacKey::S256(m)) => {
                let mut $m = m.clone();
                $body
            }
            (Cipher::A192($c), MacKey::S384(m)) => {
                let mut $m = m.clone();
                $body
            }
            (Cipher::A192($c), MacKey::S512(m)) => {
                let mut $m = m.clone();
                $body
            }
            (Cipher::A256($c), MacKey::S256(m)) => {
                let mut $m = m.clone();
                $body
            }
            (Cipher::A256($c), MacKey::S384(m)) => {
                let mut $m = m.clone();
                $body
            }
            (Cipher::A256($c), MacKey::S512(m)) => {
                let mut $m = m.clone();
                $body
            }
        }
    };
}

fn finish<M: Mac>(m: M, out: &mut [u8; MAX_MAC_LEN]) -> usize {
    let tag = m.finalize().into_bytes();
    out[..tag.len()].copy_from_slice(&tag);
    tag.len()
}

fn check<M: Mac>(m: M, tag: &[u8]) -> bool {
    // Constant-time; compares the leftmost `tag.len()` bytes (RFC 7518 truncation).
    m.verify_truncated_left(tag).is_ok()
}

impl EtmKey {
    pub(crate) fn new(cipher: Cipher, mac: MacKey) -> Self {
        Self { cipher, mac }
    }

    /// Encrypt-then-MAC in one pass: pads `buf[start..]`, encrypts it in place under `iv`, and
    /// writes into `out` the MAC over `pre ‖ buf[..start] ‖ ciphertext ‖ post`. Returns the MAC
    /// length.
    pub(crate) fn seal(
        &self,
        iv: &[u8; 16],
        buf: &mut Vec<u8>,
        start: usize,
        pre: &[u8],
        post: &[u8],
        out: &mut [u8; MAX_MAC_LEN],
    ) -> usize {
        pad_in_place(buf, start);
        let (head, body) = buf.split_at_mut(start);
        with_keys!(self, |c, m| {
            m.update(pre);
            m.update(head);
            enc_mac(c, &mut m, iv, body);
            m.update(post);
            finish(m, out)
        })
    }

    /// MAC-check-and-decrypt in one pass over `data = head ‖ ciphertext` (ciphertext from
    /// `start`): the MAC over `pre ‖ head ‖ ciphertext ‖ post` must equal `tag`. Each chunk is
    /// MACed before it is decrypted in place; if the tag does not verify, the decrypted region is
    /// wiped and nothing is returned. Padding is examined only after the tag verified. Returns
    /// the plaintext length (plaintext at `data[start..start + n]`).
    pub(crate) fn open(
        &self,
        iv: &[u8; 16],
        data: &mut [u8],
        start: usize,
        pre: &[u8],
        post: &[u8],
        tag: &[u8],
    ) -> Option<usize> {
        let body_len = data.len().checked_sub(start)?;
        if body_len == 0 || body_len % 16 != 0 {
            return None;
        }
        let (head, body) = data.split_at_mut(start);
        let ok = with_keys!(self, |c, m| {
            m.update(pre);
            m.update(head);
            mac_dec(c, &mut m, iv, body);
            m.update(post);
            check(m, tag)
        });
        if !ok {
            crate::secret::wipe(body);
            return None;
        }
        let last = &body[body_len - 16..];
        match <Pkcs7 as cbc::cipher::block_padding::RawPadding>::raw_unpad(last) {
            Ok(kept) => Some(body_len - 16 + kept.len()),
            Err(_) => {
                crate::secret::wipe(body);
                None
            }
        }
    }

    /// Pads and encrypts `buf[start..]` in place (no MAC): the raw-CBC hazmat helper.
    pub(crate) fn encrypt(&self, iv: &[u8; 16], buf: &mut Vec<u8>, start: usize) {
        let mut out = [0u8; MAX_MAC_LEN];
        self.seal(iv, buf, start, &[], &[], &mut out);
    }

    /// Decrypts whole blocks in place and strips PKCS#7 padding (no MAC): the raw-CBC hazmat
    /// helper. Never used on unauthenticated data outside `hazmat`.
    pub(crate) fn decrypt(&self, iv: &[u8; 16], buf: &mut [u8]) -> Option<usize> {
        if buf.is_empty() || !buf.len().is_multiple_of(16) {
            return None;
        }
        let n = buf.len();
        with_keys!(self, |c, m| mac_dec(c, &mut m, iv, buf));
        <Pkcs7 as cbc::cipher::block_padding::RawPadding>::raw_unpad(&buf[n - 16..])
            .ok()
            .map(|k| n - 16 + k.len())
    }

    /// Constant-time check of `tag` against the leftmost bytes of the MAC over `parts`.
    pub(crate) fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        with_keys!(self, |_c, m| {
            for p in parts {
                m.update(p);
            }
            check(m, tag)
        })
    }
}
