//! The in-memory backend: one mutex over plain maps. For tests and for embedding without
//! persistence; it keeps every rule of the [storage joint](crate::storage).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use credvault_envelope::KeyId;

use crate::ids::{CredentialId, TenantId};
use crate::storage::{
    later, AuditHead, CredentialRow, DataKeyRow, Hook, KeyState, ListFilter, OtpFailures,
    OtpThrottle, RecordMacs, Reseal, Storage, StorageError, TenantRow, TestRecord,
};

#[derive(Default)]
struct State {
    tenants: BTreeMap<TenantId, TenantRow>,
    keys: BTreeMap<(TenantId, KeyId), DataKeyRow>,
    creds: BTreeMap<(TenantId, CredentialId), CredentialRow>,
    replay: HashMap<String, (u64, u64)>,
    otp: HashMap<String, OtpFailures>,
    hotp: HashMap<String, u64>,
    head: Option<AuditHead>,
}

impl State {
    fn name_taken(&self, row: &CredentialRow) -> bool {
        row.is_active
            && self.creds.values().any(|c| {
                c.tenant == row.tenant
                    && c.id != row.id
                    && c.is_active
                    && c.name == row.name
                    && c.environment == row.environment
            })
    }

    /// A row may name the tenant's active key, or keep the key its stored version names
    /// (a metadata change during a rotation); never start naming a retiring or missing key.
    fn check_key(&self, row: &CredentialRow) -> Result<(), StorageError> {
        let unknown = Err(StorageError::UnknownKey { key_id: row.key_id });
        match self.keys.get(&(row.tenant.clone(), row.key_id)) {
            None => unknown,
            Some(k) if k.state == KeyState::Active => Ok(()),
            Some(_) => match self.creds.get(&(row.tenant.clone(), row.id.clone())) {
                Some(c) if c.key_id == row.key_id => Ok(()),
                _ => unknown,
            },
        }
    }

    fn check_version(
        &self,
        k: &(TenantId, CredentialId),
        expected: u64,
    ) -> Result<(), StorageError> {
        let found = self
            .creds
            .get(k)
            .ok_or(StorageError::NotFound { what: "credential" })?
            .version;
        if found == expected {
            Ok(())
        } else {
            Err(StorageError::VersionConflict { expected, found })
        }
    }

    /// Stores `row` under `k` after the uniqueness and key checks and the hook.
    fn put(
        &mut self,
        k: (TenantId, CredentialId),
        row: &CredentialRow,
        hook: Hook<'_>,
    ) -> Result<(), StorageError> {
        if self.name_taken(row) {
            return Err(StorageError::NameTaken {
                name: row.name.clone(),
                environment: row.environment.clone(),
            });
        }
        self.check_key(row)?;
        self.run_hook(hook)?;
        self.creds.insert(k, row.clone());
        Ok(())
    }

    fn run_hook(&mut self, hook: Hook<'_>) -> Result<(), StorageError> {
        let head = hook(&mut crate::storage::NoChain).map_err(StorageError::Hook)?;
        self.head = later(self.head, head);
        Ok(())
    }
}

/// The in-memory backend.
#[derive(Default)]
pub struct MemoryStorage {
    state: Mutex<State>,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, StorageError> {
        self.state
            .lock()
            .map_err(|_| StorageError::Backend("memory storage lock poisoned".into()))
    }

    /// Test hook: the stored row itself, to simulate tampering at rest.
    #[doc(hidden)]
    pub fn tamper(&self, tenant: &TenantId, id: &CredentialId, f: impl FnOnce(&mut CredentialRow)) {
        if let Ok(mut s) = self.lock() {
            if let Some(row) = s.creds.get_mut(&(tenant.clone(), id.clone())) {
                f(row);
            }
        }
    }
}

impl std::fmt::Debug for MemoryStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStorage").finish_non_exhaustive()
    }
}

