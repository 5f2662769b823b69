//! The storage contract (`credvault_store::Storage`): every backend (memory, SQLite, and the
//! PostgreSQL backend to come) must pass [`storage_conformance`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use credvault_envelope::KeyId;
use credvault_store::schema::RevealPolicy;
use credvault_store::storage::{
    AuditChain, AuditHead, CredentialRow, DataKeyRow, HookError, KeyState, Reseal, TenantRow,
    TestRecord,
};
use credvault_store::{CredentialId, ListFilter, OtpThrottle, Storage, StorageError, TenantId};

use crate::Violation;

fn v(rule: &'static str, detail: impl Into<String>) -> Violation {
    Violation {
        suite: "storage",
        rule,
        detail: detail.into(),
    }
}

fn ok<T>(r: Result<T, StorageError>, rule: &'static str) -> Result<T, Violation> {
    r.map_err(|e| v(rule, format!("unexpected error: {e}")))
}

fn ensure(
    cond: bool,
    rule: &'static str,
    detail: impl FnOnce() -> String,
) -> Result<(), Violation> {
    if cond {
        Ok(())
    } else {
        Err(v(rule, detail()))
    }
}

fn tid(s: &str) -> TenantId {
    // Fixed valid ids.
    TenantId::new(s).unwrap_or_else(|_| unreachable!("valid tenant id"))
}

fn cid(n: u8) -> CredentialId {
    CredentialId::parse(&format!("cred_{:032x}", u128::from(n)))
        .unwrap_or_else(|_| unreachable!("valid credential id"))
}

fn key(n: u8) -> KeyId {
    KeyId::from_bytes([n; 16])
}

fn key_row(t: &TenantId, k: KeyId, state: KeyState) -> DataKeyRow {
    DataKeyRow {
        tenant: t.clone(),
        key_id: k,
        wrapped: vec![k.as_bytes()[0]; 40],
        state,
        usage: 0,
        created_at: 1_000,
        mac: vec![0xD0, k.as_bytes()[0]],
    }
}

fn row(t: &TenantId, id: CredentialId, name: &str, k: KeyId) -> CredentialRow {
    CredentialRow {
        id,
        tenant: t.clone(),
        name: name.into(),
        type_name: "api_key".into(),
        environment: "production".into(),
        description: "d".into(),
        tags: vec!["a".into(), "b".into()],
        is_active: true,
        expires_at: None,
        created_by: "conformance".into(),
        created_at: 1_000,
        updated_at: 1_000,
        version: 1,
        last_used_at: None,
        last_tested: None,
        test_status: None,
        test_message: None,
        public: r#"{"region":"eu"}"#.into(),
        secret_fields: vec!["api_key".into()],
        key_id: k,
        secret: vec![1, 2, 3, 4, 5],
        reveal: [("api_key".to_owned(), RevealPolicy::UseOnly)].into(),
        mac: vec![0xC0; 33],
    }
}

struct Hooks {
    calls: AtomicUsize,
}

impl Hooks {
    fn new() -> Self {
        Self {
            calls: AtomicUsize::new(0),
        }
    }

