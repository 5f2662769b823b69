//! Fernet (<https://github.com/fernet/spec/blob/master/Spec.md>), byte-compatible with Python
//! `cryptography`'s `Fernet` and `MultiFernet`, including its time checks:
//!
//! - with a TTL, a token is expired when `timestamp + ttl < now` (equality passes), and refused
//!   when `now + 60 < timestamp` (more than 60 s of clock skew into the future);
//! - without a TTL, no time check at all;
//! - token text is read as Python's `urlsafe_b64decode` reads it (see `b64`).
//!
//! Token: `base64url(0x80 ‖ timestamp u64 BE ‖ IV 16 ‖ AES-128-CBC-PKCS7 ciphertext ‖
//! HMAC-SHA256(signing key, everything before it))`. Key: base64url of signing key 16 ‖
//! encryption key 16.

use core::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use aes::cipher::KeyInit;
use zeroize::Zeroizing;

use crate::b64;
use crate::error::{InvalidToken, KeyError};
use crate::etm::{Cipher, EtmKey, MacKey, MAX_MAC_LEN};
use crate::hmac256::HmacSha256Key;
use crate::iv;
use crate::secret::Plaintext;

const VERSION: u8 = 0x80;
const HEADER: usize = 1 + 8 + 16;
const MAC_LEN: usize = 32;
/// Seconds a token's timestamp may lie in the future when a TTL is checked (Python's
/// `_MAX_CLOCK_SKEW`).
pub const MAX_CLOCK_SKEW: u64 = 60;
/// Longest token text accepted, in bytes (about 48 MiB of plaintext).
pub const MAX_TOKEN_LEN: usize = 64 << 20;
/// Longest plaintext [`Fernet::encrypt`] accepts.
pub const MAX_PLAINTEXT_LEN: usize = MAX_TOKEN_LEN / 4 * 3 - HEADER - MAC_LEN - 16;

/// Seconds since the Unix epoch (0 before it), as Python's `int(time.time())`.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A Fernet key: 16-byte HMAC-SHA256 signing key and 16-byte AES-128 encryption key.
///
/// Not `Clone`, `Debug` redacted, key bytes wiped on drop.
pub struct Fernet {
    etm: EtmKey,
    raw: Zeroizing<[u8; 32]>,
}

