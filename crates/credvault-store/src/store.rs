//! The store: tenants, credentials, keys, audit, rotation.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use credvault_audit::{
    Action, AuditEvent, AuditLog, AuditSink, DenyReason, Details, FieldChange, Outcome, Resource,
};
use credvault_envelope::{
    generate_data_key, needs_rewrap, DataKey, EncryptionContext, EnvelopeHeader, KeyId, MasterKey,
    SealError, WrappedKey,
};
use credvault_schema::{Credential, CredentialType, Format, Registry, SecretValue};
use credvault_totp::{Algorithm, Otp, ReplayGuard, TotpSecret, DEFAULT_SKEW};

use crate::error::{SealRejection, StoreError};
use crate::fields::{decode_secret_fields, encode_secret_fields};
use crate::ids::{CredentialId, TenantId};
use crate::keys::{CacheConfig, CachedKey, KeyCache};
use crate::model::{
    wipe_json, CredentialInfo, CredentialUpdate, Integrity, KeyRotation, MasterRotation,
    NewCredential, Progress, Revealed, SealedCredential, TenantInfo, TestOutcome, TotpCode,
};
use crate::storage::{
    AuditHead, CredentialRow, DataKeyRow, HookError, KeyState, ListFilter, Reseal, Storage,
    StorageError, TenantRow, TestRecord,
};
use crate::tester::TesterRegistry;

/// Milliseconds since the Unix epoch; the store's only view of time (tests move it).
pub trait Clock: Send + Sync {
    /// Now, in Unix milliseconds.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock at `ms`.
    pub fn new(ms: i64) -> Self {
        Self(AtomicI64::new(ms))
    }

    /// Sets the time.
    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    /// Moves the time forward.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Where the store records its audit events.
#[derive(Clone)]
pub enum AuditTarget {
    /// A hash-chained log: each operation's record head is also stored in the database, in
    /// the same transaction as the change it describes.
    Log(AuditLog),
    /// Any sink (memory, tracing, fan-out...). No head is kept.
    Sink(Arc<dyn AuditSink>),
}

impl AuditTarget {
    fn record(&self, event: &AuditEvent) -> Result<Option<AuditHead>, HookError> {
        self.record_batch(std::slice::from_ref(event))
    }

    /// Records the events in order and waits once: the head after the last one (a log), or
    /// `None` (a sink, which has no head).
    fn record_batch(&self, events: &[AuditEvent]) -> Result<Option<AuditHead>, HookError> {
        match self {
            Self::Log(l) => match l.record_batch(events) {
                Ok(r) => Ok(r.map(|r| AuditHead {
                    seq: r.seq,
                    hash: r.hash,
                })),
                Err(credvault_audit::LogError::LockTimeout { .. }) => Err(HookError::Busy),
                Err(e) => Err(HookError::Refused(e.to_string())),
            },
            Self::Sink(s) => {
                for e in events {
                    s.record(e).map_err(|e| HookError::Refused(e.to_string()))?;
                }
                Ok(None)
            }
        }
    }
}

impl std::fmt::Debug for AuditTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Log(l) => f.debug_tuple("Log").field(&l.dir()).finish(),
            Self::Sink(_) => f.write_str("Sink"),
        }
    }
}

impl From<AuditLog> for AuditTarget {
    fn from(l: AuditLog) -> Self {
        Self::Log(l)
    }
}

/// Store settings.
#[derive(Clone)]
#[non_exhaustive]
pub struct StoreConfig {
    /// Data-key cache.
    pub cache: CacheConfig,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Credentials re-encrypted per transaction in a tenant-key rotation. Default 256.
    pub rotation_batch: usize,
    /// Last-use times (and the audit head of reads) are written at most this long after the
    /// read. Default 1 s.
    pub use_flush_interval: Duration,
    /// ... or once this many reads are pending. Default 4096.
    pub use_flush_max: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            cache: CacheConfig::default(),
            clock: Arc::new(SystemClock),
            rotation_batch: 256,
            use_flush_interval: Duration::from_secs(1),
            use_flush_max: 4096,
        }
    }
}

impl StoreConfig {
    /// Sets the cache settings.
    pub fn cache(mut self, cache: CacheConfig) -> Self {
        self.cache = cache;
        self
    }

    /// Sets the clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets the rotation batch size (at least 1).
    pub fn rotation_batch(mut self, n: usize) -> Self {
        self.rotation_batch = n.max(1);
        self
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("cache", &self.cache)
            .field("rotation_batch", &self.rotation_batch)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct PendingUses {
    /// Latest use per credential: repeated reads of one credential write one row.
    uses: HashMap<TenantId, HashMap<CredentialId, i64>>,
    count: usize,
    head: Option<AuditHead>,
    since: Option<Instant>,
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

const MAX_NAME_LEN: usize = 256;
const MAX_TAGS: usize = 32;
const MAX_TAG_LEN: usize = 64;
const MAX_DESCRIPTION_LEN: usize = 4096;
const MAX_ENV_LEN: usize = 64;

fn check_meta(
    name: &str,
    environment: &str,
    description: &str,
    tags: &[String],
) -> Result<(), StoreError> {
    let bad = |what: &'static str, reason: &str| {
        Err(StoreError::Invalid {
            what,
            reason: reason.into(),
        })
    };
    if name.trim().is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return bad(
            "name",
            "must be 1-256 characters without control characters",
        );
    }
    if environment.is_empty()
        || environment.len() > MAX_ENV_LEN
        || !environment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return bad("environment", "must be 1-64 of a-z A-Z 0-9 _ - .");
    }
    if description.len() > MAX_DESCRIPTION_LEN {
        return bad("description", "is longer than 4096 bytes");
    }
    if tags.len() > MAX_TAGS
        || tags
            .iter()
            .any(|t| t.is_empty() || t.len() > MAX_TAG_LEN || t.chars().any(char::is_control))
    {
        return bad("tags", "at most 32 tags of 1-64 characters");
    }
    Ok(())
}

