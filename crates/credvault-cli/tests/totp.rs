//! `credvault totp ...` end to end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use assert_cmd::Command;

mod common;

const RFC_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"; // "12345678901234567890"

const FLAGS: &[&str] = &["--secret", "--uri"];

fn cv() -> Command {
    let mut c = Command::cargo_bin("credvault").unwrap();
    c.env_remove("CREDVAULT_TOTP_SECRET");
    c
}

fn run(args: &[&str], stdin: &str) -> std::process::Output {
    let (args, _files) = common::keys_to_files(FLAGS, args);
    cv().args(&args)
        .write_stdin(stdin.to_owned())
        .output()
        .unwrap()
}

#[test]
fn code_matches_rfc6238_and_rfc4226() {
    // RFC 6238 Appendix B: SHA1, 8 digits, T = 59.
    let out = run(
        &[
            "totp", "code", "--secret", RFC_SECRET, "--digits", "8", "--at", "59",
        ],
        "",
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "94287082\n");
    // From a URI (spaces and lower case in the secret are fine).
    let uri = "otpauth://totp/X:y?secret=gezd gnbv gy3t qojq gezd gnbv gy3t qojq&digits=8";
    let out = run(&["totp", "code", "--uri", uri, "--at", "1111111109"], "");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "07081804\n");
    // HOTP counter 3 (RFC 4226 Appendix D).
    let out = run(
        &[
            "totp",
            "code",
            "--uri",
            &format!("otpauth://hotp/x?secret={RFC_SECRET}&counter=3"),
        ],
        "",
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "969429\n");
}

#[test]
fn verify_exit_codes() {
    let ok = run(
        &[
            "totp",
            "verify",
            "--secret",
            RFC_SECRET,
            "--digits",
            "8",
            "--code",
            "9428 7082",
            "--at",
            "59",
        ],
        "",
    );
    assert_eq!(ok.status.code(), Some(0));
    let bad = run(
        &[
            "totp", "verify", "--secret", RFC_SECRET, "--digits", "8", "--code", "00000000",
            "--at", "59",
        ],
        "",
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(bad.stdout.is_empty());
    assert_eq!(
        String::from_utf8(bad.stderr).unwrap(),
        "credvault: invalid code\n"
    );
    // Skew: the previous step's code passes with --skew 1 and fails with --skew 0.
    let prev = String::from_utf8(
        run(
            &["totp", "code", "--secret", RFC_SECRET, "--at", "1000"],
            "",
        )
        .stdout,
    )
    .unwrap();
    assert_eq!(
        run(
            &[
                "totp",
                "verify",
                "--secret",
                RFC_SECRET,
                "--code",
                prev.trim(),
                "--at",
                "1030"
            ],
            ""
        )
        .status
        .code(),
        Some(0)
    );
    assert_eq!(
        run(
            &[
                "totp",
                "verify",
                "--secret",
                RFC_SECRET,
                "--code",
                prev.trim(),
                "--skew",
                "0",
                "--at",
                "1030"
            ],
            ""
        )
        .status
        .code(),
        Some(1)
    );
}

#[test]
fn uri_and_secret_sources() {
    let out = run(
        &[
            "totp",
            "uri",
            "--secret",
            "jbsw-y3dp-ehpk-3pxp",
            "--issuer",
            "Acme Co",
            "--account",
            "bot@acme.test",
        ],
        "",
    );
    let uri = String::from_utf8(out.stdout).unwrap();
    assert_eq!(uri, "otpauth://totp/Acme%20Co:bot@acme.test?secret=JBSWY3DPEHPK3PXP&issuer=Acme%20Co&algorithm=SHA1&digits=6&period=30\n");
    // The same code from --uri, @FILE and the environment.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("secret");
    std::fs::write(&f, "JBSWY3DPEHPK3PXP\n").unwrap();
    let a = run(&["totp", "code", "--uri", uri.trim(), "--at", "5000"], "").stdout;
    let b = run(
        &[
            "totp",
            "code",
            "--secret",
            &format!("@{}", f.display()),
            "--at",
            "5000",
        ],
        "",
    )
    .stdout;
    let c = cv()
        .args(["totp", "code", "--at", "5000"])
        .env("CREDVAULT_TOTP_SECRET", "JBSWY3DPEHPK3PXP")
        .output()
        .unwrap()
        .stdout;
    assert_eq!(a, b);
    assert_eq!(b, c);
    assert_eq!(a.len(), 7);
}

#[test]
fn errors_name_the_problem_not_the_secret() {
    for (args, needle) in [
        (vec!["totp", "code", "--secret", "CANARY1SECRET"], "base32"),
        (
            vec![
                "totp",
                "code",
                "--secret",
                "JBSWY3DPEHPK3PXP",
                "--algorithm",
                "MD5",
            ],
            "unknown algorithm",
        ),
        (
            vec![
                "totp",
                "code",
                "--secret",
                "JBSWY3DPEHPK3PXP",
                "--digits",
                "9",
            ],
            "digits",
        ),
        (
            vec![
                "totp",
                "code",
                "--secret",
                "JBSWY3DPEHPK3PXP",
                "--period",
                "0",
            ],
            "period",
        ),
        (vec!["totp", "code"], "CREDVAULT_TOTP_SECRET"),
    ] {
        let out = run(&args, "");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.contains(needle) && !err.contains("CANARY") && err.lines().count() == 1,
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn extract_from_stdin() {
    let out = run(
        &["totp", "extract"],
        "Subject: Sign in\n\nYour Acme verification code is 482-913.\n",
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "482913\n");
    let out = run(&["totp", "extract"], "Your order #448192 has shipped.");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let out = run(&["--json", "totp", "extract"], "code: 771204");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["code"], "771204");
}

#[test]
fn a_key_or_uri_on_the_command_line_is_refused_without_echoing_it() {
    for args in [
        vec!["totp", "code", "--secret", RFC_SECRET],
        vec![
            "totp",
            "code",
            "--uri",
            "otpauth://totp/x?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ",
        ],
        vec!["totp", "verify", "--secret", RFC_SECRET, "--code", "123456"],
    ] {
        let out = cv().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty());
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.contains("@FILE")
                && err.contains("CREDVAULT_TOTP_SECRET")
                && !err.contains(RFC_SECRET),
            "{args:?}: {err}"
        );
    }
    // From stdin with `-`.
    let out = cv()
        .args([
            "totp", "code", "--secret", "-", "--digits", "8", "--at", "59",
        ])
        .write_stdin(format!("{RFC_SECRET}\n"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "94287082\n");
}
