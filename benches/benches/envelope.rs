//! credvault-envelope beside raw AES-256-GCM (ring `LessSafeKey`, RustCrypto `aes-gcm`), in one
//! run. The `ring_raw_in_place` peer gets the same associated data as an envelope v2 (the
//! 32-byte context digest), so that ratio isolates our overhead: nonce generation, header,
//! usage counter, buffer handling. `ring_raw_in_place_no_aad` is a plain ring call with no
//! associated data; `ring_copy_then_seal` seals a fresh copy, the work `seal` does, and
//! `ring_copy_then_open` opens a copy of a stored envelope into a new buffer, the work `open`
//! does. The `credvault_*_v1` rows seal and open the v1 format (header and context encoding as
//! associated data, 126 bytes here) in the same run. `cargo run -p credvault-benches --bin
//! bench-report` prints the ratios.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::KeyInit;
use credvault_envelope::hazmat::seal_envelope_v1_with_nonce;
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

fn aad(ctx: &EncryptionContext) -> Vec<u8> {
    // Exactly the associated data an envelope (v2) authenticates (docs/formats.md).
    ctx.v2_digest().to_vec()
}

fn bench(c: &mut Criterion) {
    let key = DataKey::from_bytes(KeyId::from_bytes([1; 16]), &KEY);
    let ctx = ctx();
    let aad = aad(&ctx);
    let ring_key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &KEY).unwrap());
    let rc_key = aes_gcm::Aes256Gcm::new_from_slice(&KEY).unwrap();

    for &(label, size) in &[
        ("32B", 32usize),
        ("256B", 256),
        ("64KiB", 64 << 10),
        ("1MiB", 1 << 20),
    ] {
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
        // Peer: the same ring call with no associated data at all (what a user comparing a
        // plain `ring` seal with an envelope sees).
        let mut buf = pt.clone();
        g.bench_function("ring_raw_in_place_no_aad", |b| {
            b.iter(|| {
                let n = Nonce::assume_unique_for_key([3; 12]);
                black_box(
                    ring_key
                        .seal_in_place_separate_tag(n, Aad::empty(), &mut buf)
                        .unwrap(),
                )
            })
        });
        // Peer: ring sealing a copy (a new buffer per call), the work `seal` does.
        g.bench_function("ring_copy_then_seal", |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(size + 16);
                out.extend_from_slice(black_box(&pt));
                let n = Nonce::assume_unique_for_key([3; 12]);
                let tag = ring_key
                    .seal_in_place_separate_tag(n, Aad::from(&aad[..]), &mut out)
                    .unwrap();
                out.extend_from_slice(tag.as_ref());
                black_box(out)
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
            if size <= 256 {
                let nonce = [3u8; 12];
                g.bench_function(BenchmarkId::new("credvault_seal_v1", backend.name()), |b| {
                    b.iter(|| {
                        black_box(
                            seal_envelope_v1_with_nonce(&sealer, &nonce, black_box(&pt), &ctx)
                                .unwrap(),
                        )
                    })
                });
            }
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
        // Peer: ring opening a stored envelope into a new buffer (the ciphertext and tag copied
        // out of a shared slice, opened in place, the plaintext handed back owned), the work
        // `open` does; ring has no call that opens from one buffer into another.
        let mut stored = sealed.clone();
        stored.extend_from_slice(tag.as_ref());
        g.bench_function("ring_copy_then_open", |b| {
            b.iter(|| {
                let mut out = black_box(&stored[..]).to_vec();
                let n = Nonce::assume_unique_for_key([3; 12]);
                let len = ring_key
                    .open_in_place(n, Aad::from(&aad[..]), &mut out)
                    .unwrap()
                    .len();
                out.truncate(len);
                black_box(out)
            })
        });
        let mut plain_sealed = pt.clone();
        let plain_tag = ring_key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key([3; 12]),
                Aad::empty(),
                &mut plain_sealed,
            )
            .unwrap();
        let mut work = plain_sealed.clone();
        g.bench_function("ring_raw_in_place_no_aad", |b| {
            b.iter(|| {
                work.copy_from_slice(&plain_sealed);
                let n = Nonce::assume_unique_for_key([3; 12]);
                black_box(
                    ring_key
                        .open_in_place_separate_tag(n, Aad::empty(), plain_tag, &mut work, 0..)
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
        let env_v1 =
            seal_envelope_v1_with_nonce(&SealingKey::new(&key), &[3; 12], &pt, &ctx).unwrap();
        for backend in Backend::ALL {
            let opener = OpeningKey::with_backend(&key, *backend);
            g.bench_function(BenchmarkId::new("credvault_open", backend.name()), |b| {
                b.iter(|| black_box(opener.open(black_box(&env), &ctx).unwrap().len()))
            });
            if size <= 256 {
                g.bench_function(BenchmarkId::new("credvault_open_v1", backend.name()), |b| {
                    b.iter(|| black_box(opener.open(black_box(&env_v1), &ctx).unwrap().len()))
                });
            }
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
