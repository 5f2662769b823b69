//! Master-key providers beside the local keyring, in one run: wrap and unwrap of one data key,
//! and a store's reveal with a warm versus a cold data-key cache.
//!
//! - `master_wrap`, `master_unwrap`: one 32-byte data key under a two-entry context.
//!   Peer `local`: the local keyring (AES-256-GCM in this process, ring). `pkcs11`: SoftHSM2
//!   (C_Encrypt/C_Decrypt with CKM_AES_GCM through cryptoki, pooled session). `aws_kms`:
//!   moto's KMS on loopback (`Encrypt`/`Decrypt` over HTTP with SigV4, IAM checked): a
//!   stand-in for the network round trip, not AWS's latency.
//! - `reveal_cache`: a store's reveal of a 3-field `website_login` (memory storage, memory
//!   audit sink). `warm_*`: the data key cached (the default). `cold_*`: a cache that serves
//!   each key once (`CacheConfig::max_uses(1)`), so every reveal unwraps through the provider
//!   and records `key_used`. Peer `warm_local`.
//!
//! The HSM and KMS functions need `.ci/kms-services` (its variables); without them they are
//! skipped with a message and only the local keyring is measured.
//! `cargo run -p credvault-benches --bin bench-report -- --peer local master_`
//! `cargo run -p credvault-benches --bin bench-report -- --peer warm_local reveal_cache`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use credvault_envelope::{DataKey, EncryptionContext, LocalKeyring, MasterKey};
use credvault_kms::aws::{AwsKmsMasterKey, AwsKmsOptions, StaticCredentials};
use credvault_kms::pkcs11::Pkcs11MasterKey;
use credvault_kms::MasterUri;
use credvault_store::audit::MemorySink;
use credvault_store::schema::Registry;
use credvault_store::{AuditTarget, CacheConfig, MemoryStorage, NewCredential, Store, TenantId};
use criterion::{criterion_group, criterion_main, Criterion};

fn env(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.is_empty())
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

fn hsm() -> Option<Arc<dyn MasterKey>> {
    let (Some(module), Some(token), Some(pin)) = (
        env("CREDVAULT_TEST_PKCS11_MODULE"),
        env("CREDVAULT_TEST_PKCS11_TOKEN"),
        env("CREDVAULT_TEST_PKCS11_PIN_FILE"),
    ) else {
        eprintln!("kms bench: no SoftHSM2 (.ci/kms-services): pkcs11 skipped");
        return None;
    };
    let uri = format!(
        "pkcs11:token={token};object=bench-{:x}?module-path={module}&pin-source=file://{pin}",
        nanos()
    );
    let MasterUri::Pkcs11(p) = MasterUri::parse(&uri).unwrap() else {
        unreachable!()
    };
    Some(Arc::new(Pkcs11MasterKey::create(&p).unwrap().0))
}

fn kms() -> Option<Arc<dyn MasterKey>> {
    let (Some(url), Some(id), Some(secret)) = (
        env("CREDVAULT_TEST_KMS_URL"),
        env("CREDVAULT_TEST_KMS_KEY_ID"),
        env("CREDVAULT_TEST_KMS_SECRET"),
    ) else {
        eprintln!("kms bench: no moto KMS (.ci/kms-services): aws_kms skipped");
        return None;
    };
    let options = AwsKmsOptions {
        endpoint_url: Some(url),
        region: Some("us-east-1".into()),
        static_credentials: Some(StaticCredentials {
            access_key_id: id,
            secret_access_key: zeroize::Zeroizing::new(secret),
        }),
        ..AwsKmsOptions::default()
    };
    // A key of the bench's own, made as an operator would, with the SDK.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let creds = options.static_credentials.clone().unwrap();
    let conf = aws_sdk_kms::Config::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
        .http_client(http)
        .endpoint_url(options.endpoint_url.clone().unwrap())
        .region(aws_sdk_kms::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            creds.access_key_id,
            creds.secret_access_key.as_str().to_owned(),
            None,
            None,
            "bench",
        ))
        .build();
    let client = aws_sdk_kms::Client::from_conf(conf);
    let out = rt.block_on(client.create_key().send()).unwrap();
    let key = out.key_metadata().unwrap().key_id().to_owned();
    Some(Arc::new(AwsKmsMasterKey::open(&key, &options).unwrap()))
}

fn providers() -> Vec<(&'static str, Arc<dyn MasterKey>)> {
    let mut v: Vec<(&'static str, Arc<dyn MasterKey>)> =
        vec![("local", Arc::new(LocalKeyring::generate().unwrap()))];
    if let Some(h) = hsm() {
        v.push(("pkcs11", h));
    }
    if let Some(k) = kms() {
        v.push(("aws_kms", k));
    }
    v
}

fn ctx() -> EncryptionContext {
    EncryptionContext::new()
        .with("tenant", "acme")
        .unwrap()
        .with("purpose", "data-key")
        .unwrap()
}

fn wrap_unwrap(c: &mut Criterion) {
    let providers = providers();
    let ctx = ctx();
    let dek = DataKey::generate().unwrap();
    let mut g = c.benchmark_group("master_wrap");
    g.measurement_time(Duration::from_secs(3));
    for (name, p) in &providers {
        g.bench_function(*name, |b| b.iter(|| p.wrap(&dek, &ctx).unwrap()));
    }
    g.finish();
    let mut g = c.benchmark_group("master_unwrap");
    g.measurement_time(Duration::from_secs(3));
    for (name, p) in &providers {
        let w = p.wrap(&dek, &ctx).unwrap();
        g.bench_function(*name, |b| b.iter(|| p.unwrap(&w, &ctx).unwrap()));
    }
    g.finish();
}

fn reveal_cache(c: &mut Criterion) {
    let providers = providers();
    let mut g = c.benchmark_group("reveal_cache");
    g.measurement_time(Duration::from_secs(3));
    for (name, p) in &providers {
        for (temp, cache) in [
            ("warm", CacheConfig::default()),
            ("cold", CacheConfig::default().max_uses(1)),
        ] {
            let store = Store::new(
                Arc::new(MemoryStorage::new()),
                Arc::clone(p),
                AuditTarget::Sink(Arc::new(MemorySink::new())),
            )
            .with_config(credvault_store::StoreConfig::default().cache(cache))
            .with_registry(Arc::new(Registry::with_builtins()));
            let t = TenantId::new("acme").unwrap();
            store.create_tenant(&t, "Acme", "bench").unwrap();
            let s = store.tenant(&t, "bench").unwrap();
            let id = s
                .create(NewCredential::new(
                    "website_login",
                    credvault_benches::login_name(0),
                    credvault_benches::login_fields(0),
                ))
                .unwrap()
                .id;
            let label: &'static str = Box::leak(format!("{temp}_{name}").into_boxed_str());
            g.bench_function(label, |b| {
                b.iter(|| s.reveal(&id, &["password"], None).unwrap())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, wrap_unwrap, reveal_cache);
criterion_main!(benches);
