//! Client-side encryption: the client seals with its tenant's data key; the vault verifies the
//! envelope against the key and the context it expects, without seeing the plaintext, and stores
//! the bytes verbatim.

use std::error::Error;

use credvault_envelope::{DataKey, EncryptionContext, OpeningKey, SealingKey};

fn main() -> Result<(), Box<dyn Error>> {
    // The vault's tenant key, handed to a trusted client over a secure channel.
    let vault_key = DataKey::generate()?;
    let client_key = DataKey::from_bytes(vault_key.id(), vault_key.expose_secret());

    let ctx = EncryptionContext::new()
        .with("tenant", "acme")?
        .with("credential", "stripe")?
        .with("field", "api_key")?;
    let envelope = SealingKey::new(&client_key).seal(b"sk_live_example", &ctx)?;

    // The vault checks what it received. A client that sealed for another field is refused.
    let vault = OpeningKey::new(&vault_key);
    let header = vault.verify(&envelope, &ctx)?;
    println!(
        "accepted envelope sealed under data key {} ({} bytes)",
        header.key_id(),
        envelope.len()
    );
    let wrong = EncryptionContext::new()
        .with("tenant", "acme")?
        .with("credential", "stripe")?
        .with("field", "webhook_secret")?;
    match vault.verify(&envelope, &wrong) {
        Err(e) => println!("refused under the wrong context: {e}"),
        Ok(_) => return Err("an envelope verified under the wrong context".into()),
    }
    Ok(())
}
