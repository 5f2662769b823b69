//! Several vault processes (separate OS processes, not threads) on one PostgreSQL database,
//! each with its own pool, all appending to the database's one audit chain:
//! - 8 processes × N mixed operations: no update lost (shared counters incremented with
//!   optimistic versions equal the increments that succeeded), each process's own credentials
//!   are exactly what it believes, and the chain holds one record per committed operation;
//! - the same TOTP code submitted by 16 processes at once is accepted exactly once;
//! - 8 processes updating one credential from the same version: exactly one wins;
//! - a tenant-key rotation killed with SIGKILL in the middle on one node and resumed on another
//!   loses nothing and retires the old key.
//!
//! The children are this test binary run again with the ignored test `pg_child` selected and
//! their role in environment variables.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pg;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use credvault_store::audit::Action;
use credvault_store::{
    AuditKey, AuditTarget, CredentialId, CredentialUpdate, LocalKeyring, LogConfig, NewCredential,
    PostgresOptions, PostgresStorage, Store, StoreConfig, StoreError, TenantId,
};
use serde_json::json;

const AUDIT_KEY: &str = "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3";
const ROLE: &str = "CV_PG_CHILD_ROLE";
const SCHEMA: &str = "CV_PG_CHILD_SCHEMA";
const MASTER: &str = "CV_PG_CHILD_MASTER";
const ARG: &str = "CV_PG_CHILD_ARG";
const START: &str = "CV_PG_CHILD_START_MS";
/// Mixed operations per process.
const OPS: usize = 2_000;
const COUNTERS: usize = 4;

fn tenant() -> TenantId {
    TenantId::new("acme").unwrap()
}

fn audit_key() -> AuditKey {
    AuditKey::from_text(AUDIT_KEY).unwrap()
}

