//! A command-line tool built on the store: `cli_tool [VAULT_DIR]` opens the vault (creating it
//! the first time), makes sure its `deploy-token` credential exists, and starts a child
//! process with the token in its environment only: never on its command line, never printed.
//! Errors map to exit codes the way a CLI should: busy (another process held the vault's
//! lock past the timeout) is 75, "try again"; anything else is 1 with one line.
//!
//! Run it several times at once on one directory: every run succeeds (writers wait for each
//! other). Without an argument it uses a throwaway directory.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use credvault_store::{NewCredential, StoreError, TenantId, Vault, VaultOptions};
use serde_json::json;

fn run(dir: PathBuf) -> Result<i32, StoreError> {
    let vault = Vault::open_or_init(&dir, VaultOptions::default())?;
    let tenant = TenantId::new("default")?;
    match vault.store().create_tenant(&tenant, "Default", "cli_tool") {
        Ok(_) | Err(StoreError::TenantExists { .. }) => {}
        Err(e) => return Err(e),
    }
    let scope = vault.store().tenant(&tenant, "cli_tool")?;
    let info = match scope.find("deploy-token", "production") {
        Ok(info) => info,
        Err(StoreError::NotFound { .. }) => match scope.create(NewCredential::new(
            "http_bearer_token",
            "deploy-token",
            json!({"token": "dpl_4c9e1f0a7b2d"}),
        )) {
            Ok(info) => info,
            // Another run created it between our lookup and our create: use that one.
            Err(StoreError::NameTaken { .. }) => scope.find("deploy-token", "production")?,
            Err(e) => return Err(e),
        },
        Err(e) => return Err(e),
    };
    let mut revealed = scope.reveal(&info.id, &["token"], Some("deploy"))?;
    let token = revealed.take("token");
    // Close before the child runs: nothing of the vault stays open while it works.
    vault.close()?;
    let status = Command::new("sh")
        .args([
            "-c",
            r#"test -n "$DEPLOY_TOKEN" && echo "child got a ${#DEPLOY_TOKEN}-character token""#,
        ])
        .env(
            "DEPLOY_TOKEN",
            token.as_ref().map_or("", |t| t.expose_secret()),
        )
        .status()
        .map_err(|e| StoreError::Unsupported(format!("cannot start sh: {e}")))?;
    drop(token); // wiped
    Ok(status.code().unwrap_or(1))
}

fn main() -> ExitCode {
    let tmp;
    let dir = match std::env::args_os().nth(1) {
        Some(d) => PathBuf::from(d),
        None => {
            tmp = match tempfile::tempdir() {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("cli_tool: {e}");
                    return ExitCode::FAILURE;
                }
            };
            tmp.path().join("vault")
        }
    };
    match run(dir) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e @ StoreError::Busy { .. }) => {
            eprintln!("cli_tool: {e}");
            ExitCode::from(75)
        }
        Err(e) => {
            eprintln!("cli_tool: {e}");
            ExitCode::FAILURE
        }
    }
}
