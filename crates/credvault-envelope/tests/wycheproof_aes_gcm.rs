//! Wycheproof AES-GCM (`tests/data/wycheproof/aes_gcm_test.json`) on every backend.
//!
//! Cases with a 96-bit IV and 128-bit tag run: valid ones must reproduce `ct ‖ tag` exactly and
//! round-trip; invalid ones must fail to open. Cases with any other IV size must be rejected by
//! the API before any cryptography runs, and are counted. AES-192 on ring (which has no
//! AES-192) is likewise rejected at key setup and counted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use credvault_envelope::hazmat::{HazmatError, RawAesGcm};
use credvault_envelope::Backend;
use serde::Deserialize;

#[derive(Deserialize)]
struct File {
    #[serde(rename = "numberOfTests")]
    number_of_tests: usize,
    #[serde(rename = "testGroups")]
    groups: Vec<Group>,
}

#[derive(Deserialize)]
struct Group {
    #[serde(rename = "ivSize")]
    iv_size: usize,
    #[serde(rename = "keySize")]
    key_size: usize,
    #[serde(rename = "tagSize")]
    tag_size: usize,
    tests: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    #[serde(rename = "tcId")]
    id: u32,
    key: String,
    iv: String,
    aad: String,
    msg: String,
    ct: String,
    tag: String,
    result: String,
}

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

#[derive(Default, Debug)]
struct Counts {
    valid_passed: usize,
    invalid_rejected: usize,
    iv_rejected: usize,
    key_rejected: usize,
}

fn run(backend: Backend) -> Counts {
    let file: File =
        serde_json::from_str(include_str!("data/wycheproof/aes_gcm_test.json")).unwrap();
    let mut c = Counts::default();
    let mut seen = 0;
    for g in &file.groups {
        assert_eq!(g.tag_size, 128, "every Wycheproof GCM tag is 128 bits");
        for t in &g.tests {
            seen += 1;
            let (key, iv, aad, msg) = (h(&t.key), h(&t.iv), h(&t.aad), h(&t.msg));
            assert_eq!(key.len() * 8, g.key_size);
            let mut ct_tag = h(&t.ct);
            ct_tag.extend(h(&t.tag));
            let aead = match RawAesGcm::new(backend, &key) {
                Ok(a) => a,
                Err(HazmatError::UnsupportedKeyLength(24)) => {
                    c.key_rejected += 1;
                    continue;
                }
                Err(e) => panic!("tc {}: key setup failed: {e}", t.id),
            };
            if g.iv_size != 96 {
                // Must be refused before any crypto, in both directions.
                assert_eq!(
                    aead.seal(&iv, &aad, &msg),
                    Err(HazmatError::UnsupportedNonceLength(iv.len())),
                    "tc {}",
                    t.id
                );
                assert_eq!(
                    aead.open(&iv, &aad, &ct_tag),
                    Err(HazmatError::UnsupportedNonceLength(iv.len())),
                    "tc {}",
                    t.id
                );
                c.iv_rejected += 1;
                continue;
            }
            match t.result.as_str() {
                "valid" => {
                    assert_eq!(
                        aead.seal(&iv, &aad, &msg).unwrap(),
                        ct_tag,
                        "tc {} seal",
                        t.id
                    );
                    assert_eq!(
                        aead.open(&iv, &aad, &ct_tag).unwrap(),
                        msg,
                        "tc {} open",
                        t.id
                    );
                    c.valid_passed += 1;
                }
                "invalid" => {
                    assert!(
                        aead.open(&iv, &aad, &ct_tag).is_err(),
                        "tc {} must not open",
                        t.id
                    );
                    c.invalid_rejected += 1;
                }
                other => panic!("tc {}: unexpected result {other}", t.id),
            }
        }
    }
    assert_eq!(seen, file.number_of_tests);
    println!("wycheproof aes_gcm on {}: {c:?}", backend.name());
    c
}

#[test]
#[cfg(feature = "ring")]
fn wycheproof_aes_gcm_ring() {
    let c = run(Backend::Ring);
    // 96-bit IV cases: AES-128 40 valid + 27 invalid, AES-256 39 + 27. All 103 AES-192 cases
    // are refused at key setup (ring has no AES-192).
    assert_eq!(c.valid_passed, 40 + 39);
    assert_eq!(c.invalid_rejected, 27 * 2);
    assert_eq!(c.key_rejected, 103);
    assert_eq!(c.iv_rejected, 316 - 103 - 79 - 54);
}

#[test]
#[cfg(feature = "rustcrypto")]
fn wycheproof_aes_gcm_rustcrypto() {
    let c = run(Backend::RustCrypto);
    assert_eq!(c.valid_passed, 40 + 37 + 39);
    assert_eq!(c.invalid_rejected, 27 * 3);
    assert_eq!(c.key_rejected, 0);
    assert_eq!(c.iv_rejected, 316 - 116 - 81);
    // The README of the vectors: 116 valid and 81 invalid cases use 96-bit nonces.
}
