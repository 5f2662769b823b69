//! Record MACs against an attacker who edits the vault's SQLite file directly (a stolen
//! backup, a shared host, a compromised sidecar): for every authenticated column, an edit
//! gives a typed integrity error on every read path, an `integrity_failure` audit event, and
//! not one connection to any server.
#![cfg(all(feature = "sqlite", feature = "http-tester"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use credvault_store::audit::{read_event_files, segment_paths, Action, Query};
use credvault_store::net::AddressClass;
use credvault_store::schema::RevealPolicy;
use credvault_store::{
    CredentialId, CredentialUpdate, ListFilter, NewCredential, StoreError, TenantId,
    TesterRegistry, Vault, VaultOptions,
};
use credvault_test::http::Listener;
use serde_json::json;

/// Vault options whose HTTP tester may reach the local [`Listener`].
fn opts() -> VaultOptions {
    VaultOptions::default().testers(TesterRegistry::with_defaults_allowing(&[
        AddressClass::Loopback,
    ]))
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    acme: TenantId,
    other: TenantId,
    bot: CredentialId,
    spare: CredentialId,
    off: CredentialId,
    theirs: CredentialId,
}

fn llm(name: &str, port: u16, key: &str) -> NewCredential {
    NewCredential::new(
        "llm_api_key",
        name,
        json!({"api_key": key, "base_url": format!("http://127.0.0.1:{port}/v1")}),
    )
}

/// A vault with two tenants: acme holds `bot`, `spare` and the inactive `off`, all pointing at
/// `port`; `other` holds `theirs`.
fn fixture(port: u16) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v");
    let vault = Vault::init(&path, VaultOptions::default()).unwrap();
    let (acme, other) = (
        TenantId::new("acme").unwrap(),
        TenantId::new("other").unwrap(),
    );
    vault.store().create_tenant(&acme, "Acme", "admin").unwrap();
    vault
        .store()
        .create_tenant(&other, "Other", "admin")
        .unwrap();
    let s = vault.store().tenant(&acme, "admin").unwrap();
    let bot = s.create(llm("bot", port, "sk-bot-0001")).unwrap().id;
    let spare = s.create(llm("spare", port, "sk-spare-0002")).unwrap().id;
    let off = s
        .create(llm("off", port, "sk-off-0003").inactive())
        .unwrap()
        .id;
    let theirs = vault
        .store()
        .tenant(&other, "admin")
        .unwrap()
        .create(llm("theirs", port, "sk-theirs-0004"))
        .unwrap()
        .id;
    vault.close().unwrap();
    Fixture {
        _dir: dir,
        path,
        acme,
        other,
        bot,
        spare,
        off,
        theirs,
    }
}

/// Runs SQL on the vault's database as an attacker would: the `sqlite3` shell's defaults,
/// foreign keys off.
fn tamper(path: &Path, sql: &str) {
    let c = rusqlite::Connection::open(Vault::db_path(path)).unwrap();
    c.execute_batch("PRAGMA foreign_keys = OFF;").unwrap();
    let n = c.execute(sql, []).unwrap();
    assert!(n >= 1, "the edit changed no row: {sql}");
}

fn integrity_events(path: &Path) -> usize {
    let segs = segment_paths(&Vault::audit_dir(path)).unwrap();
    read_event_files(&segs, &Query::new().action(Action::IntegrityFailure))
        .unwrap()
        .events
        .len()
}

fn is_integrity<T: std::fmt::Debug>(r: Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Integrity { .. }))
}

/// Every read path of `id` in `tenant` fails with an integrity error.
fn every_path_refuses(f: &Fixture, tenant: &TenantId, id: &CredentialId, what: &str) {
    let vault = Vault::open(&f.path, opts()).unwrap();
    let s = vault.store().tenant(tenant, "mallory-victim").unwrap();
    assert!(is_integrity(s.test(id)), "{what}: test");
    assert!(
        is_integrity(s.reveal(id, &["api_key"], None)),
        "{what}: reveal"
    );
    assert!(
        is_integrity(s.reveal_many(&[(id.clone(), vec![])], None)),
        "{what}: reveal_many"
    );
    assert!(is_integrity(s.get(id)), "{what}: get");
    assert!(is_integrity(s.list(&ListFilter::new())), "{what}: list");
    assert!(
        is_integrity(s.update(id, CredentialUpdate::new().description("x"))),
        "{what}: update"
    );
    assert!(is_integrity(s.delete(id, None)), "{what}: delete");
    assert!(is_integrity(s.totp_code(id, None)), "{what}: totp");
    let rot = s.rotate_key(&mut |_| {}).unwrap();
    assert!(
        rot.failed.iter().any(|f| f == id.as_str()) || !rot.is_finished(),
        "{what}: rotation must not reseal the altered row: {rot:?}"
    );
    vault.close().unwrap();
}