/// A vault node: its own storage handle and pool on the shared database, the shared master
/// key, the database's audit chain.
fn node(url: &str, schema: &str, master: &str, cfg: StoreConfig) -> Store {
    let storage = PostgresStorage::open(
        url,
        &PostgresOptions::default()
            .schema(schema.to_owned())
            .pool_size(4)
            .lock_timeout(Duration::from_secs(30)),
    )
    .unwrap()
    .with_audit_chain(audit_key(), &LogConfig::default())
    .unwrap();
    Store::new(
        Arc::new(storage),
        Arc::new(LocalKeyring::from_secret_text(master).unwrap()),
        AuditTarget::Storage,
    )
    .with_config(cfg)
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// Sleeps until `START` (so that the children act at the same moment).
fn wait_for_start() {
    let start: u64 = std::env::var(START).unwrap().parse().unwrap();
    let now = now_ms();
    if start > now {
        std::thread::sleep(Duration::from_millis(start - now));
    }
}

/// A tiny deterministic generator (each child its own sequence).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

#[test]
#[ignore = "the child half of the multi-process PostgreSQL tests, run by them"]
fn pg_child() {
    let url = std::env::var(pg::URL_ENV).unwrap();
    let schema = std::env::var(SCHEMA).unwrap();
    let master = std::env::var(MASTER).unwrap();
    let arg = std::env::var(ARG).unwrap();
    let role = std::env::var(ROLE).unwrap();
    let cfg = StoreConfig::default().rotation_batch(5);
    let store = node(&url, &schema, &master, cfg);
    let scope = store.tenant(&tenant(), format!("child-{role}")).unwrap();
    match role.as_str() {
        "mixed" => {
            let index: u64 = arg.parse().unwrap();
            let counters: Vec<CredentialId> = (0..COUNTERS)
                .map(|c| {
                    scope
                        .find(&format!("counter-{c}"), "production")
                        .unwrap()
                        .id
                })
                .collect();
            let mut rng = Lcg(index + 1);
            let mut mine: BTreeMap<String, (CredentialId, String)> = BTreeMap::new();
            let mut increments = [0u64; COUNTERS];
            let mut created = 0u64;
            let mut deleted = 0u64;
            let mut conflicts = 0u64;
            wait_for_start();
            for op in 0..OPS {
                match rng.next(100) {
                    0..40 => {
                        let c = rng.next(COUNTERS);
                        loop {
                            // The version first: if the value read after it is newer, the
                            // update below is refused (read value and version together).
                            let info = scope.get(&counters[c]).unwrap();
                            let r = scope.reveal(&counters[c], &["token"], None).unwrap();
                            let n: u64 = r.expose_secret("token").unwrap().parse().unwrap();
                            match scope.update(
                                &counters[c],
                                CredentialUpdate::new()
                                    .fields(json!({"token": (n + 1).to_string()}))
                                    .expect_version(info.version),
                            ) {
                                Ok(_) => break,
                                Err(StoreError::VersionConflict { .. }) => conflicts += 1,
                                Err(e) => panic!("increment: {e}"),
                            }
                        }
                        increments[c] += 1;
                    }
                    40..60 => {
                        let name = format!("p{index}-{op}");
                        let value = format!("v{index}-{op}");
                        let info = scope
                            .create(NewCredential::new(
                                "http_bearer_token",
                                &name,
                                json!({"token": value}),
                            ))
                            .unwrap();
                        mine.insert(name, (info.id, value));
                        created += 1;
                    }
                    60..75 if !mine.is_empty() => {
                        let k = rng.next(mine.len());
                        let name = mine.keys().nth(k).unwrap().clone();
                        let (id, _) = mine.remove(&name).unwrap();
                        scope.delete(&id, None).unwrap();
                        deleted += 1;
                    }
                    _ if !mine.is_empty() => {
                        let k = rng.next(mine.len());
                        let (id, value) = mine.values().nth(k).unwrap();
                        let r = scope.reveal(id, &["token"], None).unwrap();
                        assert_eq!(r.expose_secret("token"), Some(value.as_str()));
                    }
                    _ => {}
                }
            }
            store.flush().unwrap();
            let names: Vec<&String> = mine.keys().collect();
            println!(
                "RESULT {}",
                json!({
                    "increments": increments,
                    "created": created,
                    "deleted": deleted,
                    "conflicts": conflicts,
                    "names": names,
                })
            );
        }
        "totp" => {
            let id = CredentialId::parse(&arg).unwrap();
            let code = std::env::var("CV_PG_CHILD_CODE").unwrap();
            wait_for_start();
            let outcome = match scope.verify_totp(&id, &code) {
                Ok(_) => "accepted".to_owned(),
                Err(StoreError::Totp { .. } | StoreError::Throttled { .. }) => "refused".to_owned(),
                Err(e) => format!("error {e}"),
            };
            println!("RESULT {outcome}");
        }
        "update" => {
            let (id, version) = arg.split_once('@').unwrap();
            let id = CredentialId::parse(id).unwrap();
            wait_for_start();
            let outcome = match scope.update(
                &id,
                CredentialUpdate::new()
                    .fields(json!({"token": format!("from-{}", std::process::id())}))
                    .expect_version(version.parse().unwrap()),
            ) {
                Ok(_) => "won".to_owned(),
                Err(StoreError::VersionConflict { .. }) => "conflict".to_owned(),
                Err(e) => format!("error {e}"),
            };
            println!("RESULT {outcome}");
        }
        "rotate" => {
            // Rotates slowly (5 per batch, a pause after each) so that the parent's SIGKILL
            // lands in the middle.
            let r = scope.rotate_key(&mut |p| {
                if p.done > 0 {
                    println!("ROTATING {}", p.done);
                    std::thread::sleep(Duration::from_millis(200));
                }
            });
            println!("RESULT finished {}", r.is_ok());
        }
        other => panic!("unknown role {other}"),
    }
}

struct Setup {
    server: pg::Server,
    schema: String,
    master: String,
    store: Store,
}

fn setup() -> Option<Setup> {
    let server = pg::server()?;
    let schema = server.new_schema();
    let master = LocalKeyring::generate()
        .unwrap()
        .export_secret_text()
        .to_string();
    let store = node(server.url(), &schema, &master, StoreConfig::default());
    store.create_tenant(&tenant(), "Acme", "admin").unwrap();
    Some(Setup {
        server,
        schema,
        master,
        store,
    })
}

impl Setup {
    fn spawn(&self, role: &str, arg: &str, start: u64, extra: &[(&str, &str)]) -> Child {
        let mut cmd = credvault_test::child_test("pg_child");
        cmd.env(pg::URL_ENV, self.server.url())
            .env(SCHEMA, &self.schema)
            .env(MASTER, &self.master)
            .env(ROLE, role)
            .env(ARG, arg)
            .env(START, start.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd.spawn().unwrap()
    }

    /// The `RESULT` line of each child, in order.
    fn results(children: Vec<Child>) -> Vec<String> {
        children
            .into_iter()
            .map(|c| {
                let out = c.wait_with_output().unwrap();
                assert!(out.status.success(), "a child failed: {}", out.status);
                String::from_utf8(out.stdout)
                    .unwrap()
                    .lines()
                    .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r.to_owned()))
                    .expect("a RESULT line")
            })
            .collect()
    }

    /// The database's audit chain, verified whole; its events' action names.
    fn chain_actions(&self) -> Vec<String> {
        self.server.verified_actions(&self.schema, &audit_key())
    }
}

