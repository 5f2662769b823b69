//! The store: its handle, settings, audit target and the tenant scope every credential operation goes through. The operations live in the submodules, one concern each.

mod attachments;
mod credentials;
mod injection;
mod integrity;
mod otp;
mod rotation;
mod sealing;
mod tenants;
mod testing;
pub(crate) mod verify;

pub use attachments::MAX_ATTACHMENT_NAME;
pub use injection::RequestAuth;
pub(crate) use integrity::mac_key;
pub use otp::{StorageReplayGuard, HOTP_COUNTER_FIELD, HOTP_LOOK_AHEAD};
use sealing::Authentic;
pub use sealing::{credential_context, AUTO_ROTATION_ACTOR, VAULT_ACTOR};
pub use verify::{Finding, Problem, StoreVerification};

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use credvault_audit::{
    Action, AuditEvent, AuditLog, AuditSink, DenyReason, Details, Outcome, Resource,
};
use credvault_envelope::{MasterKey, WrappedKey};
use credvault_schema::Registry;
use sealing::data_key_context;

use crate::error::StoreError;
use crate::ids::{CredentialId, TenantId};
use crate::keys::{CacheConfig, KeyCache};
use crate::storage::{
    AuditChain, AuditHead, CredentialRow, HookError, OtpThrottle, Storage, StorageError,
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
    /// The storage backend's own chain ([`Storage::keeps_audit_chain`]): each event is
    /// written in the transaction of the change it describes (events that describe no change
    /// in one of their own), so nothing is recorded that did not commit. Several processes on
    /// one database share one chain.
    Storage,
}

impl AuditTarget {
    /// Records `event` from inside a storage transaction (a commit hook), on `chain` when the
    /// storage keeps the chain.
    fn record_in(
        &self,
        chain: &mut dyn AuditChain,
        event: &AuditEvent,
    ) -> Result<Option<AuditHead>, HookError> {
        match self {
            Self::Storage => chain.append(std::slice::from_ref(event)).map(Some),
            _ => self.record_batch(std::slice::from_ref(event)),
        }
    }

    /// Records the events in order and waits once: the head after the last one (a log), or
    /// `None` (a sink, which has no head).
    fn record_batch(&self, events: &[AuditEvent]) -> Result<Option<AuditHead>, HookError> {
        Ok(self.record_batch_untagged(events)?.map(|h| self.tagged(h)))
    }