fn resource(row: &CredentialRow) -> Resource {
    Resource::credential(row.id.as_str())
        .with_name(row.name.as_str())
        .with_type(row.type_name.as_str())
        .with_environment(row.environment.as_str())
}

/// The credential store: a cheap handle (`Clone` copies a few reference counts; every clone
/// shares the same storage, key cache and audit target). `Send + Sync + 'static`: put it in an
/// `Arc`, an axum state or a worker pool as it is. Every method takes `&self` and is safe to
/// call from many threads; with [`SqliteStorage`](crate::SqliteStorage) and a file audit log,
/// also from several processes at once.
///
/// **Dropping.** When the last clone is dropped, pending last-use times are written (best
/// effort: an error is ignored; call [`flush`](Self::flush) to see it). Nothing else is
/// pending: every change and every audit record is durable when its call returns.
///
/// **Fork.** A child process after `fork` (without `exec`) must not use a store it inherited:
/// it would share the parent's database connection, audit log handle and key cache, and its
/// threads' nonce generators would hand out the parent's next AES-GCM nonces. In the child,
/// call `credvault_envelope::reseed_nonce_generator()` first and open a new store (a new
/// [`Vault`](crate::Vault)); after `exec` nothing is inherited.
#[derive(Clone)]
pub struct Store {
    storage: Arc<dyn Storage>,
    master: Arc<dyn MasterKey>,
    registry: Arc<Registry>,
    audit: AuditTarget,
    cache: Arc<KeyCache>,
    testers: Arc<TesterRegistry>,
    cfg: StoreConfig,
    pending: Arc<Mutex<PendingUses>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("master", &self.master.provider_id())
            .field("audit", &self.audit)
            .field("cached_keys", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// A store over `storage`, wrapping data keys with `master` and auditing to `audit`, with
    /// the built-in credential types, the built-in testers and default settings.
    pub fn new(
        storage: Arc<dyn Storage>,
        master: Arc<dyn MasterKey>,
        audit: impl Into<AuditTarget>,
    ) -> Self {
        let cfg = StoreConfig::default();
        Self {
            storage,
            master,
            registry: Arc::new(Registry::with_builtins()),
            audit: audit.into(),
            cache: Arc::new(KeyCache::new(cfg.cache.clone())),
            testers: Arc::new(TesterRegistry::with_defaults()),
            cfg,
            pending: Arc::new(Mutex::new(PendingUses::default())),
        }
    }

    /// Uses these credential types.
    pub fn with_registry(mut self, registry: Arc<Registry>) -> Self {
        self.registry = registry;
        self
    }

    /// Uses these testers.
    pub fn with_testers(mut self, testers: TesterRegistry) -> Self {
        self.testers = Arc::new(testers);
        self
    }

    /// Uses these settings.
    pub fn with_config(mut self, cfg: StoreConfig) -> Self {
        self.cache = Arc::new(KeyCache::new(cfg.cache.clone()));
        self.cfg = cfg;
        self
    }

    /// Checks that the master key opens this store's data keys: unwraps the active data key
    /// of the first tenant (nothing to check in a store without tenants).
    ///
    /// # Errors
    /// [`StoreError::MasterKey`] if it does not unwrap (a different master key);
    /// [`StoreError::Storage`].
    pub fn check_master_key(&self) -> Result<(), StoreError> {
        let Some(t) = self.storage.tenants()?.into_iter().next() else {
            return Ok(());
        };
        let rows = self.storage.data_keys(&t.id)?;
        let Some(row) = rows.iter().find(|k| k.state == KeyState::Active) else {
            return Ok(());
        };
        self.unwrap_row(&t.id, row).map(|_| ())
    }

    /// The credential types.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The storage backend.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// A replay guard backed by this store's storage (for verifying TOTP codes elsewhere).
    pub fn replay_guard(&self) -> StorageReplayGuard {
        StorageReplayGuard(Arc::clone(&self.storage))
    }

    /// Data keys currently cached.
    pub fn cached_keys(&self) -> usize {
        self.cache.len()
    }

    /// Drops every cached data key (wiping it).
    pub fn clear_key_cache(&self) {
        self.cache.clear();
    }

    fn now(&self) -> i64 {
        self.cfg.clock.now_ms()
    }

    fn record(&self, event: &AuditEvent) -> Result<Option<AuditHead>, StoreError> {
        self.audit.record(event).map_err(StoreError::from)
    }

    /// Records several events with one wait for durability (group commit): the head of the
    /// last one, or the first failure (then the caller must refuse the whole operation).
    fn record_batch(&self, events: &[AuditEvent]) -> Result<Option<AuditHead>, StoreError> {
        self.audit.record_batch(events).map_err(StoreError::from)
    }

    /// Records an event whose failure must not mask the error being returned.
    fn record_quietly(&self, event: &AuditEvent) {
        let _ = self.audit.record(event);
    }

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
        let key = DataKeyRow {
            tenant: id.clone(),
            key_id: dek.id(),
            wrapped: wrapped.as_bytes().to_vec(),
            state: KeyState::Active,
            usage: 0,
            created_at: now,
        };
        let event = AuditEvent::new(id.as_str(), actor, Action::Other("tenant_created".into()));
        self.storage
            .create_tenant(&tenant, &key, &mut || self.audit.record(&event))?;
        self.tenant_info(&tenant)
    }

