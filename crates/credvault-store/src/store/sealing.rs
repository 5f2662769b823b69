//! Data keys and the sealed fields: loading and unwrapping keys, sealing and opening a credential's secret fields.

use std::sync::{Arc, OnceLock};

use credvault_envelope::{DataKey, EncryptionContext, KeyId, SealError, WrappedKey};
use credvault_schema::{Credential, CredentialType};

use credvault_audit::{Action, AuditEvent, Details, Resource};

use super::integrity::{credential_mac, data_key_mac, mac_key, mac_matches};
use super::Store;
use crate::error::StoreError;
use crate::fields::{decode_secret_fields, encode_secret_fields};
use crate::ids::{CredentialId, TenantId};
use crate::keys::CachedKey;
use crate::model::wipe_json;
use crate::storage::{CredentialRow, DataKeyRow, KeyState, StorageError};

/// A credential row whose record MAC was checked, with the data key it was checked under.
pub(crate) struct Authentic {
    pub(crate) row: Arc<CredentialRow>,
    pub(crate) key: Arc<CachedKey>,
    /// What is made of the row, once per row (shared by every access to the same `row`).
    derived: Arc<Derived>,
}

impl Authentic {
    /// The row's public fields (`None` if they are not a JSON object), parsed once per row.
    pub(crate) fn public_fields(&self) -> Option<&serde_json::Map<String, serde_json::Value>> {
        self.derived
            .public
            .get_or_init(|| serde_json::from_str(&self.row.public).ok())
            .as_ref()
    }
}

/// What the store makes of an authentic row, each part on first use: the encryption context
/// of its sealed fields and its parsed public fields.
#[derive(Default)]
pub(crate) struct Derived {
    ctx: OnceLock<Arc<EncryptionContext>>,
    public: OnceLock<Option<serde_json::Map<String, serde_json::Value>>>,
}

/// The actor of rotations the store starts by itself, in the audit log.
pub const AUTO_ROTATION_ACTOR: &str = "credvault:auto-rotation";

/// The actor of `key_used` events: the vault itself, unwrapping a tenant key for whichever
/// request needed it (that request's own event follows, with its actor and the key id).
pub const VAULT_ACTOR: &str = "credvault";

impl std::ops::Deref for Authentic {
    type Target = CredentialRow;

    fn deref(&self) -> &CredentialRow {
        &self.row
    }
}

/// A credential's row as last opened: the very row (shared with the backend's copy kept for
/// accesses, [`Storage::credential_for_access`](crate::Storage::credential_for_access)),
/// whose record MAC was checked, and what was made of it.
pub(crate) struct Checked {
    row: Arc<CredentialRow>,
    derived: Arc<Derived>,
}

/// The encryption context of a credential's sealed fields: tenant, credential id,
/// environment and type. A client sealing a credential itself uses the same.
///
/// # Errors
/// [`StoreError::Invalid`] if a value is too long for a context.
pub fn credential_context(
    tenant: &TenantId,
    id: &CredentialId,
    environment: &str,
    type_name: &str,
) -> Result<EncryptionContext, StoreError> {
    let bad = |e: credvault_envelope::ContextError| StoreError::Invalid {
        what: "encryption context",
        reason: e.to_string(),
    };
    EncryptionContext::new()
        .with("tenant", tenant.as_str())
        .and_then(|c| c.with("credential", id.as_str()))
        .and_then(|c| c.with("environment", environment))
        .and_then(|c| c.with("type", type_name))
        .map_err(bad)
}

/// The context a tenant's data key is wrapped under.
pub(crate) fn data_key_context(tenant: &TenantId) -> Result<EncryptionContext, StoreError> {
    EncryptionContext::new()
        .with("purpose", "credvault-tenant-data-key")
        .and_then(|c| c.with("tenant", tenant.as_str()))
        .map_err(|e| StoreError::Invalid {
            what: "encryption context",
            reason: e.to_string(),
        })
}

impl Store {
    // ---- keys ----

    pub(crate) fn load_key(
        &self,
        tenant: &TenantId,
        key_id: KeyId,
    ) -> Result<CachedKey, StoreError> {
        let rows = self.storage.data_keys(tenant)?;
        let row = rows
            .iter()
            .find(|k| k.key_id == key_id)
            .ok_or(StoreError::Storage(StorageError::UnknownKey { key_id }))?;
        let dek = self.unwrap_for_use(tenant, row)?;
        Ok(CachedKey::new(&dek))
    }

