//! Crash safety: a child process creating, updating and deleting credentials and rotating the
//! tenant key over 2,000 credentials is killed with SIGKILL at random points, 55 times. After
//! each kill the vault reopens, every credential opens, every acknowledged operation is there
//! (an unacknowledged one is either applied or not), the audit log verifies, and the rotation
//! resumes; at the end it runs to completion and the old keys are retired.
//!
//! The durability setting is SQLite `synchronous = NORMAL` and an audit log without fsync:
//! both survive the death of a process (the kernel keeps written pages), which is what a
//! SIGKILL tests. Power loss is `synchronous = FULL` and the fsyncing log, the defaults.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use credvault_audit::Durability;
use credvault_store::{
    CredentialUpdate, ListFilter, NewCredential, SqliteDurability, StoreConfig, TenantId, Vault,
    VaultOptions,
};
use serde_json::json;

const CREDENTIALS: usize = 2000;
const RUNS: u64 = 55;

fn options() -> VaultOptions {
    VaultOptions::default()
        .sqlite(SqliteDurability::Normal)
        .audit(Durability::NoSync)
        .ignore_master_env()
        .store(StoreConfig::default().rotation_batch(128))
}

fn tenant() -> TenantId {
    TenantId::new("acme").unwrap()
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn cred(name: &str, value: &str) -> NewCredential {
    NewCredential::new("http_bearer_token", name, json!({ "token": value }))
}

/// The child: runs operations forever, writing an intent line before each and an ack after.
#[test]
#[ignore = "run by crash_recovery as a child process"]
fn crash_child() {
    let Ok(dir) = std::env::var("CREDVAULT_CRASH_DIR") else {
        return;
    };
    let seed: u64 = std::env::var("CREDVAULT_CRASH_SEED")
        .unwrap()
        .parse()
        .unwrap();
    let dir = Path::new(&dir);
    let vault = Vault::open(&dir.join("vault"), options()).unwrap();
    let scope = vault.store().tenant(&tenant(), "child").unwrap();
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("ops.log"))
        .unwrap();
    // Each line goes out in one write(2); a line torn by the previous kill is terminated.
    let mut line = |text: String| log.write_all(format!("{text}\n").as_bytes()).unwrap();
    line(String::new());
    let mut names: Vec<String> = scope
        .list(&ListFilter::default())
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut k = 0u64;
    loop {
        k += 1;
        // One run in three rotates (resuming an unfinished rotation, or starting one), the
        // others only create, update and delete.
        let rotating = seed.is_multiple_of(3);
        let roll = if rotating && (k == 1 || rng.below(50) == 0) {
            99
        } else {
            rng.below(97)
        };
        if roll < 45 {
            let name = format!("c{seed}-{k}");
            let value = format!("v{seed}x{k}");
            line(format!("I create {name} {value}"));
            scope.create(cred(&name, &value)).unwrap();
            names.push(name);
        } else if roll < 77 && !names.is_empty() {
            let name = names[rng.below(names.len() as u64) as usize].clone();
            let value = format!("u{seed}x{k}");
            line(format!("I update {name} {value}"));
            let id = scope.find(&name, "production").unwrap().id.clone();
            scope
                .update(
                    &id,
                    CredentialUpdate::new().fields(json!({ "token": value })),
                )
                .unwrap();
        } else if roll < 97 && !names.is_empty() {
            let name = names.swap_remove(rng.below(names.len() as u64) as usize);
            line(format!("I delete {name} -"));
            let id = scope.find(&name, "production").unwrap().id.clone();
            scope.delete(&id, None).unwrap();
        } else {
            line("I rotate - -".into());
            let r = scope.rotate_key(&mut |_| {}).unwrap();
            assert!(r.failed.is_empty());
        }
        line("A".into());
    }
}

#[derive(Default)]
struct Tally {
    killed_in: BTreeMap<String, u32>,
}