impl Fernet {
    /// A new random key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, KeyError> {
        let mut raw = Zeroizing::new([0u8; 32]);
        getrandom::fill(raw.as_mut()).map_err(|_| KeyError::Random)?;
        Ok(Self::from_raw(raw))
    }

    /// Parses a key the way Python's `Fernet(key)` does: URL-safe base64 (leniently) of exactly
    /// 32 bytes.
    pub fn new(key: &str) -> Result<Self, KeyError> {
        let bytes = Zeroizing::new(b64::decode_python(key).ok_or(KeyError::Base64)?);
        if bytes.len() != 32 {
            return Err(KeyError::Length {
                expected: 32,
                found: bytes.len(),
            });
        }
        let mut raw = Zeroizing::new([0u8; 32]);
        raw.copy_from_slice(&bytes);
        Ok(Self::from_raw(raw))
    }

    /// A key from its 32 raw bytes.
    pub fn from_bytes(key: &[u8; 32]) -> Self {
        Self::from_raw(Zeroizing::new(*key))
    }

    fn from_raw(raw: Zeroizing<[u8; 32]>) -> Self {
        let (sign, enc) = raw.split_at(16);
        // AES-128 takes exactly 16 bytes.
        let mac = HmacSha256Key::new(sign);
        let cipher = match aes::Aes128::new_from_slice(enc) {
            Ok(c) => c,
            Err(_) => unreachable!("split_at(16) of 32 bytes leaves 16"),
        };
        Self {
            etm: EtmKey::new(Cipher::A128(cipher), MacKey::S256(mac)),
            raw,
        }
    }

    /// The key as URL-safe base64, to store. It is the key: handle it like one.
    pub fn export_secret(&self) -> Zeroizing<String> {
        Zeroizing::new(b64::encode(self.raw.as_ref()))
    }

    /// Encrypts at the current time.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<String, KeyError> {
        self.encrypt_at(plaintext, unix_now())
    }

    /// Encrypts with a given timestamp (seconds since the Unix epoch).
    pub fn encrypt_at(&self, plaintext: &[u8], timestamp: u64) -> Result<String, KeyError> {
        let iv = iv::random_iv().ok_or(KeyError::Random)?;
        Ok(self.encrypt_with_iv(plaintext, timestamp, &iv))
    }

    /// The deterministic core; `hazmat` exposes it for the spec's `generate` vectors.
    pub(crate) fn encrypt_with_iv(
        &self,
        plaintext: &[u8],
        timestamp: u64,
        iv: &[u8; 16],
    ) -> String {
        let padded = (plaintext.len() / 16 + 1) * 16;
        // Exact capacity: the buffer never reallocates, so no copy of the plaintext is left
        // behind; the encryption overwrites it in place, so what is dropped is ciphertext.
        let mut buf = Vec::with_capacity(HEADER + padded + MAC_LEN);
        buf.push(VERSION);
        buf.extend_from_slice(&timestamp.to_be_bytes());
        buf.extend_from_slice(iv);
        buf.extend_from_slice(plaintext);
        let mut tag = [0u8; MAX_MAC_LEN];
        let n = self.etm.seal(iv, &mut buf, HEADER, &[], &[], &mut tag);
        buf.extend_from_slice(&tag[..n]);
        b64::encode(&buf)
    }

    /// Decrypts without any time check (Python's `decrypt(token)`).
    pub fn decrypt(&self, token: &str) -> Result<Plaintext, InvalidToken> {
        self.decrypt_at(token, None, 0)
    }

    /// Decrypts, refusing tokens older than `ttl` seconds or from the future (now from the clock).
    pub fn decrypt_with_ttl(&self, token: &str, ttl: u64) -> Result<Plaintext, InvalidToken> {
        self.decrypt_at(token, Some(ttl), unix_now())
    }

    /// Decrypts as at `now` (Python's `decrypt_at_time(token, ttl, now)` when `ttl` is given;
    /// `decrypt(token)` when it is `None`).
    pub fn decrypt_at(
        &self,
        token: &str,
        ttl: Option<u64>,
        now: u64,
    ) -> Result<Plaintext, InvalidToken> {
        let t = Decoded::parse(token)?;
        t.check_time(ttl, now)?;
        self.open(t)
    }

    /// The token's timestamp, only once its HMAC verified under this key.
    pub fn extract_timestamp(&self, token: &str) -> Result<u64, InvalidToken> {
        let t = Decoded::parse(token)?;
        self.verify(&t)?;
        Ok(t.timestamp)
    }

    fn verify(&self, t: &Decoded) -> Result<(), InvalidToken> {
        let (signed, tag) = t.signed_and_tag()?;
        if self.etm.verify(&[signed], tag) {
            Ok(())
        } else {
            Err(InvalidToken)
        }
    }

    /// Verifies and decrypts in one pass (`EtmKey::open`).
    fn open(&self, t: Decoded) -> Result<Plaintext, InvalidToken> {
        let mut data = t.data;
        let end = data.len() - MAC_LEN;
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&data[9..HEADER]);
        let mut tag = [0u8; MAC_LEN];
        tag.copy_from_slice(&data[end..]);
        data.truncate(end);
        // The buffer becomes a Plaintext before it holds any plaintext: every path wipes it.
        let mut out = Plaintext::new(data, 0..0);
        let n = self
            .etm
            .open(&iv, out.buf_mut(), HEADER, &[], &[], &tag)
            .ok_or(InvalidToken)?;
        out.set_range(HEADER..HEADER + n);
        Ok(out)
    }
}

impl fmt::Debug for Fernet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Fernet([REDACTED])")
    }
}

/// A base64-decoded token with its structure checked (version byte, minimum length).
#[derive(Clone)]
struct Decoded {
    data: Vec<u8>,
    timestamp: u64,
}

impl Decoded {
    fn parse(token: &str) -> Result<Self, InvalidToken> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(InvalidToken);
        }
        let data = b64::decode_python(token).ok_or(InvalidToken)?;
        // Version, timestamp, IV, at least one ciphertext block, MAC.
        if data.len() < HEADER + 16 + MAC_LEN || data[0] != VERSION {
            return Err(InvalidToken);
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&data[1..9]);
        Ok(Self {
            data,
            timestamp: u64::from_be_bytes(ts),
        })
    }

    fn check_time(&self, ttl: Option<u64>, now: u64) -> Result<(), InvalidToken> {
        if let Some(ttl) = ttl {
            // u128: Python's integers do not overflow, and neither may these sums.
            let (ts, ttl, now) = (u128::from(self.timestamp), u128::from(ttl), u128::from(now));
            if ts + ttl < now || now + u128::from(MAX_CLOCK_SKEW) < ts {
                return Err(InvalidToken);
            }
        }
        Ok(())
    }

    fn signed_and_tag(&self) -> Result<(&[u8], &[u8]), InvalidToken> {
        let split = self.data.len().checked_sub(MAC_LEN).ok_or(InvalidToken)?;
        Ok(self.data.split_at(split))
    }
}

