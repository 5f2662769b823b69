//! The PostgreSQL backend against a real server: the storage and replay-guard conformance
//! suites, migrations run once by nodes starting together, typed errors for a refused URL,
//! a held lock, a statement timeout and an exhausted pool.
//!
//! The server is the one `CREDVAULT_TEST_DATABASE_URL` names (`.ci/run` starts a throwaway
//! cluster on a loopback port); each storage gets its own schema. Without the variable these
//! tests pass vacuously on a developer machine, and fail when `CI` is set.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pg;

use std::sync::Arc;
use std::time::Duration;

use credvault_store::{
    PostgresOptions, PostgresStorage, Storage, StorageError, StorageReplayGuard,
};
use credvault_test::{replay_guard_conformance, storage_conformance};

#[test]
fn postgres_backend_passes_the_conformance_suites() {
    let Some(server) = pg::server() else { return };
    let fresh = || Arc::new(server.storage(&PostgresOptions::default())) as Arc<dyn Storage>;
    storage_conformance(&fresh).unwrap();
    replay_guard_conformance(&StorageReplayGuard::new(fresh())).unwrap();
}

#[test]
fn migrations_run_once_when_nodes_start_together() {
    let Some(server) = pg::server() else { return };
    let schema = server.new_schema();
    let opts = PostgresOptions::default().schema(schema.clone());
    let versions: Vec<u32> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| {
                    PostgresStorage::open(server.url(), &opts)
                        .unwrap()
                        .schema_version()
                        .unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(versions, vec![7; 6]);
    // One row per migration: none ran twice.
    let s = PostgresStorage::open(server.url(), &opts).unwrap();
    s.execute_raw(
        "DO $$ BEGIN IF (SELECT count(*) FROM schema_migrations) <> 7 THEN
           RAISE EXCEPTION 'migrations ran more than once'; END IF; END $$",
    )
    .unwrap();
    // A database from a newer build is refused, not written to.
    s.execute_raw("INSERT INTO schema_migrations (version) VALUES (99)")
        .unwrap();
    let err = PostgresStorage::open(server.url(), &opts).unwrap_err();
    assert!(err.to_string().contains("newer than this build"), "{err}");
}

#[test]
fn urls_with_passwords_or_clear_text_over_a_network_are_refused() {
    let pw = PostgresStorage::open(
        "postgres://vault:hunter2@127.0.0.1:1/db",
        &PostgresOptions::default(),
    )
    .unwrap_err();
    assert!(pw.to_string().contains("carries a password"), "{pw}");
    assert!(!pw.to_string().contains("hunter2"), "{pw}");
    let clear = PostgresStorage::open(
        "postgres://vault@db.example.com/db?sslmode=disable",
        &PostgresOptions::default(),
    )
    .unwrap_err();
    assert!(clear.to_string().contains("sslmode=disable"), "{clear}");
    let junk = PostgresStorage::open("postgres://[::1", &PostgresOptions::default()).unwrap_err();
    assert!(matches!(junk, StorageError::Backend(_)), "{junk}");
    // Nothing listens on port 1: unavailable, after the pool timeout.
    let down = PostgresStorage::open(
        "postgres://vault@127.0.0.1:1/db?sslmode=disable",
        &PostgresOptions::default().pool_timeout(Duration::from_millis(300)),
    )
    .unwrap_err();
    assert!(matches!(down, StorageError::Unavailable { .. }), "{down:?}");
    assert_eq!(
        credvault_store::redact_database_url("postgres://vault:hunter2@db:5432/v?sslmode=require"),
        "postgres://vault@db:5432/v?sslmode=require"
    );
    assert_eq!(
        credvault_store::redact_database_url("postgres://db/v?password=hunter2&sslmode=require"),
        "postgres://db/v?sslmode=require"
    );
}

#[test]
fn a_held_lock_a_slow_statement_and_an_exhausted_pool_are_typed() {
    let Some(server) = pg::server() else { return };
    let opts = PostgresOptions::default()
        .lock_timeout(Duration::from_millis(200))
        .statement_timeout(Duration::from_millis(500))
        .pool_size(1)
        .pool_timeout(Duration::from_millis(300));
    let schema = server.new_schema();
    let s = Arc::new(
        PostgresStorage::open(server.url(), &opts.clone().schema(schema.clone())).unwrap(),
    );
    // Another session holds the writer lock: a write waits, then is Busy.
    let mut other = server.admin();
    let mut tx = other.transaction().unwrap();
    tx.batch_execute(&format!(
        "SET LOCAL search_path TO \"{schema}\"; SELECT id FROM writer_lock FOR UPDATE;"
    ))
    .unwrap();
    let busy = s.authenticate_head(&mut || Ok(None)).unwrap_err();
    assert!(matches!(busy, StorageError::Busy { .. }), "{busy:?}");
    tx.rollback().unwrap();
    s.authenticate_head(&mut || Ok(None)).unwrap();
    // A statement past the statement timeout is cancelled by the server.
    let slow = s.execute_raw("SELECT pg_sleep(5)").unwrap_err();
    assert!(matches!(slow, StorageError::Timeout { .. }), "{slow:?}");
    // The one pooled connection is held (by a hook that waits): a second call waits for the
    // pool timeout and is told the pool is exhausted.
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let s2 = Arc::clone(&s);
    let holder = std::thread::spawn(move || {
        s2.authenticate_head(&mut || {
            held_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            Ok(None)
        })
    });
    held_rx.recv().unwrap();
    let exhausted = s.tenants().unwrap_err();
    go_tx.send(()).unwrap();
    holder.join().unwrap().unwrap();
    match exhausted {
        StorageError::Unavailable { resource, reason } => {
            assert_eq!(resource, "connection pool");
            assert!(reason.contains("all 1 connections"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(s.tenants().unwrap().is_empty());
}
