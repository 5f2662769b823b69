//! Differential: credvault's Fernet against the `fernet` crate (RustCrypto backend).
//!
//! Mode 0 decrypts arbitrary text with both at a fixed time, with and without a TTL: both
//! accept with the same plaintext, or both refuse. Two documented differences, where the
//! `fernet` crate is stricter than Python's `cryptography` (which credvault follows byte for
//! byte, and which decides both cases the way credvault does):
//! - without a TTL the crate refuses a token more than 60 s in the future; Python checks the
//!   time only when a TTL is given;
//! - on text that is not canonical base64url the two decoders differ both ways: Python's
//!   `urlsafe_b64decode` takes an `=` inside the text, which the crate refuses, and the crate
//!   takes a token whose padding Python calls incorrect (both found by this target; see
//!   `credvault-token/tests/python_differential.rs`, `non_canonical_base64_decodes_as_python_does`).
//!
//! On canonical base64url, the only difference allowed is the future token without a TTL. Mode 1 seals data-chosen plaintext at a
//! data-chosen time and IV with credvault and the `fernet` crate must open it, and the reverse.
#![no_main]

use base64::engine::general_purpose::URL_SAFE;
use base64::Engine as _;
use credvault_token::{hazmat, Fernet};
use libfuzzer_sys::fuzz_target;

const KEY: [u8; 32] = [
    0x5a, 0x01, 0x7e, 0x33, 0x90, 0x12, 0xc4, 0x0f, 0x81, 0x6b, 0x2d, 0xe8, 0x44, 0x07, 0xa9, 0x5c,
    0x19, 0xf2, 0x60, 0x3b, 0xdd, 0x84, 0x2e, 0x71, 0x0a, 0xbf, 0x95, 0x48, 0xc3, 0x66, 0x1e, 0xf7,
];
/// Base64url of `KEY`, the form the `fernet` crate takes.
const KEY_B64: &str = "WgF-M5ASxA-Bay3oRAepXBnyYDvdhC5xCr-VSMNmHvc=";
const NOW: u64 = 1_700_000_000;

fn u64_at(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_le_bytes(w)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let ours = Fernet::from_bytes(&KEY);
    let theirs = fernet::Fernet::new(KEY_B64).expect("valid key");
    if mode % 2 == 0 {
        let Ok(text) = core::str::from_utf8(rest) else {
            return;
        };
        for ttl in [None, Some(60)] {
            let a = ours.decrypt_at(text, ttl, NOW).ok();
            let b = theirs.decrypt_at_time(text, ttl, NOW).ok();
            if a.is_some() != b.is_some() && URL_SAFE.decode(text).is_ok() {
                let future = ours.extract_timestamp(text).is_ok_and(|ts| ts > NOW + 60);
                assert!(
                    a.is_some() && ttl.is_none() && future,
                    "credvault {} and fernet {} on canonical {text:?}",
                    a.is_some(),
                    b.is_some()
                );
                continue;
            }
            if a.is_some() != b.is_some() {
                // Not canonical base64url: credvault decodes as Python does (tested against
                // Python's verdicts in credvault-token), the crate differently.
                continue;
            }
            assert_eq!(
                a.as_ref().map(|p| p.expose_secret()),
                b.as_deref(),
                "ttl {ttl:?}: credvault and fernet disagree on {text:?}"
            );
        }
    } else {
        if rest.len() < 24 {
            return;
        }
        // Below 2^63 so the `fernet` crate's `now + 60` cannot wrap.
        let ts = u64_at(rest) >> 1;
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&rest[8..24]);
        let plaintext = &rest[24..];
        let token = hazmat::fernet_encrypt_with_iv(&ours, plaintext, ts, &iv);
        let opened = theirs.decrypt_at_time(&token, None, ts);
        assert_eq!(opened.as_deref().ok(), Some(plaintext), "fernet refuses our token");
        let token = theirs.encrypt_at_time(plaintext, ts);
        let opened = ours.decrypt_at(&token, Some(1), ts).expect("we refuse fernet's token");
        assert_eq!(opened.expose_secret(), plaintext);
        assert_eq!(ours.extract_timestamp(&token).ok(), Some(ts));
    }
});
