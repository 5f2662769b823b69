//! A worker pool: four threads, each holding its own clone of the `Store` handle, take jobs
//! from a queue and use a credential for each (revealed, audited, dropped right after use).
//! Meanwhile the main thread rotates the credential; every job sees a valid value, and the
//! audit log verifies with one `accessed` record per job.
//!
//! Run: `cargo run -p credvault-examples --bin worker_pool`.

use std::error::Error;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use credvault_store::{CredentialUpdate, NewCredential, TenantId, Vault, VaultOptions};
use serde_json::json;

const JOBS: usize = 200;

fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let vault = Vault::open_or_init(&dir.path().join("vault"), VaultOptions::default())?;
    let tenant = TenantId::new("acme")?;
    vault.store().create_tenant(&tenant, "Acme", "admin")?;
    let admin = vault.store().tenant(&tenant, "admin")?;
    let smtp = admin.create(NewCredential::new(
        "smtp",
        "mailer",
        json!({"host": "smtp.example.com", "user": "bot", "password": "pw-0"}),
    ))?;

    let (jobs, queue) = mpsc::channel::<usize>();
    let queue = Arc::new(Mutex::new(queue));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let store = vault.store().clone();
            let (tenant, queue, id) = (tenant.clone(), Arc::clone(&queue), smtp.id.clone());
            std::thread::spawn(move || -> Result<usize, credvault_store::StoreError> {
                let scope = store.tenant(&tenant, format!("worker-{w}"))?;
                let mut done = 0;
                loop {
                    let job = match queue.lock() {
                        Ok(q) => q.recv(),
                        Err(_) => break,
                    };
                    let Ok(_job) = job else { break };
                    let pw = scope.reveal(&id, &["password"], Some("mailer"))?;
                    // "Send the email": the password is used here and wiped when `pw` drops.
                    assert!(pw
                        .expose_secret("password")
                        .is_some_and(|p| p.starts_with("pw-")));
                    done += 1;
                }
                Ok(done)
            })
        })
        .collect();
    for j in 0..JOBS {
        jobs.send(j)?;
        if j % 50 == 49 {
            // Rotate the mail password while the workers keep using it.
            admin.update(
                &smtp.id,
                CredentialUpdate::new().fields(json!({"password": format!("pw-{}", j + 1)})),
            )?;
        }
    }
    drop(jobs);
    let mut total = 0;
    for w in workers {
        total += w.join().map_err(|_| "a worker panicked")??;
    }
    let check = vault.verify_audit()?;
    if total != JOBS || !check.is_intact() {
        return Err(format!("{total} jobs done, audit intact: {}", check.is_intact()).into());
    }
    println!(
        "4 workers did {total} jobs with one store; audit log intact ({} events)",
        check.report.events
    );
    vault.close()?;
    Ok(())
}
