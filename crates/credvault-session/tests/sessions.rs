//! Saved browser states, settings, leases and the login flow against a real vault on disk
//! (SQLite and the file audit log), with the store's clock under the test's control.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use credvault_session::{
    BrowserState, LeaseKind, SessionConfig, SessionError, Sessions, StoreKinds,
};
use credvault_store::audit::{AuditEvent, Details};
use credvault_store::{
    CredentialId, CredentialUpdate, ManualClock, NewCredential, Store, StoreConfig, StoreError,
    TenantId, Vault, VaultOptions,
};

const T0: i64 = 1_800_000_000_000;
const STATE: &str = r#"{"cookies":[{"name":"sid","value":"cookie-s3cr3t","domain":"portal.example.com","path":"/","expires":-1,"httpOnly":true,"secure":true,"sameSite":"Lax"}],
  "origins":[{"origin":"https://portal.example.com","localStorage":[{"name":"token","value":"local-s3cr3t"}],"sessionStorage":[{"name":"tab","value":"session-s3cr3t"}]}]}"#;

struct Env {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    _vault: Vault,
    store: Store,
    tenant: TenantId,
    portal: CredentialId,
    other: CredentialId,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let vault = Vault::open_or_init(
        dir.path(),
        VaultOptions::default().store(StoreConfig::default().clock(clock.clone())),
    )
    .unwrap();
    let store = vault.store().clone();
    let tenant = TenantId::new("acme").unwrap();
    store.create_tenant(&tenant, "Acme", "admin").unwrap();
    store
        .create_tenant(&TenantId::new("globex").unwrap(), "Globex", "admin")
        .unwrap();
    let scope = store.tenant(&tenant, "robot").unwrap();
    let mk = |name: &str| {
        scope
            .create(NewCredential::new(
                "website_login",
                name,
                serde_json::json!({"login_url": "https://portal.example.com/login",
                    "username": "robot", "password": "pw-s3cr3t",
                    "totp_secret": "JBSWY3DPEHPK3PXP"}),
            ))
            .unwrap()
            .id
    };
    let portal = mk("portal");
    let other = mk("other");
    Env {
        clock,
        _vault: vault,
        store,
        tenant,
        portal,
        other,
        dir,
    }
}

impl Env {
    fn sessions(&self) -> Sessions {
        Sessions::open_in(self.dir.path(), self.store.clone()).unwrap()
    }

    fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.dir.path().join("sessions.db")).unwrap()
    }

    fn events(&self) -> Vec<AuditEvent> {
        use credvault_store::audit::{read_event_files, segment_paths, Query};
        let segs = segment_paths(&Vault::audit_dir(self.dir.path())).unwrap();
        read_event_files(&segs, &Query::new())
            .unwrap()
            .events
            .into_iter()
            .map(|e| e.event)
            .collect()
    }

    fn actions(&self) -> Vec<String> {
        self.events()
            .iter()
            .map(|e| e.action.as_str().to_owned())
            .collect()
    }
}

fn state() -> BrowserState {
    BrowserState::parse(STATE).unwrap()
}

#[test]
fn a_state_is_sealed_restored_and_never_written_in_clear() {
    let e = env();
    let s = e.sessions();
    let scope = e.store.tenant(&e.tenant, "robot").unwrap();
    assert!(s.load(&scope, &e.portal, "default").unwrap().is_none());
    let info = s.save(&scope, &e.portal, "default", &state()).unwrap();
    assert_eq!(info.version, 1);
    assert_eq!(info.created_at, T0);
    // Default kinds: cookies and local storage; session storage dropped.
    let back = s.load(&scope, &e.portal, "default").unwrap().unwrap();
    let json = back.expose_json();
    assert!(json.contains("cookie-s3cr3t") && json.contains("local-s3cr3t"));
    assert!(!json.contains("session-s3cr3t"));
    // No value on disk in the clear: the session database, its WAL, the audit log.
    drop(s);
    for entry in walk(e.dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        for needle in ["cookie-s3cr3t", "local-s3cr3t", "session-s3cr3t"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle} in {}",
                entry.display()
            );
        }
    }
    let actions = e.actions();
    assert!(actions.contains(&"session_saved".to_owned()));
    assert!(actions.contains(&"session_restored".to_owned()));
    // Another tenant's scope sees nothing of it and cannot open it.
    let globex = e
        .store
        .tenant(&TenantId::new("globex").unwrap(), "x")
        .unwrap();
    assert!(s_list(&e, &globex).is_empty());
    assert!(matches!(
        e.sessions().load(&globex, &e.portal, "default"),
        Ok(None)
    ));
}

