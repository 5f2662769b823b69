//! Property tests (1,024 cases each).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use credvault_totp::{Algorithm, Otp, TotpSecret};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 1024,
        ..ProptestConfig::default()
    }
}

fn alg() -> impl Strategy<Value = Algorithm> {
    prop_oneof![
        Just(Algorithm::Sha1),
        Just(Algorithm::Sha256),
        Just(Algorithm::Sha512)
    ]
}

fn label() -> impl Strategy<Value = Option<String>> {
    prop::option::of(
        "[A-Za-z0-9 ._@+&=?#%é-]{1,24}".prop_filter("no colon, not blank", |s| {
            !s.contains(':') && !s.trim().is_empty() && s.trim() == s
        }),
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn otpauth_round_trip(
        secret in prop::collection::vec(any::<u8>(), 1..64), alg in alg(), digits in 6u8..=8,
        period in 1u64..=300, counter in any::<u64>(), hotp in any::<bool>(), issuer in label(), account in label(),
        t in 0u64..=4_000_000_000,
    ) {
        let s = || TotpSecret::from_bytes(&secret).unwrap();
        let o = if hotp { Otp::hotp(s(), alg, digits, counter) } else { Otp::totp(s(), alg, digits, period) }
            .unwrap()
            .with_labels(issuer.clone(), account.clone());
        let uri = o.to_uri();
        let back = Otp::from_uri(&uri).unwrap();
        prop_assert_eq!(back.kind(), o.kind());
        prop_assert_eq!(back.algorithm(), alg);
        prop_assert_eq!(back.digits(), digits);
        prop_assert_eq!(back.issuer(), issuer.as_deref());
        prop_assert_eq!(back.account(), account.as_deref());
        prop_assert_eq!(back.secret().expose_secret(), &secret[..]);
        prop_assert_eq!(back.code_at(t), o.code_at(t));
        let again = Otp::from_uri(&back.to_uri()).unwrap().to_uri();
        prop_assert_eq!(again.as_str(), uri.as_str(), "export is stable");
    }

    #[test]
    fn agrees_with_totp_rs_on_totp_uris(secret in prop::collection::vec(any::<u8>(), 16..40), alg in alg(), digits in 6u8..=8, period in 1u64..=120, t in 0u64..=4_000_000_000) {
        let o = Otp::totp(TotpSecret::from_bytes(&secret).unwrap(), alg, digits, period).unwrap()
            .with_labels(Some("Issuer".into()), Some("user@example.com".into()));
        let uri = o.to_uri();
        let theirs = totp_rs::Totp::from_url_unchecked(uri.as_str()).unwrap();
        prop_assert_eq!(theirs.generate(t).to_string(), o.code_at(t).to_string());
    }

    #[test]
    fn base32_round_trip_with_pasting_noise(secret in prop::collection::vec(any::<u8>(), 1..64), lower in any::<bool>(), spaces in any::<bool>()) {
        let s = TotpSecret::from_bytes(&secret).unwrap();
        let mut text = s.to_base32().to_string();
        if lower { text = text.to_lowercase(); }
        if spaces { text = text.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(" "); }
        let parsed = TotpSecret::parse(&text).unwrap();
        prop_assert_eq!(parsed.expose_secret(), &secret[..]);
    }

    #[test]
    fn arbitrary_input_never_panics(data in prop::collection::vec(any::<u8>(), 0..300)) {
        credvault_totp::fuzzing::otpauth_uri(&data);
        credvault_totp::fuzzing::extract(&data);
        credvault_totp::fuzzing::verify(&data);
        let _ = TotpSecret::parse(&String::from_utf8_lossy(&data));
    }
}
