//! The AWS KMS provider against moto's KMS (signatures and IAM policies checked), started by
//! `.ci/kms-services`.
#![cfg(feature = "aws-kms")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::time::Duration;

use credvault_envelope::{
    generate_data_key, needs_rewrap, EncryptionContext, MasterKey, ProviderError,
};
use credvault_kms::aws::{AwsKmsMasterKey, AwsKmsOptions, StaticCredentials};
use credvault_kms::KmsError;
use zeroize::Zeroizing;

struct Kms {
    url: String,
    full: StaticCredentials,
    limited: StaticCredentials,
}

fn kms() -> Option<Kms> {
    let creds = |id: &str, secret: &str| -> Option<StaticCredentials> {
        Some(StaticCredentials {
            access_key_id: common::service_env(id, "moto (AWS KMS)")?,
            secret_access_key: Zeroizing::new(common::service_env(secret, "moto (AWS KMS)")?),
        })
    };
    Some(Kms {
        url: common::service_env("CREDVAULT_TEST_KMS_URL", "moto (AWS KMS)")?,
        full: creds("CREDVAULT_TEST_KMS_KEY_ID", "CREDVAULT_TEST_KMS_SECRET")?,
        limited: creds(
            "CREDVAULT_TEST_KMS_LIMITED_KEY_ID",
            "CREDVAULT_TEST_KMS_LIMITED_SECRET",
        )?,
    })
}

impl Kms {
    fn options(&self, url: &str, creds: &StaticCredentials) -> AwsKmsOptions {
        AwsKmsOptions {
            endpoint_url: Some(url.to_owned()),
            region: Some("us-east-1".to_owned()),
            static_credentials: Some(creds.clone()),
            connect_timeout: Duration::from_millis(500),
            attempt_timeout: Duration::from_secs(2),
            operation_timeout: Duration::from_secs(5),
            max_attempts: 2,
        }
    }

    fn open(&self, key: &str) -> AwsKmsMasterKey {
        AwsKmsMasterKey::open(key, &self.options(&self.url, &self.full)).unwrap()
    }

    fn admin<T>(
        &self,
        f: impl FnOnce(aws_sdk_kms::Client) -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>>,
    ) -> T {
        common::kms_admin(&self.url, &self.full, f)
    }

    fn create_key(&self) -> String {
        common::create_kms_key(&self.url, &self.full)
    }

    fn alias(&self, alias: &str, key: &str, update: bool) {
        let (alias, key) = (alias.to_owned(), key.to_owned());
        self.admin(move |c| {
            Box::pin(async move {
                if update {
                    c.update_alias()
                        .alias_name(alias)
                        .target_key_id(key)
                        .send()
                        .await
                        .map(|_| ())
                        .unwrap();
                } else {
                    c.create_alias()
                        .alias_name(alias)
                        .target_key_id(key)
                        .send()
                        .await
                        .map(|_| ())
                        .unwrap();
                }
            })
        })
    }

    fn disable(&self, key: &str) {
        let key = key.to_owned();
        self.admin(move |c| {
            Box::pin(async move {
                c.disable_key().key_id(key).send().await.unwrap();
            })
        })
    }
}

fn ctx(t: &str) -> EncryptionContext {
    EncryptionContext::new().with("tenant", t).unwrap()
}

#[test]
fn a_kms_key_passes_conformance_by_id_and_by_alias() {
    let Some(k) = kms() else { return };
    let key = k.create_key();
    let by_id = k.open(&key);
    assert_eq!(by_id.provider_id(), format!("aws-kms:{key}"));
    credvault_test::master_key_conformance(&by_id).unwrap();

    // By ARN, as `aws-kms://arn:aws:kms:...` gives it: the same key.
    assert!(by_id.arn().starts_with("arn:aws:kms:"), "{}", by_id.arn());
    assert_eq!(k.open(by_id.arn()).provider_id(), by_id.provider_id());
    let alias = format!("alias/{}", common::unique("cv"));
    k.alias(&alias, &key, false);
    let by_alias = k.open(&alias);
    // The alias resolves to the key: one provider id, wrapped keys open either way.
    assert_eq!(by_alias.provider_id(), by_id.provider_id());
    let (dek, w) = generate_data_key(&by_alias, &ctx("acme")).unwrap();
    assert_eq!(
        by_id.unwrap(&w, &ctx("acme")).unwrap().expose_secret(),
        dek.expose_secret()
    );
    // KMS checks the context it was given: another tenant's context is refused by KMS.
    assert!(matches!(
        by_id.unwrap(&w, &ctx("other")),
        Err(ProviderError::Unwrap(_))
    ));
}

