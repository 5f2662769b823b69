//! Client-side encryption through the store: a trusted client fetches its tenant's data key,
//! seals a credential itself with `SealedCredential::seal` (which builds the exact context the
//! vault checks), and the vault verifies the envelope and stores it byte for byte without
//! the plaintext ever crossing to it. A client that seals for another tenant is refused with
//! a reason that names the problem but is no decryption oracle.

use std::error::Error;

use credvault_store::{
    NewCredential, SealRejection, SealedCredential, StoreError, TenantId, Vault, VaultOptions,
};
use serde_json::json;

fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let vault = Vault::open_or_init(&dir.path().join("vault"), VaultOptions::default())?;
    let (acme, globex) = (TenantId::new("acme")?, TenantId::new("globex")?);
    vault.store().create_tenant(&acme, "Acme", "admin")?;
    vault.store().create_tenant(&globex, "Globex", "admin")?;
    let scope = vault.store().tenant(&acme, "client")?;

    // The client side: the tenant's data key, handed over a secure channel (audited).
    let key = scope.client_data_key()?;
    let ty = vault.store().credential_type("http_bearer_token")?;
    let stripe = || {
        NewCredential::new(
            "http_bearer_token",
            "stripe",
            json!({"token": "sk_live_51Hx9aQ2eZvKYlo2C0sT"}),
        )
    };
    let sealed = SealedCredential::seal(&key, &acme, &ty, stripe())?;
    let bytes = sealed.envelope.len();

    // The vault side: verified against the tenant's key and the credential's context.
    let info = scope.create_sealed(sealed)?;
    println!(
        "accepted {} ({bytes}-byte envelope, stored verbatim under data key {})",
        info.name, info.key_id
    );
    let revealed = scope.reveal(&info.id, &["token"], Some("billing"))?;
    assert_eq!(
        revealed.expose_secret("token"),
        Some("sk_live_51Hx9aQ2eZvKYlo2C0sT")
    );

    // Sent to the wrong tenant: refused, and the reason says which part was wrong.
    let other = vault.store().tenant(&globex, "client")?;
    match other.create_sealed(SealedCredential::seal(&key, &acme, &ty, stripe())?) {
        Err(
            e @ StoreError::SealedRejected {
                reason: SealRejection::WrongKey,
            },
        ) => println!("refused for another tenant: {e}"),
        other => return Err(format!("expected a wrong-key refusal, got {other:?}").into()),
    }
    vault.close()?;
    Ok(())
}
