//! End-to-end tests of the `credvault` binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use assert_cmd::Command;

fn credvault() -> Command {
    Command::cargo_bin("credvault").unwrap()
}

#[test]
fn version_and_help() {
    let out = credvault().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("credvault {}\n", env!("CARGO_PKG_VERSION"))
    );
    let out = credvault().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(
        help.contains("quickstart") && help.contains("--json"),
        "{help}"
    );
}

#[test]
fn quickstart_walks_every_step() {
    let out = credvault()
        .env_remove("CREDVAULT_DIR")
        .env(
            "CREDVAULT_MASTER_KEY",
            "this must be ignored by the throwaway vault",
        )
        .arg("quickstart")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "[1] created a vault",
        "[2] added a website login with a TOTP authenticator key",
        "[3] showed it masked",
        "__credvault_secret__",
        "[4] revealed one field",
        "[5] generated a TOTP code",
        "[6] rotated the tenant's data key",
        "[7] rotated the master key",
        "[8] verified the audit log",
        "intact",
        "quickstart complete: throwaway vault removed",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    // The code printed in step 5 is six digits.
    let code_line = text
        .lines()
        .skip_while(|l| !l.starts_with("[5]"))
        .nth(1)
        .unwrap();
    let code = code_line.split_whitespace().next().unwrap();
    assert!(
        code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()),
        "{code_line}"
    );
    assert!(
        !text.contains("correct horse"),
        "the demo secret must not be printed"
    );
    assert!(out.stderr.is_empty());
}

#[test]
fn quickstart_json_and_kept_vault() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("kept");
    let out = credvault()
        .args(["--json", "quickstart", "--vault"])
        .arg(&vault)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["steps"].as_array().unwrap().len(), 8);
    // The kept vault is a real vault: its log verifies and its credential is listed.
    let out = credvault()
        .arg("--vault")
        .arg(&vault)
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = credvault()
        .arg("--vault")
        .arg(&vault)
        .arg("list")
        .output()
        .unwrap();
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains("example-portal"));
    // A second quickstart into the same directory is refused.
    let out = credvault()
        .args(["quickstart", "--vault"])
        .arg(&vault)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
}

#[test]
fn usage_error_is_one_stderr_report_and_empty_stdout() {
    let out = credvault().arg("no-such-command").output().unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("no-such-command"));
}
