//! `credvault quickstart`: the README's main job until the store exists.

use credvault_envelope::{
    generate_data_key, EncryptionContext, EnvelopeHeader, LocalKeyring, MasterKey, OpenError,
    OpeningKey, SealingKey,
};
use serde_json::json;

use crate::{Failure, Output};

const DEMO_PASSWORD: &[u8] = b"correct horse battery staple";

fn field_ctx(tenant: &str, field: &str) -> Result<EncryptionContext, Failure> {
    EncryptionContext::new()
        .with("tenant", tenant)
        .and_then(|c| c.with("credential", "github-bot"))
        .and_then(|c| c.with("environment", "production"))
        .and_then(|c| c.with("field", field))
        .map_err(Failure::new)
}

pub(crate) fn run() -> Result<Output, Failure> {
    let mut text = String::new();
    let mut steps = Vec::new();
    let mut step = |title: &str, detail: String| {
        text.push_str(&format!("[{}] {title}\n      {detail}\n", steps.len() + 1));
        steps.push(json!({ "step": title, "detail": detail }));
    };

    // 1. Master key.
    let mut master = LocalKeyring::generate().map_err(Failure::new)?;
    step(
        "generated a local master key (in memory, never printed)",
        format!(
            "provider {}, active version {}",
            master.provider_id(),
            master.active()
        ),
    );

    // 2. Tenant data key, stored only wrapped.
    let tenant_ctx = EncryptionContext::new()
        .with("tenant", "acme")
        .map_err(Failure::new)?;
    let (dek, wrapped) = generate_data_key(&master, &tenant_ctx).map_err(Failure::new)?;
    step(
        "created data key for tenant \"acme\" and wrapped it",
        format!(
            "data key id {}, wrapped by {} ({} bytes stored)",
            dek.id(),
            wrapped.master_key(),
            wrapped.as_bytes().len()
        ),
    );

    // 3. Seal a credential field.
    let ctx = field_ctx("acme", "password")?;
    let sealer = SealingKey::new(&dek);
    let envelope = sealer.seal(DEMO_PASSWORD, &ctx).map_err(Failure::new)?;
    let header = EnvelopeHeader::parse(&envelope).map_err(Failure::new)?;
    step(
        "sealed credential \"github-bot\" field \"password\"",
        format!(
            "envelope v{} suite {:?}, key id {}, {} bytes for a {}-byte secret",
            header.version(),
            header.suite(),
            header.key_id(),
            envelope.len(),
            DEMO_PASSWORD.len()
        ),
    );

    // 4. Open it.
    let opened = sealer.open(&envelope, &ctx).map_err(Failure::new)?;
    if opened.expose_secret() != DEMO_PASSWORD {
        return Err(Failure::new(
            "quickstart: opened value differs from what was sealed",
        ));
    }
    step(
        "opened it with the same context",
        format!("{} bytes, matches the original", opened.len()),
    );

    // 5. The wrong tenant or field is refused.
    let wrong_tenant = sealer.open(&envelope, &field_ctx("globex", "password")?);
    let wrong_field = sealer.open(&envelope, &field_ctx("acme", "username")?);
    match (&wrong_tenant, &wrong_field) {
        (Err(OpenError::Decrypt(_)), Err(OpenError::Decrypt(_))) => {}
        _ => {
            return Err(Failure::new(
                "quickstart: a ciphertext opened under another context",
            ))
        }
    }
    step(
        "refused the same ciphertext for tenant \"globex\" and for field \"username\"",
        "decryption failed (one opaque error, no hint which check failed)".to_owned(),
    );

    // 6. Master-key rotation: rewrap the data key, nothing re-encrypted.
    master.rotate().map_err(Failure::new)?;
    let rewrapped = master.rewrap(&wrapped, &tenant_ctx).map_err(Failure::new)?;
    let dek_again = master
        .unwrap(&rewrapped, &tenant_ctx)
        .map_err(Failure::new)?;
    let still = OpeningKey::new(&dek_again)
        .open(&envelope, &ctx)
        .map_err(Failure::new)?;
    if still.expose_secret() != DEMO_PASSWORD {
        return Err(Failure::new(
            "quickstart: rewrapped data key does not open the envelope",
        ));
    }
    master.retire(1, 0).map_err(Failure::new)?;
    step(
        "rotated the master key and rewrapped the data key",
        format!(
            "now wrapped by {}; version 1 retired; the envelope still opens",
            rewrapped.master_key()
        ),
    );

    // 7. Data-key rotation: re-seal under a new data key.
    let (new_dek, _new_wrapped) = generate_data_key(&master, &tenant_ctx).map_err(Failure::new)?;
    let new_sealer = SealingKey::new(&new_dek);
    let moved = new_sealer
        .reseal_from(&OpeningKey::new(&dek_again), &envelope, &ctx)
        .map_err(Failure::new)?;
    let reopened = new_sealer.open(&moved, &ctx).map_err(Failure::new)?;
    if reopened.expose_secret() != DEMO_PASSWORD {
        return Err(Failure::new("quickstart: re-sealed envelope does not open"));
    }
    step(
        "rotated the tenant's data key and re-sealed the credential",
        format!(
            "new data key id {}; plaintext never left the library",
            new_dek.id()
        ),
    );

    text.push_str("quickstart complete: envelope encryption works on this machine\n");
    Ok(Output::Text {
        text,
        json: json!({ "ok": true, "steps": steps }),
    })
}
