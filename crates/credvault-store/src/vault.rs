//! The embedded vault: one directory holding a SQLite database, an audit log, a master key
//! file and an audit key file, all readable only by their owner. Zero set-up:
//! [`Vault::init`] creates it, [`Vault::open`] opens it.
//!
//! ```text
//! DIR/
//!   vault.db      SQLite database (WAL): tenants, wrapped data keys, credentials, replay guard,
//!                 the audit log's head
//!   master.key    the local master keyring (unless CREDVAULT_MASTER_KEY is set)
//!   audit.key     the audit log's HMAC key
//!   audit/        the hash-chained audit log and its anchor
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use credvault_audit::{
    anchor_path, segment_paths, verify_files, Anchor, AuditKey, AuditLog, Durability, LogConfig,
    LogError, VerifyOptions, VerifyReport,
};
use credvault_audit::{AesGcmSealer, Events, Query};
use credvault_envelope::{
    needs_rewrap, DataKey, EncryptionContext, LocalKeyring, MasterKey, WrappedKey,
};
use credvault_schema::Registry;
use zeroize::Zeroizing;

use crate::error::StoreError;
use crate::model::{MasterRotation, Progress};
use crate::sqlite::{SqliteDurability, SqliteStorage, DEFAULT_LOCK_TIMEOUT};
use crate::storage::{AuditHead, Storage};
use crate::store::{Store, StoreConfig};
use crate::tester::TesterRegistry;

mod backup;
pub use backup::Restored;

/// Environment variable that may hold the master key (base64 of 32 bytes, or a
/// `credvault-keyring-v1` keyring); it takes precedence over `master.key`.
pub const MASTER_KEY_ENV: &str = "CREDVAULT_MASTER_KEY";

/// Where the master key came from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MasterSource {
    /// The environment variable [`MASTER_KEY_ENV`].
    Env,
    /// A key file.
    File(PathBuf),
    /// A provider given to [`VaultOptions::master_key`] (its provider id).
    Provider(String),
}

impl std::fmt::Display for MasterSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Env => write!(f, "${MASTER_KEY_ENV}"),
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Provider(id) => write!(f, "provider {id:?}"),
        }
    }
}

/// How a vault is opened.
///
/// The master key is the vault's own `master.key` file unless told otherwise:
/// [`master_key_from_env`](Self::master_key_from_env) reads [`MASTER_KEY_ENV`] (only when asked:
/// a vault never picks up a key from the environment by surprise), and
/// [`master_key`](Self::master_key) takes any [`MasterKey`] provider (a KMS, an HSM).
#[derive(Clone)]
#[non_exhaustive]
pub struct VaultOptions {
    /// SQLite durability (default: `Full`).
    pub sqlite: SqliteDurability,
    /// Audit log durability (default: group commit, fsync before acknowledging).
    pub audit: Durability,
    /// Store settings.
    pub store: StoreConfig,
    /// Whether [`MASTER_KEY_ENV`] is consulted (default `false`); when set and present, it
    /// takes precedence over `master.key`.
    pub master_from_env: bool,
    /// A master key provider; takes precedence over the environment and `master.key`.
    pub master_key: Option<Arc<dyn MasterKey>>,
    /// [`init`](Vault::init) only: make the master key file here instead of `master.key` in
    /// the vault directory ([`master_key_file`](Self::master_key_file)).
    pub master_key_file: Option<PathBuf>,
    /// How long a write waits for another process's write lock on the database or the audit
    /// log before failing with [`StoreError::Busy`] (default 5 s).
    pub lock_timeout: Duration,
    /// Credential testers (default: [`TesterRegistry::with_defaults`], whose HTTP tester
    /// reaches public addresses only).
    pub testers: Option<TesterRegistry>,
    /// [`init`](Vault::init) only: seal the audit log's events at rest
    /// ([`seal_audit`](Self::seal_audit)). A vault opened later seals when it has the key.
    pub seal_audit: bool,
    /// [`init`](Vault::init) only: keep the vault in this PostgreSQL database
    /// ([`database`](Self::database)) instead of `vault.db`.
    #[cfg(feature = "postgres")]
    pub database: Option<DatabaseConfig>,
    /// Pool, timeouts, TLS and password of a PostgreSQL vault.
    #[cfg(feature = "postgres")]
    pub postgres: crate::postgres::PostgresOptions,
}

/// What [`Vault::migrate_to_postgres`] copied.
#[cfg(feature = "postgres")]
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StorageMigration {
    /// Tenants copied.
    pub tenants: usize,
    /// Data keys copied (wrapped, verbatim).
    pub data_keys: usize,
    /// Credentials copied (ciphertexts and record MACs verbatim).
    pub credentials: usize,
    /// Records of the file audit log now kept in the database (its segments, verbatim).
    pub audit_records: u64,
    /// Whether the copy had committed in an earlier run that was stopped before finishing.
    pub resumed: bool,
}

/// Where a PostgreSQL vault's database is: recorded in the vault directory as
/// `database.json`, never with a password (a URL carrying one is refused).
#[cfg(feature = "postgres")]
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct DatabaseConfig {
    /// The connection URL (`postgres://user@host:port/db?sslmode=require`), without a password.
    pub url: String,
    /// The schema the vault's tables are in (default: the role's `search_path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
}

#[cfg(feature = "postgres")]
impl DatabaseConfig {
    /// The database at `url`, in the role's default schema.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: None,
        }
    }

    /// In this schema.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }
}

impl std::fmt::Debug for VaultOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultOptions")
            .field("sqlite", &self.sqlite)
            .field("audit", &self.audit)
            .field("store", &self.store)
            .field("master_from_env", &self.master_from_env)
            .field(
                "master_key",
                &self.master_key.as_ref().map(|m| m.provider_id().to_owned()),
            )
            .field("lock_timeout", &self.lock_timeout)
            .field("testers", &self.testers)
            .field("seal_audit", &self.seal_audit)
            .finish_non_exhaustive()
    }
}

impl Default for VaultOptions {
    fn default() -> Self {
        Self {
            sqlite: SqliteDurability::Full,
            audit: Durability::default(),
            store: StoreConfig::default(),
            master_from_env: false,
            master_key: None,
            master_key_file: None,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            testers: None,
            seal_audit: false,
            #[cfg(feature = "postgres")]
            database: None,
            #[cfg(feature = "postgres")]
            postgres: crate::postgres::PostgresOptions::default(),
        }
    }
}

impl VaultOptions {
    /// Sets the SQLite durability.
    pub fn sqlite(mut self, d: SqliteDurability) -> Self {
        self.sqlite = d;
        self
    }

    /// Sets the audit log durability.
    pub fn audit(mut self, d: Durability) -> Self {
        self.audit = d;
        self
    }

    /// Sets the store settings.
    pub fn store(mut self, cfg: StoreConfig) -> Self {
        self.store = cfg;
        self
    }

    /// [`init`](Vault::init) creates an audit sealing key (`audit.seal.key`: a random key wrapped
    /// under the master key) and every event the vault's log writes is sealed with it
    /// (`credvault_audit::AesGcmSealer`): the files then hold no tenant, actor, credential
    /// name or address in the clear. The chain still verifies with the audit key alone;
    /// reading events needs the master key ([`Vault::audit_events`]).
    pub fn seal_audit(mut self) -> Self {
        self.seal_audit = true;
        self
    }

    /// Reads the master key from [`MASTER_KEY_ENV`] when it is set (else `master.key`).
    pub fn master_key_from_env(mut self) -> Self {
        self.master_from_env = true;
        self
    }

    /// Ignores [`MASTER_KEY_ENV`] (the default): the vault's own `master.key` is used.
    pub fn ignore_master_env(mut self) -> Self {
        self.master_from_env = false;
        self
    }

    /// Uses `provider` as the master key (no `master.key` file is written or read).
    pub fn master_key(mut self, provider: Arc<dyn MasterKey>) -> Self {
        self.master_key = Some(provider);
        self
    }

