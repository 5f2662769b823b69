//! HMAC-SHA256 (RFC 2104) on `sha2`'s SHA-256 compression function, for the two hot formats
//! (Fernet and A128CBC-HS256). HMAC-SHA384/512 keep the `hmac` crate.
//!
//! Why not `hmac::Hmac<Sha256>`: per message it clones two full hash cores and a block buffer,
//! and its finalisation copies the inner digest through the buffer and several output arrays.
//! On a 256-byte Fernet decrypt that plumbing cost about 10 ns of 345 (docs/PERFORMANCE.md),
//! which is what stood between the decrypt and its 2× target. The hashing itself is still
//! `sha2` (`compress256`, SHA-NI where the CPU has it) and `block_buffer` (through `digest`);
//! only the two-line HMAC construction is written here. A property test checks it against
//! `hmac::Hmac<Sha256>` on random keys (including keys longer than a block) and random
//! splittings of the message, and Wycheproof's `hmac_sha256` vectors run through it.

use sha2::digest::block_buffer::{BlockBuffer, Eager};
use sha2::digest::consts::U64;
use sha2::digest::generic_array::GenericArray;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

/// SHA-256 block length in bytes.
const BLOCK: usize = 64;
/// HMAC-SHA256 output length in bytes.
pub const OUT: usize = 32;
/// SHA-256 initial hash value (FIPS 180-4 §5.3.3).
const H0: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

type Block = GenericArray<u8, U64>;

/// An HMAC-SHA256 key, kept as the SHA-256 states after the inner (`key ⊕ ipad`) and outer
/// (`key ⊕ opad`) blocks, so that a message costs no key setup. Both states are key-equivalent
/// and are wiped on drop; `Debug` shows neither; not `Clone`.
///
/// ```
/// use credvault_token::HmacSha256Key;
/// // RFC 4231 test case 2.
/// let key = HmacSha256Key::new(b"Jefe");
/// let mut m = key.start();
/// m.update(b"what do ya want ");
/// m.update(b"for nothing?");
/// let tag = m.finalize();
/// assert_eq!(tag[..4], [0x5b, 0xdc, 0xc1, 0x46]);
/// assert!(key.verify(&[b"what do ya want for nothing?"], &tag));
/// ```
pub struct HmacSha256Key {
    inner: [u32; 8],
    outer: [u32; 8],
}

impl HmacSha256Key {
    /// A key of any length (longer than a block: hashed first, as RFC 2104 says).
    pub fn new(key: &[u8]) -> Self {
        let mut padded = Zeroizing::new([0u8; BLOCK]);
        if key.len() > BLOCK {
            padded[..OUT].copy_from_slice(&Sha256::digest(key));
        } else {
            padded[..key.len()].copy_from_slice(key);
        }
        Self {
            inner: pad_state(&padded, 0x36),
            outer: pad_state(&padded, 0x5c),
        }
    }

    /// A copy, for the token keys that are `Clone` (the public type is not).
    pub(crate) fn duplicate(&self) -> Self {
        Self {
            inner: self.inner,
            outer: self.outer,
        }
    }

    /// A fresh computation under this key.
    #[inline(always)]
    pub fn start(&self) -> HmacSha256 {
        HmacSha256 {
            state: self.inner,
            outer: self.outer,
            buffer: BlockBuffer::default(),
            blocks: 1,
        }
    }

    /// The tag of the concatenation of `parts`.
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; OUT] {
        let mut m = self.start();
        for p in parts {
            m.update(p);
        }
        m.finalize()
    }

    /// Whether `tag` is the tag of the concatenation of `parts`, compared in constant time.
    pub fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        let mut ours = self.mac(parts);
        let ok = tag.len() == OUT && bool::from(ours.ct_eq(tag));
        ours.zeroize();
        ok
    }
}

impl core::fmt::Debug for HmacSha256Key {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("HmacSha256Key([REDACTED])")
    }
}

/// The SHA-256 state after one block of `key ⊕ pad`.
fn pad_state(key: &[u8; BLOCK], pad: u8) -> [u32; 8] {
    let mut block = Block::default();
    for (b, k) in block.iter_mut().zip(key) {
        *b = k ^ pad;
    }
    let mut state = H0;
    sha2::compress256(&mut state, core::slice::from_ref(&block));
    block.as_mut_slice().zeroize();
    state
}

