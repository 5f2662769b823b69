//! Differential tests against the `fernet` crate (0.2, RustCrypto backend): tokens made by either
//! side decrypt on the other, and the same tampered tokens are rejected by both. 1,024 cases each.
//!
//! Where the `fernet` crate departs from Python `cryptography` (which credvault follows,
//! `docs/decisions/0005-fernet-base64.md`) the cases here stay inside the overlap: the crate
//! refuses future timestamps even without a TTL (so no-TTL checks run at `now = timestamp`), and it
//! decodes text strictly but accepts missing padding (so characters are dropped only before the
//! padding). Those re-encodings are pinned against Python itself in `python_differential.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::engine::general_purpose::URL_SAFE;
use base64::Engine;
use credvault_token::Fernet;
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 1024,
        ..ProptestConfig::default()
    }
}

fn keys(seed: [u8; 32]) -> (Fernet, fernet::Fernet, String) {
    let text = URL_SAFE.encode(seed);
    (
        Fernet::new(&text).unwrap(),
        fernet::Fernet::new(&text).unwrap(),
        text,
    )
}

/// Both verdicts, as Option<plaintext>, at `now` with `ttl`.
fn both(
    ours: &Fernet,
    theirs: &fernet::Fernet,
    token: &str,
    ttl: Option<u64>,
    now: u64,
) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let a = ours
        .decrypt_at(token, ttl, now)
        .ok()
        .map(|p| p.expose_secret().to_vec());
    let b = match ttl {
        Some(ttl) => theirs.decrypt_at_time(token, Some(ttl), now).ok(),
        None => theirs.decrypt_at_time(token, None, now).ok(),
    };
    (a, b)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn tokens_interoperate(seed in any::<[u8; 32]>(), pt in prop::collection::vec(any::<u8>(), 0..300), ts in 0u64..=4_000_000_000) {
        let (ours, theirs, _) = keys(seed);
        let mine = ours.encrypt_at(&pt, ts).unwrap();
        let theirs_tok = theirs.encrypt_at_time(&pt, ts);
        prop_assert_eq!(theirs.decrypt_at_time(&mine, Some(60), ts).unwrap(), pt.clone());
        let got = ours.decrypt_at(&theirs_tok, Some(60), ts).unwrap();
        prop_assert_eq!(got.expose_secret(), &pt[..]);
        prop_assert_eq!(ours.extract_timestamp(&theirs_tok).unwrap(), ts);
        // (the crate has no extract_timestamp; its TTL boundary checks below read the timestamp)
        // Same length: same layout and padding.
        prop_assert_eq!(mine.len(), theirs_tok.len());
    }

    /// Long tokens: several 256-byte sealing chunks and 1,024-byte opening chunks, whose
    /// boundaries fall at every offset relative to the 25-byte header.
    #[test]
    fn long_tokens_interoperate(seed in any::<[u8; 32]>(), len in 0usize..5000, fill in any::<u8>(), ts in 0u64..=4_000_000_000) {
        let (ours, theirs, _) = keys(seed);
        let pt: Vec<u8> = (0..len).map(|i| fill.wrapping_add(i as u8)).collect();
        let mine = ours.encrypt_at(&pt, ts).unwrap();
        prop_assert_eq!(theirs.decrypt_at_time(&mine, None, ts).unwrap(), pt.clone());
        let theirs_tok = theirs.encrypt_at_time(&pt, ts);
        let got = ours.decrypt_at(&theirs_tok, None, ts).unwrap();
        prop_assert_eq!(got.expose_secret(), &pt[..]);
    }

    #[test]
    fn tampering_rejected_by_both(
        seed in any::<[u8; 32]>(), other in any::<[u8; 32]>(), pt in prop::collection::vec(any::<u8>(), 0..100),
        ts in 1_000_000u64..=4_000_000_000, pick in any::<prop::sample::Index>(), bit in 0u8..8, cut in any::<prop::sample::Index>(),
        dt in 0u64..200,
    ) {
        let (ours, theirs, _) = keys(seed);
        let token = theirs.encrypt_at_time(&pt, ts);
        let raw = URL_SAFE.decode(&token).unwrap();

        // A bit flip anywhere in the decoded token.
        let mut flipped = raw.clone();
        let i = pick.index(flipped.len());
        flipped[i] ^= 1 << bit;
        let t = URL_SAFE.encode(&flipped);
        prop_assert_eq!(both(&ours, &theirs, &t, None, ts), (None, None), "flip byte {} bit {}", i, bit);

        // Truncation of the decoded bytes.
        let t = URL_SAFE.encode(&raw[..cut.index(raw.len())]);
        prop_assert_eq!(both(&ours, &theirs, &t, None, ts), (None, None));

        // Re-encoding damage that changes length: a character dropped.
        let j = pick.index(token.trim_end_matches('=').len());
        let dropped = format!("{}{}", &token[..j], &token[j + 1..]);
        prop_assert_eq!(both(&ours, &theirs, &dropped, None, ts), (None, None), "char {} dropped", j);

        // Wrong key.
        if other != seed {
            let (o2, t2, _) = keys(other);
            prop_assert_eq!(both(&o2, &t2, &token, None, ts), (None, None));
        }

        // Expired and future, against the boundaries.
        let ttl = 60;
        let ok = both(&ours, &theirs, &token, Some(ttl), ts + ttl);
        prop_assert_eq!(ok.0.as_deref(), Some(&pt[..]), "timestamp + ttl == now passes");
        prop_assert_eq!(ok.1.as_deref(), Some(&pt[..]));
        prop_assert_eq!(both(&ours, &theirs, &token, Some(ttl), ts + ttl + 1 + dt), (None, None), "expired");
        prop_assert_eq!(both(&ours, &theirs, &token, Some(ttl), ts - 61 - dt), (None, None), "future beyond skew");
        let fut = both(&ours, &theirs, &token, Some(ttl), ts - 60);
        prop_assert!(fut.0.is_some() && fut.1.is_some(), "60 s of skew is allowed");
    }
}

/// The token is encoded chunk by chunk while it is encrypted; every plaintext length across many
/// chunk boundaries must still give one canonical base64 token that the `fernet` crate opens.
#[test]
fn streamed_encoding_is_canonical_at_every_chunk_boundary() {
    let (ours, theirs, _) = keys([5; 32]);
    for len in (0..3000)
        .step_by(7)
        .chain([255, 256, 257, 511, 512, 513, 1023, 1024, 1025])
    {
        let pt: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let token = ours.encrypt_at(&pt, 1_700_000_000).unwrap();
        let raw = URL_SAFE.decode(&token).unwrap();
        assert_eq!(
            URL_SAFE.encode(&raw),
            token,
            "len {len}: canonical encoding"
        );
        assert_eq!(raw.len(), 25 + (len / 16 + 1) * 16 + 32, "len {len}");
        assert_eq!(
            theirs.decrypt_at_time(&token, None, 1_700_000_000).unwrap(),
            pt,
            "len {len}"
        );
    }
}
