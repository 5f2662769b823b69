//! The audit key (authenticates checkpoints and anchors) and keyed identifiers.

use std::fmt;

use base64_engine::decode_key_text;
use ring::hmac;
use zeroize::Zeroizing;

/// The 256-bit audit key. Checkpoints and the anchor carry HMAC-SHA256 tags under it, so a log
/// rewritten by someone without the key fails verification (decision 0006 explains HMAC over
/// Ed25519). Keep it apart from the log: whoever holds it can both verify and forge.
///
/// Not `Clone`, not serializable; `Debug` is redacted; the bytes are wiped on drop.
pub struct AuditKey {
    bytes: Zeroizing<[u8; 32]>,
    mac: hmac::Key,
}

/// Domain label of [`AuditKey::head_tag`].
const HEAD_LABEL: &[u8] = b"credvault-audit head v1";

/// A key that is not 32 bytes of hex or base64 text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("audit key must be 32 bytes written as 64 hex digits or base64")]
pub struct KeyFormatError;

impl AuditKey {
    /// A fresh random key from the operating system.
    ///
    /// # Errors
    /// The operating system's random generator failed.
    pub fn generate() -> std::io::Result<Self> {
        let mut b = Zeroizing::new([0u8; 32]);
        getrandom::fill(b.as_mut()).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Self::from_bytes(&b))
    }

    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self {
            bytes: Zeroizing::new(*bytes),
            mac: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        }
    }

    /// A key from text: 64 hex digits, or base64 (standard or URL-safe, padded or not) of 32
    /// bytes. Surrounding whitespace is ignored (key files end with a newline).
    ///
    /// # Errors
    /// [`KeyFormatError`] if the text is neither.
    pub fn from_text(text: &str) -> Result<Self, KeyFormatError> {
        let bytes = decode_key_text(text.trim()).ok_or(KeyFormatError)?;
        Ok(Self::from_bytes(&bytes))
    }

    /// The key as 64 hex digits, for writing a key file. Wiped when dropped.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.bytes.as_ref()))
    }

    /// The tag of a log head (a record's sequence number and hash) kept outside the log, as the
    /// store keeps it in its database: HMAC-SHA256 over the framed parts
    /// `"credvault-audit head v1"`, `seq` (decimal) and `hash` (64 lower hex), as the other
    /// MACs of the log are written (docs/formats.md). Someone who can edit where the head is
    /// kept but has no key cannot point it at another record.
    pub fn head_tag(&self, seq: u64, hash: &[u8; 32]) -> [u8; 32] {
        self.tag_of(&head_message(seq, hash))
    }

    /// Whether `tag` is [`head_tag`](Self::head_tag) of `seq` and `hash` (constant time).
    pub fn check_head_tag(&self, seq: u64, hash: &[u8; 32], tag: &[u8; 32]) -> bool {
        self.verifies(&head_message(seq, hash), tag)
    }

    /// The tag of a document the vault writes outside the log under this key (a backup):
    /// HMAC-SHA256 over the framed parts `label` and `body` (each as its length, u64 big
    /// endian, then its bytes; docs/formats.md). The body is not copied.
    pub fn document_tag(&self, label: &str, body: &[u8]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.mac);
        for part in [label.as_bytes(), body] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// Whether `tag` is [`document_tag`](Self::document_tag) of `label` and `body` (constant
    /// time).
    pub fn check_document_tag(&self, label: &str, body: &[u8], tag: &[u8; 32]) -> bool {
        let ours = self.document_tag(label, body);
        // Compare tags under a fresh HMAC so the comparison's timing says nothing about them.
        hmac::verify(&self.mac, &ours, hmac::sign(&self.mac, tag).as_ref()).is_ok()
    }

    fn tag_of(&self, msg: &[u8]) -> [u8; 32] {
        let tag = hmac::sign(&self.mac, msg);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    fn verifies(&self, msg: &[u8], tag: &[u8; 32]) -> bool {
        hmac::verify(&self.mac, msg, tag).is_ok()
    }

    pub(crate) fn sign(&self, parts: &[&[u8]]) -> [u8; 32] {
        self.tag_of(&framed(parts))
    }

    pub(crate) fn check(&self, parts: &[&[u8]], tag_hex: &str) -> bool {
        let mut tag = [0u8; 32];
        if hex::decode_to_slice(tag_hex, &mut tag).is_err() {
            return false;
        }
        self.verifies(&framed(parts), &tag)
    }
}

