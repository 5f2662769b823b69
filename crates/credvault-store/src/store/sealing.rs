//! Data keys and the sealed fields: loading and unwrapping keys, sealing and opening a credential's secret fields.

use std::sync::Arc;

use credvault_envelope::{DataKey, EncryptionContext, KeyId, SealError, WrappedKey};
use credvault_schema::{Credential, CredentialType};

use super::Store;
use crate::error::StoreError;
use crate::fields::{decode_secret_fields, encode_secret_fields};
use crate::ids::{CredentialId, TenantId};
use crate::keys::CachedKey;
use crate::model::wipe_json;
use crate::storage::{CredentialRow, DataKeyRow, KeyState, StorageError};

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
        let dek = self.unwrap_row(tenant, row)?;
        Ok(CachedKey::new(&dek))
    }

    pub(crate) fn unwrap_row(
        &self,
        tenant: &TenantId,
        row: &DataKeyRow,
    ) -> Result<DataKey, StoreError> {
        let wrapped = WrappedKey::parse(&row.wrapped).map_err(|e| {
            StoreError::Storage(StorageError::Corrupt {
                table: "data_keys",
                reason: e.to_string(),
            })
        })?;
        let dek = self.master.unwrap(&wrapped, &data_key_context(tenant)?)?;
        if dek.id() != row.key_id {
            return Err(StoreError::Storage(StorageError::Corrupt {
                table: "data_keys",
                reason: "wrapped key names another key id".into(),
            }));
        }
        Ok(dek)
    }

    pub(crate) fn key(
        &self,
        tenant: &TenantId,
        key_id: KeyId,
    ) -> Result<Arc<CachedKey>, StoreError> {
        self.cache
            .get(tenant, key_id, || self.load_key(tenant, key_id))
    }

    pub(crate) fn active_key(
        &self,
        tenant: &TenantId,
    ) -> Result<(KeyId, Arc<CachedKey>), StoreError> {
        let rows = self.storage.data_keys(tenant)?;
        let row = rows
            .iter()
            .find(|k| k.state == KeyState::Active)
            .ok_or(StoreError::Storage(StorageError::NotFound {
                what: "data key",
            }))?;
        let id = row.key_id;
        let k = self.cache.get(tenant, id, || {
            let dek = self.unwrap_row(tenant, row)?;
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
        key.take_permits(1, &self.cache.cfg, |n| {
            Ok(self.storage.reserve_usage(tenant, &key_id, n)?)
        })?;
        key.key.seal(plaintext, ctx).map_err(|e| match e {
            SealError::UsageLimitReached { .. } => StoreError::KeyExhausted,
            other => StoreError::Invalid {
                what: "secret fields",
                reason: other.to_string(),
            },
        })
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

    /// Opens a row's sealed fields: the plaintext, in a wiping buffer.
    pub(crate) fn open_row(
        &self,
        row: &CredentialRow,
    ) -> Result<credvault_envelope::Plaintext, StoreError> {
        let corrupt = || StoreError::Corrupt {
            credential: row.id.to_string(),
        };
        let ctx = credential_context(&row.tenant, &row.id, &row.environment, &row.type_name)?;
        let mut current: Option<CredentialRow> = None;
        // A key that no longer exists means the row was read just before a rotation resealed
        // it and retired its key (the schema never lets a row name a missing key): read the
        // row's sealed data again. Resealing changes the key, never the content.
        for _ in 0..4 {
            let (key_id, secret) = match &current {
                Some(r) => (r.key_id, &r.secret),
                None => (row.key_id, &row.secret),
            };
            let key = match self.key(&row.tenant, key_id) {
                Ok(k) => k,
                Err(StoreError::Storage(StorageError::UnknownKey { .. })) => {
                    match self.storage.credential(&row.tenant, &row.id)? {
                        Some(fresh) if fresh.key_id != key_id => {
                            current = Some(fresh);
                            continue;
                        }
                        _ => return Err(corrupt()),
                    }
                }
                Err(e) => return Err(e),
            };
            // Whatever failed (format, key, tag), only the credential is named.
            return key.key.open(secret, &ctx).map_err(|_| corrupt());
        }
        Err(corrupt())
    }

    /// Rebuilds the typed credential from a row.
    pub(crate) fn credential_of(
        &self,
        row: &CredentialRow,
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
