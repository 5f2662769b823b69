//! Properties of credvault-token alone (1,024 cases each).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::engine::general_purpose::URL_SAFE;
use base64::Engine;
use credvault_token::{Algorithm, CbcHmacKey, Fernet, MultiFernet};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 1024,
        ..ProptestConfig::default()
    }
}

fn alg() -> impl Strategy<Value = Algorithm> {
    prop_oneof![
        Just(Algorithm::A128CbcHs256),
        Just(Algorithm::A192CbcHs384),
        Just(Algorithm::A256CbcHs512)
    ]
}

proptest! {
    #![proptest_config(config())]

    /// The seal path chains CBC itself (one AES backend for the whole message); it must agree
    /// with the `cbc` crate's encryptor on every key size, across several 256-byte chunks.
    #[test]
    fn raw_cbc_encryption_matches_the_cbc_crate(
        key_len in prop_oneof![Just(16usize), Just(24), Just(32)], key in any::<[u8; 32]>(),
        iv in any::<[u8; 16]>(), pt in prop::collection::vec(any::<u8>(), 0..1100)
    ) {
        use aes::cipher::{BlockEncryptMut, KeyIvInit};
        use cbc::cipher::block_padding::Pkcs7;
        let key = &key[..key_len];
        let expected = match key_len {
            16 => cbc::Encryptor::<aes::Aes128>::new_from_slices(key, &iv).unwrap().encrypt_padded_vec_mut::<Pkcs7>(&pt),
            24 => cbc::Encryptor::<aes::Aes192>::new_from_slices(key, &iv).unwrap().encrypt_padded_vec_mut::<Pkcs7>(&pt),
            _ => cbc::Encryptor::<aes::Aes256>::new_from_slices(key, &iv).unwrap().encrypt_padded_vec_mut::<Pkcs7>(&pt),
        };
        let ours = credvault_token::hazmat::aes_cbc_pkcs7_encrypt(key, &iv, &pt).unwrap();
        prop_assert_eq!(&ours, &expected);
        let back = credvault_token::hazmat::aes_cbc_pkcs7_decrypt(key, &iv, &ours).unwrap();
        prop_assert_eq!(back, pt);
    }

    #[test]
    fn multifernet_rotate_keeps_plaintext_and_timestamp(
        old in any::<[u8; 32]>(), new in any::<[u8; 32]>(), pt in prop::collection::vec(any::<u8>(), 0..200), ts in any::<u64>()
    ) {
        prop_assume!(old != new);
        let token = Fernet::from_bytes(&old).encrypt_at(&pt, ts).unwrap();
        let multi = MultiFernet::new(vec![Fernet::from_bytes(&new), Fernet::from_bytes(&old)]).unwrap();
        let rotated = multi.rotate(&token).unwrap();
        let primary = Fernet::from_bytes(&new);
        let got = primary.decrypt(&rotated).unwrap();
        prop_assert_eq!(got.expose_secret(), &pt[..]);
        prop_assert_eq!(primary.extract_timestamp(&rotated).unwrap(), ts);
        prop_assert!(Fernet::from_bytes(&old).decrypt(&rotated).is_err(), "rotated token is under the new key only");
        prop_assert_ne!(&rotated, &token);
        // Rotating again keeps it stable in content.
        let twice = multi.rotate(&rotated).unwrap();
        let got = primary.decrypt(&twice).unwrap();
        prop_assert_eq!(got.expose_secret(), &pt[..]);
        prop_assert_eq!(primary.extract_timestamp(&twice).unwrap(), ts);
    }

    #[test]
    fn fernet_every_bit_flip_fails(key in any::<[u8; 32]>(), pt in prop::collection::vec(any::<u8>(), 0..40)) {
        let f = Fernet::from_bytes(&key);
        let multi = MultiFernet::new(vec![Fernet::from_bytes(&[0; 32]), Fernet::from_bytes(&key)]).unwrap();
        let raw = URL_SAFE.decode(f.encrypt_at(&pt, 1_700_000_000).unwrap()).unwrap();
        for bit in 0..raw.len() * 8 {
            let mut t = raw.clone();
            t[bit / 8] ^= 1 << (bit % 8);
            let tok = URL_SAFE.encode(&t);
            prop_assert!(f.decrypt(&tok).is_err(), "bit {} accepted", bit);
            prop_assert!(multi.rotate(&tok).is_err(), "bit {} rotated", bit);
        }
    }

    #[test]
    fn cbc_hmac_round_trip_and_tamper(alg in alg(), key in prop::collection::vec(any::<u8>(), 64), aad in prop::collection::vec(any::<u8>(), 0..64), pt in prop::collection::vec(any::<u8>(), 0..100)) {
        let k = CbcHmacKey::new(alg, &key[..alg.key_len()]).unwrap();
        let sealed = k.seal(&aad, &pt).unwrap();
        prop_assert_eq!(sealed.len(), 16 + (pt.len() / 16 + 1) * 16 + alg.tag_len());
        let got = k.open(&aad, &sealed).unwrap();
        prop_assert_eq!(got.expose_secret(), &pt[..]);
        for bit in 0..sealed.len() * 8 {
            let mut t = sealed.clone();
            t[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(k.open(&aad, &t).is_err(), "bit {} accepted", bit);
        }
        for len in 0..sealed.len() {
            prop_assert!(k.open(&aad, &sealed[..len]).is_err());
        }
        let mut other = aad.clone();
        other.push(0);
        prop_assert!(k.open(&other, &sealed).is_err(), "associated data is bound");
        prop_assert_ne!(k.seal(&aad, &pt).unwrap(), sealed, "random IVs");
    }

    #[test]
    fn arbitrary_input_never_panics(data in prop::collection::vec(any::<u8>(), 0..400)) {
        credvault_token::fuzzing::fernet_token(&data);
        credvault_token::fuzzing::cbc_hmac_open(&data);
        // Keys parse or fail with a typed error, never panic.
        let _ = Fernet::new(&String::from_utf8_lossy(&data));
    }
}

#[test]
fn rotate_all_reports_failures_in_order() {
    let old = Fernet::from_bytes(&[1; 32]);
    let good: Vec<String> = (0..3)
        .map(|i| old.encrypt_at(format!("s{i}").as_bytes(), 100 + i).unwrap())
        .collect();
    let tokens = [
        good[0].as_str(),
        "not-a-token",
        good[1].as_str(),
        "",
        good[2].as_str(),
    ];
    let multi = MultiFernet::new(vec![
        Fernet::from_bytes(&[2; 32]),
        Fernet::from_bytes(&[1; 32]),
    ])
    .unwrap();
    let report = multi.rotate_all(tokens);
    assert_eq!(report.failed(), vec![1, 3]);
    assert_eq!(report.rotated(), 3);
    let primary = Fernet::from_bytes(&[2; 32]);
    for (i, r) in [(0usize, 0u64), (2, 1), (4, 2)] {
        let t = report.results[i].as_ref().unwrap();
        assert_eq!(
            primary.decrypt(t).unwrap().expose_secret(),
            format!("s{r}").as_bytes()
        );
        assert_eq!(primary.extract_timestamp(t).unwrap(), 100 + r);
    }
}

#[test]
fn keys_errors_and_redaction() {
    assert_eq!(
        Fernet::new("c2hvcnQ=").unwrap_err(),
        credvault_token::KeyError::Length {
            expected: 32,
            found: 5
        }
    );
    assert_eq!(
        Fernet::new("a").unwrap_err(),
        credvault_token::KeyError::Base64
    );
    assert!(MultiFernet::new(vec![]).is_err());
    assert!(matches!(
        CbcHmacKey::new(Algorithm::A128CbcHs256, &[0; 31]),
        Err(credvault_token::KeyError::Length {
            expected: 32,
            found: 31
        })
    ));
    let key = Fernet::generate().unwrap();
    let secret = key.export_secret();
    let again = Fernet::new(&secret).unwrap();
    let pt = again
        .decrypt(&key.encrypt(b"CANARY-secret").unwrap())
        .unwrap();
    for dbg in [
        format!("{key:?}"),
        format!("{pt:?}"),
        format!(
            "{:?}",
            CbcHmacKey::generate(Algorithm::A256CbcHs512).unwrap()
        ),
    ] {
        assert!(
            !dbg.contains(secret.as_str()) && !dbg.contains("CANARY"),
            "{dbg}"
        );
    }
    // extract_timestamp only after the HMAC checks.
    let other = Fernet::from_bytes(&[9; 32]);
    assert!(other
        .extract_timestamp(&key.encrypt_at(b"x", 5).unwrap())
        .is_err());
}