/// Applies the ops log to the model; returns the op that was in flight when the child died.
fn replay(
    text: &str,
    model: &mut BTreeMap<String, String>,
    touched: &mut Vec<String>,
) -> Option<(String, String, String)> {
    let mut pending: Option<(String, String, String)> = None;
    for line in text.lines() {
        let w: Vec<&str> = line.split(' ').collect();
        match w.first() {
            // An intent line cut by the kill: its op never started.
            Some(&"I") if w.len() != 4 => pending = None,
            Some(&"I") => {
                let (op, name, value) = (w[1].to_owned(), w[2].to_owned(), w[3].to_owned());
                if name != "-" {
                    touched.push(name.clone());
                }
                pending = Some((op, name, value));
            }
            Some(&"A") => {
                let (op, name, value) = pending.take().unwrap();
                match op.as_str() {
                    "create" | "update" => {
                        model.insert(name, value);
                    }
                    "delete" => {
                        model.remove(&name);
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    pending
}

/// Checks the vault against the model, resolving the op in flight: every credential opens
/// (an integrity check), the names touched by the run (and, when `full`, all of them) hold
/// their acknowledged values. Returns the model updated with the in-flight op's outcome.
fn check(
    vault: &Vault,
    model: &BTreeMap<String, String>,
    pending: Option<&(String, String, String)>,
    touched: &[String],
    full: bool,
) -> BTreeMap<String, String> {
    let scope = vault.store().tenant(&tenant(), "checker").unwrap();
    let integrity = scope.check_integrity(&mut |_| {}).unwrap();
    assert!(
        integrity.corrupt.is_empty(),
        "undecryptable: {:?}",
        integrity.corrupt
    );
    let infos = scope.list(&ListFilter::default()).unwrap();
    assert_eq!(integrity.checked, infos.len() as u64);
    let present: BTreeMap<String, _> = infos.into_iter().map(|i| (i.name.clone(), i)).collect();
    let value = |name: &str| -> Option<String> {
        let info = present.get(name)?;
        let r = scope
            .reveal(&info.id.clone(), &["token"], Some("crash-check"))
            .unwrap_or_else(|e| panic!("credential {name} does not open: {e}"));
        Some(r.expose_secret("token").unwrap().to_owned())
    };
    let in_flight = |name: &str| pending.is_some_and(|(_, n, _)| n == name);
    let mut out = model.clone();
    // Names: all of them, or those the run touched.
    let names: Vec<String> = if full {
        model.keys().chain(present.keys()).cloned().collect()
    } else {
        touched.to_vec()
    };
    for name in names {
        let actual = value(&name);
        match (model.get(&name), actual) {
            (Some(want), Some(have)) if *want == have => {}
            (Some(want), Some(have)) => {
                assert!(
                    in_flight(&name)
                        && pending.is_some_and(|(op, _, pv)| op == "update" && *pv == have),
                    "{name}: acknowledged value lost (have {have}, want {want})"
                );
                out.insert(name, have);
            }
            (Some(_), None) => {
                assert!(
                    in_flight(&name) && pending.is_some_and(|(op, _, _)| op == "delete"),
                    "{name}: acknowledged credential lost"
                );
                out.remove(&name);
            }
            (None, Some(have)) => {
                assert!(
                    pending.is_some_and(|(op, n, pv)| op == "create" && *n == name && *pv == have),
                    "{name}: appeared from nowhere"
                );
                out.insert(name, have);
            }
            (None, None) => {}
        }
    }
    // Counts agree whatever was sampled.
    assert_eq!(
        present.len(),
        out.len(),
        "credential count differs from the model"
    );
    out
}

#[test]
fn crash_recovery() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let vdir = dir.join("vault");
    let mut model = BTreeMap::new();
    {
        let vault = Vault::init(&vdir, options()).unwrap();
        vault
            .store()
            .create_tenant(&tenant(), "Acme", "setup")
            .unwrap();
        let scope = vault.store().tenant(&tenant(), "setup").unwrap();
        for i in 0..CREDENTIALS {
            let (name, value) = (format!("init{i}"), format!("init{i}"));
            scope.create(cred(&name, &value)).unwrap();
            model.insert(name, value);
        }
        drop(scope);
        vault.close().unwrap();
    }
    std::fs::write(dir.join("ops.log"), "").unwrap();
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let mut tally = Tally::default();
    let mut consumed = 0usize;
    for run in 0..RUNS {
        let mut child = credvault_test::child_test("crash_child")
            .env("CREDVAULT_CRASH_DIR", dir)
            .env("CREDVAULT_CRASH_SEED", (run + 1).to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if rng.below(5) == 0 {
            // Any time from the start, the vault's open (and its recovery) included.
            std::thread::sleep(Duration::from_millis(80 + rng.below(500)));
        } else {
            // Among the operations: first wait (bounded) for the child's first line, written
            // once the vault is open, so that how long the open takes on this machine (it
            // grows with the audit log) does not decide where the kills land.
            let started = std::time::Instant::now();
            while std::fs::metadata(dir.join("ops.log")).map_or(0, |m| m.len() as usize) <= consumed
                && started.elapsed() < Duration::from_secs(30)
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(rng.below(400)));
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "run {run}: the child exited by itself: {status}"
        );
        let text = std::fs::read_to_string(dir.join("ops.log")).unwrap();
        let new = &text[consumed..];
        consumed = text.len();
        let mut touched = Vec::new();
        let pending = replay(new, &mut model, &mut touched);
        let what = pending
            .as_ref()
            .map_or("between ops".to_owned(), |p| p.0.clone());
        *tally.killed_in.entry(what).or_default() += 1;

        let vault = Vault::open(&vdir, options())
            .unwrap_or_else(|e| panic!("run {run}: reopen failed: {e}"));
        model = check(&vault, &model, pending.as_ref(), &touched, run % 10 == 9);
        let audit = vault.verify_audit().unwrap();
        assert!(
            audit.is_intact(),
            "run {run}: audit {:?} {:?}",
            audit.report.problem,
            audit.head_problem
        );
        vault.close().unwrap();
    }
    eprintln!("kills by operation in flight: {:?}", tally.killed_in);
    for op in ["create", "update", "rotate"] {
        assert!(
            tally.killed_in.get(op).copied().unwrap_or(0) >= 1,
            "no kill landed during {op}: {:?}",
            tally.killed_in
        );
    }
    // Finish the rotation and retire every old key.
    let vault = Vault::open(&vdir, options()).unwrap();
    let scope = vault.store().tenant(&tenant(), "final").unwrap();
    let r = scope.rotate_key(&mut |_| {}).unwrap();
    assert!(r.failed.is_empty());
    let r = scope.rotate_key(&mut |_| {}).unwrap();
    assert!(r.failed.is_empty() && r.retired.len() == 1, "{r:?}");
    let keys = vault.store().storage().data_keys(&tenant()).unwrap();
    assert_eq!(keys.len(), 1, "old keys retired");
    drop(scope);
    let actual = check(&vault, &model, None, &[], true);
    assert_eq!(actual, model);
    assert!(actual.len() >= CREDENTIALS / 2);
    assert!(vault.verify_audit().unwrap().is_intact());
    vault.close().unwrap();
}
