//! Every storage backend passes the storage and replay-guard conformance suites.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use credvault_store::{
    MemoryStorage, SqliteDurability, SqliteStorage, Storage, StorageReplayGuard,
};
use credvault_test::{replay_guard_conformance, storage_conformance};

#[test]
fn memory_backend() {
    storage_conformance(&|| Arc::new(MemoryStorage::new()) as Arc<dyn Storage>).unwrap();
    replay_guard_conformance(&StorageReplayGuard::new(Arc::new(MemoryStorage::new()))).unwrap();
}

#[test]
fn sqlite_in_memory_backend() {
    storage_conformance(&|| Arc::new(SqliteStorage::open_in_memory().unwrap()) as Arc<dyn Storage>)
        .unwrap();
}

#[test]
fn sqlite_file_backend() {
    let dir = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicUsize::new(0);
    let fresh = || {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Arc::new(
            SqliteStorage::open(
                dir.path().join(format!("db{i}.sqlite")),
                SqliteDurability::Normal,
            )
            .unwrap(),
        ) as Arc<dyn Storage>
    };
    storage_conformance(&fresh).unwrap();
    replay_guard_conformance(&StorageReplayGuard::new(fresh())).unwrap();
}

#[test]
fn sqlite_reopens_at_its_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v.sqlite");
    assert_eq!(
        SqliteStorage::open(&p, SqliteDurability::Full)
            .unwrap()
            .schema_version()
            .unwrap(),
        7
    );
    let s = SqliteStorage::open(&p, SqliteDurability::Full).unwrap();
    assert_eq!(s.schema_version().unwrap(), 7);
    // A lookup by name uses an index, never a scan of the table.
    let mut plan = String::new();
    s.query_plan(
        "SELECT id FROM credentials WHERE tenant = 'a' AND name = 'b' AND environment = 'c'",
        &mut plan,
    )
    .unwrap();
    assert!(plan.contains("USING INDEX credentials_name"), "{plan}");
    s.execute_raw("PRAGMA user_version = 99", &[]).unwrap();
    drop(s);
    let err = SqliteStorage::open(&p, SqliteDurability::Full).unwrap_err();
    assert!(err.to_string().contains("newer than this build"), "{err}");
}
