//! A process killed with SIGKILL while holding both of a vault's write locks (SQLite's, in the
//! middle of a transaction, and the audit log's, in the middle of a record): while it lives,
//! others wait and then get the typed busy error; once it is dead, nobody waits any more,
//! nothing it half-wrote is visible, and the torn audit line is recovered.
//!
//! The lock holder is this test binary run again as a child, with the ignored test
//! `lock_holder_child` selected and the vault directory in an environment variable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

use credvault_store::{ListFilter, NewCredential, StoreError, TenantId, Vault, VaultOptions};
use serde_json::json;

const CHILD_DIR: &str = "CREDVAULT_STORE_LOCK_HOLDER_DIR";

fn tenant() -> TenantId {
    TenantId::new("acme").unwrap()
}

#[test]
#[ignore = "the lock-holding half of `a_writer_killed_holding_the_locks_blocks_no_one`, run by it as a child process"]
fn lock_holder_child() {
    let dir = std::path::PathBuf::from(std::env::var(CHILD_DIR).expect("run by its parent test"));
    // SQLite's write lock, with a change the transaction never commits.
    let db = rusqlite::Connection::open(Vault::db_path(&dir)).unwrap();
    db.execute_batch("BEGIN IMMEDIATE; UPDATE credentials SET name = 'half-written';")
        .unwrap();
    // The audit log's lock, with half a record written.
    let audit = Vault::audit_dir(&dir);
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(audit.join("audit.lock"))
        .unwrap();
    lock.lock().unwrap();
    let last = credvault_audit::segment_paths(&audit)
        .unwrap()
        .pop()
        .unwrap();
    let mut seg = std::fs::OpenOptions::new().append(true).open(last).unwrap();
    seg.write_all(b"{\"v\":1,\"seq\":").unwrap();
    println!("holding");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn a_writer_killed_holding_the_locks_blocks_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault");
    let v = Vault::init(&path, VaultOptions::default()).unwrap();
    v.store().create_tenant(&tenant(), "Acme", "admin").unwrap();
    let scope = v.store().tenant(&tenant(), "alice").unwrap();
    let a = scope
        .create(NewCredential::new(
            "http_bearer_token",
            "a",
            json!({"token": "tok-a"}),
        ))
        .unwrap();
    v.close().unwrap();

    let mut child = credvault_test::child_test("lock_holder_child")
        .env(CHILD_DIR, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    while !line.contains("holding") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the child ended early"
        );
    }

    // While it holds the locks: a short wait runs out, as the typed error.
    let short = VaultOptions::default().lock_timeout(Duration::from_millis(100));
    let err = Vault::open(&path, short).unwrap_err();
    assert!(matches!(err, StoreError::Busy { .. }), "{err}");

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // Dead: the operating system released both locks (were either kept, these calls would
    // fail with the busy error).
    let v = Vault::open(&path, VaultOptions::default()).unwrap();
    let scope = v.store().tenant(&tenant(), "alice").unwrap();
    scope
        .create(NewCredential::new(
            "http_bearer_token",
            "b",
            json!({"token": "tok-b"}),
        ))
        .unwrap();
    let revealed = scope.reveal(&a.id.clone(), &["token"], None).unwrap();
    assert_eq!(revealed.expose_secret("token"), Some("tok-a"));
    let mut names: Vec<String> = scope
        .list(&ListFilter::default())
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b"], "the uncommitted rename is visible");
    let check = v.verify_audit().unwrap();
    assert!(
        check.is_intact(),
        "{:?} {:?}",
        check.report.problem,
        check.head_problem
    );
    assert_eq!(
        check.report.recovered_breaks, 1,
        "the torn record was not recovered"
    );
    v.close().unwrap();
}
