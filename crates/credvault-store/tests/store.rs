//! The store's behaviour on both backends: CRUD, reveal, access checks, isolation, fail-closed
//! audit, client-sealed create, usage counters, rotation, TOTP and testing.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The HTTP tester's tests (and their helpers) need the `http-tester` feature.
#![cfg_attr(not(feature = "http-tester"), allow(unused))]

use std::net::TcpListener;
use std::sync::Arc;

use credvault_audit::{Action, AuditEvent, Details, MemorySink, Outcome, TestStatus};
use credvault_envelope::{EnvelopeHeader, LocalKeyring, SealingKey};
use credvault_schema::{Registry, SECRET_MARKER};
use credvault_store::storage::KeyState;
use credvault_store::{
    credential_context, encode_secret_fields, AuditTarget, CacheConfig, CredentialId,
    CredentialUpdate, ListFilter, ManualClock, MemoryStorage, NewCredential, OtpThrottle,
    SealRejection, SealedCredential, SqliteStorage, Storage, Store, StoreConfig, StoreError,
    TenantId, TesterRegistry,
};
use serde_json::json;

const T0: i64 = 1_790_000_000_000;

struct Fixture {
    store: Store,
    storage: Arc<dyn Storage>,
    audit: Arc<MemorySink>,
    clock: Arc<ManualClock>,
    a: TenantId,
    b: TenantId,
}

fn fixture_with(
    storage: Arc<dyn Storage>,
    cfg: impl FnOnce(StoreConfig) -> StoreConfig,
) -> Fixture {
    let audit = Arc::new(MemorySink::new());
    let clock = Arc::new(ManualClock::new(T0));
    let store = Store::new(
        Arc::clone(&storage),
        Arc::new(LocalKeyring::generate().unwrap()),
        AuditTarget::Sink(audit.clone()),
    )
    .with_config(cfg(StoreConfig::default().clock(clock.clone())));
    let (a, b) = (
        TenantId::new("acme").unwrap(),
        TenantId::new("globex").unwrap(),
    );
    store.create_tenant(&a, "Acme", "admin").unwrap();
    store.create_tenant(&b, "Globex", "admin").unwrap();
    Fixture {
        store,
        storage,
        audit,
        clock,
        a,
        b,
    }
}

fn backends() -> Vec<(&'static str, Arc<dyn Storage>)> {
    vec![
        ("memory", Arc::new(MemoryStorage::new())),
        ("sqlite", Arc::new(SqliteStorage::open_in_memory().unwrap())),
    ]
}

fn login(name: &str, password: &str) -> NewCredential {
    NewCredential::new(
        "website_login",
        name,
        json!({
            "login_url": "https://app.example.com/login",
            "username": "ops@example.com",
            "password": password,
            "totp_secret": "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ",
        }),
    )
}

fn actions(audit: &MemorySink) -> Vec<String> {
    audit
        .events()
        .iter()
        .map(|e| e.action.as_str().to_owned())
        .collect()
}

fn all_text(events: &[AuditEvent]) -> String {
    events.iter().map(|e| format!("{e:?}")).collect()
}

#[test]
fn create_get_reveal_update_delete() {
    for (name, storage) in backends() {
        let f = fixture_with(storage, |c| c);
        let s = f.store.tenant(&f.a, "alice").unwrap();
        let info = s
            .create(
                login("bank", "correct horse battery")
                    .tags(["finance"])
                    .description("main"),
            )
            .unwrap();
        assert_eq!(info.version, 1, "{name}");
        assert_eq!(info.environment, "production");
        assert_eq!(info.created_by, "alice");
        assert_eq!(info.fields["password"], SECRET_MARKER);
        assert_eq!(info.fields["username"], "ops@example.com");
        let id = info.id.clone();
        assert_eq!(s.get(&id).unwrap(), info);
        assert_eq!(s.find("bank", "production").unwrap().id, info.id);

        // Reveal returns only what was asked for.
        let r = s.reveal(&id, &["password"], Some("robot")).unwrap();
        assert_eq!(r.expose_secret("password"), Some("correct horse battery"));
        assert_eq!(r.expose_secret("totp_secret"), None);
        assert_eq!(r.len(), 1);
        assert!(!format!("{r:?}").contains("horse"));
        let last = f.audit.events().pop().unwrap();
        assert_eq!(last.action, Action::Accessed);
        assert_eq!(
            last.details,
            Some(Details::Accessed {
                service: Some("robot".into()),
                fields: vec!["password".into()]
            })
        );
        // A non-secret field may be asked for too; an unknown one is an error.
        let r = s.reveal(&id, &["username", "password"], None).unwrap();
        assert_eq!(r.expose_secret("username"), Some("ops@example.com"));
        assert!(matches!(
            s.reveal(&id, &["nope"], None),
            Err(StoreError::Field { .. })
        ));
        assert!(
            matches!(s.reveal(&id, &["notes"], None), Err(StoreError::Field { reason, .. }) if reason == "is not set")
        );

        // Update: partial, re-sealed, changes recorded without values for secrets.
        let upd = s
            .update(
                &id,
                CredentialUpdate::new()
                    .fields(json!({"password": "new pass 2", "username": "root@example.com"}))
                    .description("rotated"),
            )
            .unwrap();
        assert_eq!(upd.version, 2);
        assert_eq!(upd.description, "rotated");
        assert_eq!(
            s.reveal(&id, &["password"], None)
                .unwrap()
                .expose_secret("password"),
            Some("new pass 2")
        );
        // Fields not in the patch are kept: the (write-only) authenticator key still gives the
        // codes of the key stored at creation.
        let code = s.totp_code(&id, None).unwrap();
        let seed =
            credvault_store::totp::TotpSecret::parse("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap();
        let otp =
            credvault_store::totp::Otp::totp(seed, credvault_store::totp::Algorithm::Sha1, 6, 30)
                .unwrap();
        assert_eq!(
            code.expose_secret(),
            otp.code_at(code.step * 30).to_string(),
            "fields not in the patch are kept"
        );
        let ev = f.audit.events();
        let updated = ev.iter().find(|e| e.action == Action::Updated).unwrap();
        let Some(Details::Updated { changes }) = &updated.details else {
            panic!()
        };
        let names: Vec<_> = changes.iter().map(|c| (c.field(), c.is_secret())).collect();
        assert_eq!(
            names,
            [
                ("username", false),
                ("password", true),
                ("description", false)
            ]
        );
        assert_eq!(changes[0].new_value(), Some("\"root@example.com\""));
        // No plaintext anywhere in the audit trail.
        let text = all_text(&ev);
        for secret in ["correct horse", "new pass 2", "GEZDGNBV"] {
            assert!(!text.contains(secret), "{name}: {secret} leaked into audit");
        }

        // Optimistic concurrency.
        let err = s
            .update(
                &id,
                CredentialUpdate::new().description("x").expect_version(1),
            )
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::VersionConflict {
                    expected: 1,
                    found: 2
                }
            ),
            "{err}"
        );
        // An empty update changes nothing.
        assert_eq!(s.update(&id, CredentialUpdate::new()).unwrap().version, 2);

        // Validation errors name the field and never the value.
        let bad = s
            .update(
                &id,
                CredentialUpdate::new().fields(json!({"login_url": "not a url SECRETX"})),
            )
            .unwrap_err();
        assert!(matches!(bad, StoreError::Validation(_)));
        assert!(!bad.to_string().contains("SECRETX"));

        // Unique active (name, environment); another environment is fine.
        assert!(matches!(
            s.create(login("bank", "p1")),
            Err(StoreError::NameTaken { .. })
        ));
        s.create(login("bank", "p1").environment("staging"))
            .unwrap();

        // List filters.
        let all = s.list(&ListFilter::default()).unwrap();
        assert_eq!(all.len(), 2);
        let mut f2 = ListFilter::default();
        f2.tags = vec!["finance".into()];
        assert_eq!(s.list(&f2).unwrap().len(), 1);

        // Delete: audited first, then gone.
        s.delete(&id, Some(2)).unwrap();
        assert!(matches!(s.get(&id), Err(StoreError::NotFound { .. })));
        assert_eq!(f.audit.events().last().unwrap().action, Action::Deleted);
        assert!(matches!(
            s.delete(&id, None),
            Err(StoreError::NotFound { .. })
        ));
    }
}