#[test]
fn an_untouched_vault_reaches_its_service_so_the_listener_can_see_a_leak() {
    let good = Listener::start();
    let f = fixture(good.port());
    let vault = Vault::open(&f.path, opts()).unwrap();
    let s = vault.store().tenant(&f.acme, "alice").unwrap();
    let out = s.test(&f.bot).unwrap();
    assert_eq!(out.status_str(), "ok", "{out:?}");
    assert_eq!(good.hits(), 1);
    assert_eq!(s.list(&ListFilter::new()).unwrap().len(), 3);
    vault.close().unwrap();
    assert_eq!(integrity_events(&f.path), 0);
}

#[test]
fn every_authenticated_credential_column_edited_in_sqlite_is_refused_and_sends_nothing() {
    let good = Listener::start();
    let evil = Listener::start();
    // (what, SQL for the row of `bot`) — each on a fresh vault.
    let edits: Vec<(&str, String)> = vec![
        ("name", "UPDATE credentials SET name = 'renamed' WHERE name = 'bot'".into()),
        ("type", "UPDATE credentials SET type = 'anthropic_api_key' WHERE name = 'bot'".into()),
        ("environment", "UPDATE credentials SET environment = 'staging' WHERE name = 'bot'".into()),
        ("description", "UPDATE credentials SET description = 'hi' WHERE name = 'bot'".into()),
        ("tags", r#"UPDATE credentials SET tags = '["x"]' WHERE name = 'bot'"#.into()),
        ("expires_at", "UPDATE credentials SET expires_at = 9999999999999 WHERE name = 'bot'".into()),
        ("created_by", "UPDATE credentials SET created_by = 'root' WHERE name = 'bot'".into()),
        ("created_at", "UPDATE credentials SET created_at = created_at - 1 WHERE name = 'bot'".into()),
        ("updated_at", "UPDATE credentials SET updated_at = updated_at + 1 WHERE name = 'bot'".into()),
        ("version", "UPDATE credentials SET version = version + 1 WHERE name = 'bot'".into()),
        (
            "public (base_url)",
            format!(
                "UPDATE credentials SET public = replace(public, '127.0.0.1:{}', '127.0.0.1:{}') WHERE name = 'bot'",
                good.port(), evil.port()
            ),
        ),
        ("public (header)", r#"UPDATE credentials SET public = replace(public, '"Authorization"', '"X-Leak"') WHERE name = 'bot'"#.into()),
        ("secret_fields", r#"UPDATE credentials SET secret_fields = '[]' WHERE name = 'bot'"#.into()),
        ("secret", "UPDATE credentials SET secret = (SELECT secret FROM credentials WHERE name = 'spare') WHERE name = 'bot'".into()),
        ("mac", "UPDATE credentials SET mac = (SELECT mac FROM credentials WHERE name = 'spare') WHERE name = 'bot'".into()),
        ("mac removed", "UPDATE credentials SET mac = X'' WHERE name = 'bot'".into()),
        ("key_id", "UPDATE credentials SET key_id = X'00112233445566778899aabbccddeeff' WHERE name = 'bot'".into()),
        ("reveal", r#"UPDATE credentials SET reveal = '{"api_key":"use-only"}' WHERE name = 'bot'"#.into()),
    ];
    for (what, sql) in &edits {
        let f = fixture(good.port());
        tamper(&f.path, sql);
        let before = integrity_events(&f.path);
        every_path_refuses(&f, &f.acme, &f.bot, what);
        assert!(
            integrity_events(&f.path) > before,
            "{what}: no integrity_failure event recorded"
        );
        // The untouched neighbour still works (and tests against the good server).
        let vault = Vault::open(&f.path, opts()).unwrap();
        let s = vault.store().tenant(&f.acme, "alice").unwrap();
        assert_eq!(
            s.reveal(&f.spare, &["api_key"], None)
                .unwrap()
                .expose_secret("api_key"),
            Some("sk-spare-0002"),
            "{what}"
        );
        vault.close().unwrap();
    }
    assert_eq!(good.hits(), 0, "a request went out for a tampered row");
    assert_eq!(evil.hits(), 0, "a request went to the attacker's host");
}

#[test]
fn a_reveal_policy_loosened_in_sqlite_is_refused_and_reveals_nothing() {
    let good = Listener::start();
    let f = fixture(good.port());
    let vault = Vault::open(&f.path, opts()).unwrap();
    let s = vault.store().tenant(&f.acme, "alice").unwrap();
    s.update(
        &f.bot,
        CredentialUpdate::new().reveal("api_key", RevealPolicy::WriteOnly),
    )
    .unwrap();
    assert!(s.reveal(&f.bot, &["api_key"], None).is_err());
    vault.close().unwrap();
    // The attacker removes the policy (or relaxes it) to have `reveal` hand out the key.
    for sql in [
        "UPDATE credentials SET reveal = '{}' WHERE name = 'bot'",
        r#"UPDATE credentials SET reveal = '{"api_key":"revealable"}' WHERE name = 'bot'"#,
    ] {
        tamper(&f.path, sql);
        let before = integrity_events(&f.path);
        let vault = Vault::open(&f.path, opts()).unwrap();
        let s = vault.store().tenant(&f.acme, "alice").unwrap();
        let r = s.reveal(&f.bot, &["api_key"], None);
        assert!(
            matches!(r, Err(StoreError::Integrity { .. })),
            "{sql}: {r:?}"
        );
        let r = s.reveal_many(&[(f.bot.clone(), vec!["api_key".into()])], Some("run"));
        assert!(
            matches!(r, Err(StoreError::Integrity { .. })),
            "{sql}: {r:?}"
        );
        vault.close().unwrap();
        assert!(integrity_events(&f.path) > before, "{sql}: not audited");
    }
}

#[test]
fn flipping_is_active_swapping_names_and_moving_rows_between_tenants_are_refused() {
    let good = Listener::start();
    // An inactive credential switched back on.
    let f = fixture(good.port());
    tamper(
        &f.path,
        "UPDATE credentials SET is_active = 1 WHERE name = 'off'",
    );
    every_path_refuses(&f, &f.acme, &f.off, "is_active");

    // Two rows' names swapped: `reveal bot` must not hand out `spare`.
    let f = fixture(good.port());
    tamper(
        &f.path,
        "UPDATE credentials SET name = 'tmp' WHERE name = 'bot'",
    );
    tamper(
        &f.path,
        "UPDATE credentials SET name = 'bot' WHERE name = 'spare'",
    );
    tamper(
        &f.path,
        "UPDATE credentials SET name = 'spare' WHERE name = 'tmp'",
    );
    let vault = Vault::open(&f.path, opts()).unwrap();
    let s = vault.store().tenant(&f.acme, "alice").unwrap();
    assert!(is_integrity(s.find("bot", "production")));
    assert!(is_integrity(s.find("spare", "production")));
    vault.close().unwrap();
    every_path_refuses(&f, &f.acme, &f.bot, "swapped names");

    // A row of acme's moved into tenant other, with acme's data key re-pointed there too.
    let f = fixture(good.port());
    tamper(
        &f.path,
        "UPDATE data_keys SET tenant = 'other' WHERE tenant = 'acme'",
    );
    tamper(
        &f.path,
        "UPDATE credentials SET tenant = 'other' WHERE name = 'bot'",
    );
    let vault = Vault::open(&f.path, opts()).unwrap();
    let s = vault.store().tenant(&f.other, "eve").unwrap();
    assert!(
        matches!(
            s.reveal(&f.bot, &["api_key"], None),
            Err(StoreError::Integrity {
                record: "data key",
                ..
            })
        ),
        "a data key re-pointed to another tenant"
    );
    assert!(is_integrity(s.test(&f.bot)));
    // The other tenant's own credential is untouched.
    assert!(s.reveal(&f.theirs, &["api_key"], None).is_ok());
    vault.close().unwrap();
    assert_eq!(good.hits(), 0);
}

#[test]
fn tenant_and_data_key_rows_are_authenticated() {
    let good = Listener::start();
    for (what, sql) in [
        (
            "tenant name",
            "UPDATE tenants SET name = 'Evil' WHERE id = 'acme'",
        ),
        (
            "tenant created_at",
            "UPDATE tenants SET created_at = 1 WHERE id = 'acme'",
        ),
        (
            "data key created_at",
            "UPDATE data_keys SET created_at = 1 WHERE tenant = 'acme'",
        ),
        (
            "data key mac",
            "UPDATE data_keys SET mac = X'01' WHERE tenant = 'acme'",
        ),
        (
            "data key wrapped",
            "UPDATE data_keys SET wrapped = (SELECT wrapped FROM data_keys WHERE tenant = 'other')
             WHERE tenant = 'acme'",
        ),
    ] {
        let f = fixture(good.port());
        tamper(&f.path, sql);
        let vault = Vault::open(&f.path, opts()).unwrap();
        let s = vault.store().tenant(&f.acme, "alice").unwrap();
        let r = s.reveal(&f.bot, &["api_key"], None);
        assert!(
            matches!(
                r,
                Err(StoreError::Integrity {
                    record: "data key",
                    ..
                })
            ),
            "{what}: {r:?}"
        );
        assert!(is_integrity(s.test(&f.bot)), "{what}");
        // The other tenant is unaffected.
        let o = vault.store().tenant(&f.other, "bob").unwrap();
        assert!(o.reveal(&f.theirs, &["api_key"], None).is_ok(), "{what}");
        vault.close().unwrap();
        assert!(integrity_events(&f.path) >= 1, "{what}");
    }
    assert_eq!(good.hits(), 0);
}

/// Copies a SQLite database file with its WAL and shared-memory files (or their absence).
fn copy_db_files(src_db: &Path, dst_db: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let src = PathBuf::from(format!("{}{suffix}", src_db.display()));
        let dst = PathBuf::from(format!("{}{suffix}", dst_db.display()));
        if src.exists() {
            std::fs::copy(&src, &dst).unwrap();
        } else {
            let _ = std::fs::remove_file(&dst);
        }
    }
}

fn problems(path: &Path) -> Vec<(String, credvault_store::Problem)> {
    let vault = Vault::open(path, VaultOptions::default()).unwrap();
    let r = vault.verify().unwrap();
    assert!(r.audit.is_intact(), "{:?}", r.audit.head_problem);
    vault.close().unwrap();
    r.store
        .findings
        .into_iter()
        .map(|f| (f.id, f.problem))
        .collect()
}

#[test]
fn verify_passes_an_untouched_vault_and_names_rows_rolled_back_restored_or_removed() {
    use credvault_store::Problem;
    let good = Listener::start();
    let f = fixture(good.port());
    assert!(problems(&f.path).is_empty(), "an untouched vault verifies");

    // An older copy of the database, put back after an update and a delete.
    let saved = f._dir.path().join("old.sqlite");
    copy_db_files(&Vault::db_path(&f.path), &saved);
    let vault = Vault::open(&f.path, opts()).unwrap();
    let s = vault.store().tenant(&f.acme, "alice").unwrap();
    s.update(&f.bot, CredentialUpdate::new().description("v2"))
        .unwrap();
    s.delete(&f.spare, None).unwrap();
    vault.close().unwrap();
    assert!(problems(&f.path).is_empty(), "API changes verify");
    copy_db_files(&saved, &Vault::db_path(&f.path));
    let found = problems(&f.path);
    assert!(
        found.contains(&(
            f.bot.to_string(),
            Problem::VersionMismatch {
                stored: 1,
                logged: 2
            }
        )),
        "{found:?}"
    );
    assert!(
        found.contains(&(f.spare.to_string(), Problem::DeletedButPresent)),
        "{found:?}"
    );

    // A row deleted with sqlite3, and one edited.
    let f = fixture(good.port());
    tamper(&f.path, "DELETE FROM credentials WHERE name = 'spare'");
    tamper(
        &f.path,
        "UPDATE credentials SET description = 'x' WHERE name = 'bot'",
    );
    let found = problems(&f.path);
    assert!(
        found.contains(&(f.spare.to_string(), Problem::Missing)),
        "{found:?}"
    );
    assert!(
        found.contains(&(f.bot.to_string(), Problem::Integrity)),
        "{found:?}"
    );
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(good.hits(), 0);
}

fn events_of(path: &Path, action: &str) -> usize {
    let segs = segment_paths(&Vault::audit_dir(path)).unwrap();
    read_event_files(&segs, &Query::new().action(Action::Other(action.into())))
        .unwrap()
        .events
        .len()
}

#[test]
fn a_vault_from_before_record_macs_is_authenticated_once_on_open() {
    let good = Listener::start();
    let f = fixture(good.port());
    // What migration 3 leaves in a vault that already had rows: empty MACs, no flag.
    tamper(&f.path, "UPDATE credentials SET mac = X''");
    tamper(&f.path, "UPDATE data_keys SET mac = X''");
    tamper(
        &f.path,
        "DELETE FROM vault_meta WHERE key = 'records_authenticated'",
    );
    let vault = Vault::open(&f.path, opts()).unwrap();
    let s = vault.store().tenant(&f.acme, "alice").unwrap();
    assert_eq!(
        s.reveal(&f.bot, &["api_key"], None)
            .unwrap()
            .expose_secret("api_key"),
        Some("sk-bot-0001")
    );
    assert_eq!(s.list(&ListFilter::new()).unwrap().len(), 3);
    vault.close().unwrap();
    assert_eq!(events_of(&f.path, "records_authenticated"), 1);
    // Opening again does nothing more, and the vault verifies.
    assert!(problems(&f.path).is_empty());
    assert_eq!(events_of(&f.path, "records_authenticated"), 1);

    // After the upgrade an emptied MAC is a failure, not a row to authenticate...
    tamper(
        &f.path,
        "UPDATE credentials SET mac = X'' WHERE name = 'bot'",
    );
    let vault = Vault::open(&f.path, opts()).unwrap();
    let s = vault.store().tenant(&f.acme, "alice").unwrap();
    assert!(is_integrity(s.reveal(&f.bot, &["api_key"], None)));
    vault.close().unwrap();
    // ...and resetting the flag too gets the row a MAC, but `verify` reports the second
    // authentication.
    tamper(
        &f.path,
        "DELETE FROM vault_meta WHERE key = 'records_authenticated'",
    );
    let found = problems(&f.path);
    assert!(
        found.contains(&(
            "records_authenticated".into(),
            credvault_store::Problem::RepeatedAuthentication { count: 2 }
        )),
        "{found:?}"
    );
    assert_eq!(good.hits(), 0);
}

#[test]
fn a_schema_v2_database_migrates_and_is_authenticated() {
    let good = Listener::start();
    let f = fixture(good.port());
    // Turn the database back into schema v2: no MAC or reveal columns, no flags, no throttle
    // table, an untagged head.
    let c = rusqlite::Connection::open(Vault::db_path(&f.path)).unwrap();
    c.execute_batch(
        "DROP TABLE otp_throttle;
         DROP TABLE hotp_counters;
         ALTER TABLE credentials DROP COLUMN mac;
         ALTER TABLE data_keys DROP COLUMN mac;
         ALTER TABLE credentials DROP COLUMN reveal;
         DELETE FROM vault_meta WHERE key IN ('records_authenticated', 'heads_authenticated');
         UPDATE vault_meta SET value = substr(value, 1, instr(value, ':') + 64)
            WHERE key = 'audit_head';
         PRAGMA user_version = 2;",
    )
    .unwrap();
    drop(c);
    let vault = Vault::open(&f.path, opts()).unwrap();
    let s = vault.store().tenant(&f.acme, "alice").unwrap();
    assert_eq!(
        s.reveal(&f.spare, &["api_key"], None)
            .unwrap()
            .expose_secret("api_key"),
        Some("sk-spare-0002")
    );
    vault.close().unwrap();
    let c = rusqlite::Connection::open(Vault::db_path(&f.path)).unwrap();
    let v: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    let empty: i64 = c
        .query_row(
            "SELECT count(*) FROM credentials WHERE mac = X''",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!((v, empty), (7, 0));
    assert_eq!(events_of(&f.path, "records_authenticated"), 1);
    assert_eq!(events_of(&f.path, "head_authenticated"), 1);
    assert!(problems(&f.path).is_empty());
}
