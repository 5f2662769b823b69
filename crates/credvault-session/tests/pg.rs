//! Sessions and leases kept in PostgreSQL (`Sessions::open_postgres`), against the server
//! `CREDVAULT_TEST_DATABASE_URL` names (`.ci/run` starts one; without it this test passes
//! vacuously on a developer machine and fails when `CI` is set): two nodes, each with its own
//! connection, share states and leases, and a lease edited in the database is refused.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use credvault_session::{
    BrowserState, LeaseKind, SessionConfig, SessionError, SessionKey, Sessions,
};
use credvault_store::{NewCredential, PostgresOptions, TenantId, Vault, VaultOptions};

fn server() -> Option<String> {
    match std::env::var("CREDVAULT_TEST_DATABASE_URL") {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var_os("CI").is_some() => {
            panic!("CREDVAULT_TEST_DATABASE_URL is not set but CI is: .ci/run starts the server")
        }
        _ => None,
    }
}

#[test]
fn two_nodes_share_states_and_leases_in_postgres() {
    let Some(url) = server() else { return };
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
    let options = PostgresOptions::default().schema(format!("sessions_t{}", std::process::id()));
    let node = || {
        Sessions::open_postgres(
            &url,
            &options,
            SessionKey::from_bytes(&[9; 32]),
            store.clone(),
        )
        .unwrap()
    };
    let (a, b) = (node(), node());
    assert!(a.in_postgres());
    a.configure(
        &scope,
        &id,
        &SessionConfig::default().max_concurrent(Some(1)),
    )
    .unwrap();
    // Settings, state and leases written through one node are seen through the other.
    assert_eq!(b.config(&scope, &id).unwrap().max_concurrent, Some(1));
    a.save(
        &scope,
        &id,
        "default",
        &BrowserState::parse(r#"{"cookies":[{"name":"sid","value":"pg-s3cr3t","domain":"p.example","path":"/"}],"origins":[]}"#).unwrap(),
    )
    .unwrap();
    let got = b.load(&scope, &id, "default").unwrap().unwrap();
    assert!(got.expose_json().contains("pg-s3cr3t"));
    let held = a
        .acquire(
            &scope,
            &id,
            LeaseKind::Login,
            Duration::from_secs(30),
            Duration::ZERO,
        )
        .unwrap();
    assert!(matches!(
        b.acquire(
            &scope,
            &id,
            LeaseKind::Run,
            Duration::from_secs(30),
            Duration::from_millis(100)
        ),
        Err(SessionError::WaitTimedOut { .. })
    ));
    held.release().unwrap();
    let run = b
        .acquire(
            &scope,
            &id,
            LeaseKind::Run,
            Duration::from_secs(30),
            Duration::ZERO,
        )
        .unwrap();
    // The limit of one run holds across nodes too.
    assert!(matches!(
        a.acquire(
            &scope,
            &id,
            LeaseKind::Run,
            Duration::from_secs(30),
            Duration::from_millis(100)
        ),
        Err(SessionError::WaitTimedOut { .. })
    ));
    let (lease, _) = run.keep();
    // A lease row edited in the database is refused.
    let mut c = credvault_store::postgres::connect_one(&url, &options).unwrap();
    c.execute("UPDATE leases SET kind = 'login'", &[]).unwrap();
    assert!(matches!(
        a.acquire(
            &scope,
            &id,
            LeaseKind::Run,
            Duration::from_secs(30),
            Duration::ZERO
        ),
        Err(SessionError::Integrity { record: "lease" })
    ));
    c.execute("DELETE FROM leases", &[]).unwrap();
    assert!(matches!(
        a.release_lease(&scope, &id, &lease),
        Err(SessionError::LeaseLost { .. })
    ));
    // Another session key reads nothing the records hold as valid.
    let other = Sessions::open_postgres(
        &url,
        &options,
        SessionKey::from_bytes(&[8; 32]),
        store.clone(),
    )
    .unwrap();
    assert!(matches!(
        other.load(&scope, &id, "default"),
        Err(SessionError::Integrity { .. })
    ));
    c.batch_execute(&format!(
        "DROP SCHEMA \"{}\" CASCADE",
        options.schema.clone().unwrap()
    ))
    .unwrap();
}

/// A node whose role has exactly the grants docs/postgres.md lists (no CREATE) opens the
/// tables the owner made, saves and loads states, and takes leases.
#[test]
fn a_node_with_the_documented_grants_uses_sessions_and_leases() {
    let Some(url) = server() else { return };
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
    let schema = format!("sgrants_t{}", std::process::id());
    let owner_opts = PostgresOptions::default().schema(schema.clone());
    let key = [5u8; 32];
    // The owner makes the tables (the first `credvault session` run as the owner).
    drop(
        Sessions::open_postgres(
            &url,
            &owner_opts,
            SessionKey::from_bytes(&key),
            store.clone(),
        )
        .unwrap(),
    );
    let role = format!("snode_{}", std::process::id());
    let mut admin = credvault_store::postgres::connect_one(&url, &owner_opts).unwrap();
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'node-pw';
             GRANT USAGE ON SCHEMA \"{schema}\" TO {role};
             GRANT SELECT, INSERT, UPDATE, DELETE ON session_config, session_state,
                 session_versions, leases, lease_waiters TO {role};
             GRANT USAGE ON SEQUENCE lease_waiters_seq_seq TO {role};"
        ))
        .unwrap();
    let config: credvault_store::postgres::client::Config = url.parse().unwrap();
    let host = match &config.get_hosts()[0] {
        credvault_store::postgres::client::config::Host::Tcp(h) => h.clone(),
        credvault_store::postgres::client::config::Host::Unix(p) => p.display().to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let node_url = format!(
        "postgres://{role}@{host}:{port}/{}?sslmode=disable",
        config.get_dbname().unwrap_or("postgres")
    );
    let node_opts = owner_opts
        .clone()
        .password(zeroize::Zeroizing::new("node-pw".to_owned()));
    let node = Sessions::open_postgres(
        &node_url,
        &node_opts,
        SessionKey::from_bytes(&key),
        store.clone(),
    )
    .unwrap();
    node.save(
        &scope,
        &id,
        "default",
        &BrowserState::parse(r#"{"cookies":[],"origins":[]}"#).unwrap(),
    )
    .unwrap();
    assert!(node.load(&scope, &id, "default").unwrap().is_some());
    node.acquire(
        &scope,
        &id,
        LeaseKind::Login,
        Duration::from_secs(5),
        Duration::ZERO,
    )
    .unwrap()
    .release()
    .unwrap();
    drop(node);
    admin
        .batch_execute(&format!(
            "DROP SCHEMA \"{schema}\" CASCADE; DROP ROLE {role};"
        ))
        .unwrap();
}