#[test]
fn reveals_record_each_credentials_last_use_per_tenant() {
    for (backend, storage) in backends() {
        let f = fixture_with(storage, |c| c);
        let (sa, sb) = (
            f.store.tenant(&f.a, "alice").unwrap(),
            f.store.tenant(&f.b, "bob").unwrap(),
        );
        let a1 = sa.create(login("a1", "pw-a1")).unwrap().id;
        let a2 = sa.create(login("a2", "pw-a2")).unwrap().id;
        let b1 = sb.create(login("b1", "pw-b1")).unwrap().id;
        sa.reveal(&a1, &["password"], None).unwrap();
        sb.reveal(&b1, &["password"], None).unwrap();
        f.clock.advance(1_000);
        sa.reveal(&a1, &["password"], None).unwrap();
        f.store.flush().unwrap();
        let used = |s: &credvault_store::Scope<'_>, id| s.get(id).unwrap().last_used_at;
        assert_eq!(used(&sa, &a1), Some(T0 + 1_000), "{backend}: the later use");
        assert_eq!(used(&sa, &a2), None, "{backend}: never revealed");
        assert_eq!(used(&sb, &b1), Some(T0), "{backend}: the other tenant's");
    }
}

#[test]
fn inactive_and_expired_are_refused_and_audited() {
    for (_, storage) in backends() {
        let f = fixture_with(storage, |c| c);
        let s = f.store.tenant(&f.a, "alice").unwrap();
        let id = s.create(login("a", "pw1").inactive()).unwrap().id.clone();
        let e = s.reveal(&id, &["password"], None).unwrap_err();
        assert!(matches!(
            e,
            StoreError::AccessDenied {
                reason: credvault_audit::DenyReason::Inactive
            }
        ));
        assert!(s.totp_code(&id, None).is_err());
        let last = f.audit.events().pop().unwrap();
        assert_eq!(last.action, Action::AccessDenied);
        assert_eq!(last.outcome, Outcome::Denied);

        let id2 = s
            .create(login("b", "pw2").expires_at(T0 + 1000))
            .unwrap()
            .id
            .clone();
        assert!(s.reveal(&id2, &["password"], None).is_ok());
        f.clock.advance(1000);
        let e = s.reveal(&id2, &["password"], None).unwrap_err();
        assert!(matches!(
            e,
            StoreError::AccessDenied {
                reason: credvault_audit::DenyReason::Expired
            }
        ));
        // Re-activating and extending makes it usable again.
        s.update(&id, CredentialUpdate::new().active(true)).unwrap();
        assert!(s.reveal(&id, &["password"], None).is_ok());
    }
}

#[test]
fn tenants_are_isolated_on_every_path() {
    for (name, storage) in backends() {
        let f = fixture_with(storage, |c| c);
        let sa = f.store.tenant(&f.a, "alice").unwrap();
        let sb = f.store.tenant(&f.b, "mallory").unwrap();
        let info = sa.create(login("bank", "alice-secret")).unwrap();
        let id = info.id.clone();
        let nf = |r: Result<(), StoreError>| {
            assert!(
                matches!(r, Err(StoreError::NotFound { .. })),
                "{name}: {r:?}"
            )
        };
        nf(sb.get(&id).map(|_| ()));
        nf(sb.find("bank", "production").map(|_| ()));
        nf(sb.reveal(&id, &["password"], None).map(|_| ()));
        nf(sb.totp_code(&id, None).map(|_| ()));
        nf(sb.verify_totp(&id, "123456").map(|_| ()));
        nf(sb
            .update(&id, CredentialUpdate::new().description("x"))
            .map(|_| ()));
        nf(sb.delete(&id, None));
        nf(sb.test(&id).map(|_| ()));
        assert!(sb.list(&ListFilter::default()).unwrap().is_empty());
        // Rotating b touches nothing of a's.
        sb.rotate_key(&mut |_| {}).unwrap();
        assert_eq!(
            sa.reveal(&id, &["password"], None)
                .unwrap()
                .expose_secret("password"),
            Some("alice-secret")
        );
        // Unknown tenants fail closed.
        let ghost = TenantId::new("ghost").unwrap();
        assert!(matches!(
            f.store.tenant(&ghost, "x"),
            Err(StoreError::UnknownTenant { .. })
        ));

        // A's ciphertext copied into a row of b's is refused: the row no longer matches its
        // record MAC (and would not open either: other key, other context).
        let sbi = sb.create(login("bank", "bob-secret")).unwrap();
        let bid = sbi.id.clone();
        let a_row = f.storage.credential(&f.a, &id).unwrap().unwrap();
        let mut b_row = f.storage.credential(&f.b, &bid).unwrap().unwrap();
        b_row.secret = a_row.secret.clone();
        b_row.version += 1;
        f.storage
            .update_credential(&b_row, b_row.version - 1, &mut |_| Ok(None))
            .unwrap();
        assert!(
            matches!(
                sb.reveal(&bid, &["password"], None),
                Err(StoreError::Integrity {
                    record: "credential",
                    ..
                })
            ),
            "{name}"
        );
        let last = f.audit.events().pop().unwrap();
        assert_eq!(last.action, Action::IntegrityFailure);
        assert_eq!(last.resource.id.as_deref(), Some(bid.as_str()));
    }
}

#[test]
fn swapped_and_flipped_rows_fail_alone() {
    for (name, storage) in backends() {
        let f = fixture_with(storage, |c| c);
        let s = f.store.tenant(&f.a, "alice").unwrap();
        let ids: Vec<CredentialId> = (0..4)
            .map(|i| {
                s.create(login(&format!("c{i}"), &format!("pw-{i}")))
                    .unwrap()
                    .id
                    .clone()
            })
            .collect();
        // Swap the ciphertexts of rows 0 and 1 (same tenant, same key).
        let r0 = f.storage.credential(&f.a, &ids[0]).unwrap().unwrap();
        let r1 = f.storage.credential(&f.a, &ids[1]).unwrap().unwrap();
        let (mut n0, mut n1) = (r0.clone(), r1.clone());
        std::mem::swap(&mut n0.secret, &mut n1.secret);
        n0.version += 1;
        n1.version += 1;
        f.storage
            .update_credential(&n0, 1, &mut |_| Ok(None))
            .unwrap();
        f.storage
            .update_credential(&n1, 1, &mut |_| Ok(None))
            .unwrap();
        for id in &ids[..2] {
            let e = s.reveal(id, &["password"], None).unwrap_err();
            assert!(
                matches!(&e, StoreError::Integrity { id: got, .. } if got == id.as_str()),
                "{name}: {e}"
            );
        }
        // Flip one byte of row 2's ciphertext (every position but the header's key id, which
        // would only name an unknown key — also corrupt).
        let r2 = f.storage.credential(&f.a, &ids[2]).unwrap().unwrap();
        for pos in [0, 5, 20, r2.secret.len() / 2, r2.secret.len() - 1] {
            let mut n2 = f.storage.credential(&f.a, &ids[2]).unwrap().unwrap();
            n2.secret = r2.secret.clone();
            n2.secret[pos] ^= 0x01;
            let v = n2.version;
            n2.version += 1;
            f.storage
                .update_credential(&n2, v, &mut |_| Ok(None))
                .unwrap();
            assert!(
                matches!(
                    s.reveal(&ids[2], &["password"], None),
                    Err(StoreError::Integrity { .. })
                ),
                "{name} {pos}"
            );
        }
        // Row 3 is untouched and still opens.
        assert_eq!(
            s.reveal(&ids[3], &["password"], None)
                .unwrap()
                .expose_secret("password"),
            Some("pw-3")
        );
        // Rotation does not re-encrypt (and so re-authenticate) the altered rows: it reports
        // them and keeps the old key.
        let rot = s.rotate_key(&mut |_| {}).unwrap();
        assert_eq!(rot.failed.len(), 3, "{name}");
        assert!(rot.retired.is_empty());
        assert_eq!(
            s.reveal(&ids[3], &["password"], None)
                .unwrap()
                .expose_secret("password"),
            Some("pw-3")
        );
    }
}

