//! Rolling a vault back: an older database copy, an older audit directory, both together
//! (a restored backup), with and without an anchor kept outside the vault. Each is detected
//! by the mechanism docs/threat-model.md names, or, for both together without an anchor,
//! shown to be undetectable (the limit the threat model states).
#![cfg(feature = "sqlite")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use credvault_store::audit::Anchor;
use credvault_store::{CredentialUpdate, NewCredential, Problem, TenantId, Vault, VaultOptions};
use serde_json::json;

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

fn replace_dir(src: &Path, dst: &Path) {
    std::fs::remove_dir_all(dst).unwrap();
    copy_dir(src, dst);
}

/// The database files (with WAL) of a vault, copied to `dst`.
fn copy_db(vault: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for f in ["vault.db", "vault.db-wal", "vault.db-shm"] {
        let p = vault.join(f);
        if p.exists() {
            std::fs::copy(&p, dst.join(f)).unwrap();
        } else {
            let _ = std::fs::remove_file(dst.join(f));
        }
    }
}

fn restore_db(from: &Path, vault: &Path) {
    for f in ["vault.db", "vault.db-wal", "vault.db-shm"] {
        let _ = std::fs::remove_file(vault.join(f));
        if from.join(f).exists() {
            std::fs::copy(from.join(f), vault.join(f)).unwrap();
        }
    }
}

struct Setup {
    _tmp: tempfile::TempDir,
    vault: PathBuf,
    old_db: PathBuf,
    old_audit: PathBuf,
    anchor: Anchor,
    acme: TenantId,
}

/// A vault with one credential at version 1, copied (database, audit directory) while
/// closed; then updated to version 2, and an anchor taken after the update.
fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let vault = tmp.path().join("v");
    let acme = TenantId::new("acme").unwrap();
    let v = Vault::init(&vault, VaultOptions::default()).unwrap();
    v.store().create_tenant(&acme, "Acme", "admin").unwrap();
    let s = v.store().tenant(&acme, "admin").unwrap();
    let id = s
        .create(NewCredential::new(
            "http_bearer_token",
            "api",
            json!({"token": "tok-version-1-abcdef"}),
        ))
        .unwrap()
        .id;
    v.close().unwrap();
    let old_db = tmp.path().join("old-db");
    let old_audit = tmp.path().join("old-audit");
    copy_db(&vault, &old_db);
    copy_dir(&Vault::audit_dir(&vault), &old_audit);
    let v = Vault::open(&vault, VaultOptions::default()).unwrap();
    let s = v.store().tenant(&acme, "admin").unwrap();
    s.update(
        &id,
        CredentialUpdate::new().fields(json!({"token": "tok-version-2-abcdef"})),
    )
    .unwrap();
    let anchor = v.anchor().unwrap();
    v.close().unwrap();
    Setup {
        _tmp: tmp,
        vault,
        old_db,
        old_audit,
        anchor,
        acme,
    }
}

fn open_error(path: &Path) -> String {
    Vault::open(path, VaultOptions::default())
        .map(|_| ())
        .unwrap_err()
        .to_string()
}

#[test]
fn an_untouched_vault_verifies_with_its_anchor() {
    let s = setup();
    let v = Vault::open(&s.vault, VaultOptions::default()).unwrap();
    let check = v.verify_audit_against(Some(&s.anchor)).unwrap();
    assert!(check.is_intact(), "{check:?}");
    assert!(v.verify().unwrap().is_ok());
    v.close().unwrap();
}

#[test]
fn an_older_database_is_found_by_verify_against_the_log() {
    let s = setup();
    restore_db(&s.old_db, &s.vault);
    // The log is ahead of the database's head, as after any crash between them: it opens...
    let v = Vault::open(&s.vault, VaultOptions::default()).unwrap();
    // ...but the credential's version is behind the last write the log holds.
    let r = v.verify().unwrap();
    assert!(!r.is_ok());
    assert!(
        r.store.findings.iter().any(|f| matches!(
            f.problem,
            Problem::VersionMismatch {
                stored: 1,
                logged: 2
            }
        )),
        "{:?}",
        r.store.findings
    );
    v.close().unwrap();
}

