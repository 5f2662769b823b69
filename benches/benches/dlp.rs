//! credvault-dlp beside a bare `aho-corasick` search, in one run: 1 MiB of log text.
//!
//! The secrets have the shapes real credentials have (random alphanumerics, hex, base64-like,
//! vendor-prefixed) and no common prefix, so neither side gets a free prefilter.
//!
//! `credvault_clean_1000` is `Scanner::builtin().clean(text, Some(&masker))`: 1,000 known secrets
//! in all their encoded forms (raw, base64 at three alignments in two alphabets, hex, percent,
//! JSON), plus the 14 built-in detectors, plus writing the cleaned text. The peer
//! `aho_corasick_1000_literals` finds the same 1,000 secrets as plain literals, and only counts
//! them. `credvault_mask_only_1000` is the masker alone.
//!
//! `cargo run -p credvault-benches --bin bench-report -- --peer aho_corasick_1000_literals dlp_`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use credvault_dlp::{MaskerBuilder, Scanner};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 1,000 secrets in the shapes real credentials have, with no shared prefix: random
/// alphanumerics, hex, base64-like, and vendor-prefixed tokens.
fn secret(i: u64) -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let pick = |set: &[u8], n: usize, salt: u64| -> String {
        (0..n)
            .map(|k| {
                set[(mix(i * 1000 + salt * 100 + k as u64) % set.len() as u64) as usize] as char
            })
            .collect()
    };
    match i % 10 {
        0..=3 => pick(ALNUM, 32, 1),
        4 | 5 => format!(
            "{:016x}{:016x}{:08x}",
            mix(i),
            mix(i + 7),
            mix(i + 9) as u32
        ),
        6 | 7 => pick(B64, 40, 2),
        8 => format!("ghp_{}", pick(ALNUM, 36, 3)),
        _ => format!("sk_live_{}", pick(ALNUM, 24, 4)),
    }
}

/// About 1 MiB of application log lines: requests, SQL, JSON, stack traces; every 200th line
/// holds a known secret and every 97th a card number or an email address.
fn log_text(secret: fn(u64) -> String) -> String {
    let mut s = String::with_capacity(1 << 20);
    let mut i = 0u64;
    while s.len() < (1 << 20) {
        let r = mix(i);
        let line = match r % 6 {
            0 => format!("2026-11-22T10:{:02}:{:02}.{:03}Z INFO  http request method=GET path=/api/v1/orders/{} status=200 duration_ms={} ip=10.0.{}.{}\n", r % 60, (r >> 8) % 60, (r >> 16) % 1000, r % 100_000, r % 900, (r >> 4) % 256, (r >> 12) % 256),
            1 => format!("2026-11-22T10:00:00Z DEBUG sql: SELECT id, status FROM invoices WHERE tenant_id = {} AND created_at > '2026-11-01' LIMIT 50\n", r % 10_000),
            2 => format!("{{\"level\":\"info\",\"msg\":\"job finished\",\"job_id\":\"{:016x}\",\"took\":{},\"retries\":{}}}\n", r, r % 5000, r % 3),
            3 => format!("    at com.acme.billing.InvoiceService.process(InvoiceService.java:{})\n", r % 900),
            4 => format!("2026-11-22T10:00:00Z WARN  cache miss key=user:{}:profile ttl=300 node=cache-{}.internal\n", r % 100_000, r % 8),
            _ => format!("2026-11-22T10:00:00Z INFO  worker {} heartbeat load={:.2} mem={}MiB version=v2.14.{}\n", r % 64, (r % 100) as f64 / 100.0, r % 4096, r % 20),
        };
        s.push_str(&line);
        if i.is_multiple_of(200) {
            s.push_str(&format!(
                "2026-11-22T10:00:00Z ERROR auth failed token={}\n",
                secret(i % 1000)
            ));
        }
        if i.is_multiple_of(97) {
            s.push_str(
                "2026-11-22T10:00:00Z INFO  payment card=4111111111111111 by billing@example.com\n",
            );
        }
        i += 1;
    }
    s
}

/// The same, but every secret starts with `tok_`: a shared prefix hands the bare search a
/// one-literal prefilter that the encoded forms cannot have. Shown for honesty, not a target.
fn prefixed_secret(i: u64) -> String {
    format!("tok_{:016x}{:08x}", mix(i), mix(i + 1_000_000) as u32)
}

fn bench(c: &mut Criterion) {
    run(c, "dlp_1mib_log", secret);
    run(c, "dlp_1mib_log_shared_prefix", prefixed_secret);
}

fn run(c: &mut Criterion, group: &str, secret: fn(u64) -> String) {
    let text = log_text(secret);
    let secrets: Vec<String> = (0..1000).map(secret).collect();
    let mut b = MaskerBuilder::new();
    for (i, s) in secrets.iter().enumerate() {
        b.add(&format!("bench/{i}"), s).unwrap();
    }
    let masker = b.build().unwrap();
    let scanner = Scanner::builtin();
    let peer = aho_corasick::AhoCorasick::new(&secrets).unwrap();

    let cleaned = scanner.clean(&text, Some(&masker)).unwrap();
    let known = peer.find_iter(text.as_bytes()).count();
    assert!(
        known > 20 && cleaned.masked.len() == known,
        "{known} vs {}",
        cleaned.masked.len()
    );
    assert!(!secrets.iter().any(|s| cleaned.text.contains(s.as_str())));
    assert!(!cleaned.findings.is_empty());

    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("aho_corasick_1000_literals", |b| {
        b.iter(|| black_box(peer.find_iter(black_box(text.as_bytes())).count()))
    });
    g.bench_function("credvault_mask_only_1000", |b| {
        b.iter(|| black_box(masker.mask(black_box(&text))))
    });
    g.bench_function("credvault_clean_1000", |b| {
        b.iter(|| black_box(scanner.clean(black_box(&text), Some(&masker)).unwrap()))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4))
        .sample_size(20);
    targets = bench
}
criterion_main!(benches);