#[test]
fn a_failing_audit_sink_refuses_everything_and_changes_nothing() {
    for (name, storage) in backends() {
        let f = fixture_with(storage, |c| c.cache(CacheConfig::default().lease(1)));
        let s = f.store.tenant(&f.a, "alice").unwrap();
        let id = s.create(login("keep", "pw-keep")).unwrap().id.clone();
        let before = f.storage.credentials(&f.a, &ListFilter::default()).unwrap();
        let keys_before: Vec<_> = f
            .storage
            .data_keys(&f.a)
            .unwrap()
            .into_iter()
            .map(|k| (k.key_id, k.state))
            .collect();
        let tenants_before = f.storage.tenants().unwrap();
        f.audit.fail_with(Some("disk full"));
        let audit_err = |r: Result<(), StoreError>, op: &str| {
            assert!(matches!(r, Err(StoreError::Audit(_))), "{name} {op}: {r:?}");
        };
        audit_err(s.create(login("new", "pw-new")).map(|_| ()), "create");
        audit_err(
            s.update(
                &id,
                CredentialUpdate::new().fields(json!({"password": "changed"})),
            )
            .map(|_| ()),
            "update",
        );
        audit_err(s.delete(&id, None), "delete");
        audit_err(s.reveal(&id, &["password"], None).map(|_| ()), "reveal");
        audit_err(s.totp_code(&id, None).map(|_| ()), "totp");
        audit_err(s.rotate_key(&mut |_| {}).map(|_| ()), "rotate");
        audit_err(
            f.store
                .create_tenant(&TenantId::new("new-tenant").unwrap(), "N", "admin")
                .map(|_| ()),
            "tenant",
        );
        audit_err(s.client_data_key().map(|_| ()), "client key");
        f.audit.fail_with(None);
        let after = f.storage.credentials(&f.a, &ListFilter::default()).unwrap();
        assert_eq!(before, after, "{name}: credentials changed");
        let keys_after: Vec<_> = f
            .storage
            .data_keys(&f.a)
            .unwrap()
            .into_iter()
            .map(|k| (k.key_id, k.state))
            .collect();
        assert_eq!(keys_before, keys_after, "{name}: keys changed");
        assert_eq!(tenants_before, f.storage.tenants().unwrap());
        assert_eq!(
            s.reveal(&id, &["password"], None)
                .unwrap()
                .expose_secret("password"),
            Some("pw-keep")
        );
    }
}

#[test]
fn the_sealing_helper_builds_exactly_what_create_sealed_accepts() {
    for (name, storage) in backends() {
        let f = fixture_with(storage, |c| c);
        let s = f.store.tenant(&f.a, "alice").unwrap();
        let key = s.client_data_key().unwrap();
        let ty = f.store.credential_type("website_login").unwrap();
        let new = || {
            NewCredential::new(
                "website_login",
                "portal",
                json!({"login_url": "https://portal.example/login", "username": "bot",
                       "password": "client-side-pw", "totp_secret": "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"}),
            )
            .environment("staging")
        };
        let sealed = SealedCredential::seal(&key, &f.a, &ty, new()).unwrap();
        // Only the public fields travel in clear.
        assert_eq!(
            sealed.public_fields,
            json!({"login_url": "https://portal.example/login", "username": "bot"})
        );
        assert!(!String::from_utf8_lossy(&sealed.envelope).contains("client-side-pw"));
        let info = s.create_sealed(sealed).unwrap();
        assert_eq!(info.environment, "staging");
        let r = s.reveal(&info.id, &["password"], None).unwrap();
        assert_eq!(
            r.expose_secret("password"),
            Some("client-side-pw"),
            "{name}"
        );
        // Sealed for tenant a, sent to tenant b: the key is not b's.
        let sb = f.store.tenant(&f.b, "bob").unwrap();
        let e = sb
            .create_sealed(SealedCredential::seal(&key, &f.a, &ty, new()).unwrap())
            .unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::SealedRejected {
                    reason: SealRejection::WrongKey
                }
            ),
            "{e}"
        );
        // With b's key but a's context (the wrong tenant in the context): does not open.
        let kb = sb.client_data_key().unwrap();
        let e = sb
            .create_sealed(SealedCredential::seal(&kb, &f.a, &ty, new()).unwrap())
            .unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::SealedRejected {
                    reason: SealRejection::DoesNotOpen
                }
            ),
            "{e}"
        );
        // Not an envelope at all.
        let mut junk = SealedCredential::seal(&kb, &f.b, &ty, new()).unwrap();
        junk.envelope = b"not an envelope".to_vec();
        let e = sb.create_sealed(junk).unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::SealedRejected {
                    reason: SealRejection::NotAnEnvelope
                }
            ),
            "{e}"
        );
        // A field the type does not have is refused before anything is sealed.
        let e = SealedCredential::seal(
            &kb,
            &f.b,
            &ty,
            NewCredential::new("website_login", "x", json!({"pasword": "typo"})),
        )
        .unwrap_err();
        assert!(matches!(e, StoreError::Field { .. }), "{e}");
    }
}

