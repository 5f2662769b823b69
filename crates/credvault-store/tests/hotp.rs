//! HOTP credentials (RFC 4226): codes follow a durable counter kept in the database, taken
//! atomically per code and never derived from the time; verification looks ahead and moves
//! the counter past what it matched. Expected codes are RFC 4226 Appendix D's
//! (`tests/data/rfc4226_hotp.json`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;

use credvault_store::audit::MemorySink;
use credvault_store::schema::Registry;
use credvault_store::{
    AuditTarget, CredentialId, CredentialUpdate, LocalKeyring, ManualClock, MemoryStorage,
    NewCredential, Store, StoreConfig, StoreError, TenantId, Vault, VaultOptions, HOTP_LOOK_AHEAD,
};
use serde_json::{json, Value};

const RFC: &str = include_str!("data/rfc4226_hotp.json");

fn rfc() -> (String, Vec<String>) {
    let v: Value = serde_json::from_str(RFC).unwrap();
    let codes = v["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["hotp"].as_str().unwrap().to_owned())
        .collect();
    (v["secret_base32"].as_str().unwrap().to_owned(), codes)
}

fn registry() -> Registry {
    let mut r = Registry::with_builtins();
    // A type holding an otpauth URI, as an authenticator app exports it.
    r.add_json(
        r#"{"name": "otp_uri", "display_name": "OTP URI", "category": "other",
            "fields": [{"key": "totp_uri", "label": "URI", "kind": "password", "required": true}]}"#,
    )
    .unwrap();
    r
}

fn store() -> (Store, Arc<ManualClock>, TenantId) {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let store = Store::new(
        Arc::new(MemoryStorage::new()),
        Arc::new(LocalKeyring::generate().unwrap()),
        AuditTarget::Sink(Arc::new(MemorySink::new())),
    )
    .with_config(StoreConfig::default().clock(clock.clone()))
    .with_registry(Arc::new(registry()));
    let t = TenantId::new("acme").unwrap();
    store.create_tenant(&t, "Acme", "admin").unwrap();
    (store, clock, t)
}

fn hotp_key(seed: &str, first: u64) -> NewCredential {
    NewCredential::new(
        "hotp_key",
        "vpn",
        json!({"secret": seed, "hotp_counter": first}),
    )
}

#[test]
fn codes_follow_the_counter_not_the_clock() {
    let (seed, codes) = rfc();
    let (store, clock, t) = store();
    let s = store.tenant(&t, "bot").unwrap();
    let id = s.create(hotp_key(&seed, 0)).unwrap().id;
    let mut got = Vec::new();
    for i in 0..codes.len() {
        let c = s.totp_code(&id, None).unwrap();
        assert_eq!(c.step, i as u64);
        assert_eq!(
            c.expires_at,
            i64::MAX,
            "a HOTP code does not expire by time"
        );
        got.push(c.expose_secret().to_owned());
        // Time moves (or stands still): the counter alone decides.
        if i % 2 == 0 {
            clock.advance(86_400_000);
        }
    }
    assert_eq!(got, codes);
}

#[test]
fn the_first_counter_comes_from_the_field_or_the_uri() {
    let (seed, codes) = rfc();
    let (store, _clock, t) = store();
    let s = store.tenant(&t, "bot").unwrap();
    let id = s.create(hotp_key(&seed, 5)).unwrap().id;
    assert_eq!(s.totp_code(&id, None).unwrap().expose_secret(), codes[5]);
    assert_eq!(s.totp_code(&id, None).unwrap().expose_secret(), codes[6]);
    let uri = format!("otpauth://hotp/Corp:bot?secret={seed}&counter=8&issuer=Corp");
    let id = s
        .create(NewCredential::new(
            "otp_uri",
            "corp",
            json!({ "totp_uri": uri }),
        ))
        .unwrap()
        .id;
    assert_eq!(s.totp_code(&id, None).unwrap().expose_secret(), codes[8]);
    assert_eq!(s.totp_code(&id, None).unwrap().expose_secret(), codes[9]);
}

#[test]
fn verification_looks_ahead_and_never_goes_back() {
    let (seed, codes) = rfc();
    let (store, _clock, t) = store();
    let s = store.tenant(&t, "svc").unwrap();
    let id = s.create(hotp_key(&seed, 0)).unwrap().id;
    // The holder generated codes 0 and 1 without submitting them; code 2 resynchronises.
    assert_eq!(s.verify_totp(&id, &codes[2]).unwrap(), 2);
    // Every code at or below the matched counter is refused from now on.
    for c in &codes[..3] {
        assert!(
            matches!(s.verify_totp(&id, c), Err(StoreError::Totp { .. })),
            "code {c} accepted again"
        );
    }
    assert_eq!(s.verify_totp(&id, &codes[3]).unwrap(), 3);
    // And the vault's own next code is past them too.
    assert_eq!(s.totp_code(&id, None).unwrap().step, 4);
}

