//! Frozen format vectors (docs/formats.md), produced by an independent Python implementation
//! (`tests/data/gen_vectors.py`, Python `cryptography`). Any change to the byte layout of
//! envelope v1 or v2 or wrapped key v1 breaks these tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use credvault_envelope::hazmat::{seal_envelope_v1_with_nonce, seal_envelope_with_nonce};
use credvault_envelope::{
    Backend, DataKey, EncryptionContext, EnvelopeHeader, KeyId, LocalKeyring, MasterKey,
    OpeningKey, SealingKey, WrappedKey,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct EnvFile {
    tests: Vec<EnvCase>,
}

#[derive(Deserialize)]
struct EnvCase {
    name: String,
    key: String,
    key_id: String,
    nonce: String,
    context: Vec<(String, String)>,
    context_encoded: String,
    /// v2 only.
    #[serde(default)]
    context_digest: Option<String>,
    plaintext: String,
    envelope: String,
}

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn ctx(pairs: &[(String, String)]) -> EncryptionContext {
    let mut c = EncryptionContext::new();
    for (k, v) in pairs {
        c.insert(k.clone(), v.clone()).unwrap();
    }
    c
}

type SealWithNonce = fn(
    &SealingKey,
    &[u8; 12],
    &[u8],
    &EncryptionContext,
) -> Result<Vec<u8>, credvault_envelope::SealError>;

/// Checks every case of a vector file of envelope `version` on every backend: the context
/// encoding (and v2's digest), the header, opening, and sealing with the case's nonce.
fn check_envelope_file(json: &str, cases: usize, version: u8, seal: SealWithNonce) {
    let file: EnvFile = serde_json::from_str(json).unwrap();
    assert_eq!(file.tests.len(), cases);
    for backend in Backend::ALL {
        for t in &file.tests {
            let id = KeyId::from_hex(&t.key_id).unwrap();
            let key = DataKey::from_slice(id, &h(&t.key)).unwrap();
            let c = ctx(&t.context);
            assert_eq!(
                hex::encode(c.canonical_bytes()),
                t.context_encoded,
                "{}",
                t.name
            );
            if let Some(digest) = &t.context_digest {
                assert_eq!(
                    &hex::encode(c.v2_digest()),
                    digest,
                    "{}: context digest",
                    t.name
                );
            }
            let expected = h(&t.envelope);

            let header = EnvelopeHeader::parse(&expected).unwrap();
            assert_eq!(header.key_id(), id, "{}", t.name);
            assert_eq!(header.version(), version);
            assert_eq!(hex::encode(header.nonce()), t.nonce);
            assert_eq!(header.plaintext_len(), t.plaintext.len() / 2);

            let opener = OpeningKey::with_backend(&key, *backend);
            let opened = opener.open(&expected, &c).unwrap();
            let want = h(&t.plaintext);
            assert_eq!(
                opened.expose_secret(),
                &want[..],
                "{} on {backend:?}",
                t.name
            );

            let sealer = SealingKey::with_backend(&key, *backend);
            let nonce: [u8; 12] = h(&t.nonce).try_into().unwrap();
            let sealed = seal(&sealer, &nonce, &want, &c).unwrap();
            assert_eq!(
                hex::encode(sealed),
                t.envelope,
                "{} seal on {backend:?}",
                t.name
            );

            // The version byte is authenticated: relabelled as the other version, the same
            // bytes do not open.
            let mut relabelled = expected.clone();
            relabelled[0] = 3 - version;
            assert!(opener.open(&relabelled, &c).is_err(), "{}", t.name);
        }
    }
}

#[test]
fn envelope_v1_vectors() {
    check_envelope_file(
        include_str!("data/envelope_v1.json"),
        3,
        1,
        seal_envelope_v1_with_nonce,
    );
}

#[test]
fn envelope_v2_vectors() {
    check_envelope_file(
        include_str!("data/envelope_v2.json"),
        4,
        2,
        seal_envelope_with_nonce,
    );
}

#[test]
fn v1_and_v2_of_the_same_input_differ_only_in_the_associated_data() {
    let v1: EnvFile = serde_json::from_str(include_str!("data/envelope_v1.json")).unwrap();
    let v2: EnvFile = serde_json::from_str(include_str!("data/envelope_v2.json")).unwrap();
    for (a, b) in v1.tests.iter().zip(&v2.tests) {
        assert_eq!(a.name, b.name);
        let (a, b) = (h(&a.envelope), h(&b.envelope));
        assert_eq!((a[0], b[0]), (1, 2));
        assert_eq!(a.len(), b.len());
        // Same header after the version, same nonce, same ciphertext (CTR mode does not
        // depend on the associated data); only the tag differs.
        let tag = a.len() - 16;
        assert_eq!(a[1..tag], b[1..tag]);
        assert_ne!(a[tag..], b[tag..]);
    }
}

#[derive(Deserialize)]
struct WrapFile {
    keyring_text: String,
    tests: Vec<WrapCase>,
}

#[derive(Deserialize)]
struct WrapCase {
    name: String,
    master_version: u32,
    context: Vec<(String, String)>,
    data_key_id: String,
    data_key: String,
    wrapped: String,
}

#[test]
fn wrapped_key_v1_vectors() {
    let file: WrapFile = serde_json::from_str(include_str!("data/wrapped_key_v1.json")).unwrap();
    assert_eq!(file.tests.len(), 2);
    for backend in Backend::ALL {
        let keyring = LocalKeyring::from_secret_text(&file.keyring_text)
            .unwrap()
            .with_backend(*backend);
        assert_eq!(keyring.active(), 2);
        for t in &file.tests {
            let w = WrappedKey::parse(&h(&t.wrapped)).unwrap();
            assert_eq!(w.as_bytes(), &h(&t.wrapped)[..]);
            assert_eq!(w.master_key().provider, "local");
            assert_eq!(w.master_key().version, t.master_version, "{}", t.name);
            assert_eq!(w.data_key_id().to_string(), t.data_key_id);
            let dek = keyring.unwrap(&w, &ctx(&t.context)).unwrap();
            assert_eq!(
                hex::encode(dek.expose_secret()),
                t.data_key,
                "{} on {backend:?}",
                t.name
            );
            let other = ctx(&[("tenant".into(), "someone-else".into())]);
            assert!(keyring.unwrap(&w, &other).is_err());
        }
    }
}
