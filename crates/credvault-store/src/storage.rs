//! The storage joint: where backends plug in. An in-memory backend ([`MemoryStorage`]) and a
//! SQLite backend ([`SqliteStorage`]) come with the crate; a PostgreSQL backend follows. Every
//! backend must pass `credvault_test::storage_conformance`.
//!
//! Rules every implementation keeps (the conformance suite checks each):
//! - **Tenant scope.** Every credential and key method takes the tenant; no method reads or
//!   writes across tenants, and a row is found only under its own tenant.
//! - **One transaction per call.** A call either applies all its writes or none.
//! - **Commit hook.** Methods taking a [`Hook`] call it once, inside the transaction, after
//!   every check passed and before committing; if the hook fails, nothing is written and the
//!   call returns [`StorageError::Hook`]. The store records its audit event there, so an
//!   event that cannot be recorded means no change. The head the hook returns is stored in the
//!   same transaction ([`audit_head`](Storage::audit_head)).
//! - **Optimistic concurrency.** Updates and deletes take the version the caller read and
//!   fail with [`StorageError::VersionConflict`] if the row moved on.
//! - **Key references.** A credential row may only name a data key the tenant has; a key is
//!   retired ([`retire_unreferenced_keys`](Storage::retire_unreferenced_keys)) only inside a
//!   transaction that sees no row naming it.
//!
//! [`MemoryStorage`]: crate::MemoryStorage
//! [`SqliteStorage`]: crate::SqliteStorage

use std::collections::BTreeMap;
use std::sync::Arc;

use credvault_envelope::KeyId;
use credvault_schema::RevealPolicy;

use crate::ids::{CredentialId, TenantId};

/// The audit log's head: the last record's sequence number and hash, kept outside the log so
/// that a log cut short or replaced by an older copy is detected, with its tag under the audit
/// key so that the head itself cannot be pointed at another record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditHead {
    /// Sequence number.
    pub seq: u64,
    /// SHA-256 hash of the record line.
    pub hash: [u8; 32],
    /// [`AuditKey::head_tag`](credvault_audit::AuditKey::head_tag) of `seq` and `hash`; `None`
    /// only in a head stored before heads were tagged.
    pub tag: Option<[u8; 32]>,
}

/// The commit hook refused (the audit sink could not record); nothing was written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HookError {
    /// The sink refused or failed.
    #[error("{0}")]
    Refused(String),
    /// The sink's lock was held by another writer (another process) past its timeout.
    #[error("the audit log is busy: another process held its lock past the timeout")]
    Busy,
}

/// The audit chain a backend keeps in its own write transactions
/// ([`Storage::keeps_audit_chain`]), handed to the commit hook: events appended to it are
/// committed, or rolled back, with the change they describe.
pub trait AuditChain {
    /// Appends `events`, in order, in the current transaction; returns the head after the
    /// last (tagged under the audit key).
    ///
    /// # Errors
    /// [`HookError`]: the backend keeps no chain, or could not write it (then the whole call
    /// fails and nothing is written).
    fn append(&mut self, events: &[credvault_audit::AuditEvent]) -> Result<AuditHead, HookError>;
}

/// The chain handed to hooks by a backend that keeps none: every append is refused.
#[derive(Debug)]
pub struct NoChain;

impl AuditChain for NoChain {
    fn append(&mut self, _: &[credvault_audit::AuditEvent]) -> Result<AuditHead, HookError> {
        Err(HookError::Refused(
            "this storage keeps no audit chain: give the store an audit log or sink".into(),
        ))
    }
}

/// The commit hook: called inside the transaction just before commit, with the backend's
/// audit chain ([`NoChain`] if it keeps none).
pub type Hook<'a> = &'a mut dyn FnMut(&mut dyn AuditChain) -> Result<Option<AuditHead>, HookError>;