    fn pass(
        &self,
        seq: u64,
    ) -> impl FnMut(&mut dyn AuditChain) -> Result<Option<AuditHead>, HookError> + '_ {
        move |_| {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(Some(head(seq)))
        }
    }

    fn fail(&self) -> impl FnMut(&mut dyn AuditChain) -> Result<Option<AuditHead>, HookError> + '_ {
        |_| {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Err(HookError::Refused("sink down".into()))
        }
    }

    fn count(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// Two tenants, `a` (key 1) and `b` (key 2).
/// The head the passing hook returns for `seq`.
fn head(seq: u64) -> AuditHead {
    AuditHead {
        seq,
        hash: [seq as u8; 32],
        tag: Some([seq as u8 ^ 0xa5; 32]),
    }
}

fn setup(s: &dyn Storage) -> Result<(TenantId, TenantId), Violation> {
    let (a, b) = (tid("conf-a"), tid("conf-b"));
    let h = Hooks::new();
    for (t, k) in [(&a, 1), (&b, 2)] {
        ok(
            s.create_tenant(
                &TenantRow {
                    id: t.clone(),
                    name: t.to_string(),
                    created_at: 1_000,
                },
                &key_row(t, key(k), KeyState::Active),
                &mut h.pass(1),
            ),
            "tenants can be created",
        )?;
    }
    Ok((a, b))
}

/// Runs the storage contract. `fresh` must return a new, empty backend on each call.
///
/// Rules checked: tenants and their keys round-trip, a duplicate tenant is refused; rows
/// round-trip field for field; no method reads, writes or counts across tenants; unique active
/// (name, environment); a row may name only its tenant's keys; optimistic versions on update
/// and delete; a failing commit hook leaves every table unchanged and a passing one stores its
/// head in the same transaction; usage reservations add up; wrapped keys are replaced only
/// from the expected value; rotation marks keys retiring, reseal skips rows that changed, and
/// a key is retired only when nothing names it; heads are stored with their tags and never
/// replaced by an untagged copy, `authenticate_head` runs with its hook; HOTP counters move
/// only forwards from their current value, one taker per counter; list filters and the
/// rotation cursor; the
/// replay step rules; OTP throttle windows and lock-outs; 8 threads racing on one version: exactly one wins.
pub fn storage_conformance(fresh: &dyn Fn() -> Arc<dyn Storage>) -> Result<(), Violation> {
    tenants(&*fresh())?;
    rows_and_isolation(&*fresh())?;
    uniqueness_and_keys(&*fresh())?;
    versions_and_hooks(&*fresh())?;
    rotation(&*fresh())?;
    filters(&*fresh())?;
    replay(&*fresh())?;
    otp_throttle(&*fresh())?;
    race(fresh())?;
    record_macs(&*fresh())?;
    heads(&*fresh())?;
    hotp(fresh())?;
    Ok(())
}

/// HOTP counters: `initial` until one is stored, moved only from the current value and only
/// forwards, per key, reset on request; concurrent takers each get a distinct counter.
fn hotp(s: Arc<dyn Storage>) -> Result<(), Violation> {
    ensure(
        ok(s.hotp_counter("t/a", 7), "read")? == 7,
        "an absent counter is the initial one",
        || "not 7".into(),
    )?;
    let moved = ok(s.advance_hotp_counter("t/a", 7, 7, 8), "advance")?;
    let stale = ok(s.advance_hotp_counter("t/a", 7, 7, 9), "advance")?;
    let back = ok(s.advance_hotp_counter("t/a", 7, 8, 3), "advance")?;
    let same = ok(s.advance_hotp_counter("t/a", 7, 8, 8), "advance")?;
    let now = ok(s.hotp_counter("t/a", 7), "read")?;
    ensure(
        moved && !stale && !back && !same && now == 8,
        "a counter moves only from its current value, and only forwards",
        || format!("moved={moved} stale={stale} back={back} same={same} now={now}"),
    )?;
    let jump = ok(s.advance_hotp_counter("t/a", 7, 8, 20), "advance")?;
    let other = ok(s.hotp_counter("t/b", 0), "read")?;
    ensure(
        jump && ok(s.hotp_counter("t/a", 7), "read")? == 20 && other == 0,
        "a counter may jump ahead (resynchronisation), and keys are independent",
        || format!("jump={jump} other={other}"),
    )?;
    ok(s.reset_hotp_counter("t/a"), "reset")?;
    ensure(
        ok(s.hotp_counter("t/a", 5), "read")? == 5,
        "a reset counter is the initial one again",
        || "not reset".into(),
    )?;
    let taken = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|sc| {
        for _ in 0..4 {
            let (s, taken) = (&s, &taken);
            sc.spawn(move || {
                for _ in 0..25 {
                    for _ in 0..1_000 {
                        let Ok(c) = s.hotp_counter("t/race", 0) else {
                            return;
                        };
                        if let Ok(true) = s.advance_hotp_counter("t/race", 0, c, c + 1) {
                            if let Ok(mut t) = taken.lock() {
                                t.push(c);
                            }
                            break;
                        }
                    }
                }
            });
        }
    });
    let mut t = taken.into_inner().unwrap_or_default();
    t.sort_unstable();
    let expected: Vec<u64> = (0..100).collect();
    let end = ok(s.hotp_counter("t/race", 0), "read")?;
    ensure(
        t == expected && end == 100,
        "4 takers × 25: counters 0..100 each taken once",
        || format!("taken {} distinct of 100, counter at {end}", t.len()),
    )
}