#[test]
fn an_older_audit_directory_is_refused_at_open() {
    let s = setup();
    replace_dir(&s.old_audit, &Vault::audit_dir(&s.vault));
    let err = open_error(&s.vault);
    assert!(err.contains("cut short or replaced"), "{err}");
}

#[test]
fn an_older_audit_directory_grown_past_the_head_is_refused_by_its_hash() {
    let s = setup();
    // Grow the old copy (with its own old database) past the current head: as many records,
    // but not the same ones.
    let fork = s._tmp.path().join("fork");
    std::fs::create_dir_all(&fork).unwrap();
    for f in ["master.key", "audit.key"] {
        std::fs::copy(s.vault.join(f), fork.join(f)).unwrap();
    }
    restore_db(&s.old_db, &fork);
    copy_dir(&s.old_audit, &Vault::audit_dir(&fork));
    let v = Vault::open(&fork, VaultOptions::default()).unwrap();
    let sc = v.store().tenant(&s.acme, "mallory").unwrap();
    for _ in 0..20 {
        let _ = sc.list(&credvault_store::ListFilter::new());
    }
    v.close().unwrap();
    replace_dir(&Vault::audit_dir(&fork), &Vault::audit_dir(&s.vault));
    let err = open_error(&s.vault);
    assert!(
        err.contains("is not the one the database recorded"),
        "{err}"
    );
}

#[test]
fn a_restored_backup_is_found_only_against_an_outside_anchor() {
    let s = setup();
    restore_db(&s.old_db, &s.vault);
    replace_dir(&s.old_audit, &Vault::audit_dir(&s.vault));
    // Database and log agree with each other: without an anchor kept elsewhere, nothing in the
    // vault directory can tell (the limit docs/threat-model.md states).
    let v = Vault::open(&s.vault, VaultOptions::default()).unwrap();
    assert!(v.verify_audit().unwrap().is_intact());
    // The anchor taken after the update names a record the restored log does not hold: it
    // ends before it, or (once this handle's own checkpoint was written) holds another
    // record there.
    let check = v.verify_audit_against(Some(&s.anchor)).unwrap();
    assert!(!check.is_intact());
    let problem = check.anchor_problem.unwrap();
    assert!(
        problem.contains("truncated") || problem.contains("replaced"),
        "{problem}"
    );
    v.close().unwrap();
}

#[test]
fn an_anchor_of_another_vault_does_not_authenticate() {
    let s = setup();
    let other = setup();
    let v = Vault::open(&s.vault, VaultOptions::default()).unwrap();
    let check = v.verify_audit_against(Some(&other.anchor)).unwrap();
    assert!(check
        .anchor_problem
        .unwrap()
        .contains("does not authenticate"));
    v.close().unwrap();
}