fn s_list(e: &Env, scope: &credvault_store::Scope<'_>) -> Vec<credvault_session::SessionInfo> {
    e.sessions().list(scope).unwrap()
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn session_storage_is_kept_only_when_configured() {
    let e = env();
    let s = e.sessions();
    let scope = e.store.tenant(&e.tenant, "robot").unwrap();
    s.configure(
        &scope,
        &e.portal,
        &SessionConfig::default().store(StoreKinds::parse("cookies,session").unwrap()),
    )
    .unwrap();
    s.save(&scope, &e.portal, "p1", &state()).unwrap();
    let back = s.load(&scope, &e.portal, "p1").unwrap().unwrap();
    let json = back.expose_json();
    assert!(json.contains("cookie-s3cr3t") && json.contains("session-s3cr3t"));
    assert!(!json.contains("local-s3cr3t"));
    s.configure(
        &scope,
        &e.portal,
        &SessionConfig::default().store(StoreKinds::parse("").unwrap()),
    )
    .unwrap();
    assert!(matches!(
        s.save(&scope, &e.portal, "p1", &state()),
        Err(SessionError::Refused(_))
    ));
}

#[test]
fn a_blob_opens_only_for_its_own_credential_profile_and_version() {
    let e = env();
    let scope = e.store.tenant(&e.tenant, "robot").unwrap();
    let sealed = scope
        .seal_attachment(&e.portal, "browser-state:default:v1", b"state")
        .unwrap();
    assert_eq!(
        scope
            .open_attachment(&e.portal, "browser-state:default:v1", &sealed)
            .unwrap()
            .expose_secret(),
        b"state"
    );
    for (id, name) in [
        (&e.other, "browser-state:default:v1"),
        (&e.portal, "browser-state:work:v1"),
        (&e.portal, "browser-state:default:v2"),
    ] {
        assert!(matches!(
            scope.open_attachment(id, name, &sealed),
            Err(StoreError::AttachmentDoesNotOpen { .. })
        ));
    }
    let globex = e
        .store
        .tenant(&TenantId::new("globex").unwrap(), "x")
        .unwrap();
    assert!(matches!(
        globex.open_attachment(&e.portal, "browser-state:default:v1", &sealed),
        Err(StoreError::NotFound { .. })
    ));
    // Through the session database: a row moved to another profile does not authenticate.
    let s = e.sessions();
    s.save(&scope, &e.portal, "default", &state()).unwrap();
    let db = e.db();
    db.execute(
        "UPDATE session_state SET profile = 'work' WHERE profile = 'default'",
        [],
    )
    .unwrap();
    assert!(matches!(
        s.load(&scope, &e.portal, "work"),
        Err(SessionError::Integrity { record: "session" })
    ));
    db.execute(
        "UPDATE session_state SET credential = ?1 WHERE profile = 'work'",
        [e.other.as_str()],
    )
    .unwrap();
    assert!(matches!(
        s.load(&scope, &e.other, "work"),
        Err(SessionError::Integrity { .. })
    ));
}

#[test]
fn an_older_state_put_back_over_a_newer_one_is_refused() {
    let e = env();
    let s = e.sessions();
    let scope = e.store.tenant(&e.tenant, "robot").unwrap();
    s.save(&scope, &e.portal, "default", &state()).unwrap();
    let db = e.db();
    let old: (i64, i64, i64, Vec<u8>, Vec<u8>) = db
        .query_row(
            "SELECT version, created_at, last_used_at, sealed, mac FROM session_state",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    e.clock.advance(1000);
    assert_eq!(
        s.save(&scope, &e.portal, "default", &state())
            .unwrap()
            .version,
        2
    );
    db.execute(
        "UPDATE session_state SET version = ?1, created_at = ?2, last_used_at = ?3, sealed = ?4, mac = ?5",
        rusqlite::params![old.0, old.1, old.2, old.3, old.4],
    )
    .unwrap();
    assert!(matches!(
        s.load(&scope, &e.portal, "default"),
        Err(SessionError::Integrity { .. })
    ));
    assert!(e.events().iter().any(|ev| ev.action.as_str() == "integrity_failure"
        && matches!(&ev.details, Some(Details::Session { reason: Some(r), .. }) if r.contains("older"))));
    // A removal keeps the high-water mark: the old row put back after it is refused too.
    s.remove(&scope, &e.portal, None).unwrap();
    db.execute(
        "INSERT INTO session_state VALUES ('acme', ?1, 'default', ?2, ?3, ?4, ?5, ?6)",
        rusqlite::params![e.portal.as_str(), old.0, old.1, old.2, old.3, old.4],
    )
    .unwrap();
    assert!(matches!(
        s.load(&scope, &e.portal, "default"),
        Err(SessionError::Integrity { .. })
    ));
}

#[test]
fn states_expire_by_idle_time_and_by_age_and_are_swept() {
    let e = env();
    let s = e.sessions();
    let scope = e.store.tenant(&e.tenant, "robot").unwrap();
    s.configure(
        &scope,
        &e.portal,
        &SessionConfig::default()
            .idle(Some(Duration::from_secs(60)))
            .absolute(Some(Duration::from_secs(300))),
    )
    .unwrap();
    s.save(&scope, &e.portal, "default", &state()).unwrap();
    // Used every 50 s: idle never runs out, but age does at 300 s.
    for _ in 0..5 {
        e.clock.advance(50_000);
        assert!(s.load(&scope, &e.portal, "default").unwrap().is_some());
    }
    e.clock.advance(50_000); // 300 s after the login
    assert!(s.load(&scope, &e.portal, "default").unwrap().is_none());
    assert!(s.list(&scope).unwrap().is_empty());
    // Idle: saved, then left alone for 60 s.
    s.save(&scope, &e.portal, "default", &state()).unwrap();
    e.clock.advance(59_999);
    assert!(s.load(&scope, &e.portal, "default").unwrap().is_some());
    e.clock.advance(60_000);
    assert!(s.load(&scope, &e.portal, "default").unwrap().is_none());
    // The sweeper: one expired, one live, one of a deleted credential.
    s.save(&scope, &e.portal, "a", &state()).unwrap();
    s.save(&scope, &e.other, "b", &state()).unwrap();
    e.clock.advance(30_000);
    s.save(&scope, &e.portal, "c", &state()).unwrap();
    e.clock.advance(31_000);
    scope.delete(&e.other, None).unwrap();
    assert_eq!(s.sweep().unwrap(), 2);
    let left: Vec<String> = s
        .list(&scope)
        .unwrap()
        .into_iter()
        .map(|i| i.profile)
        .collect();
    assert_eq!(left, ["c"]);
    let expired = e
        .events()
        .iter()
        .filter(|ev| ev.action.as_str() == "session_expired")
        .count();
    assert_eq!(expired, 4);
}

#[test]
fn settings_changed_in_the_database_are_refused() {
    let e = env();
    let s = e.sessions();
    let scope = e.store.tenant(&e.tenant, "robot").unwrap();
    s.configure(&scope, &e.portal, &SessionConfig::default().multiple(false))
        .unwrap();
    e.db()
        .execute(
            "UPDATE session_config SET body = replace(body, '\"multiple\":false', '\"multiple\":true')",
            [],
        )
        .unwrap();
    assert!(matches!(
        s.config(&scope, &e.portal),
        Err(SessionError::Integrity {
            record: "session config"
        })
    ));
    assert!(matches!(
        s.acquire(
            &scope,
            &e.portal,
            LeaseKind::Run,
            Duration::from_secs(5),
            Duration::ZERO
        ),
        Err(SessionError::Integrity { .. })
    ));
}

#[test]
fn a_deactivated_credential_has_no_session() {
    let e = env();
    let s = e.sessions();
    let scope = e.store.tenant(&e.tenant, "robot").unwrap();
    s.save(&scope, &e.portal, "default", &state()).unwrap();
    scope
        .update(&e.portal, CredentialUpdate::default().active(false))
        .unwrap();
    assert!(matches!(
        s.load(&scope, &e.portal, "default"),
        Err(SessionError::Store(StoreError::AccessDenied { .. }))
    ));
}

#[test]
fn leases_keep_the_limit_and_a_login_alone() {
    let e = env();
    let s = e.sessions();
    let scope = e.store.tenant(&e.tenant, "robot").unwrap();
    s.configure(
        &scope,
        &e.portal,
        &SessionConfig::default().max_concurrent(Some(2)),
    )
    .unwrap();
    let ttl = Duration::from_secs(30);
    let a = s
        .acquire(&scope, &e.portal, LeaseKind::Run, ttl, Duration::ZERO)
        .unwrap();
    let b = s
        .acquire(&scope, &e.portal, LeaseKind::Run, ttl, Duration::ZERO)
        .unwrap();
    assert!(matches!(
        s.acquire(
            &scope,
            &e.portal,
            LeaseKind::Run,
            ttl,
            Duration::from_millis(50)
        ),
        Err(SessionError::WaitTimedOut { kind: "run", .. })
    ));
    assert!(matches!(
        s.acquire(
            &scope,
            &e.portal,
            LeaseKind::Login,
            ttl,
            Duration::from_millis(50)
        ),
        Err(SessionError::WaitTimedOut { kind: "login", .. })
    ));
    // Another credential is not affected.
    let o = s
        .acquire(&scope, &e.other, LeaseKind::Login, ttl, Duration::ZERO)
        .unwrap();
    a.release().unwrap();
    b.release().unwrap();
    let login = s
        .acquire(&scope, &e.portal, LeaseKind::Login, ttl, Duration::ZERO)
        .unwrap();
    assert!(matches!(
        s.acquire(
            &scope,
            &e.portal,
            LeaseKind::Run,
            ttl,
            Duration::from_millis(50)
        ),
        Err(SessionError::WaitTimedOut { .. })
    ));
    login.release().unwrap();
    o.release().unwrap();
    // Without the login lock a login is one more run.
    s.configure(
        &scope,
        &e.portal,
        &SessionConfig::default()
            .login_lock(false)
            .max_concurrent(Some(2)),
    )
    .unwrap();
    let r = s
        .acquire(&scope, &e.portal, LeaseKind::Run, ttl, Duration::ZERO)
        .unwrap();
    let l = s
        .acquire(&scope, &e.portal, LeaseKind::Login, ttl, Duration::ZERO)
        .unwrap();
    assert_eq!(s.leases(&scope, &e.portal).unwrap().len(), 2);
    drop((r, l)); // dropping releases
    assert!(s.leases(&scope, &e.portal).unwrap().is_empty());
    let actions = e.actions();
    assert_eq!(actions.iter().filter(|a| *a == "lease_acquired").count(), 6);
    assert_eq!(actions.iter().filter(|a| *a == "lease_released").count(), 6);
}

#[test]
fn a_holder_that_stops_renewing_loses_its_lease_to_the_next_waiter() {
    let e = env();
    let s = e.sessions();
    let scope = e.store.tenant(&e.tenant, "robot").unwrap();
    s.configure(&scope, &e.portal, &SessionConfig::default().multiple(false))
        .unwrap();
    let mut crashed = s
        .acquire(
            &scope,
            &e.portal,
            LeaseKind::Run,
            Duration::from_secs(10),
            Duration::ZERO,
        )
        .unwrap();
    e.clock.advance(9_000);
    crashed.renew().unwrap();
    e.clock.advance(9_000);
    assert!(matches!(
        s.acquire(
            &scope,
            &e.portal,
            LeaseKind::Run,
            Duration::from_secs(10),
            Duration::ZERO
        ),
        Err(SessionError::WaitTimedOut { .. })
    ));
    e.clock.advance(1_001);
    let next = s
        .acquire(
            &scope,
            &e.portal,
            LeaseKind::Run,
            Duration::from_secs(10),
            Duration::ZERO,
        )
        .unwrap();
    assert!(matches!(
        crashed.renew(),
        Err(SessionError::LeaseLost { .. })
    ));
    std::mem::forget(crashed);
    next.release().unwrap();
    assert!(e.actions().contains(&"lease_expired".to_owned()));
}

#[test]
fn an_edited_lease_is_refused() {
    let e = env();
    let s = e.sessions();
    let scope = e.store.tenant(&e.tenant, "robot").unwrap();
    let held = s
        .acquire(
            &scope,
            &e.portal,
            LeaseKind::Login,
            Duration::from_secs(10),
            Duration::ZERO,
        )
        .unwrap();
    // Shortening a login lease's expiry in the database would let a run in early.
    e.db()
        .execute("UPDATE leases SET kind = 'run'", [])
        .unwrap();
    assert!(matches!(
        s.acquire(
            &scope,
            &e.portal,
            LeaseKind::Run,
            Duration::from_secs(10),
            Duration::ZERO
        ),
        Err(SessionError::Integrity { record: "lease" })
    ));
    std::mem::forget(held);
}

#[test]
fn waiters_are_served_first_in_first_out() {
    let e = env();
    let s = Arc::new(e.sessions());
    let store = e.store.clone();
    let scope = store.tenant(&e.tenant, "robot").unwrap();
    s.configure(&scope, &e.portal, &SessionConfig::default().multiple(false))
        .unwrap();
    let first = s
        .acquire(
            &scope,
            &e.portal,
            LeaseKind::Run,
            Duration::from_secs(30),
            Duration::ZERO,
        )
        .unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let (s, store, order, t, id) = (
                s.clone(),
                store.clone(),
                order.clone(),
                e.tenant.clone(),
                e.portal.clone(),
            );
            // Each joins the queue after the one before it.
            std::thread::sleep(Duration::from_millis(80));
            std::thread::spawn(move || {
                let scope = store.tenant(&t, format!("w{i}")).unwrap();
                let kind = if i == 2 {
                    LeaseKind::Login
                } else {
                    LeaseKind::Run
                };
                let l = s
                    .acquire(
                        &scope,
                        &id,
                        kind,
                        Duration::from_secs(30),
                        Duration::from_secs(20),
                    )
                    .unwrap();
                order.lock().unwrap().push(i);
                std::thread::sleep(Duration::from_millis(20));
                l.release().unwrap();
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    first.release().unwrap();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3]);
}

#[test]
fn with_session_logs_in_once_for_concurrent_callers() {
    let e = env();
    let s = Arc::new(
        e.sessions()
            .login_timeouts(Duration::from_secs(30), Duration::from_secs(30)),
    );
    let logins = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(3));
    let handles: Vec<_> = (0..3)
        .map(|i| {
            let (s, store, logins, barrier, t, id) = (
                s.clone(),
                e.store.clone(),
                logins.clone(),
                barrier.clone(),
                e.tenant.clone(),
                e.portal.clone(),
            );
            std::thread::spawn(move || {
                let scope = store.tenant(&t, format!("run{i}")).unwrap();
                barrier.wait();
                let out = s
                    .with_session(&scope, &id, "default", |ctx| {
                        logins.fetch_add(1, Ordering::SeqCst);
                        let f = ctx.reveal(&["username", "password"])?;
                        assert_eq!(f.expose_secret("password"), Some("pw-s3cr3t"));
                        let code = ctx.totp_code()?;
                        assert_eq!(code.expose_secret().len(), 6);
                        ctx.heartbeat()?;
                        std::thread::sleep(Duration::from_millis(200));
                        Ok(BrowserState::parse(STATE)?)
                    })
                    .unwrap();
                assert!(out.state().expose_json().contains("cookie-s3cr3t"));
                out.logged_in()
            })
        })
        .collect();
    let logged_in: usize = handles
        .into_iter()
        .map(|h| usize::from(h.join().unwrap()))
        .sum();
    assert_eq!(logins.load(Ordering::SeqCst), 1);
    assert_eq!(logged_in, 1);
    let actions = e.actions();
    for a in ["login_started", "login_succeeded", "session_saved"] {
        assert_eq!(actions.iter().filter(|x| *x == a).count(), 1, "{a}");
    }
    assert_eq!(
        actions.iter().filter(|x| *x == "session_restored").count(),
        2
    );
    // A failing login saves nothing and is recorded.
    let scope = e.store.tenant(&e.tenant, "robot").unwrap();
    let err = s
        .with_session(&scope, &e.other, "default", |_| Err("captcha".into()))
        .unwrap_err();
    assert!(matches!(err, SessionError::Login(m) if m == "captcha"));
    assert!(s.load(&scope, &e.other, "default").unwrap().is_none());
    assert!(e.actions().contains(&"login_failed".to_owned()));
    assert!(s.leases(&scope, &e.other).unwrap().is_empty());
}

#[test]
fn a_kept_lease_is_renewed_and_released_by_id_only_in_its_own_scope() {
    let e = env();
    let s = e.sessions();
    let scope = e.store.tenant(&e.tenant, "robot").unwrap();
    let ttl = Duration::from_secs(10);
    let (id, expires) = s
        .acquire(&scope, &e.portal, LeaseKind::Login, ttl, Duration::ZERO)
        .unwrap()
        .keep();
    assert_eq!(expires, T0 + 10_000);
    // Still held after the value was dropped.
    assert_eq!(s.leases(&scope, &e.portal).unwrap().len(), 1);
    e.clock.advance(5_000);
    assert_eq!(
        s.renew_lease(&scope, &e.portal, &id, ttl).unwrap(),
        T0 + 15_000
    );
    // Another credential, another tenant, an unknown id: not this lease.
    assert!(matches!(
        s.renew_lease(&scope, &e.other, &id, ttl),
        Err(SessionError::LeaseLost { .. })
    ));
    let globex = e
        .store
        .tenant(&TenantId::new("globex").unwrap(), "x")
        .unwrap();
    assert!(matches!(
        s.release_lease(&globex, &e.portal, &id),
        Err(SessionError::LeaseLost { .. })
    ));
    assert!(matches!(
        s.release_lease(&scope, &e.portal, "0000"),
        Err(SessionError::LeaseLost { .. })
    ));
    s.release_lease(&scope, &e.portal, &id).unwrap();
    assert!(s.leases(&scope, &e.portal).unwrap().is_empty());
    assert!(matches!(
        s.renew_lease(&scope, &e.portal, &id, ttl),
        Err(SessionError::LeaseLost { .. })
    ));
}

#[test]
fn a_tenant_key_rotation_shreds_saved_states() {
    let e = env();
    let s = e.sessions();
    let scope = e.store.tenant(&e.tenant, "robot").unwrap();
    s.save(&scope, &e.portal, "default", &state()).unwrap();
    let sealed_before: Vec<u8> = e
        .db()
        .query_row("SELECT sealed FROM session_state", [], |r| r.get(0))
        .unwrap();
    let r = scope.rotate_key(&mut |_| {}).unwrap();
    assert_eq!(r.retired.len(), 1, "the old key is retired");
    // The state sealed under the retired key no longer opens: it is gone, recorded why.
    assert!(s.load(&scope, &e.portal, "default").unwrap().is_none());
    assert!(e.events().iter().any(|ev| ev.action.as_str() == "session_expired"
        && matches!(&ev.details, Some(Details::Session { reason: Some(r), .. }) if r.contains("retired"))));
    // Even the bytes kept from before do not open under any key the tenant has now.
    assert!(scope
        .open_attachment(&e.portal, "browser-state:default:v1", &sealed_before)
        .is_err());
}