/// Heads are stored whole (tag included), a new storage has tagged heads, an untagged copy of
/// the stored record never replaces the tagged one, and `authenticate_head` is one
/// transaction with its hook.
fn heads(s: &dyn Storage) -> Result<(), Violation> {
    ensure(
        ok(s.heads_authenticated(), "flag")?,
        "a new storage has tagged heads",
        || "heads_authenticated is false".into(),
    )?;
    let (t, _) = setup(s)?;
    let stored = ok(s.audit_head(), "head")?;
    ensure(
        stored == Some(head(1)),
        "the hook's head is stored with its tag",
        || format!("{stored:?}"),
    )?;
    let untagged = AuditHead {
        tag: None,
        ..head(1)
    };
    ok(s.record_use(&t, &[], Some(untagged)), "use")?;
    let stored = ok(s.audit_head(), "head")?;
    ensure(
        stored == Some(head(1)),
        "an untagged head of the same record does not replace the tagged one",
        || format!("{stored:?}"),
    )?;
    let h = Hooks::new();
    let r = s.authenticate_head(&mut h.fail());
    ensure(
        matches!(r, Err(StorageError::Hook(_))) && ok(s.audit_head(), "head")? == Some(head(1)),
        "a failing hook refuses authenticate_head",
        || format!("{r:?}"),
    )?;
    ok(s.authenticate_head(&mut h.pass(9)), "authenticate head")?;
    let stored = ok(s.audit_head(), "head")?;
    ensure(
        stored == Some(head(9)) && ok(s.heads_authenticated(), "flag")?,
        "authenticate_head stores the hook's head and marks the storage",
        || format!("{stored:?}"),
    )
}

/// Record MACs are stored verbatim, a reseal replaces one, and `authenticate_records` fills
/// only empty MACs of the version given, marking the storage authenticated.
fn record_macs(s: &dyn Storage) -> Result<(), Violation> {
    let h = Hooks::new();
    let t = tid("conf-mac");
    let tr = TenantRow {
        id: t.clone(),
        name: "M".into(),
        created_at: 5,
    };
    let mut k = key_row(&t, key(1), KeyState::Active);
    k.mac = Vec::new();
    ok(s.create_tenant(&tr, &k, &mut h.pass(1)), "tenant created")?;
    let mut r1 = row(&t, cid(1), "one", key(1));
    r1.mac = Vec::new();
    let r2 = row(&t, cid(2), "two", key(1));
    ok(s.insert_credential(&r1, &mut h.pass(2)), "insert")?;
    ok(s.insert_credential(&r2, &mut h.pass(3)), "insert")?;
    let got = ok(s.credential(&t, &r2.id), "read")?;
    ensure(
        got.as_ref().map(|g| &g.mac) == Some(&r2.mac),
        "a row's MAC is stored verbatim",
        || format!("{got:?}"),
    )?;
    let macs = credvault_store::storage::RecordMacs {
        credentials: vec![
            (t.clone(), r1.id.clone(), 1, vec![1; 33]),
            // Not empty: must stay.
            (t.clone(), r2.id.clone(), 1, vec![2; 33]),
            // Wrong version: must not apply.
            (t.clone(), cid(3), 7, vec![3; 33]),
        ],
        keys: vec![(t.clone(), key(1), vec![4; 33])],
    };
    let n = ok(
        s.authenticate_records(&macs, &mut h.pass(4)),
        "authenticate",
    )?;
    let r1m = ok(s.credential(&t, &r1.id), "read")?.map(|r| r.mac);
    let r2m = ok(s.credential(&t, &r2.id), "read")?.map(|r| r.mac);
    let km = ok(s.data_keys(&t), "keys")?.first().map(|k| k.mac.clone());
    ensure(
        n == 2
            && r1m == Some(vec![1; 33])
            && r2m == Some(r2.mac.clone())
            && km == Some(vec![4; 33])
            && ok(s.records_authenticated(), "flag")?,
        "authenticate_records fills only empty MACs and marks the storage",
        || format!("n={n} r1={r1m:?} r2={r2m:?} key={km:?}"),
    )?;
    let applied = ok(
        s.reseal(
            &t,
            &[Reseal {
                id: r2.id.clone(),
                version: 1,
                old_key: key(1),
                new_key: key(1),
                secret: vec![7],
                mac: vec![9; 33],
            }],
        ),
        "reseal",
    )?;
    let r2m = ok(s.credential(&t, &r2.id), "read")?.map(|r| r.mac);
    ensure(
        applied == 1 && r2m == Some(vec![9; 33]),
        "a reseal replaces the row's MAC",
        || format!("applied={applied} mac={r2m:?}"),
    )
}

