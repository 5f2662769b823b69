//! credvault-totp beside totp-rs in one run: code generation against totp-rs's own
//! `generate` (same secret, algorithm, digits, time), and verification with skew 1 against one
//! generation. `cargo run -p credvault-benches --bin bench-report -- --peer totp_rs_generate totp_`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use credvault_totp::{Algorithm, Otp, TotpSecret};
use criterion::{criterion_group, criterion_main, Criterion};

const SECRET: &[u8; 20] = b"12345678901234567890";
const T: u64 = 1_700_000_000;

fn bench(c: &mut Criterion) {
    let ours = Otp::totp(
        TotpSecret::from_bytes(SECRET).unwrap(),
        Algorithm::Sha1,
        6,
        30,
    )
    .unwrap();
    let theirs = totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_secret(SECRET.to_vec())
        .build()
        .unwrap();
    assert_eq!(ours.code_at(T).to_string(), theirs.generate(T).to_string());
    let code = ours.code_at(T).to_string();

    let mut g = c.benchmark_group("totp_sha1_6");
    g.bench_function("totp_rs_generate", |b| {
        b.iter(|| black_box(theirs.generate(black_box(T))))
    });
    g.bench_function("credvault_generate", |b| {
        b.iter(|| black_box(ours.code_at(black_box(T))))
    });
    g.bench_function("credvault_verify_skew1", |b| {
        b.iter(|| black_box(ours.verify_at(black_box(&code), T, 1).unwrap()))
    });
    g.bench_function("totp_rs_check_skew1", |b| {
        let t1 = totp_rs::Builder::new()
            .with_secret(SECRET.to_vec())
            .with_skew(1)
            .build()
            .unwrap();
        b.iter(|| black_box(t1.check(black_box(&code), T)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(40);
    targets = bench
}
criterion_main!(benches);
