//! Behaviour of the envelope API beyond round trips: limits, errors, in-place buffers,
//! client-side verification, re-sealing, redaction.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use credvault_envelope::{
    Backend, ContextError, DataKey, EncryptionContext, EnvelopeHeader, FormatError, KeyId,
    OpenError, OpeningKey, SealError, SealingKey, UsageLimits, MAX_SEALS_PER_KEY, OVERHEAD,
    PREFIX_LEN,
};

fn ctx() -> EncryptionContext {
    EncryptionContext::new()
        .with("tenant", "acme")
        .unwrap()
        .with("field", "password")
        .unwrap()
}

#[test]
fn usage_limit_refuses_past_2_pow_32() {
    let k = DataKey::generate().unwrap();
    let s = SealingKey::new(&k).with_usage(MAX_SEALS_PER_KEY - 1);
    assert!(s.should_rotate());
    s.seal(b"last one", &ctx()).unwrap();
    assert_eq!(s.usage(), MAX_SEALS_PER_KEY);
    match s.seal(b"one too many", &ctx()) {
        Err(SealError::UsageLimitReached { key_id, limit }) => {
            assert_eq!(key_id, k.id());
            assert_eq!(limit, 1 << 32);
        }
        other => panic!("expected UsageLimitReached, got {other:?}"),
    }
    assert_eq!(
        s.usage(),
        MAX_SEALS_PER_KEY,
        "a refused seal does not count"
    );
}

#[test]
fn should_rotate_threshold() {
    assert_eq!(UsageLimits::default().threshold(), 3_865_470_566); // floor(0.9 * 2^32)
    let k = DataKey::generate().unwrap();
    let s = SealingKey::new(&k).with_limits(UsageLimits::rotate_after(3));
    for _ in 0..2 {
        s.seal(b"x", &ctx()).unwrap();
        assert!(!s.should_rotate());
    }
    s.seal(b"x", &ctx()).unwrap();
    assert!(s.should_rotate());
    assert_eq!(s.usage(), 3);
    let fresh = SealingKey::new(&k).with_usage(UsageLimits::DEFAULT_ROTATE_AFTER - 1);
    assert!(!fresh.should_rotate());
    fresh.seal(b"x", &ctx()).unwrap();
    assert!(fresh.should_rotate());
}

#[test]
fn failed_open_in_place_leaves_no_plaintext() {
    for b in Backend::ALL {
        let k = DataKey::generate().unwrap();
        let s = SealingKey::with_backend(&k, *b);
        let secret = b"CANARY-secret-value-0123456789";
        let mut env = s.seal(secret, &ctx()).unwrap();
        let last = env.len() - 1;
        env[last] ^= 1; // break the tag
        let mut buf = env.clone();
        assert!(matches!(
            s.opener().open_in_place(&mut buf, &ctx()),
            Err(OpenError::Decrypt(_))
        ));
        let body = &buf[PREFIX_LEN..PREFIX_LEN + secret.len()];
        assert!(
            body.iter().all(|&x| x == 0),
            "{b:?}: body must be wiped after a failed open"
        );
        assert!(!buf.windows(6).any(|w| w == b"CANARY"));
        // Wrong context: same.
        let mut buf = s.seal(secret, &ctx()).unwrap();
        let other = EncryptionContext::new().with("tenant", "evil").unwrap();
        assert!(s.opener().open_in_place(&mut buf, &other).is_err());
        assert!(buf[PREFIX_LEN..PREFIX_LEN + secret.len()]
            .iter()
            .all(|&x| x == 0));
    }
}

#[test]
fn open_in_place_success_and_seal_in_place() {
    let k = DataKey::generate().unwrap();
    let s = SealingKey::new(&k);
    let mut buf = vec![0xEE; PREFIX_LEN];
    buf.extend_from_slice(b"in place");
    s.seal_in_place(&ctx(), &mut buf).unwrap();
    assert_eq!(buf.len(), 8 + OVERHEAD);
    assert_eq!(s.open(&buf, &ctx()).unwrap().expose_secret(), b"in place");
    assert_eq!(
        s.opener().open_in_place(&mut buf, &ctx()).unwrap(),
        b"in place"
    );
    let mut short = vec![0u8; PREFIX_LEN - 1];
    assert!(matches!(
        s.seal_in_place(&ctx(), &mut short),
        Err(SealError::BufferTooShort { .. })
    ));
    assert_eq!(short.len(), PREFIX_LEN - 1, "buffer untouched on error");
}