fn tenants(s: &dyn Storage) -> Result<(), Violation> {
    let h = Hooks::new();
    let t = tid("conf-t");
    let tr = TenantRow {
        id: t.clone(),
        name: "T".into(),
        created_at: 5,
    };
    let r = s.create_tenant(&tr, &key_row(&t, key(9), KeyState::Active), &mut h.fail());
    ensure(
        matches!(r, Err(StorageError::Hook(_))),
        "a failing hook refuses",
        || format!("{r:?}"),
    )?;
    ensure(
        ok(s.tenant(&t), "tenant reads")?.is_none() && ok(s.data_keys(&t), "keys read")?.is_empty(),
        "a failing hook leaves nothing",
        || "tenant or key present after a refused create".into(),
    )?;
    ok(
        s.create_tenant(&tr, &key_row(&t, key(9), KeyState::Active), &mut h.pass(7)),
        "tenants can be created",
    )?;
    ensure(
        ok(s.tenant(&t), "tenant reads")? == Some(tr.clone()),
        "tenants round-trip",
        || "tenant differs".into(),
    )?;
    ensure(
        ok(s.audit_head(), "head reads")?.map(|h| h.seq) == Some(7),
        "the hook's head is stored",
        || "head not stored".into(),
    )?;
    let r = s.create_tenant(&tr, &key_row(&t, key(10), KeyState::Active), &mut h.pass(8));
    ensure(
        matches!(r, Err(StorageError::TenantExists { .. })),
        "a duplicate tenant is refused",
        || format!("{r:?}"),
    )?;
    let keys = ok(s.data_keys(&t), "keys read")?;
    ensure(
        keys == vec![key_row(&t, key(9), KeyState::Active)],
        "data keys round-trip",
        || format!("{keys:?}"),
    )?;
    ensure(
        ok(s.tenants(), "tenants list")?.len() == 1,
        "tenants are listed",
        || "wrong count".into(),
    )?;
    Ok(())
}

fn rows_and_isolation(s: &dyn Storage) -> Result<(), Violation> {
    let (a, b) = setup(s)?;
    let h = Hooks::new();
    let mut r = row(&a, cid(1), "stripe", key(1));
    r.expires_at = Some(99_000);
    r.test_status = Some("ok".into());
    ok(s.insert_credential(&r, &mut h.pass(2)), "rows insert")?;
    let got = ok(s.credential(&a, &r.id), "rows read")?;
    ensure(
        got.as_ref() == Some(&r),
        "rows round-trip field for field",
        || format!("{got:?}"),
    )?;
    ensure(
        ok(s.credential(&b, &r.id), "rows read")?.is_none()
            && ok(s.credential_by_name(&b, "stripe", "production"), "by name")?.is_none()
            && ok(s.credentials(&b, &ListFilter::default()), "list")?.is_empty()
            && ok(s.credentials_not_under(&b, &key(2), None, 10), "cursor")?.is_empty()
            && ok(s.count_under(&b, &key(1), true), "count")? == 0,
        "no read crosses tenants",
        || "tenant b sees tenant a's row".into(),
    )?;
    // Writes through the other tenant.
    let mut foreign = r.clone();
    foreign.tenant = b.clone();
    foreign.key_id = key(2);
    let up = s.update_credential(&foreign, 1, &mut h.pass(3));
    ensure(
        matches!(up, Err(StorageError::NotFound { .. })),
        "no update crosses tenants",
        || format!("{up:?}"),
    )?;
    let del = s.delete_credential(&b, &r.id, 1, &mut h.pass(3));
    ensure(
        matches!(del, Err(StorageError::NotFound { .. })),
        "no delete crosses tenants",
        || format!("{del:?}"),
    )?;
    let test = s.record_test(
        &b,
        &r.id,
        &TestRecord {
            at: 1,
            status: "ok".into(),
            message: "m".into(),
        },
        &mut h.pass(3),
    );
    ensure(
        matches!(test, Err(StorageError::NotFound { .. })),
        "no test result crosses tenants",
        || format!("{test:?}"),
    )?;
    let n = ok(
        s.reseal(
            &b,
            &[Reseal {
                id: r.id.clone(),
                version: 1,
                old_key: key(1),
                new_key: key(2),
                secret: vec![9],
                mac: vec![0xAB; 33],
            }],
        ),
        "reseal",
    )
    .unwrap_or(0);
    ok(
        s.record_use(&b, &[(r.id.clone(), 5_000)], None),
        "record use",
    )?;
    let after = ok(s.credential(&a, &r.id), "rows read")?;
    ensure(
        n == 0 && after.as_ref() == Some(&r),
        "no write crosses tenants",
        || format!("row changed through tenant b: {after:?}"),
    )?;
    ensure(
        h.count() == 1,
        "hooks run only for writes that happen",
        || format!("{} hook calls", h.count()),
    )?;
    Ok(())
}

