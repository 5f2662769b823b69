//! Concurrency: 8 threads × 2,000 mixed operations over 2 tenants on one SQLite vault. The
//! final state equals a serial model (each thread's own credentials, plus a shared counter per
//! tenant that every thread increments with optimistic versions: no increment is lost), and
//! the audit chain verifies with no gap and one event per successful operation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use credvault_audit::{read_event_files, segment_paths, Action, Durability, Query};
use credvault_store::{
    CredentialUpdate, ListFilter, NewCredential, SqliteDurability, StoreError, TenantId, Vault,
    VaultOptions,
};
use serde_json::json;

const THREADS: u64 = 8;
const OPS: u64 = 2000;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[derive(Default)]
struct Counts {
    created: AtomicU64,
    updated: AtomicU64,
    deleted: AtomicU64,
    accessed: AtomicU64,
    conflicts: AtomicU64,
}

fn token(s: &str) -> serde_json::Value {
    json!({ "token": s })
}

#[test]
fn eight_threads_match_a_serial_model() {
    let tmp = tempfile::tempdir().unwrap();
    let vdir = tmp.path().join("vault");
    let options = VaultOptions::default()
        .sqlite(SqliteDurability::Normal)
        .audit(Durability::NoSync)
        .ignore_master_env();
    let vault = Vault::init(&vdir, options).unwrap();
    let tenants = [TenantId::new("t0").unwrap(), TenantId::new("t1").unwrap()];
    let counts = Counts::default();
    for t in &tenants {
        vault.store().create_tenant(t, t.as_str(), "setup").unwrap();
        vault
            .store()
            .tenant(t, "setup")
            .unwrap()
            .create(NewCredential::new(
                "http_bearer_token",
                "counter",
                token("n0"),
            ))
            .unwrap();
        counts.created.fetch_add(1, Ordering::SeqCst);
    }
    let increments = [AtomicU64::new(0), AtomicU64::new(0)];
    let models: Vec<BTreeMap<String, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|i| {
                let (vault, tenants, counts, increments) = (&vault, &tenants, &counts, &increments);
                s.spawn(move || {
                    let t = (i % 2) as usize;
                    let scope = vault
                        .store()
                        .tenant(&tenants[t], format!("worker{i}"))
                        .unwrap();
                    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (i + 1));
                    let mut model: BTreeMap<String, String> = BTreeMap::new();
                    for k in 0..OPS {
                        let roll = rng.below(100);
                        let own: Vec<String> = model.keys().cloned().collect();
                        let pick =
                            |rng: &mut Rng| own[rng.below(own.len() as u64) as usize].clone();
                        if roll < 25 || own.is_empty() {
                            let (name, v) = (format!("w{i}-{k}"), format!("v{i}x{k}"));
                            scope
                                .create(NewCredential::new("http_bearer_token", &name, token(&v)))
                                .unwrap();
                            counts.created.fetch_add(1, Ordering::SeqCst);
                            model.insert(name, v);
                        } else if roll < 45 {
                            let name = pick(&mut rng);
                            let v = format!("u{i}x{k}");
                            let id = scope.find(&name, "production").unwrap().id.clone();
                            scope
                                .update(&id, CredentialUpdate::new().fields(token(&v)))
                                .unwrap();
                            counts.updated.fetch_add(1, Ordering::SeqCst);
                            model.insert(name, v);
                        } else if roll < 55 {
                            let name = pick(&mut rng);
                            let id = scope.find(&name, "production").unwrap().id.clone();
                            scope.delete(&id, None).unwrap();
                            counts.deleted.fetch_add(1, Ordering::SeqCst);
                            model.remove(&name);
                        } else if roll < 80 {
                            let name = pick(&mut rng);
                            let id = scope.find(&name, "production").unwrap().id.clone();
                            let r = scope.reveal(&id, &["token"], Some("worker")).unwrap();
                            counts.accessed.fetch_add(1, Ordering::SeqCst);
                            assert_eq!(
                                r.expose_secret("token"),
                                Some(model[&name].as_str()),
                                "thread {i} read a stale or foreign value"
                            );
                        } else {
                            // Read-modify-write of the shared counter with an expected version.
                            loop {
                                let info = scope.find("counter", "production").unwrap();
                                let id = info.id.clone();
                                let r = scope.reveal(&id, &["token"], Some("counter")).unwrap();
                                counts.accessed.fetch_add(1, Ordering::SeqCst);
                                let n: u64 =
                                    r.expose_secret("token").unwrap()[1..].parse().unwrap();
                                let upd = CredentialUpdate::new()
                                    .fields(token(&format!("n{}", n + 1)))
                                    .expect_version(info.version);
                                match scope.update(&id, upd) {
                                    Ok(_) => {
                                        counts.updated.fetch_add(1, Ordering::SeqCst);
                                        increments[t].fetch_add(1, Ordering::SeqCst);
                                        break;
                                    }
                                    Err(StoreError::VersionConflict { .. }) => {
                                        counts.conflicts.fetch_add(1, Ordering::SeqCst);
                                    }
                                    Err(e) => panic!("{e}"),
                                }
                            }
                        }
                    }
                    model
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    vault.store().flush().unwrap();

    // The audit log first (before the final reads add events): intact, contiguous, and one
    // event per successful operation.
    let check = vault.verify_audit().unwrap();
    assert!(
        check.is_intact(),
        "{:?} {:?}",
        check.report.problem,
        check.head_problem
    );
    let segs = segment_paths(&Vault::audit_dir(&vdir)).unwrap();
    let events = read_event_files(&segs, &Query::new()).unwrap().events;
    let by = |a: Action| events.iter().filter(|e| e.event.action == a).count() as u64;
    assert_eq!(by(Action::Created), counts.created.load(Ordering::SeqCst));
    assert_eq!(by(Action::Updated), counts.updated.load(Ordering::SeqCst));
    assert_eq!(by(Action::Deleted), counts.deleted.load(Ordering::SeqCst));
    assert_eq!(by(Action::Accessed), counts.accessed.load(Ordering::SeqCst));
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "events out of order");

    // The final state equals the serial model.
    for (t, tenant) in tenants.iter().enumerate() {
        let scope = vault.store().tenant(tenant, "checker").unwrap();
        let mut want: BTreeMap<String, String> = BTreeMap::new();
        for (i, m) in models.iter().enumerate() {
            if i % 2 == t {
                want.extend(m.clone());
            }
        }
        want.insert(
            "counter".into(),
            format!("n{}", increments[t].load(Ordering::SeqCst)),
        );
        let mut have = BTreeMap::new();
        for info in scope.list(&ListFilter::default()).unwrap() {
            let r = scope.reveal(&info.id.clone(), &["token"], None).unwrap();
            have.insert(
                info.name.clone(),
                r.expose_secret("token").unwrap().to_owned(),
            );
        }
        assert_eq!(
            have.get("counter"),
            want.get("counter"),
            "tenant {tenant}: lost counter increments"
        );
        let diff: Vec<_> = want
            .iter()
            .filter(|(k, v)| have.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .chain(have.keys().filter(|k| !want.contains_key(*k)).cloned())
            .take(10)
            .collect();
        assert!(
            diff.is_empty(),
            "tenant {tenant}: state differs from the model at {diff:?}"
        );
    }
    let conflicts = counts.conflicts.load(Ordering::SeqCst);
    eprintln!(
        "created {} updated {} deleted {} accessed {} version conflicts retried {conflicts}",
        counts.created.load(Ordering::SeqCst),
        counts.updated.load(Ordering::SeqCst),
        counts.deleted.load(Ordering::SeqCst),
        counts.accessed.load(Ordering::SeqCst)
    );
    vault.close().unwrap();
}

/// A tenant-key rotation while four threads keep updating the credentials, 15 times: a call
/// that reports the rotation finished has every credential under the new key and no old key
/// left; one that does not says how many rows are left, and a second call (updates stopped)
/// finishes. Nothing is lost either way: every credential reveals its last written value.
#[test]
fn rotation_under_concurrent_updates_finishes_or_says_what_is_left() {
    use std::sync::atomic::AtomicBool;
    const CREDS: usize = 60;
    let tmp = tempfile::tempdir().unwrap();
    let options = VaultOptions::default()
        .sqlite(SqliteDurability::Normal)
        .audit(Durability::NoSync)
        .store(credvault_store::StoreConfig::default().rotation_batch(8));
    let vault = Vault::init(&tmp.path().join("vault"), options).unwrap();
    let t = TenantId::new("acme").unwrap();
    vault.store().create_tenant(&t, "Acme", "setup").unwrap();
    let scope = vault.store().tenant(&t, "setup").unwrap();
    let ids: Vec<_> = (0..CREDS)
        .map(|i| {
            scope
                .create(NewCredential::new(
                    "http_bearer_token",
                    format!("c{i}"),
                    token("v0"),
                ))
                .unwrap()
                .id
        })
        .collect();
    let last: Vec<std::sync::Mutex<String>> = (0..CREDS)
        .map(|_| std::sync::Mutex::new("v0".into()))
        .collect();
    let mut unfinished = 0;
    for run in 0..15 {
        let stop = AtomicBool::new(false);
        let rotation = std::thread::scope(|s| {
            for w in 0..4usize {
                let (vault, t, ids, last, stop) = (&vault, &t, &ids, &last, &stop);
                s.spawn(move || {
                    let scope = vault.store().tenant(t, format!("w{w}")).unwrap();
                    let mut k = 0usize;
                    while !stop.load(Ordering::SeqCst) {
                        let i = (k * 4 + w) % CREDS;
                        let v = format!("r{run}w{w}k{k}");
                        let mut slot = last[i].lock().unwrap();
                        scope
                            .update(&ids[i], CredentialUpdate::new().fields(token(&v)))
                            .unwrap();
                        *slot = v;
                        k += 1;
                    }
                });
            }
            let r = scope.rotate_key(&mut |_| {}).unwrap();
            stop.store(true, Ordering::SeqCst);
            r
        });
        let under_old = |new_key: &str| {
            scope
                .list(&ListFilter::default())
                .unwrap()
                .iter()
                .filter(|c| c.key_id != new_key)
                .count() as u64
        };
        if rotation.is_finished() {
            assert_eq!(
                under_old(&rotation.new_key),
                0,
                "run {run}: finished, yet rows are under an old key"
            );
            assert!(
                !rotation.retired.is_empty(),
                "run {run}: finished without retiring the old key"
            );
        } else {
            unfinished += 1;
            assert!(rotation.remaining > 0);
            let again = scope.rotate_key(&mut |_| {}).unwrap();
            assert!(
                again.is_finished(),
                "run {run}: the second call did not finish"
            );
            assert_eq!(under_old(&again.new_key), 0);
        }
        let info = &vault.store().tenants().unwrap()[0];
        assert!(
            !info.rotation_pending,
            "run {run}: an old key is still retiring"
        );
    }
    for (i, id) in ids.iter().enumerate() {
        let r = scope.reveal(id, &["token"], None).unwrap();
        assert_eq!(
            r.expose_secret("token"),
            Some(last[i].lock().unwrap().as_str())
        );
    }
    eprintln!("15 rotations under concurrent updates: {unfinished} reported unfinished");
    vault.close().unwrap();
}
