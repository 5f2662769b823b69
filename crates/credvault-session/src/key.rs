//! The session database's MAC key.

use std::fmt;
use std::path::Path;

use ring::hmac;
use zeroize::Zeroize;

use crate::SessionError;

/// The key the session database's records are authenticated under: 32 random bytes in a file
/// readable only by its owner (`sessions.key` beside the vault). Every process sharing the
/// database needs the same file.
pub struct SessionKey {
    mac: hmac::Key,
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey([redacted])")
    }
}

impl SessionKey {
    /// From the 32 bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        let root = hmac::Key::new(hmac::HMAC_SHA256, bytes);
        let mut t = hmac::sign(&root, b"credvault-session-v1 record mac")
            .as_ref()
            .to_vec();
        let mac = hmac::Key::new(hmac::HMAC_SHA256, &t);
        t.zeroize();
        Self { mac }
    }

    /// Reads `path`, or makes it (owner-only, with fresh random bytes) when it does not exist.
    ///
    /// # Errors
    /// [`SessionError::Key`] naming the file and the reason.
    pub fn load_or_create(path: &Path) -> Result<Self, SessionError> {
        let bytes =
            credvault_store::files::load_or_create_key(path).map_err(|e| SessionError::Key {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        Ok(Self::from_bytes(&bytes))
    }

    /// The MAC of a record (HMAC-SHA256): a kind label, then each part, each prefixed with its
    /// length (u64 big-endian), so no two records encode alike. Other crates keeping records
    /// beside the sessions (two-factor codes) use it with their own kind labels.
    pub fn mac(&self, kind: &str, parts: &[&[u8]]) -> Vec<u8> {
        let mut ctx = hmac::Context::with_key(&self.mac);
        for p in std::iter::once(kind.as_bytes()).chain(parts.iter().copied()) {
            ctx.update(&(p.len() as u64).to_be_bytes());
            ctx.update(p);
        }
        ctx.sign().as_ref().to_vec()
    }

    /// Whether `tag` is the [`mac`](Self::mac) of the record (constant time).
    pub fn verify(&self, kind: &str, parts: &[&[u8]], tag: &[u8]) -> bool {
        let mut msg = Vec::new();
        for p in std::iter::once(kind.as_bytes()).chain(parts.iter().copied()) {
            msg.extend_from_slice(&(p.len() as u64).to_be_bytes());
            msg.extend_from_slice(p);
        }
        hmac::verify(&self.mac, &msg, tag).is_ok()
    }
}

impl SessionKey {
    /// Whether `tag` equals `expected`, a [`mac`](Self::mac) computed by the caller (constant
    /// time).
    pub fn verify_tag_of(&self, expected: &[u8], tag: &[u8]) -> bool {
        self.verify_tag(expected, tag)
    }

    /// Whether two tags are equal (constant time).
    pub(crate) fn verify_tag(&self, expected: &[u8], tag: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        expected.len() == tag.len() && bool::from(expected.ct_eq(tag))
    }
}
