//! Secrets, URIs, generation timing, verification windows, HOTP resync, replay protection.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use credvault_totp::{
    Algorithm, FixedClock, Kind, MemoryReplayGuard, Otp, OtpError, Submission, TotpSecret,
    VerifyError,
};

const B32: &str = "JBSWY3DPEHPK3PXP"; // 80 bits, as many real sites issue

fn otp() -> Otp {
    Otp::totp(TotpSecret::parse(B32).unwrap(), Algorithm::Sha1, 6, 30).unwrap()
}

#[test]
fn lenient_secret_parsing() {
    let canonical = TotpSecret::parse(B32).unwrap();
    for pasted in [
        "jbsw y3dp ehpk 3pxp",
        "JBSW-Y3DP-EHPK-3PXP",
        " jbswy3dpehpk3pxp\n",
        "JBSWY3DPEHPK3PXP======",
    ] {
        assert_eq!(
            TotpSecret::parse(pasted).unwrap().expose_secret(),
            canonical.expose_secret(),
            "{pasted:?}"
        );
    }
    assert!(canonical.is_below_recommended());
    assert_eq!(canonical.bits(), 80);
    let generated = TotpSecret::generate().unwrap();
    assert_eq!(generated.bits(), 160);
    assert!(!generated.is_below_recommended());
    assert_eq!(
        TotpSecret::from_hex("48 65 6c 6c 6f")
            .unwrap()
            .expose_secret(),
        b"Hello"
    );
}

#[test]
fn malformed_inputs_get_typed_errors_that_never_echo_the_secret() {
    let canary = "CANARYCANARY1"; // '1' is not base32
    let err = TotpSecret::parse(canary).unwrap_err();
    assert_eq!(err, OtpError::BadBase32 { position: 12 });
    assert!(!err.to_string().contains("CANARY") && !format!("{err:?}").contains("CANARY"));
    assert_eq!(
        TotpSecret::parse("  - ").unwrap_err(),
        OtpError::MissingSecret
    );
    assert_eq!(
        TotpSecret::parse("ABC").unwrap_err(),
        OtpError::BadBase32 { position: 2 }
    );
    assert_eq!(TotpSecret::from_hex("abc").unwrap_err(), OtpError::BadHex);
    let s = || TotpSecret::parse(B32).unwrap();
    assert_eq!(
        Otp::totp(s(), Algorithm::Sha1, 9, 30).unwrap_err(),
        OtpError::DigitsOutOfRange { digits: 9 }
    );
    assert_eq!(
        Otp::totp(s(), Algorithm::Sha1, 6, 0).unwrap_err(),
        OtpError::BadPeriod
    );
    assert!(matches!(
        Algorithm::parse("MD5"),
        Err(OtpError::UnknownAlgorithm { .. })
    ));
    for (uri, expect) in [
        (
            "otpauth://totp/x?secret=JBSWY3DPEHPK3PXP&algorithm=MD5",
            "unknown algorithm",
        ),
        (
            "otpauth://totp/x?secret=JBSWY3DPEHPK3PXP&digits=12",
            "digits",
        ),
        (
            "otpauth://totp/x?secret=JBSWY3DPEHPK3PXP&period=0",
            "period",
        ),
        ("otpauth://totp/x?issuer=Acme", "secret is missing"),
        ("otpauth://hotp/x?secret=JBSWY3DPEHPK3PXP", "counter"),
        ("otpauth://motp/x?secret=JBSWY3DPEHPK3PXP", "type"),
        ("https://example.com/?secret=JBSWY3DPEHPK3PXP", "scheme"),
        ("otpauth://totp/x?secret=CANARY0CANARY", "base32"),
    ] {
        let e = Otp::from_uri(uri).unwrap_err().to_string();
        assert!(e.contains(expect), "{uri}: {e}");
        assert!(
            !e.contains("JBSWY3DPEHPK3PXP") && !e.contains("CANARY"),
            "{e}"
        );
    }
    assert!(!format!("{:?}", otp()).contains(B32));
}

#[test]
fn uri_parse_export_and_hotp() {
    let o = Otp::from_uri("otpauth://totp/ACME%20Co:john.doe%40email.com?secret=HXDMVJECJJWSRB3HWIZR4IFUGFTMXBOZ&issuer=ACME%20Co&algorithm=SHA256&digits=8&period=60&image=x").unwrap();
    assert_eq!(o.issuer(), Some("ACME Co"));
    assert_eq!(o.account(), Some("john.doe@email.com"));
    assert_eq!(
        (o.algorithm(), o.digits(), o.kind()),
        (Algorithm::Sha256, 8, Kind::Totp { period: 60 })
    );
    let back = Otp::from_uri(&o.to_uri()).unwrap();
    assert_eq!(back.code_at(1_700_000_000), o.code_at(1_700_000_000));
    assert_eq!(back.issuer(), o.issuer());
    let h =
        Otp::from_uri("otpauth://hotp/Svc:me?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&counter=5")
            .unwrap();
    assert_eq!(h.kind(), Kind::Hotp { counter: 5 });
    assert_eq!(h.hotp_code(5).to_string(), "254676"); // RFC 4226 Appendix D, count 5
    assert!(h.to_uri().contains("counter=5"));
}