/// The head row in the database (`seq:hash[:tag]`).
fn head_value(db_dir: &Path) -> String {
    let c = rusqlite::Connection::open(db_dir.join("vault.db")).unwrap();
    c.query_row(
        "SELECT value FROM vault_meta WHERE key = 'audit_head'",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

/// Edits the vault's database as an attacker would (the `sqlite3` shell's defaults).
fn edit_db(vault: &Path, sql: &str) {
    let c = rusqlite::Connection::open(Vault::db_path(vault)).unwrap();
    c.execute_batch(sql).unwrap();
}

fn set_head(vault: &Path, value: &str) {
    edit_db(
        vault,
        &format!("UPDATE vault_meta SET value = '{value}' WHERE key = 'audit_head'"),
    );
}

/// What migration 5 leaves in a vault that had a head: the head without its tag, no flag.
fn strip_head_tag(vault: &Path) {
    let now = head_value(vault);
    set_head(vault, now.rsplit_once(':').unwrap().0);
    edit_db(
        vault,
        "DELETE FROM vault_meta WHERE key = 'heads_authenticated'",
    );
}

fn events_of(vault: &Path, action: &str) -> usize {
    use credvault_store::audit::{read_event_files, segment_paths, Action, Query};
    let segs = segment_paths(&Vault::audit_dir(vault)).unwrap();
    read_event_files(&segs, &Query::new().action(Action::Other(action.into())))
        .unwrap()
        .events
        .len()
}

#[test]
fn a_head_edited_to_match_an_older_audit_directory_is_refused_at_open() {
    let s = setup();
    let old = head_value(&s.old_db);
    let now = head_value(&s.vault);
    let old_parts: Vec<&str> = old.split(':').collect();
    let now_parts: Vec<&str> = now.split(':').collect();
    assert_eq!(old_parts.len(), 3, "{old}");
    assert_ne!(old_parts[0], now_parts[0]);
    replace_dir(&s.old_audit, &Vault::audit_dir(&s.vault));
    // The older record's number and hash, with the current tag: the tag covers both.
    set_head(
        &s.vault,
        &format!("{}:{}:{}", old_parts[0], old_parts[1], now_parts[2]),
    );
    let err = open_error(&s.vault);
    assert!(
        err.contains("does not authenticate under the audit key"),
        "{err}"
    );
    // Without a tag at all: refused, since this database has tagged heads.
    set_head(&s.vault, &format!("{}:{}", old_parts[0], old_parts[1]));
    let err = open_error(&s.vault);
    assert!(err.contains("has lost its tag"), "{err}");
    // A tag flipped in one bit.
    let mut tag = hex::decode(old_parts[2]).unwrap();
    tag[0] ^= 1;
    set_head(
        &s.vault,
        &format!("{}:{}:{}", old_parts[0], old_parts[1], hex::encode(tag)),
    );
    let err = open_error(&s.vault);
    assert!(
        err.contains("does not authenticate under the audit key"),
        "{err}"
    );
}

#[test]
fn an_older_head_copied_whole_opens_and_verify_finds_the_newer_rows() {
    let s = setup();
    // A genuine older head (from a backup of the database) matches the older audit directory:
    // open cannot tell, the rows can.
    replace_dir(&s.old_audit, &Vault::audit_dir(&s.vault));
    set_head(&s.vault, &head_value(&s.old_db));
    let v = Vault::open(&s.vault, VaultOptions::default()).unwrap();
    let r = v.verify().unwrap();
    assert!(
        r.store.findings.iter().any(|f| matches!(
            f.problem,
            Problem::VersionMismatch {
                stored: 2,
                logged: 1
            }
        )),
        "{:?}",
        r.store.findings
    );
    assert!(!v.verify_audit_against(Some(&s.anchor)).unwrap().is_intact());
    v.close().unwrap();
}

#[test]
fn a_vault_from_before_head_tags_is_switched_over_once_and_a_reset_is_reported() {
    let s = setup();
    strip_head_tag(&s.vault);
    let v = Vault::open(&s.vault, VaultOptions::default()).unwrap();
    v.close().unwrap();
    assert_eq!(events_of(&s.vault, "head_authenticated"), 1);
    let tagged = head_value(&s.vault);
    assert_eq!(tagged.split(':').count(), 3, "{tagged}");
    // Opened again: nothing more to do.
    let v = Vault::open(&s.vault, VaultOptions::default()).unwrap();
    assert!(v.verify().unwrap().is_ok());
    v.close().unwrap();
    assert_eq!(events_of(&s.vault, "head_authenticated"), 1);
    // Someone resets flag and tag to have an edited head tagged: it is, but `verify` reports
    // the second switch.
    strip_head_tag(&s.vault);
    let v = Vault::open(&s.vault, VaultOptions::default()).unwrap();
    let r = v.verify().unwrap();
    assert!(
        r.store.findings.iter().any(|f| f.id == "head_authenticated"
            && matches!(f.problem, Problem::RepeatedAuthentication { count: 2 })),
        "{:?}",
        r.store.findings
    );
    v.close().unwrap();
}
