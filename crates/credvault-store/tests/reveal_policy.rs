//! Reveal policies: `revealable`, `use-only` (reaches a process, never `reveal`),
//! `write-only` (never leaves the vault; an authenticator key's codes do).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use credvault_store::audit::{Action, DenyReason, Details, MemorySink};
use credvault_store::schema::{Registry, RevealPolicy};
use credvault_store::{
    AuditTarget, CredentialUpdate, LocalKeyring, MemoryStorage, NewCredential, Store, StoreError,
    TenantId,
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

#[test]
fn a_credential_tightens_its_types_policy_and_never_loosens_it() {
    let (store, audit, t) = store();
    let s = store.tenant(&t, "alice").unwrap();
    // `note` is revealable by its type; this credential makes it use-only.
    let id = s
        .create(
            NewCredential::new(
                "deploy_key",
                "ci",
                json!({"user": "bot", "token": "tok-123456", "note": "n-1"}),
            )
            .reveal("note", RevealPolicy::UseOnly),
        )
        .unwrap()
        .id;
    let info = s.get(&id).unwrap();
    assert_eq!(info.reveal.get("note"), Some(&RevealPolicy::UseOnly));
    refused(s.reveal(&id, &["note"], None), "note", "use-only");
    // None named: neither use-only field comes back from reveal.
    let shown = s.reveal(&id, &[], None).unwrap();
    assert_eq!(shown.expose_secret("note"), None);
    assert_eq!(shown.expose_secret("token"), None);
    let used = s
        .reveal_many(&[(id.clone(), vec!["note".into()])], Some("run"))
        .unwrap();
    assert_eq!(used[0].expose_secret("note"), Some("n-1"));

    // Loosening: refused, below this credential's policy or below the type's.
    refused(
        s.update(
            &id,
            CredentialUpdate::new().reveal("note", RevealPolicy::Revealable),
        ),
        "note",
        "never loosened",
    );
    refused(
        s.update(
            &id,
            CredentialUpdate::new().reveal("token", RevealPolicy::Revealable),
        ),
        "token",
        "by its type",
    );
    // Only secret fields have a policy.
    refused(
        s.update(
            &id,
            CredentialUpdate::new().reveal("user", RevealPolicy::WriteOnly),
        ),
        "user",
        "not a secret field",
    );
    refused(
        s.update(
            &id,
            CredentialUpdate::new().reveal("nope", RevealPolicy::WriteOnly),
        ),
        "nope",
        "not a secret field",
    );
    assert_eq!(
        s.get(&id).unwrap().version,
        1,
        "a refused update changed the row"
    );

    // Tightening further: write-only, audited as a change, and then not even a process gets
    // it.
    let before = audit.events().len();
    let info = s
        .update(
            &id,
            CredentialUpdate::new().reveal("note", RevealPolicy::WriteOnly),
        )
        .unwrap();
    assert_eq!(info.version, 2);
    assert_eq!(info.reveal.get("note"), Some(&RevealPolicy::WriteOnly));
    let events = audit.events();
    let change = events[before..]
        .iter()
        .find_map(|e| match &e.details {
            Some(Details::Updated { changes }) => Some(changes.clone()),
            _ => None,
        })
        .expect("an updated event");
    assert_eq!(change.len(), 1);
    assert_eq!(change[0].field(), "reveal.note");
    assert_eq!(change[0].old(), Some("use-only"));
    assert_eq!(change[0].new_value(), Some("write-only"));
    refused(
        s.reveal_many(&[(id.clone(), vec!["note".into()])], Some("run")),
        "note",
        "write-only",
    );
    // The token, use-only by its type, still reaches a process; asking again for the policy a
    // field already has changes nothing.
    let info = s
        .update(
            &id,
            CredentialUpdate::new().reveal("token", RevealPolicy::UseOnly),
        )
        .unwrap();
    assert_eq!(info.version, 2);
    assert!(!info.reveal.contains_key("token"));
    let used = s
        .reveal_many(&[(id.clone(), vec!["token".into()])], Some("run"))
        .unwrap();
    assert_eq!(used[0].expose_secret("token"), Some("tok-123456"));
}

#[test]
fn a_policy_looser_than_the_type_is_refused_at_create() {
    let (store, _audit, t) = store();
    let s = store.tenant(&t, "alice").unwrap();
    // An authenticator key is write-only by its type: it cannot be made revealable.
    refused(
        s.create(
            NewCredential::new(
                "website_login",
                "site",
                json!({"login_url": "https://x.example/", "username": "u", "password": "pw", "totp_secret": SEED}),
            )
            .reveal("totp_secret", RevealPolicy::Revealable),
        ),
        "totp_secret",
        "by its type",
    );
    assert!(s
        .list(&credvault_store::ListFilter::new())
        .unwrap()
        .is_empty());
}

#[test]
fn a_tightened_policy_survives_a_key_rotation() {
    let (store, _audit, t) = store();
    let s = store.tenant(&t, "alice").unwrap();
    let id = s
        .create(
            NewCredential::new(
                "deploy_key",
                "ci",
                json!({"user": "bot", "token": "tok-123456", "note": "n-1"}),
            )
            .reveal("note", RevealPolicy::WriteOnly),
        )
        .unwrap()
        .id;
    let before = s.get(&id).unwrap().key_id;
    let r = s.rotate_key(&mut |_| {}).unwrap();
    assert!(r.is_finished(), "{r:?}");
    let info = s.get(&id).unwrap();
    assert_ne!(info.key_id, before, "the row was not re-sealed");
    assert_eq!(info.reveal.get("note"), Some(&RevealPolicy::WriteOnly));
    refused(s.reveal(&id, &["note"], None), "note", "write-only");
    assert_eq!(
        s.reveal_many(&[(id.clone(), vec!["token".into()])], Some("run"))
            .unwrap()[0]
            .expose_secret("token"),
        Some("tok-123456")
    );
}

/// The proxy's call: the type's `authenticate` rule rendered for an outbound request.
fn proxy_store() -> (Store, Arc<MemorySink>, TenantId) {
    let mut r = Registry::with_builtins();
    r.add_json(
        r#"{"name": "signed_api", "display_name": "Signed API", "category": "api",
            "fields": [
              {"key": "base_url", "label": "Base URL", "kind": "string", "format": "url"},
              {"key": "token", "label": "Token", "kind": "password", "required": true, "reveal": "use-only"},
              {"key": "seed", "label": "Seed", "kind": "password", "reveal": "write-only"}
            ],
            "authenticate": {"headers": {"Authorization": "Token {{token}}", "X-Seed": "{{seed}}"}}}"#,
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

#[test]
fn a_use_only_token_reaches_an_outbound_request_and_the_access_is_recorded_first() {
    let (store, audit, t) = proxy_store();
    let s = store.tenant(&t, "gateway").unwrap();
    let token = "tok-0123456789abcdef";
    let id = s
        .create(NewCredential::new(
            "signed_api",
            "api",
            json!({"base_url": "https://api.example.com/v2", "token": token}),
        ))
        .unwrap()
        .id;
    // `reveal` refuses the use-only token; the request gets it.
    refused(s.reveal(&id, &["token"], None), "token", "use-only");
    let ra = s.authenticate_request(&id, Some("proxy")).unwrap();
    assert_eq!(ra.base_url.as_deref(), Some("https://api.example.com/v2"));
    assert_eq!(ra.type_name, "signed_api");
    let headers: Vec<(String, String)> = ra
        .auth
        .headers
        .iter()
        .map(|(k, v)| (k.expose_secret().to_owned(), v.expose_secret().to_owned()))
        .collect();
    assert!(headers.contains(&("Authorization".into(), format!("Token {token}"))));
    assert!(ra.secrets().any(|s| s == token));
    assert!(!format!("{ra:?}").contains(token), "Debug shows no value");
    let last = audit.events().pop().unwrap();
    assert_eq!(last.action, Action::Accessed);
    assert_eq!(
        last.details,
        Some(Details::Accessed {
            service: Some("proxy".into()),
            fields: vec!["token".into()]
        })
    );
}

#[test]
fn a_rule_that_would_carry_a_write_only_field_is_refused_and_recorded() {
    let (store, audit, t) = proxy_store();
    let s = store.tenant(&t, "gateway").unwrap();
    let id = s
        .create(NewCredential::new(
            "signed_api",
            "api",
            json!({"token": "tok-0123456789abcdef", "seed": "seed-0123456789abcdef"}),
        ))
        .unwrap()
        .id;
    match s.authenticate_request(&id, Some("proxy")) {
        Err(StoreError::AccessDenied {
            reason: DenyReason::Forbidden,
        }) => {}
        other => panic!("expected a refusal: {other:?}"),
    }
    assert_eq!(audit.events().pop().unwrap().action, Action::AccessDenied);
    // A type without an `authenticate` rule has nothing to inject.
    let plain = s
        .create(NewCredential::new(
            "kv_secret",
            "kv",
            json!({"data": "{\"a\": \"b\"}"}),
        ))
        .unwrap()
        .id;
    assert!(matches!(
        s.authenticate_request(&plain, None),
        Err(StoreError::Unsupported(_))
    ));
    // An inactive credential is refused as for a reveal.
    s.update(&id, CredentialUpdate::new().active(false))
        .unwrap();
    assert!(matches!(
        s.authenticate_request(&id, None),
        Err(StoreError::AccessDenied { .. })
    ));
}
