//! Differential: credvault's TOTP/HOTP codes and verification against totp-rs.
//!
//! Input: algorithm byte, digits byte, period (2 bytes), time (8 bytes), submitted code
//! (up to 10 bytes, length-prefixed), the rest is the secret. The code at the time matches
//! totp-rs; a submitted code verifies with a one-step window exactly when totp-rs's `check`
//! (skew 1) accepts it; the otpauth URI we write gives totp-rs the same code.
#![no_main]

use credvault_totp::{Algorithm, Otp, TotpSecret};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 13 {
        return;
    }
    let (alg, theirs_alg) = match data[0] % 3 {
        0 => (Algorithm::Sha1, totp_rs::Algorithm::SHA1),
        1 => (Algorithm::Sha256, totp_rs::Algorithm::SHA256),
        _ => (Algorithm::Sha512, totp_rs::Algorithm::SHA512),
    };
    let digits = 6 + data[1] % 3;
    let period = u64::from(u16::from_le_bytes([data[2], data[3]])).max(1);
    let mut t = [0u8; 8];
    t.copy_from_slice(&data[4..12]);
    // Times up to about year 2500, so `time + period * skew` stays far from u64::MAX.
    let time = u64::from_le_bytes(t) % 16_725_225_600;
    let code_len = usize::from(data[12] % 11).min(data.len() - 13);
    let (submitted, secret) = data[13..].split_at(code_len);
    let Ok(submitted) = core::str::from_utf8(submitted) else {
        return;
    };
    if secret.is_empty() || secret.len() > 64 {
        return;
    }
    let ours = Otp::totp(TotpSecret::from_bytes(secret).unwrap(), alg, digits, period).unwrap();
    let theirs = totp_rs::Builder::new()
        .with_algorithm(theirs_alg)
        .with_digits(digits)
        .with_step_duration(period)
        .with_skew(1)
        .with_secret(secret.to_vec())
        .build_noncompliant();

    let code = ours.code_at(time).to_string();
    assert_eq!(code, theirs.generate(time).to_string(), "code differs");
    assert!(ours.verify_at(&code, time, 1).is_ok());

    // Only plain digit strings: totp-rs also accepts formatted codes ("123 456").
    if submitted.bytes().all(|b| b.is_ascii_digit()) && submitted.len() == usize::from(digits) {
        let a = ours.verify_at(submitted, time, 1).ok();
        let b = theirs.check(submitted, time);
        assert_eq!(a, b, "verification differs for {submitted:?}");
    }

    let ours = ours.with_labels(Some("Issuer".into()), Some("user@example.com".into()));
    let uri = ours.to_uri();
    let parsed = totp_rs::Totp::from_url_unchecked(uri.as_str()).expect("totp-rs parses our URI");
    assert_eq!(parsed.generate(time).to_string(), code, "URI round trip differs");
});