    /// [`record_batch`](Self::record_batch) without the head's tag: for a head that is only
    /// kept for [`Store::flush`], which tags the one it stores ([`tagged`](Self::tagged)).
    fn record_batch_untagged(&self, events: &[AuditEvent]) -> Result<Option<AuditHead>, HookError> {
        match self {
            Self::Log(l) => match l.record_batch(events) {
                Ok(r) => Ok(r.map(|r| AuditHead {
                    seq: r.seq,
                    hash: r.hash,
                    tag: None,
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
            // Recorded through the storage by the store (`Store::record_batch`).
            Self::Storage => Err(HookError::Refused(
                "the storage's audit chain is written through the storage".into(),
            )),
        }
    }

    /// `head` with its tag, computed if missing (a log's heads are tagged under its key).
    fn tagged(&self, head: AuditHead) -> AuditHead {
        match self {
            Self::Log(l) if head.tag.is_none() => AuditHead {
                tag: Some(l.head_tag(head.seq, &head.hash)),
                ..head
            },
            _ => head,
        }
    }
}

impl std::fmt::Debug for AuditTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Log(l) => f.debug_tuple("Log").field(&l.dir()).finish(),
            Self::Sink(_) => f.write_str("Sink"),
            Self::Storage => f.write_str("Storage"),
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
    /// Throttling of TOTP verification per credential. Default: 5 wrong codes in 5 minutes
    /// lock verification out for 15 minutes.
    pub otp_throttle: OtpThrottle,
    /// Tenants whose secrets must arrive sealed by the client
    /// ([`Scope::create_sealed`]): a plaintext create, or an update carrying secret values,
    /// is refused and recorded as `access_denied` (`forbidden`). Part of the configuration,
    /// not of the database, so that someone who can edit the database cannot lift it.
    pub client_sealed_only: BTreeSet<TenantId>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            cache: CacheConfig::default(),
            clock: Arc::new(SystemClock),
            rotation_batch: 256,
            use_flush_interval: Duration::from_secs(1),
            use_flush_max: 4096,
            otp_throttle: OtpThrottle::default(),
            client_sealed_only: BTreeSet::new(),
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

    /// Requires `tenant`'s secrets to arrive sealed by the client (see
    /// [`StoreConfig::client_sealed_only`]).
    pub fn require_client_sealed(mut self, tenant: TenantId) -> Self {
        self.client_sealed_only.insert(tenant);
        self
    }

    /// Sets the TOTP verification throttle.
    pub fn otp_throttle(mut self, t: OtpThrottle) -> Self {
        self.otp_throttle = t;
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
        .with_version(row.version)
        .with_key(row.key_id.to_string())
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
    /// Rows opened for accesses, checked and with their contexts, by credential (see
    /// [`Store::row_context`]).
    checked: Arc<Mutex<HashMap<CredentialId, sealing::Checked>>>,
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
            checked: Arc::new(Mutex::new(HashMap::new())),
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

    /// Checks that the master key opens *every* data key of every tenant (not only one, as
    /// opening a vault does): after moving to another provider, before the old one is let go.
    ///
    /// # Errors
    /// [`StoreError::MasterKey`] for the first key it does not open; [`StoreError::Storage`].
    pub fn check_master_key_all(&self) -> Result<(), StoreError> {
        for t in self.storage.tenants()? {
            for row in self.storage.data_keys(&t.id)? {
                let wrapped =
                    WrappedKey::parse(&row.wrapped).map_err(|e| StoreError::MasterKey(e.into()))?;
                self.master.unwrap(&wrapped, &data_key_context(&t.id)?)?;
            }
        }
        Ok(())
    }

    /// The master-key provider this store wraps and unwraps data keys with.
    pub fn master_key(&self) -> &Arc<dyn MasterKey> {
        &self.master
    }

    /// Checks that the master key opens this store's data keys: tenants' data keys are tried
    /// in order until one unwraps (nothing to check in a store without tenants). One
    /// tampered key row does not stop the vault from opening: it fails on use, as an integrity
    /// error, and `credvault verify` names it.
    ///
    /// # Errors
    /// [`StoreError::MasterKey`] if none unwraps (a different master key);
    /// [`StoreError::Storage`].
    pub fn check_master_key(&self) -> Result<(), StoreError> {
        let mut first_error = None;
        for t in self.storage.tenants()? {
            for row in self.storage.data_keys(&t.id)? {
                let Ok(wrapped) = WrappedKey::parse(&row.wrapped) else {
                    continue;
                };
                match self.master.unwrap(&wrapped, &data_key_context(&t.id)?) {
                    Ok(_) => return Ok(()),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        first_error.map_or(Ok(()), |e| Err(e.into()))
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
        StorageReplayGuard::new(Arc::clone(&self.storage))
    }

    /// Data keys currently cached.
    pub fn cached_keys(&self) -> usize {
        self.cache.len()
    }

    /// Drops every cached data key (wiping it).
    pub fn clear_key_cache(&self) {
        self.cache.clear();
    }

    /// The time by the store's clock (Unix milliseconds): what it writes as creation, update
    /// and use times, for callers that keep times of their own beside them.
    pub fn now(&self) -> i64 {
        self.cfg.clock.now_ms()
    }

    fn record(&self, event: &AuditEvent) -> Result<Option<AuditHead>, StoreError> {
        self.record_batch(std::slice::from_ref(event))
    }

    /// Records several events with one wait for durability (group commit): the head of the
    /// last one, or the first failure (then the caller must refuse the whole operation).
    fn record_batch(&self, events: &[AuditEvent]) -> Result<Option<AuditHead>, StoreError> {
        match &self.audit {
            AuditTarget::Storage => self.storage.append_audit(events).map_err(StoreError::from),
            other => other.record_batch(events).map_err(StoreError::from),
        }
    }

    /// Records an access decided on `row`: with the backend's audit chain, only if the row is
    /// still as read ([`Storage::append_audit_guarded`]); `Ok(None)` outer when it changed
    /// (nothing recorded).
    fn record_access(
        &self,
        event: &AuditEvent,
        row: &CredentialRow,
    ) -> Result<Option<Option<AuditHead>>, StoreError> {
        match &self.audit {
            AuditTarget::Storage => {
                let guard = crate::storage::RowGuard {
                    tenant: row.tenant.clone(),
                    id: row.id.clone(),
                    mac: row.mac.clone(),
                };
                match self
                    .storage
                    .append_audit_guarded(std::slice::from_ref(event), &[guard])
                {
                    Ok(head) => Ok(Some(head)),
                    Err(StorageError::Stale { .. }) => Ok(None),
                    Err(e) => Err(e.into()),
                }
            }
            // The head only goes to `note_use`: `flush` tags the one it stores.
            other => other
                .record_batch_untagged(std::slice::from_ref(event))
                .map(Some)
                .map_err(StoreError::from),
        }
    }

    /// Records an application's own event (a gateway's request record, say) through this
    /// store's audit target, with the same fail-closed rule as the store's records: an error
    /// means the event is not recorded and the caller must not act as if it were (a gateway
    /// sends no response for a request whose record failed).
    ///
    /// # Errors
    /// [`StoreError::Audit`] or [`StoreError::Storage`] when the record could not be made.
    pub fn record_event(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.record(event).map(|_| ())
    }

    /// Records an event whose failure must not mask the error being returned.
    fn record_quietly(&self, event: &AuditEvent) {
        let _ = self.record(event);
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
        // Every pending read has a tenant, so the head goes out with the first one, tagged
        // (a reveal leaves the tag to this point: only the head stored needs one).
        let mut head = taken.head.map(|h| self.audit.tagged(h));
        for (tenant, uses) in taken.uses {
            let uses: Vec<(CredentialId, i64)> = uses.into_iter().collect();
            self.storage.record_use(&tenant, &uses, head.take())?;
        }
        Ok(())
    }

    fn note_use(&self, tenant: &TenantId, id: &CredentialId, at: i64, head: Option<AuditHead>) {
        let flush = match self.pending.lock() {
            Ok(mut p) => {
                // Ids are copied only the first time they are seen (`entry` copies every time).
                let latest = |per: &mut HashMap<CredentialId, i64>| match per.get_mut(id) {
                    Some(t) => *t = (*t).max(at),
                    None => {
                        per.insert(id.clone(), at);
                    }
                };
                match p.uses.get_mut(tenant) {
                    Some(per) => latest(per),
                    None => {
                        let mut per = HashMap::new();
                        latest(&mut per);
                        p.uses.insert(tenant.clone(), per);
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
}

/// One tenant, one actor: the only way to reach credentials.
pub struct Scope<'s> {
    store: &'s Store,
    tenant: TenantId,
    actor: String,
    source_ip: Option<String>,
    client_host: Option<String>,
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

impl Scope<'_> {
    /// Records the caller's source IP in audit events.
    pub fn with_source_ip(mut self, ip: impl Into<String>) -> Self {
        self.source_ip = Some(ip.into());
        self
    }

    /// Records the host name the caller addressed (a gateway's `Host`) in audit events.
    pub fn with_client_host(mut self, host: impl Into<String>) -> Self {
        self.client_host = Some(host.into());
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
        if let Some(h) = &self.client_host {
            e = e.with_client_host(h.as_str());
        }
        if let Some(r) = &self.request_id {
            e = e.with_request_id(r.as_str());
        }
        e
    }

    /// Loads a credential row and checks its record MAC.
    fn load(&self, id: &CredentialId) -> Result<Authentic, StoreError> {
        let row = self
            .store
            .storage
            .credential(&self.tenant, id)?
            .ok_or_else(|| StoreError::NotFound {
                credential: id.to_string(),
            })?;
        self.store.authenticated(row, &self.actor)
    }

    /// Loads for a secret access, recording and refusing unknown, inactive or expired.
    fn load_for_access(&self, id: &CredentialId) -> Result<Authentic, StoreError> {
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
        // Nothing of the row (its flags, expiry, fields) is trusted before its MAC is checked.
        let row = self.store.authenticated(row, &self.actor)?;
        if let Some(reason) = self.refusal(&row) {
            return Err(deny(reason, resource(&row)));
        }
        Ok(row)
    }

    /// Why an access to an authentic `row` is refused now (inactive, expired), if it is.
    fn refusal(&self, row: &CredentialRow) -> Option<DenyReason> {
        if !row.is_active {
            Some(DenyReason::Inactive)
        } else if row.expires_at.is_some_and(|e| e <= self.store.now()) {
            Some(DenyReason::Expired)
        } else {
            None
        }
    }

    /// The backend's copy of a row for an access ([`Storage::credential_for_access`]), if the
    /// copy allows it (authentic, active, not expired); `None` otherwise, and nothing
    /// recorded but a MAC mismatch. An access decided on it must be recorded with
    /// [`Store::record_access`].
    fn kept_for_access(&self, id: &CredentialId) -> Result<Option<Authentic>, StoreError> {
        let Some(row) = self.store.storage.credential_for_access(&self.tenant, id)? else {
            return Ok(None);
        };
        let row = match self.store.authenticated(row, &self.actor) {
            Ok(r) => r,
            Err(e) => {
                self.store.storage.forget_credential(&self.tenant, id);
                return Err(e);
            }
        };
        if self.refusal(&row).is_none() {
            return Ok(Some(row));
        }
        self.store.storage.forget_credential(&self.tenant, id);
        Ok(None)
    }

    /// Refuses plaintext secrets for a client-sealed-only tenant, recording the denial.
    fn refuse_plaintext(&self, res: Resource) -> Result<(), StoreError> {
        if !self.store.cfg.client_sealed_only.contains(&self.tenant) {
            return Ok(());
        }
        self.store.record_quietly(
            &self
                .event(Action::AccessDenied)
                .with_resource(res)
                .with_details(Details::AccessDenied {
                    reason: DenyReason::Forbidden,
                }),
        );
        Err(StoreError::ClientSealedOnly)
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
