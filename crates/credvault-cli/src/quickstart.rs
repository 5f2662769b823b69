//! `credvault quickstart [--vault DIR]`: the README's main job. Creates a throwaway vault
//! (or one in DIR), adds a website login with a TOTP key, shows it masked, reveals one field,
//! prints a TOTP code, rotates the tenant key and the master key, verifies the audit log, and
//! prints each step. No server, no key to prepare.

use std::path::{Path, PathBuf};

use credvault_store::{NewCredential, TenantId, Vault, VaultOptions};
use credvault_totp::TotpSecret;
use serde_json::json;

use crate::{Failure, Output};

const DEMO_PASSWORD: &str = "correct horse battery staple";

pub(crate) fn run(dir: Option<&Path>) -> Result<Output, Failure> {
    let temp;
    let path: PathBuf = match dir {
        Some(d) => d.to_owned(),
        None => {
            temp = tempfile::Builder::new()
                .prefix("credvault-quickstart-")
                .tempdir()
                .map_err(|e| Failure::new(format!("cannot create a temporary directory: {e}")))?;
            temp.path().join("vault")
        }
    };
    let mut text = String::new();
    let mut steps = Vec::new();
    let mut step = |title: &str, detail: String| {
        text.push_str(&format!("[{}] {title}\n      {detail}\n", steps.len() + 1));
        steps.push(json!({ "step": title, "detail": detail }));
    };
    let f = |e: credvault_store::StoreError| Failure::new(e);
    let options = || VaultOptions::default().ignore_master_env();

    // 1. The vault.
    let vault = Vault::init(&path, options()).map_err(f)?;
    let tenant = TenantId::new("default").map_err(Failure::new)?;
    let t = vault
        .store()
        .create_tenant(&tenant, "Default", "quickstart")
        .map_err(f)?;
    step(
        "created a vault (SQLite database, master key file, audit key, audit log)",
        format!(
            "{}; tenant {} with its own data key {}",
            path.display(),
            t.id,
            t.active_key.unwrap_or_default()
        ),
    );

    // 2. A website login with an authenticator key.
    let totp = TotpSecret::generate().map_err(Failure::new)?;
    let b32 = totp.to_base32();
    let scope = vault.store().tenant(&tenant, "quickstart").map_err(f)?;
    let info = scope
        .create(
            NewCredential::new(
                "website_login",
                "example-portal",
                json!({
                    "login_url": "https://portal.example.com/login",
                    "username": "robot@example.com",
                    "password": DEMO_PASSWORD,
                    "totp_secret": b32.as_str(),
                }),
            )
            .tags(["demo"]),
        )
        .map_err(f)?;
    let id = info.id.clone();
    step(
        "added a website login with a TOTP authenticator key (validated, secrets sealed)",
        format!("{} ({}), version {}", info.name, info.id, info.version),
    );

    // 3. Masked view.
    let shown = scope.get(&id).map_err(f)?;
    step(
        "showed it masked (what get/list return; secrets never leave sealed)",
        serde_json::Value::Object(shown.fields.clone()).to_string(),
    );

    // 4. Reveal one field.
    let revealed = scope
        .reveal(&id, &["password"], Some("quickstart"))
        .map_err(f)?;
    let ok = revealed.expose_secret("password") == Some(DEMO_PASSWORD);
    if !ok {
        return Err(Failure::new(
            "the revealed password differs from the one stored",
        ));
    }
    step(
        "revealed one field for a service (recorded as `accessed`)",
        format!(
            "password: {} characters, matches what was stored (not printed)",
            DEMO_PASSWORD.len()
        ),
    );

    // 5. TOTP.
    let code = scope.totp_code(&id, Some("quickstart")).map_err(f)?;
    step(
        "generated a TOTP code at request time (the key itself is never returned)",
        format!(
            "{} (valid until unix {})",
            code.expose_secret(),
            code.expires_at / 1000
        ),
    );

    // 6. Tenant key rotation.
    let rot = scope.rotate_key(&mut |_| {}).map_err(f)?;
    if !rot.failed.is_empty() || rot.retired.is_empty() {
        return Err(Failure::new("the tenant key rotation did not finish"));
    }
    step(
        "rotated the tenant's data key (credentials re-encrypted, old key retired)",
        format!(
            "{} credential(s) now under key {}",
            rot.resealed, rot.new_key
        ),
    );
    drop(scope);

    // 7. Master key rotation.
    let (vault, master, retired) = vault.rotate_master("quickstart", &mut |_| {}).map_err(f)?;
    step(
        "rotated the master key (data keys re-wrapped, nothing re-encrypted)",
        format!(
            "{} data key(s) re-wrapped; retired master version(s) {:?}",
            master.rewrapped, retired
        ),
    );
    let still = vault
        .store()
        .tenant(&tenant, "quickstart")
        .and_then(|s| s.reveal(&id, &["username"], Some("quickstart")))
        .map_err(f)?;
    if still.expose_secret("username") != Some("robot@example.com") {
        return Err(Failure::new(
            "the credential no longer opens after rotation",
        ));
    }

    // 8. Audit.
    let check = vault.verify_audit().map_err(f)?;
    if !check.is_intact() {
        return Err(Failure::new(format!(
            "the audit log did not verify: {:?} {:?}",
            check.report.problem.map(|p| p.kind.to_string()),
            check.head_problem
        )));
    }
    step(
        "verified the audit log (hash chain, keyed checkpoints, anchor, head kept in the database)",
        format!(
            "{} events, {} checkpoints authenticated, intact",
            check.report.events, check.report.checkpoints_checked
        ),
    );
    vault.close().map_err(f)?;
    let kept = if dir.is_some() {
        format!("vault kept in {}\n", path.display())
    } else {
        "throwaway vault removed\n".to_owned()
    };
    text.push_str("quickstart complete: ");
    text.push_str(&kept);
    Ok(Output::Text {
        text,
        json: json!({ "ok": true, "vault": dir.map(|d| d.display().to_string()), "steps": steps }),
    })
}