fn uniqueness_and_keys(s: &dyn Storage) -> Result<(), Violation> {
    let (a, b) = setup(s)?;
    let h = Hooks::new();
    ok(
        s.insert_credential(&row(&a, cid(1), "x", key(1)), &mut h.pass(2)),
        "rows insert",
    )?;
    let dup = s.insert_credential(&row(&a, cid(2), "x", key(1)), &mut h.pass(3));
    ensure(
        matches!(dup, Err(StorageError::NameTaken { .. })),
        "active (name, environment) is unique per tenant",
        || format!("{dup:?}"),
    )?;
    let mut other_env = row(&a, cid(2), "x", key(1));
    other_env.environment = "staging".into();
    ok(
        s.insert_credential(&other_env, &mut h.pass(3)),
        "same name, other environment",
    )?;
    ok(
        s.insert_credential(&row(&b, cid(3), "x", key(2)), &mut h.pass(4)),
        "same name in another tenant",
    )?;
    let mut inactive = row(&a, cid(4), "x", key(1));
    inactive.is_active = false;
    ok(
        s.insert_credential(&inactive, &mut h.pass(5)),
        "an inactive duplicate is allowed",
    )?;
    let mut reactivate = inactive.clone();
    reactivate.is_active = true;
    reactivate.version = 2;
    let r = s.update_credential(&reactivate, 1, &mut h.pass(6));
    ensure(
        matches!(r, Err(StorageError::NameTaken { .. })),
        "re-activating a duplicate is refused",
        || format!("{r:?}"),
    )?;
    let by_name = ok(s.credential_by_name(&a, "x", "production"), "by name")?;
    ensure(
        by_name.is_some_and(|r| r.id == cid(1)),
        "by name prefers the active row",
        || "wrong row".into(),
    )?;
    // Keys: another tenant's key, or an unknown one.
    for k in [key(2), key(77)] {
        let r = s.insert_credential(
            &row(&a, cid(10 + k.as_bytes()[0] % 50), "k", k),
            &mut h.pass(7),
        );
        ensure(
            matches!(r, Err(StorageError::UnknownKey { .. })),
            "a row names only its tenant's keys",
            || format!("{r:?}"),
        )?;
    }
    // Usage.
    let u1 = ok(s.reserve_usage(&a, &key(1), 256), "usage")?;
    let u2 = ok(s.reserve_usage(&a, &key(1), 10), "usage")?;
    ensure(u1 == 256 && u2 == 266, "usage reservations add up", || {
        format!("{u1} {u2}")
    })?;
    ensure(
        matches!(
            s.reserve_usage(&b, &key(1), 1),
            Err(StorageError::NotFound { .. })
        ),
        "usage is per tenant key",
        || "reserved another tenant's key".into(),
    )?;
    let ks = ok(s.data_keys(&b), "keys")?;
    ensure(
        ks.iter().all(|k| k.usage == 0),
        "usage is per tenant key",
        || "tenant b's usage moved".into(),
    )?;
    // Wrapped key compare-and-swap.
    let old = key_row(&a, key(1), KeyState::Active).wrapped;
    ensure(
        !ok(s.replace_wrapped(&a, &key(1), b"not it", b"new"), "cas")?,
        "a wrapped key is replaced only from the expected value",
        || "replaced from a wrong value".into(),
    )?;
    ensure(
        ok(s.replace_wrapped(&a, &key(1), &old, b"new"), "cas")?
            && ok(s.data_keys(&a), "keys")?[0].wrapped == b"new",
        "a wrapped key is replaced from the expected value",
        || "not replaced".into(),
    )?;
    Ok(())
}

