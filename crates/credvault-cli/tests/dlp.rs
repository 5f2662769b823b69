//! `credvault dlp ...` end to end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use assert_cmd::Command;

fn run(args: &[&str], stdin: &str) -> (i32, String, String) {
    let o = Command::cargo_bin("credvault")
        .unwrap()
        .args(args)
        .write_stdin(stdin.to_owned())
        .output()
        .unwrap();
    (
        o.status.code().unwrap(),
        String::from_utf8(o.stdout).unwrap(),
        String::from_utf8(o.stderr).unwrap(),
    )
}

const SECRET: &str = "Tr0ub4dor&3-horse/battery+staple";

#[test]
fn mask_streams_stdin_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("db_password");
    std::fs::write(&one, format!("{SECRET}\n")).unwrap();
    let list = dir.path().join("keys.txt");
    std::fs::write(
        &list,
        "ghp_8f3KqZ2vX9LmP4tR7wY1nB6cD0eF5gH2jK3l\n\nsk_live_4eC39HqLyjWDarjtT1zdp7dc\n",
    )
    .unwrap();
    let input = format!(
        "a {SECRET} b 54723075623464...\nhex {} and ghp_8f3KqZ2vX9LmP4tR7wY1nB6cD0eF5gH2jK3l, sk_live_4eC39HqLyjWDarjtT1zdp7dc\n",
        SECRET.bytes().map(|b| format!("{b:02x}")).collect::<String>()
    )
    .repeat(2000);
    let (code, out, err) = run(
        &[
            "dlp",
            "mask",
            "--secret",
            &format!("@{}", one.display()),
            "--secrets-file",
            list.to_str().unwrap(),
        ],
        &input,
    );
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains(SECRET) && !out.contains("ghp_") && !out.contains("sk_live"));
    let line = out.lines().nth(1).unwrap();
    assert_eq!(
        line,
        "hex [cv:db_password] and [cv:keys.txt/1], [cv:keys.txt/3]"
    );
    assert_eq!(out.lines().count(), 4000);
}

#[test]
fn mask_refuses_weak_secrets_and_argv_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let weak = dir.path().join("pin");
    std::fs::write(&weak, "admin\n").unwrap();
    let arg = format!("@{}", weak.display());
    let (code, out, err) = run(&["dlp", "mask", "--secret", &arg], "login admin\n");
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(
        err.contains("shorter than the minimum")
            && err.contains("--force")
            && !err.contains("admin\n"),
        "{err}"
    );
    let (code, out, _) = run(
        &["dlp", "mask", "--force", "--secret", &arg],
        "login admin\n",
    );
    assert_eq!(code, 0);
    assert_eq!(out, "login [cv:pin]\n");
    let (code, _, err) = run(&["dlp", "mask", "--secret", SECRET], "");
    assert_eq!(code, 2);
    assert!(!err.contains(SECRET), "{err}");
    let (code, _, _) = run(&["dlp", "mask"], "");
    assert_eq!(code, 2);
}

#[test]
fn scan_reports_and_blocks() {
    let text = "card 4111 1111 1111 1111, mail bob@example.com, key AKIAIOSFODNN7EXAMPLE\n";
    let (code, out, _) = run(&["dlp", "scan"], text);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "payment_card\t5..24\tredact\nemail\t31..46\twarn\naws_access_key_id\t52..72\tredact\n"
    );
    let (code, out, _) = run(
        &["--json", "dlp", "scan", "--block", "aws_access_key_id"],
        text,
    );
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["blocked"], true);
    assert_eq!(v["findings"].as_array().unwrap().len(), 3);
    assert!(!out.contains("AKIA") && !out.contains("4111"));
    let (code, _, err) = run(&["dlp", "scan", "--block", "nope"], text);
    assert_eq!(code, 2);
    assert!(err.contains("no such detector"), "{err}");
    let (code, out, _) = run(&["dlp", "scan"], "nothing to see\n");
    assert_eq!((code, out.as_str()), (0, ""));
}