fn matches(row: &CredentialRow, f: &ListFilter) -> bool {
    f.type_name.as_ref().is_none_or(|t| *t == row.type_name)
        && f.environment.as_ref().is_none_or(|e| *e == row.environment)
        && f.tags.iter().all(|t| row.tags.contains(t))
        && f.active.is_none_or(|a| a == row.is_active)
        && f.expiring_before
            .is_none_or(|t| row.expires_at.is_some_and(|e| e < t))
}

impl Storage for MemoryStorage {
    fn create_tenant(
        &self,
        tenant: &TenantRow,
        key: &DataKeyRow,
        hook: Hook<'_>,
    ) -> Result<(), StorageError> {
        let mut s = self.lock()?;
        if s.tenants.contains_key(&tenant.id) {
            return Err(StorageError::TenantExists {
                tenant: tenant.id.to_string(),
            });
        }
        s.run_hook(hook)?;
        s.tenants.insert(tenant.id.clone(), tenant.clone());
        s.keys.insert((key.tenant.clone(), key.key_id), key.clone());
        Ok(())
    }

    fn tenant(&self, id: &TenantId) -> Result<Option<TenantRow>, StorageError> {
        Ok(self.lock()?.tenants.get(id).cloned())
    }

    fn tenants(&self) -> Result<Vec<TenantRow>, StorageError> {
        Ok(self.lock()?.tenants.values().cloned().collect())
    }

    fn data_keys(&self, tenant: &TenantId) -> Result<Vec<DataKeyRow>, StorageError> {
        let s = self.lock()?;
        let mut v: Vec<_> = s
            .keys
            .values()
            .filter(|k| k.tenant == *tenant)
            .cloned()
            .collect();
        v.sort_by_key(|k| (k.state != KeyState::Active, k.created_at));
        Ok(v)
    }

    fn reserve_usage(
        &self,
        tenant: &TenantId,
        key_id: &KeyId,
        count: u64,
    ) -> Result<u64, StorageError> {
        let mut s = self.lock()?;
        let k = s
            .keys
            .get_mut(&(tenant.clone(), *key_id))
            .ok_or(StorageError::NotFound { what: "data key" })?;
        k.usage = k.usage.saturating_add(count);
        Ok(k.usage)
    }

