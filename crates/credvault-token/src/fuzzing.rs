//! Entry points for the fuzz targets under `fuzz/` (not a stable API).

use crate::{Algorithm, CbcHmacKey, Fernet, MultiFernet};

/// Decodes and verifies arbitrary text as a Fernet token, with and without a TTL, under one key
/// and a two-key MultiFernet.
pub fn fernet_token(data: &[u8]) {
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    let key = Fernet::from_bytes(&[7; 32]);
    let _ = key.decrypt(text);
    let _ = key.decrypt_at(text, Some(60), 499_162_800);
    let _ = key.extract_timestamp(text);
    if let Ok(multi) = MultiFernet::new(vec![
        Fernet::from_bytes(&[1; 32]),
        Fernet::from_bytes(&[7; 32]),
    ]) {
        let _ = multi.rotate(text);
    }
}

/// The RFC 7518 algorithm a fuzz input's selector byte picks (`sel % 3`).
pub fn algorithm(sel: u8) -> Algorithm {
    match sel % 3 {
        0 => Algorithm::A128CbcHs256,
        1 => Algorithm::A192CbcHs384,
        _ => Algorithm::A256CbcHs512,
    }
}

/// Opens arbitrary bytes (first byte picks the algorithm) as `IV ‖ E ‖ T`.
pub fn cbc_hmac_open(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let alg = algorithm(sel);
    if let Ok(k) = CbcHmacKey::new(alg, &vec![3u8; alg.key_len()]) {
        let _ = k.open(b"aad", rest);
    }
}
