//! The local keyring: loading, saving, rotation and retirement, and the master-key
//! conformance suite from `credvault-test`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use credvault_envelope::{
    generate_data_key, needs_rewrap, Backend, EncryptionContext, KeyringError, LocalKeyring,
    MasterKey, ProviderError,
};

fn ctx() -> EncryptionContext {
    EncryptionContext::new().with("tenant", "acme").unwrap()
}

#[test]
fn conformance_on_every_backend_and_after_rotation() {
    for b in Backend::ALL {
        let mut k = LocalKeyring::generate().unwrap().with_backend(*b);
        credvault_test::master_key_conformance(&k).unwrap();
        k.rotate().unwrap();
        credvault_test::master_key_conformance(&k).unwrap();
    }
}

#[test]
fn rotate_rewrap_retire() {
    let mut k = LocalKeyring::generate().unwrap();
    assert_eq!(k.active(), 1);
    let (dek, w1) = generate_data_key(&k, &ctx()).unwrap();
    assert!(!needs_rewrap(&k, &w1).unwrap());
    assert_eq!(k.rotate().unwrap(), 2);
    assert!(needs_rewrap(&k, &w1).unwrap());
    // v1 still unwraps (decrypt-only); new wraps use v2.
    assert_eq!(k.unwrap(&w1, &ctx()).unwrap().id(), dek.id());
    let w2 = k.rewrap(&w1, &ctx()).unwrap();
    assert_eq!(w2.master_key().version, 2);
    assert_eq!(
        k.unwrap(&w2, &ctx()).unwrap().expose_secret(),
        dek.expose_secret()
    );

    // Retire rules: not the active version, not while referenced, not unknown.
    assert!(matches!(k.retire(2, 0), Err(KeyringError::RetireActive(2))));
    assert!(matches!(
        k.retire(1, 3),
        Err(KeyringError::StillReferenced {
            version: 1,
            references: 3
        })
    ));
    assert!(matches!(
        k.retire(7, 0),
        Err(KeyringError::UnknownVersion(7))
    ));
    assert_eq!(
        k.versions().collect::<Vec<_>>(),
        vec![1, 2],
        "refused retirements change nothing"
    );
    k.retire(1, 0).unwrap();
    assert_eq!(k.versions().collect::<Vec<_>>(), vec![2]);
    match k.unwrap(&w1, &ctx()) {
        Err(ProviderError::UnknownVersion(m)) => assert_eq!(m.version, 1),
        other => panic!("{:?}", other.map(|d| d.id())),
    }
    // Version numbers are never reused after retirement.
    assert_eq!(k.rotate().unwrap(), 3);
}

#[test]
fn key_text_round_trip_and_bare_key() {
    let mut k = LocalKeyring::generate().unwrap();
    k.rotate().unwrap();
    let (_, w) = generate_data_key(&k, &ctx()).unwrap();
    let text = k.export_secret_text();
    assert!(text.starts_with("credvault-keyring-v1 active=2\n"));
    let back = LocalKeyring::from_secret_text(&text).unwrap();
    assert_eq!(back.active(), 2);
    assert!(back.unwrap(&w, &ctx()).is_ok());

    // A bare base64 key is version 1.
    let bare =
        LocalKeyring::from_secret_text("  QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY=\n").unwrap();
    assert_eq!(bare.versions().collect::<Vec<_>>(), vec![1]);
}

#[test]
fn key_text_errors_are_typed_and_never_echo_the_text() {
    let canary = "Q0FOQVJZQ0FOQVJZQ0FOQVJZQ0FOQVJZQ0FOQVJZ"; // "CANARYCANARY..." 30 bytes
    let cases: &[(&str, &str)] = &[
        ("", "empty"),
        (canary, "32 bytes"),
        ("credvault-keyring-v1 1:AAAA", "active="),
        ("credvault-keyring-v1 active=0 0:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "positive"),
        ("credvault-keyring-v1 active=2 1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "active version has no key"),
        (
            "credvault-keyring-v1 active=1 1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= 1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            "twice",
        ),
        ("credvault-keyring-v1 active=1 1-AAAA", "VERSION:BASE64"),
        ("two tokens", "single base64 key"),
        ("credvault-keyring-v1 active=1 1:Q0FOQVJZQ0FOQVJZQ0FOQVJZQ0FOQVJZQ0FOQVJZ!!", "base64"),
    ];
    for (text, expect) in cases {
        let err = LocalKeyring::from_secret_text(text).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, KeyringError::Parse { .. }),
            "{text:?}: {err:?}"
        );
        assert!(
            msg.contains(expect),
            "{text:?}: message {msg:?} should mention {expect:?}"
        );
        assert!(
            !msg.contains("Q0FOQVJZ") && !format!("{err:?}").contains("Q0FOQVJZ"),
            "echoed key text: {msg}"
        );
    }
    let huge = "A".repeat(70_000);
    assert!(LocalKeyring::from_secret_text(&huge).is_err());
}

#[cfg(unix)]
#[test]
fn key_file_saved_private_and_group_readable_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let k = LocalKeyring::generate().unwrap();
    k.save_to_file(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let loaded = LocalKeyring::from_file(&path).unwrap();
    assert_eq!(loaded.active(), 1);

    for bad in [0o640, 0o604, 0o644, 0o660] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(bad)).unwrap();
        match LocalKeyring::from_file(&path) {
            Err(e @ KeyringError::InsecurePermissions { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("chmod 600") && msg.contains("master.key"),
                    "{msg}"
                );
            }
            other => panic!("mode {bad:o}: {other:?}"),
        }
    }
    let missing = dir.path().join("nope.key");
    assert!(matches!(
        LocalKeyring::from_file(&missing),
        Err(KeyringError::Io { .. })
    ));
}

#[test]
fn from_env() {
    let var = "CREDVAULT_TEST_KEYRING_FROM_ENV";
    std::env::set_var(var, "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY=");
    let k = LocalKeyring::from_env(var).unwrap();
    assert_eq!(k.active(), 1);
    std::env::remove_var(var);
    assert!(matches!(
        LocalKeyring::from_env(var),
        Err(KeyringError::EnvNotSet { .. })
    ));
}

#[test]
fn keyring_debug_is_redacted() {
    let k = LocalKeyring::generate().unwrap();
    let text = k.export_secret_text();
    let b64 = text
        .split_whitespace()
        .nth(2)
        .unwrap()
        .split(':')
        .nth(1)
        .unwrap()
        .to_owned();
    let dbg = format!("{k:?}");
    assert!(!dbg.contains(&b64), "{dbg}");
}

#[cfg(unix)]
#[test]
fn save_to_file_never_writes_through_a_planted_temp_name() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    let path = dir.path().join("master.key");
    // The fixed temporary name older versions wrote to (and followed).
    symlink(&victim, dir.path().join("master.key.tmp")).unwrap();
    let k = LocalKeyring::generate().unwrap();
    k.save_to_file(&path).unwrap();
    k.save_to_file(&path).unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    let m = std::fs::symlink_metadata(&path).unwrap();
    assert!(m.is_file());
    assert_eq!(m.permissions().mode() & 0o777, 0o600);
    let again = LocalKeyring::from_file(&path).unwrap();
    assert_eq!(again.active(), k.active());
    // Nothing left behind but the key, the planted link and the victim.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
}