fn versions_and_hooks(s: &dyn Storage) -> Result<(), Violation> {
    let (a, _) = setup(s)?;
    let h = Hooks::new();
    let r1 = row(&a, cid(1), "x", key(1));
    let r = s.insert_credential(&r1, &mut h.fail());
    ensure(
        matches!(r, Err(StorageError::Hook(_))) && ok(s.credential(&a, &r1.id), "read")?.is_none(),
        "a failing hook refuses an insert",
        || format!("{r:?}"),
    )?;
    ok(s.insert_credential(&r1, &mut h.pass(10)), "insert")?;
    let mut r2 = r1.clone();
    r2.version = 2;
    r2.name = "y".into();
    r2.secret = vec![7; 9];
    let conflict = s.update_credential(&r2, 5, &mut h.pass(11));
    ensure(
        matches!(
            conflict,
            Err(StorageError::VersionConflict {
                expected: 5,
                found: 1
            })
        ),
        "an update at the wrong version is refused",
        || format!("{conflict:?}"),
    )?;
    let refused = s.update_credential(&r2, 1, &mut h.fail());
    ensure(
        matches!(refused, Err(StorageError::Hook(_)))
            && ok(s.credential(&a, &r1.id), "read")?.as_ref() == Some(&r1),
        "a failing hook refuses an update",
        || format!("{refused:?}"),
    )?;
    ok(s.update_credential(&r2, 1, &mut h.pass(12)), "update")?;
    ensure(
        ok(s.credential(&a, &r1.id), "read")?.as_ref() == Some(&r2),
        "an update replaces the row",
        || "row differs".into(),
    )?;
    let tr = TestRecord {
        at: 77,
        status: "failed".into(),
        message: "HTTP 401".into(),
    };
    let refused = s.record_test(&a, &r1.id, &tr, &mut h.fail());
    ensure(
        matches!(refused, Err(StorageError::Hook(_)))
            && ok(s.credential(&a, &r1.id), "read")?.is_some_and(|r| r.last_tested.is_none()),
        "a failing hook refuses a test result",
        || format!("{refused:?}"),
    )?;
    ok(
        s.record_test(&a, &r1.id, &tr, &mut h.pass(13)),
        "test result",
    )?;
    let got = ok(s.credential(&a, &r1.id), "read")?;
    ensure(
        got.as_ref().is_some_and(|r| {
            r.last_tested == Some(77)
                && r.test_status.as_deref() == Some("failed")
                && r.test_message.as_deref() == Some("HTTP 401")
                && r.version == 2
        }),
        "a test result is stored without a version change",
        || format!("{got:?}"),
    )?;
    ok(
        s.record_use(&a, &[(r1.id.clone(), 500), (r1.id.clone(), 400)], None),
        "use",
    )?;
    ensure(
        ok(s.credential(&a, &r1.id), "read")?.is_some_and(|r| r.last_used_at == Some(500)),
        "last use keeps the latest time",
        || "wrong last use".into(),
    )?;
    ok(s.record_use(&a, &[], Some(head(5))), "use")?;
    ensure(
        ok(s.audit_head(), "head")?.map(|h| h.seq) == Some(13),
        "the stored head never moves backwards",
        || "head moved back".into(),
    )?;
    let d = s.delete_credential(&a, &r1.id, 1, &mut h.pass(14));
    ensure(
        matches!(d, Err(StorageError::VersionConflict { .. })),
        "a delete at the wrong version is refused",
        || format!("{d:?}"),
    )?;
    let d = s.delete_credential(&a, &r1.id, 2, &mut h.fail());
    ensure(
        matches!(d, Err(StorageError::Hook(_))) && ok(s.credential(&a, &r1.id), "read")?.is_some(),
        "a failing hook refuses a delete",
        || format!("{d:?}"),
    )?;
    ok(
        s.delete_credential(&a, &r1.id, 2, &mut h.pass(15)),
        "delete",
    )?;
    ensure(
        ok(s.credential(&a, &r1.id), "read")?.is_none()
            && ok(s.audit_head(), "head")?.map(|h| h.seq) == Some(15),
        "a delete removes the row and stores the head",
        || "row still there or head not stored".into(),
    )?;
    Ok(())
}

