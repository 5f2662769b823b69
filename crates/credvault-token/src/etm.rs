//! The private encrypt-then-MAC core shared by Fernet and AES-CBC-HMAC-SHA2: AES-CBC with
//! PKCS#7 padding, HMAC-SHA2 over caller-given parts, constant-time (optionally truncated)
//! tag checks. Not public API.

use aes::cipher::{
    BlockBackend, BlockCipher, BlockClosure, BlockDecrypt, BlockDecryptMut, BlockEncrypt,
    BlockSizeUser, InnerIvInit,
};
use aes::{Aes128, Aes192, Aes256};
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::consts::U16;
use cbc::cipher::inout::InOutBuf;
use hmac::Hmac;
use sha2::{Sha384, Sha512};

use crate::hmac256::{HmacSha256, HmacSha256Key};

/// An expanded AES key (schedules are wiped on drop by the `aes` crate's `zeroize` feature).
#[derive(Clone)]
pub(crate) enum Cipher {
    A128(Aes128),
    A192(Aes192),
    A256(Aes256),
}

/// A pre-keyed HMAC: the inner and outer pads are hashed once, copied per message.
pub(crate) enum MacKey {
    S256(HmacSha256Key),
    S384(Hmac<Sha384>),
    S512(Hmac<Sha512>),
}

impl Clone for MacKey {
    fn clone(&self) -> Self {
        match self {
            Self::S256(k) => Self::S256(k.duplicate()),
            Self::S384(k) => Self::S384(k.clone()),
            Self::S512(k) => Self::S512(k.clone()),
        }
    }
}

/// Largest MAC output (SHA-512).
pub(crate) const MAX_MAC_LEN: usize = 64;

/// A MAC key that starts one message's computation.
trait MacBegin {
    type State: MacState;
    fn begin(&self) -> Self::State;
}

/// One message's MAC computation: the common face of `HmacSha256` and the `hmac` crate's types.
trait MacState {
    fn update(&mut self, data: &[u8]);
    /// Writes the MAC to the front of `out` and returns its length.
    fn finalize_into(self, out: &mut [u8; MAX_MAC_LEN]) -> usize;
}

impl MacBegin for HmacSha256Key {
    type State = HmacSha256;
    #[inline(always)]
    fn begin(&self) -> HmacSha256 {
        self.start()
    }
}

impl MacState for HmacSha256 {
    #[inline(always)]
    fn update(&mut self, data: &[u8]) {
        HmacSha256::update(self, data);
    }
    #[inline(always)]
    fn finalize_into(self, out: &mut [u8; MAX_MAC_LEN]) -> usize {
        put_tag(&self.finalize(), out)
    }
}

/// Copies a MAC to the front of `out` and returns its length.
#[inline(always)]
fn put_tag(tag: &[u8], out: &mut [u8; MAX_MAC_LEN]) -> usize {
    out[..tag.len()].copy_from_slice(tag);
    tag.len()
}

macro_rules! hmac_crate_state {
    ($($h:ty),*) => {$(
        impl MacBegin for Hmac<$h> {
            type State = Self;
            #[inline(always)]
            fn begin(&self) -> Self {
                self.clone()
            }
        }

        impl MacState for Hmac<$h> {
            #[inline(always)]
            fn update(&mut self, data: &[u8]) {
                hmac::Mac::update(self, data);
            }
            #[inline(always)]
            fn finalize_into(self, out: &mut [u8; MAX_MAC_LEN]) -> usize {
                put_tag(&hmac::Mac::finalize(self).into_bytes(), out)
            }
        }
    )*};
}

hmac_crate_state!(Sha384, Sha512);

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
        MacKey::S256(HmacSha256Key::new(&[]))
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
/// This is a block closure, run inside the `aes` crate's `#[target_feature(enable = "aes")]`
/// dispatch with the expanded key loaded once. The chaining is written here rather than taken
/// from `cbc::Encryptor`: that type keeps the chaining value behind a reference, so every block
/// stored it and loaded it back, and the store-to-load forward sat in the serial AES-CBC chain.
/// Keeping it in a register took the 64 KiB seal from 84 to 75 µs (docs/PERFORMANCE.md). The
/// `cbc` crate still does decryption (parallel) and the raw-CBC hazmat helpers, and a property
/// test checks this loop against `cbc::Encryptor` on random inputs.
struct EncMac<'a, M> {
    iv: &'a [u8; 16],
    data: &'a mut [u8],
    mac: &'a mut M,
}

impl<M> BlockSizeUser for EncMac<'_, M> {
    type BlockSize = U16;
}

impl<M: MacState> BlockClosure for EncMac<'_, M> {
    // Inlined into the dispatch function, so that the AES-NI round function inlines here too
    // (otherwise every block is a call).
    #[inline(always)]
    fn call<B: BlockBackend<BlockSize = U16>>(self, backend: &mut B) {
        let mut chain = aes::Block::from(*self.iv);
        for chunk in self.data.chunks_mut(SEAL_CHUNK) {
            for block in chunk.chunks_exact_mut(16) {
                let mut b = aes::Block::clone_from_slice(block);
                for (x, c) in b.iter_mut().zip(chain.iter()) {
                    *x ^= c;
                }
                backend.proc_block((&mut b).into());
                block.copy_from_slice(&b);
                chain = b;
            }
            self.mac.update(chunk);
        }
    }
}

