//! The PostgreSQL server restarted in the middle of a workload (its own test binary: nothing
//! else runs against the server meanwhile). Writers see typed errors while it is down, then
//! carry on by themselves on new connections; every create that succeeded is there and
//! audited, and every one that failed is either wholly absent or wholly there (a commit
//! whose acknowledgement the restart cut off) with its record: nothing is half-written.
//!
//! The restart command is `CREDVAULT_TEST_PG_CTL` (`.ci/run` sets it to its cluster's
//! `pg_ctl -D DIR`); required when `CI` is set.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pg;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use credvault_store::audit::Action;
use credvault_store::{
    AuditKey, AuditTarget, LocalKeyring, LogConfig, NewCredential, PostgresOptions,
    PostgresStorage, Store, StoreError, TenantId,
};
use serde_json::json;

fn pg_ctl() -> Option<String> {
    match std::env::var("CREDVAULT_TEST_PG_CTL") {
        Ok(c) if !c.is_empty() => Some(c),
        _ if std::env::var_os("CI").is_some() => {
            panic!("CREDVAULT_TEST_PG_CTL is not set but CI is: .ci/run sets it")
        }
        _ => None,
    }
}

#[test]
fn a_server_restart_mid_workload_loses_nothing_and_half_writes_nothing() {
    let Some(server) = pg::server() else { return };
    let Some(ctl) = pg_ctl() else { return };
    let schema = server.new_schema();
    let key = || AuditKey::from_text(&"9e".repeat(32)).unwrap();
    let opts = PostgresOptions::default()
        .schema(schema.clone())
        .pool_size(2)
        .pool_timeout(Duration::from_millis(500));
    let storage = PostgresStorage::open(server.url(), &opts)
        .unwrap()
        .with_audit_chain(key(), &LogConfig::default())
        .unwrap();
    let store = Store::new(
        Arc::new(storage),
        Arc::new(LocalKeyring::generate().unwrap()),
        AuditTarget::Storage,
    );
    let t = TenantId::new("acme").unwrap();
    store.create_tenant(&t, "Acme", "admin").unwrap();

    // When the server (re)started: a restart must change it.
    let started = || -> String {
        server
            .admin()
            .query_one("SELECT pg_postmaster_start_time()::text", &[])
            .unwrap()
            .get(0)
    };
    let before = started();
    let restarted = AtomicBool::new(false);
    let (ok, failed, errors) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let scope = store.tenant(&t, "writer").unwrap();
            let (mut ok, mut failed, mut errors) = (Vec::new(), Vec::new(), Vec::new());
            let mut after_restart = 0;
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut i = 0u32;
            while after_restart < 50 && Instant::now() < deadline {
                let name = format!("c{i}");
                i += 1;
                match scope.create(NewCredential::new(
                    "http_bearer_token",
                    &name,
                    json!({"token": format!("v-{name}")}),
                )) {
                    Ok(_) => {
                        ok.push(name);
                        if restarted.load(Ordering::SeqCst) {
                            after_restart += 1;
                        }
                    }
                    Err(e) => {
                        failed.push(name);
                        errors.push(e);
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
            (ok, failed, errors)
        });
        std::thread::sleep(Duration::from_millis(500));
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("{ctl} restart -m fast -w"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl restart failed: {status}");
        restarted.store(true, Ordering::SeqCst);
        writer.join().unwrap()
    });
    eprintln!(
        "{} creates succeeded, {} failed during the restart",
        ok.len(),
        failed.len()
    );
    // The server really restarted while the writer ran (creates before it, and at least 50
    // after it, the loop's condition). Whether a create failed depends on where the restart
    // fell: between two creates, the pool may hand out a new connection and nothing fails.
    assert_ne!(started(), before, "the server did not restart");
    assert!(
        ok.len() >= 50,
        "the writer did not carry on after the restart"
    );
    for e in &errors {
        assert!(
            matches!(
                e,
                StoreError::Storage(_) | StoreError::Audit(_) | StoreError::Busy { .. }
            ),
            "an untyped failure: {e:?}"
        );
    }
    // Every success is there with its value; every failure is absent or whole.
    let scope = store.tenant(&t, "checker").unwrap();
    let mut present = 0;
    for name in ok.iter().chain(&failed) {
        match scope.find(name, "production") {
            Ok(info) => {
                let r = scope.reveal(&info.id, &["token"], None).unwrap();
                assert_eq!(r.expose_secret("token"), Some(format!("v-{name}").as_str()));
                present += 1;
            }
            Err(StoreError::NotFound { .. }) => assert!(!ok.contains(name), "{name} lost"),
            Err(e) => panic!("{name}: {e}"),
        }
    }
    // One `created` record per credential that is there, none for one that is not.
    let actions = server.verified_actions(&schema, &key());
    let created = actions
        .iter()
        .filter(|a| **a == Action::Created.to_string())
        .count();
    assert_eq!(created, present);
}