#[test]
fn moving_the_alias_to_a_new_key_rewraps_in_kms_and_old_keys_keep_opening() {
    let Some(k) = kms() else { return };
    let (old_key, new_key) = (k.create_key(), k.create_key());
    let alias = format!("alias/{}", common::unique("rot"));
    k.alias(&alias, &old_key, false);
    let before = k.open(&alias);
    let (dek, w) = generate_data_key(&before, &ctx("acme")).unwrap();

    k.alias(&alias, &new_key, true);
    let after = k.open(&alias);
    assert_eq!(after.provider_id(), format!("aws-kms:{new_key}"));
    // The old wrapped key still opens through the new provider (KMS finds its key)...
    assert_eq!(
        after.unwrap(&w, &ctx("acme")).unwrap().expose_secret(),
        dek.expose_secret()
    );
    // ...is flagged for rewrap, and ReEncrypt moves it to the new key without the data key
    // leaving KMS.
    assert!(needs_rewrap(&after, &w).unwrap());
    let re = after.rewrap(&w, &ctx("acme")).unwrap();
    assert_eq!(re.master_key().provider, after.provider_id());
    assert!(!needs_rewrap(&after, &re).unwrap());
    assert_eq!(
        after.unwrap(&re, &ctx("acme")).unwrap().expose_secret(),
        dek.expose_secret()
    );
    // The rewrapped key is bound to its new header: the old provider id in it is refused.
    assert!(re.as_bytes() != w.as_bytes());
}

#[test]
fn access_denied_is_told_apart_from_a_wrong_context_and_from_an_outage() {
    let Some(k) = kms() else { return };
    let key = k.create_key();
    let full = k.open(&key);
    let (_, w) = generate_data_key(&full, &ctx("acme")).unwrap();
    // This IAM user may describe and encrypt, not decrypt or generate.
    let limited = AwsKmsMasterKey::open(&key, &k.options(&k.url, &k.limited)).unwrap();
    match limited.unwrap(&w, &ctx("acme")) {
        Err(ProviderError::Denied { reason, .. }) => {
            assert!(reason.contains("Decrypt"), "{reason}")
        }
        other => panic!("a denied Decrypt gave {:?}", other.map(|k| k.id())),
    }
    assert!(matches!(
        limited.generate(&ctx("acme")),
        Err(ProviderError::Denied { .. })
    ));
    // Nothing was lost: the full user still opens it.
    full.unwrap(&w, &ctx("acme")).unwrap();
}

#[test]
fn a_disabled_key_is_denied_at_open() {
    let Some(k) = kms() else { return };
    let key = k.create_key();
    k.disable(&key);
    assert!(matches!(
        AwsKmsMasterKey::open(&key, &k.options(&k.url, &k.full)),
        Err(KmsError::Provider(ProviderError::Denied { .. }))
    ));
}

#[test]
fn an_unreachable_kms_is_unavailable_at_open() {
    let Some(k) = kms() else { return };
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    match AwsKmsMasterKey::open(
        "alias/any",
        &k.options(&format!("http://127.0.0.1:{port}"), &k.full),
    ) {
        Err(KmsError::Provider(ProviderError::Unavailable { reason, .. })) => {
            assert!(reason.contains("unreachable"), "{reason}")
        }
        other => panic!("an unreachable KMS gave {other:?}"),
    }
}

#[test]
fn kms_going_away_after_open_is_unavailable_and_loses_nothing() {
    let Some(k) = kms() else { return };
    let key = k.create_key();
    let relay = common::Relay::start(&k.url);
    let through = AwsKmsMasterKey::open(
        &key,
        &k.options(&format!("http://127.0.0.1:{}", relay.port), &k.full),
    )
    .unwrap();
    let (dek, w) = generate_data_key(&through, &ctx("acme")).unwrap();
    relay.cut();
    match through.unwrap(&w, &ctx("acme")) {
        Err(ProviderError::Unavailable { reason, .. }) => {
            assert!(reason.contains("Decrypt"), "{reason}")
        }
        other => panic!("KMS gone gave {:?}", other.map(|k| k.id())),
    }
    assert!(matches!(
        through.generate(&ctx("acme")),
        Err(ProviderError::Unavailable { .. })
    ));
    // The wrapped key is intact: KMS directly still opens it.
    assert_eq!(
        k.open(&key)
            .unwrap(&w, &ctx("acme"))
            .unwrap()
            .expose_secret(),
        dek.expose_secret()
    );
}
