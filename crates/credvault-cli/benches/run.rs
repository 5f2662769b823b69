//! `credvault run` masking a child's output, beside a plain pipe, in one run: `cat` of 256 MiB
//! (`CV_BENCH_MIB=64` for 64 MiB) of log text read through a pipe by this process
//! (`cat_pipe`), against the same `cat` run by
//! `credvault run` with 1,000 vault references in its environment, so every secret is masked
//! in all its encoded forms (`credvault_run_cat_1000`). `credvault_run_cat_1000_no_masking`
//! is the same run with `--no-masking`: vault open, 1,000 reveals in one audited batch, and
//! the process start, without the masking. Each credvault run gets a fresh copy of the vault
//! (made outside the timing), so the audit log does not grow from run to run.
//!
//! `cargo bench -p credvault-cli --bench run`, then
//! `cargo run -p credvault-benches --bin bench-report -- --peer cat_pipe run_`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use credvault_benches::{log_text, secret};
use credvault_store::{NewCredential, TenantId, Vault, VaultOptions};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const SECRETS: u64 = 1000;

struct Setup {
    _dir: tempfile::TempDir,
    vault: PathBuf,
    data: PathBuf,
    env: Vec<(String, String)>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    let init = Command::new(env!("CARGO_BIN_EXE_credvault"))
        .arg("init")
        .env("CREDVAULT_DIR", &vault)
        .env_remove("CREDVAULT_MASTER_KEY")
        .output()
        .unwrap();
    assert!(init.status.success());
    let v = Vault::open(&vault, VaultOptions::default().ignore_master_env()).unwrap();
    let s = v
        .store()
        .tenant(&TenantId::new("default").unwrap(), "bench")
        .unwrap();
    for i in 0..SECRETS {
        s.create(NewCredential::new(
            "http_basic_auth",
            format!("svc-{i}"),
            serde_json::json!({"user": "bench", "password": secret(i)}),
        ))
        .unwrap();
    }
    drop(s);
    v.close().unwrap();
    let size: usize = std::env::var("CV_BENCH_MIB")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(256)
        << 20;
    let chunk = log_text(secret);
    let mut text = String::with_capacity(size + chunk.len());
    while text.len() < size {
        text.push_str(&chunk);
    }
    let data = dir.path().join("log.txt");
    std::fs::write(&data, &text).unwrap();
    let env = (0..SECRETS)
        .map(|i| (format!("SECRET_{i}"), format!("cv://svc-{i}/password")))
        .collect();
    Setup {
        _dir: dir,
        vault,
        data,
        env,
    }
}

/// Runs `cmd`, reads its whole stdout in 64 KiB reads, returns the bytes read (and, when
/// `keep`, the output itself).
fn drain(mut cmd: Command, keep: bool) -> (u64, Vec<u8>) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let (mut n, mut kept) = (0u64, Vec::new());
    loop {
        let r = out.read(&mut buf).unwrap();
        if r == 0 {
            break;
        }
        n += r as u64;
        if keep {
            kept.extend_from_slice(&buf[..r]);
        }
    }
    assert!(child.wait().unwrap().success());
    (n, kept)
}

/// A fresh copy of the vault as set up, so every run opens the same vault (each run appends
/// 1,000 audit records, and a growing log would make later runs open slower).
fn fresh(s: &Setup) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(&s.vault)
        .arg(copy.path().join("vault"))
        .status()
        .unwrap();
    assert!(st.success());
    copy
}

fn run_cmd(s: &Setup, vault: &Path, masking: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_credvault"));
    c.arg("run");
    if !masking {
        c.arg("--no-masking");
    }
    c.arg("--")
        .arg("cat")
        .arg(&s.data)
        .env("CREDVAULT_DIR", vault)
        .env_remove("CREDVAULT_MASTER_KEY")
        .envs(s.env.iter().map(|(k, v)| (k, v)));
    c
}

fn bench(c: &mut Criterion) {
    let s = setup();
    let size = std::fs::metadata(&s.data).unwrap().len();

    // What is measured is right: every secret masked, the rest intact.
    let (_, masked) = drain(run_cmd(&s, &s.vault, true), true);
    let text = String::from_utf8(masked).unwrap();
    for i in 0..SECRETS {
        assert!(!text.contains(&secret(i)), "secret {i} got through");
    }
    // One marker for each line of the input that holds a secret.
    let input = std::fs::read_to_string(&s.data).unwrap();
    let planted = input.matches("ERROR auth failed token=").count();
    let markers = text.matches("[cv:svc-").count();
    assert!(
        planted > 0 && markers == planted,
        "{markers} markers for {planted} secrets"
    );

    let mut g = c.benchmark_group(format!("run_masking_{}mib", size >> 20));
    g.throughput(Throughput::Bytes(size));
    g.bench_function("cat_pipe", |b| {
        b.iter(|| {
            let mut cat = Command::new("cat");
            cat.arg(&s.data);
            assert_eq!(drain(cat, false).0, size);
        })
    });
    g.bench_function("credvault_run_cat_1000", |b| {
        b.iter_batched(
            || fresh(&s),
            |v| drain(run_cmd(&s, &v.path().join("vault"), true), false).0,
            BatchSize::PerIteration,
        )
    });
    g.bench_function("credvault_run_cat_1000_no_masking", |b| {
        b.iter_batched(
            || fresh(&s),
            |v| {
                assert_eq!(
                    drain(run_cmd(&s, &v.path().join("vault"), false), false).0,
                    size
                )
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(15))
        .sample_size(10);
    targets = bench
}
criterion_main!(benches);
