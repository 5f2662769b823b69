//! Reveal policies: `revealable`, `use-only` (reaches a process, never `reveal`),
//! `write-only` (never leaves the vault; an authenticator key's codes do).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use credvault_store::audit::{Action, DenyReason, Details, MemorySink};
use credvault_store::schema::Registry;
use credvault_store::{
    AuditTarget, LocalKeyring, MemoryStorage, NewCredential, Store, StoreError, TenantId,
};
use serde_json::json;

const SEED: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

fn store() -> (Store, Arc<MemorySink>, TenantId) {
    let mut r = Registry::with_builtins();
    r.add_json(
        r#"{"name": "deploy_key", "display_name": "Deploy key", "category": "api",
            "fields": [
              {"key": "user", "label": "User", "kind": "string"},
              {"key": "token", "label": "Token", "kind": "password", "required": true, "reveal": "use-only"},
              {"key": "note", "label": "Note", "kind": "password", "reveal": "revealable"}
            ]}"#,
    )
    .unwrap();
    let audit = Arc::new(MemorySink::new());
    let store = Store::new(
        Arc::new(MemoryStorage::new()),
        Arc::new(LocalKeyring::generate().unwrap()),
        AuditTarget::Sink(audit.clone()),
    )
    .with_registry(Arc::new(r));
    let t = TenantId::new("acme").unwrap();
    store.create_tenant(&t, "Acme", "admin").unwrap();
    (store, audit, t)
}

fn refused(r: Result<impl std::fmt::Debug, StoreError>, field: &str, word: &str) {
    match r {
        Err(StoreError::Field { field: f, reason }) => {
            assert_eq!(f, field);
            assert!(reason.contains(word), "{reason}");
        }
        other => panic!("expected a refusal of {field}: {other:?}"),
    }
}

#[test]
fn an_authenticator_key_is_write_only_by_default_only_codes_come_out() {
    let (store, audit, t) = store();
    let s = store.tenant(&t, "alice").unwrap();
    let id = s
        .create(NewCredential::new(
            "website_login",
            "site",
            json!({"login_url": "https://x.example/", "username": "u", "password": "pw", "totp_secret": SEED}),
        ))
        .unwrap()
        .id;
    refused(
        s.reveal(&id, &["totp_secret"], None),
        "totp_secret",
        "write-only",
    );
    let last = audit.events().pop().unwrap();
    assert_eq!(last.action, Action::AccessDenied);
    assert!(matches!(
        last.details,
        Some(Details::AccessDenied {
            reason: DenyReason::Forbidden
        })
    ));
    // Not through the process path either.
    refused(
        s.reveal_many(&[(id.clone(), vec!["totp_secret".into()])], None),
        "totp_secret",
        "write-only",
    );
    // "Every secret field" leaves it out; the code is there.
    let all = s.reveal(&id, &[], None).unwrap();
    assert_eq!(all.expose_secret("password"), Some("pw"));
    assert_eq!(all.expose_secret("totp_secret"), None);
    let used = s.reveal_many(&[(id.clone(), vec![])], None).unwrap();
    assert_eq!(used[0].expose_secret("totp_secret"), None);
    let code = s.totp_code(&id, None).unwrap();
    assert_eq!(code.expose_secret().len(), 6);
}

#[test]
fn a_use_only_field_reaches_a_process_but_never_reveal() {
    let (store, _audit, t) = store();
    let s = store.tenant(&t, "alice").unwrap();
    let id = s
        .create(NewCredential::new(
            "deploy_key",
            "ci",
            json!({"user": "bot", "token": "tok-123456", "note": "n-1"}),
        ))
        .unwrap()
        .id;
    refused(s.reveal(&id, &["token"], None), "token", "use-only");
    assert_eq!(
        s.reveal(&id, &["note", "user"], None)
            .unwrap()
            .expose_secret("note"),
        Some("n-1")
    );
    let shown = s.reveal(&id, &[], None).unwrap();
    assert_eq!(shown.expose_secret("token"), None);
    assert_eq!(shown.expose_secret("note"), Some("n-1"));
    let used = s
        .reveal_many(&[(id.clone(), vec!["token".into()])], Some("run"))
        .unwrap();
    assert_eq!(used[0].expose_secret("token"), Some("tok-123456"));
}

#[test]
fn an_unknown_policy_name_is_a_definition_error() {
    let mut r = Registry::with_builtins();
    let e = r.add_json(
        r#"{"name": "bad", "display_name": "Bad", "category": "api",
            "fields": [{"key": "k", "label": "K", "kind": "password", "reveal": "sometimes"}]}"#,
    );
    assert!(e.is_err());
}