    /// [`init`](Vault::init) makes the master key file at `path` (owner-only, its missing
    /// directories 0700), outside the vault directory, and records `file:PATH` in the vault's
    /// `master.uri`: a copy of the vault directory then carries no key. Every later open reads
    /// the key from there.
    pub fn master_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.master_key_file = Some(path.into());
        self
    }

    /// Sets how long a write waits for another process's lock.
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Uses these credential testers, e.g. an HTTP tester allowed to reach loopback:
    /// `TesterRegistry::with_defaults_allowing(&[AddressClass::Loopback])`.
    pub fn testers(mut self, testers: TesterRegistry) -> Self {
        self.testers = Some(testers);
        self
    }

    /// [`init`](Vault::init) keeps the vault in this PostgreSQL database: the directory then
    /// holds the keys, the types and `database.json`; the database holds everything else,
    /// the audit chain included (written in the transaction of each change). Other nodes use
    /// the same database with a copy of the directory.
    #[cfg(feature = "postgres")]
    pub fn database(mut self, db: DatabaseConfig) -> Self {
        self.database = Some(db);
        self
    }

    /// Pool, timeouts, TLS and password of a PostgreSQL vault.
    #[cfg(feature = "postgres")]
    pub fn postgres(mut self, options: crate::postgres::PostgresOptions) -> Self {
        self.postgres = options;
        self
    }

    fn env_key(&self) -> bool {
        self.master_key.is_none()
            && self.master_from_env
            && std::env::var_os(MASTER_KEY_ENV).is_some()
    }
}

/// The audit log's lock not had in time as [`StoreError::Busy`] (another process is using the
/// vault); any other log error as `other` makes it.
fn audit_log_error(e: LogError, other: impl FnOnce(LogError) -> StoreError) -> StoreError {
    match e {
        LogError::LockTimeout { .. } => StoreError::Busy {
            resource: "audit log",
        },
        e => other(e),
    }
}

/// The result of checking a vault's audit log against the head kept in its database.
#[derive(Debug)]
#[non_exhaustive]
pub struct AuditCheck {
    /// The log verification (hashes, links, checkpoint MACs, anchor).
    pub report: VerifyReport,
    /// The head stored in the database.
    pub stored_head: Option<AuditHead>,
    /// Problem with the stored head: the log lacks that record, or has another one there
    /// (cut short, or replaced by an older copy).
    pub head_problem: Option<String>,
    /// Problem against an anchor kept outside the vault, when one was given: the log is behind
    /// it (restored from before it), is another log, or the anchor is not this vault's.
    pub anchor_problem: Option<String>,
}

impl AuditCheck {
    /// Whether the log verified, contains the stored head, and reaches the external anchor.
    pub fn is_intact(&self) -> bool {
        self.report.is_intact() && self.head_problem.is_none() && self.anchor_problem.is_none()
    }
}

/// The result of [`Vault::verify`].
#[derive(Debug)]
#[non_exhaustive]
pub struct VaultVerification {
    /// The audit log against the head in the database.
    pub audit: AuditCheck,
    /// The rows' record MACs and the rows against the log.
    pub store: crate::StoreVerification,
}

impl VaultVerification {
    /// Whether the log is intact and nothing was found in the store.
    pub fn is_ok(&self) -> bool {
        self.audit.is_intact() && self.store.is_ok()
    }
}

/// An open vault: one directory holding a SQLite database, an audit log, a master key file
/// and an audit key file, all readable only by their owner. Zero set-up: [`Vault::init`]
/// creates it, [`Vault::open`] opens it, [`Vault::open_or_init`] does whichever is needed.
///
/// ```text
/// DIR/            mode 700
///   vault.db      SQLite database (WAL): tenants, wrapped data keys, credentials, replay
///                 guard, the audit log's head (plus vault.db-wal and vault.db-shm)
///   master.key    the local master keyring, mode 600 (absent when the key comes from
///                 CREDVAULT_MASTER_KEY or a provider)
///   audit.key     the audit log's HMAC key, mode 600
///   audit/        the hash-chained audit log: audit-NNNNNN.jsonl segments, audit.anchor,
///                 audit.lock, audit.want
///   types/        the vault's own credential types (NAME.json)
/// ```
///
/// ```
/// use credvault_store::{NewCredential, TenantId, Vault, VaultOptions};
/// let dir = tempfile::tempdir()?;
/// let vault = Vault::open_or_init(&dir.path().join("vault"), VaultOptions::default())?;
/// let acme = TenantId::new("acme")?;
/// vault.store().create_tenant(&acme, "Acme", "admin")?;
/// // A handle of its own, for a server's state or a worker thread.
/// let store = vault.store().clone();
/// let scope = store.tenant(&acme, "alice")?;
/// let info = scope.create(NewCredential::new(
///     "http_bearer_token",
///     "stripe",
///     serde_json::json!({"token": "sk_live_51Hx9aQ2eZvKYlo2C0sT"}),
/// ))?;
/// let token = scope.reveal(&info.id, &[], Some("billing"))?; // every secret field
/// assert_eq!(token.expose_secret("token"), Some("sk_live_51Hx9aQ2eZvKYlo2C0sT"));
/// vault.close()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// **Several processes.** Any number of processes (CLI invocations, programs embedding this
/// crate, a running server) may open one vault directory at once. Each write transaction
/// takes SQLite's write lock and, inside it, the audit log's lock for the append, so the
/// audit chain stays one chain in commit order; audited reads take only the audit log's lock.
/// Both waits are bounded by [`VaultOptions::lock_timeout`]; a wait that runs out fails that
/// one operation with [`StoreError::Busy`] and changes nothing. A process killed while
/// holding a lock releases it as it dies (the operating system drops its locks); a record it
/// left half-written is recovered by the next writer. The directory must be on a local file
/// system.
///
/// **Sharing.** [`store`](Self::store) lends the [`Store`]; clone it for a handle that lives
/// on its own (`Store` is a cheap, `Send + Sync + 'static` handle).
///
/// **Closing.** [`close`](Self::close) writes pending last-use times and a final audit
/// checkpoint, reporting errors. Dropping a vault without closing does the first on a best
/// effort basis and skips the checkpoint; nothing acknowledged is lost either way (the next
/// writer's checkpoint covers the records since the last one).
pub struct Vault {
    dir: PathBuf,
    store: Store,
    audit: VaultAudit,
    audit_key: AuditKey,
    sealer: Option<Arc<AesGcmSealer>>,
    master: MasterSource,
    options: VaultOptions,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("dir", &self.dir)
            .field("master", &self.master)
            .finish_non_exhaustive()
    }
}

/// Where a vault's audit records go.
enum VaultAudit {
    /// The file log in `audit/`.
    File(AuditLog),
    /// The chain in the PostgreSQL database.
    #[cfg(feature = "postgres")]
    Database(Arc<crate::postgres::PostgresStorage>),
}