fn start_in(ms: u64) -> u64 {
    now_ms() + ms
}

fn count(actions: &[String], a: &Action) -> usize {
    let name = a.to_string();
    actions.iter().filter(|x| **x == name).count()
}

#[test]
fn eight_processes_of_mixed_operations_lose_no_update_and_audit_each_commit() {
    let Some(s) = setup() else { return };
    let scope = s.store.tenant(&tenant(), "admin").unwrap();
    let counters: Vec<CredentialId> = (0..COUNTERS)
        .map(|c| {
            scope
                .create(NewCredential::new(
                    "http_bearer_token",
                    format!("counter-{c}"),
                    json!({"token": "0"}),
                ))
                .unwrap()
                .id
        })
        .collect();
    let start = start_in(3_000);
    let children: Vec<Child> = (0..8)
        .map(|i| s.spawn("mixed", &i.to_string(), start, &[]))
        .collect();
    let results: Vec<serde_json::Value> = Setup::results(children)
        .iter()
        .map(|r| serde_json::from_str(r).unwrap())
        .collect();
    let mut expected = [0u64; COUNTERS];
    let (mut created, mut deleted) = (0, 0);
    let mut believed = BTreeSet::new();
    for r in &results {
        for (c, n) in r["increments"].as_array().unwrap().iter().enumerate() {
            expected[c] += n.as_u64().unwrap();
        }
        created += r["created"].as_u64().unwrap();
        deleted += r["deleted"].as_u64().unwrap();
        for n in r["names"].as_array().unwrap() {
            believed.insert(n.as_str().unwrap().to_owned());
        }
    }
    let conflicts: u64 = results
        .iter()
        .map(|r| r["conflicts"].as_u64().unwrap())
        .sum();
    eprintln!("increments {expected:?}, created {created}, deleted {deleted}, version conflicts retried {conflicts}");
    // No lost update: each counter is the number of increments that succeeded.
    for (c, id) in counters.iter().enumerate() {
        let r = scope.reveal(id, &["token"], None).unwrap();
        assert_eq!(
            r.expose_secret("token").unwrap(),
            expected[c].to_string(),
            "counter {c}"
        );
    }
    // Every process's own credentials are exactly those it believes it has.
    let stored: BTreeSet<String> = scope
        .list(&Default::default())
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .filter(|n| !n.starts_with("counter-"))
        .collect();
    assert_eq!(stored, believed);
    // One record per committed operation: a create per create (and the counters), a delete
    // per delete, an update per increment that won; nothing for the conflicts.
    s.store.flush().unwrap();
    let actions = s.chain_actions();
    assert_eq!(
        count(&actions, &Action::Created),
        created as usize + COUNTERS
    );
    assert_eq!(count(&actions, &Action::Deleted), deleted as usize);
    assert_eq!(
        count(&actions, &Action::Updated),
        expected.iter().sum::<u64>() as usize
    );
}