#[test]
fn client_sealed_credentials_are_verified_and_stored_verbatim() {
    for (name, storage) in backends() {
        let f = fixture_with(storage, |c| c);
        let s = f.store.tenant(&f.a, "alice").unwrap();
        let dek = s.client_data_key().unwrap();
        assert_eq!(
            f.audit.events().last().unwrap().action,
            Action::Other("data_key_issued".into())
        );
        let client = SealingKey::new(&dek);
        let id = CredentialId::generate().unwrap();
        let blob = encode_secret_fields([("token", "client-sealed-token")]).unwrap();
        let ctx = credential_context(&f.a, &id, "production", "http_bearer_token").unwrap();
        let env = client.seal(&blob, &ctx).unwrap();
        let sealed = |id: &CredentialId, env: Vec<u8>, ty: &str| SealedCredential {
            id: id.clone(),
            type_name: ty.into(),
            name: format!("sealed-{id}"),
            environment: "production".into(),
            public_fields: json!({}),
            envelope: env,
            description: String::new(),
            tags: vec![],
            expires_at: None,
        };
        let usage0 = f.storage.data_keys(&f.a).unwrap()[0].usage;
        let info = s
            .create_sealed(sealed(&id, env.clone(), "http_bearer_token"))
            .unwrap();
        assert_eq!(
            f.storage.credential(&f.a, &id).unwrap().unwrap().secret,
            env,
            "{name}: not verbatim"
        );
        assert_eq!(
            f.storage.data_keys(&f.a).unwrap()[0].usage,
            usage0 + 1,
            "client seal counted"
        );
        assert_eq!(info.fields["token"], SECRET_MARKER);
        assert_eq!(
            s.reveal(&id, &["token"], None)
                .unwrap()
                .expose_secret("token"),
            Some("client-sealed-token")
        );
        // Wrong context (another id), another tenant's key, altered bytes, bad fields: refused.
        let id2 = CredentialId::generate().unwrap();
        assert!(matches!(
            s.create_sealed(sealed(&id2, env.clone(), "http_bearer_token")),
            Err(StoreError::SealedRejected {
                reason: SealRejection::DoesNotOpen
            })
        ));
        let sb = f.store.tenant(&f.b, "bob").unwrap();
        let other = SealingKey::new(&sb.client_data_key().unwrap());
        let ctx2 = credential_context(&f.a, &id2, "production", "http_bearer_token").unwrap();
        let foreign = other.seal(&blob, &ctx2).unwrap();
        assert!(matches!(
            s.create_sealed(sealed(&id2, foreign, "http_bearer_token")),
            Err(StoreError::SealedRejected {
                reason: SealRejection::WrongKey
            })
        ));
        let mut altered = client.seal(&blob, &ctx2).unwrap();
        let n = altered.len();
        altered[n - 1] ^= 1;
        assert!(matches!(
            s.create_sealed(sealed(&id2, altered, "http_bearer_token")),
            Err(StoreError::SealedRejected {
                reason: SealRejection::DoesNotOpen
            })
        ));
        let wrong_field = encode_secret_fields([("password", "x")]).unwrap();
        let e = s.create_sealed(sealed(
            &id2,
            client.seal(&wrong_field, &ctx2).unwrap(),
            "http_bearer_token",
        ));
        assert!(matches!(e, Err(StoreError::Field { .. })), "{e:?}");
        let bad_token = encode_secret_fields([("token", "has spaces in it")]).unwrap();
        let e = s.create_sealed(sealed(
            &id2,
            client.seal(&bad_token, &ctx2).unwrap(),
            "http_bearer_token",
        ));
        assert!(matches!(e, Err(StoreError::Validation(_))), "{e:?}");
        assert!(f.storage.credential(&f.a, &id2).unwrap().is_none());
        // The header's key id is the tenant's active key.
        assert_eq!(EnvelopeHeader::parse(&env).unwrap().key_id(), dek.id());
    }
}

#[test]
fn usage_is_persisted_before_ciphertext_and_limits_hold() {
    let f = fixture_with(Arc::new(SqliteStorage::open_in_memory().unwrap()), |c| {
        c.cache(CacheConfig::default().lease(1).seal_limit(3))
    });
    let s = f.store.tenant(&f.a, "alice").unwrap();
    for i in 0..3 {
        s.create(login(&format!("c{i}"), "pw")).unwrap();
        assert_eq!(f.storage.data_keys(&f.a).unwrap()[0].usage, i + 1);
    }
    assert!(matches!(
        s.create(login("c4", "pw")),
        Err(StoreError::KeyExhausted)
    ));
    // Rotation gives a fresh key... but re-sealing 3 rows needs 3 permits under the new key.
    let f = fixture_with(Arc::new(MemoryStorage::new()), |c| {
        c.cache(CacheConfig::default().lease(64))
    });
    let s = f.store.tenant(&f.a, "alice").unwrap();
    s.create(login("x", "pw")).unwrap();
    assert_eq!(
        f.storage.data_keys(&f.a).unwrap()[0].usage,
        64,
        "a block is reserved up front"
    );
}

/// A `http_bearer_token` credential sealed by the client under `s`'s data key.
fn client_sealed(
    s: &credvault_store::Scope<'_>,
    tenant: &TenantId,
    name: &str,
    token: &str,
) -> SealedCredential {
    let client = SealingKey::new(&s.client_data_key().unwrap());
    let id = CredentialId::generate().unwrap();
    let blob = encode_secret_fields([("token", token)]).unwrap();
    let ctx = credential_context(tenant, &id, "production", "http_bearer_token").unwrap();
    SealedCredential {
        envelope: client.seal(&blob, &ctx).unwrap(),
        id,
        type_name: "http_bearer_token".into(),
        name: name.into(),
        environment: "production".into(),
        public_fields: json!({}),
        description: String::new(),
        tags: vec![],
        expires_at: None,
    }
}

#[test]
fn the_store_starts_a_tenant_key_rotation_by_itself_past_rotate_at() {
    for (name, storage) in backends() {
        let f = fixture_with(storage, |c| {
            c.cache(CacheConfig::default().lease(1).rotate_at(5).seal_limit(8))
        });
        let s = f.store.tenant(&f.a, "alice").unwrap();
        let first = f.storage.data_keys(&f.a).unwrap()[0].key_id;
        let mut ids = Vec::new();
        for i in 0..4 {
            ids.push(
                s.create(login(&format!("c{i}"), &format!("pw{i}")))
                    .unwrap()
                    .id,
            );
        }
        // The fifth seal, a client's, reaches rotate_at: it is stored under the old key and
        // the rotation starts.
        let sealed = client_sealed(&s, &f.a, "sealed", "client-token-5");
        let id = sealed.id.clone();
        s.create_sealed(sealed).unwrap();
        for i in 5..7 {
            ids.push(
                s.create(login(&format!("c{i}"), &format!("pw{i}")))
                    .unwrap()
                    .id,
            );
        }
        let keys = f.storage.data_keys(&f.a).unwrap();
        assert_eq!(keys.len(), 2, "{name}");
        let old = keys.iter().find(|k| k.key_id == first).unwrap();
        let new = keys.iter().find(|k| k.key_id != first).unwrap();
        assert_eq!((old.state, old.usage), (KeyState::Retiring, 5), "{name}");
        assert_eq!((new.state, new.usage), (KeyState::Active, 2), "{name}");
        let rotations: Vec<AuditEvent> = f
            .audit
            .events()
            .into_iter()
            .filter(|e| e.action == Action::KeyRotated)
            .collect();
        assert_eq!(rotations.len(), 1, "{name}: {rotations:?}");
        assert_eq!(rotations[0].actor, credvault_store::AUTO_ROTATION_ACTOR);
        assert_eq!(rotations[0].tenant, "acme");
        // Nothing is lost: every credential opens, under whichever key holds it.
        for (i, id) in ids.iter().enumerate() {
            let pw = if i < 4 {
                format!("pw{i}")
            } else {
                format!("pw{}", i + 1)
            };
            let r = s.reveal(id, &["password"], None).unwrap();
            assert_eq!(r.expose_secret("password"), Some(pw.as_str()), "{name}");
        }
        let r = s.reveal(&id, &["token"], None).unwrap();
        assert_eq!(r.expose_secret("token"), Some("client-token-5"));
        // The other tenant's key is not touched; finishing the rotation retires the old key.
        assert_eq!(f.storage.data_keys(&f.b).unwrap().len(), 1);
        let done = s.rotate_key(&mut |_| {}).unwrap();
        assert!(!done.started && done.is_finished(), "{name}: {done:?}");
        assert_eq!(done.retired, [first.to_string()]);
    }
    // Reached by the vault's own seal: the create that found the key due is stored (sealed
    // again under the new key), nothing is lost.
    for (name, storage) in backends() {
        let f = fixture_with(storage, |c| {
            c.cache(CacheConfig::default().lease(1).rotate_at(3))
        });
        let s = f.store.tenant(&f.a, "alice").unwrap();
        let ids: Vec<CredentialId> = (0..5)
            .map(|i| {
                s.create(login(&format!("v{i}"), &format!("pw{i}")))
                    .unwrap()
                    .id
            })
            .collect();
        let keys = f.storage.data_keys(&f.a).unwrap();
        assert_eq!(keys.len(), 2, "{name}");
        for (i, id) in ids.iter().enumerate() {
            let r = s.reveal(id, &["password"], None).unwrap();
            assert_eq!(r.expose_secret("password"), Some(format!("pw{i}").as_str()));
        }
        assert!(s.rotate_key(&mut |_| {}).unwrap().is_finished());
    }
    // A client seal past the hard limit is refused.
    let f = fixture_with(Arc::new(MemoryStorage::new()), |c| {
        c.cache(CacheConfig::default().lease(1).seal_limit(1))
    });
    let s = f.store.tenant(&f.a, "alice").unwrap();
    s.create(login("only", "pw")).unwrap();
    let sealed = client_sealed(&s, &f.a, "late", "one-too-many");
    let id = sealed.id.clone();
    let r = s.create_sealed(sealed);
    assert!(matches!(r, Err(StoreError::KeyExhausted)), "{r:?}");
    assert!(f.storage.credential(&f.a, &id).unwrap().is_none());
}

