//! Local keyrings behind a URI: a key file, a variable, the kernel keyring (keyutils).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use credvault_envelope::{generate_data_key, EncryptionContext, LocalKeyring, MasterKey};
use credvault_kms::{KmsError, MasterUri};

fn ctx() -> EncryptionContext {
    EncryptionContext::new().with("tenant", "acme").unwrap()
}

#[test]
fn a_key_file_is_made_owner_only_in_an_owner_only_directory_and_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config/credvault/master.key");
    let uri = MasterUri::parse(&format!("file:{}", path.display())).unwrap();
    assert!(matches!(
        credvault_kms::open(&uri),
        Err(KmsError::Keyring(_))
    ));
    let (k, made) = credvault_kms::open_or_create(&uri).unwrap();
    assert!(made);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }
    credvault_test::master_key_conformance(k.as_ref()).unwrap();
    let (_, again) = credvault_kms::open_or_create(&uri).unwrap();
    assert!(!again, "an existing key file is never replaced");
    assert_eq!(credvault_kms::rotate(&uri).unwrap(), 2);
    let after = credvault_kms::open(&uri).unwrap();
    credvault_test::master_key_rotation_conformance(k.as_ref(), after.as_ref()).unwrap();
}

#[test]
fn a_variable_is_read_never_made_or_rotated() {
    let uri = MasterUri::parse("env:CREDVAULT_KMS_TEST_UNSET_VARIABLE").unwrap();
    assert!(matches!(
        credvault_kms::open_or_create(&uri),
        Err(KmsError::Keyring(_))
    ));
    assert!(matches!(
        credvault_kms::rotate(&uri),
        Err(KmsError::Unsupported { scheme: "env", .. })
    ));
}

#[cfg(all(target_os = "linux", feature = "keychain"))]
#[test]
fn the_kernel_keyring_holds_a_keyring_that_moves_without_rewrapping() {
    // keyutils needs a session keyring: CI runs the tests under `keyctl session -`.
    let service = common::unique("credvault-kms");
    let uri = MasterUri::parse(&format!("keychain:{service}/master")).unwrap();
    let (k, made) = match credvault_kms::open_or_create(&uri) {
        Ok(x) => x,
        Err(e) => {
            assert!(std::env::var_os("CI").is_none(), "kernel keyring: {e}");
            eprintln!("kernel keyring unavailable ({e}): skipped outside CI");
            return;
        }
    };
    assert!(made);
    credvault_test::master_key_conformance(k.as_ref()).unwrap();
    assert_eq!(k.provider_id(), "local");
    let (dek, w) = generate_data_key(k.as_ref(), &ctx()).unwrap();
    assert_eq!(credvault_kms::rotate(&uri).unwrap(), 2);
    let after = credvault_kms::open(&uri).unwrap();
    credvault_test::master_key_rotation_conformance(k.as_ref(), after.as_ref()).unwrap();
    // The same key text in a file opens what the keychain wrapped: moving is copying.
    let text =
        credvault_kms::keychain::get(credvault_kms::keychain::Store::Keyutils, &service, "master")
            .unwrap();
    let file = LocalKeyring::from_secret_text(&text).unwrap();
    assert_eq!(
        file.unwrap(&w, &ctx()).unwrap().expose_secret(),
        dek.expose_secret()
    );
    // A missing entry is a typed error naming no value.
    let missing = MasterUri::parse(&format!("keychain:{service}/nobody")).unwrap();
    match credvault_kms::open(&missing) {
        Err(KmsError::Keychain { reason }) => assert!(reason.contains("no such"), "{reason}"),
        other => panic!("a missing entry gave {:?}", other.map(|_| ())),
    }
}

#[test]
fn every_master_key_use_is_counted_by_operation_and_outcome() {
    let k: std::sync::Arc<dyn MasterKey> = std::sync::Arc::new(LocalKeyring::generate().unwrap());
    let m = credvault_kms::Metered::new(k);
    let (_, w) = generate_data_key(&m, &ctx()).unwrap();
    m.unwrap(&w, &ctx()).unwrap();
    m.unwrap(&w, &ctx()).unwrap();
    let other = EncryptionContext::new().with("tenant", "other").unwrap();
    assert!(m.unwrap(&w, &other).is_err());
    m.rewrap(&w, &ctx()).unwrap();
    let c = m.counts();
    // wrap, unwrap, rewrap, generate
    assert_eq!(c.ok, [0, 2, 1, 1]);
    assert_eq!(c.failed, [0, 1, 0, 0]);
    assert_eq!(c.unavailable, [0, 0, 0, 0]);
    assert_eq!(c.denied, [0, 0, 0, 0]);
    credvault_test::master_key_conformance(&m).unwrap();
}
