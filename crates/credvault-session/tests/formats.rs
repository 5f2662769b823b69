//! The record MACs of `docs/formats.md` ("Browser sessions and two-factor records v1"),
//! computed here with ring's HMAC directly from that text, against what the crate writes.
#![allow(clippy::unwrap_used, missing_docs)]

use ring::hmac;

/// HMAC-SHA256(HMAC-SHA256(root, label), P(kind) ‖ P(part)...), as the format says.
fn documented(root: &[u8; 32], kind: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mack = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, root),
        b"credvault-session-v1 record mac",
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, mack.as_ref());
    let mut msg = Vec::new();
    for p in std::iter::once(kind.as_bytes()).chain(parts.iter().copied()) {
        msg.extend_from_slice(&(p.len() as u64).to_be_bytes());
        msg.extend_from_slice(p);
    }
    hmac::sign(&key, &msg).as_ref().to_vec()
}

#[test]
fn a_stored_state_row_carries_the_documented_mac() {
    let dir = tempfile::tempdir().unwrap();
    let vault = credvault_store::Vault::open_or_init(dir.path(), Default::default()).unwrap();
    let store = vault.store().clone();
    let t = credvault_store::TenantId::new("acme").unwrap();
    store.create_tenant(&t, "Acme", "admin").unwrap();
    let scope = store.tenant(&t, "robot").unwrap();
    let id = scope
        .create(credvault_store::NewCredential::new(
            "website_login",
            "portal",
            serde_json::json!({"login_url": "https://p.example", "username": "u", "password": "p"}),
        ))
        .unwrap()
        .id;
    let root = [0x5a_u8; 32];
    std::fs::write(dir.path().join("sessions.key"), root).unwrap();
    let s = credvault_session::Sessions::open_in(dir.path(), store.clone()).unwrap();
    s.save(
        &scope,
        &id,
        "work",
        &credvault_session::BrowserState::parse(r#"{"cookies":[],"origins":[]}"#).unwrap(),
    )
    .unwrap();
    let db = rusqlite::Connection::open(dir.path().join("sessions.db")).unwrap();
    let (version, created, used, sealed, mac): (i64, i64, i64, Vec<u8>, Vec<u8>) = db
        .query_row(
            "SELECT version, created_at, last_used_at, sealed, mac FROM session_state",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    let want = documented(
        &root,
        "session state",
        &[
            b"acme",
            id.as_str().as_bytes(),
            b"work",
            &(version as u64).to_be_bytes(),
            &created.to_be_bytes(),
            &used.to_be_bytes(),
            &sealed,
        ],
    );
    assert_eq!(mac, want);
    let (hw, hw_mac): (i64, Vec<u8>) = db
        .query_row("SELECT version, mac FROM session_versions", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(
        hw_mac,
        documented(
            &root,
            "session version",
            &[
                b"acme",
                id.as_str().as_bytes(),
                b"work",
                &(hw as u64).to_be_bytes()
            ],
        )
    );
    // The same key derivation for a key given in bytes.
    let k = credvault_session::SessionKey::from_bytes(&root);
    assert_eq!(
        k.mac("tfa route", &[b"x"]),
        documented(&root, "tfa route", &[b"x"])
    );
}