/// A storage failure.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The commit hook refused; nothing was written.
    #[error("commit hook refused: {0}")]
    Hook(HookError),
    /// Another process held the backend's write lock past the lock timeout; nothing was
    /// written.
    #[error("the {resource} is busy: another process held its write lock past the timeout")]
    Busy {
        /// What was busy (`database`).
        resource: &'static str,
    },
    /// The row does not exist (in this tenant).
    #[error("{what} not found")]
    NotFound {
        /// `tenant`, `credential` or `data key`.
        what: &'static str,
    },
    /// The tenant exists already.
    #[error("tenant {tenant:?} already exists")]
    TenantExists {
        /// The tenant.
        tenant: String,
    },
    /// Another active credential has this (name, environment).
    #[error("an active credential named {name:?} already exists in environment {environment:?}")]
    NameTaken {
        /// The name.
        name: String,
        /// The environment.
        environment: String,
    },
    /// The row's version is not the one expected.
    #[error("version conflict: expected {expected}, found {found}")]
    VersionConflict {
        /// Expected.
        expected: u64,
        /// Found.
        found: u64,
    },
    /// The row names a data key the tenant does not have (retired meanwhile).
    #[error("data key {key_id} is not a key of this tenant")]
    UnknownKey {
        /// The key.
        key_id: KeyId,
    },
    /// A stored row could not be decoded.
    #[error("corrupt {table} row: {reason}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// Why.
        reason: String,
    },
    /// The transaction conflicted with a concurrent one (a serialization failure or a
    /// deadlock the server broke) and was rolled back: nothing was written; retrying is safe.
    #[error("the {resource} rolled the transaction back after a conflict with a concurrent one; nothing was written: retry")]
    Conflict {
        /// What conflicted (`database`).
        resource: &'static str,
    },
    /// A row an append was guarded by changed since it was read
    /// ([`Storage::append_audit_guarded`]): nothing was written.
    #[error("the {what} row changed since it was read; nothing was written")]
    Stale {
        /// What changed (`credential`).
        what: &'static str,
    },
    /// A statement ran past the backend's statement timeout and was cancelled; nothing was
    /// written.
    #[error("the {resource} cancelled a statement that ran past its statement timeout; nothing was written")]
    Timeout {
        /// What timed out (`database`).
        resource: &'static str,
    },
    /// The backend could not be reached: the server is down or restarting, the connection was
    /// lost, or every pooled connection stayed in use past the pool timeout. Nothing was
    /// written by the failed call (a lost connection rolls its transaction back).
    #[error("the {resource} is unavailable: {reason}")]
    Unavailable {
        /// What (`database`, `connection pool`).
        resource: &'static str,
        /// Why (no value of any row).
        reason: String,
    },
    /// The backend failed (I/O, constraint not covered above).
    #[error("storage backend: {0}")]
    Backend(String),
}

/// A tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantRow {
    /// Its id.
    pub id: TenantId,
    /// Display name.
    pub name: String,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
}

/// Whether a data key seals new data or only opens old data during a rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// Seals new data (one per tenant).
    Active,
    /// Replaced by a rotation; opens rows not re-encrypted yet; retired when none is left.
    Retiring,
}

impl KeyState {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Retiring => "retiring",
        }
    }

    /// From storage.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "retiring" => Some(Self::Retiring),
            _ => None,
        }
    }
}

/// A tenant's data key, wrapped by the master key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataKeyRow {
    /// The tenant.
    pub tenant: TenantId,
    /// The key id (in every envelope it sealed).
    pub key_id: KeyId,
    /// The wrapped key (`credvault_envelope::WrappedKey` bytes).
    pub wrapped: Vec<u8>,
    /// Active or retiring.
    pub state: KeyState,
    /// Messages reserved for sealing so far (an upper bound on those sealed).
    pub usage: u64,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
    /// The record MAC over the key's tenant, id and creation time (and the tenant's name and
    /// creation time), under a key derived from this data key; empty for a row written before
    /// record MACs. The backend stores it verbatim; the store computes and checks it.
    pub mac: Vec<u8>,
}

