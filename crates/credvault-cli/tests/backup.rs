//! `credvault backup` and `credvault restore` end to end: the backup file is owner-only, never
//! overwrites, holds no secret in the clear; a restore with the keys gives the secrets back
//! and a vault that verifies; a restore without them, or of an altered file, writes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{add_portal, ok_in as ok, run_in as run};

#[test]
fn backup_then_restore_into_a_new_directory_gives_the_vault_back() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    ok(&src, &["init"], "");
    add_portal(&src, "pw-in-the-backup");
    let file = tmp.path().join("vault.cvb");
    let f = file.to_str().unwrap();
    let out = ok(&src, &["backup", "-o", f], "");
    assert!(out.contains("1 credential(s)"), "{out}");
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.starts_with(b"credvault-backup v1\n"));
    assert!(!String::from_utf8_lossy(&bytes).contains("pw-in-the-backup"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // Never over an existing file.
    let again = run(&src, &["backup", "-o", f], "");
    assert!(!again.status.success());
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
    // To stdout: the same kind of file, the report on stderr.
    let piped = run(&src, &["backup", "-o", "-"], "");
    assert!(piped.status.success());
    assert!(piped.stdout.starts_with(b"credvault-backup v1\n"));
    assert!(String::from_utf8_lossy(&piped.stderr).contains("backed up vault"));

    // Without the keys: refused, nothing written.
    let dst = tmp.path().join("dst");
    let out = run(&dst, &["restore", "--from", f], "");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("audit.key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An altered file: refused, nothing but the copied keys written.
    let altered = tmp.path().join("altered.cvb");
    let mut b = bytes.clone();
    let mid = b.len() / 2;
    b[mid] ^= 0x20;
    std::fs::write(&altered, &b).unwrap();
    let out = run(
        &dst,
        &[
            "restore",
            "--from",
            altered.to_str().unwrap(),
            "--keys-from",
            src.to_str().unwrap(),
        ],
        "",
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not authenticate"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = std::fs::read_dir(&dst)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // The key file itself stays outside the vault directories: only its URI is copied.
    assert_eq!(names, ["audit.key", "master.uri"]);
    // The real one, read from stdin.
    let out = common::credvault_in(&dst)
        .args([
            "restore",
            "--from",
            "-",
            "--keys-from",
            src.to_str().unwrap(),
        ])
        .write_stdin(bytes)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("vault_restored"));
    assert_eq!(
        ok(&dst, &["reveal", "portal", "--field", "password"], ""),
        "pw-in-the-backup\n"
    );
    ok(&dst, &["verify"], "");
    // The source vault is untouched and still verifies.
    ok(&src, &["verify"], "");
}