#[test]
fn generation_timing_and_submission() {
    let o = otp();
    let c = o.code_at(1_700_000_037); // 27 s into its step
    assert_eq!(
        (c.valid_from, c.valid_until, c.remaining_at(1_700_000_037)),
        (1_700_000_010, 1_700_000_040, 3)
    );
    match o.code_for_submission(&FixedClock(1_700_000_037), 5) {
        Submission::At { code, use_at } => {
            assert_eq!(use_at, 1_700_000_040);
            assert_eq!(code, o.code_at(1_700_000_040));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        o.code_for_submission(&FixedClock(1_700_000_011), 5),
        Submission::Now(o.code_at(1_700_000_011))
    );
    assert_eq!(o.code_now(&FixedClock(1_700_000_020)), c);
}

#[test]
fn verify_window_returns_the_matched_step() {
    let o = otp();
    let t = 1_700_000_000;
    let step = t / 30;
    for delta in [-1i64, 0, 1] {
        let code = o.code_at((t as i64 + delta * 30) as u64).to_string();
        assert_eq!(
            o.verify_at(&code, t, 1).unwrap(),
            (step as i64 + delta) as u64
        );
    }
    let prev = o.code_at(t - 30).to_string();
    assert_eq!(
        o.verify_now(&prev, &FixedClock(t)).unwrap(),
        step - 1,
        "default window is ±1"
    );
    let two_ago = o.code_at(t - 60).to_string();
    assert_eq!(
        o.verify_now(&two_ago, &FixedClock(t)),
        Err(VerifyError::Invalid)
    );
    assert_eq!(o.verify_at(&two_ago, t, 1), Err(VerifyError::Invalid));
    assert_eq!(o.verify_at(&two_ago, t, 2).unwrap(), step - 2);
    for junk in [
        "",
        "12345",
        "1234567",
        "abcdef",
        "12345 6789",
        "１２３４５６",
    ] {
        assert_eq!(
            o.verify_at(junk, t, 1),
            Err(VerifyError::Invalid),
            "{junk:?}"
        );
    }
}

#[test]
fn replay_refused_including_reformatted_and_older_codes() {
    let o = otp();
    let guard = MemoryReplayGuard::new();
    let t = 1_700_000_000;
    let code = o.code_at(t).to_string();
    assert!(o.verify_once(&guard, "cred-1", &code, t, 1).is_ok());
    for again in [
        code.clone(),
        format!("{} {}", &code[..3], &code[3..]),
        format!(" {}-{} ", &code[..3], &code[3..]),
    ] {
        assert_eq!(
            o.verify_once(&guard, "cred-1", &again, t + 5, 1),
            Err(VerifyError::Replayed),
            "{again:?}"
        );
    }
    // Another credential is independent; the previous step's code is refused after a newer one.
    assert!(o.verify_once(&guard, "cred-2", &code, t, 1).is_ok());
    let older = o.code_at(t - 30).to_string();
    assert_eq!(
        o.verify_once(&guard, "cred-1", &older, t, 1),
        Err(VerifyError::Replayed)
    );
    // The next step is fine.
    let next = o.code_at(t + 30).to_string();
    assert!(o.verify_once(&guard, "cred-1", &next, t + 30, 1).is_ok());
}

#[test]
fn eight_threads_racing_on_one_code_exactly_one_wins() {
    for round in 0..50 {
        let o = Arc::new(otp());
        let guard = Arc::new(MemoryReplayGuard::new());
        let t = 1_700_000_000 + round * 30;
        let code = o.code_at(t).to_string();
        let wins = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (o, guard, wins, barrier) =
                    (o.clone(), guard.clone(), wins.clone(), barrier.clone());
                let submitted = if i % 2 == 0 {
                    code.clone()
                } else {
                    format!("{} {}", &code[..3], &code[3..])
                };
                std::thread::spawn(move || {
                    barrier.wait();
                    if o.verify_once(guard.as_ref(), "shared", &submitted, t, 1)
                        .is_ok()
                    {
                        wins.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(wins.load(Ordering::SeqCst), 1, "round {round}");
    }
}

#[test]
fn failing_guard_fails_closed() {
    struct Down;
    impl credvault_totp::ReplayGuard for Down {
        fn check_and_mark(
            &self,
            _: &str,
            _: u64,
            _: u64,
            _: u64,
        ) -> Result<bool, credvault_totp::GuardError> {
            Err(credvault_totp::GuardError("database unreachable".into()))
        }
    }
    let o = otp();
    let code = o.code_at(1_700_000_000).to_string();
    assert!(matches!(
        o.verify_once(&Down, "c", &code, 1_700_000_000, 1),
        Err(VerifyError::GuardUnavailable(_))
    ));
}

/// Found by the otpauth_uri fuzz target (2026-12-06 campaign): a URI under the 4,096-byte limit
/// whose raw control characters in the label export percent-encoded, three bytes each, so the
/// exported URI was over the limit and did not parse back. Such a URI is now refused when read,
/// with a typed error; one that fits after export round-trips.
#[test]
fn a_uri_whose_export_would_exceed_the_limit_is_refused_when_read() {
    let found = std::fs::read("tests/data/fuzz-otpauth-export-too-long.bin").unwrap();
    let found = std::str::from_utf8(&found).unwrap();
    assert!(found.len() <= credvault_totp::MAX_URI_LEN);
    assert!(matches!(
        Otp::from_uri(found),
        Err(OtpError::BadUri { reason }) if reason.contains("canonical form")
    ));

    let uri = |n: usize| {
        format!(
            "otpauth://totp/{}:alice?secret=JBSWY3DPEHPK3PXP",
            "\u{e}".repeat(n)
        )
    };
    let long = uri(1_400);
    assert!(long.len() < credvault_totp::MAX_URI_LEN);
    assert!(matches!(Otp::from_uri(&long), Err(OtpError::BadUri { .. })));

    // The issuer is exported twice (label and `issuer=`), 3 bytes a character: 500 fit.
    let fits = Otp::from_uri(&uri(500)).unwrap();
    let again = Otp::from_uri(&fits.to_uri()).unwrap();
    assert_eq!(again.issuer(), fits.issuer());
    assert_eq!(again.account(), Some("alice"));
    assert_eq!(
        again.secret().expose_secret(),
        fits.secret().expose_secret()
    );
}

/// Found by the otpauth_uri fuzz target (2026-12-06 campaign): an `issuer` parameter with a
/// colon in it was exported in front of the label's separator, so the account read back longer
/// (and, here, the URI over the limit). Labels now read back exactly, whatever colons the issuer
/// and the account hold.
#[test]
fn issuers_and_accounts_with_colons_read_back_exactly() {
    let found = std::fs::read("tests/data/fuzz-otpauth-issuer-with-colon.bin").unwrap();
    let first = Otp::from_uri(std::str::from_utf8(&found).unwrap()).unwrap();
    let again = Otp::from_uri(&first.to_uri()).unwrap();
    assert_eq!(
        (again.issuer(), again.account()),
        (first.issuer(), first.account())
    );

    for (issuer, account) in [
        (Some("ACME: EU"), Some("alice")),
        (Some("ACME: EU"), Some("a:b")),
        (None, Some("a:b")),
        (Some("ACME"), Some("a:b")),
        (Some("ACME:"), None),
        (Some("ACME"), None),
        (None, Some("alice")),
        (None, None),
    ] {
        let o = Otp::totp(TotpSecret::parse(B32).unwrap(), Algorithm::Sha1, 6, 30)
            .unwrap()
            .with_labels(issuer.map(str::to_owned), account.map(str::to_owned));
        let back = Otp::from_uri(&o.to_uri()).unwrap();
        assert_eq!(
            (back.issuer(), back.account()),
            (issuer, account),
            "{}",
            o.to_uri().as_str()
        );
    }
}

/// Found by the otpauth_uri fuzz target (2026-12-06 campaign): a Steam authenticator read from
/// `otpauth://steam/LABEL?...` exported as `steam://SECRET`, which has no room for labels, so
/// they were lost. With labels it now exports as `otpauth://steam/...`; without, as before.
#[test]
fn steam_labels_survive_export() {
    let found = std::fs::read("tests/data/fuzz-otpauth-steam-labels.bin").unwrap();
    let first = Otp::from_uri(std::str::from_utf8(&found).unwrap()).unwrap();
    assert_eq!(first.kind(), Kind::Steam);
    assert_eq!(first.account(), Some("C hn@example.com"));
    let uri = first.to_uri();
    assert!(uri.starts_with("otpauth://steam/"), "{}", uri.as_str());
    let again = Otp::from_uri(&uri).unwrap();
    assert_eq!(
        (again.kind(), again.account()),
        (Kind::Steam, first.account())
    );
    assert_eq!(
        again.code_at(1_700_000_000).to_string(),
        first.code_at(1_700_000_000).to_string()
    );

    let bare = Otp::steam(TotpSecret::parse(B32).unwrap()).unwrap();
    assert!(bare.to_uri().starts_with("steam://"));
}
