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

use credvault_benches::{log_text_with, long_prefix_decoy, long_prefix_secret, mix, secret};
use credvault_dlp::{MaskerBuilder, Scanner};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// The same, but every secret starts with `tok_`: a shared prefix hands the bare search a
/// one-literal prefilter that the encoded forms cannot have. Shown for honesty, not a target.
fn prefixed_secret(i: u64) -> String {
    format!("tok_{:016x}{:08x}", mix(i), mix(i + 1_000_000) as u32)
}

fn bench(c: &mut Criterion) {
    run(c, "dlp_1mib_log", secret, None);
    run(c, "dlp_1mib_log_shared_prefix", prefixed_secret, None);
    // Issue 22: `sk-proj-`, `ghp_` and JWT secrets, with ten times as many unknown tokens of
    // the same families in the text (every candidate start must be confirmed or refused).
    run(
        c,
        "dlp_1mib_log_long_prefixes",
        long_prefix_secret,
        Some(long_prefix_decoy),
    );
}

fn run(
    c: &mut Criterion,
    group: &str,
    secret: fn(u64) -> String,
    decoy: Option<fn(u64) -> String>,
) {
    let text = log_text_with(secret, decoy);
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
