//! Base64 as Python's `base64.urlsafe_b64decode` reads it, so that credvault accepts exactly the
//! Fernet tokens and keys Python `cryptography` accepts (`docs/decisions/0005-fernet-base64.md`).
//!
//! Python translates `-`→`+` and `_`→`/`, then decodes non-strictly (CPython
//! `binascii.a2b_base64`): characters outside the alphabet are skipped, a complete padding
//! sequence ends the input (anything after it is ignored), unused trailing bits are ignored, and a
//! final group of 1 character or missing padding is an error. Non-ASCII text is refused (Python
//! raises on a non-ASCII `str`).
//!
//! Canonical input (what every encoder produces) takes a fast strict path through the SIMD
//! `base64-simd` crate; anything else falls back to the port, which yields the same bytes on
//! every input the strict decoder accepts.

use base64_simd::URL_SAFE;

/// Decodes like Python's `urlsafe_b64decode`. `None` where Python raises.
pub(crate) fn decode_python(text: &str) -> Option<Vec<u8>> {
    if let Ok(v) = URL_SAFE.decode_to_vec(text.as_bytes()) {
        return Some(v);
    }
    if !text.is_ascii() {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 3);
    let (mut quad_pos, mut left, mut pads) = (0u8, 0u8, 0u8);
    for &c in text.as_bytes() {
        if c == b'=' {
            if quad_pos >= 2 {
                pads += 1;
                if quad_pos + pads >= 4 {
                    return Some(out);
                }
            }
            continue;
        }
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => continue,
        };
        pads = 0;
        match quad_pos {
            0 => {
                quad_pos = 1;
                left = v;
            }
            1 => {
                quad_pos = 2;
                out.push((left << 2) | (v >> 4));
                left = v & 0x0f;
            }
            2 => {
                quad_pos = 3;
                out.push((left << 4) | (v >> 2));
                left = v & 0x03;
            }
            _ => {
                quad_pos = 0;
                out.push((left << 6) | v);
                left = 0;
            }
        }
    }
    (quad_pos == 0).then_some(out)
}

/// URL-safe base64 with padding (what Python's `urlsafe_b64encode` writes).
pub(crate) fn encode(bytes: &[u8]) -> String {
    URL_SAFE.encode_to_string(bytes)
}