#[test]
fn a_client_sealed_only_tenant_refuses_plaintext_secrets() {
    for (name, storage) in backends() {
        let a = TenantId::new("acme").unwrap();
        let f = fixture_with(storage, |c| c.require_client_sealed(a.clone()));
        let s = f.store.tenant(&f.a, "alice").unwrap();
        let r = s.create(NewCredential::new(
            "http_bearer_token",
            "plain",
            json!({"token": "plaintext-token-1234"}),
        ));
        assert!(
            matches!(r, Err(StoreError::ClientSealedOnly)),
            "{name}: {r:?}"
        );
        let ev = f.audit.events().pop().unwrap();
        assert_eq!(ev.action, Action::AccessDenied);
        assert_eq!(ev.resource.name.as_deref(), Some("plain"));
        assert!(!all_text(&f.audit.events()).contains("plaintext-token"));
        assert!(s.list(&ListFilter::new()).unwrap().is_empty(), "{name}");
        // Sealed by the client: accepted.
        let sealed = client_sealed(&s, &f.a, "sealed", "client-token-1234");
        let id = sealed.id.clone();
        s.create_sealed(sealed).unwrap();
        // Metadata may change; secret values may not arrive in plaintext.
        s.update(&id, CredentialUpdate::new().description("rotated monthly"))
            .unwrap();
        let r = s.update(
            &id,
            CredentialUpdate::new().fields(json!({"token": "plaintext-token-5678"})),
        );
        assert!(
            matches!(r, Err(StoreError::ClientSealedOnly)),
            "{name}: {r:?}"
        );
        assert_eq!(
            s.reveal(&id, &["token"], None)
                .unwrap()
                .expose_secret("token"),
            Some("client-token-1234")
        );
        // Another tenant is not bound by it.
        let sb = f.store.tenant(&f.b, "bob").unwrap();
        assert!(sb.create(login("x", "pw")).is_ok());
    }
}

