//! credvault-store beside bare SQLite, in one run.
//!
//! - `store_reveal_3_fields`: reveal of a 3-field `website_login` (login URL, user name,
//!   password) from a SQLite database on disk, data key cached, audit on (the hash-chained log,
//!   each event written with `write(2)`: `NoSync`; `group_commit` adds an fsync per event).
//!   Peer `bare_select`: a prepared `SELECT` of every column of the same row by primary key,
//!   read into owned values, on its own connection to the same file. Beside it,
//!   `floor_select_and_append`: the same select plus one `write(2)` of a line as long as the
//!   reveal's audit record, appended to a file on the same disk (no lock, no hash, no JSON):
//!   the least an audited read can cost, since the record is written before the value is
//!   returned.
//! - `store_rotate_100k`: tenant-key rotation of 100,000 credentials (batches of 256, one
//!   transaction each). Peer `bare_read_write_loop`: the same cursor walk reading each full row
//!   and writing its key id and sealed data back, in transactions of 256. Both on the same
//!   database, `synchronous = NORMAL` (WAL; the default `FULL` adds one fsync per batch to
//!   both sides).
//!
//! `cargo run -p credvault-benches --bin bench-report -- --peer bare_select store_reveal`
//! `cargo run -p credvault-benches --bin bench-report -- --peer bare_read_write_loop store_rotate`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use credvault_audit::{AuditKey, AuditLog, Durability, LogConfig};
use credvault_envelope::LocalKeyring;
use credvault_store::{
    CredentialId, NewCredential, SqliteDurability, SqliteStorage, Store, StoreConfig, TenantId,
};
use criterion::{criterion_group, criterion_main, Criterion};
use rusqlite::{params, Connection};

const ROWS: usize = 100_000;

fn store(dir: &Path, sync: SqliteDurability, audit: Durability) -> Store {
    let storage = SqliteStorage::open(dir.join("vault.db"), sync).unwrap();
    let (log, _) = AuditLog::open(
        &dir.join("audit"),
        AuditKey::from_bytes(&[7; 32]),
        LogConfig::default()
            .durability(audit)
            .checkpoint_interval(None),
    )
    .unwrap();
    Store::new(
        Arc::new(storage),
        Arc::new(LocalKeyring::generate().unwrap()),
        log,
    )
    .with_config(StoreConfig::default().rotation_batch(256))
}

fn login(i: usize) -> NewCredential {
    NewCredential::new(
        "website_login",
        credvault_benches::login_name(i),
        credvault_benches::login_fields(i),
    )
}

fn bare(dir: &Path, sync: &str) -> Connection {
    let c = Connection::open(dir.join("vault.db")).unwrap();
    c.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync};"
    ))
    .unwrap();
    c
}

const COLS: &str = "tenant, id, name, type, environment, description, tags, is_active, \
    expires_at, created_by, created_at, updated_at, version, last_used_at, last_tested, \
    test_status, test_message, public, secret_fields, key_id, secret";

type Row = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    String,
    (
        i64,
        i64,
        i64,
        Option<i64>,
        Option<i64>,
        Option<String>,
        Option<String>,
    ),
    String,
    String,
    Vec<u8>,
    Vec<u8>,
);

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        (
            r.get(10)?,
            r.get(11)?,
            r.get(12)?,
            r.get(13)?,
            r.get(14)?,
            r.get(15)?,
            r.get(16)?,
        ),
        r.get(17)?,
        r.get(18)?,
        r.get(19)?,
        r.get(20)?,
    ))
}