#[test]
fn a_code_past_the_look_ahead_window_is_refused() {
    let (seed, _codes) = rfc();
    let (store, _clock, t) = store();
    let s = store.tenant(&t, "svc").unwrap();
    // The code for counter LOOK_AHEAD + 1, from a second credential with the same key.
    let far = s
        .create(hotp_key(&seed, u64::from(HOTP_LOOK_AHEAD) + 1).environment("other"))
        .unwrap()
        .id;
    let code = s.totp_code(&far, None).unwrap().expose_secret().to_owned();
    let id = s.create(hotp_key(&seed, 0)).unwrap().id;
    assert!(matches!(
        s.verify_totp(&id, &code),
        Err(StoreError::Totp { .. })
    ));
}

#[test]
fn a_new_key_starts_from_its_own_counter_and_metadata_changes_keep_it() {
    let (seed, codes) = rfc();
    let (store, _clock, t) = store();
    let s = store.tenant(&t, "bot").unwrap();
    let id = s.create(hotp_key(&seed, 0)).unwrap().id;
    for _ in 0..3 {
        s.totp_code(&id, None).unwrap();
    }
    s.update(&id, CredentialUpdate::new().description("the VPN token"))
        .unwrap();
    assert_eq!(s.totp_code(&id, None).unwrap().step, 3);
    // The token is re-enrolled with another key, used once, then with the RFC's key again:
    // each new key starts at its first counter. (Setting the same key again changes nothing,
    // counter included.)
    s.update(&id, CredentialUpdate::new().fields(json!({"secret": seed})))
        .unwrap();
    assert_eq!(s.totp_code(&id, None).unwrap().step, 4);
    s.update(
        &id,
        CredentialUpdate::new().fields(json!({"secret": "JBSWY3DPEHPK3PXP"})),
    )
    .unwrap();
    assert_eq!(s.totp_code(&id, None).unwrap().step, 0);
    s.update(&id, CredentialUpdate::new().fields(json!({"secret": seed})))
        .unwrap();
    assert_eq!(s.totp_code(&id, None).unwrap().expose_secret(), codes[0]);
    // Moving the first counter (resynchronising by hand) starts from it.
    s.update(
        &id,
        CredentialUpdate::new().fields(json!({"hotp_counter": 7})),
    )
    .unwrap();
    assert_eq!(s.totp_code(&id, None).unwrap().expose_secret(), codes[7]);
}

#[test]
fn the_counter_is_shared_by_vault_handles_and_threads() {
    let (seed, _codes) = rfc();
    let dir = tempfile::tempdir().unwrap();
    let v = Vault::init(dir.path(), VaultOptions::default()).unwrap();
    let t = TenantId::new("acme").unwrap();
    v.store().create_tenant(&t, "A", "admin").unwrap();
    let id: CredentialId = v
        .store()
        .tenant(&t, "admin")
        .unwrap()
        .create(hotp_key(&seed, 0))
        .unwrap()
        .id;
    let first = v
        .store()
        .tenant(&t, "a")
        .unwrap()
        .totp_code(&id, None)
        .unwrap();
    assert_eq!(first.step, 0);
    v.close().unwrap();
    // Two handles on the directory (as two processes would have), four threads each.
    let handles: Vec<Vault> = (0..2)
        .map(|_| Vault::open(dir.path(), VaultOptions::default()).unwrap())
        .collect();
    let steps = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|sc| {
        for v in &handles {
            for _ in 0..4 {
                let (store, t, id, steps) = (v.store().clone(), &t, &id, &steps);
                sc.spawn(move || {
                    let s = store.tenant(t, "worker").unwrap();
                    for _ in 0..10 {
                        let c = s.totp_code(id, None).unwrap();
                        steps.lock().unwrap().push(c.step);
                    }
                });
            }
        }
    });
    let steps = steps.into_inner().unwrap();
    let distinct: BTreeSet<u64> = steps.iter().copied().collect();
    assert_eq!(steps.len(), 80);
    assert_eq!(distinct, (1..=80).collect::<BTreeSet<u64>>());
    for v in handles {
        v.close().unwrap();
    }
}

/// RFC 6238 appendix B, SHA-256, T = 59 s: 8 digits `46119246` (the RFC's own table).
#[test]
fn a_totp_key_s_algorithm_digits_and_period_fields_are_used() {
    let (store, clock, t) = store();
    clock.set(59_000);
    let s = store.tenant(&t, "tester").unwrap();
    let id = s
        .create(NewCredential::new(
            "totp_key",
            "rfc6238-sha256",
            json!({
                "totp_secret": "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZA====",
                "algorithm": "SHA256",
                "digits": 8,
                "period": 30,
            }),
        ))
        .unwrap()
        .id;
    let code = s.totp_code(&id, None).unwrap();
    assert_eq!(code.expose_secret(), "46119246");
    // Accepted once, then refused as a replay.
    s.verify_totp(&id, "46119246").unwrap();
    assert!(matches!(
        s.verify_totp(&id, "46119246"),
        Err(StoreError::Totp { .. })
    ));
    // The key never comes back.
    assert!(s.reveal(&id, &["totp_secret"], None).is_err());
}
