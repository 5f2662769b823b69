//! credvault-envelope beside raw AES-256-GCM (ring `LessSafeKey`, RustCrypto `aes-gcm`), in one
//! run. Both sides get the same associated data (the 32-byte padded header plus a 4-entry
//! context: 119 bytes), so the comparison isolates our overhead: nonce generation, header, usage counter,
//! buffer handling. `cargo run -p credvault-benches --bin bench-report` prints the ratios.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::KeyInit;
use credvault_envelope::{
    Backend, DataKey, EncryptionContext, KeyId, OpeningKey, SealingKey, PREFIX_LEN,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

const KEY: [u8; 32] = [7; 32];

fn ctx() -> EncryptionContext {
    EncryptionContext::new()
        .with("tenant", "tenant-0001")
        .unwrap()
        .with("credential", "cred_0123456789")
        .unwrap()
        .with("environment", "production")
        .unwrap()
        .with("field", "password")
        .unwrap()
}

fn aad(key_id: KeyId, ctx: &EncryptionContext) -> Vec<u8> {
    // Exactly the associated data an envelope authenticates (docs/formats.md).
    let mut a = vec![1u8, 1];
    a.extend_from_slice(key_id.as_bytes());
    a.resize(32, 0);
    a.extend_from_slice(ctx.canonical_bytes());
    a
}

fn bench(c: &mut Criterion) {
    let key = DataKey::from_bytes(KeyId::from_bytes([1; 16]), &KEY);
    let ctx = ctx();
    let aad = aad(key.id(), &ctx);
    let ring_key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &KEY).unwrap());
    let rc_key = aes_gcm::Aes256Gcm::new_from_slice(&KEY).unwrap();

    for &(label, size) in &[("256B", 256usize), ("64KiB", 64 << 10), ("1MiB", 1 << 20)] {
        let pt = vec![0x5au8; size];

        let mut g = c.benchmark_group(format!("seal_{label}"));
        g.throughput(Throughput::Bytes(size as u64));
        // Peer: ring raw, in place, fixed nonce (no nonce generation at all).
        let mut buf = pt.clone();
        g.bench_function("ring_raw_in_place", |b| {
            b.iter(|| {
                let n = Nonce::assume_unique_for_key([3; 12]);
                black_box(
                    ring_key
                        .seal_in_place_separate_tag(n, Aad::from(&aad[..]), &mut buf)
                        .unwrap(),
                )
            })
        });
        let mut buf = pt.clone();
        g.bench_function("rustcrypto_raw_in_place", |b| {
            b.iter(|| {
                black_box(
                    rc_key
                        .encrypt_in_place_detached(
                            aes_gcm::Nonce::from_slice(&[3; 12]),
                            &aad,
                            &mut buf,
                        )
                        .unwrap(),
                )
            })
        });
        for backend in Backend::ALL {
            let sealer = SealingKey::with_backend(&key, *backend);
            g.bench_function(BenchmarkId::new("credvault_seal", backend.name()), |b| {
                b.iter(|| black_box(sealer.seal(black_box(&pt), &ctx).unwrap()))
            });
            let mut buf = vec![0u8; PREFIX_LEN];
            buf.extend_from_slice(&pt);
            buf.reserve(16);
            g.bench_function(
                BenchmarkId::new("credvault_seal_in_place", backend.name()),
                |b| {
                    b.iter(|| {
                        buf.truncate(PREFIX_LEN + size);
                        sealer.seal_in_place(&ctx, &mut buf).unwrap();
                        black_box(buf.len())
                    })
                },
            );
        }
        g.finish();

        let mut g = c.benchmark_group(format!("open_{label}"));
        g.throughput(Throughput::Bytes(size as u64));
        // Peer: ring raw, open in place; in-place open consumes the ciphertext, so each
        // iteration first copies it back (the same copy our `open` makes).
        let mut sealed = pt.clone();
        let tag = ring_key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key([3; 12]),
                Aad::from(&aad[..]),
                &mut sealed,
            )
            .unwrap();
        let mut work = sealed.clone();
        g.bench_function("ring_raw_in_place", |b| {
            b.iter(|| {
                work.copy_from_slice(&sealed);
                let n = Nonce::assume_unique_for_key([3; 12]);
                black_box(
                    ring_key
                        .open_in_place_separate_tag(n, Aad::from(&aad[..]), tag, &mut work, 0..)
                        .unwrap()
                        .len(),
                )
            })
        });
        let rc_tag = *aes_gcm::Tag::from_slice(tag.as_ref());
        let mut work = sealed.clone();
        g.bench_function("rustcrypto_raw_in_place", |b| {
            b.iter(|| {
                work.copy_from_slice(&sealed);
                rc_key
                    .decrypt_in_place_detached(
                        aes_gcm::Nonce::from_slice(&[3; 12]),
                        &aad,
                        &mut work,
                        &rc_tag,
                    )
                    .unwrap();
                black_box(work.len())
            })
        });
        let env = SealingKey::new(&key).seal(&pt, &ctx).unwrap();
        for backend in Backend::ALL {
            let opener = OpeningKey::with_backend(&key, *backend);
            g.bench_function(BenchmarkId::new("credvault_open", backend.name()), |b| {
                b.iter(|| black_box(opener.open(black_box(&env), &ctx).unwrap().len()))
            });
            let mut work = env.clone();
            g.bench_function(
                BenchmarkId::new("credvault_open_in_place", backend.name()),
                |b| {
                    b.iter(|| {
                        work.copy_from_slice(&env);
                        black_box(opener.open_in_place(&mut work, &ctx).unwrap().len())
                    })
                },
            );
        }
        g.finish();
    }
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
