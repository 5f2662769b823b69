//! Property tests (1,024 cases each), run on every compiled backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use credvault_envelope::{
    Backend, DataKey, EncryptionContext, KeyId, LocalKeyring, MasterKey, OpenError, SealingKey,
    OVERHEAD,
};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 1024,
        ..ProptestConfig::default()
    }
}

fn key(seed: u8) -> DataKey {
    DataKey::from_bytes(
        KeyId::from_bytes([seed; 16]),
        &[seed.wrapping_mul(31).wrapping_add(7); 32],
    )
}

fn ctx(tenant: &str, field: &str) -> EncryptionContext {
    EncryptionContext::new()
        .with("tenant", tenant)
        .unwrap()
        .with("credential", "cred-1")
        .unwrap()
        .with("field", field)
        .unwrap()
}

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9_-]{1,24}"
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn round_trip_up_to_64k(pt in prop::collection::vec(any::<u8>(), 0..=65536), seed in any::<u8>(), t in name(), f in name()) {
        let k = key(seed);
        let c = ctx(&t, &f);
        for b in Backend::ALL {
            let s = SealingKey::with_backend(&k, *b);
            let env = s.seal(&pt, &c).unwrap();
            prop_assert_eq!(env.len(), pt.len() + OVERHEAD);
            let opened = s.open(&env, &c).unwrap();
            prop_assert_eq!(opened.expose_secret(), &pt[..]);
            // Cross-backend: sealed on one, opened on every other.
            for other in Backend::ALL {
                let opened = SealingKey::with_backend(&k, *other).open(&env, &c).unwrap();
                prop_assert_eq!(opened.expose_secret(), &pt[..]);
            }
        }
    }

    #[test]
    fn every_bit_flip_fails(pt in prop::collection::vec(any::<u8>(), 0..48), seed in any::<u8>()) {
        let k = key(seed);
        let c = ctx("acme", "password");
        for b in Backend::ALL {
            let s = SealingKey::with_backend(&k, *b);
            let env = s.seal(&pt, &c).unwrap();
            for bit in 0..env.len() * 8 {
                let mut t = env.clone();
                t[bit / 8] ^= 1 << (bit % 8);
                prop_assert!(s.open(&t, &c).is_err(), "bit {} of {} opened", bit, env.len() * 8);
            }
        }
    }

    #[test]
    fn any_context_change_fails(pt in prop::collection::vec(any::<u8>(), 0..128), t in name(), f in name(), t2 in name(), f2 in name()) {
        let k = key(1);
        let c = ctx(&t, &f);
        for b in Backend::ALL {
            let s = SealingKey::with_backend(&k, *b);
            let env = s.seal(&pt, &c).unwrap();
            if t2 != t {
                prop_assert!(matches!(s.open(&env, &ctx(&t2, &f)), Err(OpenError::Decrypt(_))));
            }
            if f2 != f {
                prop_assert!(matches!(s.open(&env, &ctx(&t, &f2)), Err(OpenError::Decrypt(_))));
            }
            // An extra entry, or a missing one, also fails.
            let extra = ctx(&t, &f).with("environment", "staging").unwrap();
            prop_assert!(s.open(&env, &extra).is_err());
            let fewer = EncryptionContext::new().with("tenant", t.clone()).unwrap().with("field", f.clone()).unwrap();
            prop_assert!(s.open(&env, &fewer).is_err());
        }
    }

    #[test]
    fn truncation_at_every_length_fails(pt in prop::collection::vec(any::<u8>(), 0..64), seed in any::<u8>()) {
        let k = key(seed);
        let c = ctx("acme", "token");
        for b in Backend::ALL {
            let s = SealingKey::with_backend(&k, *b);
            let env = s.seal(&pt, &c).unwrap();
            for len in 0..env.len() {
                prop_assert!(s.open(&env[..len], &c).is_err(), "truncated to {} opened", len);
            }
        }
    }

    #[test]
    fn two_seals_differ(pt in prop::collection::vec(any::<u8>(), 0..256)) {
        let k = key(3);
        let c = ctx("acme", "password");
        for b in Backend::ALL {
            let s = SealingKey::with_backend(&k, *b);
            let a = s.seal(&pt, &c).unwrap();
            let bb = s.seal(&pt, &c).unwrap();
            prop_assert_ne!(&a, &bb);
            prop_assert_ne!(&a[18..30], &bb[18..30], "nonces must differ");
        }
    }

    #[test]
    fn unwrap_with_wrong_version_or_context_fails(t in name(), t2 in name()) {
        let mut kr = LocalKeyring::generate().unwrap();
        let c = EncryptionContext::new().with("tenant", t.clone()).unwrap();
        let dek = DataKey::generate().unwrap();
        let w1 = kr.wrap(&dek, &c).unwrap();
        kr.rotate().unwrap();
        let w2 = kr.wrap(&dek, &c).unwrap();
        prop_assert_eq!(w2.master_key().version, 2);
        // Both versions unwrap with the right context.
        let (k1, k2) = (kr.unwrap(&w1, &c).unwrap(), kr.unwrap(&w2, &c).unwrap());
        prop_assert_eq!(k1.expose_secret(), dek.expose_secret());
        prop_assert_eq!(k2.expose_secret(), dek.expose_secret());
        // Wrong context.
        if t2 != t {
            let c2 = EncryptionContext::new().with("tenant", t2).unwrap();
            prop_assert!(kr.unwrap(&w1, &c2).is_err());
            prop_assert!(kr.unwrap(&w2, &c2).is_err());
        }
        // Wrong master version: relabel a v1-wrapped key as v2 (header is authenticated).
        let mut bytes = w1.as_bytes().to_vec();
        let ver_at = 2 + "local".len();
        bytes[ver_at..ver_at + 4].copy_from_slice(&2u32.to_be_bytes());
        let relabelled = credvault_envelope::WrappedKey::parse(&bytes).unwrap();
        prop_assert!(kr.unwrap(&relabelled, &c).is_err());
        // A different keyring with the same version numbers.
        let other = LocalKeyring::generate().unwrap();
        prop_assert!(other.unwrap(&w1, &c).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Envelopes written in the v1 format keep opening, refuse any bit flip and any other
    /// context, and move to v2 when resealed; v2 refuses another context the same way.
    #[test]
    fn v1_keeps_opening_and_reseals_to_v2(
        pt in prop::collection::vec(any::<u8>(), 0..64),
        nonce in any::<[u8; 12]>(),
        seed in any::<u8>(),
        t in name(),
        f in name(),
        f2 in name(),
    ) {
        prop_assume!(f != f2);
        let k = key(seed);
        let c = ctx(&t, &f);
        let other = ctx(&t, &f2);
        for b in Backend::ALL {
            let s = SealingKey::with_backend(&k, *b);
            let v1 = credvault_envelope::hazmat::seal_envelope_v1_with_nonce(&s, &nonce, &pt, &c).unwrap();
            prop_assert_eq!(v1[0], 1);
            let opened = s.open(&v1, &c).unwrap();
            prop_assert_eq!(opened.expose_secret(), &pt[..]);
            prop_assert!(s.open(&v1, &other).is_err());
            for bit in 0..v1.len() * 8 {
                let mut x = v1.clone();
                x[bit / 8] ^= 1 << (bit % 8);
                prop_assert!(s.open(&x, &c).is_err(), "bit {} opened", bit);
            }
            let v2 = s.reseal_from(s.opener(), &v1, &c).unwrap();
            prop_assert_eq!(v2[0], 2);
            let opened = s.open(&v2, &c).unwrap();
            prop_assert_eq!(opened.expose_secret(), &pt[..]);
            prop_assert!(s.open(&v2, &other).is_err());
        }
    }
}
