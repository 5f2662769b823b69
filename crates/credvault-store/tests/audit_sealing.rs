//! A vault whose audit log seals its events: nothing of an event is in the files in the clear,
//! the chain verifies with the audit key alone, the vault reads its events (and `verify`
//! cross-checks rows against them), and the sealing key survives a master-key rotation.
#![cfg(feature = "sqlite")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use credvault_store::audit::{read_event_files, segment_paths, Action, Query};
use credvault_store::{
    read_audit_key, verify_vault_audit, NewCredential, StoreError, TenantId, Vault, VaultOptions,
};
use serde_json::json;

fn log_bytes(vault: &Path) -> String {
    let mut all = Vec::new();
    for p in segment_paths(&Vault::audit_dir(vault)).unwrap() {
        all.extend(std::fs::read(p).unwrap());
    }
    String::from_utf8(all).unwrap()
}

fn sealed_vault(dir: &Path) -> TenantId {
    let v = Vault::init(dir, VaultOptions::default().seal_audit()).unwrap();
    assert!(v.seals_audit());
    let t = TenantId::new("tenant-zebra").unwrap();
    v.store()
        .create_tenant(&t, "Zebra Corp", "admin-quokka")
        .unwrap();
    let s = v.store().tenant(&t, "alice-okapi").unwrap();
    let id = s
        .create(NewCredential::new(
            "http_bearer_token",
            "name-narwhal",
            json!({"token": "tok-sealed-0001"}),
        ))
        .unwrap()
        .id;
    s.reveal(&id, &["token"], Some("svc-axolotl")).unwrap();
    v.close().unwrap();
    t
}

#[test]
fn a_sealed_vault_log_holds_no_event_in_the_clear_and_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("v");
    sealed_vault(&vault);
    let bytes = log_bytes(&vault);
    for needle in [
        "tenant-zebra",
        "admin-quokka",
        "alice-okapi",
        "name-narwhal",
        "svc-axolotl",
        "http_bearer_token",
        "\"created\"",
        "\"accessed\"",
    ] {
        assert!(
            !bytes.contains(needle),
            "{needle} is in the log in the clear"
        );
    }
    assert!(bytes.contains("\"type\":\"sealed\""));
    // The audit key alone verifies the chain, checkpoints and anchor (no master key).
    let key = read_audit_key(&vault).unwrap();
    let check = verify_vault_audit(&vault, &key, None, None).unwrap();
    assert!(check.is_intact(), "{check:?}");
    // Without the sealer nothing reads; the vault reads everything.
    let segs = segment_paths(&Vault::audit_dir(&vault)).unwrap();
    let plain = read_event_files(&segs, &Query::new()).unwrap();
    assert!(plain.events.is_empty() && plain.sealed > 0);
    let v = Vault::open(&vault, VaultOptions::default()).unwrap();
    let created = v
        .audit_events(&Query::new().action(Action::Created))
        .unwrap();
    assert_eq!(created.events.len(), 1);
    assert_eq!(created.events[0].event.actor, "alice-okapi");
    assert_eq!(created.unreadable, 0);
    // Rows against the log: the cross-check reads the sealed events.
    let r = v.verify().unwrap();
    assert!(r.is_ok(), "{r:?}");
    v.close().unwrap();
}

#[test]
fn the_sealing_key_survives_a_master_rotation_and_must_stay_private() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("v");
    let t = sealed_vault(&vault);
    let before = std::fs::read_to_string(Vault::audit_sealing_key_path(&vault)).unwrap();
    let v = Vault::open(&vault, VaultOptions::default()).unwrap();
    let (v, _report, retired) = v.rotate_master("admin", &mut |_| {}).unwrap();
    assert_eq!(retired, vec![1], "the old master version was not retired");
    v.close().unwrap();
    let after = std::fs::read_to_string(Vault::audit_sealing_key_path(&vault)).unwrap();
    assert_ne!(before, after, "the sealing key was not re-wrapped");
    let v = Vault::open(&vault, VaultOptions::default()).unwrap();
    // Old and new records both open.
    let all = v.audit_events(&Query::new().tenant(t.as_str())).unwrap();
    assert!(all.events.iter().any(|e| e.event.action == Action::Created));
    assert_eq!(all.unreadable, 0);
    assert!(v.verify().unwrap().is_ok());
    v.close().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let p = Vault::audit_sealing_key_path(&vault);
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o077,
            0
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = Vault::open(&vault, VaultOptions::default()).unwrap_err();
        assert!(matches!(err, StoreError::Vault { .. }), "{err}");
        assert!(err.to_string().contains("audit.seal.key"), "{err}");
    }
}

#[test]
fn a_sealing_key_from_another_vault_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    sealed_vault(&a);
    sealed_vault(&b);
    std::fs::copy(
        Vault::audit_sealing_key_path(&b),
        Vault::audit_sealing_key_path(&a),
    )
    .unwrap();
    let err = Vault::open(&a, VaultOptions::default()).unwrap_err();
    assert!(err.to_string().contains("audit sealing key"), "{err}");
}
