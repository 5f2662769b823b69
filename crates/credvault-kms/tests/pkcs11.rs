//! The PKCS#11 provider against a real token: SoftHSM2, initialised by `.ci/kms-services`.
#![cfg(feature = "pkcs11")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use credvault_envelope::{generate_data_key, EncryptionContext, MasterKey, ProviderError};
use credvault_kms::pkcs11::Pkcs11MasterKey;
use credvault_kms::{KmsError, MasterUri, Pkcs11Uri};

struct Token {
    module: String,
    label: String,
    pin_file: PathBuf,
    /// Held for the whole test: SoftHSM2's file store answers CKR_GENERAL_ERROR when another
    /// process (`pkcs11-tool` in two of these tests) changes the token while this one
    /// generates a key, so the tests of this file take turns.
    _turn: std::sync::MutexGuard<'static, ()>,
}

static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn token() -> Option<Token> {
    let turn = TURN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Some(Token {
        _turn: turn,
        module: common::service_env("CREDVAULT_TEST_PKCS11_MODULE", "SoftHSM2")?,
        label: common::service_env("CREDVAULT_TEST_PKCS11_TOKEN", "SoftHSM2")?,
        pin_file: common::service_env("CREDVAULT_TEST_PKCS11_PIN_FILE", "SoftHSM2")?.into(),
    })
}

impl Token {
    fn uri(&self, object: &str) -> Pkcs11Uri {
        let text = format!(
            "pkcs11:token={};object={object}?module-path={}&pin-source=file:{}",
            self.label,
            self.module,
            self.pin_file.display()
        );
        match MasterUri::parse(&text).unwrap() {
            MasterUri::Pkcs11(p) => p,
            other => panic!("parsed as {other:?}"),
        }
    }

    /// The operator's tool, deleting an object as someone would by hand.
    fn delete_with_pkcs11_tool(&self, label: &str) {
        let pin = std::fs::read_to_string(&self.pin_file).unwrap();
        let out = Command::new("pkcs11-tool")
            .args([
                "--module",
                &self.module,
                "--token-label",
                &self.label,
                "--login",
            ])
            .args([
                "--pin",
                pin.trim(),
                "--delete-object",
                "--type",
                "secrkey",
                "--label",
                label,
            ])
            .output()
            .expect("pkcs11-tool (Debian opensc) runs");
        assert!(
            out.status.success(),
            "pkcs11-tool: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn ctx() -> EncryptionContext {
    EncryptionContext::new().with("tenant", "acme").unwrap()
}

#[test]
fn a_key_generated_in_the_token_passes_conformance_and_rotation() {
    let Some(t) = token() else { return };
    let uri = t.uri(&common::unique("conf"));
    assert!(matches!(
        Pkcs11MasterKey::open(&uri),
        Err(KmsError::Provider(ProviderError::UnknownVersion(_)))
    ));
    let (key, made) = Pkcs11MasterKey::create(&uri).unwrap();
    assert!(made);
    assert_eq!(
        key.provider_id(),
        format!("pkcs11:{}/{}", uri.token, uri.object)
    );
    assert_eq!(key.active_version().unwrap(), 1);
    credvault_test::master_key_conformance(&key).unwrap();

    // The key object is what an HSM key must be: in the token, sensitive, never extractable.
    let objects = key.key_objects().unwrap();
    assert_eq!(objects.len(), 1);
    let o = &objects[0];
    assert_eq!(o.label, format!("{}.v1", uri.object));
    assert!(o.token && o.sensitive && !o.extractable, "{o:?}");
    assert_eq!(o.value_len, 32);

    // A second create finds it and makes nothing.
    let (_, made) = Pkcs11MasterKey::create(&uri).unwrap();
    assert!(!made);

    // Rotation: a new object OBJECT.v2, found by a process that opens the token afterwards;
    // keys wrapped under v1 keep opening.
    let before = Pkcs11MasterKey::open(&uri).unwrap();
    assert_eq!(
        credvault_kms::rotate(&MasterUri::Pkcs11(uri.clone())).unwrap(),
        2
    );
    let after = Pkcs11MasterKey::open(&uri).unwrap();
    assert_eq!(after.versions(), vec![1, 2]);
    credvault_test::master_key_rotation_conformance(&before, &after).unwrap();
}

#[test]
fn a_wrapped_key_opens_in_another_provider_instance_but_not_under_another_object() {
    let Some(t) = token() else { return };
    let a = t.uri(&common::unique("a"));
    let b = t.uri(&common::unique("b"));
    let (ka, _) = Pkcs11MasterKey::create(&a).unwrap();
    let (kb, _) = Pkcs11MasterKey::create(&b).unwrap();
    let (dek, wrapped) = generate_data_key(&ka, &ctx()).unwrap();
    let again = Pkcs11MasterKey::open(&a).unwrap();
    assert_eq!(
        again.unwrap(&wrapped, &ctx()).unwrap().expose_secret(),
        dek.expose_secret()
    );
    assert!(matches!(
        kb.unwrap(&wrapped, &ctx()),
        Err(ProviderError::WrongProvider { .. })
    ));
}

#[test]
fn a_wrong_pin_is_denied() {
    let Some(t) = token() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("pin");
    std::fs::write(&bad, "not-the-pin\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut uri = t.uri(&common::unique("pin"));
    Pkcs11MasterKey::create(&uri).unwrap();
    uri.pin_source = Some(bad.clone());
    match Pkcs11MasterKey::open(&uri) {
        Err(KmsError::Provider(ProviderError::Denied { reason, .. })) => {
            assert!(reason.contains("PIN"), "{reason}");
            assert!(!reason.contains("not-the-pin"));
        }
        other => panic!("a wrong PIN gave {other:?}"),
    }
    // A PIN file others can read is refused before it is used.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Pkcs11MasterKey::open(&uri),
            Err(KmsError::Pin { .. })
        ));
    }
}

