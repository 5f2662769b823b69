//! Master-key and data-key rotation for a small "database" of tenants, the way a store does it:
//! nothing is removed before its replacement is written, and old key versions are retired only
//! when nothing references them.

use std::collections::BTreeMap;
use std::error::Error;

use credvault_envelope::{
    generate_data_key, needs_rewrap, EncryptionContext, EnvelopeHeader, LocalKeyring, MasterKey,
    OpeningKey, SealingKey, WrappedKey,
};

fn tenant_ctx(t: &str) -> Result<EncryptionContext, Box<dyn Error>> {
    Ok(EncryptionContext::new().with("tenant", t)?)
}

fn field_ctx(t: &str, cred: &str) -> Result<EncryptionContext, Box<dyn Error>> {
    Ok(tenant_ctx(t)?
        .with("credential", cred)?
        .with("field", "password")?)
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut master = LocalKeyring::generate()?;
    // "Rows": tenant -> wrapped DEK, and (tenant, credential) -> envelope.
    let mut deks: BTreeMap<&str, WrappedKey> = BTreeMap::new();
    let mut secrets: BTreeMap<(&str, String), Vec<u8>> = BTreeMap::new();
    for t in ["acme", "globex"] {
        let (dek, wrapped) = generate_data_key(&master, &tenant_ctx(t)?)?;
        let sealer = SealingKey::new(&dek);
        for i in 0..3 {
            let cred = format!("cred-{i}");
            let env = sealer.seal(format!("{t} secret {i}").as_bytes(), &field_ctx(t, &cred)?)?;
            secrets.insert((t, cred), env);
        }
        deks.insert(t, wrapped);
    }
    println!(
        "stored {} secrets for {} tenants under master v{}",
        secrets.len(),
        deks.len(),
        master.active()
    );

    // Master-key rotation: add v2, rewrap each DEK (60-byte rows), then retire v1.
    master.rotate()?;
    for (t, wrapped) in deks.iter_mut() {
        if needs_rewrap(&master, wrapped)? {
            *wrapped = master.rewrap(wrapped, &tenant_ctx(t)?)?;
        }
    }
    let still_on_v1 = deks
        .values()
        .filter(|w| w.master_key().version == 1)
        .count() as u64;
    master.retire(1, still_on_v1)?;
    println!(
        "master rotated to v{}; v1 retired; no secret re-encrypted",
        master.active()
    );

    // Data-key rotation for one tenant: new DEK, re-seal each envelope, then drop the old DEK.
    let t = "acme";
    let old = master.unwrap(&deks[t], &tenant_ctx(t)?)?;
    let (new, new_wrapped) = generate_data_key(&master, &tenant_ctx(t)?)?;
    let old_opener = OpeningKey::new(&old);
    let new_sealer = SealingKey::new(&new);
    for ((tenant, cred), env) in secrets.iter_mut().filter(|((tn, _), _)| *tn == t) {
        *env = new_sealer.reseal_from(&old_opener, env, &field_ctx(tenant, cred)?)?;
    }
    let on_old = secrets
        .values()
        .filter(|e| {
            EnvelopeHeader::parse(e)
                .map(|h| h.key_id() == old.id())
                .unwrap_or(false)
        })
        .count();
    assert_eq!(
        on_old, 0,
        "every envelope moved before the old DEK is dropped"
    );
    deks.insert(t, new_wrapped);
    println!(
        "tenant {t}: data key {} -> {}, {} envelopes re-sealed",
        old.id(),
        new.id(),
        new_sealer.usage()
    );

    // Everything still opens with the keys we now hold.
    for ((tenant, cred), env) in &secrets {
        let dek = master.unwrap(&deks[tenant], &tenant_ctx(tenant)?)?;
        let pt = OpeningKey::new(&dek).open(env, &field_ctx(tenant, cred)?)?;
        assert_eq!(
            pt.expose_secret(),
            format!("{tenant} secret {}", &cred[5..]).as_bytes()
        );
    }
    println!("all {} secrets open after both rotations", secrets.len());
    Ok(())
}