impl Drop for HmacSha256Key {
    fn drop(&mut self) {
        self.inner.zeroize();
        self.outer.zeroize();
    }
}

/// One message's HMAC-SHA256 computation. Its state is key- and message-dependent: wiped on
/// drop (and after [`finalize`](Self::finalize)).
pub struct HmacSha256 {
    state: [u32; 8],
    outer: [u32; 8],
    buffer: BlockBuffer<U64, Eager>,
    /// Blocks compressed into `state`, the key block included.
    blocks: u64,
}

impl HmacSha256 {
    /// Absorbs `data`; whole blocks are compressed straight from it, in one call.
    #[inline(always)]
    pub fn update(&mut self, data: &[u8]) {
        if data.is_empty() {
            // Fernet has no associated data: skip the buffer bookkeeping (a `memcpy` call).
            return;
        }
        let Self {
            state,
            buffer,
            blocks,
            ..
        } = self;
        buffer.digest_blocks(data, |b| {
            *blocks += b.len() as u64;
            sha2::compress256(state, b);
        });
    }

    /// The tag.
    #[inline(always)]
    pub fn finalize(mut self) -> [u8; OUT] {
        let bits = (self.blocks * BLOCK as u64 + self.buffer.get_pos() as u64) * 8;
        let state = &mut self.state;
        self.buffer
            .len64_padding_be(bits, |b| sha2::compress256(state, core::slice::from_ref(b)));
        // Outer hash: the key block (already in `outer`) then the inner digest, padded.
        let mut block = Block::default();
        for (c, w) in block[..OUT].chunks_exact_mut(4).zip(self.state) {
            c.copy_from_slice(&w.to_be_bytes());
        }
        block[OUT] = 0x80;
        block[BLOCK - 8..].copy_from_slice(&(((BLOCK + OUT) * 8) as u64).to_be_bytes());
        let mut outer = self.outer;
        sha2::compress256(&mut outer, core::slice::from_ref(&block));
        block.as_mut_slice().zeroize();
        let mut tag = [0u8; OUT];
        for (c, w) in tag.chunks_exact_mut(4).zip(outer) {
            c.copy_from_slice(&w.to_be_bytes());
        }
        outer.zeroize();
        tag
    }
}

impl Drop for HmacSha256 {
    fn drop(&mut self) {
        self.state.zeroize();
        self.outer.zeroize();
        // The buffer holds at most one block of message bytes; overwrite it through its own
        // API (it has no `zeroize`): a full block of zeros replaces whatever it held.
        let mut sink = [0u32; 8];
        self.buffer.digest_blocks(&[0u8; BLOCK], |b| {
            let _ = (&mut sink, b);
        });
        self.buffer.reset();
    }
}

impl core::fmt::Debug for HmacSha256 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("HmacSha256([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::HmacSha256Key;
    use hmac::{Hmac, Mac};
    use proptest::prelude::*;
    use sha2::Sha256;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        /// Against `hmac::Hmac<Sha256>`: keys of 0..200 bytes (so longer than a block too), and
        /// the message fed in up to four pieces split anywhere.
        #[test]
        fn agrees_with_the_hmac_crate(
            key in prop::collection::vec(any::<u8>(), 0..200),
            msg in prop::collection::vec(any::<u8>(), 0..600),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        ) {
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(msg.len() + 1)).collect();
            cuts.sort_unstable();
            let mut ours = HmacSha256Key::new(&key).start();
            let mut from = 0;
            for c in cuts.into_iter().chain([msg.len()]) {
                ours.update(&msg[from..c]);
                from = c;
            }
            let mut theirs = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
            theirs.update(&msg);
            prop_assert_eq!(&ours.finalize()[..], &theirs.finalize().into_bytes()[..]);
        }
    }

    /// RFC 4231 test case 2 (a key shorter than the block), written out by hand.
    #[test]
    fn rfc4231_case_2() {
        let mut m = HmacSha256Key::new(b"Jefe").start();
        m.update(b"what do ya want ");
        m.update(b"for nothing?");
        assert_eq!(
            hex::encode(m.finalize()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
