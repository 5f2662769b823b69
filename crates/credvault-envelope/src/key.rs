//! Data keys and their public identifiers.

use core::fmt;

use zeroize::{Zeroize, Zeroizing};

use crate::error::{FormatError, RandomError};

/// Length in bytes of a [`DataKey`] (AES-256).
pub const DATA_KEY_LEN: usize = 32;
/// Length in bytes of a [`KeyId`].
pub const KEY_ID_LEN: usize = 16;

/// The public name of a data key. It appears in every envelope the key sealed and in every
/// wrapped copy of the key, so a store can pick the right key without trial decryption.
///
/// Key ids are random, not derived from the key, so they reveal nothing about it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId([u8; KEY_ID_LEN]);

impl KeyId {
    /// Wraps 16 bytes as a key id.
    pub const fn from_bytes(bytes: [u8; KEY_ID_LEN]) -> Self {
        Self(bytes)
    }

    /// A fresh random key id.
    pub fn generate() -> Result<Self, RandomError> {
        let mut b = [0u8; KEY_ID_LEN];
        getrandom::fill(&mut b).map_err(|_| RandomError)?;
        Ok(Self(b))
    }

    /// The 16 bytes.
    pub const fn as_bytes(&self) -> &[u8; KEY_ID_LEN] {
        &self.0
    }

    /// Parses 32 hex digits (either case).
    pub fn from_hex(s: &str) -> Result<Self, FormatError> {
        let malformed = |reason| FormatError::Malformed {
            what: "key id",
            reason,
        };
        let s = s.as_bytes();
        if s.len() != 2 * KEY_ID_LEN {
            return Err(malformed("expected 32 hex digits"));
        }
        let mut out = [0u8; KEY_ID_LEN];
        for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
            let hi = hex_val(pair[0]).ok_or(malformed("not a hex digit"))?;
            let lo = hex_val(pair[1]).ok_or(malformed("not a hex digit"))?;
            *o = (hi << 4) | lo;
        }
        Ok(Self(out))
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for KeyId {
    /// Lower-case hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One write of the whole id (it goes into every audit record of a reveal).
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 2 * KEY_ID_LEN];
        for (pair, b) in buf.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 0x0f)];
        }
        f.write_str(core::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A 256-bit AES-GCM data key (DEK): one per tenant, stored only wrapped by a master key.
///
/// Not `Clone`, not serializable; `Debug` shows only the key id; the key bytes are wiped
/// when the value is dropped. The bytes are reachable only through
/// [`DataKey::expose_secret`].
pub struct DataKey {
    id: KeyId,
    bytes: Zeroizing<[u8; DATA_KEY_LEN]>,
}

impl DataKey {
    /// A new random data key with a new random key id, from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, RandomError> {
        let mut bytes = Zeroizing::new([0u8; DATA_KEY_LEN]);
        getrandom::fill(bytes.as_mut()).map_err(|_| RandomError)?;
        Ok(Self {
            id: KeyId::generate()?,
            bytes,
        })
    }

    /// A data key from known bytes, e.g. one a client holds, or one just unwrapped.
    ///
    /// The caller's array is copied; wipe it afterwards (or pass a `Zeroizing` deref).
    pub fn from_bytes(id: KeyId, bytes: &[u8; DATA_KEY_LEN]) -> Self {
        Self {
            id,
            bytes: Zeroizing::new(*bytes),
        }
    }

    /// A data key from a slice that must be exactly 32 bytes.
    pub fn from_slice(id: KeyId, bytes: &[u8]) -> Result<Self, FormatError> {
        let mut k = Zeroizing::new([0u8; DATA_KEY_LEN]);
        if bytes.len() != DATA_KEY_LEN {
            return Err(FormatError::Malformed {
                what: "data key",
                reason: "must be exactly 32 bytes",
            });
        }
        k.copy_from_slice(bytes);
        Ok(Self { id, bytes: k })
    }

    /// The public key id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The raw key bytes. Every call site is a place where the key leaves this type.
    pub fn expose_secret(&self) -> &[u8; DATA_KEY_LEN] {
        &self.bytes
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("id", &self.id)
            .field("bytes", &"[REDACTED]")
            .finish()
    }
}

/// Overwrites `buf` with zeros using volatile writes that the optimizer may not remove: 16
/// bytes a store over the aligned middle, single bytes at the unaligned edges. (`zeroize` on
/// a byte slice writes one byte per store, which made wiping a 64 KiB secret cost more than
/// decrypting it.)
pub(crate) fn wipe(buf: &mut [u8]) {
    let (head, middle, tail) = bytemuck::pod_align_to_mut::<u8, u128>(buf);
    head.zeroize();
    middle.zeroize();
    tail.zeroize();
}

/// A decrypted secret: wiped on drop, redacted in `Debug`, not `Clone`.
pub struct Plaintext {
    /// Holds the plaintext in `..len`; bytes after it (the old tag) are wiped too.
    buf: Vec<u8>,
    len: usize,
}

impl Plaintext {
    /// Takes ownership of `buf`, whose first `len` bytes are the secret.
    pub(crate) fn new(buf: Vec<u8>, len: usize) -> Self {
        debug_assert!(len <= buf.len());
        let len = len.min(buf.len());
        Self { buf, len }
    }

    /// The secret bytes.
    pub fn expose_secret(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The whole buffer, for decrypting into it.
    pub(crate) fn buf_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// Length in bytes (not secret: the envelope reveals it too).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty secret.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes the bytes out, still in a wiping container.
    pub fn into_zeroizing(mut self) -> Zeroizing<Vec<u8>> {
        let mut v = core::mem::take(&mut self.buf);
        // Wipe what is cut off before handing the rest over.
        wipe(&mut v[self.len..]);
        v.truncate(self.len);
        Zeroizing::new(v)
    }
}

impl Drop for Plaintext {
    fn drop(&mut self) {
        wipe(&mut self.buf);
    }
}

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Plaintext([REDACTED; {} bytes])", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::wipe;

    #[test]
    fn wipe_clears_exactly_the_slice_at_every_alignment() {
        for start in 0..17 {
            for len in [0usize, 1, 15, 16, 17, 31, 33, 100, 257] {
                let mut buf = vec![0xA5u8; start + len + 20];
                wipe(&mut buf[start..start + len]);
                assert!(
                    buf[..start].iter().all(|&b| b == 0xA5),
                    "before, start {start} len {len}"
                );
                assert!(
                    buf[start..start + len].iter().all(|&b| b == 0),
                    "inside, start {start} len {len}"
                );
                assert!(
                    buf[start + len..].iter().all(|&b| b == 0xA5),
                    "after, start {start} len {len}"
                );
            }
        }
    }
}
