//! API keys kept in PostgreSQL (`KeyStore::open_postgres`), against the server
//! `CREDVAULT_TEST_DATABASE_URL` names (`.ci/run` starts one; without it this test passes
//! vacuously on a developer machine and fails when `CI` is set): two stores on one database
//! see each other's keys, uses and revocations, and a record edited in the database is refused.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use credvault_gateway::{ApiScope, KeyError, KeyPolicy, KeyStore, ServerKey};
use credvault_store::{PostgresOptions, TenantId};

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
fn two_gateways_share_keys_in_postgres_and_an_edited_record_is_refused() {
    let Some(url) = server() else { return };
    let options = PostgresOptions::default().schema(format!("gwkeys_t{}", std::process::id()));
    let secret = [7u8; 32];
    let node = || KeyStore::open_postgres(&url, &options, ServerKey::from_bytes(&secret)).unwrap();
    let (a, b) = (node(), node());

    let made = a
        .create(
            KeyPolicy::new(TenantId::new("acme").unwrap(), [ApiScope::Read]).name("bot"),
            1_000,
        )
        .unwrap();
    let text = made.expose().to_owned();
    let id = made.info.id.clone();
    let seen = b.authenticate(&text, 2_000).unwrap();
    assert_eq!(
        (seen.id.as_str(), seen.policy.name.as_str()),
        (id.as_str(), "bot")
    );
    b.note_use(&seen, 2_000, "127.0.0.9").unwrap();
    let listed = a.list().unwrap();
    let mine = listed.iter().find(|k| k.id == id).unwrap();
    assert_eq!(
        (mine.last_used_at, mine.last_ip.as_deref()),
        (Some(2_000), Some("127.0.0.9"))
    );
    // The same table under another server key: nothing it holds is accepted.
    let other = KeyStore::open_postgres(&url, &options, ServerKey::from_bytes(&[8u8; 32])).unwrap();
    assert!(matches!(
        other.authenticate(&text, 2_000),
        Err(KeyError::Integrity { .. })
    ));

    // Whoever can write the table widens the key's scopes: the record no longer authenticates.
    let mut db = credvault_store::postgres::connect_one(&url, &options).unwrap();
    let body: String = db
        .query_one("SELECT body FROM gateway_api_keys WHERE id = $1", &[&id])
        .unwrap()
        .get(0);
    assert!(body.contains("\"read\""), "{body}");
    let widened = body.replace("\"read\"", "\"admin\"");
    db.execute(
        "UPDATE gateway_api_keys SET body = $2 WHERE id = $1",
        &[&id, &widened],
    )
    .unwrap();
    assert!(matches!(
        a.authenticate(&text, 3_000),
        Err(KeyError::Integrity { .. })
    ));
    db.execute(
        "UPDATE gateway_api_keys SET body = $2 WHERE id = $1",
        &[&id, &body],
    )
    .unwrap();
    // Revoked on one node, refused on the other; un-revoking in the database is refused too.
    b.revoke(&id, 4_000).unwrap();
    assert!(matches!(
        a.authenticate(&text, 5_000),
        Err(KeyError::Revoked { .. })
    ));
    db.execute(
        "UPDATE gateway_api_keys SET revoked_at = NULL WHERE id = $1",
        &[&id],
    )
    .unwrap();
    assert!(matches!(
        a.authenticate(&text, 5_000),
        Err(KeyError::Integrity { .. })
    ));
    db.batch_execute(&format!(
        "DROP SCHEMA \"{}\" CASCADE",
        options.schema.as_deref().unwrap()
    ))
    .unwrap();
}

#[test]
fn a_node_with_the_documented_grants_uses_keys_and_cannot_delete_them() {
    let Some(url) = server() else { return };
    let schema = format!("gwgrants_t{}", std::process::id());
    let owner_opts = PostgresOptions::default().schema(schema.clone());
    let secret = [9u8; 32];
    // The owner (the test's superuser) makes the table, as the first `credvault apikey` run.
    let owner = KeyStore::open_postgres(&url, &owner_opts, ServerKey::from_bytes(&secret)).unwrap();
    let made = owner
        .create(
            KeyPolicy::new(TenantId::new("acme").unwrap(), [ApiScope::Read]),
            1,
        )
        .unwrap();
    let role = format!("gwnode_{}", std::process::id());
    let mut admin = credvault_store::postgres::connect_one(&url, &owner_opts).unwrap();
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'node-pw';
             GRANT USAGE ON SCHEMA \"{schema}\" TO {role};
             GRANT SELECT, INSERT, UPDATE ON gateway_api_keys TO {role};"
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
    let node =
        KeyStore::open_postgres(&node_url, &node_opts, ServerKey::from_bytes(&secret)).unwrap();
    let seen = node.authenticate(made.expose(), 2).unwrap();
    node.note_use(&seen, 2, "127.0.0.1").unwrap();
    let second = node
        .create(
            KeyPolicy::new(TenantId::new("acme").unwrap(), [ApiScope::Read]),
            3,
        )
        .unwrap();
    node.revoke(&second.info.id, 4).unwrap();
    assert_eq!(owner.list().unwrap().len(), 2);
    let mut as_node = credvault_store::postgres::connect_one(&node_url, &node_opts).unwrap();
    let err = as_node
        .batch_execute("DELETE FROM gateway_api_keys")
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&credvault_store::postgres::client::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );
    drop((node, as_node));
    let _ = admin.batch_execute(&format!(
        "DROP SCHEMA \"{schema}\" CASCADE; DROP OWNED BY {role}; DROP ROLE {role};"
    ));
}