/// AES-CBC encryption of `data` (whole blocks) in place, MACing the ciphertext as it is made.
#[inline(always)]
fn enc_mac<C, M>(cipher: &C, mac: &mut M, iv: &[u8; 16], data: &mut [u8])
where
    C: BlockEncrypt + BlockSizeUser<BlockSize = U16>,
    M: MacState,
{
    cipher.encrypt_with_backend(EncMac { iv, data, mac });
}

/// MACs all of `data` and decrypts `data[start..]` (whole blocks) in place, chunk by chunk: each
/// ciphertext chunk is decrypted right after the MAC has taken it. The first MAC update takes
/// `data[..start]` with the first chunk, so a short message is one update (and one batched
/// compression call) rather than two.
#[inline(always)]
fn mac_dec<C, M>(cipher: &C, mac: &mut M, iv: &[u8; 16], data: &mut [u8], start: usize)
where
    C: BlockDecrypt + BlockCipher + BlockSizeUser<BlockSize = U16>,
    M: MacState,
{
    let mut dec = cbc::Decryptor::<&C>::inner_iv_init(cipher, iv.into());
    let mut maced = 0;
    let mut off = start;
    while off < data.len() {
        let end = (off + OPEN_CHUNK).min(data.len());
        mac.update(&data[maced..end]);
        maced = end;
        dec.decrypt_blocks_inout_mut(blocks(&mut data[off..end]));
        off = end;
    }
    mac.update(&data[maced..]);
}

macro_rules! with_keys {
    ($self:expr, |$c:ident, $m:ident| $body:expr) => {
        match (&$self.cipher, &$self.mac) {
            (Cipher::A128($c), MacKey::S256(m)) => {
                let mut $m = m.begin();
                $body
            }
            (Cipher::A128($c), MacKey::S384(m)) => {
                let mut $m = m.begin();
                $body
            }
            (Cipher::A128($c), MacKey::S512(m)) => {
                let mut $m = m.begin();
                $body
            }
            (Cipher::A192($c), MacKey::S256(m)) => {
                let mut $m = m.begin();
                $body
            }
            (Cipher::A192($c), MacKey::S384(m)) => {
                let mut $m = m.begin();
                $body
            }
            (Cipher::A192($c), MacKey::S512(m)) => {
                let mut $m = m.begin();
                $body
            }
            (Cipher::A256($c), MacKey::S256(m)) => {
                let mut $m = m.begin();
                $body
            }
            (Cipher::A256($c), MacKey::S384(m)) => {
                let mut $m = m.begin();
                $body
            }
            (Cipher::A256($c), MacKey::S512(m)) => {
                let mut $m = m.begin();
                $body
            }
        }
    };
}

/// Constant-time check that `tag` is the leftmost `tag.len()` bytes of the MAC (RFC 7518
/// truncation). An empty tag or one longer than the MAC never verifies.
#[inline(always)]
fn check<M: MacState>(m: M, tag: &[u8]) -> bool {
    let mut full = [0u8; MAX_MAC_LEN];
    let n = m.finalize_into(&mut full);
    match full[..n].get(..tag.len()) {
        Some(expected) if !tag.is_empty() => ct_eq(expected, tag),
        _ => false,
    }
}

/// Constant-time equality of two equal-length byte strings: XORs are ORed together a word at a
/// time with no data-dependent branch, and only the final word passes `subtle`'s optimisation
/// barrier. (`subtle`'s slice comparison puts every byte through the barrier, which cost 20 ns
/// of a 370 ns Fernet decrypt.)
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    if a.len() != b.len() {
        return false;
    }
    let (aw, ar) = a.as_chunks::<8>();
    let (bw, br) = b.as_chunks::<8>();
    let mut acc = 0u64;
    for (x, y) in aw.iter().zip(bw) {
        acc |= u64::from_ne_bytes(*x) ^ u64::from_ne_bytes(*y);
    }
    for (x, y) in ar.iter().zip(br) {
        acc |= u64::from(x ^ y);
    }
    acc.ct_eq(&0).into()
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
            m.finalize_into(out)
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
        let ok = with_keys!(self, |c, m| {
            m.update(pre);
            mac_dec(c, &mut m, iv, data, start);
            m.update(post);
            check(m, tag)
        });
        let body = &mut data[start..];
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
        with_keys!(self, |c, m| mac_dec(c, &mut m, iv, buf, 0));
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::ct_eq;

    #[test]
    fn ct_eq_sees_every_byte_and_the_length() {
        for len in [0usize, 1, 7, 8, 9, 16, 20, 24, 31, 32, 33, 64] {
            let a: Vec<u8> = (0..len as u8).collect();
            assert!(ct_eq(&a, &a.clone()), "equal, len {len}");
            for i in 0..len {
                for bit in [0x01u8, 0x80] {
                    let mut b = a.clone();
                    b[i] ^= bit;
                    assert!(!ct_eq(&a, &b), "len {len}, byte {i}, bit {bit:#x}");
                }
            }
            let mut longer = a.clone();
            longer.push(0);
            assert!(!ct_eq(&a, &longer), "len {len} against len {}", len + 1);
        }
    }
}
