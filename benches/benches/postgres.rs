//! credvault-store on PostgreSQL beside SQLite and beside bare statements on the same server,
//! at 1, 4 and 16 clients (threads, each with its own connection or pooled handle), in one run.
//!
//! - `pg_reveal_N_clients`: reveal of a 3-field `website_login`, data key cached, audit on.
//!   `credvault_postgres`: the audit record is written in the database's chain in a transaction
//!   of its own (writer lock, chain tip, record, head) before the value is returned.
//!   `credvault_sqlite`: the SQLite backend with a file audit log written with `write(2)`
//!   (`NoSync`; the PostgreSQL server here runs with `fsync = off` too, see below).
//!   Peer `bare_select`: a prepared `SELECT` of every column of the same kind of row by primary
//!   key, on a plain `postgres::Client` per thread.
//! - `pg_create_N_clients`: create of a credential (validate, seal, insert, audit).
//!   Peer `bare_insert`: a prepared `INSERT` of a row of the same size into a plain table.
//!
//! Each iteration is one operation; with N clients the N threads share the iterations, and the
//! time reported is wall time per operation (so 1 / time is the throughput).
//!
//! Needs a server: `CREDVAULT_BENCH_DATABASE_URL` (or `CREDVAULT_TEST_DATABASE_URL`), password
//! from PGPASSWORD; without one the benchmark says so and measures nothing.
//! `cargo run -p credvault-benches --bin bench-report -- --peer bare_select pg_reveal`
//! `cargo run -p credvault-benches --bin bench-report -- --peer bare_insert pg_create`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use credvault_audit::{AuditKey, AuditLog, Durability, LogConfig};
use credvault_envelope::LocalKeyring;
use credvault_store::{
    AuditTarget, CredentialId, NewCredential, PostgresOptions, PostgresStorage, SqliteDurability,
    SqliteStorage, Store, TenantId,
};
use criterion::{criterion_group, criterion_main, Criterion};

const CLIENTS: [usize; 3] = [1, 4, 16];
const ROWS: usize = 1_000;

fn url() -> Option<String> {
    std::env::var("CREDVAULT_BENCH_DATABASE_URL")
        .or_else(|_| std::env::var("CREDVAULT_TEST_DATABASE_URL"))
        .ok()
        .filter(|u| !u.is_empty())
}

fn client(url: &str) -> postgres::Client {
    let mut config: postgres::Config = url.parse().unwrap();
    if let Ok(pw) = std::env::var("PGPASSWORD") {
        config.password(pw);
    }
    config.connect(postgres::NoTls).unwrap()
}

fn login(i: usize) -> NewCredential {
    NewCredential::new(
        "website_login",
        credvault_benches::login_name(i),
        credvault_benches::login_fields(i),
    )
}

fn pg_store(url: &str, schema: &str) -> Store {
    let storage = PostgresStorage::open(
        url,
        &PostgresOptions::default()
            .schema(schema.to_owned())
            .pool_size(16),
    )
    .unwrap()
    .with_audit_chain(
        AuditKey::from_bytes(&[7; 32]),
        &LogConfig::default().checkpoint_interval(None),
    )
    .unwrap();
    Store::new(
        Arc::new(storage),
        Arc::new(LocalKeyring::generate().unwrap()),
        AuditTarget::Storage,
    )
}

fn sqlite_store(dir: &std::path::Path) -> Store {
    let storage = SqliteStorage::open(dir.join("vault.db"), SqliteDurability::Full).unwrap();
    let (log, _) = AuditLog::open(
        &dir.join("audit"),
        AuditKey::from_bytes(&[7; 32]),
        LogConfig::default()
            .durability(Durability::NoSync)
            .checkpoint_interval(None),
    )
    .unwrap();
    Store::new(
        Arc::new(storage),
        Arc::new(LocalKeyring::generate().unwrap()),
        log,
    )
}

/// Runs `iters` operations on `clients` threads (each calls `op(thread, i)` for its share)
/// and returns the wall time.
fn run_clients<S: Sync>(
    clients: usize,
    iters: u64,
    state: &[S],
    op: impl Fn(&S, usize) + Sync,
) -> Duration {
    let next = AtomicUsize::new(0);
    let total = usize::try_from(iters).unwrap();
    let start = Instant::now();
    std::thread::scope(|s| {
        for st in state.iter().take(clients) {
            let (next, op) = (&next, &op);
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                op(st, i);
            });
        }
    });
    start.elapsed()
}

const BARE_COLS: &str = "tenant, id, name, type, environment, description, tags, is_active, \
    expires_at, created_by, created_at, updated_at, version, last_used_at, last_tested, \
    test_status, test_message, public, secret_fields, key_id, secret, mac, reveal";