#[test]
fn master_and_data_key_use_is_audited() {
    for (name, storage) in backends() {
        // No caching: every operation unwraps its key.
        let f = fixture_with(storage, |c| {
            c.cache(CacheConfig::default().ttl(std::time::Duration::ZERO))
        });
        let s = f.store.tenant(&f.a, "alice").unwrap();
        let key = f.storage.data_keys(&f.a).unwrap()[0].key_id.to_string();
        let before = f.audit.events().len();
        let id = s.create(login("k", "pw-key-use")).unwrap().id;
        s.reveal(&id, &["password"], None).unwrap();
        let events = f.audit.events()[before..].to_vec();
        let used: Vec<&AuditEvent> = events
            .iter()
            .filter(|e| e.action == Action::Other("key_used".into()))
            .collect();
        assert!(
            used.len() >= 2,
            "{name}: one unwrap per operation: {events:?}"
        );
        for e in &used {
            assert_eq!(e.actor, credvault_store::VAULT_ACTOR);
            assert_eq!(e.tenant, "acme");
            match &e.details {
                Some(Details::KeyUsed {
                    key: k,
                    master,
                    operation,
                }) => {
                    assert_eq!(k, &key);
                    assert!(master.starts_with("local"), "{master}");
                    assert_eq!(operation, "unwrap");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        // Each credential event names the data key it sealed or opened with.
        for e in events
            .iter()
            .filter(|e| matches!(e.action, Action::Created | Action::Accessed))
        {
            assert_eq!(e.resource.key.as_deref(), Some(key.as_str()), "{name}");
        }
        // No secret in any of them.
        assert!(!all_text(&events).contains("pw-key-use"));
    }
}

#[test]
fn key_cache_is_bounded_and_use_limited() {
    let f = fixture_with(Arc::new(MemoryStorage::new()), |c| {
        c.cache(CacheConfig::default().capacity(1).max_uses(2))
    });
    let sa = f.store.tenant(&f.a, "a").unwrap();
    let sb = f.store.tenant(&f.b, "b").unwrap();
    let ia = sa.create(login("x", "pa")).unwrap().id.clone();
    let ib = sb.create(login("x", "pb")).unwrap().id.clone();
    assert_eq!(f.store.cached_keys(), 1, "capacity 1 holds one key");
    for _ in 0..5 {
        assert_eq!(
            sa.reveal(&ia, &["password"], None)
                .unwrap()
                .expose_secret("password"),
            Some("pa")
        );
        assert_eq!(
            sb.reveal(&ib, &["password"], None)
                .unwrap()
                .expose_secret("password"),
            Some("pb")
        );
    }
    assert_eq!(f.store.cached_keys(), 1);
    f.store.clear_key_cache();
    assert_eq!(f.store.cached_keys(), 0);
}

/// A master key that counts unwraps (how often the cache had to load a data key).
struct Counting(LocalKeyring, std::sync::atomic::AtomicUsize);

impl credvault_envelope::MasterKey for Counting {
    fn provider_id(&self) -> &str {
        self.0.provider_id()
    }
    fn active_version(&self) -> Result<u32, credvault_envelope::ProviderError> {
        self.0.active_version()
    }
    fn wrap(
        &self,
        key: &credvault_envelope::DataKey,
        ctx: &credvault_envelope::EncryptionContext,
    ) -> Result<credvault_envelope::WrappedKey, credvault_envelope::ProviderError> {
        self.0.wrap(key, ctx)
    }
    fn unwrap(
        &self,
        wrapped: &credvault_envelope::WrappedKey,
        ctx: &credvault_envelope::EncryptionContext,
    ) -> Result<credvault_envelope::DataKey, credvault_envelope::ProviderError> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0.unwrap(wrapped, ctx)
    }
}

#[test]
fn key_cache_ttl_and_use_limit_bound_how_long_a_key_is_held() {
    let unwraps_for = |cache: CacheConfig| {
        let master = Arc::new(Counting(
            LocalKeyring::generate().unwrap(),
            Default::default(),
        ));
        let store = Store::new(
            Arc::new(MemoryStorage::new()),
            master.clone(),
            AuditTarget::Sink(Arc::new(MemorySink::new())),
        )
        .with_config(StoreConfig::default().cache(cache));
        let a = TenantId::new("acme").unwrap();
        store.create_tenant(&a, "A", "admin").unwrap();
        let s = store.tenant(&a, "x").unwrap();
        let id = s.create(login("c", "pw")).unwrap().id.clone();
        let before = master.1.load(std::sync::atomic::Ordering::SeqCst);
        for _ in 0..10 {
            s.reveal(&id, &["password"], None).unwrap();
        }
        master.1.load(std::sync::atomic::Ordering::SeqCst) - before
    };
    assert_eq!(
        unwraps_for(CacheConfig::default()),
        0,
        "a cached key is reused"
    );
    assert_eq!(
        unwraps_for(CacheConfig::default().ttl(std::time::Duration::ZERO)),
        10,
        "an expired key is unwrapped again"
    );
    // The create took the key twice (seal, record MAC), leaving one use of the first load;
    // each reveal takes it once (its record MAC is checked and its envelope opened under the
    // same key): 10 takes, 1 then 3 per load.
    assert_eq!(
        unwraps_for(CacheConfig::default().max_uses(3)),
        3,
        "the use limit forces a reload"
    );
}

#[test]
fn tenant_key_rotation_reencrypts_and_retires() {
    for (name, storage) in backends() {
        let f = fixture_with(storage, |c| c.rotation_batch(7));
        let s = f.store.tenant(&f.a, "alice").unwrap();
        let ids: Vec<_> = (0..50)
            .map(|i| {
                s.create(login(&format!("c{i}"), &format!("pw{i}")))
                    .unwrap()
                    .id
                    .clone()
            })
            .collect();
        let old = f.storage.data_keys(&f.a).unwrap()[0].key_id;
        let b_key = f.storage.data_keys(&f.b).unwrap()[0].key_id;
        let mut seen = Vec::new();
        let rot = s.rotate_key(&mut |p| seen.push(p)).unwrap();
        assert!(rot.started, "{name}");
        assert_eq!(rot.resealed, 50);
        assert_eq!(rot.retired, vec![old.to_string()]);
        assert_eq!(seen.last().unwrap().done, 50);
        assert!(seen.len() >= 8, "progress reported per batch");
        let keys = f.storage.data_keys(&f.a).unwrap();
        assert_eq!(keys.len(), 1);
        assert_ne!(keys[0].key_id, old);
        assert_eq!(f.storage.data_keys(&f.b).unwrap()[0].key_id, b_key);
        for (i, id) in ids.iter().enumerate() {
            let row = f.storage.credential(&f.a, id).unwrap().unwrap();
            assert_eq!(row.key_id, keys[0].key_id);
            assert_eq!(row.version, 1, "rotation does not bump versions");
            assert_eq!(
                s.reveal(id, &["password"], None)
                    .unwrap()
                    .expose_secret("password"),
                Some(format!("pw{i}").as_str())
            );
        }
        let kr: Vec<_> = f
            .audit
            .events()
            .into_iter()
            .filter(|e| e.action == Action::KeyRotated)
            .collect();
        assert_eq!(kr.len(), 2, "start and retirement are audited");
    }
}

#[test]
fn interrupted_rotation_resumes() {
    // An interruption between re-encryption and retirement (the audit sink fails when the
    // old key is to be retired): every credential still opens, and the next call resumes the
    // same job instead of starting another. (Kills at arbitrary points: tests/crash.rs.)
    let f = fixture_with(Arc::new(SqliteStorage::open_in_memory().unwrap()), |c| {
        c.rotation_batch(5)
    });
    let s = f.store.tenant(&f.a, "alice").unwrap();
    let ids: Vec<_> = (0..20)
        .map(|i| {
            s.create(login(&format!("c{i}"), &format!("pw{i}")))
                .unwrap()
                .id
                .clone()
        })
        .collect();
    let r = s.rotate_key(&mut |p| {
        if p.done >= 5 {
            f.audit.fail_with(Some("sink down"));
        }
    });
    assert!(matches!(r, Err(StoreError::Audit(_))), "{r:?}");
    f.audit.fail_with(None);
    let keys = f.storage.data_keys(&f.a).unwrap();
    assert_eq!(
        keys.iter()
            .filter(|k| k.state == KeyState::Retiring)
            .count(),
        1
    );
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            s.reveal(id, &["password"], None)
                .unwrap()
                .expose_secret("password"),
            Some(format!("pw{i}").as_str())
        );
    }
    let resumed = s.rotate_key(&mut |_| {}).unwrap();
    assert!(!resumed.started, "resumed, not restarted");
    assert_eq!(resumed.retired.len(), 1);
    assert_eq!(f.storage.data_keys(&f.a).unwrap().len(), 1);
    for id in &ids {
        s.reveal(id, &["password"], None).unwrap();
    }
}

#[test]
fn master_rotation_rewraps_without_reencrypting() {
    let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open_in_memory().unwrap());
    let mut keyring = LocalKeyring::generate().unwrap();
    let text = keyring.export_secret_text();
    let audit = Arc::new(MemorySink::new());
    let store = Store::new(
        storage.clone(),
        Arc::new(LocalKeyring::from_secret_text(&text).unwrap()),
        AuditTarget::Sink(audit.clone()),
    );
    let a = TenantId::new("acme").unwrap();
    store.create_tenant(&a, "A", "admin").unwrap();
    let id = store
        .tenant(&a, "x")
        .unwrap()
        .create(login("c", "pw-m"))
        .unwrap()
        .id
        .clone();
    let row_before = storage.credential(&a, &id).unwrap().unwrap();
    let wrapped_before = storage.data_keys(&a).unwrap()[0].wrapped.clone();
    drop(store);
    keyring.rotate().unwrap();
    let store = Store::new(
        storage.clone(),
        Arc::new(keyring),
        AuditTarget::Sink(audit.clone()),
    );
    let rep = store.rotate_master("admin", &mut |_| {}).unwrap();
    assert_eq!((rep.rewrapped, rep.current), (1, 0));
    assert_ne!(storage.data_keys(&a).unwrap()[0].wrapped, wrapped_before);
    assert_eq!(
        storage.credential(&a, &id).unwrap().unwrap().secret,
        row_before.secret,
        "no secret re-encrypted"
    );
    assert_eq!(
        store
            .tenant(&a, "x")
            .unwrap()
            .reveal(&id, &["password"], None)
            .unwrap()
            .expose_secret("password"),
        Some("pw-m")
    );
    let refs = store.master_key_references().unwrap();
    assert_eq!(refs.get(&("local".to_owned(), 1)), None);
    assert_eq!(refs.get(&("local".to_owned(), 2)), Some(&1));
    let again = store.rotate_master("admin", &mut |_| {}).unwrap();
    assert_eq!((again.rewrapped, again.current), (0, 1));
    let rotated: Vec<_> = audit
        .events()
        .into_iter()
        .filter(|e| e.action == Action::KeyRotated)
        .collect();
    assert_eq!(
        rotated.len(),
        1,
        "one rewrap recorded (the second run had nothing to do)"
    );
    assert!(
        matches!(&rotated[0].details, Some(Details::KeyRotated { key, from_version: Some(1), to_version: Some(2) }) if key == "master")
    );
}