/// The MAC input: each part as its length (u64 BE) then its bytes (docs/formats.md). Also the
/// associated data of sealed records ([`AesGcmSealer`](crate::AesGcmSealer)).
pub(crate) fn framed(parts: &[&[u8]]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(parts.iter().map(|p| 8 + p.len()).sum());
    for p in parts {
        msg.extend_from_slice(&(p.len() as u64).to_be_bytes());
        msg.extend_from_slice(p);
    }
    msg
}

/// What [`AuditKey::head_tag`] authenticates.
fn head_message(seq: u64, hash: &[u8; 32]) -> Vec<u8> {
    framed(&[
        HEAD_LABEL,
        seq.to_string().as_bytes(),
        hex::encode(hash).as_bytes(),
    ])
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey(<redacted>)")
    }
}

/// Which event fields a log stores as keyed hashes instead of plain text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HashedField {
    /// `actor`.
    Actor,
    /// `source_ip`.
    SourceIp,
    /// `client_host`.
    ClientHost,
    /// `request_id`.
    RequestId,
}

/// Turns identifiers (IP addresses, user ids) into `hmac-sha256:<hex>` under a salt that is
/// secret and particular to one log: `salt = HMAC(audit key, "identifier salt" ‖ log id)`.
/// Someone holding the log but not the key cannot test guesses; someone holding the key finds
/// the records of a known value by hashing it the same way (as Vault's `audit-hash` does).
pub struct IdentifierHasher {
    salt: hmac::Key,
}

/// Prefix of a hashed identifier.
pub const HASHED_PREFIX: &str = "hmac-sha256:";

impl IdentifierHasher {
    /// The hasher for the log `log_id` under `key`.
    pub fn new(key: &AuditKey, log_id: &str) -> Self {
        let salt = key.sign(&[b"credvault-audit identifier salt v1", log_id.as_bytes()]);
        let salt = Zeroizing::new(salt);
        Self {
            salt: hmac::Key::new(hmac::HMAC_SHA256, salt.as_ref()),
        }
    }

    /// `hmac-sha256:<64 hex>` for `value`.
    pub fn hash(&self, value: &str) -> String {
        let tag = hmac::sign(&self.salt, value.as_bytes());
        let mut s = String::with_capacity(HASHED_PREFIX.len() + 64);
        s.push_str(HASHED_PREFIX);
        s.push_str(&hex::encode(tag.as_ref()));
        s
    }
}

impl fmt::Debug for IdentifierHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdentifierHasher(<redacted>)")
    }
}

mod base64_engine {
    //! Key text decoding: 64 hex digits, or base64 in either alphabet, padded or not.

    use base64::Engine as _;
    use zeroize::Zeroizing;

    pub(super) fn decode_key_text(text: &str) -> Option<Zeroizing<[u8; 32]>> {
        let mut out = Zeroizing::new([0u8; 32]);
        if text.len() == 64 {
            return hex::decode_to_slice(text, out.as_mut()).ok().map(|()| out);
        }
        let body = text.strip_suffix('=').unwrap_or(text);
        let engines = [
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        for engine in engines {
            if let Ok(bytes) = engine.decode(body).map(Zeroizing::new) {
                if bytes.len() == 32 {
                    out.copy_from_slice(&bytes);
                    return Some(out);
                }
            }
        }
        None
    }
}
