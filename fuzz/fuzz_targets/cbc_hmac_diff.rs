//! Differential: credvault's AES-CBC-HMAC-SHA2 (RFC 7518 §5.2) against the construction
//! composed directly from RustCrypto's `aes`, `cbc` and `hmac` crates.
//!
//! Input: algorithm byte, key, IV, AAD length byte, AAD, plaintext. Sealing with the same IV
//! gives the same bytes; each side opens the other's output; the input itself, read as a
//! sealed blob, opens on both sides or on neither, with the same plaintext.
#![no_main]

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use credvault_token::{hazmat, Algorithm, CbcHmacKey};
use hmac::{Mac, SimpleHmac};
use libfuzzer_sys::fuzz_target;

/// `MAC(mac_key, A ‖ IV ‖ E ‖ AL)`, truncated to half the key length.
fn tag<D>(mac_key: &[u8], aad: &[u8], iv: &[u8], e: &[u8], t_len: usize) -> Vec<u8>
where
    D: sha2::Digest + hmac::digest::core_api::BlockSizeUser,
{
    let mut mac = <SimpleHmac<D> as Mac>::new_from_slice(mac_key).expect("any key length");
    mac.update(aad);
    mac.update(iv);
    mac.update(e);
    mac.update(&((aad.len() as u64) * 8).to_be_bytes());
    mac.finalize().into_bytes()[..t_len].to_vec()
}

fn mac(alg: Algorithm, mac_key: &[u8], aad: &[u8], iv: &[u8], e: &[u8]) -> Vec<u8> {
    let t = alg.tag_len();
    match alg {
        Algorithm::A128CbcHs256 => tag::<sha2::Sha256>(mac_key, aad, iv, e, t),
        Algorithm::A192CbcHs384 => tag::<sha2::Sha384>(mac_key, aad, iv, e, t),
        _ => tag::<sha2::Sha512>(mac_key, aad, iv, e, t),
    }
}

fn encrypt(enc_key: &[u8], iv: &[u8; 16], pt: &[u8]) -> Vec<u8> {
    match enc_key.len() {
        16 => cbc::Encryptor::<aes::Aes128>::new_from_slices(enc_key, iv)
            .unwrap()
            .encrypt_padded_vec_mut::<Pkcs7>(pt),
        24 => cbc::Encryptor::<aes::Aes192>::new_from_slices(enc_key, iv)
            .unwrap()
            .encrypt_padded_vec_mut::<Pkcs7>(pt),
        _ => cbc::Encryptor::<aes::Aes256>::new_from_slices(enc_key, iv)
            .unwrap()
            .encrypt_padded_vec_mut::<Pkcs7>(pt),
    }
}

fn decrypt(enc_key: &[u8], iv: &[u8], e: &[u8]) -> Option<Vec<u8>> {
    match enc_key.len() {
        16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(enc_key, iv)
            .ok()?
            .decrypt_padded_vec_mut::<Pkcs7>(e)
            .ok(),
        24 => cbc::Decryptor::<aes::Aes192>::new_from_slices(enc_key, iv)
            .ok()?
            .decrypt_padded_vec_mut::<Pkcs7>(e)
            .ok(),
        _ => cbc::Decryptor::<aes::Aes256>::new_from_slices(enc_key, iv)
            .ok()?
            .decrypt_padded_vec_mut::<Pkcs7>(e)
            .ok(),
    }
}

fn reference_seal(alg: Algorithm, key: &[u8], iv: &[u8; 16], aad: &[u8], pt: &[u8]) -> Vec<u8> {
    let (mac_key, enc_key) = key.split_at(key.len() / 2);
    let e = encrypt(enc_key, iv, pt);
    let t = mac(alg, mac_key, aad, iv, &e);
    [iv.as_slice(), &e, &t].concat()
}

fn reference_open(alg: Algorithm, key: &[u8], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    let t_len = alg.tag_len();
    if sealed.len() < 16 + 16 + t_len || (sealed.len() - 16 - t_len) % 16 != 0 {
        return None;
    }
    let (mac_key, enc_key) = key.split_at(key.len() / 2);
    let (iv, rest) = sealed.split_at(16);
    let (e, t) = rest.split_at(rest.len() - t_len);
    let expected = mac(alg, mac_key, aad, iv, e);
    // A plain comparison is fine here: this is the reference, not the implementation under test.
    if expected != t {
        return None;
    }
    decrypt(enc_key, iv, e)
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let alg = credvault_token::fuzzing::algorithm(sel);
    let k = alg.key_len();
    if rest.len() < k + 17 {
        return;
    }
    let (key, rest) = rest.split_at(k);
    let mut iv = [0u8; 16];
    iv.copy_from_slice(&rest[..16]);
    let aad_len = usize::from(rest[16]).min(rest.len() - 17);
    let (aad, pt) = rest[17..].split_at(aad_len);
    let ours = CbcHmacKey::new(alg, key).expect("key of the algorithm's length");

    let expected = reference_seal(alg, key, &iv, aad, pt);
    let (e, t) = hazmat::cbc_hmac_seal_with_iv(&ours, &iv, aad, pt);
    assert_eq!([iv.as_slice(), &e, &t].concat(), expected, "seal differs");
    let opened = ours.open(aad, &expected).expect("we refuse the reference's output");
    assert_eq!(opened.expose_secret(), pt);
    let sealed = ours.seal(aad, pt).expect("seal");
    assert_eq!(reference_open(alg, key, aad, &sealed).as_deref(), Some(pt));

    // The plaintext bytes read as a sealed blob (almost always refused: both must agree).
    let a = ours.open(aad, pt).ok();
    let b = reference_open(alg, key, aad, pt);
    assert_eq!(a.as_ref().map(|p| p.expose_secret()), b.as_deref());
});
