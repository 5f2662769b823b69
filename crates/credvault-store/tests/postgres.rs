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
    assert_eq!(versions, vec![9; 6]);
    // One row per migration: none ran twice.
    let s = PostgresStorage::open(server.url(), &opts).unwrap();
    s.execute_raw(
        "DO $$ BEGIN IF (SELECT count(*) FROM schema_migrations) <> 9 THEN
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
    let busy = s.authenticate_head(&mut |_| Ok(None)).unwrap_err();
    assert!(matches!(busy, StorageError::Busy { .. }), "{busy:?}");
    tx.rollback().unwrap();
    s.authenticate_head(&mut |_| Ok(None)).unwrap();
    // A statement past the statement timeout is cancelled by the server.
    let slow = s.execute_raw("SELECT pg_sleep(5)").unwrap_err();
    assert!(matches!(slow, StorageError::Timeout { .. }), "{slow:?}");
    // The one pooled connection is held (by a hook that waits): a second call waits for the
    // pool timeout and is told the pool is exhausted.
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let s2 = Arc::clone(&s);
    let holder = std::thread::spawn(move || {
        s2.authenticate_head(&mut |_| {
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

mod chain {
    use super::*;
    use credvault_store::audit::{verify_segments, Action, VerifyOptions};
    use credvault_store::{
        AuditKey, AuditTarget, LocalKeyring, LogConfig, NewCredential, Store, StoreError, TenantId,
    };
    use serde_json::json;

    const KEY: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

    fn key() -> AuditKey {
        AuditKey::from_text(KEY).unwrap()
    }

    fn node(server: &pg::Server, schema: &str, master: &LocalKeyring) -> Store {
        let storage = PostgresStorage::open(
            server.url(),
            &PostgresOptions::default().schema(schema.to_owned()),
        )
        .unwrap()
        .with_audit_chain(key(), &LogConfig::default().checkpoint_every(4))
        .unwrap();
        Store::new(
            Arc::new(storage),
            Arc::new(LocalKeyring::from_secret_text(&master.export_secret_text()).unwrap()),
            AuditTarget::Storage,
        )
    }

    /// Two nodes on a new schema, tenant `acme`, and its bearer token `api` (made on node 1).
    fn two_nodes_and_a_token(
        server: &pg::Server,
    ) -> (
        String,
        [Store; 2],
        TenantId,
        credvault_store::CredentialInfo,
    ) {
        let schema = server.new_schema();
        let master = LocalKeyring::generate().unwrap();
        let nodes = [
            node(server, &schema, &master),
            node(server, &schema, &master),
        ];
        let t = TenantId::new("acme").unwrap();
        nodes[0].create_tenant(&t, "Acme", "admin").unwrap();
        let c = nodes[0]
            .tenant(&t, "alice")
            .unwrap()
            .create(NewCredential::new(
                "http_bearer_token",
                "api",
                json!({"token": "tok-1"}),
            ))
            .unwrap();
        (schema, nodes, t, c)
    }

    /// Standalone records (reveals) are appended by compare-and-set against the tip each node
    /// last saw: interleaved with the other node's reveals and writes, every stale tip is
    /// noticed, and the chain has every record once, in one line, verified.
    #[test]
    fn interleaved_reveals_from_two_nodes_with_stale_tips_make_one_chain() {
        let Some(server) = pg::server() else { return };
        let (schema, [n1, n2], t, c) = two_nodes_and_a_token(&server);
        let (s1, s2) = (
            n1.tenant(&t, "alice").unwrap(),
            n2.tenant(&t, "bob").unwrap(),
        );
        let mut want = vec![Action::Other("tenant_created".into()).to_string()];
        let used = Action::Other("key_used".into()).to_string();
        want.extend([used.clone(), Action::Created.to_string()]);
        // Each node's cached tip goes stale as soon as the other one appends.
        for round in 0..6 {
            let (s, first_on_node2) = if round % 2 == 0 {
                (&s1, false)
            } else {
                (&s2, round == 1)
            };
            if first_on_node2 {
                want.push(used.clone());
            }
            s.reveal(&c.id, &["token"], None).unwrap();
            want.push(Action::Accessed.to_string());
            if round == 3 {
                // A write through the writer lock moves the tip under both caches.
                s1.update(
                    &c.id,
                    credvault_store::CredentialUpdate::new().description("moved"),
                )
                .unwrap();
                want.push(Action::Updated.to_string());
            }
        }
        n1.flush().unwrap();
        n2.flush().unwrap();
        assert_eq!(pg::actions(&server.export_chain(&schema), &key()), want);
    }

    /// A reveal is decided on the row the node read for an earlier access, with no read of
    /// its own, and recorded only if that row is still the one in the database (the record's
    /// statement checks its MAC). Whatever the other node does to the credential meanwhile,
    /// the next reveal on this node sees it: a new secret is revealed, a deactivation or an
    /// expiry refuses (recorded as a denial, no access recorded), a reactivation allows again,
    /// a delete finds nothing; and the chain holds exactly what happened.
    #[test]
    fn a_node_never_reveals_from_a_row_another_node_changed() {
        use credvault_store::CredentialUpdate;
        let Some(server) = pg::server() else { return };
        let (schema, [n1, n2], t, c) = two_nodes_and_a_token(&server);
        let (s1, s2) = (
            n1.tenant(&t, "alice").unwrap(),
            n2.tenant(&t, "bob").unwrap(),
        );
        let token = |s: &credvault_store::Scope<'_>| {
            s.reveal(&c.id, &["token"], None)
                .map(|r| r.expose_secret("token").unwrap().to_owned())
        };
        let denied =
            |r: Result<String, StoreError>| matches!(r, Err(StoreError::AccessDenied { .. }));
        // Node 1 reads the row, twice (the second time from what it kept).
        assert_eq!(token(&s1).unwrap(), "tok-1");
        assert_eq!(token(&s1).unwrap(), "tok-1");
        // Node 2 changes the secret: node 1 reveals the new one.
        s2.update(
            &c.id,
            CredentialUpdate::new().fields(json!({"token": "tok-2"})),
        )
        .unwrap();
        assert_eq!(token(&s1).unwrap(), "tok-2");
        // Node 2 deactivates it: node 1 refuses, then allows once it is active again.
        s2.update(&c.id, CredentialUpdate::new().active(false))
            .unwrap();
        assert!(denied(token(&s1)));
        s2.update(&c.id, CredentialUpdate::new().active(true))
            .unwrap();
        assert_eq!(token(&s1).unwrap(), "tok-2");
        // Node 2 makes it expire: node 1 refuses.
        s2.update(&c.id, CredentialUpdate::new().expires_at(Some(1)))
            .unwrap();
        assert!(denied(token(&s1)));
        s2.update(&c.id, CredentialUpdate::new().expires_at(None))
            .unwrap();
        assert_eq!(token(&s1).unwrap(), "tok-2");
        // Node 2 deletes it: node 1 finds nothing.
        s2.delete(&c.id, None).unwrap();
        assert!(matches!(token(&s1), Err(StoreError::NotFound { .. })));
        n1.flush().unwrap();
        n2.flush().unwrap();
        let actions = pg::actions(&server.export_chain(&schema), &key());
        let count = |a: Action| {
            let a = a.to_string();
            actions.iter().filter(|x| **x == a).count()
        };
        // tok-1 twice, tok-2 three times; two refusals and the unknown id after the delete.
        assert_eq!(count(Action::Accessed), 5, "{actions:?}");
        assert_eq!(count(Action::AccessDenied), 3, "{actions:?}");
        assert_eq!(count(Action::Updated), 5, "{actions:?}");
        assert_eq!(count(Action::Deleted), 1, "{actions:?}");
    }

    /// Concurrent reveals are group-committed per node: 2 nodes x 8 threads x 25 reveals give
    /// 400 `accessed` records, each once, in one verified chain.
    #[test]
    fn concurrent_reveals_on_two_nodes_are_each_recorded_once() {
        let Some(server) = pg::server() else { return };
        let (schema, nodes, t, c) = two_nodes_and_a_token(&server);
        std::thread::scope(|s| {
            for n in &nodes {
                for i in 0..8 {
                    let (t, c) = (&t, &c);
                    s.spawn(move || {
                        let scope = n.tenant(t, format!("worker-{i}")).unwrap();
                        for _ in 0..25 {
                            assert_eq!(scope.reveal(&c.id, &["token"], None).unwrap().len(), 1);
                        }
                    });
                }
            }
        });
        for n in &nodes {
            n.flush().unwrap();
        }
        let actions = pg::actions(&server.export_chain(&schema), &key());
        let accessed = Action::Accessed.to_string();
        assert_eq!(actions.iter().filter(|a| **a == accessed).count(), 400);
    }

    /// Creates are group-committed with their records (decision 0017): 2 nodes x 8 threads,
    /// each creating 10 credentials of its own and, all at once, one named `shared`. Every
    /// own create succeeds; of the 16 `shared` creates exactly one does and the others get
    /// `NameTaken` (a refused batch is written caller by caller); the chain holds one
    /// `created` record per row and none for a refused create.
    #[test]
    fn concurrent_creates_with_a_clashing_name_are_each_decided_once() {
        let Some(server) = pg::server() else { return };
        let (schema, nodes, t, _) = two_nodes_and_a_token(&server);
        let barrier = std::sync::Barrier::new(16);
        let outcomes: Vec<Result<(), StoreError>> = std::thread::scope(|s| {
            let mut handles = Vec::new();
            for (k, n) in nodes.iter().enumerate() {
                for i in 0..8 {
                    let (t, barrier) = (&t, &barrier);
                    handles.push(s.spawn(move || {
                        let scope = n.tenant(t, format!("worker-{k}-{i}")).unwrap();
                        let new = |name: String| {
                            NewCredential::new("http_bearer_token", name, json!({"token": "x"}))
                        };
                        for j in 0..10 {
                            scope.create(new(format!("own-{k}-{i}-{j}"))).unwrap();
                            if j == 4 {
                                barrier.wait();
                            }
                        }
                        barrier.wait();
                        scope.create(new("shared".into())).map(|_| ())
                    }));
                }
            }
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 1);
        for o in outcomes.iter().filter(|o| o.is_err()) {
            assert!(matches!(o, Err(StoreError::NameTaken { .. })), "{o:?}");
        }
        for n in &nodes {
            n.flush().unwrap();
        }
        let rows = nodes[0]
            .storage()
            .credentials(&t, &Default::default())
            .unwrap();
        assert_eq!(rows.len(), 1 + 160 + 1, "api, the own ones, one shared");
        let actions = pg::actions(&server.export_chain(&schema), &key());
        let created = Action::Created.to_string();
        assert_eq!(
            actions.iter().filter(|a| **a == created).count(),
            rows.len()
        );
    }

    #[test]
    fn one_record_per_committed_operation_none_for_a_refused_one_from_two_nodes() {
        let Some(server) = pg::server() else { return };
        let schema = server.new_schema();
        let master = LocalKeyring::generate().unwrap();
        let (n1, n2) = (
            node(&server, &schema, &master),
            node(&server, &schema, &master),
        );
        let t = TenantId::new("acme").unwrap();
        n1.create_tenant(&t, "Acme", "admin").unwrap();
        let s1 = n1.tenant(&t, "alice").unwrap();
        let s2 = n2.tenant(&t, "bob").unwrap();
        let c = s1
            .create(NewCredential::new(
                "http_bearer_token",
                "api",
                json!({"token": "tok-1"}),
            ))
            .unwrap();
        // The same name again is refused: rolled back, so not recorded.
        let taken = s2
            .create(NewCredential::new(
                "http_bearer_token",
                "api",
                json!({"token": "tok-2"}),
            ))
            .unwrap_err();
        assert!(matches!(taken, StoreError::NameTaken { .. }), "{taken:?}");
        assert_eq!(s2.reveal(&c.id, &["token"], None).unwrap().len(), 1);
        s1.delete(&c.id, None).unwrap();
        n1.flush().unwrap();
        n2.flush().unwrap();
        let chain = server.export_chain(&schema);
        // Each node unwraps the data key once (`key_used`, recorded by itself); node 2's
        // refused create is not there, its reveal is.
        let used = Action::Other("key_used".into()).to_string();
        assert_eq!(
            pg::actions(&chain, &key()),
            [
                Action::Other("tenant_created".into()).to_string(),
                used.clone(),
                Action::Created.to_string(),
                used,
                Action::Accessed.to_string(),
                Action::Deleted.to_string(),
            ]
        );
        // No secret in the chain.
        assert!(!String::from_utf8_lossy(&chain).contains("tok-1"));

        // The table is append-only, even for its owner...
        let mut admin = server.admin();
        for sql in [
            "UPDATE audit_log SET line = line WHERE seq = 3",
            "DELETE FROM audit_log WHERE seq = 3",
            "TRUNCATE audit_log",
        ] {
            let err = admin
                .batch_execute(&format!("SET search_path TO \"{schema}\"; {sql}"))
                .unwrap_err();
            let msg = err.as_db_error().map(|d| d.message().to_owned());
            assert_eq!(msg.as_deref(), Some("audit_log is append-only"), "{sql}");
        }
        // ...and an owner who drops the guard and edits a record is found by verification.
        admin
            .batch_execute(&format!(
                "SET search_path TO \"{schema}\";
                 ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only;"
            ))
            .unwrap();
        let edited = admin
            .execute(
                "UPDATE audit_log SET line = convert_to(replace(convert_from(line, 'UTF8'),
                   '\"bob\"', '\"eve\"'), 'UTF8')
                 WHERE convert_from(line, 'UTF8') LIKE '%\"bob\"%'",
                &[],
            )
            .unwrap();
        assert_eq!(edited, 1);
        let k = key();
        let report = verify_segments(
            &[&server.export_chain(&schema)],
            VerifyOptions {
                key: Some(&k),
                anchor: None,
            },
        );
        assert!(!report.is_intact(), "{report:?}");
    }
}

mod vault {
    use super::*;
    use credvault_store::{
        DatabaseConfig, NewCredential, StoreError, TenantId, Vault, VaultOptions,
    };
    use serde_json::json;

    #[test]
    fn a_postgres_vault_opens_on_a_second_node_and_verifies_as_one() {
        let Some(server) = pg::server() else { return };
        let tmp = tempfile::tempdir().unwrap();
        let (d1, d2) = (tmp.path().join("node1"), tmp.path().join("node2"));
        let db = DatabaseConfig::new(server.url()).schema(server.new_schema());
        let v1 = Vault::init(&d1, VaultOptions::default().database(db.clone())).unwrap();
        assert!(v1.is_postgres());
        assert!(
            !Vault::db_path(&d1).exists(),
            "no SQLite file beside a PostgreSQL vault"
        );
        let t = TenantId::new("acme").unwrap();
        v1.store().create_tenant(&t, "Acme", "admin").unwrap();
        let info = v1
            .store()
            .tenant(&t, "alice")
            .unwrap()
            .create(NewCredential::new(
                "http_bearer_token",
                "api",
                json!({"token": "tok-9"}),
            ))
            .unwrap();
        // The second node: a copy of the directory (keys, database settings), same database.
        copy_tree(&d1, &d2);
        let v2 = Vault::open(&d2, VaultOptions::default()).unwrap();
        let r = v2
            .store()
            .tenant(&t, "bob")
            .unwrap()
            .reveal(&info.id, &["token"], None)
            .unwrap();
        assert_eq!(r.expose_secret("token"), Some("tok-9"));
        v2.store().flush().unwrap();
        let anchor = v1.anchor().unwrap();
        let check = v2.verify_audit_against(Some(&anchor)).unwrap();
        assert!(check.is_intact(), "{check:?}");
        let whole = v2.verify().unwrap();
        assert!(whole.is_ok(), "{whole:?}");
        let actors: Vec<String> = v1
            .audit_events(&Default::default())
            .unwrap()
            .events
            .into_iter()
            .map(|e| e.event.actor)
            .collect();
        assert!(actors.contains(&"alice".to_owned()) && actors.contains(&"bob".to_owned()));
        v1.close().unwrap();
        v2.close().unwrap();

        // A node with another audit key is refused: it would fork the chain's checkpoints.
        let d3 = tmp.path().join("node3");
        copy_tree(&d1, &d3);
        let other = AuditKeyText::new();
        std::fs::write(Vault::audit_key_path(&d3), other.0).unwrap();
        let err = Vault::open(&d3, VaultOptions::default()).unwrap_err();
        assert!(err.to_string().contains("audit key"), "{err}");

        // A URL with a password is never written into the directory.
        let d4 = tmp.path().join("node4");
        let err = Vault::init(
            &d4,
            VaultOptions::default()
                .database(DatabaseConfig::new("postgres://vault:hunter2@127.0.0.1/db")),
        )
        .unwrap_err();
        assert!(matches!(err, StoreError::Vault { .. }), "{err:?}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(!Vault::database_config_path(&d4).exists());
    }

    fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                copy_tree(&e.path(), &to.join(e.file_name()));
            } else {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }

    #[test]
    fn a_sqlite_vault_moves_into_postgres_verbatim_with_its_audit_chain_continued() {
        let Some(server) = pg::server() else { return };
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vault");
        let v = Vault::init(&dir, VaultOptions::default()).unwrap();
        let (a, b) = (
            TenantId::new("acme").unwrap(),
            TenantId::new("globex").unwrap(),
        );
        v.store().create_tenant(&a, "Acme", "admin").unwrap();
        v.store().create_tenant(&b, "Globex", "admin").unwrap();
        let mut ids = Vec::new();
        for (t, n) in [(&a, 5), (&b, 3)] {
            let s = v.store().tenant(t, "alice").unwrap();
            for i in 0..n {
                let info = s
                    .create(NewCredential::new(
                        "http_bearer_token",
                        format!("c{i}"),
                        json!({"token": format!("{t}-tok-{i}")}),
                    ))
                    .unwrap();
                ids.push((t.clone(), info.id, format!("{t}-tok-{i}")));
            }
        }
        // A rotated tenant: two key generations behind it, one retired.
        v.store()
            .tenant(&a, "admin")
            .unwrap()
            .rotate_key(&mut |_| {})
            .unwrap();
        let before: Vec<_> = [&a, &b]
            .iter()
            .flat_map(|t| {
                v.store()
                    .storage()
                    .credentials(t, &Default::default())
                    .unwrap()
            })
            .collect();
        let events_before: Vec<String> = v
            .audit_events(&Default::default())
            .unwrap()
            .events
            .into_iter()
            .map(|e| e.event.action.to_string())
            .collect();
        v.close().unwrap();
        let untouched = tmp.path().join("untouched");
        copy_tree(&dir, &untouched);

        let db = DatabaseConfig::new(server.url()).schema(server.new_schema());
        let (moved, report) =
            Vault::migrate_to_postgres(&dir, db.clone(), VaultOptions::default(), "ops").unwrap();
        assert!(moved.is_postgres() && !report.resumed, "{report:?}");
        assert_eq!((report.tenants, report.credentials), (2, 8), "{report:?}");
        assert!(!Vault::db_path(&dir).exists() && dir.join("vault.db.migrated").exists());
        // Every row verbatim: the same ciphertexts, versions and record MACs.
        let after: Vec<_> = [&a, &b]
            .iter()
            .flat_map(|t| {
                moved
                    .store()
                    .storage()
                    .credentials(t, &Default::default())
                    .unwrap()
            })
            .collect();
        assert_eq!(after, before);
        for (t, id, value) in &ids {
            let r = moved
                .store()
                .tenant(t, "bob")
                .unwrap()
                .reveal(id, &["token"], None)
                .unwrap();
            assert_eq!(r.expose_secret("token"), Some(value.as_str()));
        }
        // The chain continues the file log's: the old events, the migration, what came after.
        let events: Vec<String> = moved
            .audit_events(&Default::default())
            .unwrap()
            .events
            .into_iter()
            .map(|e| e.event.action.to_string())
            .collect();
        assert_eq!(
            events[..events_before.len()],
            events_before[..],
            "{events:?}"
        );
        let at = events.iter().position(|e| e == "storage_migrated").unwrap();
        assert_eq!(at, events_before.len(), "{events:?}");
        assert!(
            events[at + 1..].iter().any(|e| e == "accessed"),
            "{events:?}"
        );
        assert!(moved.verify().unwrap().is_ok());
        moved.close().unwrap();

        // Run again on the directory as it was (stopped after the copy committed): it finds
        // its own copy and finishes.
        let again = tmp.path().join("again");
        copy_tree(&untouched, &again);
        let (v2, r2) =
            Vault::migrate_to_postgres(&again, db.clone(), VaultOptions::default(), "ops").unwrap();
        assert!(r2.resumed, "{r2:?}");
        v2.close().unwrap();
        // ...but not if the SQLite vault changed since the copy.
        let changed = tmp.path().join("changed");
        copy_tree(&untouched, &changed);
        let c = Vault::open(&changed, VaultOptions::default()).unwrap();
        c.store()
            .tenant(&a, "alice")
            .unwrap()
            .create(NewCredential::new(
                "http_bearer_token",
                "late",
                json!({"token": "x"}),
            ))
            .unwrap();
        c.close().unwrap();
        let err =
            Vault::migrate_to_postgres(&changed, db, VaultOptions::default(), "ops").unwrap_err();
        assert!(err.to_string().contains("changed since"), "{err}");
        assert!(
            Vault::db_path(&changed).exists(),
            "a refused migration leaves the vault as it was"
        );
        // A vault already moved is not moved twice.
        let err = Vault::migrate_to_postgres(
            &dir,
            DatabaseConfig::new(server.url()).schema(server.new_schema()),
            VaultOptions::default(),
            "ops",
        )
        .unwrap_err();
        assert!(err.to_string().contains("already"), "{err}");
    }

    struct AuditKeyText(String);

    impl AuditKeyText {
        fn new() -> Self {
            Self(format!("{}\n", "17".repeat(32)))
        }
    }
}

/// A node running with the grants docs/postgres.md documents: it works, and it cannot rewrite
/// the audit chain (no UPDATE or DELETE on it, and it does not own the trigger).
#[test]
fn the_documented_grants_run_a_node_that_cannot_rewrite_history() {
    use credvault_store::{
        AuditKey, AuditTarget, LocalKeyring, LogConfig, NewCredential, Store, TenantId,
    };
    let Some(server) = pg::server() else { return };
    let schema = server.new_schema();
    // The owner (the test's superuser) creates the tables.
    drop(
        PostgresStorage::open(
            server.url(),
            &PostgresOptions::default().schema(schema.clone()),
        )
        .unwrap(),
    );
    let role = format!("node_{schema}");
    let mut admin = server.admin();
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'node-pw';
             GRANT USAGE ON SCHEMA \"{schema}\" TO {role};
             SET search_path TO \"{schema}\";
             GRANT SELECT, INSERT, UPDATE, DELETE ON tenants, data_keys, credentials,
                replay_guard, vault_meta, otp_throttle, hotp_counters TO {role};
             GRANT SELECT, UPDATE ON writer_lock TO {role};
             GRANT SELECT, INSERT ON audit_log, audit_segments TO {role};
             GRANT SELECT ON schema_migrations TO {role};"
        ))
        .unwrap();
    let config: postgres::Config = server.url().parse().unwrap();
    let host = match &config.get_hosts()[0] {
        postgres::config::Host::Tcp(h) => h.clone(),
        postgres::config::Host::Unix(p) => p.display().to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let url = format!(
        "postgres://{role}@{host}:{port}/{}?sslmode=disable",
        config.get_dbname().unwrap_or("postgres")
    );
    let opts = PostgresOptions::default()
        .schema(schema.clone())
        .password(zeroize::Zeroizing::new("node-pw".to_owned()));
    let node = PostgresStorage::open(&url, &opts)
        .unwrap()
        .with_audit_chain(
            AuditKey::from_text(&"3c".repeat(32)).unwrap(),
            &LogConfig::default(),
        )
        .unwrap();
    let node = Arc::new(node);
    let store = Store::new(
        Arc::clone(&node) as Arc<dyn Storage>,
        Arc::new(LocalKeyring::generate().unwrap()),
        AuditTarget::Storage,
    );
    let t = TenantId::new("acme").unwrap();
    store.create_tenant(&t, "Acme", "admin").unwrap();
    let s = store.tenant(&t, "alice").unwrap();
    let c = s
        .create(NewCredential::new(
            "http_bearer_token",
            "api",
            serde_json::json!({"token": "t-1"}),
        ))
        .unwrap();
    assert_eq!(s.reveal(&c.id, &["token"], None).unwrap().len(), 1);
    s.delete(&c.id, None).unwrap();
    for sql in [
        "UPDATE audit_log SET kind = kind",
        "DELETE FROM audit_log",
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
        "TRUNCATE audit_log",
    ] {
        let err = node.execute_raw(sql).unwrap_err();
        assert!(err.to_string().contains("42501"), "{sql}: {err}");
    }
    let _ = admin.batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role};"));
}

/// TLS to the server: `sslmode=require` with the CA that signed the server's certificate
/// connects, and the connection is encrypted; the wrong CA, or the system's roots (which do
/// not know a test CA), are refused before anything is sent. `.ci/run` gives the server a
/// certificate from a CA it makes and names both CA files.
#[test]
fn tls_to_the_server_is_verified_against_the_given_ca() {
    let Some(server) = pg::server() else { return };
    let (Ok(ca), Ok(other)) = (
        std::env::var("CREDVAULT_TEST_PG_CA"),
        std::env::var("CREDVAULT_TEST_PG_OTHER_CA"),
    ) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CREDVAULT_TEST_PG_CA is not set but CI is: .ci/run gives the server a certificate"
        );
        return;
    };
    let url = server.url().replace("sslmode=disable", "sslmode=require");
    assert_ne!(url, server.url(), "the test URL names sslmode=disable");
    let schema = server.new_schema();
    let opts = PostgresOptions::default()
        .schema(schema)
        .ca_file(ca)
        .pool_timeout(Duration::from_secs(5));
    let s = PostgresStorage::open(&url, &opts).unwrap();
    // Every statement of this storage goes over TLS: the server says so for its own session.
    s.execute_raw(
        "DO $$ BEGIN IF NOT (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) THEN
           RAISE EXCEPTION 'this session is not encrypted'; END IF; END $$",
    )
    .unwrap();
    // The whole storage suite, over TLS.
    let fresh = || {
        Arc::new(PostgresStorage::open(&url, &opts.clone().schema(server.new_schema())).unwrap())
            as Arc<dyn Storage>
    };
    storage_conformance(&fresh).unwrap();
    // The wrong CA, and no CA (the system's roots): refused, typed.
    for opts in [
        PostgresOptions::default().ca_file(other),
        PostgresOptions::default(),
    ] {
        let Err(err) = PostgresStorage::open(&url, &opts.pool_timeout(Duration::from_secs(2)))
        else {
            panic!("an unverified server was accepted")
        };
        assert!(matches!(err, StorageError::Unavailable { .. }), "{err:?}");
    }
}
