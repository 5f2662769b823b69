//! `credvault audit ...` end to end, on logs written by the library.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use assert_cmd::Command;
use credvault_audit::{
    segment_path, Action, AuditEvent, AuditKey, AuditLog, Durability, LogConfig, Resource,
};

const KEY_HEX: &str = "4242424242424242424242424242424242424242424242424242424242424242";

fn cv() -> Command {
    let mut c = Command::cargo_bin("credvault").unwrap();
    c.env_remove("CREDVAULT_AUDIT_KEY");
    c
}

fn write_log(dir: &Path, n: u64) {
    let key = AuditKey::from_text(KEY_HEX).unwrap();
    let config = LogConfig::default()
        .durability(Durability::NoSync)
        .checkpoint_interval(None)
        .checkpoint_every(5);
    let (log, _) = AuditLog::open(dir, key, config).unwrap();
    for i in 0..n {
        let action = if i % 2 == 0 {
            Action::Accessed
        } else {
            Action::AccessDenied
        };
        let e = AuditEvent::new(format!("t{}", i % 2), "alice", action)
            .with_resource(Resource::credential(format!("cred_{i}")).with_name("stripe, \"live\""));
        log.record(&e).unwrap();
    }
    log.close().unwrap();
}

fn out(c: &mut Command) -> (i32, String, String) {
    let o = c.output().unwrap();
    (
        o.status.code().unwrap(),
        String::from_utf8(o.stdout).unwrap(),
        String::from_utf8(o.stderr).unwrap(),
    )
}

#[test]
fn verify_an_intact_log() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 12);
    let (code, stdout, stderr) = out(cv().args(["audit", "verify"]).arg(dir.path()));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("audit log intact: "), "{stdout}");
    assert!(stdout.contains("12 events"), "{stdout}");
    assert!(
        stdout.contains("anchor matched (not authenticated"),
        "{stdout}"
    );

    let keyfile = dir.path().join("audit.key");
    std::fs::write(&keyfile, format!("{KEY_HEX}\n")).unwrap();
    let (code, stdout, _) = out(cv()
        .args(["audit", "verify", "--key"])
        .arg(format!("@{}", keyfile.display()))
        .arg(dir.path()));
    assert_eq!(code, 0);
    assert!(
        stdout.contains("anchor matched and authenticated"),
        "{stdout}"
    );
    assert!(stdout.contains("4 checkpoints authenticated"), "{stdout}");

    // The key from the environment; JSON output.
    let (code, stdout, _) = out(cv()
        .env("CREDVAULT_AUDIT_KEY", KEY_HEX)
        .args(["--json", "audit", "verify"])
        .arg(dir.path()));
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["intact"], true);
    assert_eq!(v["events"], 12);
    assert_eq!(v["anchor"], "authenticated");
}

#[test]
fn verify_reports_the_first_problem_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 12);
    let seg = segment_path(dir.path(), 1);
    let good = std::fs::read(&seg).unwrap();

    let mut edited = good.clone();
    let at = edited.iter().position(|b| *b == b'\n').unwrap() + 40;
    edited[at] ^= 1;
    std::fs::write(&seg, &edited).unwrap();
    let (code, stdout, stderr) = out(cv().args(["audit", "verify"]).arg(dir.path()));
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("NOT intact: record 1 (line 2 of"),
        "{stderr}"
    );
    assert!(stderr.contains(": edited:"), "{stderr}");

    // Cut short at a record boundary: only the anchor tells.
    let cut = good[..good.len() - 1]
        .iter()
        .rposition(|b| *b == b'\n')
        .unwrap()
        + 1;
    std::fs::write(&seg, &good[..cut]).unwrap();
    let (code, _, stderr) = out(cv().args(["audit", "verify"]).arg(dir.path()));
    assert_eq!(code, 1);
    assert!(stderr.contains(": truncated:"), "{stderr}");
    // Given the file alone, without the anchor, the cut is invisible, and the summary says so.
    let (code, stdout, _) = out(cv().args(["audit", "verify"]).arg(&seg));
    assert_eq!(code, 0);
    assert!(stdout.contains("no anchor"), "{stdout}");

    // A wrong key fails the anchor.
    std::fs::write(&seg, &good).unwrap();
    let (code, _, stderr) = out(cv()
        .env("CREDVAULT_AUDIT_KEY", "11".repeat(32))
        .args(["audit", "verify"])
        .arg(dir.path()));
    assert_eq!(code, 1);
    assert!(stderr.contains("bad checkpoint"), "{stderr}");
}

#[test]
fn show_filters_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 10);
    let (code, stdout, _) = out(cv()
        .args(["audit", "show", "--tenant", "t1"])
        .arg(dir.path()));
    assert_eq!(code, 0);
    assert_eq!(stdout.lines().count(), 5);
    assert!(
        stdout
            .lines()
            .all(|l| l.contains(" t1 alice access_denied ")),
        "{stdout}"
    );

    let (code, stdout, _) = out(cv()
        .args([
            "--json",
            "audit",
            "show",
            "--action",
            "accessed",
            "--since",
            "2000-01-01",
        ])
        .arg(dir.path()));
    assert_eq!(code, 0);
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 5);
    assert!(events
        .iter()
        .all(|e| e["action"] == "accessed" && e["seq"].is_u64()));

    let (code, stdout, _) = out(cv()
        .args(["audit", "show", "--csv", "--until", "2000-01-01"])
        .arg(dir.path()));
    assert_eq!(code, 0);
    assert_eq!(stdout.lines().count(), 1, "only the header: {stdout}");

    let (code, stdout, _) = out(cv().args(["audit", "show", "--csv"]).arg(dir.path()));
    assert_eq!(code, 0);
    let mut r = csv::Reader::from_reader(stdout.as_bytes());
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 10);
    assert_eq!(&rows[0][11], "stripe, \"live\"");
}

#[test]
fn bad_arguments_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 1);
    for (args, code, needle) in [
        (
            vec!["audit", "verify", "--key", KEY_HEX],
            2,
            "--key takes @FILE",
        ),
        (
            vec!["audit", "show", "--since", "last tuesday"],
            2,
            "--since",
        ),
        (
            vec!["audit", "verify", "/nonexistent/x.jsonl"],
            1,
            "no such file",
        ),
        (
            vec!["audit", "verify", "--key", "@/nonexistent/key"],
            1,
            "cannot read key file",
        ),
    ] {
        let (got, stdout, stderr) = out(cv().args(&args).arg(dir.path()));
        assert_eq!(got, code, "{args:?}: {stderr}");
        assert!(stdout.is_empty());
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains(KEY_HEX), "the key was echoed: {stderr}");
    }
}

#[test]
fn genkey_prints_a_usable_key() {
    let (code, stdout, _) = out(cv().args(["audit", "genkey"]));
    assert_eq!(code, 0);
    assert_eq!(stdout.trim().len(), 64);
    assert!(AuditKey::from_text(&stdout).is_ok());
    let (_, other, _) = out(cv().args(["audit", "genkey"]));
    assert_ne!(stdout, other);
}
