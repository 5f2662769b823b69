//! A store over a KMS master key through a KMS outage: the unwrapped data-key cache keeps
//! reveals working until its time-to-live or use limit, and only it does; after that the store
//! fails closed with one line naming the provider.
#![cfg(feature = "aws-kms")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use credvault_envelope::ProviderError;
use credvault_kms::aws::{AwsKmsMasterKey, AwsKmsOptions, StaticCredentials};
use credvault_store::audit::MemorySink;
use credvault_store::schema::Registry;
use credvault_store::{
    AuditTarget, CacheConfig, MemoryStorage, NewCredential, Store, StoreConfig, StoreError,
    TenantId,
};
use zeroize::Zeroizing;

fn provider(url: &str) -> Option<AwsKmsMasterKey> {
    let admin = common::service_env("CREDVAULT_TEST_KMS_URL", "moto (AWS KMS)")?;
    let creds = StaticCredentials {
        access_key_id: common::service_env("CREDVAULT_TEST_KMS_KEY_ID", "moto (AWS KMS)")?,
        secret_access_key: Zeroizing::new(common::service_env(
            "CREDVAULT_TEST_KMS_SECRET",
            "moto (AWS KMS)",
        )?),
    };
    let options = |url: &str| AwsKmsOptions {
        endpoint_url: Some(url.to_owned()),
        region: Some("us-east-1".to_owned()),
        static_credentials: Some(creds.clone()),
        connect_timeout: Duration::from_millis(500),
        attempt_timeout: Duration::from_secs(2),
        operation_timeout: Duration::from_secs(5),
        max_attempts: 2,
    };
    // A key made for this test, through KMS directly; then opened through `url`.
    let key = common::create_kms_key(&admin, &creds);
    Some(AwsKmsMasterKey::open(&key, &options(url)).unwrap())
}

fn store(master: AwsKmsMasterKey, cache: CacheConfig) -> (Store, TenantId) {
    let store = Store::new(
        Arc::new(MemoryStorage::new()),
        Arc::new(master),
        AuditTarget::Sink(Arc::new(MemorySink::new())),
    )
    .with_config(StoreConfig::default().cache(cache))
    .with_registry(Arc::new(Registry::with_builtins()));
    let t = TenantId::new("acme").unwrap();
    store.create_tenant(&t, "Acme", "admin").unwrap();
    (store, t)
}

fn login() -> NewCredential {
    NewCredential::new(
        "website_login",
        "portal",
        serde_json::json!({"login_url": "https://x.example/login", "username": "bot", "password": "kms-outage-secret"}),
    )
}

#[test]
fn cached_data_keys_carry_reveals_through_an_outage_until_their_limit_then_it_fails_closed() {
    let Some(url) = common::service_env("CREDVAULT_TEST_KMS_URL", "moto (AWS KMS)") else {
        return;
    };
    let relay = common::Relay::start(&url);
    let Some(master) = provider(&format!("http://127.0.0.1:{}", relay.port)) else {
        return;
    };
    let provider_id = credvault_envelope::MasterKey::provider_id(&master).to_owned();
    // A key serves 4 operations before it is unwrapped again (a TTL works the same way; a
    // use limit makes the test independent of the clock).
    let (store, t) = store(master, CacheConfig::default().max_uses(4));
    let s = store.tenant(&t, "bot").unwrap();
    let id = s.create(login()).unwrap().id;
    let reveal = || s.reveal(&id, &["password"], None);
    assert_eq!(
        reveal().unwrap().expose_secret("password"),
        Some("kms-outage-secret")
    );

    relay.cut();
    // KMS is gone; the cached data key still serves, up to its use limit...
    let mut served = 0;
    let failure = loop {
        match reveal() {
            Ok(r) => {
                assert_eq!(r.expose_secret("password"), Some("kms-outage-secret"));
                served += 1;
                assert!(served < 10, "the cache served past its use limit");
            }
            Err(e) => break e,
        }
    };
    assert!(
        served >= 1,
        "the cache did not carry any reveal through the outage"
    );
    // ...then the store fails closed: the provider's outage, one line naming it.
    match &failure {
        StoreError::MasterKey(ProviderError::Unavailable { provider, .. }) => {
            assert_eq!(provider, &provider_id)
        }
        other => panic!("after the cache's limit: {other:?}"),
    }
    let line = failure.to_string();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.contains(&provider_id), "{line}");
    // And again, every time, while KMS is down: no stale key is used.
    assert!(reveal().is_err());
}