#[test]
fn totp_codes_match_rfc6238_and_verification_refuses_replays() {
    for (name, storage) in backends() {
        let f = fixture_with(storage, |c| c);
        let s = f.store.tenant(&f.a, "alice").unwrap();
        // RFC 6238 appendix B: SHA-1 secret "12345678901234567890", T = 59 s → 94287082
        // (8 digits); the 6-digit code is its last six digits.
        f.clock.set(59_000);
        let id = s.create(login("t", "pw")).unwrap().id.clone();
        let code = s.totp_code(&id, Some("browser-bot")).unwrap();
        assert_eq!(code.expose_secret(), "287082", "{name}");
        assert_eq!(code.expires_at, 60_000);
        assert!(!format!("{code:?}").contains("287082"));
        let ev = f.audit.events().pop().unwrap();
        assert_eq!(ev.action, Action::TotpGenerated);
        assert!(!all_text(&[ev]).contains("GEZDGNBV"));
        // T = 1111111109 → 07081804 (8 digits) → 081804.
        f.clock.set(1_111_111_109_000);
        assert_eq!(s.totp_code(&id, None).unwrap().expose_secret(), "081804");
        assert!(s.verify_totp(&id, "081804").is_ok());
        assert!(
            matches!(s.verify_totp(&id, "081804"), Err(StoreError::Totp { .. })),
            "replay refused"
        );
        assert!(matches!(
            s.verify_totp(&id, "000000"),
            Err(StoreError::Totp { .. })
        ));
        // A credential without an authenticator key.
        let plain = s
            .create(NewCredential::new(
                "http_bearer_token",
                "tok",
                json!({"token": "abcdefgh12345678"}),
            ))
            .unwrap()
            .id
            .clone();
        assert!(matches!(
            s.totp_code(&plain, None),
            Err(StoreError::Totp { .. })
        ));
    }
}

#[test]
fn totp_verification_is_throttled_per_credential_and_audited() {
    for (name, storage) in backends() {
        let f = fixture_with(storage, |c| c);
        let s = f.store.tenant(&f.a, "alice").unwrap();
        f.clock.set(1_111_111_109_000); // RFC 6238: 081804
        let id = s.create(login("t", "pw")).unwrap().id.clone();
        let other = s.create(login("u", "pw")).unwrap().id.clone();
        for wrong in ["000000", "111111", "222222", "333333", "444444"] {
            assert!(
                matches!(s.verify_totp(&id, wrong), Err(StoreError::Totp { .. })),
                "{name}"
            );
        }
        // Locked out: even the right code is refused, without being looked at or used up.
        let err = s.verify_totp(&id, "081804").unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Throttled {
                    retry_after_secs: 900
                }
            ),
            "{name}: {err:?}"
        );
        let ev = f.audit.events().pop().unwrap();
        assert_eq!(ev.action, Action::AccessDenied);
        assert!(matches!(
            ev.details,
            Some(Details::AccessDenied {
                reason: credvault_audit::DenyReason::Throttled
            })
        ));
        // Another credential is not affected.
        assert!(s.verify_totp(&other, "081804").is_ok(), "{name}");
        // Still locked a second before the end; open at the end, and the code (the same
        // step's, still unused) is accepted.
        f.clock.set(1_111_111_109_000 + 899_000);
        assert!(matches!(
            s.verify_totp(&id, "081804"),
            Err(StoreError::Throttled {
                retry_after_secs: 1
            })
        ));
        f.clock.set(1_111_111_109_000 + 900_000);
        let code = s.totp_code(&id, None).unwrap();
        assert!(s.verify_totp(&id, code.expose_secret()).is_ok(), "{name}");
        // A correct code clears the count: four more wrong ones do not lock.
        for wrong in ["000000", "111111", "222222", "333333"] {
            assert!(matches!(
                s.verify_totp(&id, wrong),
                Err(StoreError::Totp { .. })
            ));
        }
        let code = s.totp_code(&id, None).unwrap();
        assert!(
            matches!(
                s.verify_totp(&id, code.expose_secret()),
                Err(StoreError::Totp { .. })
            ),
            "{name}: a used code is a failure (replay), not a lock-out"
        );
        assert!(matches!(
            s.verify_totp(&id, "555555"),
            Err(StoreError::Throttled { .. })
        ));
    }
}

#[test]
fn the_totp_throttle_holds_across_vault_handles() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_111_111_109_000));
    let opts = || {
        credvault_store::VaultOptions::default().store(
            StoreConfig::default()
                .clock(clock.clone())
                .otp_throttle(OtpThrottle {
                    max_failures: 3,
                    window_secs: 60,
                    lockout_secs: 120,
                }),
        )
    };
    let v = credvault_store::Vault::init(dir.path(), opts()).unwrap();
    let a = TenantId::new("acme").unwrap();
    v.store().create_tenant(&a, "A", "admin").unwrap();
    let id = v
        .store()
        .tenant(&a, "admin")
        .unwrap()
        .create(login("t", "pw"))
        .unwrap()
        .id;
    v.close().unwrap();
    // Each wrong code from a new handle, as from separate `credvault` processes.
    for wrong in ["000000", "111111", "222222"] {
        let v = credvault_store::Vault::open(dir.path(), opts()).unwrap();
        let s = v.store().tenant(&a, "attacker").unwrap();
        assert!(matches!(
            s.verify_totp(&id, wrong),
            Err(StoreError::Totp { .. })
        ));
        v.close().unwrap();
    }
    let v = credvault_store::Vault::open(dir.path(), opts()).unwrap();
    let s = v.store().tenant(&a, "attacker").unwrap();
    assert!(matches!(
        s.verify_totp(&id, "081804"),
        Err(StoreError::Throttled {
            retry_after_secs: 120
        })
    ));
    v.close().unwrap();
}

fn registry_with_local_type(port: u16) -> Arc<Registry> {
    let mut r = Registry::with_builtins();
    r.add_json(&format!(
        r#"{{"name": "local_api", "display_name": "Local API", "category": "api",
            "fields": [{{"key": "token", "label": "Token", "kind": "password", "required": true}}],
            "authenticate": {{"headers": {{"Authorization": "Bearer {{{{token}}}}"}}}},
            "test": {{"kind": "http", "request": {{"method": "GET", "url": "http://127.0.0.1:{port}/me"}},
                      "success": {{"status": [200], "json_path": "user.id"}}}}}}"#
    ))
    .unwrap();
    Arc::new(r)
}

/// A store whose `local_api` type tests against `port`, with one `svc` credential holding
/// `token`: (store, its audit sink, the tenant scope's tenant, the credential).
fn local_service(
    port: u16,
    testers: TesterRegistry,
    token: &str,
) -> (Store, Arc<MemorySink>, TenantId, CredentialId) {
    let audit = Arc::new(MemorySink::new());
    let store = Store::new(
        Arc::new(MemoryStorage::new()),
        Arc::new(LocalKeyring::generate().unwrap()),
        AuditTarget::Sink(audit.clone()),
    )
    .with_registry(registry_with_local_type(port))
    .with_testers(testers);
    let a = TenantId::new("acme").unwrap();
    store.create_tenant(&a, "A", "admin").unwrap();
    let id = store
        .tenant(&a, "alice")
        .unwrap()
        .create(NewCredential::new(
            "local_api",
            "svc",
            json!({ "token": token }),
        ))
        .unwrap()
        .id
        .clone();
    (store, audit, a, id)
}

/// The built-in testers, allowed to reach the local test servers.
#[cfg(feature = "http-tester")]
fn loopback_testers() -> TesterRegistry {
    TesterRegistry::with_defaults_allowing(&[credvault_store::net::AddressClass::Loopback])
}