#[test]
fn header_parse_errors_are_typed() {
    let k = DataKey::generate().unwrap();
    let env = SealingKey::new(&k).seal(b"abc", &ctx()).unwrap();
    let h = EnvelopeHeader::parse(&env).unwrap();
    assert_eq!(h.key_id(), k.id());
    assert_eq!(h.plaintext_len(), 3);

    assert!(matches!(
        EnvelopeHeader::parse(&env[..OVERHEAD - 1]),
        Err(FormatError::TooShort { .. })
    ));
    assert_eq!(h.version(), 2, "the current version");
    let mut v3 = env.clone();
    v3[0] = 3;
    assert!(matches!(
        EnvelopeHeader::parse(&v3),
        Err(FormatError::UnsupportedVersion { version: 3, .. })
    ));
    let mut s9 = env.clone();
    s9[1] = 9;
    assert!(matches!(
        EnvelopeHeader::parse(&s9),
        Err(FormatError::UnknownSuite { suite: 9, .. })
    ));
    // Version and suite errors reach open() as Format errors, before any crypto.
    assert!(matches!(
        SealingKey::new(&k).open(&v3, &ctx()),
        Err(OpenError::Format(_))
    ));
}

#[test]
fn wrong_key_is_reported_by_id_without_decrypting() {
    let a = DataKey::generate().unwrap();
    let b = DataKey::generate().unwrap();
    let env = SealingKey::new(&a).seal(b"x", &ctx()).unwrap();
    match OpeningKey::new(&b).open(&env, &ctx()) {
        Err(OpenError::WrongKey { envelope, key }) => {
            assert_eq!(envelope, a.id());
            assert_eq!(key, b.id());
        }
        other => panic!("{other:?}"),
    }
    // Same id, different bytes: opaque decrypt failure.
    let forged = DataKey::from_bytes(a.id(), &[0u8; 32]);
    assert!(matches!(
        OpeningKey::new(&forged).open(&env, &ctx()),
        Err(OpenError::Decrypt(_))
    ));
}

#[test]
fn client_side_seal_is_verified_and_stored_verbatim() {
    // The vault hands the client its data key; the client seals locally.
    let vault_key = DataKey::generate().unwrap();
    let client_key = DataKey::from_bytes(vault_key.id(), vault_key.expose_secret());
    let client_env = SealingKey::new(&client_key)
        .seal(b"client secret", &ctx())
        .unwrap();

    let vault = OpeningKey::new(&vault_key);
    let header = vault.verify(&client_env, &ctx()).unwrap();
    assert_eq!(header.key_id(), vault_key.id());
    // Wrong context, tampered, or another key: refused.
    let other = EncryptionContext::new().with("tenant", "other").unwrap();
    assert!(vault.verify(&client_env, &other).is_err());
    let mut t = client_env.clone();
    t[PREFIX_LEN] ^= 0x80;
    assert!(vault.verify(&t, &ctx()).is_err());
    let stranger = DataKey::from_bytes(vault_key.id(), &[1; 32]);
    let forged = SealingKey::new(&stranger).seal(b"x", &ctx()).unwrap();
    assert!(matches!(
        vault.verify(&forged, &ctx()),
        Err(OpenError::Decrypt(_))
    ));
}

#[test]
fn reseal_moves_to_new_key() {
    let old = DataKey::generate().unwrap();
    let new = DataKey::generate().unwrap();
    let env = SealingKey::new(&old).seal(b"rotate me", &ctx()).unwrap();
    let s_new = SealingKey::new(&new);
    let moved = s_new
        .reseal_from(&OpeningKey::new(&old), &env, &ctx())
        .unwrap();
    assert_eq!(EnvelopeHeader::parse(&moved).unwrap().key_id(), new.id());
    assert_eq!(
        s_new.open(&moved, &ctx()).unwrap().expose_secret(),
        b"rotate me"
    );
    assert!(OpeningKey::new(&old).open(&moved, &ctx()).is_err());
    assert_eq!(s_new.usage(), 1);
    // A tampered source is refused and nothing is sealed.
    let mut bad = env.clone();
    bad[40] ^= 1;
    assert!(s_new
        .reseal_from(&OpeningKey::new(&old), &bad, &ctx())
        .is_err());
    assert_eq!(s_new.usage(), 1);
}