    /// Unwraps a data key to use it (a cache miss), recorded as `key_used`: which data key,
    /// which master key, which operation. Fails closed: a key whose use cannot be recorded is
    /// not used. (Checks that unwrap a key without using it — the master-key check at open,
    /// migration, diagnosing a failed unwrap — are not recorded.)
    fn unwrap_for_use(&self, tenant: &TenantId, row: &DataKeyRow) -> Result<DataKey, StoreError> {
        let dek = self.unwrap_row(tenant, row)?;
        let master = WrappedKey::parse(&row.wrapped)
            .map(|w| w.master_key().to_string())
            .unwrap_or_default();
        self.record(
            &AuditEvent::new(
                tenant.as_str(),
                VAULT_ACTOR,
                Action::Other("key_used".into()),
            )
            .with_details(Details::KeyUsed {
                key: row.key_id.to_string(),
                master,
                operation: "unwrap".into(),
            }),
        )?;
        Ok(dek)
    }

    /// Unwraps a data key row and checks its record MAC (the row, and the tenant row it
    /// belongs to, as the vault wrote them).
    pub(crate) fn unwrap_row(
        &self,
        tenant: &TenantId,
        row: &DataKeyRow,
    ) -> Result<DataKey, StoreError> {
        let dek = self.unwrap_unchecked(tenant, row)?;
        let t =
            self.storage
                .tenant(tenant)?
                .ok_or(StoreError::Storage(StorageError::NotFound {
                    what: "tenant",
                }))?;
        if !mac_matches(&row.mac, &data_key_mac(&mac_key(&dek), &t, row)) {
            return Err(self.key_integrity_failed(
                tenant,
                row,
                "data key row does not match its record MAC",
            ));
        }
        Ok(dek)
    }

    /// Unwraps a data key row without checking its record MAC (to compute missing MACs).
    pub(crate) fn unwrap_unchecked(
        &self,
        tenant: &TenantId,
        row: &DataKeyRow,
    ) -> Result<DataKey, StoreError> {
        let wrapped = WrappedKey::parse(&row.wrapped).map_err(|_| {
            self.key_integrity_failed(tenant, row, "wrapped data key does not parse")
        })?;
        // Another tenant's key re-pointed here does not unwrap: the tenant is in the context.
        let dek = match self.master.unwrap(&wrapped, &data_key_context(tenant)?) {
            Ok(k) => k,
            // The master key opens other keys of this vault, so it is not the wrong master
            // key: this row is not one it wrapped for this tenant.
            Err(_) if self.unwraps_another_key(tenant, row) => {
                return Err(self.key_integrity_failed(
                    tenant,
                    row,
                    "data key does not unwrap for this tenant",
                ));
            }
            Err(e) => return Err(e.into()),
        };
        if dek.id() != row.key_id {
            return Err(self.key_integrity_failed(
                tenant,
                row,
                "wrapped data key names another key id",
            ));
        }
        Ok(dek)
    }

    fn key_integrity_failed(
        &self,
        tenant: &TenantId,
        row: &DataKeyRow,
        reason: &str,
    ) -> StoreError {
        self.integrity_failed(tenant, "credvault", Resource::default(), reason);
        StoreError::Integrity {
            record: "data key",
            id: row.key_id.to_string(),
        }
    }

    /// Whether the master key unwraps some other data key of the vault.
    fn unwraps_another_key(&self, tenant: &TenantId, bad: &DataKeyRow) -> bool {
        let Ok(tenants) = self.storage.tenants() else {
            return false;
        };
        tenants.iter().any(|t| {
            self.storage.data_keys(&t.id).is_ok_and(|keys| {
                keys.iter()
                    .filter(|k| !(t.id == *tenant && k.key_id == bad.key_id))
                    .any(
                        |k| match (WrappedKey::parse(&k.wrapped), data_key_context(&t.id)) {
                            (Ok(w), Ok(ctx)) => self.master.unwrap(&w, &ctx).is_ok(),
                            _ => false,
                        },
                    )
            })
        })
    }

    /// The record MAC a credential row must carry, under the key it names.
    pub(crate) fn row_mac(&self, row: &CredentialRow) -> Result<Vec<u8>, StoreError> {
        let key = self.key(&row.tenant, row.key_id)?;
        Ok(credential_mac(&key.mac, row))
    }