#[cfg(feature = "http-tester")]
#[test]
fn http_tester_runs_the_declared_test_and_records_the_result() {
    for (status, body, want) in [
        (200, r#"{"user":{"id":7}}"#, TestStatus::Ok),
        (200, r#"{"user":{}}"#, TestStatus::Failed),
        (401, "{}", TestStatus::Failed),
    ] {
        let server = credvault_test::http::Listener::answering(status, body);
        let (store, audit, a, id) =
            local_service(server.port(), loopback_testers(), "tok-SECRET-123");
        let s = store.tenant(&a, "alice").unwrap();
        let out = s.test(&id).unwrap();
        assert_eq!(out.status, want, "{status} {body}: {}", out.message);
        let request = server.requests().pop().unwrap();
        assert!(request.starts_with("GET /me "), "{request}");
        assert!(
            request.contains("Authorization: Bearer tok-SECRET-123")
                || request.contains("authorization: Bearer tok-SECRET-123"),
            "{request}"
        );
        assert!(!out.message.contains("SECRET"));
        let info = s.get(&id).unwrap();
        assert_eq!(info.test_status.as_deref(), Some(out.status_str()));
        assert!(info.last_tested.is_some());
        let ev = audit.events().pop().unwrap();
        assert_eq!(ev.action, Action::Tested);
        assert!(!all_text(&audit.events()).contains("tok-SECRET"));
    }
    // Nothing listening: an error outcome, not a panic or a hang.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (store, _, a, id) = local_service(port, loopback_testers(), "t");
    let s = store.tenant(&a, "alice").unwrap();
    assert_eq!(s.test(&id).unwrap().status, TestStatus::Error);
    // A type without a tester registered.
    let (store, _, a, id) = local_service(port, TesterRegistry::empty(), "t");
    let s = store.tenant(&a, "alice").unwrap();
    assert!(matches!(s.test(&id), Err(StoreError::Unsupported(_))));
}

#[test]
fn secrets_never_reach_debug_or_errors() {
    let f = fixture_with(Arc::new(MemoryStorage::new()), |c| c);
    let new = login("dbg", "CANARY-PASSWORD-42");
    assert!(!format!("{new:?}").contains("CANARY"));
    let s = f.store.tenant(&f.a, "alice").unwrap();
    let info = s.create(new).unwrap();
    assert!(!format!("{info:?}").contains("CANARY"));
    assert!(!serde_json::to_string(&info).unwrap().contains("CANARY"));
    let upd = CredentialUpdate::new().fields(json!({"password": "CANARY-2"}));
    assert!(!format!("{upd:?}").contains("CANARY"));
    assert!(!format!("{:?}", f.store).contains("CANARY"));
    assert!(!all_text(&f.audit.events()).contains("CANARY"));
    let _ = actions(&f.audit);
}

#[test]
fn reveal_many_checks_everything_first_and_audits_one_event_per_credential() {
    for (name, storage) in backends() {
        let f = fixture_with(storage, |c| c);
        let s = f.store.tenant(&f.a, "runner").unwrap();
        let one = s.create(login("one", "first secret value")).unwrap();
        let two = s.create(login("two", "second secret value")).unwrap();
        let off = s
            .create(login("off", "third secret value").inactive())
            .unwrap();
        let (one, two, off) = (one.id.clone(), two.id.clone(), off.id.clone());
        let before = f.audit.events().len();
        let got = s
            .reveal_many(
                &[
                    (one.clone(), vec!["password".into(), "username".into()]),
                    (two.clone(), vec!["password".into()]),
                ],
                Some("deploy.sh"),
            )
            .unwrap();
        assert_eq!(got.len(), 2, "{name}");
        assert_eq!(got[0].expose_secret("password"), Some("first secret value"));
        assert_eq!(got[0].expose_secret("username"), Some("ops@example.com"));
        assert_eq!(
            got[1].expose_secret("password"),
            Some("second secret value")
        );
        let events = f.audit.events();
        let new = &events[before..];
        assert_eq!(new.len(), 2, "{name}: one accessed event per credential");
        for (e, id) in new.iter().zip([&one, &two]) {
            assert_eq!(e.action, Action::Accessed);
            assert_eq!(e.resource.id.as_deref(), Some(id.as_str()));
            match &e.details {
                Some(Details::Accessed { service, .. }) => {
                    assert_eq!(service.as_deref(), Some("deploy.sh"));
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(!all_text(new).contains("secret value"));

        // One refused credential: nothing is revealed and no access is recorded.
        let before = f.audit.events().len();
        let err = s
            .reveal_many(
                &[
                    (one.clone(), vec!["password".into()]),
                    (off, vec!["password".into()]),
                ],
                Some("deploy.sh"),
            )
            .unwrap_err();
        assert!(matches!(err, StoreError::AccessDenied { .. }), "{err:?}");
        assert!(actions(&f.audit)[before..]
            .iter()
            .all(|a| a == "access_denied"));
        // A field that does not exist: refused before any event.
        let before = f.audit.events().len();
        let err = s
            .reveal_many(&[(two, vec!["nope".into()])], None)
            .unwrap_err();
        assert!(matches!(err, StoreError::Field { .. }), "{err:?}");
        assert_eq!(f.audit.events().len(), before);
        // Fail closed: when the batch cannot be recorded, no value comes out.
        f.audit.fail_with(Some("disk full"));
        let err = s
            .reveal_many(&[(one, vec!["password".into()])], None)
            .unwrap_err();
        assert!(matches!(err, StoreError::Audit(_)), "{err:?}");
    }
}

#[test]
fn a_credential_moves_to_another_environment_with_its_secrets_sealed_again() {
    for (name, storage) in backends() {
        let f = fixture_with(storage, |c| c);
        let s = f.store.tenant(&f.a, "alice").unwrap();
        let info = s.create(login("bank", "moving secret")).unwrap();
        s.create(login("bank", "staging secret").environment("staging"))
            .unwrap();
        // The name is taken in staging: refused, nothing changed.
        let taken = s.update(&info.id, CredentialUpdate::new().environment("staging"));
        assert!(
            matches!(taken, Err(StoreError::NameTaken { .. })),
            "{name}: {taken:?}"
        );
        assert_eq!(s.get(&info.id).unwrap().environment, "production");
        // Moved to dev: found there only; the secrets open under the new context (a reveal
        // opens them with the row's environment), the authenticator key still gives codes.
        let moved = s
            .update(&info.id, CredentialUpdate::new().environment("dev"))
            .unwrap();
        assert_eq!(moved.environment, "dev", "{name}");
        assert_eq!(s.find("bank", "dev").unwrap().id, info.id);
        assert!(matches!(
            s.find("bank", "production"),
            Err(StoreError::NotFound { .. })
        ));
        let r = s.reveal(&info.id, &["password"], None).unwrap();
        assert_eq!(r.expose_secret("password"), Some("moving secret"), "{name}");
        s.totp_code(&info.id, None).unwrap();
        // A patch and a move at once: both applied.
        s.update(
            &info.id,
            CredentialUpdate::new()
                .environment("qa")
                .fields(json!({"password": "moved and changed"})),
        )
        .unwrap();
        let r = s.reveal(&info.id, &["password"], None).unwrap();
        assert_eq!(r.expose_secret("password"), Some("moved and changed"));
        let ev = f.audit.events();
        let moves: Vec<_> = ev
            .iter()
            .filter_map(|e| match &e.details {
                Some(Details::Updated { changes }) => changes
                    .iter()
                    .find(|c| c.field() == "environment")
                    .map(|c| (c.old().map(str::to_owned), c.new_value().map(str::to_owned))),
                _ => None,
            })
            .collect();
        assert_eq!(
            moves,
            [
                (Some("production".into()), Some("dev".into())),
                (Some("dev".into()), Some("qa".into()))
            ],
            "{name}"
        );
        assert!(!all_text(&ev).contains("moving secret"));
    }
}
