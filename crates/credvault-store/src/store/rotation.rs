//! Key rotation: the master key (re-wrapping data keys) and a tenant's data key (re-sealing its credentials).

use std::collections::BTreeMap;

use credvault_audit::{Action, AuditEvent, Details};
use credvault_envelope::{generate_data_key, needs_rewrap, KeyId, WrappedKey};

use super::integrity::{credential_mac, data_key_mac, mac_key};
use super::sealing::{credential_context, data_key_context};
use super::{Scope, Store};
use crate::error::StoreError;
use crate::ids::{CredentialId, TenantId};
use crate::keys::CachedKey;
use crate::model::{KeyRotation, MasterRotation, Progress};
use crate::storage::StorageError;
use crate::storage::{CredentialRow, DataKeyRow, KeyState, Reseal};

impl Store {
    // ---- master key rotation ----

    /// Re-wraps every tenant's data keys that the master key's active version did not wrap.
    /// No secret is re-encrypted. Resumable: run it again after an interruption.
    ///
    /// # Errors
    /// [`StoreError::Storage`]; a key that fails to re-wrap is reported in
    /// [`MasterRotation::failed`], not as an error.
    pub fn rotate_master(
        &self,
        actor: &str,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<MasterRotation, StoreError> {
        let tenants = self.storage.tenants()?;
        let mut out = MasterRotation::default();
        let mut keys = Vec::new();
        for t in &tenants {
            keys.extend(self.storage.data_keys(&t.id)?);
        }
        let total = keys.len() as u64;
        let to = self.master.active_version()?;
        // Tenant -> the master version its keys were re-wrapped from.
        let mut per_tenant: BTreeMap<String, Option<u32>> = BTreeMap::new();
        for (i, k) in keys.iter().enumerate() {
            let fail = |out: &mut MasterRotation| {
                out.failed
                    .push((k.tenant.to_string(), k.key_id.to_string()));
            };
            let Ok(w) = WrappedKey::parse(&k.wrapped) else {
                fail(&mut out);
                continue;
            };
            if !needs_rewrap(&*self.master, &w)? {
                out.current += 1;
            } else {
                let ctx = data_key_context(&k.tenant)?;
                match self.master.rewrap(&w, &ctx) {
                    Ok(new) if new.data_key_id() == k.key_id => {
                        if self.storage.replace_wrapped(
                            &k.tenant,
                            &k.key_id,
                            &k.wrapped,
                            new.as_bytes(),
                        )? {
                            // Each master-key use on record: which data key, from which
                            // master key (provider and version) to which.
                            self.record(
                                &AuditEvent::new(
                                    k.tenant.as_str(),
                                    actor,
                                    Action::Other("key_used".into()),
                                )
                                .with_details(Details::KeyUsed {
                                    key: k.key_id.to_string(),
                                    master: new.master_key().to_string(),
                                    operation: format!("rewrap from {}", w.master_key()),
                                }),
                            )?;
                            out.rewrapped += 1;
                            per_tenant.insert(k.tenant.to_string(), Some(w.master_key().version));
                        }
                    }
                    _ => fail(&mut out),
                }
            }
            progress(Progress {
                done: i as u64 + 1,
                total,
            });
        }
        for (tenant, from) in per_tenant {
            let event = AuditEvent::new(tenant, actor, Action::KeyRotated).with_details(
                Details::KeyRotated {
                    key: "master".into(),
                    from_version: from,
                    to_version: Some(to),
                },
            );
            let head = self.record(&event)?;
            if let Ok(t) = TenantId::new(event.tenant.as_str()) {
                self.storage.record_use(&t, &[], head)?;
            }
        }
        self.cache.clear();
        Ok(out)
    }

    /// How many data keys each (provider, master version) wraps: a master version may be
    /// retired once it wraps none.
    ///
    /// # Errors
    /// [`StoreError::Storage`].
    pub fn master_key_references(&self) -> Result<BTreeMap<(String, u32), u64>, StoreError> {
        let mut out = BTreeMap::new();
        for t in self.storage.tenants()? {
            for k in self.storage.data_keys(&t.id)? {
                if let Ok(w) = WrappedKey::parse(&k.wrapped) {
                    let m = w.master_key();
                    *out.entry((m.provider.clone(), m.version)).or_insert(0) += 1;
                }
            }
        }
        Ok(out)
    }
}

impl Scope<'_> {
    /// Rotates the tenant's data key: a new key becomes active, every credential is
    /// re-encrypted to it in batches (one transaction each), and the old key is retired once
    /// no row names it. Interrupted at any point, every credential still opens; calling it
    /// again resumes the job instead of starting another.
    ///
    /// `Ok` does not by itself mean finished: check [`KeyRotation::is_finished`]. Rows that
    /// concurrent updates kept under the old key are swept again a few times; whatever is
    /// still left (or corrupt) is reported in [`KeyRotation::remaining`], and the old key stays
    /// until a later call finishes the job.
    ///
    /// # Errors
    /// [`StoreError::Storage`], [`StoreError::MasterKey`], [`StoreError::Audit`].
    pub fn rotate_key(
        &self,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<KeyRotation, StoreError> {
        let store = self.store;
        let started = self.start_key_rotation()?;
        let (new_id, new_key) = store.active_key(&self.tenant)?;
        let remaining = store.storage.count_under(&self.tenant, &new_id, false)?;
        let mut report = KeyRotation {
            tenant: self.tenant.clone(),
            started,
            new_key: new_id.to_string(),
            resealed: 0,
            failed: Vec::new(),
            retired: Vec::new(),
            remaining: 0,
        };
        let mut done = 0u64;
        progress(Progress {
            done,
            total: remaining,
        });
        // A row updated while its batch was resealed is skipped (its version changed); a writer
        // that loaded the old active key just before the rotation started writes under it. So
        // sweep again from the start while rows remain that are not known to be corrupt, a few
        // times, and report what is left rather than claim success.
        for _ in 0..4 {
            self.reseal_pass(
                &new_id,
                &new_key,
                &mut report,
                &mut done,
                remaining,
                progress,
            )?;
            let left = store.storage.count_under(&self.tenant, &new_id, false)?;
            if left <= report.failed.len() as u64 {
                break;
            }
        }
        // Rows skipped because they changed meanwhile were re-sealed by their writer (with the
        // active key) or will be picked up by the next run; retire only what nothing names.
        let event = self
            .event(Action::KeyRotated)
            .with_details(Details::KeyRotated {
                key: "tenant_retired".into(),
                from_version: None,
                to_version: None,
            });
        let retired = store
            .storage
            .retire_unreferenced_keys(&self.tenant, &mut |c| store.audit.record_in(c, &event))?;
        report.retired = retired.iter().map(ToString::to_string).collect();
        report.remaining = store.storage.count_under(&self.tenant, &new_id, false)?;
        store.cache.invalidate(&self.tenant);
        Ok(report)
    }

    /// The first step of a tenant-key rotation, unless one is under way (a retiring key
    /// exists): a new active data key, the old one retiring, recorded as `key_rotated`.
    /// Returns whether it started one. [`rotate_key`](Self::rotate_key) calls it; the store
    /// calls it by itself when a key's usage passes `CacheConfig::rotate_at`.
    pub(crate) fn start_key_rotation(&self) -> Result<bool, StoreError> {
        let store = self.store;
        let keys = store.storage.data_keys(&self.tenant)?;
        if keys.iter().any(|k| k.state == KeyState::Retiring) {
            return Ok(false);
        }
        let (dek, wrapped) = generate_data_key(&*store.master, &data_key_context(&self.tenant)?)?;
        let tenant = store
            .storage
            .tenant(&self.tenant)?
            .ok_or(StoreError::Storage(StorageError::NotFound {
                what: "tenant",
            }))?;
        let mut row = DataKeyRow {
            tenant: self.tenant.clone(),
            key_id: dek.id(),
            wrapped: wrapped.as_bytes().to_vec(),
            state: KeyState::Active,
            usage: 0,
            created_at: store.now(),
            mac: Vec::new(),
        };
        row.mac = data_key_mac(&mac_key(&dek), &tenant, &row);
        let event = self
            .event(Action::KeyRotated)
            .with_details(Details::KeyRotated {
                key: "tenant".into(),
                from_version: None,
                to_version: None,
            });
        store
            .storage
            .start_key_rotation(&row, &mut |c| store.audit.record_in(c, &event))?;
        store.cache.invalidate(&self.tenant);
        Ok(true)
    }

    /// One sweep over the credentials not under `new_id`, resealing them in batches.
    pub(crate) fn reseal_pass(
        &self,
        new_id: &KeyId,
        new_key: &CachedKey,
        report: &mut KeyRotation,
        done: &mut u64,
        remaining: u64,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), StoreError> {
        let store = self.store;
        let mut cursor: Option<CredentialId> = None;
        loop {
            let rows = store.storage.credentials_not_under(
                &self.tenant,
                new_id,
                cursor.as_ref(),
                store.cfg.rotation_batch,
            )?;
            let Some(last) = rows.last() else { break };
            cursor = Some(last.id.clone());
            let mut batch = Vec::with_capacity(rows.len());
            new_key.take_permits(rows.len() as u64, &store.cache.cfg, |n| {
                Ok(store.storage.reserve_usage(&self.tenant, new_id, n)?)
            })?;
            for row in &rows {
                if report.failed.iter().any(|f| f == row.id.as_str()) {
                    continue;
                }
                // A row changed outside the vault is not resealed: that would give the change
                // a valid MAC under the new key (the check records `integrity_failure`).
                let Ok(auth) = store.authenticated(row.clone(), &self.actor) else {
                    report.failed.push(row.id.to_string());
                    continue;
                };
                let row = &auth.row;
                let ctx =
                    credential_context(&self.tenant, &row.id, &row.environment, &row.type_name)?;
                match new_key
                    .key
                    .reseal_from(auth.key.key.opener(), &row.secret, &ctx)
                {
                    Ok(secret) => {
                        let mut resealed = CredentialRow::clone(row);
                        resealed.key_id = *new_id;
                        resealed.secret = secret;
                        let mac = credential_mac(&new_key.mac, &resealed);
                        batch.push(Reseal {
                            id: row.id.clone(),
                            version: row.version,
                            old_key: row.key_id,
                            new_key: *new_id,
                            secret: resealed.secret,
                            mac,
                        });
                    }
                    Err(_) => report.failed.push(row.id.to_string()),
                }
            }
            report.resealed += store.storage.reseal(&self.tenant, &batch)? as u64;
            *done += rows.len() as u64;
            progress(Progress {
                done: *done,
                total: remaining.max(*done),
            });
        }
        Ok(())
    }
}
