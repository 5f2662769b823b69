//! Authenticating a vault's rows once when it gains record MACs.

use std::collections::HashMap;

use credvault_audit::{Action, AuditEvent};
use credvault_envelope::KeyId;
use credvault_token::HmacSha256Key;

use super::integrity::{credential_mac, data_key_mac, mac_key};
use super::Store;
use crate::error::StoreError;
use crate::storage::{ListFilter, RecordMacs, StorageError};

/// The tenant field of vault-wide audit events.
pub(crate) const VAULT_WIDE: &str = "*";

impl Store {
    /// Gives every row written before record MACs existed its MAC, once, recorded as one
    /// `records_authenticated` event; a no-op (returning 0) when the storage says every row
    /// has one. [`Vault::open`](crate::Vault::open) calls it; call it after constructing a
    /// [`Store`] over an older database yourself. Until then such rows fail their check
    /// ([`StoreError::Integrity`]).
    ///
    /// What it MACs is whatever the rows hold at that moment: run it on a database you trust
    /// (a second `records_authenticated` event in the log means someone reset the flag, and
    /// `credvault verify` reports it).
    ///
    /// # Errors
    /// [`StoreError::MasterKey`], [`StoreError::Storage`], [`StoreError::Audit`].
    pub fn authenticate_records(&self, actor: &str) -> Result<usize, StoreError> {
        if self.storage.records_authenticated()? {
            return Ok(0);
        }
        let mut macs = RecordMacs::default();
        for t in self.storage.tenants()? {
            let mut keys: HashMap<KeyId, HmacSha256Key> = HashMap::new();
            for k in self.storage.data_keys(&t.id)? {
                let mk = mac_key(&self.unwrap_unchecked(&t.id, &k)?);
                if k.mac.is_empty() {
                    macs.keys
                        .push((t.id.clone(), k.key_id, data_key_mac(&mk, &t, &k)));
                }
                keys.insert(k.key_id, mk);
            }
            for c in self.storage.credentials(&t.id, &ListFilter::default())? {
                if c.mac.is_empty() {
                    let mk = keys.get(&c.key_id).ok_or(StoreError::Storage(
                        StorageError::UnknownKey { key_id: c.key_id },
                    ))?;
                    let mac = credential_mac(mk, &c);
                    macs.credentials
                        .push((t.id.clone(), c.id.clone(), c.version, mac));
                }
            }
        }
        let event = AuditEvent::new(
            VAULT_WIDE,
            actor,
            Action::Other("records_authenticated".into()),
        );
        let n = self
            .storage
            .authenticate_records(&macs, &mut || self.audit.record(&event))?;
        self.cache.clear();
        Ok(n)
    }
}