/// A stored credential: metadata in clear, secret fields sealed in one envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialRow {
    /// Id.
    pub id: CredentialId,
    /// Tenant.
    pub tenant: TenantId,
    /// Name, unique per (tenant, environment) among active credentials.
    pub name: String,
    /// Credential type name.
    pub type_name: String,
    /// Environment (`production` by default).
    pub environment: String,
    /// Description.
    pub description: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Whether it may be used.
    pub is_active: bool,
    /// Expiry, Unix milliseconds.
    pub expires_at: Option<i64>,
    /// Who created it.
    pub created_by: String,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
    /// Last update, Unix milliseconds.
    pub updated_at: i64,
    /// Version, 1 at creation, +1 per update.
    pub version: u64,
    /// Last reveal or use, Unix milliseconds.
    pub last_used_at: Option<i64>,
    /// Last test, Unix milliseconds.
    pub last_tested: Option<i64>,
    /// Last test status (`ok`, `failed`, `error`).
    pub test_status: Option<String>,
    /// Last test message.
    pub test_message: Option<String>,
    /// The non-secret fields, as a JSON object.
    pub public: String,
    /// Names of the secret fields that are set (their values are in `secret`).
    pub secret_fields: Vec<String>,
    /// The data key that sealed `secret`.
    pub key_id: KeyId,
    /// The envelope of the secret fields.
    pub secret: Vec<u8>,
    /// Reveal policies set on this credential, by secret field: each stricter than the one
    /// its type declares (the store enforces it; the stricter of the two applies).
    pub reveal: BTreeMap<String, RevealPolicy>,
    /// The record MAC over every field above except the last-use and test columns, under a
    /// key derived from the data key `key_id` names; empty for a row written before record
    /// MACs. The backend stores it verbatim; the store computes and checks it.
    pub mac: Vec<u8>,
}

/// A row an access was decided on, as [`Storage::append_audit_guarded`] requires it to still
/// be: the credential, with the record MAC it had when read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowGuard {
    /// The tenant.
    pub tenant: TenantId,
    /// The credential.
    pub id: CredentialId,
    /// Its record MAC when read.
    pub mac: Vec<u8>,
}

/// Record MACs for rows written before there were any ([`Storage::authenticate_records`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordMacs {
    /// `(tenant, credential, version it was computed for, MAC)`.
    pub credentials: Vec<(TenantId, CredentialId, u64, Vec<u8>)>,
    /// `(tenant, key, MAC)`.
    pub keys: Vec<(TenantId, KeyId, Vec<u8>)>,
}

/// The one-time-code state of a database (replay guard, verification throttling, HOTP
/// counters), copied verbatim when a vault moves to another backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OneTimeState {
    /// `(key, step, retain_until)` of the replay guard.
    pub replay: Vec<(String, u64, u64)>,
    /// `(key, state)` of one-time-code throttling.
    pub throttle: Vec<(String, OtpFailures)>,
    /// `(key, next counter)` of HOTP credentials.
    pub hotp: Vec<(String, u64)>,
}

/// Filters for [`Storage::credentials`]; all given conditions must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListFilter {
    /// Only this type.
    pub type_name: Option<String>,
    /// Only this environment.
    pub environment: Option<String>,
    /// Only credentials carrying every one of these tags.
    pub tags: Vec<String>,
    /// Only active (`true`) or inactive (`false`) credentials.
    pub active: Option<bool>,
    /// Only credentials expiring before this time (Unix milliseconds).
    pub expiring_before: Option<i64>,
}

impl ListFilter {
    /// No conditions: every credential.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only this type.
    pub fn type_name(mut self, t: impl Into<String>) -> Self {
        self.type_name = Some(t.into());
        self
    }

    /// Only this environment.
    pub fn environment(mut self, e: impl Into<String>) -> Self {
        self.environment = Some(e.into());
        self
    }

    /// Only credentials carrying this tag too.
    pub fn tag(mut self, t: impl Into<String>) -> Self {
        self.tags.push(t.into());
        self
    }

    /// Only active (`true`) or inactive (`false`) credentials.
    pub fn active(mut self, active: bool) -> Self {
        self.active = Some(active);
        self
    }

    /// Only credentials expiring before `at` (Unix milliseconds).
    pub fn expiring_before(mut self, at: i64) -> Self {
        self.expiring_before = Some(at);
        self
    }
}

/// One re-encryption in a tenant-key rotation batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reseal {
    /// The credential.
    pub id: CredentialId,
    /// Its version when read; the reseal is skipped if it changed.
    pub version: u64,
    /// The key it was under when read; the reseal is skipped if it changed.
    pub old_key: KeyId,
    /// The new key.
    pub new_key: KeyId,
    /// The new envelope.
    pub secret: Vec<u8>,
    /// The row's record MAC under the new key.
    pub mac: Vec<u8>,
}