fn rotation(s: &dyn Storage) -> Result<(), Violation> {
    let (a, b) = setup(s)?;
    let h = Hooks::new();
    for n in 1..=5 {
        ok(
            s.insert_credential(&row(&a, cid(n), &format!("c{n}"), key(1)), &mut h.pass(2)),
            "insert",
        )?;
    }
    let refused = s.start_key_rotation(&key_row(&a, key(3), KeyState::Active), &mut h.fail());
    ensure(
        matches!(refused, Err(StorageError::Hook(_))) && ok(s.data_keys(&a), "keys")?.len() == 1,
        "a failing hook refuses a rotation start",
        || format!("{refused:?}"),
    )?;
    ok(
        s.start_key_rotation(&key_row(&a, key(3), KeyState::Active), &mut h.pass(3)),
        "start rotation",
    )?;
    let ks = ok(s.data_keys(&a), "keys")?;
    ensure(
        ks.len() == 2
            && ks[0].key_id == key(3)
            && ks[0].state == KeyState::Active
            && ks[1].state == KeyState::Retiring,
        "rotation: the new key is active and listed first, the old one retiring",
        || format!("{ks:?}"),
    )?;
    ensure(
        ok(s.data_keys(&b), "keys")?
            .iter()
            .all(|k| k.state == KeyState::Active),
        "rotation stays in its tenant",
        || "tenant b's key changed".into(),
    )?;
    let calls = h.count();
    let none = ok(s.retire_unreferenced_keys(&a, &mut h.pass(4)), "retire")?;
    ensure(
        none.is_empty() && h.count() == calls && ok(s.data_keys(&a), "keys")?.len() == 2,
        "a key that rows name is not retired",
        || format!("retired {none:?}"),
    )?;
    let first = ok(s.credentials_not_under(&a, &key(3), None, 2), "cursor")?;
    let next = ok(
        s.credentials_not_under(&a, &key(3), first.last().map(|r| &r.id), 10),
        "cursor",
    )?;
    ensure(
        first.len() == 2 && next.len() == 3 && first[1].id < next[0].id,
        "the rotation cursor walks rows by id",
        || format!("{} then {}", first.len(), next.len()),
    )?;
    // A row updated after it was read is skipped.
    let mut moved = row(&a, cid(5), "c5", key(1));
    moved.version = 2;
    ok(s.update_credential(&moved, 1, &mut h.pass(5)), "update")?;
    let batch: Vec<Reseal> = (1..=5)
        .map(|n| Reseal {
            id: cid(n),
            version: 1,
            old_key: key(1),
            new_key: key(3),
            secret: vec![n; 8],
            mac: vec![0xAB; 33],
        })
        .collect();
    let n = ok(s.reseal(&a, &batch), "reseal")?;
    ensure(
        n == 4,
        "reseal skips rows that changed since they were read",
        || format!("{n} applied"),
    )?;
    let r1 = ok(s.credential(&a, &cid(1)), "read")?;
    ensure(
        r1.as_ref()
            .is_some_and(|r| r.key_id == key(3) && r.secret == vec![1; 8] && r.version == 1),
        "reseal replaces key and data, not the version",
        || format!("{r1:?}"),
    )?;
    ensure(
        ok(s.count_under(&a, &key(3), false), "count")? == 1
            && ok(s.count_under(&a, &key(3), true), "count")? == 4,
        "counts under and not under a key",
        || "wrong counts".into(),
    )?;
    let bad = s.reseal(
        &a,
        &[Reseal {
            id: cid(5),
            version: 2,
            old_key: key(1),
            new_key: key(2),
            secret: vec![0],
            mac: vec![0xAB; 33],
        }],
    );
    ensure(
        matches!(bad, Err(StorageError::UnknownKey { .. })),
        "reseal only to the tenant's keys",
        || format!("{bad:?}"),
    )?;
    ok(
        s.reseal(
            &a,
            &[Reseal {
                id: cid(5),
                version: 2,
                old_key: key(1),
                new_key: key(3),
                secret: vec![5; 8],
                mac: vec![0xAB; 33],
            }],
        ),
        "reseal",
    )?;
    let refused = s.retire_unreferenced_keys(&a, &mut h.fail());
    ensure(
        matches!(refused, Err(StorageError::Hook(_))) && ok(s.data_keys(&a), "keys")?.len() == 2,
        "a failing hook refuses a retirement",
        || format!("{refused:?}"),
    )?;
    let retired = ok(s.retire_unreferenced_keys(&a, &mut h.pass(6)), "retire")?;
    ensure(
        retired == vec![key(1)] && ok(s.data_keys(&a), "keys")?.len() == 1,
        "an unreferenced retiring key is retired",
        || format!("{retired:?}"),
    )?;
    let stale = s.insert_credential(&row(&a, cid(9), "late", key(1)), &mut h.pass(7));
    ensure(
        matches!(stale, Err(StorageError::UnknownKey { .. })),
        "a retired key cannot be named again",
        || format!("{stale:?}"),
    )?;
    Ok(())
}

fn filters(s: &dyn Storage) -> Result<(), Violation> {
    let (a, _) = setup(s)?;
    let h = Hooks::new();
    let mut r1 = row(&a, cid(1), "one", key(1));
    r1.tags = vec!["prod".into(), "pay".into()];
    r1.expires_at = Some(100);
    let mut r2 = row(&a, cid(2), "two", key(1));
    r2.type_name = "postgres".into();
    r2.environment = "staging".into();
    r2.tags = vec!["prod".into()];
    r2.expires_at = Some(300);
    let mut r3 = row(&a, cid(3), "three", key(1));
    r3.is_active = false;
    r3.tags = vec![];
    for r in [&r1, &r2, &r3] {
        ok(s.insert_credential(r, &mut h.pass(2)), "insert")?;
    }
    let names = |f: ListFilter| -> Result<Vec<String>, Violation> {
        Ok(ok(s.credentials(&a, &f), "list")?
            .into_iter()
            .map(|r| r.name)
            .collect())
    };
    let mut f = ListFilter::default();
    ensure(
        names(f.clone())? == ["one", "three", "two"],
        "list orders by name",
        || "order".into(),
    )?;
    f.type_name = Some("postgres".into());
    ensure(names(f.clone())? == ["two"], "filter by type", || {
        "type".into()
    })?;
    let mut f = ListFilter::default();
    f.environment = Some("production".into());
    ensure(
        names(f)? == ["one", "three"],
        "filter by environment",
        || "env".into(),
    )?;
    let mut f = ListFilter::default();
    f.tags = vec!["prod".into(), "pay".into()];
    ensure(names(f)? == ["one"], "filter by every tag", || {
        "tags".into()
    })?;
    let mut f = ListFilter::default();
    f.active = Some(false);
    ensure(names(f)? == ["three"], "filter by active", || {
        "active".into()
    })?;
    let mut f = ListFilter::default();
    f.expiring_before = Some(200);
    ensure(names(f)? == ["one"], "filter by expiry", || "expiry".into())?;
    Ok(())
}

