//! Properties of the parsers (envelope header, wrapped key, keyring text): arbitrary input never
//! panics and gets a typed answer; what we encode parses back to the same thing. The same hooks
//! back the fuzz targets under `fuzz/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use credvault_envelope::fuzzing;
use credvault_envelope::{EnvelopeHeader, KeyId, LocalKeyring, MasterKeyRef, WrappedKey, OVERHEAD};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 1024,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..600)) {
        fuzzing::envelope_header(&data);
        fuzzing::envelope_open(&data);
        fuzzing::wrapped_key(&data);
        fuzzing::keyring_text(&data);
    }

    #[test]
    fn envelope_like_bytes_parse_iff_well_formed(
        version in 0u8..4, suite in 0u8..4, body in prop::collection::vec(any::<u8>(), 0..200)
    ) {
        let mut env = vec![version, suite];
        env.extend_from_slice(&body);
        let parsed = EnvelopeHeader::parse(&env);
        let well_formed = (version == 1 || version == 2) && suite == 1 && env.len() >= OVERHEAD;
        prop_assert_eq!(parsed.is_ok(), well_formed);
        if let Ok(h) = parsed {
            let id = h.key_id();
            prop_assert_eq!(&id.as_bytes()[..], &env[2..18]);
            prop_assert_eq!(h.plaintext_len(), env.len() - OVERHEAD);
        }
    }

    #[test]
    fn wrapped_key_round_trips(
        provider in "[!-~]{1,64}", version in any::<u32>(), id in any::<[u8; 16]>(),
        payload in prop::collection::vec(any::<u8>(), 1..300)
    ) {
        let master = MasterKeyRef { provider, version };
        let w = WrappedKey::from_parts(master.clone(), KeyId::from_bytes(id), &payload).unwrap();
        let back = WrappedKey::parse(w.as_bytes()).unwrap();
        prop_assert_eq!(back.master_key(), &master);
        prop_assert_eq!(back.data_key_id(), KeyId::from_bytes(id));
        prop_assert_eq!(back.payload(), &payload[..]);
        prop_assert_eq!(&back, &w);
        // Any truncation or extension is refused.
        for len in 0..w.as_bytes().len() {
            prop_assert!(WrappedKey::parse(&w.as_bytes()[..len]).is_err());
        }
        let mut longer = w.as_bytes().to_vec();
        longer.push(0);
        prop_assert!(WrappedKey::parse(&longer).is_err());
    }

    #[test]
    fn keyring_text_round_trips(rotations in 0usize..6, retire_first in any::<bool>()) {
        let mut k = LocalKeyring::generate().unwrap();
        for _ in 0..rotations {
            k.rotate().unwrap();
        }
        if retire_first && rotations > 0 {
            k.retire(1, 0).unwrap();
        }
        let back = LocalKeyring::from_secret_text(&k.export_secret_text()).unwrap();
        prop_assert_eq!(back.active(), k.active());
        prop_assert!(back.versions().eq(k.versions()));
    }
}