    /// Checks a credential row's record MAC before anything of it is used, and keeps the key
    /// it was checked under for opening it. A row read just before a rotation retired its key
    /// is read again (resealing changes the key and the MAC, never the content). A mismatch is
    /// recorded as `integrity_failure` (by `actor`).
    ///
    /// The very row opened before (the same allocation, which the backend hands out again
    /// while its copy is current) is not checked again: its MAC was, and nothing in an `Arc`
    /// changes. Its key is still looked up, as for any row.
    pub(crate) fn authenticated(
        &self,
        row: impl Into<Arc<CredentialRow>>,
        actor: &str,
    ) -> Result<Authentic, StoreError> {
        let mut row = row.into();
        let mut known = self.checked_before(&row);
        for _ in 0..4 {
            let key = match self.key(&row.tenant, row.key_id) {
                Ok(k) => k,
                Err(StoreError::Storage(StorageError::UnknownKey { .. })) => {
                    match self.storage.credential(&row.tenant, &row.id)? {
                        Some(fresh) if fresh.key_id != row.key_id => {
                            row = Arc::new(fresh);
                            known = None;
                            continue;
                        }
                        _ => break,
                    }
                }
                Err(e) => return Err(e),
            };
            if let Some(derived) = known {
                return Ok(Authentic { row, key, derived });
            }
            if mac_matches(&row.mac, &credential_mac(&key.mac, &row)) {
                let derived = Arc::default();
                return Ok(Authentic { row, key, derived });
            }
            break;
        }
        self.integrity_failed(
            &row.tenant,
            actor,
            Resource::credential(row.id.as_str()),
            "credential row does not match its record MAC",
        );
        Err(StoreError::Integrity {
            record: "credential",
            id: row.id.to_string(),
        })
    }

    /// Records an `integrity_failure` (best effort: the error being returned matters more).
    pub(crate) fn integrity_failed(
        &self,
        tenant: &TenantId,
        actor: &str,
        resource: Resource,
        reason: &str,
    ) {
        self.record_quietly(
            &AuditEvent::new(tenant.as_str(), actor, Action::IntegrityFailure)
                .with_resource(resource)
                .with_details(Details::AccessFailed {
                    reason: reason.into(),
                }),
        );
    }

    pub(crate) fn key(
        &self,
        tenant: &TenantId,
        key_id: KeyId,
    ) -> Result<Arc<CachedKey>, StoreError> {
        self.cache
            .get(tenant, key_id, || self.load_key(tenant, key_id))
    }

    /// The tenant's active data key row.
    pub(crate) fn active_key_row(&self, tenant: &TenantId) -> Result<DataKeyRow, StoreError> {
        self.storage
            .data_keys(tenant)?
            .into_iter()
            .find(|k| k.state == KeyState::Active)
            .ok_or(StoreError::Storage(StorageError::NotFound {
                what: "data key",
            }))
    }

    pub(crate) fn active_key(
        &self,
        tenant: &TenantId,
    ) -> Result<(KeyId, Arc<CachedKey>), StoreError> {
        let row = self.active_key_row(tenant)?;
        let id = row.key_id;
        let k = self.cache.get(tenant, id, || {
            let dek = self.unwrap_for_use(tenant, &row)?;
            Ok(CachedKey::new(&dek))
        })?;
        Ok((id, k))
    }