fn replay(s: &dyn Storage) -> Result<(), Violation> {
    let c = |k: &str, step, until, now| ok(s.check_and_mark_step(k, step, until, now), "replay");
    ensure(c("k", 10, 100, 0)?, "a fresh step is accepted", || {
        "refused".into()
    })?;
    ensure(!c("k", 10, 100, 1)?, "a used step is refused", || {
        "accepted".into()
    })?;
    ensure(!c("k", 9, 100, 1)?, "an older step is refused", || {
        "accepted".into()
    })?;
    ensure(c("j", 10, 100, 1)?, "keys are independent", || {
        "refused".into()
    })?;
    ensure(c("k", 11, 100, 2)?, "a newer step is accepted", || {
        "refused".into()
    })?;
    ensure(
        c("k", 5, 300, 100)?,
        "an expired record no longer blocks",
        || "refused".into(),
    )?;
    Ok(())
}

/// Wrong one-time codes: counted per key in a window from the first failure; the last allowed
/// one locks the key out; a lock-out ends on time; a success clears the count.
fn otp_throttle(s: &dyn Storage) -> Result<(), Violation> {
    let t = OtpThrottle {
        max_failures: 3,
        window_secs: 60,
        lockout_secs: 100,
    };
    let fail = |k: &str, now| ok(s.otp_failed(k, now, &t), "otp_failed");
    let locked = |k: &str, now| ok(s.otp_locked_until(k, now), "otp_locked_until");
    ensure(
        locked("a", 0)?.is_none(),
        "a fresh key is not locked",
        || "locked".into(),
    )?;
    ensure(
        fail("a", 10)?.is_none() && fail("a", 20)?.is_none(),
        "failures below the limit do not lock",
        || "locked".into(),
    )?;
    ensure(
        fail("a", 30)? == Some(130),
        "the last allowed failure locks until now + lockout",
        || "not locked".into(),
    )?;
    ensure(
        locked("a", 129)? == Some(130),
        "a lock-out holds until its end",
        || "open".into(),
    )?;
    ensure(locked("b", 31)?.is_none(), "keys are independent", || {
        "locked".into()
    })?;
    ensure(
        fail("a", 50)? == Some(130),
        "a failure during a lock-out neither extends nor ends it",
        || "changed".into(),
    )?;
    ensure(
        locked("a", 130)?.is_none(),
        "a lock-out ends on time",
        || "locked".into(),
    )?;
    // A new window after the lock-out; failures spread beyond the window start over.
    ensure(
        fail("c", 0)?.is_none() && fail("c", 59)?.is_none() && fail("c", 60)?.is_none(),
        "failures outside the window are not counted",
        || "locked".into(),
    )?;
    ensure(
        fail("c", 61)?.is_none() && fail("c", 62)? == Some(162),
        "a window starts at its first failure",
        || "not locked as expected".into(),
    )?;
    ok(s.otp_failed("d", 0, &t), "otp_failed")?;
    ok(s.otp_failed("d", 1, &t), "otp_failed")?;
    ok(s.otp_succeeded("d"), "otp_succeeded")?;
    ensure(
        fail("d", 2)?.is_none() && fail("d", 3)?.is_none(),
        "a success clears the count",
        || "locked".into(),
    )?;
    Ok(())
}

fn race(s: Arc<dyn Storage>) -> Result<(), Violation> {
    let (a, _) = setup(&*s)?;
    let h = Hooks::new();
    let r1 = row(&a, cid(1), "x", key(1));
    ok(s.insert_credential(&r1, &mut h.pass(2)), "insert")?;
    let wins = AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for i in 0..8u8 {
            let (s, r1, wins) = (&s, &r1, &wins);
            sc.spawn(move || {
                let mut r = r1.clone();
                r.version = 2;
                r.secret = vec![i; 4];
                let mut hook = |_: &mut dyn AuditChain| Ok(None);
                if s.update_credential(&r, 1, &mut hook).is_ok() {
                    wins.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    let w = wins.load(Ordering::SeqCst);
    ensure(w == 1, "8 writers at one version: exactly one wins", || {
        format!("{w} won")
    })?;
    Ok(())
}
