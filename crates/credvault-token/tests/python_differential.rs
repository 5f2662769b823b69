//! Python `cryptography` verdicts for 355 valid, tampered, re-encoded and time-shifted tokens
//! (`tests/data/python_differential.json`, made by `gen_python_differential.py`). credvault must
//! accept exactly the tokens Python accepts, with the same plaintext.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use credvault_token::{Fernet, MultiFernet};
use serde_json::Value;

#[test]
fn agrees_with_python_on_every_token() {
    let v: Value = serde_json::from_str(include_str!("data/python_differential.json")).unwrap();
    let tests = v["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 355);
    let (mut accepted, mut rejected) = (0, 0);
    for t in tests {
        let key = Fernet::new(t["key"].as_str().unwrap()).unwrap();
        let token = t["token"].as_str().unwrap();
        let ttl = t["ttl"].as_u64();
        assert_eq!(t["ttl"].is_null(), ttl.is_none(), "ttl fits u64");
        let now = t["now"].as_u64().unwrap();
        let ours = key.decrypt_at(token, ttl, now);
        // The same verdict through a one-key MultiFernet.
        let multi =
            MultiFernet::new(vec![Fernet::new(t["key"].as_str().unwrap()).unwrap()]).unwrap();
        let ours_multi = multi.decrypt_at(token, ttl, now);
        match t["plaintext"].as_str() {
            Some(pt) => {
                let expected = hex::decode(pt).unwrap();
                assert_eq!(
                    ours.map(|p| p.expose_secret().to_vec()).ok(),
                    Some(expected.clone()),
                    "{}: {token:?}",
                    t["kind"]
                );
                assert_eq!(
                    ours_multi.map(|p| p.expose_secret().to_vec()).ok(),
                    Some(expected),
                    "{} (multi)",
                    t["kind"]
                );
                accepted += 1;
            }
            None => {
                assert!(ours.is_err(), "{}: Python rejects {token:?}", t["kind"]);
                assert!(ours_multi.is_err(), "{} (multi)", t["kind"]);
                rejected += 1;
            }
        }
    }
    assert_eq!((accepted, rejected), (98, 257));
}

/// Found by the `fernet_diff` fuzz target (2026-12-06 campaign): a valid token with an
/// `=` inside its text. The `fernet` crate refuses it (strict base64url); Python's
/// `cryptography` 48 decrypts it (`urlsafe_b64decode` is lenient), and so must we. The
/// expected verdicts are Python's, recorded by running it on this token.
#[test]
fn non_canonical_base64_decodes_as_python_does() {
    let key = Fernet::new("WgF-M5ASxA-Bay3oRAepXBnyYDvdhC5xCr-VSMNmHvc=").unwrap();
    let token = "gAAAAABlU-0YAgICAgICAgICAgICAgICAoeSpUar4QroBr69vy=_d3IqYrjkeqvuuka33xhJkNFSqze1b-zgGmuwgHX4ftwQ9ZT3o0nTt5TmxP-5y-_zcUUg=";
    let opened = key.decrypt_at(token, None, 1_700_000_000).unwrap();
    assert_eq!(opened.expose_secret(), b"xxxxxxxxxxxxxxxx");
    assert_eq!(key.extract_timestamp(token).unwrap(), 1_699_999_000);
    // Python: InvalidToken with ttl=60 at 1_700_000_000 (the token is 1,000 s old).
    assert!(key.decrypt_at(token, Some(60), 1_700_000_000).is_err());

    // The other way round (found by the same target): 99 characters with one `=`, which the
    // `fernet` crate decrypts and Python refuses ("Incorrect padding"), with or without a TTL.
    let token = "gAAAAABlU_EAAAAAAAAAAAAAAAAAAAAAAG5SmKuub1LAukH2A5UDvaExATJ0j-OlzXjgm1Y0DmTD7KVxvHX4XT52MoO18Z1Ccw=";
    assert!(key.decrypt_at(token, None, 1_700_000_000).is_err());
    assert!(key.decrypt_at(token, Some(1 << 30), 1_700_000_000).is_err());
}