#[test]
fn one_totp_code_from_sixteen_processes_is_accepted_once() {
    let Some(s) = setup() else { return };
    let scope = s.store.tenant(&tenant(), "admin").unwrap();
    let id = scope
        .create(NewCredential::new(
            "website_login",
            "portal",
            json!({
                "username": "ops",
                "password": "pw",
                "login_url": "https://portal.example.com/login",
                "totp_secret": "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ",
            }),
        ))
        .unwrap()
        .id;
    let code = scope.totp_code(&id, None).unwrap();
    let code = code.expose_secret().to_owned();
    let start = start_in(3_000);
    let children: Vec<Child> = (0..16)
        .map(|_| s.spawn("totp", id.as_str(), start, &[("CV_PG_CHILD_CODE", &code)]))
        .collect();
    let results = Setup::results(children);
    let accepted = results.iter().filter(|r| *r == "accepted").count();
    let refused = results.iter().filter(|r| *r == "refused").count();
    assert_eq!((accepted, refused), (1, 15), "{results:?}");
}

#[test]
fn eight_updates_from_one_version_in_eight_processes_one_wins() {
    let Some(s) = setup() else { return };
    let scope = s.store.tenant(&tenant(), "admin").unwrap();
    let info = scope
        .create(NewCredential::new(
            "http_bearer_token",
            "shared",
            json!({"token": "start"}),
        ))
        .unwrap();
    let arg = format!("{}@{}", info.id, info.version);
    let start = start_in(3_000);
    let children: Vec<Child> = (0..8)
        .map(|_| s.spawn("update", &arg, start, &[]))
        .collect();
    let results = Setup::results(children);
    let won = results.iter().filter(|r| *r == "won").count();
    let conflicts = results.iter().filter(|r| *r == "conflict").count();
    assert_eq!((won, conflicts), (1, 7), "{results:?}");
    assert_eq!(scope.get(&info.id).unwrap().version, info.version + 1);
    s.store.flush().unwrap();
    assert_eq!(count(&s.chain_actions(), &Action::Updated), 1);
}

#[test]
fn a_key_rotation_killed_on_one_node_is_resumed_on_another_and_loses_nothing() {
    let Some(s) = setup() else { return };
    let scope = s.store.tenant(&tenant(), "admin").unwrap();
    let mut values = BTreeMap::new();
    for i in 0..60 {
        let info = scope
            .create(NewCredential::new(
                "http_bearer_token",
                format!("c{i}"),
                json!({"token": format!("secret-{i}")}),
            ))
            .unwrap();
        values.insert(info.id, format!("secret-{i}"));
    }
    let keys_before = s.store.tenants().unwrap();
    let mut child = s.spawn("rotate", "", 0, &[]);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("ROTATING") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the child ended before rotating"
        );
    }
    // SIGKILL in the middle of the job (between two batches, or inside one).
    child.kill().unwrap();
    child.wait().unwrap();
    // The other node resumes the same job, and every credential still opens with its value.
    for (id, v) in &values {
        let r = scope.reveal(id, &["token"], None).unwrap();
        assert_eq!(r.expose_secret("token"), Some(v.as_str()));
    }
    let report = scope.rotate_key(&mut |_| {}).unwrap();
    assert!(report.is_finished(), "{report:?}");
    assert!(!report.started, "resumed, not started again: {report:?}");
    assert!(!report.retired.is_empty(), "{report:?}");
    for (id, v) in &values {
        let r = scope.reveal(id, &["token"], None).unwrap();
        assert_eq!(r.expose_secret("token"), Some(v.as_str()));
    }
    assert_eq!(s.store.tenants().unwrap().len(), keys_before.len());
    s.store.flush().unwrap();
    s.chain_actions();
}