/// Several Fernet keys: encrypts with the first, decrypts with any (Python's `MultiFernet`), and
/// re-encrypts old tokens under the first key keeping their timestamps.
pub struct MultiFernet {
    keys: Vec<Fernet>,
}

/// What [`MultiFernet::rotate_all`] did with each token, in input order.
#[derive(Debug)]
pub struct RotationReport {
    /// One entry per input token: the new token, or why it could not be rotated.
    pub results: Vec<Result<String, InvalidToken>>,
}

impl RotationReport {
    /// Indices of the tokens that failed.
    pub fn failed(&self) -> Vec<usize> {
        self.results
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_err())
            .map(|(i, _)| i)
            .collect()
    }

    /// Number of tokens rotated.
    pub fn rotated(&self) -> usize {
        self.results.iter().filter(|r| r.is_ok()).count()
    }
}

impl MultiFernet {
    /// Keys in priority order; the first encrypts.
    pub fn new(keys: Vec<Fernet>) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::NoKeys);
        }
        Ok(Self { keys })
    }

    /// The keys, primary first.
    pub fn keys(&self) -> &[Fernet] {
        &self.keys
    }

    fn primary(&self) -> &Fernet {
        &self.keys[0]
    }

    /// Encrypts with the primary key at the current time.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<String, KeyError> {
        self.primary().encrypt(plaintext)
    }

    /// Encrypts with the primary key at `timestamp`.
    pub fn encrypt_at(&self, plaintext: &[u8], timestamp: u64) -> Result<String, KeyError> {
        self.primary().encrypt_at(plaintext, timestamp)
    }

    /// Decrypts with whichever key verifies, without a time check.
    pub fn decrypt(&self, token: &str) -> Result<Plaintext, InvalidToken> {
        self.decrypt_at(token, None, 0)
    }

    /// Decrypts with whichever key verifies, with a TTL against the clock.
    pub fn decrypt_with_ttl(&self, token: &str, ttl: u64) -> Result<Plaintext, InvalidToken> {
        self.decrypt_at(token, Some(ttl), unix_now())
    }

    /// Decrypts as at `now`, with an optional TTL.
    pub fn decrypt_at(
        &self,
        token: &str,
        ttl: Option<u64>,
        now: u64,
    ) -> Result<Plaintext, InvalidToken> {
        let t = Decoded::parse(token)?;
        t.check_time(ttl, now)?;
        self.open_any(t)
    }

    /// Opens with the first key that verifies: one MAC-and-decrypt pass per key tried, on a
    /// copy for all but the last key (a failed pass wipes its buffer).
    fn open_any(&self, t: Decoded) -> Result<Plaintext, InvalidToken> {
        let (last, rest) = self.keys.split_last().ok_or(InvalidToken)?;
        for k in rest {
            if let Ok(p) = k.open(t.clone()) {
                return Ok(p);
            }
        }
        last.open(t)
    }

    /// The timestamp of a token that verifies under any key.
    pub fn extract_timestamp(&self, token: &str) -> Result<u64, InvalidToken> {
        let t = Decoded::parse(token)?;
        self.verifying_key(&t)?;
        Ok(t.timestamp)
    }

    fn verifying_key(&self, t: &Decoded) -> Result<&Fernet, InvalidToken> {
        self.keys
            .iter()
            .find(|k| k.verify(t).is_ok())
            .ok_or(InvalidToken)
    }

    /// Re-encrypts `token` under the primary key with a fresh IV, keeping its original
    /// timestamp (no TTL check, as Python's `MultiFernet.rotate`).
    pub fn rotate(&self, token: &str) -> Result<String, InvalidToken> {
        let t = Decoded::parse(token)?;
        let ts = t.timestamp;
        let pt = self.open_any(t)?;
        let iv = iv::random_iv().ok_or(InvalidToken)?;
        Ok(self.primary().encrypt_with_iv(pt.expose_secret(), ts, &iv))
    }

    /// Rotates every token, reporting which failed; one bad token does not stop the others.
    pub fn rotate_all<'a>(&self, tokens: impl IntoIterator<Item = &'a str>) -> RotationReport {
        RotationReport {
            results: tokens.into_iter().map(|t| self.rotate(t)).collect(),
        }
    }
}

impl fmt::Debug for MultiFernet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MultiFernet([REDACTED; {} keys])", self.keys.len())
    }
}
