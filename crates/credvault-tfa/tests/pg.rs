//! Routes and codes kept in PostgreSQL (`Tfa::open_postgres`), against the server
//! `CREDVAULT_TEST_DATABASE_URL` names (`.ci/run` starts one; without it this test passes
//! vacuously on a developer machine and fails when `CI` is set): a code received by one node
//! is handed out once by another, and a code record edited in the database is refused.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use credvault_session::SessionKey;
use credvault_store::{NewCredential, PostgresOptions, TenantId, Vault, VaultOptions};
use credvault_tfa::{Outcome, Rules, Tfa, TfaError};

#[test]
fn a_code_received_by_one_node_is_handed_out_once_by_another() {
    let url = match std::env::var("CREDVAULT_TEST_DATABASE_URL") {
        Ok(v) if !v.is_empty() => v,
        _ if std::env::var_os("CI").is_some() => {
            panic!("CREDVAULT_TEST_DATABASE_URL is not set but CI is: .ci/run starts the server")
        }
        _ => return,
    };
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::open_or_init(dir.path(), VaultOptions::default()).unwrap();
    let store = vault.store().clone();
    let acme = TenantId::new("acme").unwrap();
    store.create_tenant(&acme, "Acme", "admin").unwrap();
    let scope = store.tenant(&acme, "robot").unwrap();
    let id = scope
        .create(NewCredential::new(
            "website_login",
            "portal",
            serde_json::json!({"login_url": "https://p.example", "username": "u", "password": "p"}),
        ))
        .unwrap()
        .id;
    let options = PostgresOptions::default().schema(format!("tfa_t{}", std::process::id()));
    let node = || {
        Tfa::open_postgres(
            &url,
            &options,
            SessionKey::from_bytes(&[3; 32]),
            store.clone(),
        )
        .unwrap()
        .poll_interval(Duration::from_millis(10))
    };
    let (a, b) = (node(), node());
    assert!(a.in_postgres());
    let address = a.address(&scope, &id, "mail.example.net").unwrap();
    assert_eq!(b.address(&scope, &id, "mail.example.net").unwrap(), address);
    a.set_rules(&scope, &id, &Rules::default().phone("+15550001111"))
        .unwrap();
    assert_eq!(
        b.rules(&scope, &id).unwrap().phone.as_deref(),
        Some("+15550001111")
    );
    assert!(matches!(
        a.receive_sms(
            Some(&acme),
            "+15550001111",
            "+18005550100",
            "Your code is 771204"
        )
        .unwrap(),
        Outcome::Stored { .. }
    ));
    assert_eq!(
        b.wait_for_code(&scope, &id, 0, Duration::from_secs(2))
            .unwrap()
            .expose_secret(),
        "771204"
    );
    assert!(matches!(
        a.wait_for_code(&scope, &id, 0, Duration::ZERO),
        Err(TfaError::Timeout { .. })
    ));
    // A code moved to another tenant's credential name in the database does not authenticate.
    a.receive_sms(
        Some(&acme),
        "+15550001111",
        "+18005550100",
        "Your code is 881305",
    )
    .unwrap();
    let mut c = credvault_store::postgres::connect_one(&url, &options).unwrap();
    c.execute("UPDATE tfa_codes SET received_at = received_at + 1", &[])
        .unwrap();
    assert!(matches!(
        b.wait_for_code(&scope, &id, 0, Duration::ZERO),
        Err(TfaError::Integrity { record: "code" })
    ));
    c.batch_execute(&format!(
        "DROP SCHEMA \"{}\" CASCADE",
        options.schema.clone().unwrap()
    ))
    .unwrap();
}