#[test]
fn secrets_never_in_debug() {
    let k = DataKey::from_bytes(KeyId::from_bytes([1; 16]), &[0xAB; 32]);
    let s = SealingKey::new(&k);
    let pt = s
        .open(&s.seal(b"CANARY-9f8e7d", &ctx()).unwrap(), &ctx())
        .unwrap();
    for dbg in [
        format!("{k:?}"),
        format!("{s:?}"),
        format!("{pt:?}"),
        format!("{:?}", s.opener()),
    ] {
        assert!(
            !dbg.contains("abab") && !dbg.contains("171, 171") && !dbg.contains("CANARY"),
            "{dbg}"
        );
    }
    assert!(
        format!("{k:?}").contains("01010101"),
        "key id is public and shown"
    );
}

#[test]
fn context_limits_and_canonical_order() {
    let a = EncryptionContext::new()
        .with("b", "2")
        .unwrap()
        .with("a", "1")
        .unwrap();
    let b = EncryptionContext::new()
        .with("a", "1")
        .unwrap()
        .with("b", "2")
        .unwrap();
    assert_eq!(
        a.canonical_bytes(),
        b.canonical_bytes(),
        "insertion order does not matter"
    );
    assert_eq!(
        a.canonical_bytes(),
        &[0, 2, 0, 1, b'a', 0, 1, b'1', 0, 1, b'b', 0, 1, b'2']
    );
    assert_eq!(
        EncryptionContext::new().with("", "x"),
        Err(ContextError::EmptyKey)
    );
    assert!(matches!(
        EncryptionContext::new().with("k".repeat(129), "x"),
        Err(ContextError::KeyTooLong { len: 129, .. })
    ));
    assert!(matches!(
        EncryptionContext::new().with("k", "v".repeat(1025)),
        Err(ContextError::ValueTooLong { .. })
    ));
    assert!(matches!(
        a.clone().with("a", "other"),
        Err(ContextError::DuplicateKey { .. })
    ));
    let mut many = EncryptionContext::new();
    for i in 0..64 {
        many.insert(format!("k{i}"), "v").unwrap();
    }
    assert!(matches!(
        many.insert("k64", "v"),
        Err(ContextError::TooManyEntries { max: 64 })
    ));
    let mut big = EncryptionContext::new();
    let err = (0..64).find_map(|i| big.insert(format!("key{i}"), "v".repeat(1000)).err());
    assert!(
        matches!(err, Some(ContextError::TooLarge { .. })),
        "{err:?}"
    );
    // A refused insert leaves the context unchanged.
    let before = big.canonical_bytes().to_vec();
    let _ = big.insert("zzz", "v".repeat(1000));
    assert_eq!(big.canonical_bytes(), &before[..]);
}

#[test]
fn plaintext_limit() {
    let k = DataKey::generate().unwrap();
    let too_big = vec![0u8; credvault_envelope::MAX_PLAINTEXT_LEN + 1];
    assert!(matches!(
        SealingKey::new(&k).seal(&too_big, &ctx()),
        Err(SealError::PlaintextTooLong { .. })
    ));
}

#[test]
fn nonces_survive_reseed() {
    let k = DataKey::generate().unwrap();
    let s = SealingKey::new(&k);
    let a = s.seal(b"x", &ctx()).unwrap();
    credvault_envelope::reseed_nonce_generator();
    let b = s.seal(b"x", &ctx()).unwrap();
    assert_ne!(a[18..30], b[18..30]);
    // Many nonces across the reseed interval are all distinct.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..40_000 {
        let e = s.seal(b"", &ctx()).unwrap();
        assert!(seen.insert(e[18..30].to_vec()));
    }
}
