//! The PostgreSQL server the tests use: the one `CREDVAULT_TEST_DATABASE_URL` names.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};

use credvault_store::audit::{read_events, verify_segments, VerifyOptions};
use credvault_store::{AuditKey, PostgresOptions, PostgresStorage};

/// The variable naming the test server (a URL without a password, `sslmode=disable` on
/// loopback).
pub const URL_ENV: &str = "CREDVAULT_TEST_DATABASE_URL";

/// The test server, or `None` on a developer machine without one. Panics when `CI` is set
/// and there is none: CI must not pass by skipping.
pub fn server() -> Option<Server> {
    match std::env::var(URL_ENV) {
        Ok(url) if !url.is_empty() => Some(Server { url }),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{URL_ENV} is not set but CI is: .ci/run starts PostgreSQL and sets it")
        }
        _ => {
            eprintln!("skipped: {URL_ENV} is not set (no PostgreSQL server to test against)");
            None
        }
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A PostgreSQL server.
pub struct Server {
    url: String,
}

impl Server {
    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A schema name no other test (or test process) uses.
    pub fn new_schema(&self) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        format!(
            "t{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst),
            nanos
        )
    }

    /// A storage in a schema of its own.
    pub fn storage(&self, opts: &PostgresOptions) -> PostgresStorage {
        PostgresStorage::open(&self.url, &opts.clone().schema(self.new_schema())).unwrap()
    }

    /// The audit chain of the vault in `schema`, as exported.
    pub fn export_chain(&self, schema: &str) -> Vec<u8> {
        let s = PostgresStorage::open(
            &self.url,
            &PostgresOptions::default().schema(schema.to_owned()),
        )
        .unwrap();
        let mut out = Vec::new();
        s.export_audit(&mut out).unwrap();
        out
    }

    /// The chain of the vault in `schema`, checked whole under `key` (panics otherwise): its
    /// events' action names, in order.
    pub fn verified_actions(&self, schema: &str, key: &AuditKey) -> Vec<String> {
        actions(&self.export_chain(schema), key)
    }

    /// A plain client (the admin's view: tampering, holding locks, counting rows).
    pub fn admin(&self) -> postgres::Client {
        let mut config: postgres::Config = self.url.parse().unwrap();
        if let Ok(pw) = std::env::var("PGPASSWORD") {
            config.password(pw);
        }
        config.connect(postgres::NoTls).unwrap()
    }
}

/// The events of an exported chain, by action name, after checking it whole under `key`.
pub fn actions(bytes: &[u8], key: &AuditKey) -> Vec<String> {
    let report = verify_segments(
        &[bytes],
        VerifyOptions {
            key: Some(key),
            anchor: None,
        },
    );
    assert!(report.is_intact(), "{report:?}");
    let events = read_events(&[bytes], &Default::default());
    assert_eq!(events.unreadable, 0);
    events
        .events
        .into_iter()
        .map(|e| e.event.action.to_string())
        .collect()
}