/// A credential test result to store on the record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRecord {
    /// When, Unix milliseconds.
    pub at: i64,
    /// `ok`, `failed` or `error`.
    pub status: String,
    /// The tester's message (no secrets).
    pub message: String,
}

/// The storage joint. See the [module docs](self) for the rules every backend keeps.
pub trait Storage: Send + Sync {
    /// Creates a tenant with its first (active) data key.
    fn create_tenant(
        &self,
        tenant: &TenantRow,
        key: &DataKeyRow,
        hook: Hook<'_>,
    ) -> Result<(), StorageError>;

    /// A tenant, if it exists.
    fn tenant(&self, id: &TenantId) -> Result<Option<TenantRow>, StorageError>;

    /// Every tenant, by id. (Administrative: lists tenants, never their credentials.)
    fn tenants(&self) -> Result<Vec<TenantRow>, StorageError>;

    /// A tenant's data keys (active first).
    fn data_keys(&self, tenant: &TenantId) -> Result<Vec<DataKeyRow>, StorageError>;

    /// Adds `count` to a data key's usage counter and returns the new total. Called, and
    /// committed, before the messages it reserves are sealed.
    fn reserve_usage(
        &self,
        tenant: &TenantId,
        key_id: &KeyId,
        count: u64,
    ) -> Result<u64, StorageError>;

