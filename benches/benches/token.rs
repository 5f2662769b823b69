//! credvault-token beside its peers in one run:
//! - Fernet encrypt/decrypt vs the `fernet` crate 0.2 built with its **RustCrypto** backend
//!   (`default-features = false, features = ["rustcrypto"]`), same key, same plaintext;
//! - AES-CBC-HMAC-SHA2 seal/open vs the raw primitives (`aes` + `cbc` + `hmac`/`sha2` with
//!   pre-expanded keys, random IV from a fixed array) on the same sizes.
//!
//! `cargo run -p credvault-benches --bin bench-report -- --peer fernet_crate fernet_` and
//! `... --peer raw_primitives cbc_hmac_` print the ratios.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, InnerIvInit, KeyInit};
use cbc::cipher::block_padding::Pkcs7;
use credvault_token::{Algorithm, CbcHmacKey, Fernet};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const KEY: [u8; 32] = [9; 32];
const KEY_B64: &str = "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=";
const TS: u64 = 1_700_000_000;

fn bench(c: &mut Criterion) {
    let ours = Fernet::new(KEY_B64).unwrap();
    let theirs = fernet::Fernet::new(KEY_B64).unwrap();
    let aead = CbcHmacKey::new(Algorithm::A128CbcHs256, &KEY).unwrap();
    let raw_mac = <Hmac<Sha256> as Mac>::new_from_slice(&KEY[..16]).unwrap();
    let raw_aes = aes::Aes128::new_from_slice(&KEY[16..]).unwrap();
    let aad = b"tenant=acme;credential=db;field=password";

    for &(label, size) in &[("256B", 256usize), ("64KiB", 64 << 10)] {
        let pt = vec![0x42u8; size];

        let mut g = c.benchmark_group(format!("fernet_encrypt_{label}"));
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function("fernet_crate", |b| {
            b.iter(|| black_box(theirs.encrypt_at_time(black_box(&pt), TS)))
        });
        g.bench_function("credvault", |b| {
            b.iter(|| black_box(ours.encrypt_at(black_box(&pt), TS).unwrap()))
        });
        g.finish();

        let token = ours.encrypt_at(&pt, TS).unwrap();
        assert_eq!(theirs.decrypt_at_time(&token, Some(60), TS).unwrap(), pt);
        let mut g = c.benchmark_group(format!("fernet_decrypt_{label}"));
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function("fernet_crate", |b| {
            b.iter(|| {
                black_box(
                    theirs
                        .decrypt_at_time(black_box(&token), Some(60), TS)
                        .unwrap(),
                )
            })
        });
        g.bench_function("credvault", |b| {
            b.iter(|| {
                black_box(
                    ours.decrypt_at(black_box(&token), Some(60), TS)
                        .unwrap()
                        .len(),
                )
            })
        });
        g.finish();

        let mut g = c.benchmark_group(format!("cbc_hmac_seal_{label}"));
        g.throughput(Throughput::Bytes(size as u64));
        let iv = [7u8; 16];
        g.bench_function("raw_primitives", |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(16 + size + 32);
                out.extend_from_slice(&iv);
                out.extend_from_slice(black_box(&pt));
                out.resize(16 + (size / 16 + 1) * 16, 0);
                let n = cbc::Encryptor::<&aes::Aes128>::inner_iv_init(&raw_aes, (&iv).into())
                    .encrypt_padded_mut::<Pkcs7>(&mut out[16..], size)
                    .unwrap()
                    .len();
                out.truncate(16 + n);
                let mut m = raw_mac.clone();
                m.update(aad);
                m.update(&out);
                m.update(&((aad.len() as u64) * 8).to_be_bytes());
                out.extend_from_slice(&m.finalize().into_bytes()[..16]);
                black_box(out)
            })
        });
        g.bench_function("credvault", |b| {
            b.iter(|| black_box(aead.seal(aad, black_box(&pt)).unwrap()))
        });
        g.finish();

        let sealed = aead.seal(aad, &pt).unwrap();
        let mut g = c.benchmark_group(format!("cbc_hmac_open_{label}"));
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function("raw_primitives", |b| {
            b.iter(|| {
                let s = black_box(&sealed);
                let (body, tag) = s.split_at(s.len() - 16);
                let mut m = raw_mac.clone();
                m.update(aad);
                m.update(body);
                m.update(&((aad.len() as u64) * 8).to_be_bytes());
                m.verify_truncated_left(tag).unwrap();
                let mut buf = body[16..].to_vec();
                let iv: [u8; 16] = body[..16].try_into().unwrap();
                let n = cbc::Decryptor::<&aes::Aes128>::inner_iv_init(&raw_aes, (&iv).into())
                    .decrypt_padded_mut::<Pkcs7>(&mut buf)
                    .unwrap()
                    .len();
                buf.truncate(n);
                black_box(buf)
            })
        });
        g.bench_function("credvault", |b| {
            b.iter(|| black_box(aead.open(aad, black_box(&sealed)).unwrap().len()))
        });
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
