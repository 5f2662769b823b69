//! Entry points for the fuzz targets under `fuzz/` (not a stable API).

use crate::{extract_code, FixedClock, Otp, TotpSecret};

/// Parses arbitrary text as an otpauth/steam URI; what parses must export and re-parse to the
/// same parameters and labels.
pub fn otpauth_uri(data: &[u8]) {
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    if let Ok(otp) = Otp::from_uri(text) {
        let again = Otp::from_uri(&otp.to_uri());
        assert!(again.is_ok_and(|a| a.kind() == otp.kind()
            && a.digits() == otp.digits()
            && a.algorithm() == otp.algorithm()
            && a.issuer() == otp.issuer()
            && a.account() == otp.account()
            && a.secret().expose_secret() == otp.secret().expose_secret()));
    }
}

/// Extracts a code from arbitrary text.
pub fn extract(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some(found) = extract_code(&text) {
        assert!(!found.code.is_empty());
    }
}

/// Verifies arbitrary strings as codes against a fixed authenticator.
pub fn verify(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(secret) = TotpSecret::parse("JBSWY3DPEHPK3PXP") {
        if let Ok(otp) = Otp::totp(secret, crate::Algorithm::Sha1, 6, 30) {
            let now = FixedClock(1_700_000_000);
            let _ = otp.verify_at(&text, crate::Clock::now(&now), 1);
            let _ = otp.verify_hotp(&text, 0, 10);
        }
    }
}