    fn tenant_info(&self, t: &TenantRow) -> Result<TenantInfo, StoreError> {
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
            request_id: None,
        })
    }

    /// Writes pending last-use times and the audit head of reads.
    ///
    /// # Errors
    /// [`StoreError::Storage`].
    pub fn flush(&self) -> Result<(), StoreError> {
        let taken = match self.pending.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => return Ok(()),
        };
        // Every pending read has a tenant, so the head goes out with the first one.
        let mut head = taken.head;
        for (tenant, uses) in taken.uses {
            let uses: Vec<(CredentialId, i64)> = uses.into_iter().collect();
            self.storage.record_use(&tenant, &uses, head.take())?;
        }
        Ok(())
    }

    fn note_use(&self, tenant: &TenantId, id: &CredentialId, at: i64, head: Option<AuditHead>) {
        let flush = match self.pending.lock() {
            Ok(mut p) => {
                let per = p.uses.entry(tenant.clone()).or_default();
                match per.get_mut(id) {
                    Some(t) => *t = (*t).max(at),
                    None => {
                        per.insert(id.clone(), at);
                    }
                }
                p.count += 1;
                p.head = crate::storage::later(p.head, head);
                let since = *p.since.get_or_insert_with(Instant::now);
                p.count >= self.cfg.use_flush_max || since.elapsed() >= self.cfg.use_flush_interval
            }
            Err(_) => false,
        };
        if flush {
            let _ = self.flush();
        }
    }

    // ---- keys ----

    fn load_key(&self, tenant: &TenantId, key_id: KeyId) -> Result<CachedKey, StoreError> {
        let rows = self.storage.data_keys(tenant)?;
        let row = rows
            .iter()
            .find(|k| k.key_id == key_id)
            .ok_or(StoreError::Storage(StorageError::UnknownKey { key_id }))?;
        let dek = self.unwrap_row(tenant, row)?;
        Ok(CachedKey::new(&dek))
    }

    fn unwrap_row(&self, tenant: &TenantId, row: &DataKeyRow) -> Result<DataKey, StoreError> {
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

    fn key(&self, tenant: &TenantId, key_id: KeyId) -> Result<Arc<CachedKey>, StoreError> {
        self.cache
            .get(tenant, key_id, || self.load_key(tenant, key_id))
    }

    fn active_key(&self, tenant: &TenantId) -> Result<(KeyId, Arc<CachedKey>), StoreError> {
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

    fn seal(
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

    fn seal_credential(
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
    fn open_row(&self, row: &CredentialRow) -> Result<credvault_envelope::Plaintext, StoreError> {
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
    fn credential_of(
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

/// A replay guard stored in the store's database (durable with a durable backend).
pub struct StorageReplayGuard(Arc<dyn Storage>);

impl StorageReplayGuard {
    /// A guard over `storage`.
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Self(storage)
    }
}

impl std::fmt::Debug for StorageReplayGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StorageReplayGuard")
    }
}

impl ReplayGuard for StorageReplayGuard {
    fn check_and_mark(
        &self,
        credential: &str,
        step: u64,
        retain_until: u64,
        now: u64,
    ) -> Result<bool, credvault_totp::GuardError> {
        self.0
            .check_and_mark_step(credential, step, retain_until, now)
            .map_err(|e| credvault_totp::GuardError(e.to_string()))
    }
}

/// One tenant, one actor: the only way to reach credentials.
pub struct Scope<'s> {
    store: &'s Store,
    tenant: TenantId,
    actor: String,
    source_ip: Option<String>,
    request_id: Option<String>,
}

impl std::fmt::Debug for Scope<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("tenant", &self.tenant)
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

fn changed<T: PartialEq + ToString>(
    changes: &mut Vec<FieldChange>,
    field: &str,
    old: &T,
    new: &Option<T>,
) -> bool {
    match new {
        Some(n) if n != old => {
            changes.push(FieldChange::metadata(
                field,
                Some(old.to_string()),
                Some(n.to_string()),
            ));
            true
        }
        _ => false,
    }
}

fn opt_text(v: Option<i64>) -> String {
    v.map_or_else(|| "none".into(), |t| t.to_string())
}

/// A new credential's metadata.
struct RowMeta<'a> {
    name: &'a str,
    type_name: &'a str,
    environment: &'a str,
    description: &'a str,
    tags: &'a [String],
    is_active: bool,
    expires_at: Option<i64>,
}

impl Scope<'_> {
    /// A new row (version 1, created now by this scope's actor) for a validated credential
    /// and its sealed secrets `(key id, envelope, secret field names)`.
    fn new_row(
        &self,
        id: &CredentialId,
        m: RowMeta<'_>,
        cred: &Credential,
        sealed: (KeyId, Vec<u8>, Vec<String>),
    ) -> CredentialRow {
        let now = self.store.now();
        let (key_id, secret, secret_fields) = sealed;
        CredentialRow {
            id: id.clone(),
            tenant: self.tenant.clone(),
            name: m.name.to_owned(),
            type_name: m.type_name.to_owned(),
            environment: m.environment.to_owned(),
            description: m.description.to_owned(),
            tags: m.tags.to_vec(),
            is_active: m.is_active,
            expires_at: m.expires_at,
            created_by: self.actor.clone(),
            created_at: now,
            updated_at: now,
            version: 1,
            last_used_at: None,
            last_tested: None,
            test_status: None,
            test_message: None,
            public: serde_json::Value::Object(cred.public_json()).to_string(),
            secret_fields,
            key_id,
            secret,
        }
    }

    /// Records the caller's source IP in audit events.
    pub fn with_source_ip(mut self, ip: impl Into<String>) -> Self {
        self.source_ip = Some(ip.into());
        self
    }

    /// Records a request id in audit events.
    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// The tenant.
    pub fn tenant_id(&self) -> &TenantId {
        &self.tenant
    }

    fn event(&self, action: Action) -> AuditEvent {
        let mut e = AuditEvent::new(self.tenant.as_str(), self.actor.as_str(), action);
        if let Some(ip) = &self.source_ip {
            e = e.with_source_ip(ip.as_str());
        }
        if let Some(r) = &self.request_id {
            e = e.with_request_id(r.as_str());
        }
        e
    }

    fn load(&self, id: &CredentialId) -> Result<CredentialRow, StoreError> {
        self.store
            .storage
            .credential(&self.tenant, id)?
            .ok_or_else(|| StoreError::NotFound {
                credential: id.to_string(),
            })
    }

    /// Loads for a secret access, recording and refusing unknown, inactive or expired.
    fn load_for_access(&self, id: &CredentialId) -> Result<CredentialRow, StoreError> {
        let deny = |reason: DenyReason, res: Resource| {
            self.store.record_quietly(
                &self
                    .event(Action::AccessDenied)
                    .with_resource(res)
                    .with_details(Details::AccessDenied { reason }),
            );
            StoreError::AccessDenied { reason }
        };
        let Some(row) = self.store.storage.credential(&self.tenant, id)? else {
            deny(
                DenyReason::UnknownCredential,
                Resource::credential(id.as_str()),
            );
            return Err(StoreError::NotFound {
                credential: id.to_string(),
            });
        };
        if !row.is_active {
            return Err(deny(DenyReason::Inactive, resource(&row)));
        }
        if row.expires_at.is_some_and(|e| e <= self.store.now()) {
            return Err(deny(DenyReason::Expired, resource(&row)));
        }
        Ok(row)
    }

    fn failed(&self, action: Action, row: &CredentialRow, reason: &str) {
        self.store.record_quietly(
            &self
                .event(action)
                .with_resource(resource(row))
                .with_outcome(Outcome::Failure)
                .with_details(Details::AccessFailed {
                    reason: reason.into(),
                }),
        );
    }

    /// Creates a credential: validates it against its type, seals its secret fields with the
    /// tenant's data key, records `created`, stores it.
    ///
    /// # Errors
    /// [`StoreError::UnknownType`], [`StoreError::Validation`], [`StoreError::Invalid`],
    /// [`StoreError::NameTaken`], [`StoreError::Audit`] (nothing stored), others.
    pub fn create(&self, new: NewCredential) -> Result<CredentialInfo, StoreError> {
        check_meta(&new.name, &new.environment, &new.description, &new.tags)?;
        let ty = self.store.credential_type(&new.type_name)?;
        let cred = ty.validate(&new.fields)?;
        let id = CredentialId::generate()?;
        for _ in 0..4 {
            let (key_id, secret, secret_fields) =
                self.store
                    .seal_credential(&self.tenant, &id, &new.environment, &cred)?;
            let row = self.new_row(
                &id,
                RowMeta {
                    name: &new.name,
                    type_name: &new.type_name,
                    environment: &new.environment,
                    description: &new.description,
                    tags: &new.tags,
                    is_active: new.is_active,
                    expires_at: new.expires_at,
                },
                &cred,
                (key_id, secret, secret_fields),
            );
            let event = self.event(Action::Created).with_resource(resource(&row));
            match self
                .store
                .storage
                .insert_credential(&row, &mut || self.store.audit.record(&event))
            {
                Ok(()) => return Ok(CredentialInfo::from_row(&row)),
                // The key was retired by a rotation between sealing and storing: seal again.
                Err(StorageError::UnknownKey { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Storage(StorageError::Backend(
            "data key kept changing during create".into(),
        )))
    }

    /// Stores a credential sealed by a client under this tenant's active data key: checks
    /// that it opens under the right key and context and validates, then stores the
    /// envelope verbatim and counts the client's seal against the key's usage.
    ///
    /// # Errors
    /// [`StoreError::SealedRejected`] if it does not open (another tenant's key, another
    /// context, altered bytes), [`StoreError::Validation`], and as [`create`](Self::create).
    pub fn create_sealed(&self, sealed: SealedCredential) -> Result<CredentialInfo, StoreError> {
        check_meta(
            &sealed.name,
            &sealed.environment,
            &sealed.description,
            &sealed.tags,
        )?;
        let ty = self.store.credential_type(&sealed.type_name)?;
        let reject = |reason| StoreError::SealedRejected { reason };
        let header = EnvelopeHeader::parse(&sealed.envelope)
            .map_err(|_| reject(SealRejection::NotAnEnvelope))?;
        let key_id = header.key_id();
        let keys = self.store.storage.data_keys(&self.tenant)?;
        if !keys
            .iter()
            .any(|k| k.key_id == key_id && k.state == KeyState::Active)
        {
            return Err(reject(SealRejection::WrongKey));
        }
        let ctx = credential_context(
            &self.tenant,
            &sealed.id,
            &sealed.environment,
            &sealed.type_name,
        )?;
        let key = self.store.key(&self.tenant, key_id)?;
        let pt = key
            .key
            .open(&sealed.envelope, &ctx)
            .map_err(|_| reject(SealRejection::DoesNotOpen))?;
        let fields = decode_secret_fields(pt.expose_secret())?;
        let serde_json::Value::Object(mut obj) = sealed.public_fields.clone() else {
            return Err(StoreError::Invalid {
                what: "public fields",
                reason: "must be a JSON object".into(),
            });
        };
        for (k, _) in obj.iter() {
            if ty.is_secret(k) == Some(true) {
                return Err(StoreError::Field {
                    field: k.clone(),
                    reason: "is secret: it belongs in the sealed envelope",
                });
            }
        }
        for (k, v) in &fields {
            if ty.is_secret(k) != Some(true) {
                return Err(StoreError::Field {
                    field: (*k).to_owned(),
                    reason: "is not a secret field of this type",
                });
            }
            obj.insert((*k).to_owned(), serde_json::Value::String((*v).to_owned()));
        }
        let mut value = serde_json::Value::Object(obj);
        let validated = ty.validate(&value);
        wipe_json(&mut value);
        let cred = validated?;
        // Names in the type's order, as `create` stores them.
        let secret_fields: Vec<String> = cred.secrets().map(|(k, _)| k.to_owned()).collect();
        self.store.storage.reserve_usage(&self.tenant, &key_id, 1)?;
        let row = self.new_row(
            &sealed.id,
            RowMeta {
                name: &sealed.name,
                type_name: &sealed.type_name,
                environment: &sealed.environment,
                description: &sealed.description,
                tags: &sealed.tags,
                is_active: true,
                expires_at: sealed.expires_at,
            },
            &cred,
            (key_id, sealed.envelope, secret_fields),
        );
        let event = self.event(Action::Created).with_resource(resource(&row));
        self.store
            .storage
            .insert_credential(&row, &mut || self.store.audit.record(&event))?;
        Ok(CredentialInfo::from_row(&row))
    }

    /// The tenant's active data key, for a client that seals credentials itself (recorded as
    /// `data_key_issued`). Handle it like the secrets it protects.
    ///
    /// # Errors
    /// [`StoreError::MasterKey`], [`StoreError::Audit`].
    pub fn client_data_key(&self) -> Result<DataKey, StoreError> {
        let rows = self.store.storage.data_keys(&self.tenant)?;
        let row = rows
            .iter()
            .find(|k| k.state == KeyState::Active)
            .ok_or(StoreError::Storage(StorageError::NotFound {
                what: "data key",
            }))?;
        let dek = self.store.unwrap_row(&self.tenant, row)?;
        self.store
            .record(&self.event(Action::Other("data_key_issued".into())))?;
        Ok(dek)
    }

    /// A credential's metadata and masked fields.
    ///
    /// # Errors
    /// [`StoreError::NotFound`].
    pub fn get(&self, id: &CredentialId) -> Result<CredentialInfo, StoreError> {
        Ok(CredentialInfo::from_row(&self.load(id)?))
    }

    /// Finds a credential by name in an environment (the active one if any).
    ///
    /// # Errors
    /// [`StoreError::NotFound`].
    pub fn find(&self, name: &str, environment: &str) -> Result<CredentialInfo, StoreError> {
        self.store
            .storage
            .credential_by_name(&self.tenant, name, environment)?
            .map(|r| CredentialInfo::from_row(&r))
            .ok_or_else(|| StoreError::NotFound {
                credential: name.to_owned(),
            })
    }

    /// Lists credentials.
    ///
    /// # Errors
    /// [`StoreError::Storage`].
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<CredentialInfo>, StoreError> {
        Ok(self
            .store
            .storage
            .credentials(&self.tenant, filter)?
            .iter()
            .map(CredentialInfo::from_row)
            .collect())
    }

    /// Decrypts and returns the fields asked for (none named: every secret field that is set).
    /// Refuses inactive and expired credentials (recorded as `access_denied`); records
    /// `accessed` with the service and the field names before returning anything.
    ///
    /// # Errors
    /// [`StoreError::AccessDenied`], [`StoreError::NotFound`], [`StoreError::Field`] (a field
    /// the type does not have, or not set), [`StoreError::Corrupt`], [`StoreError::Audit`].
    pub fn reveal(
        &self,
        id: &CredentialId,
        fields: &[&str],
        service: Option<&str>,
    ) -> Result<Revealed, StoreError> {
        let row = self.load_for_access(id)?;
        let (revealed, event) = self.reveal_row(&row, fields, service)?;
        let head = self.store.record(&event)?;
        self.store
            .note_use(&self.tenant, &row.id, self.store.now(), head);
        Ok(revealed)
    }

    /// Reveals several credentials' fields at once (a process started with many secrets):
    /// every access is checked first, and one `accessed` event per credential is recorded in
    /// one audit batch (one sync) before anything is returned. All or nothing: if any
    /// credential is refused or any event is not recorded, no value is returned.
    ///
    /// # Errors
    /// As [`reveal`](Self::reveal), for the first request that fails.
    pub fn reveal_many(
        &self,
        requests: &[(CredentialId, Vec<String>)],
        service: Option<&str>,
    ) -> Result<Vec<Revealed>, StoreError> {
        let mut rows = Vec::with_capacity(requests.len());
        for (id, _) in requests {
            rows.push(self.load_for_access(id)?);
        }
        let mut out = Vec::with_capacity(requests.len());
        let mut events = Vec::with_capacity(requests.len());
        for (row, (_, fields)) in rows.iter().zip(requests) {
            let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
            let (revealed, event) = self.reveal_row(row, &fields, service)?;
            out.push(revealed);
            events.push(event);
        }
        let head = self.store.record_batch(&events)?;
        let now = self.store.now();
        for row in &rows {
            self.store.note_use(&self.tenant, &row.id, now, head);
        }
        Ok(out)
    }

    /// Decrypts the fields asked for from an access-checked row, and builds (does not record)
    /// the `accessed` event.
    fn reveal_row(
        &self,
        row: &CredentialRow,
        fields: &[&str],
        service: Option<&str>,
    ) -> Result<(Revealed, AuditEvent), StoreError> {
        // None named: every secret field that is set.
        let every: Vec<&str>;
        let fields = if fields.is_empty() {
            every = row.secret_fields.iter().map(String::as_str).collect();
            &every[..]
        } else {
            fields
        };
        let public: Option<serde_json::Map<String, serde_json::Value>> = if fields
            .iter()
            .all(|f| row.secret_fields.iter().any(|s| s == f))
        {
            None
        } else {
            serde_json::from_str(&row.public).ok()
        };
        for f in fields {
            let is_secret = row.secret_fields.iter().any(|s| s == f);
            if !is_secret && !public.as_ref().is_some_and(|p| p.contains_key(*f)) {
                let reason = match self.store.registry.get(&row.type_name) {
                    Some(t) if t.is_secret(f).is_some() => "is not set",
                    _ => "is not a field of this credential's type",
                };
                return Err(StoreError::Field {
                    field: (*f).to_owned(),
                    reason,
                });
            }
        }
        let pt = match self.store.open_row(row) {
            Ok(p) => p,
            Err(e) => {
                self.failed(Action::AccessFailed, row, "sealed data does not open");
                return Err(e);
            }
        };
        let secrets =
            decode_secret_fields(pt.expose_secret()).map_err(|_| StoreError::Corrupt {
                credential: row.id.to_string(),
            })?;
        let mut out = Vec::with_capacity(fields.len());
        for f in fields {
            let v = match secrets.iter().find(|(k, _)| k == f) {
                Some((_, v)) => SecretValue::new((*v).to_owned()),
                None => match public.as_ref().and_then(|p| p.get(*f)) {
                    Some(serde_json::Value::String(s)) => SecretValue::new(s.clone()),
                    Some(other) => SecretValue::new(other.to_string()),
                    None => {
                        return Err(StoreError::Corrupt {
                            credential: row.id.to_string(),
                        })
                    }
                },
            };
            out.push(((*f).to_owned(), v));
        }
        let event = self
            .event(Action::Accessed)
            .with_resource(resource(row))
            .with_details(Details::Accessed {
                service: service.map(str::to_owned),
                fields: fields.iter().map(|f| (*f).to_owned()).collect(),
            });
        Ok((Revealed { fields: out }, event))
    }

    /// Applies a partial update: re-validates, re-seals with the active key if a field
    /// changed, records `updated` with what changed (secret fields by name only).
    ///
    /// # Errors
    /// [`StoreError::VersionConflict`] (only with [`CredentialUpdate::expect_version`]),
    /// [`StoreError::Validation`], [`StoreError::NameTaken`], [`StoreError::Corrupt`],
    /// [`StoreError::Audit`], [`StoreError::NotFound`].
    pub fn update(
        &self,
        id: &CredentialId,
        upd: CredentialUpdate,
    ) -> Result<CredentialInfo, StoreError> {
        if let Some(n) = &upd.name {
            check_meta(n, "x", "", &[])?;
        }
        if let Some(d) = &upd.description {
            check_meta("x", "x", d, &[])?;
        }
        if let Some(t) = &upd.tags {
            check_meta("x", "x", "", t)?;
        }
        for _ in 0..16 {
            let row = self.load(id)?;
            if let Some(v) = upd.expected_version {
                if v != row.version {
                    return Err(StoreError::VersionConflict {
                        expected: v,
                        found: row.version,
                    });
                }
            }
            let mut new = row.clone();
            let mut changes = Vec::new();
            if let Some(patch) = &upd.fields {
                let ty = self.store.credential_type(&row.type_name)?;
                let existing = match self.store.credential_of(&row, &ty) {
                    Ok(c) => c,
                    Err(e @ StoreError::Corrupt { .. }) => {
                        self.failed(Action::Updated, &row, "sealed data does not open");
                        return Err(e);
                    }
                    Err(e) => return Err(e),
                };
                let patched = ty.validate_patch(&existing, patch)?;
                if !patched.changes.is_empty() {
                    for c in &patched.changes {
                        changes.push(if c.secret {
                            FieldChange::secret(c.key.as_str())
                        } else {
                            FieldChange::metadata(
                                c.key.as_str(),
                                c.old.as_ref().map(|v| v.to_string()),
                                c.new.as_ref().map(|v| v.to_string()),
                            )
                        });
                    }
                    let (key_id, secret, names) = self.store.seal_credential(
                        &self.tenant,
                        &row.id,
                        &row.environment,
                        &patched.credential,
                    )?;
                    new.public =
                        serde_json::Value::Object(patched.credential.public_json()).to_string();
                    new.secret_fields = names;
                    new.key_id = key_id;
                    new.secret = secret;
                }
            }
            if changed(&mut changes, "name", &row.name, &upd.name) {
                new.name.clone_from(upd.name.as_ref().unwrap_or(&row.name));
            }
            if changed(
                &mut changes,
                "description",
                &row.description,
                &upd.description,
            ) {
                new.description
                    .clone_from(upd.description.as_ref().unwrap_or(&row.description));
            }
            if let Some(tags) = &upd.tags {
                if *tags != row.tags {
                    changes.push(FieldChange::metadata(
                        "tags",
                        Some(row.tags.join(",")),
                        Some(tags.join(",")),
                    ));
                    new.tags.clone_from(tags);
                }
            }
            if changed(&mut changes, "is_active", &row.is_active, &upd.is_active) {
                new.is_active = upd.is_active.unwrap_or(row.is_active);
            }
            if let Some(e) = upd.expires_at {
                if e != row.expires_at {
                    changes.push(FieldChange::metadata(
                        "expires_at",
                        Some(opt_text(row.expires_at)),
                        Some(opt_text(e)),
                    ));
                    new.expires_at = e;
                }
            }
            if changes.is_empty() {
                return Ok(CredentialInfo::from_row(&row));
            }
            new.version = row.version + 1;
            new.updated_at = self.store.now();
            let event = self
                .event(Action::Updated)
                .with_resource(resource(&new))
                .with_details(Details::Updated { changes });
            match self
                .store
                .storage
                .update_credential(&new, row.version, &mut || self.store.audit.record(&event))
            {
                Ok(()) => return Ok(CredentialInfo::from_row(&new)),
                Err(StorageError::VersionConflict { .. }) if upd.expected_version.is_none() => {
                    continue
                }
                Err(StorageError::UnknownKey { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Storage(StorageError::Backend(
            "the credential kept changing during the update".into(),
        )))
    }

    /// Deletes a credential: records `deleted` first, then overwrites its sealed data and
    /// deletes the row, in one transaction.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::VersionConflict`] (only with
    /// `expected_version`), [`StoreError::Audit`].
    pub fn delete(
        &self,
        id: &CredentialId,
        expected_version: Option<u64>,
    ) -> Result<(), StoreError> {
        for _ in 0..16 {
            let row = self.load(id)?;
            let v = expected_version.unwrap_or(row.version);
            let event = self.event(Action::Deleted).with_resource(resource(&row));
            match self
                .store
                .storage
                .delete_credential(&self.tenant, id, v, &mut || self.store.audit.record(&event))
            {
                Ok(()) => return Ok(()),
                Err(StorageError::VersionConflict { .. }) if expected_version.is_none() => continue,
                Err(StorageError::NotFound { .. }) => {
                    return Err(StoreError::NotFound {
                        credential: id.to_string(),
                    })
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Storage(StorageError::Backend(
            "the credential kept changing during the delete".into(),
        )))
    }

    fn totp_field(row: &CredentialRow, ty: &CredentialType) -> Option<String> {
        let base32 = ty
            .definition()
            .fields
            .iter()
            .find(|f| {
                f.secret && f.format == Some(Format::Base32) && row.secret_fields.contains(&f.key)
            })
            .map(|f| f.key.clone());
        base32.or_else(|| {
            row.secret_fields
                .iter()
                .find(|k| k.as_str() == "totp_secret" || k.contains("totp"))
                .cloned()
        })
    }

    fn otp(&self, row: &CredentialRow) -> Result<(Otp, String), StoreError> {
        let ty = self.store.credential_type(&row.type_name)?;
        let field = Self::totp_field(row, &ty).ok_or_else(|| StoreError::Totp {
            reason: "the credential has no authenticator key set".into(),
        })?;
        let pt = match self.store.open_row(row) {
            Ok(p) => p,
            Err(e) => {
                self.failed(Action::AccessFailed, row, "sealed data does not open");
                return Err(e);
            }
        };
        let fields = decode_secret_fields(pt.expose_secret()).map_err(|_| StoreError::Corrupt {
            credential: row.id.to_string(),
        })?;
        let value = fields
            .iter()
            .find(|(k, _)| *k == field)
            .map(|(_, v)| *v)
            .ok_or_else(|| StoreError::Totp {
                reason: "the authenticator key is not set".into(),
            })?;
        let bad = |e: credvault_totp::OtpError| StoreError::Totp {
            reason: format!("field {field:?}: {e}"),
        };
        let otp = if value.starts_with("otpauth://") {
            Otp::from_uri(value).map_err(bad)?
        } else {
            Otp::totp(
                TotpSecret::parse(value).map_err(bad)?,
                Algorithm::Sha1,
                6,
                30,
            )
            .map_err(bad)?
        };
        Ok((otp, field))
    }

    /// Generates the current TOTP code from the credential's authenticator key, recorded as
    /// `totp_generated`; the key itself is never returned.
    ///
    /// # Errors
    /// As [`reveal`](Self::reveal), and [`StoreError::Totp`].
    pub fn totp_code(
        &self,
        id: &CredentialId,
        service: Option<&str>,
    ) -> Result<TotpCode, StoreError> {
        let row = self.load_for_access(id)?;
        let (otp, field) = self.otp(&row)?;
        let now = u64::try_from(self.store.now() / 1000).unwrap_or(0);
        let code = otp.code_at(now);
        let event = self
            .event(Action::TotpGenerated)
            .with_resource(resource(&row))
            .with_details(Details::Accessed {
                service: service.map(str::to_owned),
                fields: vec![field],
            });
        let head = self.store.record(&event)?;
        self.store
            .note_use(&self.tenant, &row.id, self.store.now(), head);
        Ok(TotpCode {
            code: zeroize::Zeroizing::new(code.to_string()),
            step: code.step,
            expires_at: i64::try_from(code.valid_until)
                .unwrap_or(i64::MAX / 1000)
                .saturating_mul(1000),
        })
    }

    /// Verifies a TOTP code against the credential's authenticator key, at most once per
    /// code (the replay guard lives in the database). Returns the matched step.
    ///
    /// # Errors
    /// [`StoreError::Totp`] for a wrong or replayed code, and as [`totp_code`](Self::totp_code).
    pub fn verify_totp(&self, id: &CredentialId, submitted: &str) -> Result<u64, StoreError> {
        let row = self.load_for_access(id)?;
        let (otp, _) = self.otp(&row)?;
        let now = u64::try_from(self.store.now() / 1000).unwrap_or(0);
        let guard = self.store.replay_guard();
        let key = format!("{}/{}", self.tenant, row.id);
        let res = otp.verify_once(&guard, &key, submitted, now, DEFAULT_SKEW);
        let outcome = if res.is_ok() {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        self.store.record(
            &self
                .event(Action::Other("totp_verified".into()))
                .with_resource(resource(&row))
                .with_outcome(outcome),
        )?;
        res.map_err(|e| StoreError::Totp {
            reason: e.to_string(),
        })
    }

    /// Tests a credential against its service with the tester registered for its type's test
    /// kind; stores the result on the record and records `tested`.
    ///
    /// # Errors
    /// [`StoreError::Unsupported`] if the type has no test or no tester is registered for
    /// it; as [`reveal`](Self::reveal).
    pub fn test(&self, id: &CredentialId) -> Result<TestOutcome, StoreError> {
        let row = self.load_for_access(id)?;
        let ty = self.store.credential_type(&row.type_name)?;
        let kind = ty
            .definition()
            .test
            .as_ref()
            .map(|t| t.kind)
            .ok_or_else(|| {
                StoreError::Unsupported(format!("type {} has no test", row.type_name))
            })?;
        let tester = self.store.testers.get(kind).ok_or_else(|| {
            StoreError::Unsupported(format!("no tester for test kind {}", kind.as_str()))
        })?;
        let cred = self.store.credential_of(&row, &ty)?;
        let outcome = tester.test(&ty, &cred);
        drop(cred);
        let result = TestRecord {
            at: self.store.now(),
            status: outcome.status_str().into(),
            message: outcome.message.clone(),
        };
        let event = self
            .event(Action::Tested)
            .with_resource(resource(&row))
            .with_details(Details::Tested {
                status: outcome.status,
                message: outcome.message.clone(),
            });
        self.store
            .storage
            .record_test(&self.tenant, &row.id, &result, &mut || {
                self.store.audit.record(&event)
            })?;
        Ok(outcome)
    }

    /// Opens every credential of the tenant without returning anything: an integrity check
    /// after an incident, a restore or a crash. Records one `integrity_checked` event with the
    /// counts (and an `access_failed` per corrupt credential). Returns the corrupt ids.
    ///
    /// # Errors
    /// [`StoreError::Storage`], [`StoreError::Audit`].
    pub fn check_integrity(
        &self,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Integrity, StoreError> {
        let store = self.store;
        let rows = store
            .storage
            .credentials(&self.tenant, &ListFilter::default())?;
        let total = rows.len() as u64;
        let mut corrupt = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            let ok = store
                .open_row(row)
                .ok()
                .is_some_and(|pt| decode_secret_fields(pt.expose_secret()).is_ok());
            if !ok {
                self.failed(Action::AccessFailed, row, "sealed data does not open");
                corrupt.push(row.id.to_string());
            }
            if i % 256 == 255 {
                progress(Progress {
                    done: i as u64 + 1,
                    total,
                });
            }
        }
        progress(Progress { done: total, total });
        store.record(
            &self
                .event(Action::Other("integrity_checked".into()))
                .with_outcome(if corrupt.is_empty() {
                    Outcome::Success
                } else {
                    Outcome::Failure
                }),
        )?;
        Ok(Integrity {
            checked: total,
            corrupt,
        })
    }

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
        let keys = store.storage.data_keys(&self.tenant)?;
        let pending = keys.iter().any(|k| k.state == KeyState::Retiring);
        let started = !pending;
        if started {
            let (dek, wrapped) =
                generate_data_key(&*store.master, &data_key_context(&self.tenant)?)?;
            let row = DataKeyRow {
                tenant: self.tenant.clone(),
                key_id: dek.id(),
                wrapped: wrapped.as_bytes().to_vec(),
                state: KeyState::Active,
                usage: 0,
                created_at: store.now(),
            };
            let event = self
                .event(Action::KeyRotated)
                .with_details(Details::KeyRotated {
                    key: "tenant".into(),
                    from_version: None,
                    to_version: None,
                });
            store
                .storage
                .start_key_rotation(&row, &mut || store.audit.record(&event))?;
            store.cache.invalidate(&self.tenant);
        }
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
            .retire_unreferenced_keys(&self.tenant, &mut || store.audit.record(&event))?;
        report.retired = retired.iter().map(ToString::to_string).collect();
        report.remaining = store.storage.count_under(&self.tenant, &new_id, false)?;
        store.cache.invalidate(&self.tenant);
        Ok(report)
    }

    /// One sweep over the credentials not under `new_id`, resealing them in batches.
    fn reseal_pass(
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
                let ctx =
                    credential_context(&self.tenant, &row.id, &row.environment, &row.type_name)?;
                let old = match store.key(&self.tenant, row.key_id) {
                    Ok(k) => k,
                    Err(_) => {
                        report.failed.push(row.id.to_string());
                        continue;
                    }
                };
                match new_key.key.reseal_from(old.key.opener(), &row.secret, &ctx) {
                    Ok(secret) => batch.push(Reseal {
                        id: row.id.clone(),
                        version: row.version,
                        old_key: row.key_id,
                        new_key: *new_id,
                        secret,
                    }),
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

impl Drop for Store {
    fn drop(&mut self) {
        // Only the last handle writes what is pending: a clone per request must not turn
        // batched last-use writes into one write per request.
        if Arc::strong_count(&self.pending) == 1 {
            let _ = self.flush();
        }
    }
}