fn benches(c: &mut Criterion) {
    let Some(url) = url() else {
        eprintln!("postgres benches skipped: set CREDVAULT_BENCH_DATABASE_URL");
        return;
    };
    let t = TenantId::new("acme").unwrap();
    let schema = format!("bench{}", std::process::id());
    let pg = pg_store(&url, &schema);
    let tmp = tempfile::tempdir().unwrap();
    let lite = sqlite_store(tmp.path());
    let mut ids: Vec<(Store, Vec<CredentialId>)> = Vec::new();
    for s in [pg.clone(), lite.clone()] {
        s.create_tenant(&t, "Acme", "bench").unwrap();
        let scope = s.tenant(&t, "bench").unwrap();
        let v: Vec<CredentialId> = (0..ROWS)
            .map(|i| scope.create(login(i)).unwrap().id)
            .collect();
        ids.push((s, v));
    }
    let fields = ["login_url", "username", "password"];
    // The bare peers: one plain connection per client thread, statements prepared.
    let select =
        format!("SELECT {BARE_COLS} FROM \"{schema}\".credentials WHERE tenant = $1 AND id = $2");
    let mut bare: Vec<std::sync::Mutex<(postgres::Client, postgres::Statement)>> = Vec::new();
    for _ in 0..16 {
        let mut cl = client(&url);
        let st = cl.prepare(&select).unwrap();
        bare.push(std::sync::Mutex::new((cl, st)));
    }
    {
        let mut admin = client(&url);
        admin
            .batch_execute(&format!(
                "CREATE TABLE \"{schema}\".bare_insert (id TEXT PRIMARY KEY, name TEXT NOT NULL,
                   public TEXT NOT NULL, secret BYTEA NOT NULL, created_at BIGINT NOT NULL)"
            ))
            .unwrap();
    }
    let insert = format!(
        "INSERT INTO \"{schema}\".bare_insert (id, name, public, secret, created_at)
         VALUES ($1, $2, $3, $4, $5)"
    );
    let mut bare_ins: Vec<std::sync::Mutex<(postgres::Client, postgres::Statement)>> = Vec::new();
    for _ in 0..16 {
        let mut cl = client(&url);
        let st = cl.prepare(&insert).unwrap();
        bare_ins.push(std::sync::Mutex::new((cl, st)));
    }
    let stores: Vec<usize> = (0..16).collect();
    for clients in CLIENTS {
        let mut g = c.benchmark_group(format!("pg_reveal_{clients}_clients"));
        g.sample_size(10).measurement_time(Duration::from_secs(4));
        for (label, k) in [("credvault_postgres", 0), ("credvault_sqlite", 1)] {
            let (store, v) = &ids[k];
            g.bench_function(label, |b| {
                b.iter_custom(|iters| {
                    run_clients(clients, iters, &stores, |_, i| {
                        let scope = store.tenant(&t, "bench").unwrap();
                        let r = scope.reveal(&v[i % ROWS], &fields, Some("bench")).unwrap();
                        assert_eq!(r.len(), 3);
                    })
                });
            });
        }
        let v = &ids[0].1;
        g.bench_function("bare_select", |b| {
            b.iter_custom(|iters| {
                run_clients(clients, iters, &bare, |m, i| {
                    let mut g = m.lock().unwrap();
                    let (cl, st) = &mut *g;
                    let row = cl
                        .query_one(&*st, &[&t.as_str(), &v[i % ROWS].as_str()])
                        .unwrap();
                    let secret: Vec<u8> = row.get(20);
                    assert!(!secret.is_empty());
                })
            });
        });
        g.finish();
    }
    let seq = AtomicUsize::new(ROWS);
    for clients in CLIENTS {
        let mut g = c.benchmark_group(format!("pg_create_{clients}_clients"));
        g.sample_size(10).measurement_time(Duration::from_secs(4));
        for (label, k) in [("credvault_postgres", 0), ("credvault_sqlite", 1)] {
            let store = &ids[k].0;
            g.bench_function(label, |b| {
                b.iter_custom(|iters| {
                    run_clients(clients, iters, &stores, |_, _| {
                        let n = seq.fetch_add(1, Ordering::Relaxed);
                        store.tenant(&t, "bench").unwrap().create(login(n)).unwrap();
                    })
                });
            });
        }
        g.bench_function("bare_insert", |b| {
            b.iter_custom(|iters| {
                run_clients(clients, iters, &bare_ins, |m, _| {
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    let mut g = m.lock().unwrap();
                    let (cl, st) = &mut *g;
                    cl.execute(
                        &*st,
                        &[
                            &format!("cred_{n:032x}"),
                            &format!("login-{n}"),
                            &r#"{"login_url":"https://portal.example.com/login","username":"robot@example.com"}"#,
                            &vec![0u8; 120],
                            &1_700_000_000_000i64,
                        ],
                    )
                    .unwrap();
                })
            });
        });
        g.finish();
    }
    let mut admin = client(&url);
    let _ = admin.batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"));
}

criterion_group!(postgres_benches, benches);
criterion_main!(postgres_benches);