    fn replace_wrapped(
        &self,
        tenant: &TenantId,
        key_id: &KeyId,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool, StorageError> {
        let mut s = self.lock()?;
        match s.keys.get_mut(&(tenant.clone(), *key_id)) {
            Some(k) if k.wrapped == old => {
                k.wrapped = new.to_vec();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn start_key_rotation(&self, new_key: &DataKeyRow, hook: Hook<'_>) -> Result<(), StorageError> {
        let mut s = self.lock()?;
        if !s.tenants.contains_key(&new_key.tenant) {
            return Err(StorageError::NotFound { what: "tenant" });
        }
        s.run_hook(hook)?;
        for ((t, _), k) in s.keys.iter_mut() {
            if *t == new_key.tenant {
                k.state = KeyState::Retiring;
            }
        }
        s.keys
            .insert((new_key.tenant.clone(), new_key.key_id), new_key.clone());
        Ok(())
    }

    fn retire_unreferenced_keys(
        &self,
        tenant: &TenantId,
        hook: Hook<'_>,
    ) -> Result<Vec<KeyId>, StorageError> {
        let mut s = self.lock()?;
        let retiring: Vec<KeyId> = s
            .keys
            .values()
            .filter(|k| k.tenant == *tenant && k.state == KeyState::Retiring)
            .map(|k| k.key_id)
            .filter(|id| {
                !s.creds
                    .values()
                    .any(|c| c.tenant == *tenant && c.key_id == *id)
            })
            .collect();
        if retiring.is_empty() {
            return Ok(retiring);
        }
        s.run_hook(hook)?;
        for id in &retiring {
            s.keys.remove(&(tenant.clone(), *id));
        }
        Ok(retiring)
    }

    fn insert_credential(&self, row: &CredentialRow, hook: Hook<'_>) -> Result<(), StorageError> {
        let mut s = self.lock()?;
        if !s.tenants.contains_key(&row.tenant) {
            return Err(StorageError::NotFound { what: "tenant" });
        }
        let k = (row.tenant.clone(), row.id.clone());
        if s.creds.contains_key(&k) {
            return Err(StorageError::Backend("duplicate credential id".into()));
        }
        s.put(k, row, hook)
    }

    fn credential(
        &self,
        tenant: &TenantId,
        id: &CredentialId,
    ) -> Result<Option<CredentialRow>, StorageError> {
        Ok(self
            .lock()?
            .creds
            .get(&(tenant.clone(), id.clone()))
            .cloned())
    }

    fn credential_by_name(
        &self,
        tenant: &TenantId,
        name: &str,
        environment: &str,
    ) -> Result<Option<CredentialRow>, StorageError> {
        let s = self.lock()?;
        Ok(s.creds
            .values()
            .filter(|c| c.tenant == *tenant && c.name == name && c.environment == environment)
            .max_by_key(|c| (c.is_active, c.updated_at))
            .cloned())
    }

    fn credentials(
        &self,
        tenant: &TenantId,
        filter: &ListFilter,
    ) -> Result<Vec<CredentialRow>, StorageError> {
        let s = self.lock()?;
        let mut v: Vec<_> = s
            .creds
            .values()
            .filter(|c| c.tenant == *tenant && matches(c, filter))
            .cloned()
            .collect();
        v.sort_by(|a, b| (&a.name, &a.environment, &a.id).cmp(&(&b.name, &b.environment, &b.id)));
        Ok(v)
    }

    fn update_credential(
        &self,
        row: &CredentialRow,
        expected_version: u64,
        hook: Hook<'_>,
    ) -> Result<(), StorageError> {
        let mut s = self.lock()?;
        let k = (row.tenant.clone(), row.id.clone());
        s.check_version(&k, expected_version)?;
        s.put(k, row, hook)
    }

    fn delete_credential(
        &self,
        tenant: &TenantId,
        id: &CredentialId,
        expected_version: u64,
        hook: Hook<'_>,
    ) -> Result<(), StorageError> {
        let mut s = self.lock()?;
        let k = (tenant.clone(), id.clone());
        s.check_version(&k, expected_version)?;
        s.run_hook(hook)?;
        if let Some(mut row) = s.creds.remove(&k) {
            zeroize::Zeroize::zeroize(&mut row.secret);
        }
        Ok(())
    }

    fn credentials_not_under(
        &self,
        tenant: &TenantId,
        key: &KeyId,
        after: Option<&CredentialId>,
        limit: usize,
    ) -> Result<Vec<CredentialRow>, StorageError> {
        let s = self.lock()?;
        Ok(s.creds
            .values()
            .filter(|c| c.tenant == *tenant && c.key_id != *key)
            .filter(|c| after.is_none_or(|a| c.id > *a))
            .take(limit)
            .cloned()
            .collect())
    }

    fn count_under(
        &self,
        tenant: &TenantId,
        key: &KeyId,
        under: bool,
    ) -> Result<u64, StorageError> {
        let s = self.lock()?;
        Ok(s.creds
            .values()
            .filter(|c| c.tenant == *tenant && (c.key_id == *key) == under)
            .count() as u64)
    }

    fn reseal(&self, tenant: &TenantId, batch: &[Reseal]) -> Result<usize, StorageError> {
        let mut s = self.lock()?;
        for r in batch {
            if !s.keys.contains_key(&(tenant.clone(), r.new_key)) {
                return Err(StorageError::UnknownKey { key_id: r.new_key });
            }
        }
        let mut n = 0;
        for r in batch {
            if let Some(c) = s.creds.get_mut(&(tenant.clone(), r.id.clone())) {
                if c.version == r.version && c.key_id == r.old_key {
                    c.key_id = r.new_key;
                    c.secret = r.secret.clone();
                    c.mac = r.mac.clone();
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    fn record_use(
        &self,
        tenant: &TenantId,
        uses: &[(CredentialId, i64)],
        head: Option<AuditHead>,
    ) -> Result<(), StorageError> {
        let mut s = self.lock()?;
        for (id, at) in uses {
            if let Some(c) = s.creds.get_mut(&(tenant.clone(), id.clone())) {
                c.last_used_at = Some(c.last_used_at.map_or(*at, |p| p.max(*at)));
            }
        }
        s.head = later(s.head, head);
        Ok(())
    }

    fn record_test(
        &self,
        tenant: &TenantId,
        id: &CredentialId,
        result: &TestRecord,
        hook: Hook<'_>,
    ) -> Result<(), StorageError> {
        let mut s = self.lock()?;
        if !s.creds.contains_key(&(tenant.clone(), id.clone())) {
            return Err(StorageError::NotFound { what: "credential" });
        }
        s.run_hook(hook)?;
        if let Some(c) = s.creds.get_mut(&(tenant.clone(), id.clone())) {
            c.last_tested = Some(result.at);
            c.test_status = Some(result.status.clone());
            c.test_message = Some(result.message.clone());
        }
        Ok(())
    }

    fn check_and_mark_step(
        &self,
        key: &str,
        step: u64,
        retain_until: u64,
        now: u64,
    ) -> Result<bool, StorageError> {
        let mut s = self.lock()?;
        match s.replay.get(key) {
            Some(&(last, until)) if until > now && step <= last => Ok(false),
            _ => {
                s.replay.insert(key.to_owned(), (step, retain_until));
                Ok(true)
            }
        }
    }

    fn otp_locked_until(&self, key: &str, now: u64) -> Result<Option<u64>, StorageError> {
        Ok(self.lock()?.otp.get(key).and_then(|f| f.locked_at(now)))
    }

    fn otp_failed(
        &self,
        key: &str,
        now: u64,
        throttle: &OtpThrottle,
    ) -> Result<Option<u64>, StorageError> {
        let mut s = self.lock()?;
        let entry = s.otp.entry(key.to_owned()).or_default();
        *entry = entry.after_failure(now, throttle);
        Ok(entry.locked_at(now))
    }

    fn otp_succeeded(&self, key: &str) -> Result<(), StorageError> {
        self.lock()?.otp.remove(key);
        Ok(())
    }

    fn hotp_counter(&self, key: &str, initial: u64) -> Result<u64, StorageError> {
        Ok(self.lock()?.hotp.get(key).copied().unwrap_or(initial))
    }

    fn advance_hotp_counter(
        &self,
        key: &str,
        initial: u64,
        from: u64,
        to: u64,
    ) -> Result<bool, StorageError> {
        let mut s = self.lock()?;
        let now = s.hotp.get(key).copied().unwrap_or(initial);
        if !crate::storage::hotp_may_advance(now, from, to) {
            return Ok(false);
        }
        s.hotp.insert(key.to_owned(), to);
        Ok(true)
    }

    fn reset_hotp_counter(&self, key: &str) -> Result<(), StorageError> {
        self.lock()?.hotp.remove(key);
        Ok(())
    }

    fn audit_head(&self) -> Result<Option<AuditHead>, StorageError> {
        Ok(self.lock()?.head)
    }

    fn heads_authenticated(&self) -> Result<bool, StorageError> {
        // A memory store never held a head from before head tags.
        Ok(true)
    }

    fn authenticate_head(&self, hook: Hook<'_>) -> Result<(), StorageError> {
        self.lock()?.run_hook(hook)
    }

    fn records_authenticated(&self) -> Result<bool, StorageError> {
        // A memory store never held rows from before record MACs.
        Ok(true)
    }

    fn authenticate_records(
        &self,
        macs: &RecordMacs,
        hook: Hook<'_>,
    ) -> Result<usize, StorageError> {
        let mut s = self.lock()?;
        s.run_hook(hook)?;
        let mut n = 0;
        for (t, id, version, mac) in &macs.credentials {
            if let Some(c) = s.creds.get_mut(&(t.clone(), id.clone())) {
                if c.mac.is_empty() && c.version == *version {
                    c.mac.clone_from(mac);
                    n += 1;
                }
            }
        }
        for (t, k, mac) in &macs.keys {
            if let Some(row) = s.keys.get_mut(&(t.clone(), *k)) {
                if row.mac.is_empty() {
                    row.mac.clone_from(mac);
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}