fn verr(what: &'static str, path: &Path, reason: impl ToString) -> StoreError {
    StoreError::Vault {
        what,
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Creates `path` holding `bytes`, owner-only from creation whatever the umask, `O_EXCL` (an
/// existing file or a planted symlink is refused, never written through), fsynced with its
/// directory.
fn write_private(path: &Path, bytes: &[u8], what: &'static str) -> Result<(), StoreError> {
    crate::files::write_new_private(path, bytes).map_err(|e| verr(what, path, e))
}

/// Creates `dir` and missing parents owner-only (0700) from the start; an existing directory
/// is narrowed to 0700.
fn create_private_dir(dir: &Path, what: &'static str) -> Result<(), StoreError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        b.mode(0o700);
        b.create(dir).map_err(|e| verr(what, dir, e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| verr(what, dir, e))?;
    }
    #[cfg(not(unix))]
    b.create(dir).map_err(|e| verr(what, dir, e))?;
    Ok(())
}

/// Takes `file`'s exclusive lock, waiting up to `timeout` for another process to release it.
fn lock_within(
    file: &std::fs::File,
    timeout: Duration,
    resource: &'static str,
) -> Result<(), StoreError> {
    let until = std::time::Instant::now() + timeout;
    while file.try_lock().is_err() {
        if std::time::Instant::now() >= until {
            return Err(StoreError::Busy { resource });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn check_private(path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(path).map_err(|e| verr("key file", path, e))?;
        if m.permissions().mode() & 0o077 != 0 {
            return Err(verr(
                "key file",
                path,
                "is readable by group or others; chmod 600 it",
            ));
        }
    }
    let _ = path;
    Ok(())
}

impl Vault {
    /// The database file.
    pub fn db_path(dir: &Path) -> PathBuf {
        dir.join("vault.db")
    }

    /// The database settings of a PostgreSQL vault.
    pub fn database_config_path(dir: &Path) -> PathBuf {
        dir.join("database.json")
    }

    /// Whether `dir` holds a vault (SQLite or PostgreSQL).
    pub fn exists(dir: &Path) -> bool {
        Self::db_path(dir).exists() || Self::database_config_path(dir).exists()
    }

    /// The master key file.
    pub fn master_key_path(dir: &Path) -> PathBuf {
        dir.join("master.key")
    }

    /// The audit key file.
    pub fn audit_key_path(dir: &Path) -> PathBuf {
        dir.join("audit.key")
    }

    /// The audit log directory.
    pub fn audit_dir(dir: &Path) -> PathBuf {
        dir.join("audit")
    }

    /// The audit sealing key file (a vault whose log seals its events): the key wrapped under
    /// the master key, hex.
    pub fn audit_sealing_key_path(dir: &Path) -> PathBuf {
        dir.join("audit.seal.key")
    }

    /// The wrapped key in the sealing key file (owner-only), if the vault has one.
    fn read_sealing_key(dir: &Path) -> Result<Option<WrappedKey>, StoreError> {
        let p = Self::audit_sealing_key_path(dir);
        if !p.exists() {
            return Ok(None);
        }
        check_private(&p)?;
        let text = std::fs::read_to_string(&p).map_err(|e| verr("audit sealing key", &p, e))?;
        let bytes =
            hex::decode(text.trim()).map_err(|_| verr("audit sealing key", &p, "is not hex"))?;
        let wrapped = WrappedKey::parse(&bytes).map_err(|e| verr("audit sealing key", &p, e))?;
        Ok(Some(wrapped))
    }

    /// The sealer of the vault's audit log, from its sealing key file, if it has one.
    fn load_sealer(
        dir: &Path,
        master: &dyn MasterKey,
    ) -> Result<Option<Arc<AesGcmSealer>>, StoreError> {
        let Some(wrapped) = Self::read_sealing_key(dir)? else {
            return Ok(None);
        };
        let key = master
            .unwrap(&wrapped, &sealing_context()?)
            .map_err(|e| verr("audit sealing key", &Self::audit_sealing_key_path(dir), e))?;
        Ok(Some(Arc::new(AesGcmSealer::new(key.expose_secret()))))
    }

    /// Writes `wrapped` as the sealing key file, replacing it atomically.
    fn save_sealing_key(dir: &Path, wrapped: &WrappedKey) -> Result<(), StoreError> {
        let p = Self::audit_sealing_key_path(dir);
        let text = sealing_key_text(wrapped);
        let mut tmp = tempfile::Builder::new()
            .prefix(".audit.seal.key.")
            .tempfile_in(dir)
            .map_err(|e| verr("audit sealing key", &p, e))?;
        std::io::Write::write_all(&mut tmp, text.as_bytes())
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| verr("audit sealing key", &p, e))?;
        tmp.persist(&p)
            .map_err(|e| verr("audit sealing key", &p, e.error))?;
        Ok(())
    }

    /// Creates a vault in `dir` (which may exist but must not hold a vault): the directory
    /// (mode 700), a master key file unless [`MASTER_KEY_ENV`] is set, an audit key file
    /// (both mode 600), the database and the audit log.
    ///
    /// # Errors
    /// [`StoreError::Vault`] if a vault exists there or a file cannot be written.
    pub fn init(dir: &Path, options: VaultOptions) -> Result<Self, StoreError> {
        if Self::exists(dir) {
            return Err(verr("vault", dir, "already holds a vault"));
        }
        #[cfg(feature = "postgres")]
        if let Some(db) = &options.database {
            if let Some(reason) = crate::postgres::unrecordable_url(&db.url) {
                return Err(verr(
                    "database URL",
                    Path::new(&crate::postgres::redact_database_url(&db.url)),
                    reason,
                ));
            }
        }
        create_private_dir(dir, "vault directory")?;
        if options.master_key.is_none() && !options.env_key() {
            let mk = match &options.master_key_file {
                Some(p) => std::path::absolute(p).map_err(|e| verr("master key", p, e))?,
                None => Self::master_key_path(dir),
            };
            if mk.exists() {
                return Err(verr("master key", &mk, "exists already"));
            }
            if let Some(parent) = mk.parent().filter(|p| !p.exists()) {
                create_private_dir(parent, "master key directory")?;
            }
            let k = LocalKeyring::generate().map_err(|e| verr("master key", &mk, e))?;
            write_private(&mk, k.export_secret_text().as_bytes(), "master key")?;
            if options.master_key_file.is_some() {
                let line = format!("file:{}\n", mk.display());
                write_private(
                    &Self::master_uri_path(dir),
                    line.as_bytes(),
                    "master key URI",
                )?;
            }
        }
        let ak = Self::audit_key_path(dir);
        if !ak.exists() {
            let key = AuditKey::generate().map_err(|e| verr("audit key", &ak, e))?;
            let mut text = Zeroizing::new(key.to_hex().to_string());
            text.push('\n');
            write_private(&ak, text.as_bytes(), "audit key")?;
        }
        if options.seal_audit {
            let p = Self::audit_sealing_key_path(dir);
            let (master, _) = Self::load_master(dir, &options)?;
            let key = DataKey::generate().map_err(|e| verr("audit sealing key", &p, e))?;
            let wrapped = master
                .wrap(&key, &sealing_context()?)
                .map_err(|e| verr("audit sealing key", &p, e))?;
            write_private(
                &p,
                sealing_key_text(&wrapped).as_bytes(),
                "audit sealing key",
            )?;
        }
        // Last, the file that says a vault is here ([`exists`](Self::exists)): whoever sees
        // it finds the keys beside it.
        #[cfg(feature = "postgres")]
        if let Some(db) = &options.database {
            let text = serde_json::to_string_pretty(db)
                .map_err(|e| verr("database settings", &Self::database_config_path(dir), e))?;
            write_private(
                &Self::database_config_path(dir),
                text.as_bytes(),
                "database settings",
            )?;
        }
        // The database (and the WAL and shared-memory files SQLite derives from it) owner-only.
        if !Self::database_config_path(dir).exists() {
            write_private(&Self::db_path(dir), b"", "database")?;
        }
        Self::open(dir, options)
    }

    fn load_master(
        dir: &Path,
        options: &VaultOptions,
    ) -> Result<(Arc<dyn MasterKey>, MasterSource), StoreError> {
        if let Some(m) = &options.master_key {
            let id = m.provider_id().to_owned();
            return Ok((Arc::clone(m), MasterSource::Provider(id)));
        }
        if options.env_key() {
            let k = LocalKeyring::from_env(MASTER_KEY_ENV)
                .map_err(|e| verr("master key", Path::new(MASTER_KEY_ENV), e))?;
            return Ok((Arc::new(k), MasterSource::Env));
        }
        let p = Self::master_key_file_of(dir)?;
        let k = KeyFile::open(&p)?;
        Ok((Arc::new(k), MasterSource::File(p)))
    }

    /// `master.uri` in `dir`: where a vault made by another program (the CLI) records its
    /// master key. A provider URI, never a secret.
    pub fn master_uri_path(dir: &Path) -> PathBuf {
        dir.join("master.uri")
    }

    /// The vault's master key file: the one `master.uri` names (`file:PATH`), else
    /// `master.key` in `dir`. A `master.uri` naming a provider (an HSM, a KMS) is an error
    /// telling the caller to open it and pass it with [`VaultOptions::master_key`].
    fn master_key_file_of(dir: &Path) -> Result<PathBuf, StoreError> {
        let uri_path = Self::master_uri_path(dir);
        let text = match std::fs::read_to_string(&uri_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::master_key_path(dir))
            }
            Err(e) => return Err(verr("master key URI", &uri_path, e)),
        };
        let uri = text.trim_end_matches(['\n', '\r']);
        match uri.strip_prefix("file:") {
            Some(p) if !p.is_empty() && uri.len() <= 4096 => {
                Ok(PathBuf::from(p.strip_prefix("//").unwrap_or(p)))
            }
            _ => Err(verr(
                "master key",
                &uri_path,
                "is kept by a provider (an HSM, a KMS, a keychain): open it with credvault_kms::open and pass it with VaultOptions::master_key",
            )),
        }
    }

    /// Opens the vault in `dir`, or creates it there if `dir` holds none. Several processes
    /// may call it at once on a new directory: one creates the vault (under the lock file
    /// `.init.lock`, waited for up to the lock timeout) and the others open it.
    ///
    /// # Errors
    /// As [`open`](Self::open) and [`init`](Self::init); [`StoreError::Busy`] if another
    /// process held the creation lock past the timeout.
    pub fn open_or_init(dir: &Path, options: VaultOptions) -> Result<Self, StoreError> {
        if Self::exists(dir) {
            return Self::open(dir, options);
        }
        create_private_dir(dir, "vault directory")?;
        let lock_path = dir.join(".init.lock");
        let mut o = std::fs::OpenOptions::new();
        o.create(true).truncate(false).write(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let lock = o
            .open(&lock_path)
            .map_err(|e| verr("vault", &lock_path, e))?;
        lock_within(&lock, options.lock_timeout, "vault directory")?;
        // Whoever held the lock before may have created it.
        let out = if Self::exists(dir) {
            Self::open(dir, options)
        } else {
            Self::init(dir, options)
        };
        let _ = lock.unlock();
        out
    }

    /// Opens the vault in `dir`. Other processes may have it open at the same time (see
    /// [`Vault`]). The master key is checked against the vault before this returns.
    ///
    /// # Errors
    /// [`StoreError::Vault`] if there is no vault, a key file is missing or readable by
    /// others, the master key does not open the vault's data keys (naming where the key came
    /// from), the audit log has segments but no anchor, the head the database recorded has no
    /// valid tag under the audit key (edited), or the log is behind that head (cut short or
    /// replaced); [`StoreError::Busy`] if another process held
    /// a lock past the timeout; [`StoreError::Storage`].
    pub fn open(dir: &Path, options: VaultOptions) -> Result<Self, StoreError> {
        if Self::restoring(dir) {
            return Err(verr(
                "vault",
                dir,
                "a restore into this directory did not finish: run the restore again",
            ));
        }
        Self::open_unchecked(dir, options)
    }

    /// [`open`](Self::open) without the check for an unfinished restore.
    fn open_unchecked(dir: &Path, options: VaultOptions) -> Result<Self, StoreError> {
        #[cfg(feature = "postgres")]
        if Self::database_config_path(dir).exists() {
            return Self::open_postgres(dir, options);
        }
        let db = Self::db_path(dir);
        if !db.exists() {
            return Err(verr("vault", dir, "holds no vault; run `credvault init`"));
        }
        let (keyring, master) = Self::load_master(dir, &options)?;
        let sealer = Self::load_sealer(dir, &*keyring)?;
        let log_config = LogConfig::default()
            .durability(options.audit)
            .lock_timeout(options.lock_timeout);
        let akp = Self::audit_key_path(dir);
        check_private(&akp)?;
        let text =
            Zeroizing::new(std::fs::read_to_string(&akp).map_err(|e| verr("audit key", &akp, e))?);
        let audit_key = AuditKey::from_text(&text).map_err(|e| verr("audit key", &akp, e))?;
        let audit_dir = Self::audit_dir(dir);
        let storage =
            SqliteStorage::open(&db, options.sqlite)?.with_lock_timeout(options.lock_timeout)?;
        let head = storage.audit_head()?;
        let (audit, report) = AuditLog::open(
            &audit_dir,
            AuditKey::from_text(&text).map_err(|e| verr("audit key", &akp, e))?,
            match &sealer {
                Some(s) => log_config.sealed_with(s.clone()),
                None => log_config,
            },
        )
        .map_err(|e| audit_log_error(e, StoreError::AuditLog))?;
        // Checked once the log's lock was had: a log being created by another process has its
        // anchor by then.
        if !report.created && !anchor_path(&audit_dir).exists() {
            return Err(verr(
                "audit log",
                &audit_dir,
                "has records but no anchor file: it may have been replaced; refusing to open",
            ));
        }
        if let Some(h) = head {
            // The head itself: tagged under the audit key, or from before tags (switched over
            // below, once, audited).
            match h.tag {
                Some(t) if audit_key.check_head_tag(h.seq, &h.hash, &t) => {}
                Some(_) => {
                    return Err(verr(
                        "audit head",
                        &db,
                        "does not authenticate under the audit key: the database was edited",
                    ))
                }
                None if storage.heads_authenticated()? => {
                    return Err(verr(
                        "audit head",
                        &db,
                        "has lost its tag: the database was edited",
                    ))
                }
                None => {}
            }
            if report.last_seq < h.seq {
                return Err(verr(
                    "audit log",
                    &audit_dir,
                    format!(
                        "ends at record {} but the database recorded record {}: it was cut short or replaced",
                        report.last_seq, h.seq
                    ),
                ));
            }
            // The same record, not only as many: an older log with more records since is not
            // the one the database wrote to (usually found in the last segment).
            let segments =
                segment_paths(&audit_dir).map_err(|e| verr("audit log", &audit_dir, e))?;
            match find_record_hash(&segments, h.seq) {
                Ok(Some(hash)) if hash == h.hash => {}
                Ok(_) => {
                    return Err(verr(
                        "audit log",
                        &audit_dir,
                        format!(
                            "record {} is not the one the database recorded: the log was replaced",
                            h.seq
                        ),
                    ))
                }
                Err(e) => return Err(verr("audit log", &audit_dir, e)),
            }
        }
        let store = Self::finish_store(
            dir,
            Arc::new(storage),
            keyring,
            audit.clone().into(),
            &master,
            &options,
        )?;
        Ok(Self {
            dir: dir.to_owned(),
            store,
            audit: VaultAudit::File(audit),
            audit_key,
            sealer,
            master,
            options,
        })
    }

    /// The store over `storage`, checked against the master key, its rows and head
    /// authenticated if they were from before record MACs and head tags.
    fn finish_store(
        dir: &Path,
        storage: Arc<dyn Storage>,
        keyring: Arc<dyn MasterKey>,
        audit: crate::store::AuditTarget,
        master: &MasterSource,
        options: &VaultOptions,
    ) -> Result<Store, StoreError> {
        let registry = Self::load_registry(dir)?;
        let mut store = Store::new(storage, keyring, audit)
            .with_config(options.store.clone())
            .with_registry(Arc::new(registry));
        if let Some(testers) = &options.testers {
            store = store.with_testers(testers.clone());
        }
        // A wrong key fails here, naming where it came from, not at the first operation.
        // An outage or a refusal is told as the provider told it (fail closed, one line).
        store.check_master_key().map_err(|e| match e {
            StoreError::MasterKey(
                p @ (credvault_envelope::ProviderError::Unavailable { .. }
                | credvault_envelope::ProviderError::Denied { .. }),
            ) => StoreError::MasterKey(p),
            StoreError::MasterKey(_) => StoreError::Vault {
                what: "master key",
                path: master.to_string(),
                reason: "does not open this vault's data keys (a different key?)".to_owned(),
            },
            other => other,
        })?;
        // A vault from before record MACs gets them now, once (audited).
        store.authenticate_records("credvault")?;
        // A head from before head tags is tagged now, once (audited).
        store.authenticate_head("credvault")?;
        Ok(store)
    }

    /// The database settings of the vault in `dir` when it is kept in PostgreSQL, `None` for
    /// a SQLite vault (no `database.json`). Components that keep their own tables beside the
    /// vault's (the gateway's API keys) connect with them.
    ///
    /// # Errors
    /// [`StoreError::Vault`] if the file is there but cannot be read or parsed.
    #[cfg(feature = "postgres")]
    pub fn database_config(dir: &Path) -> Result<Option<DatabaseConfig>, StoreError> {
        let cfg_path = Self::database_config_path(dir);
        let text = match std::fs::read_to_string(&cfg_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(verr("database settings", &cfg_path, e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| verr("database settings", &cfg_path, e))
    }

    /// Opens a vault kept in PostgreSQL (`database.json` in `dir`).
    #[cfg(feature = "postgres")]
    fn open_postgres(dir: &Path, options: VaultOptions) -> Result<Self, StoreError> {
        let cfg_path = Self::database_config_path(dir);
        let db = Self::database_config(dir)?.ok_or_else(|| {
            verr(
                "database settings",
                &cfg_path,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })?;
        let (keyring, master) = Self::load_master(dir, &options)?;
        let sealer = Self::load_sealer(dir, &*keyring)?;
        let akp = Self::audit_key_path(dir);
        let audit_key = read_audit_key(dir)?;
        let mut log_config = LogConfig::default();
        if let Some(s) = &sealer {
            log_config = log_config.sealed_with(s.clone());
        }
        let mut pg = options.postgres.clone();
        if db.schema.is_some() {
            pg.schema.clone_from(&db.schema);
        }
        let storage = crate::postgres::PostgresStorage::open(&db.url, &pg)?.with_audit_chain(
            AuditKey::from_text(&audit_key.to_hex()).map_err(|e| verr("audit key", &akp, e))?,
            &log_config,
        )?;
        let storage = Arc::new(storage);
        if let Some(h) = storage.audit_head()? {
            let genuine = match h.tag {
                Some(t) => audit_key.check_head_tag(h.seq, &h.hash, &t),
                None => !storage.heads_authenticated()?,
            };
            if !genuine {
                return Err(verr(
                    "audit head",
                    &akp,
                    "does not authenticate under the audit key: the database was edited",
                ));
            }
            if storage.audit_record_hash(h.seq)? != Some(h.hash) {
                return Err(verr(
                    "audit chain",
                    Path::new(&crate::postgres::redact_database_url(&db.url)),
                    format!(
                        "lacks record {} or holds another one there: it was cut short or replaced",
                        h.seq
                    ),
                ));
            }
        }
        let store = Self::finish_store(
            dir,
            Arc::clone(&storage) as Arc<dyn Storage>,
            keyring,
            crate::store::AuditTarget::Storage,
            &master,
            &options,
        )?;
        Ok(Self {
            dir: dir.to_owned(),
            store,
            audit: VaultAudit::Database(storage),
            audit_key,
            sealer,
            master,
            options,
        })
    }

    /// Moves the SQLite vault in `dir` into the PostgreSQL database `db`: every row is
    /// copied verbatim (ciphertexts, wrapped keys and record MACs unchanged: nothing is
    /// decrypted), the audit log's segments move into the database and its chain continues
    /// there, all in one transaction. The vault is checked whole first and is locked against
    /// other processes while it is checked and copied (both of its write locks are held, and
    /// nothing is written to it); afterwards the
    /// directory records the database (`database.json`), `vault.db` and `audit/` are kept as
    /// `vault.db.migrated` and `audit.migrated/`, and the result is verified: the vault
    /// opens from the database, verifies whole, and holds exactly the rows that were copied.
    ///
    /// Killed at any point it can be run again: before the copy committed nothing is in the
    /// database; after, the second run finds its own copy (refusing it if the SQLite vault
    /// changed meanwhile) and finishes.
    ///
    /// # Errors
    /// [`StoreError::Vault`] if the vault does not verify, is busy, is kept in PostgreSQL
    /// already, the URL carries a password, or the database holds something else;
    /// [`StoreError::Storage`].
    #[cfg(feature = "postgres")]
    pub fn migrate_to_postgres(
        dir: &Path,
        db: DatabaseConfig,
        options: VaultOptions,
        actor: &str,
    ) -> Result<(Self, StorageMigration), StoreError> {
        use crate::postgres::{Import, Imported, PostgresStorage};
        if Self::database_config_path(dir).exists() {
            return Err(verr("vault", dir, "is kept in PostgreSQL already"));
        }
        if let Some(reason) = crate::postgres::unrecordable_url(&db.url) {
            return Err(verr(
                "database URL",
                Path::new(&crate::postgres::redact_database_url(&db.url)),
                reason,
            ));
        }
        // Both write locks, held while the vault is read and copied; nothing is written to
        // it, so a second run sees it exactly as the first did.
        let db_file = Self::db_path(dir);
        let audit_dir = Self::audit_dir(dir);
        let locks = Self::lock_sqlite(dir, &options)?;
        let (snap, audit_records) = Self::sqlite_snapshot(dir, &options, &locks)?;
        let audit_key = read_audit_key(dir)?;
        let sealer = {
            let (keyring, _) = Self::load_master(dir, &options)?;
            Self::load_sealer(dir, &*keyring)?
        };
        let mut log_config = LogConfig::default();
        if let Some(s) = &sealer {
            log_config = log_config.sealed_with(s.clone());
        }
        let writer = credvault_audit::ChainWriter::new(audit_key, &snap.chain.log_id, &log_config);
        let data = Import {
            tenants: snap.tenants,
            keys: snap.keys,
            credentials: snap.credentials,
            one_time: snap.one_time,
            records_authenticated: snap.records_authenticated,
            heads_authenticated: snap.heads_authenticated,
            audit_segments: snap.audit_segments,
            audit_tip: credvault_audit::ChainTip {
                next_seq: snap.chain.last_seq + 1,
                head: snap.chain.head,
                since_checkpoint: 0,
            },
            genesis_hash: snap.chain.genesis,
            event: credvault_audit::AuditEvent::new(
                crate::store::verify::VAULT_WIDE,
                actor,
                credvault_audit::Action::Other("storage_migrated".into()),
            ),
        };
        let mut pg = options.postgres.clone();
        if db.schema.is_some() {
            pg.schema.clone_from(&db.schema);
        }
        let target = PostgresStorage::open(&db.url, &pg)?;
        let resumed = match target.import(&data, &writer)? {
            Imported::Now => false,
            Imported::Before => {
                // Our own copy from an earlier run: only if the vault is as it was then.
                // (The last segment was stored with the checkpoint that ends it.)
                let stored = target.migrated_audit_segments()?;
                let same =
                    stored.len() == data.audit_segments.len()
                        && stored.iter().zip(&data.audit_segments).enumerate().all(
                            |(i, (s, d))| {
                                if i + 1 == stored.len() {
                                    s.starts_with(d)
                                } else {
                                    s == d
                                }
                            },
                        );
                if !same {
                    return Err(verr(
                        "vault",
                        dir,
                        "changed since an earlier run copied it into the database; migrate into an empty database or schema",
                    ));
                }
                true
            }
        };
        drop(target);

        // The directory now names the database; the SQLite files are kept beside it.
        let text = serde_json::to_string_pretty(&db)
            .map_err(|e| verr("database settings", &Self::database_config_path(dir), e))?;
        write_private(
            &Self::database_config_path(dir),
            text.as_bytes(),
            "database settings",
        )?;
        drop(locks);
        for suffix in ["", "-wal", "-shm"] {
            let from = PathBuf::from(format!("{}{suffix}", db_file.display()));
            if from.exists() {
                let to = PathBuf::from(format!("{}.migrated{suffix}", db_file.display()));
                std::fs::rename(&from, &to).map_err(|e| verr("database", &from, e))?;
            }
        }
        let kept = dir.join("audit.migrated");
        std::fs::rename(&audit_dir, &kept).map_err(|e| verr("audit log", &audit_dir, e))?;

        // Verified at the end: it opens from the database, verifies whole, holds every row.
        let vault = Self::open(dir, options)?;
        let storage = vault.store.storage();
        let mut copied = (0, 0, 0);
        for t in &data.tenants {
            copied.0 += 1;
            if storage.data_keys(&t.id)?.len()
                != data.keys.iter().filter(|k| k.tenant == t.id).count()
            {
                return Err(verr(
                    "vault",
                    dir,
                    format!("tenant {}: data keys differ after the copy", t.id),
                ));
            }
            let rows = storage.credentials(&t.id, &crate::storage::ListFilter::new())?;
            copied.2 += rows.len();
            if resumed {
                // The copy may have been used since it committed (last use, tests, new rows):
                // the audit chain was compared instead, and the whole vault verifies below.
                continue;
            }
            let mut expected: Vec<&crate::storage::CredentialRow> = data
                .credentials
                .iter()
                .filter(|c| c.tenant == t.id)
                .collect();
            expected.sort_by(|a, b| {
                (&a.name, &a.environment, a.id.as_str()).cmp(&(
                    &b.name,
                    &b.environment,
                    b.id.as_str(),
                ))
            });
            if rows.iter().collect::<Vec<_>>() != expected {
                return Err(verr(
                    "vault",
                    dir,
                    format!("tenant {}: credentials differ after the copy", t.id),
                ));
            }
        }
        copied.1 = data.keys.len();
        let check = vault.verify()?;
        if !check.is_ok() {
            let audit = &check.audit;
            return Err(verr(
                "vault",
                dir,
                format!(
                    "does not verify after the copy: audit {:?} / {:?}; {} finding(s) in the rows",
                    audit
                        .report
                        .problem
                        .as_ref()
                        .map(|p| (p.seq, p.kind, p.detail)),
                    audit.head_problem,
                    check.store.findings.len()
                ),
            ));
        }
        Ok((
            vault,
            StorageMigration {
                tenants: copied.0,
                data_keys: copied.1,
                credentials: copied.2,
                audit_records,
                resumed,
            },
        ))
    }

    /// The audit records as one segment: the file log's segments, or the database's chain.
    fn audit_bytes(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        match &self.audit {
            VaultAudit::File(_) => {
                let audit_dir = Self::audit_dir(&self.dir);
                let segments =
                    segment_paths(&audit_dir).map_err(|e| verr("audit log", &audit_dir, e))?;
                segments
                    .iter()
                    .map(|p| std::fs::read(p).map_err(|e| verr("audit log", p, e)))
                    .collect()
            }
            #[cfg(feature = "postgres")]
            VaultAudit::Database(s) => {
                let mut segments = s.migrated_audit_segments()?;
                let mut out = Vec::new();
                s.export_audit(&mut out)?;
                segments.push(out);
                Ok(segments)
            }
        }
    }

    /// Whether the vault's log seals its events ([`VaultOptions::seal_audit`]).
    pub fn seals_audit(&self) -> bool {
        self.sealer.is_some()
    }

    /// The events of the vault's own log matching `query`, sealed ones opened (the vault
    /// holds their key). Reading does not verify: see [`verify_audit`](Self::verify_audit).
    ///
    /// # Errors
    /// [`StoreError::Vault`] if the log cannot be read.
    pub fn audit_events(&self, query: &Query) -> Result<Events, StoreError> {
        let bytes = self.audit_bytes()?;
        let segments: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
        Ok(match &self.sealer {
            Some(s) => credvault_audit::read_events_opening(&segments, query, &**s),
            None => credvault_audit::read_events(&segments, query),
        })
    }

    /// The directory of the vault's own credential types.
    pub fn types_dir(dir: &Path) -> PathBuf {
        dir.join("types")
    }

    /// The built-in types plus the vault's own (`types/*.json`, in name order).
    fn load_registry(dir: &Path) -> Result<Registry, StoreError> {
        let mut registry = Registry::with_builtins();
        let tdir = Self::types_dir(dir);
        if tdir.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&tdir)
                .map_err(|e| verr("types directory", &tdir, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect();
            files.sort();
            for f in files {
                registry
                    .add_file(&f)
                    .map_err(|e| verr("credential type", &f, e))?;
            }
        }
        Ok(registry)
    }

    /// Registers a credential type definition (JSON) in the vault: it is checked against the
    /// types already there, then saved as `types/NAME.json`; the next [`open`](Self::open)
    /// loads it. Returns its name.
    ///
    /// # Errors
    /// [`StoreError::Vault`] for an invalid definition, a name already taken, or I/O.
    pub fn add_type(&self, definition: &str) -> Result<String, StoreError> {
        let mut registry = Self::load_registry(&self.dir)?;
        let def = credvault_schema::parse_definition(definition)
            .map_err(|e| verr("credential type", Path::new("<definition>"), e))?;
        let name = def.name.clone();
        if registry.get(&name).is_some() {
            return Err(verr(
                "credential type",
                Path::new(&name),
                "a type with this name exists already",
            ));
        }
        registry
            .add(def)
            .map_err(|e| verr("credential type", Path::new(&name), e))?;
        let tdir = Self::types_dir(&self.dir);
        create_private_dir(&tdir, "types directory")?;
        let path = tdir.join(format!("{name}.json"));
        write_private(&path, definition.as_bytes(), "credential type")?;
        Ok(name)
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The vault directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the master key came from.
    pub fn master_source(&self) -> &MasterSource {
        &self.master
    }

    /// The file audit log (`None` for a vault whose audit chain is in its database).
    pub fn audit_log(&self) -> Option<&AuditLog> {
        match &self.audit {
            VaultAudit::File(l) => Some(l),
            #[cfg(feature = "postgres")]
            VaultAudit::Database(_) => None,
        }
    }

    /// Whether the vault is kept in PostgreSQL (its audit chain in the database).
    pub fn is_postgres(&self) -> bool {
        !matches!(self.audit, VaultAudit::File(_))
    }

    /// Verifies the audit log (hashes, links, checkpoint MACs with the vault's audit key, the
    /// anchor) and checks that it holds the head recorded in the database.
    ///
    /// # Errors
    /// [`StoreError::Vault`] if the log cannot be read; [`StoreError::Storage`].
    pub fn verify_audit(&self) -> Result<AuditCheck, StoreError> {
        self.verify_audit_against(None)
    }

    /// [`verify_audit`](Self::verify_audit), and also against an anchor kept outside the vault
    /// ([`anchor`](Self::anchor)): a log (with its database) restored from before the anchor
    /// fails, as does an anchor that does not authenticate under this vault's audit key.
    ///
    /// # Errors
    /// As [`verify_audit`](Self::verify_audit).
    pub fn verify_audit_against(&self, anchor: Option<&Anchor>) -> Result<AuditCheck, StoreError> {
        self.store.flush()?;
        match &self.audit {
            VaultAudit::File(log) => {
                log.checkpoint().map_err(StoreError::AuditLog)?;
                verify_vault_audit(
                    &self.dir,
                    &self.audit_key,
                    self.store.storage().audit_head()?,
                    anchor,
                )
            }
            #[cfg(feature = "postgres")]
            VaultAudit::Database(_) => {
                // The chain (after the segments of a file log it continues, if it moved here),
                // exported to private files and checked as a file log: its own checkpoints
                // stand in for the file log's anchor file.
                let tmp = tempfile::tempdir_in(&self.dir)
                    .map_err(|e| verr("audit export", &self.dir, e))?;
                let mut paths = Vec::new();
                for (i, seg) in self.audit_bytes()?.iter().enumerate() {
                    let p = credvault_audit::segment_path(tmp.path(), i as u32 + 1);
                    std::fs::write(&p, seg).map_err(|e| verr("audit export", &p, e))?;
                    paths.push(p);
                }
                verify_audit_segments(
                    &paths,
                    None,
                    false,
                    &self.audit_key,
                    self.store.storage().audit_head()?,
                    anchor,
                )
            }
        }
    }

    /// Writes a checkpoint and returns the anchor for it (sequence number, hash, time, MAC'd
    /// with the audit key) for the operator to keep **outside** the vault: restoring an older
    /// vault directory (database and log together) is detected only against such an anchor
    /// (`credvault audit anchor`, then `credvault audit verify --anchor FILE`).
    ///
    /// # Errors
    /// [`StoreError::AuditLog`], [`StoreError::Vault`] if the anchor cannot be read back.
    pub fn anchor(&self) -> Result<Anchor, StoreError> {
        self.store.flush()?;
        match &self.audit {
            VaultAudit::File(log) => {
                log.checkpoint().map_err(StoreError::AuditLog)?;
                let path = anchor_path(&Self::audit_dir(&self.dir));
                Anchor::load(&path).map_err(|e| verr("audit anchor", &path, e))
            }
            #[cfg(feature = "postgres")]
            VaultAudit::Database(s) => Ok(s.checkpoint_audit()?),
        }
    }

    /// Verifies the whole vault: the audit log ([`verify_audit`](Self::verify_audit)), every
    /// row's record MAC, and the rows against the log ([`Store::verify`]). Nothing is wrong
    /// only when [`VaultVerification::is_ok`].
    ///
    /// # Errors
    /// [`StoreError::Vault`] if the log cannot be read; [`StoreError::Storage`].
    pub fn verify(&self) -> Result<VaultVerification, StoreError> {
        let audit = self.verify_audit()?;
        let events = self.audit_events(&Query::new())?;
        let events: Vec<credvault_audit::AuditEvent> =
            events.events.into_iter().map(|e| e.event).collect();
        let store = self.store.verify(&events)?;
        Ok(VaultVerification { audit, store })
    }

    /// Rotates the master key: a new keyring version becomes active (saved first, the old
    /// ones kept), every data key is re-wrapped, then versions that wrap nothing are retired
    /// and the keyring saved again. Killed at any point, every data key still unwraps; run
    /// it again to finish. Only for a master key file (a key from the environment is rotated
    /// where it is kept).
    ///
    /// # Errors
    /// [`StoreError::Unsupported`] for a master key from the environment; others.
    pub fn rotate_master(
        self,
        actor: &str,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(Self, MasterRotation, Vec<u32>), StoreError> {
        let MasterSource::File(path) = self.master.clone() else {
            return Err(StoreError::Unsupported(format!(
                "the master key comes from {MASTER_KEY_ENV}; rotate it where it is kept"
            )));
        };
        let mut keyring =
            LocalKeyring::from_file(&path).map_err(|e| verr("master key", &path, e))?;
        keyring.rotate().map_err(|e| verr("master key", &path, e))?;
        keyring
            .save_to_file(&path)
            .map_err(|e| verr("master key", &path, e))?;
        let dir = self.dir.clone();
        let options = self.options.clone();
        self.close()?;
        let vault = Self::open(&dir, options.clone())?;
        let report = vault.store.rotate_master(actor, progress)?;
        let mut keyring =
            LocalKeyring::from_file(&path).map_err(|e| verr("master key", &path, e))?;
        // The audit sealing key too, before any version it is wrapped under is retired.
        if let Some(wrapped) = Self::read_sealing_key(&dir)? {
            let rewrapped = keyring
                .rewrap(&wrapped, &sealing_context()?)
                .map_err(|e| verr("audit sealing key", &Self::audit_sealing_key_path(&dir), e))?;
            Self::save_sealing_key(&dir, &rewrapped)?;
        }
        // Retire versions that wrap nothing any more.
        let refs = vault.store.master_key_references()?;
        let active = keyring.active();
        let provider = keyring.provider_id().to_owned();
        let old: Vec<u32> = keyring.versions().filter(|v| *v != active).collect();
        let mut retired = Vec::new();
        for v in old {
            let n = refs.get(&(provider.clone(), v)).copied().unwrap_or(0);
            if n == 0 && keyring.retire(v, 0).is_ok() {
                retired.push(v);
            }
        }
        if !retired.is_empty() {
            keyring
                .save_to_file(&path)
                .map_err(|e| verr("master key", &path, e))?;
        }
        Ok((vault, report, retired))
    }

    /// Re-wraps every data key, and the audit sealing key, that the vault's provider does not
    /// hold under its active version: after a provider made a new version (a PKCS#11 object,
    /// a keychain keyring's version), or when the provider is a
    /// move from one provider to another (`credvault_kms::Migrating`). Nothing is
    /// re-encrypted; each re-wrap is a compare-and-set, audited per tenant. Killed at any
    /// point, every data key still unwraps (under the old version or the new); run it again
    /// to finish.
    ///
    /// # Errors
    /// [`StoreError::MasterKey`] when the provider fails; [`StoreError::Storage`].
    pub fn rewrap_to_active(
        &self,
        actor: &str,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<MasterRotation, StoreError> {
        let report = self.store.rotate_master(actor, progress)?;
        let master = Arc::clone(self.store.master_key());
        if let Some(wrapped) = Self::read_sealing_key(&self.dir)? {
            if needs_rewrap(&*master, &wrapped)? {
                let rewrapped = master.rewrap(&wrapped, &sealing_context()?).map_err(|e| {
                    verr(
                        "audit sealing key",
                        &Self::audit_sealing_key_path(&self.dir),
                        e,
                    )
                })?;
                Self::save_sealing_key(&self.dir, &rewrapped)?;
            }
        }
        Ok(report)
    }

    /// Flushes pending writes and closes the audit log (with a final checkpoint).
    ///
    /// Both are skipped, not failed, when another process holds the lock past the timeout:
    /// every operation was durable and audited when it returned; what is skipped is the
    /// last-use times of this handle's reads and a checkpoint that the busy writer's next one
    /// covers.
    ///
    /// # Errors
    /// [`StoreError::AuditLog`] if the log cannot be closed cleanly; [`StoreError::Storage`].
    pub fn close(self) -> Result<(), StoreError> {
        match self.store.flush() {
            Ok(()) | Err(StoreError::Busy { .. }) => {}
            Err(e) => return Err(e),
        }
        drop(self.store);
        match self.audit {
            VaultAudit::File(log) => match log.close() {
                Ok(()) | Err(LogError::LockTimeout { .. }) => Ok(()),
                Err(e) => Err(StoreError::AuditLog(e)),
            },
            // Every record is in the database already; the next checkpoint covers them.
            #[cfg(feature = "postgres")]
            VaultAudit::Database(_) => Ok(()),
        }
    }
}

/// The sealing key file's text: the wrapped key in hex, one line.
fn sealing_key_text(wrapped: &WrappedKey) -> String {
    let mut text = hex::encode(wrapped.as_bytes());
    text.push('\n');
    text
}

/// The context the audit sealing key is wrapped under.
fn sealing_context() -> Result<EncryptionContext, StoreError> {
    EncryptionContext::new()
        .with("purpose", "credvault-audit-sealing-key")
        .map_err(|e| StoreError::Invalid {
            what: "encryption context",
            reason: e.to_string(),
        })
}

/// The vault's `master.key` as a [`MasterKey`], read again whenever the file changed since it
/// was last read (size or modification time): another process may rotate the master key
/// while this one runs, and this one must then unwrap with the new version and never wrap
/// with one that the rotation retires.
struct KeyFile {
    path: PathBuf,
    provider: String,
    state: std::sync::RwLock<(LocalKeyring, Option<(std::time::SystemTime, u64)>)>,
}

fn stamp(path: &Path) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl KeyFile {
    fn open(path: &Path) -> Result<Self, StoreError> {
        let seen = stamp(path);
        let k = LocalKeyring::from_file(path).map_err(|e| verr("master key", path, e))?;
        Ok(Self {
            path: path.to_owned(),
            provider: k.provider_id().to_owned(),
            state: std::sync::RwLock::new((k, seen)),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&LocalKeyring) -> Result<T, credvault_envelope::ProviderError>,
    ) -> Result<T, credvault_envelope::ProviderError> {
        let now = stamp(&self.path);
        {
            let st = self.state.read().unwrap_or_else(|e| e.into_inner());
            if st.1 == now {
                return f(&st.0);
            }
        }
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        if st.1 != now {
            let k = LocalKeyring::from_file(&self.path).map_err(|e| {
                credvault_envelope::ProviderError::Unavailable {
                    provider: self.provider.clone(),
                    reason: format!("{}: {e}", self.path.display()),
                }
            })?;
            *st = (k, now);
        }
        f(&st.0)
    }
}

impl MasterKey for KeyFile {
    fn provider_id(&self) -> &str {
        &self.provider
    }

    fn active_version(&self) -> Result<u32, credvault_envelope::ProviderError> {
        self.with(MasterKey::active_version)
    }

    fn wrap(
        &self,
        key: &credvault_envelope::DataKey,
        ctx: &credvault_envelope::EncryptionContext,
    ) -> Result<credvault_envelope::WrappedKey, credvault_envelope::ProviderError> {
        self.with(|k| k.wrap(key, ctx))
    }

    fn unwrap(
        &self,
        wrapped: &credvault_envelope::WrappedKey,
        ctx: &credvault_envelope::EncryptionContext,
    ) -> Result<credvault_envelope::DataKey, credvault_envelope::ProviderError> {
        self.with(|k| k.unwrap(wrapped, ctx))
    }

    fn rewrap(
        &self,
        wrapped: &credvault_envelope::WrappedKey,
        ctx: &credvault_envelope::EncryptionContext,
    ) -> Result<credvault_envelope::WrappedKey, credvault_envelope::ProviderError> {
        self.with(|k| k.rewrap(wrapped, ctx))
    }
}

/// Verifies a vault's audit log given its directory, its audit key, the head its database
/// recorded (read it with [`Storage::audit_head`]) and, optionally, an anchor kept outside the
/// vault (checked in a second pass: its MAC under `key`, and that the log reaches it with the
/// same record).
///
/// # Errors
/// [`StoreError::Vault`] if the log cannot be read.
pub fn verify_vault_audit(
    dir: &Path,
    key: &AuditKey,
    stored_head: Option<AuditHead>,
    external: Option<&Anchor>,
) -> Result<AuditCheck, StoreError> {
    let audit_dir = Vault::audit_dir(dir);
    let segments = segment_paths(&audit_dir).map_err(|e| verr("audit log", &audit_dir, e))?;
    let anchor_file = anchor_path(&audit_dir);
    let anchor = if anchor_file.exists() {
        Some(Anchor::load(&anchor_file).map_err(|e| verr("audit anchor", &anchor_file, e))?)
    } else {
        None
    };
    verify_audit_segments(&segments, anchor, true, key, stored_head, external)
}

/// [`verify_vault_audit`] on these segment files, with this anchor file (required or not).
fn verify_audit_segments(
    segments: &[PathBuf],
    anchor: Option<Anchor>,
    anchor_required: bool,
    key: &AuditKey,
    stored_head: Option<AuditHead>,
    external: Option<&Anchor>,
) -> Result<AuditCheck, StoreError> {
    let audit_dir = segments
        .first()
        .and_then(|p| p.parent())
        .map_or_else(PathBuf::new, Path::to_path_buf);
    let segments = segments.to_vec();
    let report = verify_files(
        &segments,
        VerifyOptions {
            key: Some(key),
            anchor: anchor.as_ref(),
        },
    )
    .map_err(|e| verr("audit log", &audit_dir, e))?;
    let mut head_problem = None;
    if anchor_required && anchor.is_none() && !segments.is_empty() {
        head_problem = Some("the anchor file is missing".to_owned());
    }
    if let Some(h) = stored_head {
        if h.tag
            .is_some_and(|t| !key.check_head_tag(h.seq, &h.hash, &t))
        {
            head_problem = Some(format!(
                "the head the database recorded (record {}) does not authenticate under the audit key: it was edited",
                h.seq
            ));
        } else {
            // The log is read for the head's record only when the head itself is genuine.
            match find_record_hash(&segments, h.seq) {
                Ok(Some(hash)) if hash == h.hash => {}
                Ok(Some(_)) => {
                    head_problem = Some(format!(
                        "record {} differs from the one the database recorded: the log was replaced",
                        h.seq
                    ))
                }
                Ok(None) => {
                    head_problem = Some(format!(
                        "the log lacks record {}, which the database recorded: it was cut short or replaced",
                        h.seq
                    ))
                }
                Err(e) => return Err(verr("audit log", &audit_dir, e)),
            }
        }
    }
    let anchor_problem = match external {
        None => None,
        Some(a) if !a.authenticate(key) => {
            Some("the anchor does not authenticate under this vault's audit key".to_owned())
        }
        Some(a) => {
            let r = verify_files(
                &segments,
                VerifyOptions {
                    key: Some(key),
                    anchor: Some(a),
                },
            )
            .map_err(|e| verr("audit log", &audit_dir, e))?;
            r.problem.map(|p| {
                format!(
                    "against the anchor (record {}): record {}: {}: {}",
                    a.seq, p.seq, p.kind, p.detail
                )
            })
        }
    };
    Ok(AuditCheck {
        report,
        stored_head,
        head_problem,
        anchor_problem,
    })
}

/// The `hash` of the record with sequence number `seq`, scanning the segments.
fn find_record_hash(segments: &[PathBuf], seq: u64) -> std::io::Result<Option<[u8; 32]>> {
    for p in segments.iter().rev() {
        let text = std::fs::read(p)?;
        if let Some(h) = find_record_hash_in(&[&text], seq) {
            return Ok(Some(h));
        }
    }
    Ok(None)
}

/// [`find_record_hash`] in segments held in memory.
fn find_record_hash_in(segments: &[&[u8]], seq: u64) -> Option<[u8; 32]> {
    let needle = format!("\"seq\":{seq},");
    for text in segments.iter().rev() {
        for line in text.split(|b| *b == b'\n') {
            if !line.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                continue;
            }
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
                continue;
            };
            if v.get("seq").and_then(serde_json::Value::as_u64) != Some(seq) {
                continue;
            }
            let mut h = [0u8; 32];
            if let Some(s) = v.get("hash").and_then(|h| h.as_str()) {
                if hex::decode_to_slice(s, &mut h).is_ok() {
                    return Some(h);
                }
            }
        }
    }
    None
}

/// Reads a vault's audit key (for verification without opening the vault for writing).
///
/// # Errors
/// [`StoreError::Vault`].
pub fn read_audit_key(dir: &Path) -> Result<AuditKey, StoreError> {
    let p = Vault::audit_key_path(dir);
    check_private(&p)?;
    let text = Zeroizing::new(std::fs::read_to_string(&p).map_err(|e| verr("audit key", &p, e))?);
    AuditKey::from_text(&text).map_err(|e| verr("audit key", &p, e))
}
