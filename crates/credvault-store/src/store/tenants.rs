//! Tenants: creating, listing, and opening a tenant scope.

use credvault_audit::{Action, AuditEvent, DenyReason, Details};
use credvault_envelope::{generate_data_key, WrappedKey};

use super::integrity::{data_key_mac, mac_key};
use super::sealing::data_key_context;
use super::{Scope, Store, MAX_NAME_LEN};
use crate::error::StoreError;
use crate::ids::TenantId;
use crate::model::TenantInfo;
use crate::storage::{DataKeyRow, KeyState, TenantRow};

impl Store {
    /// Creates a tenant and its data key.
    ///
    /// # Errors
    /// [`StoreError::TenantExists`], [`StoreError::MasterKey`], [`StoreError::Audit`].
    pub fn create_tenant(
        &self,
        id: &TenantId,
        name: &str,
        actor: &str,
    ) -> Result<TenantInfo, StoreError> {
        if name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
            return Err(StoreError::Invalid {
                what: "tenant name",
                reason: "must be at most 256 characters without control characters".into(),
            });
        }
        let (dek, wrapped) = generate_data_key(&*self.master, &data_key_context(id)?)?;
        let now = self.now();
        let tenant = TenantRow {
            id: id.clone(),
            name: name.to_owned(),
            created_at: now,
        };
        let mut key = DataKeyRow {
            tenant: id.clone(),
            key_id: dek.id(),
            wrapped: wrapped.as_bytes().to_vec(),
            state: KeyState::Active,
            usage: 0,
            created_at: now,
            mac: Vec::new(),
        };
        key.mac = data_key_mac(&mac_key(&dek), &tenant, &key);
        // The data key's wrap is on record: which key, under which master key.
        let event = AuditEvent::new(id.as_str(), actor, Action::Other("tenant_created".into()))
            .with_details(Details::KeyUsed {
                key: dek.id().to_string(),
                master: wrapped.master_key().to_string(),
                operation: "wrap".into(),
            });
        self.storage
            .create_tenant(&tenant, &key, &mut |c| self.audit.record_in(c, &event))?;
        self.tenant_info(&tenant)
    }

    pub(crate) fn tenant_info(&self, t: &TenantRow) -> Result<TenantInfo, StoreError> {
        let keys = self.storage.data_keys(&t.id)?;
        let active = keys.iter().find(|k| k.state == KeyState::Active);
        let master_key_version = active
            .and_then(|k| WrappedKey::parse(&k.wrapped).ok())
            .map(|w| w.master_key().version);
        Ok(TenantInfo {
            id: t.id.clone(),
            name: t.name.clone(),
            created_at: t.created_at,
            active_key: active.map(|k| k.key_id.to_string()),
            active_key_usage: active.map_or(0, |k| k.usage),
            rotation_pending: keys.iter().any(|k| k.state == KeyState::Retiring),
            master_key_version,
        })
    }

    /// Every tenant.
    ///
    /// # Errors
    /// [`StoreError::Storage`].
    pub fn tenants(&self) -> Result<Vec<TenantInfo>, StoreError> {
        self.storage
            .tenants()?
            .iter()
            .map(|t| self.tenant_info(t))
            .collect()
    }

    /// A scope for one tenant and one actor: every credential operation goes through it.
    /// Fails closed on an unknown tenant (recorded as `access_denied`).
    ///
    /// # Errors
    /// [`StoreError::UnknownTenant`].
    pub fn tenant(&self, id: &TenantId, actor: impl Into<String>) -> Result<Scope<'_>, StoreError> {
        let actor = actor.into();
        if self.storage.tenant(id)?.is_none() {
            self.record_quietly(
                &AuditEvent::new(id.as_str(), actor.as_str(), Action::AccessDenied).with_details(
                    Details::AccessDenied {
                        reason: DenyReason::UnknownTenant,
                    },
                ),
            );
            return Err(StoreError::UnknownTenant {
                tenant: id.to_string(),
            });
        }
        Ok(Scope {
            store: self,
            tenant: id.clone(),
            actor,
            source_ip: None,
            client_host: None,
            request_id: None,
        })
    }
}
