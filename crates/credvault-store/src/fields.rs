//! The plaintext inside a credential's envelope: its secret fields, in a small versioned
//! binary encoding ("Secret fields v1" in docs/formats.md) that decodes without copying, so
//! values stay in the one buffer that is wiped on drop.
//!
//! ```text
//! 0x01                      version
//! repeated:
//!   u8     name length (1..=128)
//!   bytes  name (UTF-8)
//!   u32 BE value length (0..=65536)
//!   bytes  value (UTF-8)
//! ```
//! Names are distinct and in the order written. A client sealing a credential itself encodes
//! its secret fields with [`encode_secret_fields`].

use zeroize::Zeroizing;

use crate::error::StoreError;

/// Encoding version.
pub const SECRET_FIELDS_VERSION: u8 = 1;
/// Most fields in one credential.
pub const MAX_SECRET_FIELDS: usize = 64;
/// Longest field name.
pub const MAX_FIELD_NAME_LEN: usize = 128;
/// Longest field value.
pub const MAX_FIELD_VALUE_LEN: usize = 65_536;

fn invalid(reason: &str) -> StoreError {
    StoreError::Invalid {
        what: "secret fields",
        reason: reason.into(),
    }
}

/// Encodes secret fields (name, value) into a wiping buffer.
///
/// # Errors
/// [`StoreError::Invalid`] for an empty, long or repeated name, a long value, or too many
/// fields.
pub fn encode_secret_fields<'a>(
    fields: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let fields: Vec<(&str, &str)> = fields.into_iter().collect();
    if fields.len() > MAX_SECRET_FIELDS {
        return Err(invalid("more than 64 fields"));
    }
    let size = 1 + fields
        .iter()
        .map(|(k, v)| 5 + k.len() + v.len())
        .sum::<usize>();
    let mut out = Zeroizing::new(Vec::with_capacity(size));
    out.push(SECRET_FIELDS_VERSION);
    for (i, (k, v)) in fields.iter().enumerate() {
        if k.is_empty() || k.len() > MAX_FIELD_NAME_LEN {
            return Err(invalid("a field name is empty or longer than 128 bytes"));
        }
        if v.len() > MAX_FIELD_VALUE_LEN {
            return Err(invalid("a field value is longer than 65536 bytes"));
        }
        if fields[..i].iter().any(|(p, _)| p == k) {
            return Err(invalid("a field name appears twice"));
        }
        out.push(k.len() as u8);
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    Ok(out)
}

/// Decodes secret fields, borrowing names and values from `bytes`.
///
/// # Errors
/// [`StoreError::Invalid`] naming the first problem (never a value).
pub fn decode_secret_fields(bytes: &[u8]) -> Result<Vec<(&str, &str)>, StoreError> {
    let (&v, mut rest) = bytes.split_first().ok_or_else(|| invalid("empty"))?;
    if v != SECRET_FIELDS_VERSION {
        return Err(invalid("unknown version"));
    }
    let mut out: Vec<(&str, &str)> = Vec::new();
    while let Some((&n, r)) = rest.split_first() {
        let n = usize::from(n);
        if n == 0 || n > MAX_FIELD_NAME_LEN || r.len() < n + 4 {
            return Err(invalid("truncated or bad field name"));
        }
        let name = std::str::from_utf8(&r[..n]).map_err(|_| invalid("name is not UTF-8"))?;
        let mut len = [0u8; 4];
        len.copy_from_slice(&r[n..n + 4]);
        let len = u32::from_be_bytes(len) as usize;
        let r = &r[n + 4..];
        if len > MAX_FIELD_VALUE_LEN || r.len() < len {
            return Err(invalid("truncated or long value"));
        }
        let value = std::str::from_utf8(&r[..len]).map_err(|_| invalid("value is not UTF-8"))?;
        if out.len() >= MAX_SECRET_FIELDS {
            return Err(invalid("more than 64 fields"));
        }
        if out.iter().any(|(p, _)| *p == name) {
            return Err(invalid("a field name appears twice"));
        }
        out.push((name, value));
        rest = &r[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frozen_vector() {
        // Written by hand from the layout above, not by the encoder.
        let expected: &[u8] = b"\x01\x08password\x00\x00\x00\x06hunter\x03key\x00\x00\x00\x00";
        let enc = encode_secret_fields([("password", "hunter"), ("key", "")]).unwrap();
        assert_eq!(&enc[..], expected);
        assert_eq!(
            decode_secret_fields(expected).unwrap(),
            vec![("password", "hunter"), ("key", "")]
        );
    }

    #[test]
    fn rejects() {
        for bad in [
            &b""[..],
            b"\x02",
            b"\x01\x00",
            b"\x01\x01a\x00\x00\x00\x05abc",
            b"\x01\x01a\x00\x00\x00\x00\x01a\x00\x00\x00\x00",
            b"\x01\x01\xff\x00\x00\x00\x00",
        ] {
            assert!(decode_secret_fields(bad).is_err(), "{bad:?}");
        }
        assert!(encode_secret_fields([("a", "x"), ("a", "y")]).is_err());
        assert!(encode_secret_fields([("", "x")]).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(fields in proptest::collection::btree_map("[a-z_]{1,20}", ".{0,40}", 0..10)) {
            let v: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let enc = encode_secret_fields(v.iter().copied()).unwrap();
            prop_assert_eq!(decode_secret_fields(&enc).unwrap(), v);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_secret_fields(&bytes);
        }
    }
}