    pub(crate) fn seal(
        &self,
        tenant: &TenantId,
        key_id: KeyId,
        key: &CachedKey,
        plaintext: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<Vec<u8>, StoreError> {
        let due = key.take_permits(1, &self.cache.cfg, |n| {
            match self.storage.reserve_usage(tenant, &key_id, n) {
                Ok(total) => Ok(total),
                // Retired (and deleted) by a rotation since it was looked up as the active
                // key: the caller seals again under the current one.
                Err(StorageError::NotFound { .. }) => {
                    Err(StoreError::Storage(StorageError::UnknownKey { key_id }))
                }
                Err(e) => Err(e.into()),
            }
        })?;
        let sealed = key.key.seal(plaintext, ctx).map_err(|e| match e {
            SealError::UsageLimitReached { .. } => StoreError::KeyExhausted,
            other => StoreError::Invalid {
                what: "secret fields",
                reason: other.to_string(),
            },
        })?;
        if due {
            self.rotate_when_due(tenant);
        }
        Ok(sealed)
    }

    /// Starts a rotation of `tenant`'s data key once its usage passed
    /// [`CacheConfig::rotate_at`](crate::CacheConfig::rotate_at), as [`AUTO_ROTATION_ACTOR`]
    /// (unless one is under way). A failure changes nothing and is retried by the next
    /// reservation: the seal that found the key due has already succeeded.
    pub(crate) fn rotate_when_due(&self, tenant: &TenantId) {
        if let Ok(scope) = self.tenant(tenant, AUTO_ROTATION_ACTOR) {
            let _ = scope.start_key_rotation();
        }
    }

    pub(crate) fn seal_credential(
        &self,
        tenant: &TenantId,
        id: &CredentialId,
        environment: &str,
        cred: &Credential,
    ) -> Result<(KeyId, Vec<u8>, Vec<String>), StoreError> {
        let names: Vec<String> = cred.secrets().map(|(k, _)| k.to_owned()).collect();
        let blob = encode_secret_fields(cred.secrets().map(|(k, v)| (k, v.expose_secret())))?;
        let ctx = credential_context(tenant, id, environment, cred.type_name())?;
        let (key_id, key) = self.active_key(tenant)?;
        let env = self.seal(tenant, key_id, &key, &blob, &ctx)?;
        Ok((key_id, env, names))
    }

    /// What was made of `row` if it is the very row (the same allocation) last opened for its
    /// credential.
    fn checked_before(&self, row: &Arc<CredentialRow>) -> Option<Arc<Derived>> {
        let checked = self.checked.lock().ok()?;
        let c = checked.get(&row.id)?;
        Arc::ptr_eq(&c.row, row).then(|| Arc::clone(&c.derived))
    }

    /// The encryption context of a row's sealed fields, made once per row. A row opened is
    /// kept, per credential (up to [`KEPT_ROWS`](crate::storage::KEPT_ROWS)) with what was
    /// made of it: a repeated
    /// access to the same row checks no MAC, builds no context and hashes none (envelope v2's
    /// digest is computed once per context).
    pub(crate) fn row_context(
        &self,
        row: &Authentic,
    ) -> Result<Arc<EncryptionContext>, StoreError> {
        if let Some(c) = row.derived.ctx.get() {
            return Ok(Arc::clone(c));
        }
        let ctx = Arc::new(credential_context(
            &row.tenant,
            &row.id,
            &row.environment,
            &row.type_name,
        )?);
        let ctx = Arc::clone(row.derived.ctx.get_or_init(|| ctx));
        if let Ok(mut checked) = self.checked.lock() {
            crate::storage::keep(
                &mut checked,
                row.id.clone(),
                Checked {
                    row: Arc::clone(&row.row),
                    derived: Arc::clone(&row.derived),
                },
            );
        }
        Ok(ctx)
    }

    /// Opens an authenticated row's sealed fields with the key its MAC was checked under:
    /// the plaintext, in a wiping buffer.
    pub(crate) fn open_row(
        &self,
        row: &Authentic,
    ) -> Result<credvault_envelope::Plaintext, StoreError> {
        let ctx = self.row_context(row)?;
        // Whatever failed (format, key, tag), only the credential is named.
        row.key
            .key
            .open(&row.secret, &ctx)
            .map_err(|_| StoreError::Corrupt {
                credential: row.id.to_string(),
            })
    }

    /// Rebuilds the typed credential from a row.
    pub(crate) fn credential_of(
        &self,
        row: &Authentic,
        ty: &Arc<CredentialType>,
    ) -> Result<Credential, StoreError> {
        let pt = self.open_row(row)?;
        let fields = decode_secret_fields(pt.expose_secret()).map_err(|_| StoreError::Corrupt {
            credential: row.id.to_string(),
        })?;
        let mut obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&row.public)
            .map_err(|_| {
                StoreError::Storage(StorageError::Corrupt {
                    table: "credentials",
                    reason: "public fields".into(),
                })
            })?;
        for (k, v) in fields {
            obj.insert(k.to_owned(), serde_json::Value::String(v.to_owned()));
        }
        let mut value = serde_json::Value::Object(obj);
        let out = ty.validate(&value);
        wipe_json(&mut value);
        Ok(out?)
    }

    /// A registered credential type.
    ///
    /// # Errors
    /// [`StoreError::UnknownType`].
    pub fn credential_type(&self, name: &str) -> Result<Arc<CredentialType>, StoreError> {
        self.registry
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::UnknownType { name: name.into() })
    }
}
