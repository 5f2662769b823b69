//! Authenticator secrets, parsed leniently from what users paste.

use core::fmt;

use zeroize::Zeroizing;

use crate::error::OtpError;

/// Largest secret accepted (HMAC keys longer than a block are hashed anyway).
pub const MAX_SECRET_LEN: usize = 256;
/// RFC 4226 §4: secrets should be at least 128 bits.
pub const RECOMMENDED_MIN_BITS: usize = 128;

/// The shared secret of an authenticator: wiped on drop, redacted in `Debug`, not `Clone` or
/// serializable; the bytes only through [`expose_secret`](Self::expose_secret).
pub struct TotpSecret(Zeroizing<Vec<u8>>);

impl TotpSecret {
    /// Parses base32 as users paste it: any case, spaces or dashes anywhere, with or without
    /// `=` padding. Short keys (under 128 bits, common on real sites) are accepted; see
    /// [`is_below_recommended`](Self::is_below_recommended).
    pub fn parse(text: &str) -> Result<Self, OtpError> {
        let mut clean = Zeroizing::new(String::with_capacity(text.len()));
        for c in text.chars() {
            match c {
                ' ' | '\t' | '\r' | '\n' | '-' => {}
                _ => clean.push(c.to_ascii_uppercase()),
            }
        }
        while clean.ends_with('=') {
            clean.pop();
        }
        if clean.is_empty() {
            return Err(OtpError::MissingSecret);
        }
        if let Some(position) = clean
            .bytes()
            .position(|b| !matches!(b, b'A'..=b'Z' | b'2'..=b'7'))
        {
            return Err(OtpError::BadBase32 { position });
        }
        // 8 characters carry 5 bytes; lengths 1, 3 and 6 mod 8 cannot come from whole bytes.
        if matches!(clean.len() % 8, 1 | 3 | 6) {
            return Err(OtpError::BadBase32 {
                position: clean.len() - 1,
            });
        }
        let bytes = decode_base32(clean.as_bytes());
        Self::from_bytes(&bytes)
    }

    /// A secret from raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, OtpError> {
        if bytes.is_empty() {
            return Err(OtpError::MissingSecret);
        }
        if bytes.len() > MAX_SECRET_LEN {
            return Err(OtpError::SecretTooLong {
                len: bytes.len(),
                max: MAX_SECRET_LEN,
            });
        }
        Ok(Self(Zeroizing::new(bytes.to_vec())))
    }

    /// A secret from hex (either case; spaces ignored).
    pub fn from_hex(text: &str) -> Result<Self, OtpError> {
        let digits: Zeroizing<Vec<u8>> =
            Zeroizing::new(text.bytes().filter(|b| !b.is_ascii_whitespace()).collect());
        if !digits.len().is_multiple_of(2) {
            return Err(OtpError::BadHex);
        }
        let mut out = Zeroizing::new(Vec::with_capacity(digits.len() / 2));
        for pair in digits.chunks_exact(2) {
            let hi = (pair[0] as char).to_digit(16).ok_or(OtpError::BadHex)?;
            let lo = (pair[1] as char).to_digit(16).ok_or(OtpError::BadHex)?;
            out.push((hi * 16 + lo) as u8);
        }
        Self::from_bytes(&out)
    }

    /// A new 160-bit secret from the operating system's CSPRNG, for enrolling accounts.
    pub fn generate() -> Result<Self, OtpError> {
        let mut b = Zeroizing::new(vec![0u8; 20]);
        getrandom::fill(&mut b).map_err(|_| OtpError::BadUri {
            reason: "the operating system random number generator is unavailable",
        })?;
        Ok(Self(b))
    }

    /// True for secrets under 128 bits: they still generate codes, but RFC 4226 recommends more.
    pub fn is_below_recommended(&self) -> bool {
        self.0.len() * 8 < RECOMMENDED_MIN_BITS
    }

    /// Length in bits.
    pub fn bits(&self) -> usize {
        self.0.len() * 8
    }

    /// Unpadded upper-case base32 (what authenticator apps show). It is the secret.
    pub fn to_base32(&self) -> Zeroizing<String> {
        Zeroizing::new(encode_base32(&self.0))
    }

    /// The raw bytes.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TotpSecret([REDACTED; {} bits])", self.bits())
    }
}

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 decode of validated, unpadded, upper-case input.
fn decode_base32(s: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(s.len() * 5 / 8));
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in s {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            _ => c - b'2' + 26,
        };
        acc = (acc << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
        acc &= (1 << bits) - 1;
    }
    out
}

fn encode_base32(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len().div_ceil(5) * 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &byte in b {
        acc = (acc << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}
