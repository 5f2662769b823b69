//! The store as an embedder meets it: a `Store` handle to share, a wrong master key refused at
//! open (naming where it came from), any `MasterKey` provider, the environment read only when
//! asked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use credvault_store::{
    LocalKeyring, MasterSource, NewCredential, Store, StoreError, TenantId, Vault, VaultOptions,
};
use serde_json::json;

fn shareable<T: Clone + Send + Sync + 'static>() {}

#[test]
fn the_store_is_a_cheap_shareable_handle() {
    shareable::<Store>();
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::open_or_init(&dir.path().join("v"), VaultOptions::default()).unwrap();
    let t = TenantId::new("acme").unwrap();
    vault.store().create_tenant(&t, "Acme", "admin").unwrap();
    let handle = vault.store().clone();
    // A clone outlives the borrow it came from and sees the same data.
    let info = std::thread::spawn(move || {
        handle
            .tenant(&TenantId::new("acme").unwrap(), "worker")
            .unwrap()
            .create(NewCredential::new(
                "http_bearer_token",
                "t",
                json!({"token": "x-123"}),
            ))
            .unwrap()
    })
    .join()
    .unwrap();
    let scope = vault.store().tenant(&t, "alice").unwrap();
    assert_eq!(scope.find("t", "production").unwrap().id, info.id);
    vault.close().unwrap();
    // open_or_init on an existing vault opens it.
    let again = Vault::open_or_init(&dir.path().join("v"), VaultOptions::default()).unwrap();
    assert_eq!(again.store().tenants().unwrap().len(), 1);
    again.close().unwrap();
}

#[test]
fn a_wrong_master_key_is_refused_at_open_naming_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v");
    let vault = Vault::init(&path, VaultOptions::default()).unwrap();
    vault
        .store()
        .create_tenant(&TenantId::new("acme").unwrap(), "Acme", "admin")
        .unwrap();
    vault.close().unwrap();
    let key_file = Vault::master_key_path(&path);
    std::fs::remove_file(&key_file).unwrap();
    LocalKeyring::generate()
        .unwrap()
        .save_to_file(&key_file)
        .unwrap();
    let err = Vault::open(&path, VaultOptions::default()).unwrap_err();
    match &err {
        StoreError::Vault { what, path, reason } => {
            assert_eq!(*what, "master key");
            assert_eq!(path, &key_file.display().to_string());
            assert!(reason.contains("does not open"), "{reason}");
        }
        other => panic!("expected a master key error, got {other}"),
    }
    assert_eq!(err.to_string().lines().count(), 1);
}

#[test]
fn any_master_key_provider_plugs_in() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v");
    let provider = Arc::new(LocalKeyring::generate().unwrap());
    let options = || VaultOptions::default().master_key(provider.clone());
    let vault = Vault::init(&path, options()).unwrap();
    assert!(
        !Vault::master_key_path(&path).exists(),
        "a key file was written although a provider was given"
    );
    assert!(matches!(vault.master_source(), MasterSource::Provider(_)));
    let t = TenantId::new("acme").unwrap();
    vault.store().create_tenant(&t, "Acme", "admin").unwrap();
    let id = vault
        .store()
        .tenant(&t, "a")
        .unwrap()
        .create(NewCredential::new(
            "http_bearer_token",
            "t",
            json!({"token": "p-1"}),
        ))
        .unwrap()
        .id;
    vault.close().unwrap();
    let vault = Vault::open(&path, options()).unwrap();
    let r = vault
        .store()
        .tenant(&t, "a")
        .unwrap()
        .reveal(&id, &[], None)
        .unwrap();
    assert_eq!(r.expose_secret("token"), Some("p-1"));
    vault.close().unwrap();
    // Without the provider there is no key to open it with: a clear error, no panic.
    assert!(Vault::open(&path, VaultOptions::default()).is_err());
}

const CHILD_DIR: &str = "CREDVAULT_EMBEDDING_CHILD_DIR";

#[test]
#[ignore = "run by `the_environment_is_read_only_when_asked` as a child, with CREDVAULT_MASTER_KEY set"]
fn env_child() {
    let path = std::path::PathBuf::from(std::env::var(CHILD_DIR).expect("run by its parent"));
    // The default ignores CREDVAULT_MASTER_KEY (set to another key): the key file opens it.
    Vault::open(&path, VaultOptions::default())
        .unwrap()
        .close()
        .unwrap();
    // Asked for, the variable wins, and the wrong key is refused naming where it came from.
    let err = Vault::open(&path, VaultOptions::default().master_key_from_env()).unwrap_err();
    assert!(
        matches!(&err, StoreError::Vault { what: "master key", path, .. } if path == "$CREDVAULT_MASTER_KEY"),
        "{err}"
    );
    println!("env-child-ok");
}

#[test]
fn the_environment_is_read_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v");
    let vault = Vault::init(&path, VaultOptions::default()).unwrap();
    vault
        .store()
        .create_tenant(&TenantId::new("acme").unwrap(), "Acme", "admin")
        .unwrap();
    vault.close().unwrap();
    let other = LocalKeyring::generate().unwrap();
    let out = credvault_test::child_test("env_child")
        .env(CHILD_DIR, &path)
        .env("CREDVAULT_MASTER_KEY", other.export_secret_text().as_str())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("env-child-ok"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
