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
    let out = credvault().arg("quickstart").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "[1] generated a local master key",
        "[3] sealed credential",
        "[4] opened it",
        "[5] refused",
        "local/v2",
        "[7] rotated the tenant's data key",
        "quickstart complete",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(
        !text.contains("correct horse"),
        "the demo secret must not be printed"
    );
    assert!(out.stderr.is_empty());
}

#[test]
fn quickstart_json() {
    let out = credvault().args(["--json", "quickstart"]).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["steps"].as_array().unwrap().len(), 7);
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