#[test]
fn a_missing_module_token_or_key_object_is_a_typed_error() {
    let Some(t) = token() else { return };
    let mut uri = t.uri(&common::unique("gone"));
    uri.module_path = "/nonexistent/libpkcs11.so".into();
    assert!(matches!(
        Pkcs11MasterKey::open(&uri),
        Err(KmsError::Provider(ProviderError::Unavailable { .. }))
    ));
    let mut uri = t.uri(&common::unique("gone"));
    uri.token = "no-such-token".into();
    assert!(matches!(
        Pkcs11MasterKey::open(&uri),
        Err(KmsError::Provider(ProviderError::Unavailable { .. }))
    ));
}

#[test]
fn a_key_object_deleted_by_the_operator_is_unknown_and_nothing_else_breaks() {
    let Some(t) = token() else { return };
    let uri = t.uri(&common::unique("del"));
    let (key, _) = Pkcs11MasterKey::create(&uri).unwrap();
    let (_, under_v1) = generate_data_key(&key, &ctx()).unwrap();
    key.rotate().unwrap();
    let (dek2, under_v2) = generate_data_key(&key, &ctx()).unwrap();
    t.delete_with_pkcs11_tool(&format!("{}.v1", uri.object));

    // A provider opened afterwards no longer has version 1, and says so.
    let fresh = Pkcs11MasterKey::open(&uri).unwrap();
    match fresh.unwrap(&under_v1, &ctx()) {
        Err(ProviderError::UnknownVersion(m)) => assert_eq!(m.version, 1),
        other => panic!("a deleted key object gave {:?}", other.map(|k| k.id())),
    }
    // Version 2 is untouched.
    assert_eq!(
        fresh.unwrap(&under_v2, &ctx()).unwrap().expose_secret(),
        dek2.expose_secret()
    );
}

#[test]
fn the_uri_never_carries_a_pin() {
    let Some(t) = token() else { return };
    let text = format!(
        "pkcs11:token={};object=x?module-path={}&pin-value=1234",
        t.label, t.module
    );
    let e = MasterUri::parse(&text).unwrap_err();
    assert_eq!(e.part, "pin-value");
    assert!(!e.to_string().contains("1234"));
}

#[test]
fn the_frozen_vector_opens_in_the_token() {
    let Some(t) = token() else { return };
    let v: serde_json::Value = serde_json::from_str(include_str!("data/kms_v1.json")).unwrap();
    let v = &v["pkcs11_aes256gcm_v1"];
    let hex = |k: &str| hex::decode(v[k].as_str().unwrap()).unwrap();
    // The vector's provider id names the token `credvault-ci` (.ci/kms-services) and object
    // `vector`: its key is written into the token as an operator imports one.
    assert_eq!(
        t.label, "credvault-ci",
        "the vector is for the token .ci/kms-services makes"
    );
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key.bin");
    std::fs::write(&key_file, hex("token_key")).unwrap();
    let pin = std::fs::read_to_string(&t.pin_file).unwrap();
    let tool = |args: &[&str]| {
        Command::new("pkcs11-tool")
            .args([
                "--module",
                &t.module,
                "--token-label",
                &t.label,
                "--login",
                "--pin",
                pin.trim(),
            ])
            .args(args)
            .output()
            .expect("pkcs11-tool (Debian opensc) runs")
    };
    // From an earlier run on this token, if any.
    let _ = tool(&[
        "--delete-object",
        "--type",
        "secrkey",
        "--label",
        "vector.v1",
    ]);
    let out = tool(&[
        "--write-object",
        key_file.to_str().unwrap(),
        "--type",
        "secrkey",
        "--key-type",
        "AES:32",
        "--label",
        "vector.v1",
        "--sensitive",
        "--usage-decrypt",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = Pkcs11MasterKey::open(&t.uri("vector")).unwrap();
    assert_eq!(key.provider_id(), v["provider"].as_str().unwrap());
    let wrapped = credvault_envelope::WrappedKey::parse(&hex("wrapped")).unwrap();
    let mut ctx = EncryptionContext::new();
    ctx.insert("tenant", "acme").unwrap();
    ctx.insert("purpose", "vector").unwrap();
    assert_eq!(ctx.canonical_bytes(), &hex("context")[..]);
    assert_eq!(
        key.unwrap(&wrapped, &ctx).unwrap().expose_secret()[..],
        hex("data_key")[..]
    );
}
