//! **Hazardous:** caller-chosen IVs, for known-answer vectors only. A predictable or repeated
//! CBC IV leaks plaintext structure; the safe APIs draw IVs from a CSPRNG.

use crate::cbc_hmac::{CbcHmacKey, IV_LEN};
use crate::fernet::Fernet;

/// A Fernet token with a given IV and timestamp (Python's `_encrypt_from_parts`).
pub fn fernet_encrypt_with_iv(
    key: &Fernet,
    plaintext: &[u8],
    timestamp: u64,
    iv: &[u8; 16],
) -> String {
    key.encrypt_with_iv(plaintext, timestamp, iv)
}

/// RFC 7518 `(E, T)` for a given IV, as the RFC's test vectors state them.
pub fn cbc_hmac_seal_with_iv(
    key: &CbcHmacKey,
    iv: &[u8; IV_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> (Vec<u8>, Vec<u8>) {
    let sealed = key.seal_with_iv(iv, aad, plaintext);
    let t = key.algorithm().tag_len();
    let (e, tag) = sealed[IV_LEN..].split_at(sealed.len() - IV_LEN - t);
    (e.to_vec(), tag.to_vec())
}

/// Raw AES-CBC with PKCS#7 padding under a 16/24/32-byte key (for Wycheproof `aes_cbc_pkcs5`).
/// `None` for an unsupported key length.
pub fn aes_cbc_pkcs7_encrypt(key: &[u8], iv: &[u8; 16], plaintext: &[u8]) -> Option<Vec<u8>> {
    let etm = crate::etm::EtmKey::new(
        crate::etm::Cipher::from_key(key)?,
        crate::etm::MacKey::unused(),
    );
    let mut buf = plaintext.to_vec();
    etm.encrypt(iv, &mut buf, 0);
    Some(buf)
}

/// Raw AES-CBC decryption with PKCS#7 unpadding. `None` for a bad key length, a ciphertext that
/// is not whole blocks, or bad padding.
pub fn aes_cbc_pkcs7_decrypt(key: &[u8], iv: &[u8; 16], ciphertext: &[u8]) -> Option<Vec<u8>> {
    let etm = crate::etm::EtmKey::new(
        crate::etm::Cipher::from_key(key)?,
        crate::etm::MacKey::unused(),
    );
    let mut buf = ciphertext.to_vec();
    let n = etm.decrypt(iv, &mut buf)?;
    buf.truncate(n);
    Some(buf)
}

/// Constant-time check of a (possibly truncated, leftmost bytes) HMAC-SHA256 tag (for Wycheproof
/// `hmac_sha256`). An empty tag never verifies.
pub fn hmac_sha256_verify(key: &[u8], message: &[u8], tag: &[u8]) -> bool {
    match crate::etm::Cipher::from_key(&[0; 16]) {
        Some(cipher) => crate::etm::EtmKey::new(
            cipher,
            crate::etm::MacKey::S256(crate::hmac256::HmacSha256Key::new(key)),
        )
        .verify(&[message], tag),
        None => false,
    }
}
