//! Every file and directory the vault writes is owner-only from creation even under
//! `umask 000`, and a symlink planted at a path the vault writes is never written through.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// `credvault ARGS` with `umask 000`, the vault at `vault`; asserts success.
fn run(vault: &Path, args: &[&str], stdin: &str) -> std::process::Output {
    let bin = assert_cmd::cargo::cargo_bin("credvault");
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"umask 000 && exec "$0" "$@""#)
        .arg(bin)
        .args(args)
        .env("CREDVAULT_DIR", vault)
        .env("CREDVAULT_CONFIG_DIR", vault.with_extension("config"))
        .env_remove("CREDVAULT_MASTER_KEY")
        .env("CREDVAULT_ACTOR", "tester")
        .write_stdin(stdin)
        .output()
        .unwrap();
    out
}

fn ok(vault: &Path, args: &[&str], stdin: &str) -> String {
    let out = run(vault, args, stdin);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every path under `dir` whose mode is not 0700 (directories) or 0600 (files).
fn loose(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut bad = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let m = std::fs::symlink_metadata(&d).unwrap();
        if m.permissions().mode() & 0o777 != 0o700 {
            bad.push((d.clone(), m.permissions().mode() & 0o777));
        }
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if m.permissions().mode() & 0o777 != 0o600 {
                bad.push((p, m.permissions().mode() & 0o777));
            }
        }
    }
    bad
}

#[test]
fn every_vault_file_is_owner_only_under_umask_000_and_symlinks_are_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = tmp.path().join("nested/vault");
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    ok(&vault, &["init"], "");
    ok(
        &vault,
        &[
            "add",
            "website_login",
            "site",
            "--field",
            "login_url=https://x.example/login",
            "--field",
            "username=bot",
        ],
        "pw-1",
    );
    // The master key's old fixed temporary name, planted.
    symlink(&victim, vault.join("master.key.tmp")).unwrap();
    ok(&vault, &["rotate", "master"], "");
    ok(&vault, &["rotate", "tenant"], "");
    // A type definition whose file name is planted as a symlink: refused, nothing written.
    let def = tmp.path().join("local.json");
    std::fs::write(
        &def,
        r#"{"name": "local_api", "display_name": "Local API", "category": "api",
            "fields": [{"key": "token", "label": "Token", "kind": "password", "required": true}]}"#,
    )
    .unwrap();
    std::fs::create_dir_all(vault.join("types")).unwrap();
    std::fs::set_permissions(vault.join("types"), std::fs::Permissions::from_mode(0o777)).unwrap();
    symlink(&victim, vault.join("types/local_api.json")).unwrap();
    let out = run(&vault, &["type", "add", def.to_str().unwrap()], "");
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    std::fs::remove_file(vault.join("types/local_api.json")).unwrap();
    ok(&vault, &["type", "add", def.to_str().unwrap()], "");
    ok(&vault, &["add", "local_api", "svc"], "tok");
    ok(&vault, &["reveal", "site", "--field", "password"], "");
    ok(&vault, &["audit", "verify"], "");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    // The planted symlink is gone (replaced by nothing: the key went elsewhere) or still a
    // symlink, never a file holding key material.
    let planted = vault.join("master.key.tmp");
    if let Ok(m) = std::fs::symlink_metadata(&planted) {
        assert!(m.file_type().is_symlink());
        std::fs::remove_file(&planted).unwrap();
    }
    let bad = loose(&vault);
    assert!(bad.is_empty(), "not owner-only: {bad:?}");
    // The parent the vault created for itself is owner-only too.
    let parent = std::fs::metadata(vault.parent().unwrap()).unwrap();
    assert_eq!(parent.permissions().mode() & 0o777, 0o700);
}
