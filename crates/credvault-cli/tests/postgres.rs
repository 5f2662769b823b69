//! `credvault init --database URL` end to end, against the PostgreSQL server
//! `CREDVAULT_TEST_DATABASE_URL` names (`.ci/run` starts one; without it these tests pass
//! vacuously on a developer machine and fail when `CI` is set): the vault's commands work the
//! same, a second node is a copy of the directory, `audit verify` checks the database's chain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use assert_cmd::Command;

mod common;

fn server() -> Option<String> {
    common::service("CREDVAULT_TEST_DATABASE_URL")
}

fn cv(dir: &Path) -> Command {
    common::credvault_in(dir)
}

use common::{add_portal, ok_in as ok};

#[test]
fn a_vault_in_postgres_from_two_nodes_with_one_verified_chain() {
    let Some(url) = server() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (n1, n2) = (tmp.path().join("n1"), tmp.path().join("n2"));
    let schema = format!("cli{}", std::process::id());
    let init = ok(
        &n1,
        &["init", "--database", &url, "--database-schema", &schema],
        "",
    );
    assert!(init.contains("audit_log table"), "{init}");
    assert!(!n1.join("vault.db").exists());
    let settings = std::fs::read_to_string(n1.join("database.json")).unwrap();
    assert!(settings.contains(&schema), "{settings}");
    add_portal(&n1, "pw-from-node-1");
    common::copy_node(&n1, &n2);
    assert_eq!(
        ok(&n2, &["reveal", "portal", "--field", "password"], ""),
        "pw-from-node-1\n"
    );
    let anchor = tmp.path().join("anchor");
    std::fs::write(&anchor, ok(&n2, &["audit", "anchor"], "")).unwrap();
    let verified = ok(
        &n1,
        &["audit", "verify", "--anchor", anchor.to_str().unwrap()],
        "",
    );
    assert!(verified.starts_with("audit log intact: "), "{verified}");
    let shown = ok(&n1, &["audit", "show"], "");
    assert!(shown.contains("accessed"), "{shown}");
    assert!(!shown.contains("pw-from-node-1"));
}

#[test]
fn a_database_url_with_a_password_is_refused_and_not_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("v");
    let out = cv(&d)
        .args([
            "init",
            "--database",
            "postgres://vault:hunter2@127.0.0.1:1/db",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("carries a password"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    assert!(!d.join("database.json").exists());
}

#[test]
fn migrate_storage_moves_a_sqlite_vault_and_it_keeps_working() {
    let Some(url) = server() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("v");
    ok(&d, &["init"], "");
    add_portal(&d, "pw-before-the-move");
    let schema = format!("mig{}", std::process::id());
    let out = ok(
        &d,
        &[
            "migrate-storage",
            "--to",
            &url,
            "--database-schema",
            &schema,
        ],
        "",
    );
    assert!(out.contains("1 credential(s) copied verbatim"), "{out}");
    assert!(out.contains("verified"), "{out}");
    assert!(d.join("database.json").exists() && !d.join("vault.db").exists());
    assert_eq!(
        ok(&d, &["reveal", "portal", "--field", "password"], ""),
        "pw-before-the-move\n"
    );
    let verified = ok(&d, &["audit", "verify"], "");
    assert!(verified.starts_with("audit log intact: "), "{verified}");
    // The whole vault verifies from the database (`verify` exits non-zero otherwise).
    ok(&d, &["verify"], "");
}

#[test]
fn a_postgres_vault_backs_up_restores_as_sqlite_and_moves_back() {
    let Some(url) = server() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("v");
    let schema = format!("bk{}", std::process::id());
    ok(
        &d,
        &["init", "--database", &url, "--database-schema", &schema],
        "",
    );
    add_portal(&d, "pw-in-postgres");
    let file = tmp.path().join("pg.cvb");
    let out = ok(&d, &["backup", "-o", file.to_str().unwrap()], "");
    assert!(out.contains("from postgres"), "{out}");
    let r = tmp.path().join("restored");
    let out = ok(
        &r,
        &[
            "restore",
            "--from",
            file.to_str().unwrap(),
            "--keys-from",
            d.to_str().unwrap(),
        ],
        "",
    );
    assert!(out.contains("verified"), "{out}");
    assert!(r.join("vault.db").exists());
    assert_eq!(
        ok(&r, &["reveal", "portal", "--field", "password"], ""),
        "pw-in-postgres\n"
    );
    // Back into PostgreSQL, in a schema of its own.
    let schema2 = format!("bk2{}", std::process::id());
    ok(
        &r,
        &[
            "migrate-storage",
            "--to",
            &url,
            "--database-schema",
            &schema2,
        ],
        "",
    );
    assert_eq!(
        ok(&r, &["reveal", "portal", "--field", "password"], ""),
        "pw-in-postgres\n"
    );
    ok(&r, &["verify"], "");
}

/// Two nodes of a vault kept in PostgreSQL share its saved sessions and leases (the records are
/// in the vault's database, not in files beside each node).
#[test]
fn nodes_of_a_postgres_vault_share_sessions_and_leases() {
    let Some(url) = server() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (n1, n2) = (tmp.path().join("n1"), tmp.path().join("n2"));
    let schema = format!("clis{}", std::process::id());
    ok(
        &n1,
        &["init", "--database", &url, "--database-schema", &schema],
        "",
    );
    add_portal(&n1, "pw");
    ok(
        &n1,
        &["session", "config", "portal", "--max-concurrent", "1"],
        "",
    );
    common::copy_node(&n1, &n2);
    ok(
        &n1,
        &["session", "save", "portal"],
        r#"{"cookies":[{"name":"sid","value":"shared-by-nodes","domain":"x.example","path":"/"}],"origins":[]}"#,
    );
    assert!(ok(&n2, &["session", "load", "portal"], "").contains("shared-by-nodes"));
    assert!(!n1.join("sessions.db").exists() && !n2.join("sessions.db").exists());
    // A login lease held on node 1 keeps node 2 out until it ends.
    let marker = tmp.path().join("holding");
    let mut holder = common::process_in(&n1)
        .args([
            "lease",
            "portal",
            "--login",
            "--",
            "sh",
            "-c",
            &format!("touch {}; sleep 2", marker.display()),
        ])
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !marker.exists() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "no lease on node 1"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let busy = cv(&n2)
        .args(["lease", "portal", "--wait", "0.3", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(
        busy.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&busy.stderr)
    );
    assert!(holder.wait().unwrap().success());
    ok(&n2, &["lease", "portal", "--wait", "10", "--", "true"], "");
    let shown = ok(&n2, &["audit", "show"], "");
    assert!(shown.contains("lease_released") && !shown.contains("shared-by-nodes"));
}
