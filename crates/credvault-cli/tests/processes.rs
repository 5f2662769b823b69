//! Several `credvault` processes at once on one vault: creates, reveals, updates, deletes and
//! lists from six workers, each running its commands one after another, all six at the same
//! time. With the default lock wait every command succeeds; with a deliberately tiny one a
//! command either succeeds or fails with the typed busy error (exit 75) and changes nothing.
//! Either way the vault ends as a serial model of the successful commands predicts, and the
//! audit log verifies with exactly one record per successful operation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const WORKERS: usize = 6;
const ROUNDS: usize = 5;
const BUSY: i32 = 75;

fn cmd(vault: &Path, lock_timeout: Option<&str>) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_credvault"));
    c.env("CREDVAULT_DIR", vault)
        .env("CREDVAULT_CONFIG_DIR", vault.with_extension("config"))
        .env_remove("CREDVAULT_MASTER_KEY")
        .env_remove("CREDVAULT_TENANT")
        .env_remove("CREDVAULT_LOCK_TIMEOUT")
        .env("CREDVAULT_ACTOR", "tester")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(t) = lock_timeout {
        c.env("CREDVAULT_LOCK_TIMEOUT", t);
    }
    c
}

fn run(vault: &Path, lock_timeout: Option<&str>, args: &[&str], stdin: &str) -> Output {
    let mut child = cmd(vault, lock_timeout).args(args).spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn ok(vault: &Path, args: &[&str], stdin: &str) -> String {
    let out = run(vault, None, args, stdin);
    assert!(
        out.status.success(),
        "{args:?} exited {:?}: {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn add_args(name: &str) -> Vec<String> {
    [
        "add",
        "website_login",
        name,
        "--field",
        "login_url=https://x.example/login",
        "--field",
        "username=bot",
    ]
    .iter()
    .map(ToString::to_string)
    .collect()
}

/// One committed operation, as the serial model and the audit log see it.
#[derive(Debug)]
enum Op {
    Created(String),
    Accessed,
    Updated(String),
    Deleted(String),
    Listed,
}

/// Worker `w`'s commands, in order: create its own credentials, reveal the shared one, update
/// and delete its own, list.
fn plan(w: usize) -> Vec<(Vec<String>, String, Op)> {
    let mut steps = Vec::new();
    for r in 0..ROUNDS {
        let name = format!("w{w}-{r}");
        steps.push((
            add_args(&name),
            format!("pw-{w}-{r}\n"),
            Op::Created(name.clone()),
        ));
        steps.push((
            ["reveal", "shared", "--field", "password"]
                .map(String::from)
                .to_vec(),
            String::new(),
            Op::Accessed,
        ));
        steps.push((
            vec![
                "update".into(),
                name.clone(),
                "--field".into(),
                format!("username=bot-{r}"),
            ],
            String::new(),
            Op::Updated(name.clone()),
        ));
        if r % 2 == 1 {
            steps.push((
                vec!["rm".into(), name.clone()],
                String::new(),
                Op::Deleted(name),
            ));
        }
        steps.push((vec!["list".into()], String::new(), Op::Listed));
    }
    steps
}

struct Outcome {
    committed: Vec<Op>,
    busy: usize,
}

/// Runs every worker's plan, all workers at once; a step whose predecessor (its create) was
/// refused as busy is skipped.
fn run_all(vault: &Path, lock_timeout: Option<&'static str>) -> Outcome {
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let vault = vault.to_owned();
            std::thread::spawn(move || {
                let mut committed = Vec::new();
                let mut busy = 0;
                let mut missing: BTreeSet<String> = BTreeSet::new();
                for (args, stdin, op) in plan(w) {
                    if let Op::Updated(n) | Op::Deleted(n) = &op {
                        if missing.contains(n) {
                            continue;
                        }
                    }
                    let a: Vec<&str> = args.iter().map(String::as_str).collect();
                    let out = run(&vault, lock_timeout, &a, &stdin);
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    match out.status.code() {
                        Some(0) => {
                            if let Op::Accessed = op {
                                assert_eq!(String::from_utf8_lossy(&out.stdout), "shared-pw\n");
                            }
                            committed.push(op);
                        }
                        Some(BUSY) if lock_timeout.is_some() => {
                            assert!(
                                stderr.contains("is busy") && stderr.lines().count() == 1,
                                "{a:?}: {stderr}"
                            );
                            assert!(out.stdout.is_empty(), "{a:?} printed despite failing");
                            if let Op::Created(n) = op {
                                missing.insert(n);
                            }
                            busy += 1;
                        }
                        code => panic!("{a:?} exited {code:?}: {stderr}"),
                    }
                }
                Outcome { committed, busy }
            })
        })
        .collect();
    let mut all = Outcome {
        committed: Vec::new(),
        busy: 0,
    };
    for w in workers {
        let o = w.join().unwrap();
        all.committed.extend(o.committed);
        all.busy += o.busy;
    }
    all
}

