//! The embedded default: a vault in a directory (SQLite, one master key file, an audit log),
//! an automation's credential stored, revealed for one service, rotated, and the audit log
//! verified, with nothing to set up.

use std::error::Error;

use credvault_store::{CredentialUpdate, NewCredential, TenantId, Vault, VaultOptions};
use serde_json::json;

fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let vault = Vault::init(
        &dir.path().join("vault"),
        VaultOptions::default().ignore_master_env(),
    )?;
    let acme = TenantId::new("acme")?;
    vault.store().create_tenant(&acme, "Acme Inc.", "admin")?;

    let scope = vault.store().tenant(&acme, "invoice-bot")?;
    let info = scope.create(
        NewCredential::new(
            "postgres",
            "billing-db",
            json!({"host": "db.internal", "database": "billing", "user": "bot", "password": "s3cret-pw"}),
        )
        .tags(["billing"]),
    )?;
    println!(
        "stored {} ({}) with fields {}",
        info.name,
        info.id,
        serde_json::Value::Object(info.fields.clone())
    );

    let id = info.id.clone();
    let secret = scope.reveal(&id, &["password"], Some("invoice-sync"))?;
    assert_eq!(secret.expose_secret("password"), Some("s3cret-pw"));
    println!(
        "revealed the password for invoice-sync ({} characters)",
        "s3cret-pw".len()
    );

    scope.update(
        &id,
        CredentialUpdate::new().fields(json!({"password": "n3w-pw"})),
    )?;
    let rotation = scope.rotate_key(&mut |_| {})?;
    println!(
        "tenant key rotated: {} credential(s) re-encrypted",
        rotation.resealed
    );
    assert_eq!(
        scope
            .reveal(&id, &["password"], None)?
            .expose_secret("password"),
        Some("n3w-pw")
    );

    drop(scope);
    let check = vault.verify_audit()?;
    assert!(check.is_intact());
    println!("audit log intact: {} events", check.report.events);
    vault.close()?;
    Ok(())
}
