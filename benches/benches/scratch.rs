#![allow(clippy::unwrap_used, missing_docs)]
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, InnerIvInit, KeyInit};
use base64::Engine;
use cbc::cipher::block_padding::Pkcs7;
use criterion::{criterion_group, criterion_main, Criterion};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::hint::black_box;
fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("parts64k");
    let data = vec![0x42u8; 65536 + 57];
    let enc = base64::engine::general_purpose::URL_SAFE.encode(&data);
    g.bench_function("b64_encode", |b| {
        b.iter(|| black_box(base64::engine::general_purpose::URL_SAFE.encode(black_box(&data))))
    });
    g.bench_function("b64_decode", |b| {
        b.iter(|| {
            black_box(
                base64::engine::general_purpose::URL_SAFE
                    .decode(black_box(&enc))
                    .unwrap(),
            )
        })
    });
    g.bench_function("b64simd_encode", |b| {
        b.iter(|| black_box(base64_simd::URL_SAFE.encode_to_string(black_box(&data))))
    });
    g.bench_function("b64simd_decode", |b| {
        b.iter(|| {
            black_box(
                base64_simd::URL_SAFE
                    .decode_to_vec(black_box(enc.as_bytes()))
                    .unwrap(),
            )
        })
    });
    let mac = <Hmac<Sha256> as Mac>::new_from_slice(&[1; 16]).unwrap();
    g.bench_function("hmac_sha2", |b| {
        b.iter(|| {
            let mut m = mac.clone();
            m.update(black_box(&data));
            black_box(m.finalize())
        })
    });
    let rk = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[1; 16]);
    g.bench_function("hmac_ring", |b| {
        b.iter(|| black_box(ring::hmac::sign(&rk, black_box(&data))))
    });
    let a = aes::Aes128::new_from_slice(&[2; 16]).unwrap();
    let mut buf = vec![0u8; 65536 + 16];
    g.bench_function("cbc_enc", |b| {
        b.iter(|| {
            black_box(
                cbc::Encryptor::<aes::Aes128>::inner_iv_init(a.clone(), (&[0u8; 16]).into())
                    .encrypt_padded_mut::<Pkcs7>(&mut buf, 65536)
                    .unwrap()
                    .len(),
            )
        })
    });
    let ct = cbc::Encryptor::<aes::Aes128>::inner_iv_init(a.clone(), (&[0u8; 16]).into())
        .encrypt_padded_vec_mut::<Pkcs7>(&data[..65536]);
    g.bench_function("cbc_dec", |b| {
        b.iter(|| {
            let mut w = ct.clone();
            black_box(
                cbc::Decryptor::<aes::Aes128>::inner_iv_init(a.clone(), (&[0u8; 16]).into())
                    .decrypt_padded_mut::<Pkcs7>(&mut w)
                    .unwrap()
                    .len(),
            )
        })
    });
    g.finish();
}
criterion_group! { name = benches; config = Criterion::default().measurement_time(std::time::Duration::from_secs(1)).warm_up_time(std::time::Duration::from_millis(300)).sample_size(20); targets = bench }
criterion_main!(benches);