fn new_vault(dir: &Path) -> PathBuf {
    let vault = dir.join("vault");
    ok(&vault, &["init"], "");
    let mut a = add_args("shared");
    a.push("--tag".into());
    a.push("ci".into());
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    ok(&vault, &a, "shared-pw\n");
    vault
}

fn check(vault: &Path, outcome: &Outcome) {
    // The serial model: which credentials exist, with which username.
    let mut model: BTreeMap<String, String> = BTreeMap::new();
    model.insert("shared".into(), "bot".into());
    let mut want: BTreeMap<&str, usize> = BTreeMap::new();
    for op in &outcome.committed {
        match op {
            Op::Created(n) => {
                model.insert(n.clone(), "bot".into());
                *want.entry("created").or_default() += 1;
            }
            Op::Updated(n) => {
                let r = n.rsplit('-').next().unwrap();
                model.insert(n.clone(), format!("bot-{r}"));
                *want.entry("updated").or_default() += 1;
            }
            Op::Deleted(n) => {
                model.remove(n);
                *want.entry("deleted").or_default() += 1;
            }
            Op::Accessed => *want.entry("accessed").or_default() += 1,
            Op::Listed => {}
        }
    }
    *want.entry("created").or_default() += 1; // "shared"
    let listed: serde_json::Value =
        serde_json::from_str(&ok(vault, &["--json", "list"], "")).unwrap();
    let got: BTreeMap<String, String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["fields"]["username"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(got, model);

    let verify = run(vault, None, &["audit", "verify"], "");
    assert!(
        verify.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let mut logged: BTreeMap<String, usize> = BTreeMap::new();
    for l in ok(vault, &["--json", "audit", "show"], "").lines() {
        let e: serde_json::Value = serde_json::from_str(l).unwrap();
        *logged
            .entry(e["action"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    for (action, n) in want {
        assert_eq!(
            logged.get(action).copied().unwrap_or(0),
            n,
            "{action} records"
        );
    }
}

#[test]
fn concurrent_commands_all_succeed_and_match_a_serial_model() {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path());
    let outcome = run_all(&vault, None);
    assert_eq!(outcome.busy, 0);
    let planned: usize = (0..WORKERS).map(|w| plan(w).len()).sum();
    assert_eq!(outcome.committed.len(), planned);
    check(&vault, &outcome);
}

#[test]
fn with_a_tiny_lock_wait_a_command_succeeds_or_is_refused_as_busy() {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path());
    let outcome = run_all(&vault, Some("1ms"));
    eprintln!(
        "{} committed, {} refused as busy",
        outcome.committed.len(),
        outcome.busy
    );
    check(&vault, &outcome);
}

/// A long-running process (what `credvault serve` will be) keeps the vault open and keeps
/// writing and revealing, while admin commands run beside it from the CLI: every command
/// succeeds, the long-running handle sees their results, and the audit log stays one chain.
#[test]
fn admin_commands_work_while_another_process_keeps_the_vault_open() {
    use credvault_store::{NewCredential, TenantId, Vault, VaultOptions};
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path());
    let server = Vault::open(&vault, VaultOptions::default()).unwrap();
    let tenant = TenantId::new("default").unwrap();
    let scope = server.store().tenant(&tenant, "server").unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let served = std::thread::scope(|s| {
        let worker = s.spawn(|| {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let info = scope
                    .create(NewCredential::new(
                        "http_bearer_token",
                        format!("served-{n}"),
                        serde_json::json!({"token": format!("tok-{n}")}),
                    ))
                    .unwrap();
                scope.reveal(&info.id, &[], Some("server")).unwrap();
                n += 1;
            }
            n
        });
        ok(&vault, &["tenant", "add", "globex"], "");
        ok(&vault, &["rotate", "tenant"], "");
        ok(&vault, &["rotate", "master"], "");
        let a = add_args("from-cli");
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        ok(&vault, &a, "cli-pw\n");
        assert_eq!(
            ok(&vault, &["reveal", "from-cli", "--field", "password"], ""),
            "cli-pw\n"
        );
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        worker.join().unwrap()
    });
    // The long-running handle sees what the commands did, and still works after the master key
    // it opened with was rotated (its keyring keeps the old version until retired... which
    // happens only for versions that wrap nothing; its data keys were re-wrapped).
    let found = scope.find("from-cli", "production").unwrap();
    assert_eq!(
        scope
            .reveal(&found.id, &["password"], None)
            .unwrap()
            .expose_secret("password"),
        Some("cli-pw")
    );
    assert!(server
        .store()
        .tenants()
        .unwrap()
        .iter()
        .any(|t| t.id.as_str() == "globex"));
    server.close().unwrap();
    let verify = run(&vault, None, &["audit", "verify"], "");
    assert!(
        verify.status.success(),
        "audit verify: {}",
        String::from_utf8_lossy(&verify.stdout)
    );
    eprintln!("the long-running process made {served} credentials meanwhile");
}