    /// Replaces a data key's wrapped form if it is still `old` (master-key rotation).
    /// Returns whether it was replaced.
    fn replace_wrapped(
        &self,
        tenant: &TenantId,
        key_id: &KeyId,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool, StorageError>;

    /// Starts a tenant-key rotation: inserts `new_key` as the active key and marks every
    /// other key of the tenant retiring.
    fn start_key_rotation(&self, new_key: &DataKeyRow, hook: Hook<'_>) -> Result<(), StorageError>;

    /// Deletes every retiring key of the tenant that no credential names, in one transaction
    /// that sees no such row. Calls `hook` only if there is a key to retire. Returns the keys
    /// retired.
    fn retire_unreferenced_keys(
        &self,
        tenant: &TenantId,
        hook: Hook<'_>,
    ) -> Result<Vec<KeyId>, StorageError>;

    /// Inserts a credential. Fails with [`StorageError::NameTaken`] if an active credential
    /// has its (name, environment) and [`StorageError::UnknownKey`] if its key is not the
    /// tenant's active key (checked in the write transaction: a writer that sealed just before
    /// a rotation started seals again).
    fn insert_credential(&self, row: &CredentialRow, hook: Hook<'_>) -> Result<(), StorageError>;

    /// A credential of this tenant.
    fn credential(
        &self,
        tenant: &TenantId,
        id: &CredentialId,
    ) -> Result<Option<CredentialRow>, StorageError>;

    /// A credential for an access that is then recorded with
    /// [`append_audit_guarded`](Self::append_audit_guarded). A backend may answer from a copy
    /// it read before when it knows the copy is still the row: SQLite when its own change
    /// counters say nothing was committed since the copy was read (so the copy is what a read
    /// now would return), PostgreSQL because that append checks, in the statement that
    /// records the access, that the row is still the one the access was decided on. The
    /// default reads the row.
    fn credential_for_access(
        &self,
        tenant: &TenantId,
        id: &CredentialId,
    ) -> Result<Option<Arc<CredentialRow>>, StorageError> {
        Ok(self.credential(tenant, id)?.map(Arc::new))
    }

    /// Drops any copy of the row kept for [`credential_for_access`](Self::credential_for_access).
    fn forget_credential(&self, tenant: &TenantId, id: &CredentialId) {
        let _ = (tenant, id);
    }

    /// A credential by name and environment: the active one, or else the most recently
    /// updated inactive one.
    fn credential_by_name(
        &self,
        tenant: &TenantId,
        name: &str,
        environment: &str,
    ) -> Result<Option<CredentialRow>, StorageError>;

    /// The tenant's credentials matching `filter`, by name then environment.
    fn credentials(
        &self,
        tenant: &TenantId,
        filter: &ListFilter,
    ) -> Result<Vec<CredentialRow>, StorageError>;

    /// Replaces a credential (same tenant and id) if its stored version is `expected_version`.
    /// The new row may name the tenant's active key or the key the stored row names; any other
    /// key is [`StorageError::UnknownKey`] (a reseal by a rotation changed the key but not the
    /// version, and must not be reverted).
    fn update_credential(
        &self,
        row: &CredentialRow,
        expected_version: u64,
        hook: Hook<'_>,
    ) -> Result<(), StorageError>;

    /// Deletes a credential if its version is `expected_version`: calls the hook, overwrites
    /// the sealed data, then deletes the row, in one transaction.
    fn delete_credential(
        &self,
        tenant: &TenantId,
        id: &CredentialId,
        expected_version: u64,
        hook: Hook<'_>,
    ) -> Result<(), StorageError>;

    /// Up to `limit` credentials of the tenant whose key is not `key`, with ids greater than
    /// `after`, by id (a rotation job's cursor).
    fn credentials_not_under(
        &self,
        tenant: &TenantId,
        key: &KeyId,
        after: Option<&CredentialId>,
        limit: usize,
    ) -> Result<Vec<CredentialRow>, StorageError>;

    /// How many of the tenant's credentials are (`true`) or are not (`false`) under `key`.
    fn count_under(&self, tenant: &TenantId, key: &KeyId, under: bool)
        -> Result<u64, StorageError>;

    /// Applies a batch of re-encryptions in one transaction, skipping those whose row
    /// changed since it was read. The version does not change (the content did not).
    /// Returns how many were applied.
    fn reseal(&self, tenant: &TenantId, batch: &[Reseal]) -> Result<usize, StorageError>;

    /// Records last-use times (and the audit head reached), in one transaction.
    fn record_use(
        &self,
        tenant: &TenantId,
        uses: &[(CredentialId, i64)],
        head: Option<AuditHead>,
    ) -> Result<(), StorageError>;

    /// Stores a test result on a credential.
    fn record_test(
        &self,
        tenant: &TenantId,
        id: &CredentialId,
        result: &TestRecord,
        hook: Hook<'_>,
    ) -> Result<(), StorageError>;

    /// The durable replay guard: atomically accepts `step` for `key` if it is newer than the
    /// last step accepted whose record is still live (`retain_until > now`).
    fn check_and_mark_step(
        &self,
        key: &str,
        step: u64,
        retain_until: u64,
        now: u64,
    ) -> Result<bool, StorageError>;

    /// Until when (Unix seconds) one-time-code verification for `key` is locked out, if it is
    /// at `now`.
    fn otp_locked_until(&self, key: &str, now: u64) -> Result<Option<u64>, StorageError>;

    /// Atomically counts one wrong code for `key` at `now`: failures are counted in a window
    /// of `throttle.window_secs` starting at the first failure; the `max_failures`-th failure
    /// in a window locks `key` out until `now + lockout_secs` and starts a new count. Returns
    /// the lock-out's end when this failure started one (or one is running).
    fn otp_failed(
        &self,
        key: &str,
        now: u64,
        throttle: &OtpThrottle,
    ) -> Result<Option<u64>, StorageError>;

    /// Clears the failure count of `key` (a correct code).
    fn otp_succeeded(&self, key: &str) -> Result<(), StorageError>;

    /// The next HOTP counter of `key` (RFC 4226): the one stored, or `initial` when none is.
    fn hotp_counter(&self, key: &str, initial: u64) -> Result<u64, StorageError>;

    /// Atomically moves `key`'s HOTP counter from `from` to `to` if it is still `from` (an
    /// absent counter is `initial`) and `to > from`; returns whether it moved. A counter
    /// never moves backwards.
    fn advance_hotp_counter(
        &self,
        key: &str,
        initial: u64,
        from: u64,
        to: u64,
    ) -> Result<bool, StorageError>;

    /// Forgets `key`'s HOTP counter (its authenticator key was replaced or deleted).
    fn reset_hotp_counter(&self, key: &str) -> Result<(), StorageError>;

    /// The audit head stored by the last hook (or [`record_use`](Self::record_use)).
    fn audit_head(&self) -> Result<Option<AuditHead>, StorageError>;

    /// Whether every row carries a record MAC: true for a database created with record MACs
    /// and after [`authenticate_records`](Self::authenticate_records).
    fn records_authenticated(&self) -> Result<bool, StorageError>;

    /// Whether stored heads carry tags: true for a database created with head tags and after
    /// [`authenticate_head`](Self::authenticate_head). A head without a tag is then refused.
    fn heads_authenticated(&self) -> Result<bool, StorageError>;

    /// Marks stored heads as tagged, in one transaction with the hook, and stores the hook's
    /// head (which replaces an untagged one of the same record).
    fn authenticate_head(&self, hook: Hook<'_>) -> Result<(), StorageError>;

    /// Stores MACs for rows that have none (each only if its MAC is still empty and, for a
    /// credential, its version is the one given) and marks the database authenticated, in one
    /// transaction with the hook. Returns how many rows were given a MAC.
    fn authenticate_records(
        &self,
        macs: &RecordMacs,
        hook: Hook<'_>,
    ) -> Result<usize, StorageError>;

    /// Whether this backend keeps the audit chain in its own transactions (then hooks get a
    /// working [`AuditChain`] and [`append_audit`](Self::append_audit) works).
    fn keeps_audit_chain(&self) -> bool {
        false
    }

    /// Appends events to the backend's audit chain in a transaction of their own (an event
    /// that describes no change: a reveal, a denial), storing the head reached with them.
    ///
    /// # Errors
    /// [`StorageError::Hook`] if the backend keeps no chain; [`StorageError`].
    fn append_audit(
        &self,
        events: &[credvault_audit::AuditEvent],
    ) -> Result<Option<AuditHead>, StorageError> {
        NoChain.append(events).map(Some).map_err(StorageError::Hook)
    }

    /// [`append_audit`](Self::append_audit), only if every guarded row still has the MAC it
    /// had when read, checked with the append: else [`StorageError::Stale`] and nothing is
    /// appended. The default appends (its [`credential_for_access`](Self::credential_for_access)
    /// read the row just before, as every access did).
    ///
    /// # Errors
    /// [`StorageError::Stale`]; as [`append_audit`](Self::append_audit).
    fn append_audit_guarded(
        &self,
        events: &[credvault_audit::AuditEvent],
        guards: &[RowGuard],
    ) -> Result<Option<AuditHead>, StorageError> {
        let _ = guards;
        self.append_audit(events)
    }
}

/// Whether a HOTP counter at `current` may move from `from` to `to`
/// ([`Storage::advance_hotp_counter`]): only from where it is, and only forwards.
pub(crate) fn hotp_may_advance(current: u64, from: u64, to: u64) -> bool {
    current == from && to > from
}

/// How many credential rows a backend (and the store, for rows it opened) keeps for
/// accesses ([`Storage::credential_for_access`]); the set is emptied when full.
pub(crate) const KEPT_ROWS: usize = 65_536;

/// Puts `value` in a set of rows kept for accesses, emptying the set first when it holds
/// [`KEPT_ROWS`]: the one bound every backend's set, and the store's, follows.
pub(crate) fn keep<K: std::hash::Hash + Eq, V>(
    kept: &mut std::collections::HashMap<K, V>,
    key: K,
    value: V,
) {
    if kept.len() >= KEPT_ROWS {
        kept.clear();
    }
    kept.insert(key, value);
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl AuditHead {
    /// The head as backends store it: `SEQ:HASH` or `SEQ:HASH:TAG` (hex).
    pub(crate) fn to_meta(self) -> String {
        match self.tag {
            Some(t) => format!("{}:{}:{}", self.seq, hex::encode(self.hash), hex::encode(t)),
            None => format!("{}:{}", self.seq, hex::encode(self.hash)),
        }
    }

    /// Parses [`to_meta`](Self::to_meta)'s form; `None` if it is not that.
    pub(crate) fn from_meta(v: &str) -> Option<Self> {
        let mut parts = v.split(':');
        let seq = parts.next()?.parse().ok()?;
        let mut hash = [0u8; 32];
        hex::decode_to_slice(parts.next()?, &mut hash).ok()?;
        let tag = match parts.next() {
            None => None,
            Some(t) => {
                let mut tag = [0u8; 32];
                hex::decode_to_slice(t, &mut tag).ok()?;
                Some(tag)
            }
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Self { seq, hash, tag })
    }
}

/// Keeps the later of two heads.
pub(crate) fn later(a: Option<AuditHead>, b: Option<AuditHead>) -> Option<AuditHead> {
    match (a, b) {
        // The same record: the tagged one (an untagged head is being authenticated).
        (Some(x), Some(y)) if x.seq == y.seq && x.hash == y.hash => {
            Some(if y.tag.is_some() { y } else { x })
        }
        (Some(x), Some(y)) => Some(if y.seq >= x.seq { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Throttling of one-time-code verification per credential (RFC 4226 §7.3): after
/// `max_failures` wrong codes within `window_secs`, verification is refused for
/// `lockout_secs`. Default: 5 in 5 minutes, then 15 minutes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OtpThrottle {
    /// Wrong codes allowed in a window (at least 1).
    pub max_failures: u32,
    /// The window, in seconds.
    pub window_secs: u64,
    /// How long verification is refused after the last allowed failure, in seconds.
    pub lockout_secs: u64,
}

impl Default for OtpThrottle {
    fn default() -> Self {
        Self {
            max_failures: 5,
            window_secs: 300,
            lockout_secs: 900,
        }
    }
}

/// The state kept per key by [`Storage::otp_failed`], and its transition (shared by the
/// backends so that they cannot disagree).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OtpFailures {
    /// When the current window started (Unix seconds).
    pub window_start: u64,
    /// Wrong codes in the current window.
    pub failures: u32,
    /// Locked out until then (0: not locked).
    pub locked_until: u64,
}

impl OtpFailures {
    /// The state after one more wrong code at `now`.
    pub fn after_failure(self, now: u64, t: &OtpThrottle) -> Self {
        if self.locked_until > now {
            return self;
        }
        let mut s = if now >= self.window_start.saturating_add(t.window_secs) || self.failures == 0
        {
            Self {
                window_start: now,
                failures: 0,
                locked_until: 0,
            }
        } else {
            self
        };
        s.failures += 1;
        if s.failures >= t.max_failures.max(1) {
            s = Self {
                window_start: now,
                failures: 0,
                locked_until: now.saturating_add(t.lockout_secs),
            };
        }
        s
    }

    /// The lock-out's end, if it is running at `now`.
    pub fn locked_at(&self, now: u64) -> Option<u64> {
        (self.locked_until > now).then_some(self.locked_until)
    }
}

/// Row encoding shared by the SQL backends.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod codec {
    use credvault_envelope::{KeyId, KEY_ID_LEN};

    use super::StorageError;

    /// A row that does not decode.
    pub(crate) fn corrupt(table: &'static str, reason: impl Into<String>) -> StorageError {
        StorageError::Corrupt {
            table,
            reason: reason.into(),
        }
    }

    /// A counter as stored (saturating at `i64::MAX`).
    pub(crate) fn to_i64(n: u64) -> i64 {
        i64::try_from(n).unwrap_or(i64::MAX)
    }

    /// A stored counter (a negative one reads as 0).
    pub(crate) fn to_u64(n: i64) -> u64 {
        u64::try_from(n).unwrap_or(0)
    }

    /// A stored key id.
    pub(crate) fn key_id(bytes: &[u8], table: &'static str) -> Result<KeyId, StorageError> {
        let arr: [u8; KEY_ID_LEN] = bytes
            .try_into()
            .map_err(|_| corrupt(table, "key id is not 16 bytes"))?;
        Ok(KeyId::from_bytes(arr))
    }

    /// An optimistic write's version check: the stored version must be the one read.
    pub(crate) fn check_version(found: u64, expected: u64) -> Result<(), StorageError> {
        if found == expected {
            Ok(())
        } else {
            Err(StorageError::VersionConflict { expected, found })
        }
    }

    /// A list or map column as JSON.
    pub(crate) fn json<T: serde::Serialize>(v: &T) -> String {
        serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
    }
}