fn reveal(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let t = TenantId::new("acme").unwrap();
    let mut g = c.benchmark_group("store_reveal_3_fields");
    g.measurement_time(Duration::from_secs(5));
    for (label, audit) in [
        ("credvault_nosync_audit", Durability::NoSync),
        ("credvault_group_commit", Durability::default()),
    ] {
        let dir = tmp.path().join(label);
        std::fs::create_dir_all(&dir).unwrap();
        let s = store(&dir, SqliteDurability::Full, audit);
        s.create_tenant(&t, "Acme", "bench").unwrap();
        let scope = s.tenant(&t, "bench").unwrap();
        for i in 0..1000 {
            scope.create(login(i)).unwrap();
        }
        let id: CredentialId = scope.find("login-500", "production").unwrap().id.clone();
        let fields = ["login_url", "username", "password"];
        assert_eq!(scope.reveal(&id, &fields, Some("bench")).unwrap().len(), 3);
        g.bench_function(label, |b| {
            b.iter(|| black_box(scope.reveal(&id, &fields, Some("bench")).unwrap()))
        });
        if label == "credvault_nosync_audit" {
            let conn = bare(&dir, "FULL");
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {COLS} FROM credentials WHERE tenant = ?1 AND id = ?2"
                ))
                .unwrap();
            g.bench_function("bare_select", |b| {
                b.iter(|| {
                    black_box(
                        stmt.query_row(params![t.as_str(), id.as_str()], read_row)
                            .unwrap(),
                    )
                })
            });
            // As long as the reveal's own record: its last line but the checkpoints'.
            let segment = credvault_audit::segment_paths(&dir.join("audit"))
                .unwrap()
                .pop()
                .unwrap();
            let text = std::fs::read_to_string(segment).unwrap();
            let line = text
                .lines()
                .rev()
                .find(|l| l.contains(r#""type":"event""#))
                .unwrap()
                .to_owned()
                + "\n";
            let mut append = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("floor.jsonl"))
                .unwrap();
            g.bench_function("floor_select_and_append", |b| {
                b.iter(|| {
                    let row = stmt
                        .query_row(params![t.as_str(), id.as_str()], read_row)
                        .unwrap();
                    std::io::Write::write_all(&mut append, line.as_bytes()).unwrap();
                    black_box(row)
                })
            });
        }
    }
    g.finish();
}

fn rotate(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let t = TenantId::new("acme").unwrap();
    let s = store(dir, SqliteDurability::Normal, Durability::NoSync);
    s.create_tenant(&t, "Acme", "bench").unwrap();
    let scope = s.tenant(&t, "bench").unwrap();
    for i in 0..ROWS {
        scope.create(login(i)).unwrap();
    }
    let mut g = c.benchmark_group("store_rotate_100k");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    g.bench_function("credvault_rotate_tenant_key", |b| {
        b.iter(|| {
            let r = scope.rotate_key(&mut |_| {}).unwrap();
            assert_eq!(r.resealed as usize, ROWS);
            assert_eq!(r.retired.len(), 1);
        })
    });
    let mut conn = bare(dir, "NORMAL");
    g.bench_function("bare_read_write_loop", |b| {
        b.iter(|| {
            let mut cursor = String::new();
            let mut n = 0usize;
            loop {
                let rows: Vec<Row> = {
                    let mut st = conn
                        .prepare_cached(&format!(
                            "SELECT {COLS} FROM credentials WHERE tenant = ?1 AND id > ?2 ORDER BY id LIMIT 256"
                        ))
                        .unwrap();
                    st.query_map(params![t.as_str(), cursor], read_row)
                        .unwrap()
                        .collect::<Result<_, _>>()
                        .unwrap()
                };
                let Some(last) = rows.last() else { break };
                cursor = last.1.clone();
                let tx = conn.transaction().unwrap();
                {
                    let mut up = tx
                        .prepare_cached(
                            "UPDATE credentials SET key_id = ?3, secret = ?4 WHERE tenant = ?1 AND id = ?2",
                        )
                        .unwrap();
                    for r in &rows {
                        // Write different bytes, as a rotation does (SQLite may skip work
                        // for an identical value).
                        let mut secret = r.14.clone();
                        if let Some(b) = secret.last_mut() {
                            *b ^= 1;
                        }
                        n += up.execute(params![r.0, r.1, r.13, secret]).unwrap();
                    }
                }
                tx.commit().unwrap();
            }
            assert_eq!(n, ROWS);
        })
    });
    g.finish();
}

criterion_group!(benches, reveal, rotate);
criterion_main!(benches);
