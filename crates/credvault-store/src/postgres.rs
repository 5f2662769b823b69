//! The PostgreSQL backend: several vault processes, on one machine or many, sharing one
//! database with the guarantees the SQLite backend gives one machine.
//!
//! ```no_run
//! use std::sync::Arc;
//! use credvault_store::{PostgresOptions, PostgresStorage, Storage};
//!
//! // The password comes from PGPASSWORD or the password file, never from the URL.
//! let storage = PostgresStorage::open(
//!     "postgres://vault@db.internal/credvault?sslmode=require",
//!     &PostgresOptions::default(),
//! )?;
//! let storage: Arc<dyn Storage> = Arc::new(storage);
//! # Ok::<(), credvault_store::StorageError>(())
//! ```
//!
//! **How writes stay one at a time.** Transactions run at READ COMMITTED. Every transaction
//! that changes more than one row, or reads before it writes, first locks the one row of
//! `writer_lock` (`SELECT ... FOR UPDATE`): the equivalent of SQLite's `BEGIN IMMEDIATE`, and
//! what keeps one audit chain without forks when every node records its events inside the
//! transaction. Each statement after the lock sees everything committed before it was taken.
//! The hot one-row writes (usage reservations, the replay guard, one-time-code throttling,
//! HOTP counters) do not take it: each is one atomic statement, or a row lock on its own row.
//! Constraints carry the remaining rules across processes: a partial unique index on active
//! names, composite foreign keys from credentials to their tenant's data keys.
//!
//! **Waiting.** A lock held past the lock timeout is [`StorageError::Busy`]; a statement past
//! the statement timeout is [`StorageError::Timeout`]; a serialization failure or a broken
//! deadlock is [`StorageError::Conflict`] (nothing written; retry); a server that is down or
//! restarting, a lost connection, or a pool whose connections all stay in use past the pool
//! timeout is [`StorageError::Unavailable`]. A pooled connection that broke is replaced on the
//! next checkout, so clients reconnect by themselves after a server restart.
//!
//! **Async embedders.** The client is synchronous (the `postgres` crate, which runs its own
//! small runtime per connection). From async code call the store inside
//! `tokio::task::spawn_blocking`, as with SQLite.
//!
//! **TLS.** `sslmode=disable` connects in the clear (loopback and Unix sockets only: any
//! other host is refused); `prefer` (the default) and `require` connect through rustls (ring)
//! and verify the server's certificate and name against
//! [`PostgresOptions::ca_file`] or else the system's roots. A `prefer` that names a host
//! other than loopback is treated as `require`: a vault never falls back to the clear over a
//! network.
//!
//! **Passwords.** A password in the URL is refused ([`PostgresStorage::open`]): URLs end up in
//! configs, shells' histories and process lists. The password comes from
//! [`PostgresOptions::password`], else `PGPASSWORD`, else the password file (`PGPASSFILE` or
//! `~/.pgpass`, which must not be readable by others).

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use credvault_audit::{
    Anchor, AuditEvent, AuditKey, ChainRecord, ChainTip, ChainWriter, LogConfig,
};
use credvault_envelope::KeyId;
use postgres::config::{Host, SslMode};
use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{GenericClient, Row, Statement};
use zeroize::Zeroizing;

use crate::ids::{CredentialId, TenantId};
use crate::pgpass::{lookup, PgpassQuery, MAX_PGPASS_LEN};
use crate::storage::codec::{check_version, corrupt, json, key_id, to_i64, to_u64};
use crate::storage::{
    AuditChain, AuditHead, CredentialRow, DataKeyRow, Hook, HookError, KeyState, ListFilter,
    NoChain, OtpFailures, OtpThrottle, RecordMacs, Reseal, RowGuard, Storage, StorageError,
    TenantRow, TestRecord,
};

/// The schema, one entry per version, numbered as the SQLite backend's (the same rules at each
/// version). Never edit a landed migration: add one.
const MIGRATIONS: &[&str] = &[
    // 1: tenants, data keys, credentials, replay guard, metadata; the writer lock row.
    // Text keys and names use the "C" collation, so that order (a rotation's cursor, a list)
    // is byte order, as in SQLite, whatever the database's locale.
    r#"CREATE TABLE tenants (
        id TEXT COLLATE "C" PRIMARY KEY,
        name TEXT NOT NULL,
        created_at BIGINT NOT NULL
     );
     CREATE TABLE data_keys (
        tenant TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
        key_id BYTEA NOT NULL CHECK (length(key_id) = 16),
        wrapped BYTEA NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('active', 'retiring')),
        usage BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (tenant, key_id)
     );
     CREATE TABLE credentials (
        tenant TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
        id TEXT COLLATE "C" NOT NULL,
        name TEXT COLLATE "C" NOT NULL,
        type TEXT COLLATE "C" NOT NULL,
        environment TEXT COLLATE "C" NOT NULL,
        description TEXT NOT NULL,
        tags TEXT NOT NULL,
        is_active BOOLEAN NOT NULL,
        expires_at BIGINT,
        created_by TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        version BIGINT NOT NULL,
        last_used_at BIGINT,
        last_tested BIGINT,
        test_status TEXT,
        test_message TEXT,
        public TEXT NOT NULL,
        secret_fields TEXT NOT NULL,
        key_id BYTEA NOT NULL,
        secret BYTEA NOT NULL,
        PRIMARY KEY (tenant, id),
        FOREIGN KEY (tenant, key_id) REFERENCES data_keys(tenant, key_id)
     );
     CREATE UNIQUE INDEX credentials_active_name
        ON credentials(tenant, name, environment) WHERE is_active;
     CREATE TABLE replay_guard (
        key TEXT COLLATE "C" PRIMARY KEY,
        step BIGINT NOT NULL,
        retain_until BIGINT NOT NULL
     );
     CREATE TABLE vault_meta (
        key TEXT COLLATE "C" PRIMARY KEY,
        value TEXT NOT NULL
     );
     CREATE TABLE writer_lock (id INTEGER PRIMARY KEY CHECK (id = 1));
     INSERT INTO writer_lock (id) VALUES (1);"#,
    // 2: lookups by name see inactive rows too, which the partial unique index leaves out.
    "CREATE INDEX credentials_name ON credentials(tenant, name, environment);",
    // 3: record MACs. A database with no data key yet starts authenticated.
    "ALTER TABLE credentials ADD COLUMN mac BYTEA NOT NULL DEFAULT '\\x';
     ALTER TABLE data_keys ADD COLUMN mac BYTEA NOT NULL DEFAULT '\\x';
     INSERT INTO vault_meta (key, value)
        SELECT 'records_authenticated', '1' WHERE NOT EXISTS (SELECT 1 FROM data_keys);",
    // 4: one-time-code throttling (RFC 4226 §7.3), shared by every node.
    r#"CREATE TABLE otp_throttle (
        key TEXT COLLATE "C" PRIMARY KEY,
        window_start BIGINT NOT NULL,
        failures BIGINT NOT NULL,
        locked_until BIGINT NOT NULL
     );"#,
    // 5: audit heads carry a tag under the audit key. A database with no head yet starts so.
    "INSERT INTO vault_meta (key, value)
        SELECT 'heads_authenticated', '1'
        WHERE NOT EXISTS (SELECT 1 FROM vault_meta WHERE key = 'audit_head');",
    // 6: reveal policies set per credential.
    "ALTER TABLE credentials ADD COLUMN reveal TEXT NOT NULL DEFAULT '{}';",
    // 7: HOTP counters, advanced atomically by every node.
    r#"CREATE TABLE hotp_counters (
        key TEXT COLLATE "C" PRIMARY KEY,
        next BIGINT NOT NULL CHECK (next >= 0)
     );"#,
    // 8 (PostgreSQL only so far): the audit chain, written in the transaction of the change
    // each record describes. Append-only: a trigger refuses UPDATE, DELETE and TRUNCATE (the
    // vault's role should also lack those privileges; see docs/postgres.md).
    // The chain's tip and the audit head live on the writer lock row: the statement that
    // takes the lock returns them as they are once it holds it.
    r#"CREATE TABLE audit_log (
        seq BIGINT PRIMARY KEY CHECK (seq >= 0),
        kind TEXT NOT NULL,
        line BYTEA NOT NULL
     );
     ALTER TABLE writer_lock ADD COLUMN audit_tip TEXT;
     ALTER TABLE writer_lock ADD COLUMN audit_head TEXT;
     UPDATE writer_lock SET audit_head = (SELECT value FROM vault_meta WHERE key = 'audit_head');
     DELETE FROM vault_meta WHERE key = 'audit_head';
     CREATE FUNCTION credvault_audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $f$
     BEGIN
        RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'insufficient_privilege';
     END $f$;
     CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
        FOR EACH ROW EXECUTE FUNCTION credvault_audit_log_append_only();
     CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
        FOR EACH STATEMENT EXECUTE FUNCTION credvault_audit_log_append_only();"#,
    // 9 (PostgreSQL only): the segment files of a file audit log whose vault moved here
    // (`credvault migrate-storage`), verbatim; the chain in `audit_log` continues them.
    r#"CREATE TABLE audit_segments (
        segment INTEGER PRIMARY KEY CHECK (segment >= 1),
        bytes BYTEA NOT NULL
     );
     CREATE TRIGGER audit_segments_append_only BEFORE UPDATE OR DELETE ON audit_segments
        FOR EACH ROW EXECUTE FUNCTION credvault_audit_log_append_only();
     CREATE TRIGGER audit_segments_no_truncate BEFORE TRUNCATE ON audit_segments
        FOR EACH STATEMENT EXECUTE FUNCTION credvault_audit_log_append_only();"#,
];

/// The advisory lock migrations run under (any constant; "credvault" in ASCII).
const MIGRATION_LOCK: i64 = 0x6372_6564_7661_756c;

/// Settings of a [`PostgresStorage`].
#[derive(Clone)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// The most connections the pool opens (default 8).
    pub pool_size: u32,
    /// How long a call waits for a free pooled connection, or for a new one to connect,
    /// before [`StorageError::Unavailable`] (default 5 s).
    pub pool_timeout: Duration,
    /// How long a statement waits for a row lock another process holds before
    /// [`StorageError::Busy`] (default 5 s, as SQLite's lock timeout).
    pub lock_timeout: Duration,
    /// How long a statement may run before the server cancels it: [`StorageError::Timeout`]
    /// (default 30 s).
    pub statement_timeout: Duration,
    /// The schema the vault's tables live in (default: the role's `search_path`, usually
    /// `public`). Created if missing. Letters, digits and `_` only.
    pub schema: Option<String>,
    /// PEM file of the certificate authorities that may sign the server's certificate
    /// (default: the system's roots).
    pub ca_file: Option<PathBuf>,
    /// The password (default: `PGPASSWORD`, then the password file).
    pub password: Option<Arc<Zeroizing<String>>>,
    /// The `application_name` the server shows in `pg_stat_activity` (default `credvault`).
    pub application_name: String,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("pool_size", &self.pool_size)
            .field("pool_timeout", &self.pool_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("schema", &self.schema)
            .field("ca_file", &self.ca_file)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("application_name", &self.application_name)
            .finish()
    }
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            pool_size: 8,
            pool_timeout: Duration::from_secs(5),
            lock_timeout: crate::sqlite::DEFAULT_LOCK_TIMEOUT,
            statement_timeout: Duration::from_secs(30),
            schema: None,
            ca_file: None,
            password: None,
            application_name: "credvault".to_owned(),
        }
    }
}

impl PostgresOptions {
    /// Sets the pool size (at least 1).
    pub fn pool_size(mut self, n: u32) -> Self {
        self.pool_size = n.max(1);
        self
    }

    /// Sets the pool timeout.
    pub fn pool_timeout(mut self, t: Duration) -> Self {
        self.pool_timeout = t;
        self
    }

    /// Sets the lock timeout.
    pub fn lock_timeout(mut self, t: Duration) -> Self {
        self.lock_timeout = t;
        self
    }

    /// Sets the statement timeout.
    pub fn statement_timeout(mut self, t: Duration) -> Self {
        self.statement_timeout = t;
        self
    }

    /// Puts the vault's tables in `schema`.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Verifies the server against the authorities in this PEM file.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Uses this password.
    pub fn password(mut self, password: Zeroizing<String>) -> Self {
        self.password = Some(Arc::new(password));
        self
    }
}

/// A pooled connection with the statements prepared on it.
struct PgConn {
    client: postgres::Client,
    stmts: HashMap<&'static str, Statement>,
}

/// A client (or transaction) with its connection's statement cache.
struct Db<'a, C: GenericClient> {
    c: &'a mut C,
    stmts: &'a mut HashMap<&'static str, Statement>,
    /// In a write transaction: the chain tip and audit head as the writer lock returned them
    /// (and as this transaction changed them since).
    locked: Option<Locked>,
}

/// What the writer lock row holds.
#[derive(Clone, Debug, Default)]
struct Locked {
    tip: Option<ChainTip>,
    head: Option<AuditHead>,
}

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

impl<C: GenericClient> Db<'_, C> {
    fn st(&mut self, sql: &'static str) -> Result<Statement, StorageError> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        let s = self.c.prepare(sql).map_err(pe)?;
        self.stmts.insert(sql, s.clone());
        Ok(s)
    }

    fn query(&mut self, sql: &'static str, p: Params<'_>) -> Result<Vec<Row>, StorageError> {
        let s = self.st(sql)?;
        self.c.query(&s, p).map_err(pe)
    }

    fn query_opt(&mut self, sql: &'static str, p: Params<'_>) -> Result<Option<Row>, StorageError> {
        let s = self.st(sql)?;
        self.c.query_opt(&s, p).map_err(pe)
    }

    fn execute(&mut self, sql: &'static str, p: Params<'_>) -> Result<u64, StorageError> {
        let s = self.st(sql)?;
        self.c.execute(&s, p).map_err(pe)
    }
}

/// How the pool makes connections.
struct Manager {
    config: postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    setup: String,
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = postgres::Error;

    fn connect(&self) -> Result<PgConn, postgres::Error> {
        let mut client = match &self.tls {
            Some(tls) => self.config.connect(tls.clone())?,
            None => self.config.connect(postgres::NoTls)?,
        };
        client.batch_execute(&self.setup)?;
        Ok(PgConn {
            client,
            stmts: HashMap::new(),
        })
    }

    fn is_valid(&self, conn: &mut PgConn) -> Result<(), postgres::Error> {
        conn.client.simple_query("").map(|_| ())
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.client.is_closed()
    }
}

impl Manager {
    /// The connection settings of `url` with the vault's checks (see
    /// [`PostgresStorage::open`]'s errors).
    fn new(url: &str, options: &PostgresOptions) -> Result<Self, StorageError> {
        let mut config = postgres::Config::from_str(url)
            .map_err(|_| config_error("not a PostgreSQL connection URL or key=value string"))?;
        if config.get_password().is_some() {
            return Err(config_error(
                "carries a password; give it in PGPASSWORD or the password file instead",
            ));
        }
        if config.get_hosts().is_empty() {
            config.host("localhost");
        }
        let local = config.get_hosts().iter().all(is_local);
        let tls = match config.get_ssl_mode() {
            SslMode::Disable if !local => {
                return Err(config_error(
                    "sslmode=disable is refused for a host other than loopback",
                ))
            }
            SslMode::Disable => None,
            mode => {
                if !local {
                    config.ssl_mode(SslMode::Require);
                }
                match tls_config(options.ca_file.as_ref()) {
                    Ok(c) => Some(tokio_postgres_rustls::MakeRustlsConnect::new(c)),
                    // On loopback a `prefer` without any authority to verify with connects in
                    // the clear, as it would to a server without TLS.
                    Err(_) if local && mode == SslMode::Prefer && options.ca_file.is_none() => None,
                    Err(e) => return Err(e),
                }
            }
        };
        if let Some(p) = find_password(&config, options.password.as_deref())? {
            config.password(p.as_bytes());
        }
        config.connect_timeout(options.pool_timeout);
        config.application_name(&options.application_name);
        let mut setup = format!(
            "SET lock_timeout = {}; SET statement_timeout = {};
             SET idle_in_transaction_session_timeout = {};
             SET default_transaction_isolation = 'read committed';",
            options.lock_timeout.as_millis().max(1),
            options.statement_timeout.as_millis().max(1),
            // A client that stopped mid-transaction (holding the writer lock) is cut off.
            (options.statement_timeout.as_millis().max(1)).saturating_mul(2),
        );
        if let Some(schema) = &options.schema {
            if !valid_schema(schema) {
                return Err(config_error(
                    "schema: letters, digits and '_' only, not starting with a digit, at most 63",
                ));
            }
            setup.push_str(&format!(" SET search_path TO \"{schema}\";"));
        }
        Ok(Self { config, tls, setup })
    }
}

/// The `postgres` client crate this backend is built on, for [`connect_one`]'s callers.
pub use postgres as client;

/// One connection to the database `url` names, made with the checks and settings the vault's
/// own connections get: no password in the URL, TLS (verified) for any host but loopback, the
/// password from the options, `PGPASSWORD` or the password file, the CA file, the lock and
/// statement timeouts, and [`PostgresOptions::schema`] on the search path. For a component
/// that keeps its own tables beside a vault's, such as the gateway's API keys.
///
/// # Errors
/// As [`PostgresStorage::open`].
pub fn connect_one(url: &str, options: &PostgresOptions) -> Result<postgres::Client, StorageError> {
    let m = Manager::new(url, options)?;
    r2d2::ManageConnection::connect(&m)
        .map(|c| c.client)
        .map_err(pe)
}

/// The [`StorageError`] a client error is, classified as the backend's own are (busy,
/// conflict, timeout, unavailable, or a backend error naming the server's message and
/// SQLSTATE, never the statement's parameters).
pub fn classify(e: postgres::Error) -> StorageError {
    pe(e)
}

/// The PostgreSQL backend. See the [module docs](self) for how several processes share one
/// database, the timeouts, TLS and passwords.
pub struct PostgresStorage {
    pool: r2d2::Pool<Manager>,
    pool_size: u32,
    pool_timeout: Duration,
    chain: Option<ChainWriter>,
    /// Standalone appends waiting to be written (group commit), and the chain tip as this
    /// process last wrote or read it. See [`append_audit`](Storage::append_audit).
    appends: Mutex<Appends>,
    /// Signalled when a batch of standalone appends is written.
    appended: Condvar,
    /// Signalled when a standalone append is queued (for a writer collecting its batch).
    arrived: Condvar,
    /// Tenant rows read so far (they never change): see [`tenant`](Storage::tenant).
    tenants: Mutex<HashMap<TenantId, TenantRow>>,
    /// Credential rows read for accesses, which a guarded append checks are still current:
    /// see [`credential_for_access`](Storage::credential_for_access).
    kept: Mutex<HashMap<(TenantId, CredentialId), Arc<CredentialRow>>>,
}

/// How many tenant rows a storage keeps in memory.
const TENANT_CACHE: usize = 65_536;

/// Standalone appends of one process: one writes a batch while the others queue theirs.
#[derive(Default)]
struct Appends {
    queue: Vec<Pending>,
    next_ticket: u64,
    done: HashMap<u64, Result<AuditHead, Arc<StorageError>>>,
    writing: bool,
    /// The chain tip as this process last wrote or read it; `None` when unknown.
    tip: Option<ChainTip>,
    /// When each thread that appended lately last did: how many callers a batch can expect.
    callers: HashMap<std::thread::ThreadId, Instant>,
}

/// A thread that has not appended for this long is not expected in the next batch.
const CALLER_WINDOW: Duration = Duration::from_millis(2);

/// How long a batch's writer waits at most for the other callers it expects (PostgreSQL's
/// own `commit_delay`, with `commit_siblings` counted per process). A single caller never
/// waits.
const COLLECT_MAX: Duration = Duration::from_micros(100);

/// A caller's part of a batch: its records, for a create its row, for a guarded append the
/// rows that must still be as read.
struct Pending {
    ticket: u64,
    events: Vec<AuditEvent>,
    row: Option<CredentialRow>,
    guards: Vec<RowGuard>,
}

/// A batch's error, for each caller whose records were in it (the variants a caller acts on
/// kept; the others as their text).
fn echo(e: &StorageError) -> StorageError {
    match e {
        StorageError::Busy { resource } => StorageError::Busy { resource },
        StorageError::Conflict { resource } => StorageError::Conflict { resource },
        StorageError::Timeout { resource } => StorageError::Timeout { resource },
        StorageError::Unavailable { resource, reason } => StorageError::Unavailable {
            resource,
            reason: reason.clone(),
        },
        other => StorageError::Backend(other.to_string()),
    }
}

/// How many times a standalone append tries its compare-and-set before it takes the writer
/// lock (another node appending at the same moment each time).
const APPEND_ATTEMPTS: usize = 4;

impl std::fmt::Debug for PostgresStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStorage")
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

/// Maps a client error to the store's typed errors, never carrying a row's value (the server's
/// detail line, which may quote one, is left out).
fn pe(e: postgres::Error) -> StorageError {
    let resource = "database";
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        return if *code == SqlState::LOCK_NOT_AVAILABLE {
            StorageError::Busy { resource }
        } else if *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
        {
            StorageError::Conflict { resource }
        } else if *code == SqlState::QUERY_CANCELED {
            StorageError::Timeout { resource }
        } else if [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
        ]
        .contains(code)
        {
            StorageError::Unavailable {
                resource,
                reason: format!("{} (SQLSTATE {})", db.message(), code.code()),
            }
        } else {
            StorageError::Backend(format!("{} (SQLSTATE {})", db.message(), code.code()))
        };
    }
    if e.is_closed() || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>()) {
        return StorageError::Unavailable {
            resource,
            reason: format!("the connection failed or was lost: {e}"),
        };
    }
    StorageError::Backend(e.to_string())
}

fn constraint(e: &postgres::Error) -> Option<(&SqlState, &str)> {
    let db = e.as_db_error()?;
    Some((db.code(), db.constraint().unwrap_or("")))
}

/// A unique violation on the active-name index is [`StorageError::NameTaken`]; a foreign-key
/// violation (a key the tenant does not have) is [`StorageError::UnknownKey`].
fn map_row_error(e: postgres::Error, row: &CredentialRow) -> StorageError {
    match constraint(&e) {
        Some((c, "credentials_active_name")) if *c == SqlState::UNIQUE_VIOLATION => {
            StorageError::NameTaken {
                name: row.name.clone(),
                environment: row.environment.clone(),
            }
        }
        Some((c, _)) if *c == SqlState::FOREIGN_KEY_VIOLATION => {
            StorageError::UnknownKey { key_id: row.key_id }
        }
        _ => pe(e),
    }
}

fn get<'r, T: postgres::types::FromSql<'r>>(
    r: &'r Row,
    i: usize,
    table: &'static str,
) -> Result<T, StorageError> {
    r.try_get(i)
        .map_err(|_| corrupt(table, format!("column {i} has an unexpected type")))
}

macro_rules! cred_cols {
    () => {
        "tenant, id, name, type, environment, description, tags, is_active, expires_at, \
         created_by, created_at, updated_at, version, last_used_at, last_tested, test_status, \
         test_message, public, secret_fields, key_id, secret, mac, reveal"
    };
}

fn cred_from_row(r: &Row) -> Result<CredentialRow, StorageError> {
    const T: &str = "credentials";
    let s = |i: usize| get::<String>(r, i, T);
    let tags: Vec<String> = serde_json::from_str(&s(6)?).map_err(|_| corrupt(T, "tags"))?;
    let secret_fields: Vec<String> =
        serde_json::from_str(&s(18)?).map_err(|_| corrupt(T, "secret_fields"))?;
    Ok(CredentialRow {
        tenant: TenantId::new(s(0)?).map_err(|_| corrupt(T, "tenant"))?,
        id: CredentialId::parse(&s(1)?).map_err(|_| corrupt(T, "id"))?,
        name: s(2)?,
        type_name: s(3)?,
        environment: s(4)?,
        description: s(5)?,
        tags,
        is_active: get(r, 7, T)?,
        expires_at: get(r, 8, T)?,
        created_by: s(9)?,
        created_at: get(r, 10, T)?,
        updated_at: get(r, 11, T)?,
        version: to_u64(get(r, 12, T)?),
        last_used_at: get(r, 13, T)?,
        last_tested: get(r, 14, T)?,
        test_status: get(r, 15, T)?,
        test_message: get(r, 16, T)?,
        public: s(17)?,
        secret_fields,
        key_id: key_id(get::<&[u8]>(r, 19, T)?, T)?,
        secret: get(r, 20, T)?,
        mac: get(r, 21, T)?,
        reveal: serde_json::from_str(&s(22)?).map_err(|_| corrupt(T, "reveal"))?,
    })
}

fn key_from_row(r: &Row) -> Result<DataKeyRow, StorageError> {
    const T: &str = "data_keys";
    Ok(DataKeyRow {
        tenant: TenantId::new(get::<String>(r, 0, T)?).map_err(|_| corrupt(T, "tenant"))?,
        key_id: key_id(get::<&[u8]>(r, 1, T)?, T)?,
        wrapped: get(r, 2, T)?,
        state: KeyState::parse(get::<&str>(r, 3, T)?).ok_or_else(|| corrupt(T, "state"))?,
        usage: to_u64(get(r, 4, T)?),
        created_at: get(r, 5, T)?,
        mac: get(r, 6, T)?,
    })
}

/// Is `host` a loopback name or address (or a Unix socket)?
fn is_local(host: &Host) -> bool {
    match host {
        Host::Unix(_) => true,
        Host::Tcp(h) => {
            h == "localhost" || h.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
        }
    }
}

fn valid_schema(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

fn config_error(reason: impl Into<String>) -> StorageError {
    StorageError::Backend(format!("database URL: {}", reason.into()))
}

/// The password for `config`: given, else `PGPASSWORD`, else the password file.
fn find_password(
    config: &postgres::Config,
    given: Option<&Zeroizing<String>>,
) -> Result<Option<Zeroizing<String>>, StorageError> {
    if let Some(p) = given {
        return Ok(Some(p.clone()));
    }
    if let Ok(p) = std::env::var("PGPASSWORD") {
        return Ok(Some(Zeroizing::new(p)));
    }
    let path = match std::env::var_os("PGPASSFILE") {
        Some(p) => PathBuf::from(p),
        None => match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h).join(".pgpass"),
            None => return Ok(None),
        },
    };
    let Ok(meta) = std::fs::metadata(&path) else {
        return Ok(None);
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(config_error(format!(
                "the password file {} is readable by others (chmod 600 it)",
                path.display()
            )));
        }
    }
    if meta.len() > MAX_PGPASS_LEN as u64 {
        return Err(config_error(format!(
            "the password file {} is larger than {MAX_PGPASS_LEN} bytes",
            path.display()
        )));
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(&path)
            .map_err(|e| config_error(format!("password file {}: {e}", path.display())))?,
    );
    let user = config.get_user().unwrap_or("");
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    Ok(lookup(
        &text,
        &PgpassQuery {
            host: &host,
            port: config.get_ports().first().copied().unwrap_or(5432),
            database: config.get_dbname().unwrap_or(user),
            user,
        },
    ))
}

/// Why a connection URL or `key=value` string may not be recorded in a vault's settings: it
/// does not parse, or it carries a password.
pub(crate) fn unrecordable_url(url: &str) -> Option<&'static str> {
    match postgres::Config::from_str(url) {
        Err(_) => Some("is not a PostgreSQL connection URL or key=value string"),
        Ok(c) if c.get_password().is_some() => {
            Some("carries a password; give it in PGPASSWORD or the password file instead")
        }
        Ok(_) => None,
    }
}

/// `url` with any password taken out, for logs and configs. A URL that does not parse is
/// replaced by a placeholder (it might carry a password where a parser would not look).
pub fn redact_database_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(None);
            u.to_string()
        }
        Ok(u) if u.query_pairs().any(|(k, _)| k == "password") => {
            let mut clean = u.clone();
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .filter(|(k, _)| k != "password")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            clean.query_pairs_mut().clear().extend_pairs(pairs);
            clean.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparseable database URL>".to_owned(),
    }
}

pub(crate) fn tls_config(ca_file: Option<&PathBuf>) -> Result<rustls::ClientConfig, StorageError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| config_error(format!("CA file {}: {e}", path.display())))?;
            for c in certs {
                let c = c.map_err(|e| config_error(format!("CA file {}: {e}", path.display())))?;
                roots
                    .add(c)
                    .map_err(|e| config_error(format!("CA file {}: {e}", path.display())))?;
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
        }
    }
    if roots.is_empty() {
        return Err(config_error(
            "no certificate authority to verify the server with (give a CA file)",
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl PostgresStorage {
    /// Connects to the database `url` names (a `postgres://` URL or a `key=value` string) and
    /// brings its schema up to date, under an advisory lock so that nodes starting at once
    /// migrate it once.
    ///
    /// # Errors
    /// [`StorageError::Backend`] naming the problem if the URL does not parse, carries a
    /// password, asks for the clear over a network, the password file is readable by others,
    /// the CA file is unusable, or the schema is newer than this build;
    /// [`StorageError::Unavailable`] if no connection could be made within the pool timeout.
    pub fn open(url: &str, options: &PostgresOptions) -> Result<Self, StorageError> {
        let Manager { config, tls, setup } = Manager::new(url, options)?;
        let pool = r2d2::Pool::builder()
            .max_size(options.pool_size.max(1))
            .min_idle(Some(0))
            // No round trip to test a connection on every checkout: one that broke fails its
            // call (typed), is dropped on return, and reads are retried once on a new one.
            .test_on_check_out(false)
            .connection_timeout(options.pool_timeout)
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(Manager { config, tls, setup });
        let s = Self {
            pool,
            pool_size: options.pool_size.max(1),
            pool_timeout: options.pool_timeout,
            chain: None,
            appends: Mutex::new(Appends::default()),
            appended: Condvar::new(),
            arrived: Condvar::new(),
            tenants: Mutex::new(HashMap::new()),
            kept: Mutex::new(HashMap::new()),
        };
        s.migrate(options.schema.as_deref())?;
        Ok(s)
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<Manager>, StorageError> {
        self.pool.get().map_err(|e| {
            let state = self.pool.state();
            if state.connections >= self.pool_size && state.idle_connections == 0 {
                StorageError::Unavailable {
                    resource: "connection pool",
                    reason: format!(
                        "all {} connections stayed in use for {:?}",
                        self.pool_size, self.pool_timeout
                    ),
                }
            } else {
                StorageError::Unavailable {
                    resource: "database",
                    reason: format!("no connection within {:?}: {e}", self.pool_timeout),
                }
            }
        })
    }

    fn migrate(&self, schema: Option<&str>) -> Result<(), StorageError> {
        let mut conn = self.conn()?;
        let c = &mut conn.client;
        c.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .map_err(pe)?;
        let out = Self::migrate_locked(c, schema);
        let unlock = c
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .map_err(pe);
        out.and(unlock.map(|_| ()))
    }

    fn migrate_locked(c: &mut postgres::Client, schema: Option<&str>) -> Result<(), StorageError> {
        // Created only when missing: a node whose role may not create anything (the
        // documented grants) opens a database that is up to date.
        if let Some(schema) = schema {
            let exists = c
                .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
                .map_err(pe)?
                .is_some();
            if !exists {
                c.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                    .map_err(pe)?;
            }
        }
        let table: Option<String> = c
            .query_one("SELECT to_regclass('schema_migrations')::text", &[])
            .map_err(pe)?
            .get(0);
        if table.is_none() {
            c.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                    version INTEGER PRIMARY KEY,
                    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
                 )",
            )
            .map_err(pe)?;
        }
        let version = Self::version_on(c)?;
        let known = MIGRATIONS.len() as u32;
        if version > known {
            return Err(StorageError::Backend(format!(
                "database schema version {version} is newer than this build ({known})"
            )));
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let mut tx = c.transaction().map_err(pe)?;
            tx.batch_execute(m).map_err(pe)?;
            let v = i32::try_from(i + 1).unwrap_or(i32::MAX);
            tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[&v])
                .map_err(pe)?;
            tx.commit().map_err(pe)?;
        }
        Ok(())
    }

    fn version_on(c: &mut postgres::Client) -> Result<u32, StorageError> {
        let v: Option<i32> = c
            .query_one("SELECT max(version) FROM schema_migrations", &[])
            .map_err(pe)?
            .get(0);
        Ok(v.and_then(|v| u32::try_from(v).ok()).unwrap_or(0))
    }

    /// The schema version of the database.
    ///
    /// # Errors
    /// [`StorageError`].
    pub fn schema_version(&self) -> Result<u32, StorageError> {
        Self::version_on(&mut self.conn()?.client)
    }

    /// Keeps the vault's audit chain in this database (`audit_log`), under `key`, checkpointed,
    /// sealed and with keyed fields as `config` says: every event is then written in the
    /// transaction of the change it describes ([`AuditTarget::Storage`]), and every node
    /// sharing the database appends to one chain. The first call on a database starts the
    /// chain (a genesis record and a checkpoint); later calls, from any node, continue it.
    ///
    /// [`AuditTarget::Storage`]: crate::AuditTarget::Storage
    ///
    /// # Errors
    /// [`StorageError`].
    pub fn with_audit_chain(
        mut self,
        key: AuditKey,
        config: &LogConfig,
    ) -> Result<Self, StorageError> {
        let candidate = ChainWriter::new_log_id()
            .map_err(|e| StorageError::Backend(format!("audit chain: {e}")))?;
        let id = self.write(|db| {
            db.execute(
                "INSERT INTO vault_meta (key, value) VALUES ('audit_log_id', $1)
                 ON CONFLICT (key) DO NOTHING",
                &[&candidate],
            )?;
            let r = db.query_opt(
                "SELECT value FROM vault_meta WHERE key = 'audit_log_id'",
                &[],
            )?;
            match r {
                Some(r) => get::<String>(&r, 0, "vault_meta"),
                None => Err(corrupt("vault_meta", "audit log id")),
            }
        })?;
        let writer = ChainWriter::new(key, &id, config);
        self.write(|db| {
            if read_tip(db)?.is_some() {
                // A node joining an existing chain must hold the chain's key: the genesis
                // record's head tag, stored when the chain began, authenticates under it.
                let stored = db
                    .query_opt(
                        "SELECT value FROM vault_meta WHERE key = 'audit_genesis_tag'",
                        &[],
                    )?
                    .map(|r| get::<String>(&r, 0, "vault_meta"))
                    .transpose()?;
                let genesis = match meta(db, "audit_genesis_hash")? {
                    Some(h) => {
                        let mut out = [0u8; 32];
                        hex::decode_to_slice(&h, &mut out)
                            .map_err(|_| corrupt("vault_meta", "audit genesis hash"))?;
                        Some(out)
                    }
                    None => record_hash(db, 0)?,
                };
                return match (stored, genesis) {
                    (Some(t), Some(h)) if t == hex::encode(writer.head_tag(0, &h)) => Ok(()),
                    _ => Err(StorageError::Backend(
                        "the audit key is not the one this database's audit chain was started with (copy audit.key from the first node)"
                            .into(),
                    )),
                };
            }
            let g = writer
                .genesis()
                .map_err(|e| StorageError::Backend(format!("audit chain: {e}")))?;
            store_records(db, &g.records, &g.tip, None)?;
            set_genesis(db, &writer, &g.records[0].hash)
        })?;
        self.chain = Some(writer);
        Ok(self)
    }

    /// Appends a checkpoint to the audit chain (always, even with no event since the last)
    /// and returns its anchor, for the operator to keep outside the database.
    ///
    /// # Errors
    /// [`StorageError::Hook`] if this storage keeps no chain; [`StorageError`].
    pub fn checkpoint_audit(&self) -> Result<Anchor, StorageError> {
        let Some(w) = &self.chain else {
            return Err(StorageError::Hook(HookError::Refused(
                "this storage keeps no audit chain".into(),
            )));
        };
        self.write(|db| {
            let tip = read_tip(db)?.ok_or_else(|| corrupt("vault_meta", "audit tip"))?;
            let a = w
                .checkpoint(&tip, true)
                .map_err(|e| StorageError::Backend(format!("audit chain: {e}")))?
                .ok_or_else(|| StorageError::Backend("audit chain: no checkpoint".into()))?;
            store_records(db, &a.records, &a.tip, None)?;
            a.anchor
                .ok_or_else(|| StorageError::Backend("audit chain: no anchor".into()))
        })
    }

    /// Copies a vault into this database, verbatim, in one transaction: all of it or, if
    /// anything fails (or the process is killed), nothing. The audit chain continues the
    /// file log: its segments are kept as they are and `writer` (the file log's id and key)
    /// starts the next segment with a checkpoint, then records `data.event`.
    ///
    /// Refused if the database holds anything else; [`Imported::Before`] if it holds this
    /// very vault already (the copy committed and the caller was stopped before finishing).
    pub(crate) fn import(
        &self,
        data: &Import,
        writer: &ChainWriter,
    ) -> Result<Imported, StorageError> {
        self.write(|db| {
            if let Some(id) = meta(db, "audit_log_id")? {
                let ours = id == writer.log_id() && meta(db, "migrated_from")?.is_some();
                return if ours {
                    Ok(Imported::Before)
                } else {
                    Err(StorageError::Backend(
                        "the database holds another vault's audit chain; migrate into an empty database or schema".into(),
                    ))
                };
            }
            if db.query_opt("SELECT 1 FROM tenants LIMIT 1", &[])?.is_some() {
                return Err(StorageError::Backend(
                    "the database already holds tenants; migrate into an empty database or schema".into(),
                ));
            }
            for t in &data.tenants {
                db.execute(
                    "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)",
                    &[&t.id.as_str(), &t.name, &t.created_at],
                )?;
            }
            for k in &data.keys {
                insert_key(db, k)?;
            }
            for c in &data.credentials {
                write_row(db, INSERT_CREDENTIAL, c)?;
            }
            for (k, step, until) in &data.one_time.replay {
                db.execute(
                    "INSERT INTO replay_guard (key, step, retain_until) VALUES ($1, $2, $3)",
                    &[k, &to_i64(*step), &to_i64(*until)],
                )?;
            }
            for (k, f) in &data.one_time.throttle {
                db.execute(
                    "INSERT INTO otp_throttle (key, window_start, failures, locked_until)
                     VALUES ($1, $2, $3, $4)",
                    &[
                        k,
                        &to_i64(f.window_start),
                        &i64::from(f.failures),
                        &to_i64(f.locked_until),
                    ],
                )?;
            }
            for (k, n) in &data.one_time.hotp {
                db.execute(
                    "INSERT INTO hotp_counters (key, next) VALUES ($1, $2)",
                    &[k, &to_i64(*n)],
                )?;
            }
            for (flag, on) in [
                ("records_authenticated", data.records_authenticated),
                ("heads_authenticated", data.heads_authenticated),
            ] {
                if on {
                    set_flag(db, flag)?;
                } else {
                    db.execute("DELETE FROM vault_meta WHERE key = $1", &[&flag])?;
                }
            }
            // The file log's segments verbatim, the last one ended by a checkpoint (as the
            // file log ends a segment it rotates away from); the chain here is the next one.
            let next = u32::try_from(data.audit_segments.len() + 1).unwrap_or(u32::MAX);
            let start = writer
                .start_segment(&data.audit_tip, next)
                .map_err(|e| StorageError::Backend(format!("audit chain: {e}")))?;
            let (end, begin) = start.records.split_at(1);
            for (i, seg) in data.audit_segments.iter().enumerate() {
                let n = i32::try_from(i + 1).unwrap_or(i32::MAX);
                let mut bytes = seg.clone();
                if i + 1 == data.audit_segments.len() {
                    bytes.extend_from_slice(&end[0].line);
                }
                db.execute(
                    "INSERT INTO audit_segments (segment, bytes) VALUES ($1, $2)",
                    &[&n, &bytes],
                )?;
            }
            set_meta(db, "audit_log_id", writer.log_id())?;
            set_genesis(db, writer, &data.genesis_hash)?;
            set_meta(db, "migrated_from", "sqlite")?;
            store_records(db, begin, &start.tip, None)?;
            let head = append_records(db, writer, std::slice::from_ref(&data.event))?;
            set_head(db, Some(head))?;
            Ok(Imported::Now)
        })
    }

    /// The segment files of a file log that moved here with its vault, in order (empty for a
    /// vault that began in this database).
    ///
    /// # Errors
    /// [`StorageError`].
    pub fn migrated_audit_segments(&self) -> Result<Vec<Vec<u8>>, StorageError> {
        self.read(|db| {
            db.query("SELECT bytes FROM audit_segments ORDER BY segment", &[])?
                .iter()
                .map(|r| get::<Vec<u8>>(r, 0, "audit_segments"))
                .collect()
        })
    }

    /// The hash of the audit chain's record `seq`, if the chain has it.
    ///
    /// # Errors
    /// [`StorageError`].
    pub fn audit_record_hash(&self, seq: u64) -> Result<Option<[u8; 32]>, StorageError> {
        self.read(|db| record_hash(db, seq))
    }

    /// The audit chain's log id, if the database keeps one.
    ///
    /// # Errors
    /// [`StorageError`].
    pub fn audit_log_id(&self) -> Result<Option<String>, StorageError> {
        self.read(|db| {
            db.query_opt(
                "SELECT value FROM vault_meta WHERE key = 'audit_log_id'",
                &[],
            )?
            .map(|r| get::<String>(&r, 0, "vault_meta"))
            .transpose()
        })
    }

    /// Writes the audit chain's records, in order, to `out`: the file log's format (one
    /// segment), which `credvault audit verify` and
    /// [`verify_segments`](credvault_audit::verify_segments) check. Read in pages, in one
    /// repeatable-read snapshot. Returns how many records were written.
    ///
    /// # Errors
    /// [`StorageError`]; an I/O error on `out` as [`StorageError::Backend`].
    pub fn export_audit(&self, out: &mut dyn std::io::Write) -> Result<u64, StorageError> {
        let mut conn = self.conn()?;
        let mut tx = read_snapshot(&mut conn.client)?;
        let (n, _) = write_chain(&mut tx, out)?;
        tx.commit().map_err(pe)?;
        Ok(n)
    }

    /// The whole vault as it is at one instant (one repeatable-read, read-only transaction):
    /// every row verbatim, the one-time-code state, and the audit chain as file-log segments
    /// (those of a file log it was migrated from, then the database's records as one more).
    /// Writers are not blocked.
    ///
    /// # Errors
    /// [`StorageError`]; [`StorageError::Corrupt`] if the chain's tip and records disagree.
    pub(crate) fn snapshot(&self) -> Result<crate::backup::Snapshot, StorageError> {
        let mut conn = self.conn()?;
        let mut tx = read_snapshot(&mut conn.client)?;
        let meta = |tx: &mut postgres::Transaction<'_>, key: &str| {
            tx.query_opt("SELECT value FROM vault_meta WHERE key = $1", &[&key])
                .map_err(pe)?
                .map(|r| get::<String>(&r, 0, "vault_meta"))
                .transpose()
        };
        let log_id = meta(&mut tx, "audit_log_id")?
            .ok_or_else(|| corrupt("vault_meta", "no audit log id"))?;
        let mut genesis = [0u8; 32];
        hex::decode_to_slice(
            meta(&mut tx, "audit_genesis_hash")?
                .ok_or_else(|| corrupt("vault_meta", "no audit genesis hash"))?,
            &mut genesis,
        )
        .map_err(|_| corrupt("vault_meta", "audit genesis hash"))?;
        let records_authenticated = meta(&mut tx, "records_authenticated")?.as_deref() == Some("1");
        let heads_authenticated = meta(&mut tx, "heads_authenticated")?.as_deref() == Some("1");
        let tip = tx
            .query_opt("SELECT audit_tip FROM writer_lock WHERE id = 1", &[])
            .map_err(pe)?
            .and_then(|r| r.get::<_, Option<String>>(0))
            .and_then(|t| ChainTip::parse(&t))
            .ok_or_else(|| corrupt("writer_lock", "audit tip"))?;
        let tenants = tx
            .query("SELECT id, name, created_at FROM tenants ORDER BY id", &[])
            .map_err(pe)?
            .iter()
            .map(|r| {
                Ok(TenantRow {
                    id: TenantId::new(get::<String>(r, 0, "tenants")?)
                        .map_err(|_| corrupt("tenants", "id"))?,
                    name: get(r, 1, "tenants")?,
                    created_at: get(r, 2, "tenants")?,
                })
            })
            .collect::<Result<Vec<_>, StorageError>>()?;
        let keys = tx
            .query(
                "SELECT tenant, key_id, wrapped, state, usage, created_at, mac FROM data_keys
                 ORDER BY tenant, created_at, key_id",
                &[],
            )
            .map_err(pe)?
            .iter()
            .map(key_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let credentials = tx
            .query(
                concat!(
                    "SELECT ",
                    cred_cols!(),
                    " FROM credentials ORDER BY tenant, name, environment, id"
                ),
                &[],
            )
            .map_err(pe)?
            .iter()
            .map(cred_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let mut one_time = crate::storage::OneTimeState::default();
        for r in tx
            .query(
                "SELECT key, step, retain_until FROM replay_guard ORDER BY key",
                &[],
            )
            .map_err(pe)?
        {
            one_time.replay.push((
                get(&r, 0, "replay_guard")?,
                to_u64(get(&r, 1, "replay_guard")?),
                to_u64(get(&r, 2, "replay_guard")?),
            ));
        }
        for r in tx
            .query(
                "SELECT key, window_start, failures, locked_until FROM otp_throttle ORDER BY key",
                &[],
            )
            .map_err(pe)?
        {
            one_time.throttle.push((
                get(&r, 0, "otp_throttle")?,
                OtpFailures {
                    window_start: to_u64(get(&r, 1, "otp_throttle")?),
                    failures: u32::try_from(get::<i64>(&r, 2, "otp_throttle")?).unwrap_or(u32::MAX),
                    locked_until: to_u64(get(&r, 3, "otp_throttle")?),
                },
            ));
        }
        for r in tx
            .query("SELECT key, next FROM hotp_counters ORDER BY key", &[])
            .map_err(pe)?
        {
            one_time.hotp.push((
                get(&r, 0, "hotp_counters")?,
                to_u64(get(&r, 1, "hotp_counters")?),
            ));
        }
        let mut audit_segments = tx
            .query("SELECT bytes FROM audit_segments ORDER BY segment", &[])
            .map_err(pe)?
            .iter()
            .map(|r| get::<Vec<u8>>(r, 0, "audit_segments"))
            .collect::<Result<Vec<_>, _>>()?;
        let mut chain = Vec::new();
        let (_, after) = write_chain(&mut tx, &mut chain)?;
        tx.commit().map_err(pe)?;
        // The tip names the last record; what was read must end there.
        let last_seq = tip
            .next_seq
            .checked_sub(1)
            .filter(|&s| i64::try_from(s).ok() == Some(after))
            .ok_or_else(|| corrupt("audit_log", "the records end elsewhere than the tip"))?;
        audit_segments.push(chain);
        Ok(crate::backup::Snapshot {
            source: "postgres".into(),
            created_at: crate::backup::now_ms(),
            tenants,
            keys,
            credentials,
            one_time,
            records_authenticated,
            heads_authenticated,
            audit_segments,
            chain: crate::backup::ChainEnds {
                log_id,
                genesis,
                last_seq,
                head: tip.head,
            },
            sealing_key: None,
            types: std::collections::BTreeMap::new(),
        })
    }

    /// Runs SQL on a pooled connection (tests simulate tampering at rest with it).
    #[doc(hidden)]
    pub fn execute_raw(&self, sql: &str) -> Result<(), StorageError> {
        self.conn()?.client.batch_execute(sql).map_err(pe)
    }

    /// Runs `f` on a pooled connection outside any transaction.
    fn read<T>(
        &self,
        f: impl Fn(&mut Db<'_, postgres::Client>) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        // A pooled connection the server dropped (a restart) fails its first statement; a
        // read is retried once on a fresh connection (the broken one is not returned).
        for attempt in 0..2 {
            let mut conn = self.conn()?;
            let PgConn { client, stmts } = &mut *conn;
            let out = f(&mut Db {
                c: client,
                stmts,
                locked: None,
            });
            match out {
                Err(StorageError::Unavailable { .. })
                    if attempt == 0 && conn.client.is_closed() =>
                {
                    continue
                }
                other => return other,
            }
        }
        Err(StorageError::Unavailable {
            resource: "database",
            reason: "the connection was lost twice".into(),
        })
    }

    /// Runs `f` in one transaction, without the writer lock (one-row writes).
    fn tx<T>(
        &self,
        f: impl FnOnce(&mut Db<'_, postgres::Transaction<'_>>) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let mut conn = self.conn()?;
        let PgConn { client, stmts } = &mut *conn;
        let mut tx = client.transaction().map_err(pe)?;
        let out = f(&mut Db {
            c: &mut tx,
            stmts,
            locked: None,
        })?;
        tx.commit().map_err(pe)?;
        Ok(out)
    }

    /// Runs `f` in one transaction holding the writer lock.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut Db<'_, postgres::Transaction<'_>>) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        self.tx(|db| {
            // FOR UPDATE returns the row's latest version once the lock is held: the tip and
            // head written by the writer this one waited for.
            let r = db
                .query_opt(
                    "SELECT audit_tip, audit_head FROM writer_lock WHERE id = 1 FOR UPDATE",
                    &[],
                )?
                .ok_or_else(|| corrupt("writer_lock", "the lock row is missing"))?;
            let tip = get::<Option<&str>>(&r, 0, "writer_lock")?
                .map(|t| ChainTip::parse(t).ok_or_else(|| corrupt("writer_lock", "audit tip")))
                .transpose()?;
            let head = get::<Option<&str>>(&r, 1, "writer_lock")?
                .map(|h| {
                    AuditHead::from_meta(h).ok_or_else(|| corrupt("writer_lock", "audit head"))
                })
                .transpose()?;
            db.locked = Some(Locked { tip, head });
            f(db)
        })
    }
}

impl PostgresStorage {
    /// Group commit: queues `events` (and, for a create, its `row`); one caller at a time
    /// writes everything queued in one statement ([`Self::append_standalone`]), the others
    /// wait for the batch that holds theirs. Returns the head of the batch that committed
    /// the caller's records, or its error: fail closed.
    fn group(
        &self,
        w: &ChainWriter,
        events: Vec<AuditEvent>,
        row: Option<CredentialRow>,
        guards: Vec<RowGuard>,
    ) -> Result<AuditHead, StorageError> {
        let poisoned = || StorageError::Backend("internal: the append queue is poisoned".into());
        let mut st = self.appends.lock().map_err(|_| poisoned())?;
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.queue.push(Pending {
            ticket,
            events,
            row,
            guards,
        });
        let now = Instant::now();
        st.callers.insert(std::thread::current().id(), now);
        st.callers
            .retain(|_, last| now.saturating_duration_since(*last) < CALLER_WINDOW);
        if st.writing {
            self.arrived.notify_one();
        }
        // Batches this caller wrote after its own: a writer whose batch is done writes the
        // next one too (the callers queued meanwhile need not wait for one of them to wake
        // up), a few times at most, so its own return is not put off for long.
        let mut served = 0;
        loop {
            let mine = st.done.contains_key(&ticket);
            if mine && (st.writing || st.queue.is_empty() || served >= 2) {
                if let Some(done) = st.done.remove(&ticket) {
                    return done.map_err(|e| match Arc::try_unwrap(e) {
                        Ok(e) => e,
                        Err(e) => echo(&e),
                    });
                }
            }
            if st.writing {
                st = self.appended.wait(st).map_err(|_| poisoned())?;
                continue;
            }
            if mine {
                served += 1;
            }
            st.writing = true;
            // Other threads appending lately are probably about to again: wait a little for
            // them, so that one statement carries all their records.
            let expected = st.callers.len() - usize::from(mine);
            if st.queue.len() < expected {
                let deadline = Instant::now() + COLLECT_MAX;
                while st.queue.len() < expected {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    st = self
                        .arrived
                        .wait_timeout(st, left)
                        .map_err(|_| poisoned())?
                        .0;
                }
            }
            let batch = std::mem::take(&mut st.queue);
            let tip = st.tip.take();
            drop(st);
            let (results, tip) = self.write_batch(w, tip, &batch);
            st = self.appends.lock().map_err(|_| poisoned())?;
            st.tip = tip;
            st.writing = false;
            for (p, r) in batch.iter().zip(results) {
                st.done.insert(p.ticket, r);
            }
            self.appended.notify_all();
        }
    }

    /// Writes a batch: all of it in one statement, or, if that is refused for a reason that
    /// belongs to one caller (a name taken, a key no longer active), each caller's part on
    /// its own under the writer lock, so that each gets its own result.
    fn write_batch(
        &self,
        w: &ChainWriter,
        tip: Option<ChainTip>,
        batch: &[Pending],
    ) -> (Vec<Result<AuditHead, Arc<StorageError>>>, Option<ChainTip>) {
        let all: Vec<AuditEvent> = batch
            .iter()
            .flat_map(|p| p.events.iter().cloned())
            .collect();
        let rows: Vec<&CredentialRow> = batch.iter().filter_map(|p| p.row.as_ref()).collect();
        let guards: Vec<&RowGuard> = batch.iter().flat_map(|p| p.guards.iter()).collect();
        match self.append_standalone(w, tip, &all, &rows, &guards) {
            (Ok(head), tip) => (vec![Ok(head); batch.len()], tip),
            (Err(Refusal::Rows(Some(e))), tip) if batch.len() == 1 => (vec![Err(Arc::new(e))], tip),
            (Err(Refusal::Rows(_)), _) => {
                let mut tip = None;
                let results = batch
                    .iter()
                    .map(|p| {
                        let r = self.write_locked(w, &p.events, p.row.as_ref(), &p.guards);
                        match r {
                            Ok((head, t)) => {
                                tip = t;
                                Ok(head)
                            }
                            Err(e) => {
                                tip = None;
                                Err(Arc::new(e))
                            }
                        }
                    })
                    .collect();
                (results, tip)
            }
            (Err(Refusal::Other(e)), tip) => {
                let e = Arc::new(e);
                (vec![Err(e); batch.len()], tip)
            }
        }
    }

    /// One caller's records (and row) under the writer lock, if its guarded rows are still
    /// as read ([`StorageError::Stale`] otherwise).
    fn write_locked(
        &self,
        w: &ChainWriter,
        events: &[AuditEvent],
        row: Option<&CredentialRow>,
        guards: &[RowGuard],
    ) -> Result<(AuditHead, Option<ChainTip>), StorageError> {
        self.write(|db| {
            for g in guards {
                let r = db.query_opt(
                    "SELECT mac FROM credentials WHERE tenant = $1 AND id = $2",
                    &[&g.tenant.as_str(), &g.id.as_str()],
                )?;
                let current = r
                    .as_ref()
                    .map(|r| get::<&[u8]>(r, 0, "credentials"))
                    .transpose()?;
                if current != Some(g.mac.as_slice()) {
                    return Err(StorageError::Stale { what: "credential" });
                }
            }
            if let Some(row) = row {
                check_key_use(db, row)?;
                write_row(db, INSERT_CREDENTIAL, row)?;
            }
            let head = append_records(db, w, events)?;
            set_head(db, Some(head))?;
            Ok((head, read_tip(db)?))
        })
    }

    /// Appends `events` (and inserts `rows`) by compare-and-set from `tip` (read when
    /// `None`), falling back to the writer lock: the result, and the tip afterwards when
    /// known.
    fn append_standalone(
        &self,
        w: &ChainWriter,
        mut tip: Option<ChainTip>,
        events: &[AuditEvent],
        rows: &[&CredentialRow],
        guards: &[&RowGuard],
    ) -> (Result<AuditHead, Refusal>, Option<ChainTip>) {
        // A compare-and-set that changes nothing although the tip did not move was refused by
        // a row: a create's key no longer active, or a guarded row changed.
        let by_rows = !rows.is_empty() || !guards.is_empty();
        let other = |e| (Err(Refusal::Other(e)), None);
        let mut missed: Option<ChainTip> = None;
        for _ in 0..APPEND_ATTEMPTS {
            let from = match tip.take() {
                Some(t) => t,
                None => match self.read(|db| {
                    let r = db
                        .query_opt("SELECT audit_tip FROM writer_lock WHERE id = 1", &[])?
                        .ok_or_else(|| corrupt("writer_lock", "the lock row is missing"))?;
                    get::<Option<&str>>(&r, 0, "writer_lock")?
                        .and_then(ChainTip::parse)
                        .ok_or_else(|| corrupt("writer_lock", "audit tip"))
                }) {
                    Ok(t) => t,
                    Err(e) => return other(e),
                },
            };
            if missed.is_some_and(|m| m == from) && by_rows {
                // The tip had not moved: a row's key is no longer active, or a guarded row
                // changed. The writer lock tells which, caller by caller.
                return (Err(Refusal::Rows(None)), Some(from));
            }
            let (a, head) = match chain_records(w, &from, events) {
                Ok(x) => x,
                Err(e) => return other(e),
            };
            // Not through `read`, which retries on a lost connection: a statement whose
            // answer was lost may have committed, and would then be recorded twice.
            let moved = match self.conn() {
                Ok(mut conn) => cas_statement(&mut conn, &a, &head, &from, rows, guards),
                Err(e) => return other(e),
            };
            match moved {
                Ok(true) => return (Ok(head), Some(a.tip)),
                Ok(false) => missed = Some(from),
                // A row refused by a constraint: nothing was written.
                Err(e) if !rows.is_empty() && row_refusal(&e) => {
                    let e = match rows {
                        [row] => Some(map_row_error(e, row)),
                        _ => None,
                    };
                    return (Err(Refusal::Rows(e)), Some(from));
                }
                // Perhaps committed: the tip is not known.
                Err(e) => return other(pe(e)),
            }
        }
        if by_rows {
            return (Err(Refusal::Rows(None)), None);
        }
        match self.write(|db| {
            let head = append_records(db, w, events)?;
            set_head(db, Some(head))?;
            Ok((head, read_tip(db)?))
        }) {
            Ok((head, tip)) => (Ok(head), tip),
            Err(e) => other(e),
        }
    }
}

/// The chain a create's hook appends to: its events, to be written with the row.
struct Collect(Vec<AuditEvent>);

impl AuditChain for Collect {
    fn append(&mut self, events: &[AuditEvent]) -> Result<AuditHead, HookError> {
        self.0.extend_from_slice(events);
        // The head is known once the batch is written; the caller of a create has no use for
        // it (the storage moves the head itself).
        Ok(AuditHead {
            seq: 0,
            hash: [0; 32],
            tag: None,
        })
    }
}

/// A repeatable-read, read-only transaction: every statement in it sees one instant.
fn read_snapshot(client: &mut postgres::Client) -> Result<postgres::Transaction<'_>, StorageError> {
    client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(pe)
}

/// Writes the chain's record lines, in order, read in pages within `tx`: how many, and the
/// last one's sequence number (-1 for none).
fn write_chain(
    tx: &mut postgres::Transaction<'_>,
    out: &mut dyn std::io::Write,
) -> Result<(u64, i64), StorageError> {
    const PAGE: i64 = 1_000;
    let mut after: i64 = -1;
    let mut n = 0u64;
    loop {
        let rows = tx
            .query(
                "SELECT seq, line FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after, &PAGE],
            )
            .map_err(pe)?;
        for r in &rows {
            after = get(r, 0, "audit_log")?;
            out.write_all(get::<&[u8]>(r, 1, "audit_log")?)
                .map_err(|e| StorageError::Backend(format!("audit export: {e}")))?;
            n += 1;
        }
        if rows.len() < PAGE as usize {
            return Ok((n, after));
        }
    }
}

/// Why a batch was not written in one statement.
enum Refusal {
    /// For a reason that may belong to one of its rows: the error when the batch was one
    /// row's, else `None` (write each caller's part alone, under the writer lock).
    Rows(Option<StorageError>),
    /// Any other failure, shared by every caller in the batch.
    Other(StorageError),
}

/// Whether a statement failed on a row's constraint (a name taken, an unknown key).
fn row_refusal(e: &postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::FOREIGN_KEY_VIOLATION)
}

/// The compare-and-set append: the records, the new tip and head, and `rows` (creates whose
/// data keys must still be active), all or nothing, only if the tip is still `from` and every
/// guarded row still has the MAC it had when read. Whether it moved the tip.
fn cas_statement(
    conn: &mut PgConn,
    a: &credvault_audit::Appended,
    head: &AuditHead,
    from: &ChainTip,
    rows: &[&CredentialRow],
    guards: &[&RowGuard],
) -> Result<bool, postgres::Error> {
    let PgConn { client, stmts } = conn;
    let (seqs, kinds, lines) = record_columns(&a.records);
    let new_tip = a.tip.to_text();
    let head = head.to_meta();
    let from = from.to_text();
    let g_tenant: Vec<&str> = guards.iter().map(|g| g.tenant.as_str()).collect();
    let g_id: Vec<&str> = guards.iter().map(|g| g.id.as_str()).collect();
    let g_mac: Vec<&[u8]> = guards.iter().map(|g| g.mac.as_slice()).collect();
    if rows.is_empty() {
        let sql = "WITH moved AS (
                UPDATE writer_lock SET audit_tip = $4, audit_head = $5
                WHERE id = 1 AND audit_tip = $6
                  AND NOT EXISTS (
                    SELECT 1 FROM unnest($7::text[], $8::text[], $9::bytea[]) AS g(tenant, id, mac)
                    WHERE (SELECT c.mac FROM credentials c
                           WHERE c.tenant = g.tenant AND c.id = g.id) IS DISTINCT FROM g.mac)
                RETURNING 1
             ), records AS (
                INSERT INTO audit_log (seq, kind, line)
                SELECT r.* FROM unnest($1::bigint[], $2::text[], $3::bytea[]) AS r
                WHERE EXISTS (SELECT 1 FROM moved)
             )
             SELECT 1 FROM moved";
        let st = prepared(client, stmts, sql)?;
        let out = client.query(
            &st,
            &[
                &seqs, &kinds, &lines, &new_tip, &head, &from, &g_tenant, &g_id, &g_mac,
            ],
        )?;
        return Ok(!out.is_empty());
    }
    let sql = concat!(
        "WITH moved AS (
            UPDATE writer_lock SET audit_tip = $4, audit_head = $5
            WHERE id = 1 AND audit_tip = $6
              AND NOT EXISTS (
                SELECT 1 FROM unnest($7::text[], $26::bytea[]) AS k(tenant, key_id)
                WHERE NOT EXISTS (
                    SELECT 1 FROM data_keys d
                    WHERE d.tenant = k.tenant AND d.key_id = k.key_id AND d.state = 'active'))
              AND NOT EXISTS (
                SELECT 1 FROM unnest($30::text[], $31::text[], $32::bytea[]) AS g(tenant, id, mac)
                WHERE (SELECT c.mac FROM credentials c
                       WHERE c.tenant = g.tenant AND c.id = g.id) IS DISTINCT FROM g.mac)
            RETURNING 1
         ), records AS (
            INSERT INTO audit_log (seq, kind, line)
            SELECT r.* FROM unnest($1::bigint[], $2::text[], $3::bytea[]) AS r
            WHERE EXISTS (SELECT 1 FROM moved)
         ), rows AS (
            INSERT INTO credentials (",
        cred_cols!(),
        ")
            SELECT c.* FROM unnest($7::text[], $8::text[], $9::text[], $10::text[],
                $11::text[], $12::text[], $13::text[], $14::boolean[], $15::bigint[],
                $16::text[], $17::bigint[], $18::bigint[], $19::bigint[], $20::bigint[],
                $21::bigint[], $22::text[], $23::text[], $24::text[], $25::text[],
                $26::bytea[], $27::bytea[], $28::bytea[], $29::text[]) AS c
            WHERE EXISTS (SELECT 1 FROM moved)
         )
         SELECT 1 FROM moved"
    );
    let col = |f: fn(&CredentialRow) -> String| rows.iter().map(|r| f(r)).collect::<Vec<_>>();
    let tenant = col(|r| r.tenant.as_str().to_owned());
    let id = col(|r| r.id.as_str().to_owned());
    let name = col(|r| r.name.clone());
    let ty = col(|r| r.type_name.clone());
    let env = col(|r| r.environment.clone());
    let desc = col(|r| r.description.clone());
    let tags = col(|r| json(&r.tags));
    let active: Vec<bool> = rows.iter().map(|r| r.is_active).collect();
    let expires: Vec<Option<i64>> = rows.iter().map(|r| r.expires_at).collect();
    let created_by = col(|r| r.created_by.clone());
    let created: Vec<i64> = rows.iter().map(|r| r.created_at).collect();
    let updated: Vec<i64> = rows.iter().map(|r| r.updated_at).collect();
    let version: Vec<i64> = rows.iter().map(|r| to_i64(r.version)).collect();
    let used: Vec<Option<i64>> = rows.iter().map(|r| r.last_used_at).collect();
    let tested: Vec<Option<i64>> = rows.iter().map(|r| r.last_tested).collect();
    let status: Vec<Option<&str>> = rows.iter().map(|r| r.test_status.as_deref()).collect();
    let message: Vec<Option<&str>> = rows.iter().map(|r| r.test_message.as_deref()).collect();
    let public: Vec<&str> = rows.iter().map(|r| r.public.as_str()).collect();
    let secret_fields = col(|r| json(&r.secret_fields));
    let key: Vec<&[u8]> = rows
        .iter()
        .map(|r| r.key_id.as_bytes().as_slice())
        .collect();
    let secret: Vec<&[u8]> = rows.iter().map(|r| r.secret.as_slice()).collect();
    let mac: Vec<&[u8]> = rows.iter().map(|r| r.mac.as_slice()).collect();
    let reveal = col(|r| json(&r.reveal));
    let st = prepared(client, stmts, sql)?;
    let out = client.query(
        &st,
        &[
            &seqs,
            &kinds,
            &lines,
            &new_tip,
            &head,
            &from,
            &tenant,
            &id,
            &name,
            &ty,
            &env,
            &desc,
            &tags,
            &active,
            &expires,
            &created_by,
            &created,
            &updated,
            &version,
            &used,
            &tested,
            &status,
            &message,
            &public,
            &secret_fields,
            &key,
            &secret,
            &mac,
            &reveal,
            &g_tenant,
            &g_id,
            &g_mac,
        ],
    )?;
    Ok(!out.is_empty())
}

/// `sql` prepared on this connection (once).
fn prepared(
    client: &mut postgres::Client,
    stmts: &mut HashMap<&'static str, Statement>,
    sql: &'static str,
) -> Result<Statement, postgres::Error> {
    if let Some(s) = stmts.get(sql) {
        return Ok(s.clone());
    }
    let s = client.prepare(sql)?;
    stmts.insert(sql, s.clone());
    Ok(s)
}

type Tx<'a, 'b> = Db<'a, postgres::Transaction<'b>>;

fn read_head<C: GenericClient>(db: &mut Db<'_, C>) -> Result<Option<AuditHead>, StorageError> {
    if let Some(l) = &db.locked {
        return Ok(l.head);
    }
    let Some(r) = db.query_opt("SELECT audit_head FROM writer_lock WHERE id = 1", &[])? else {
        return Ok(None);
    };
    get::<Option<&str>>(&r, 0, "writer_lock")?
        .map(|h| AuditHead::from_meta(h).ok_or_else(|| corrupt("writer_lock", "audit head")))
        .transpose()
}

fn locked<'l>(db: &'l mut Tx<'_, '_>) -> Result<&'l mut Locked, StorageError> {
    db.locked
        .as_mut()
        .ok_or_else(|| StorageError::Backend("internal: the writer lock is not held".into()))
}

fn set_head(db: &mut Tx<'_, '_>, head: Option<AuditHead>) -> Result<(), StorageError> {
    let Some(h) = head else { return Ok(()) };
    let cur = locked(db)?.head;
    if crate::storage::later(cur, Some(h)) == cur {
        return Ok(());
    }
    db.execute(
        "UPDATE writer_lock SET audit_head = $1 WHERE id = 1",
        &[&h.to_meta()],
    )?;
    locked(db)?.head = Some(h);
    Ok(())
}

/// The audit chain kept in `audit_log`, appended to inside a write transaction (the writer
/// lock is held, so the tip read is the chain's latest and no other node appends meanwhile).
struct PgChain<'x, 'a, 'b> {
    db: &'x mut Tx<'a, 'b>,
    writer: Option<&'x ChainWriter>,
}

impl AuditChain for PgChain<'_, '_, '_> {
    fn append(&mut self, events: &[AuditEvent]) -> Result<AuditHead, HookError> {
        let Some(w) = self.writer else {
            return NoChain.append(events);
        };
        append_records(self.db, w, events).map_err(|e| HookError::Refused(e.to_string()))
    }
}

fn read_tip(db: &mut Tx<'_, '_>) -> Result<Option<ChainTip>, StorageError> {
    Ok(locked(db)?.tip)
}

fn meta(db: &mut Tx<'_, '_>, key: &str) -> Result<Option<String>, StorageError> {
    db.query_opt("SELECT value FROM vault_meta WHERE key = $1", &[&key])?
        .map(|r| get::<String>(&r, 0, "vault_meta"))
        .transpose()
}

fn set_meta(db: &mut Tx<'_, '_>, key: &str, value: &str) -> Result<(), StorageError> {
    db.execute(
        "INSERT INTO vault_meta (key, value) VALUES ($1, $2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[&key, &value],
    )?;
    Ok(())
}

/// Records the chain's genesis hash and its tag under the audit key (what a node joining the
/// chain checks its key against).
fn set_genesis(
    db: &mut Tx<'_, '_>,
    w: &ChainWriter,
    genesis: &[u8; 32],
) -> Result<(), StorageError> {
    set_meta(db, "audit_genesis_hash", &hex::encode(genesis))?;
    set_meta(
        db,
        "audit_genesis_tag",
        &hex::encode(w.head_tag(0, genesis)),
    )
}

/// A vault's contents, copied verbatim into an empty database by [`PostgresStorage::import`].
pub(crate) struct Import {
    pub(crate) tenants: Vec<TenantRow>,
    pub(crate) keys: Vec<DataKeyRow>,
    pub(crate) credentials: Vec<CredentialRow>,
    pub(crate) one_time: crate::storage::OneTimeState,
    pub(crate) records_authenticated: bool,
    pub(crate) heads_authenticated: bool,
    /// The file log's segments, verbatim, in order.
    pub(crate) audit_segments: Vec<Vec<u8>>,
    /// Where the file log ends.
    pub(crate) audit_tip: ChainTip,
    /// The file log's genesis record hash.
    pub(crate) genesis_hash: [u8; 32],
    /// The first event of the chain in the database (the migration itself).
    pub(crate) event: AuditEvent,
}

/// What [`PostgresStorage::import`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Imported {
    /// Copied now.
    Now,
    /// This vault was copied here before (a migration resumed after the copy committed).
    Before,
}

/// The hash of record `seq` of the chain, read from its stored line (its last 64 hex digits
/// before `"}`).
fn record_hash<C: GenericClient>(
    db: &mut Db<'_, C>,
    seq: u64,
) -> Result<Option<[u8; 32]>, StorageError> {
    let Some(r) = db.query_opt("SELECT line FROM audit_log WHERE seq = $1", &[&to_i64(seq)])?
    else {
        return Ok(None);
    };
    let line: &[u8] = get(&r, 0, "audit_log")?;
    let bad = || corrupt("audit_log", "a record line without a hash");
    let end = line
        .len()
        .checked_sub(b"\"}\n".len())
        .filter(|&e| e >= 64)
        .ok_or_else(bad)?;
    let mut h = [0u8; 32];
    hex::decode_to_slice(&line[end - 64..end], &mut h).map_err(|_| bad())?;
    Ok(Some(h))
}

/// Stores `records`, the new tip and `head` (or keeps the head) in one statement.
fn store_records(
    db: &mut Tx<'_, '_>,
    records: &[ChainRecord],
    tip: &ChainTip,
    head: Option<AuditHead>,
) -> Result<(), StorageError> {
    let (seqs, kinds, lines) = record_columns(records);
    let head = head.or(locked(db)?.head);
    db.execute(
        "WITH records AS (
            INSERT INTO audit_log (seq, kind, line)
            SELECT * FROM unnest($1::bigint[], $2::text[], $3::bytea[])
         )
         UPDATE writer_lock SET audit_tip = $4, audit_head = $5 WHERE id = 1",
        &[
            &seqs,
            &kinds,
            &lines,
            &tip.to_text(),
            &head.map(AuditHead::to_meta),
        ],
    )?;
    let l = locked(db)?;
    l.tip = Some(*tip);
    l.head = head;
    Ok(())
}

fn append_records(
    db: &mut Tx<'_, '_>,
    w: &ChainWriter,
    events: &[AuditEvent],
) -> Result<AuditHead, StorageError> {
    let tip = read_tip(db)?.ok_or_else(|| {
        corrupt(
            "vault_meta",
            "the audit chain has no tip (its genesis was never written, or the row was deleted)",
        )
    })?;
    let (a, head) = chain_records(w, &tip, events)?;
    // The head moves with the records (the hook's own set_head then finds it stored).
    let new_head = crate::storage::later(locked(db)?.head, Some(head));
    store_records(db, &a.records, &a.tip, new_head)?;
    Ok(head)
}

/// The records of `events` chained after `tip`, and the head they make.
fn chain_records(
    w: &ChainWriter,
    tip: &ChainTip,
    events: &[AuditEvent],
) -> Result<(credvault_audit::Appended, AuditHead), StorageError> {
    let a = w
        .append(tip, events)
        .map_err(|e| StorageError::Backend(format!("audit chain: {e}")))?;
    let (seq, hash) = match a.last_event {
        Some(r) => (r.seq, r.hash),
        None => (tip.next_seq.saturating_sub(1), tip.head),
    };
    let head = AuditHead {
        seq,
        hash,
        tag: Some(w.head_tag(seq, &hash)),
    };
    Ok((a, head))
}

/// The `audit_log` columns of `records`, for `unnest`.
fn record_columns(records: &[ChainRecord]) -> (Vec<i64>, Vec<&str>, Vec<&[u8]>) {
    (
        records.iter().map(|r| to_i64(r.seq)).collect(),
        records.iter().map(|r| r.kind.as_str()).collect(),
        records.iter().map(|r| r.line.as_slice()).collect(),
    )
}

fn hook_in(
    db: &mut Tx<'_, '_>,
    writer: Option<&ChainWriter>,
    hook: Hook<'_>,
) -> Result<(), StorageError> {
    let head = hook(&mut PgChain {
        db: &mut *db,
        writer,
    })
    .map_err(StorageError::Hook)?;
    set_head(db, head)
}

fn read_flag<C: GenericClient>(db: &mut Db<'_, C>, key: &str) -> Result<bool, StorageError> {
    let r = db.query_opt("SELECT value FROM vault_meta WHERE key = $1", &[&key])?;
    Ok(match r {
        Some(r) => get::<&str>(&r, 0, "vault_meta")? == "1",
        None => false,
    })
}

fn set_flag(db: &mut Tx<'_, '_>, key: &str) -> Result<(), StorageError> {
    db.execute(
        "INSERT INTO vault_meta (key, value) VALUES ($1, '1')
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[&key],
    )?;
    Ok(())
}

fn version_of(
    db: &mut Tx<'_, '_>,
    tenant: &TenantId,
    id: &CredentialId,
) -> Result<u64, StorageError> {
    let r = db.query_opt(
        "SELECT version FROM credentials WHERE tenant = $1 AND id = $2",
        &[&tenant.as_str(), &id.as_str()],
    )?;
    match r {
        Some(r) => Ok(to_u64(get(&r, 0, "credentials")?)),
        None => Err(StorageError::NotFound { what: "credential" }),
    }
}

/// As the SQLite backend's: a row may name the tenant's active key, or keep the key its stored
/// version names; it may never start naming a retiring key.
fn check_key_use(db: &mut Tx<'_, '_>, row: &CredentialRow) -> Result<(), StorageError> {
    let state = db.query_opt(
        "SELECT state FROM data_keys WHERE tenant = $1 AND key_id = $2",
        &[&row.tenant.as_str(), &row.key_id.as_bytes().as_slice()],
    )?;
    let unknown = Err(StorageError::UnknownKey { key_id: row.key_id });
    let Some(state) = state else { return unknown };
    if get::<&str>(&state, 0, "data_keys")? == "active" {
        return Ok(());
    }
    let stored = db.query_opt(
        "SELECT key_id FROM credentials WHERE tenant = $1 AND id = $2",
        &[&row.tenant.as_str(), &row.id.as_str()],
    )?;
    match stored {
        Some(s) if get::<&[u8]>(&s, 0, "credentials")? == row.key_id.as_bytes() => Ok(()),
        _ => unknown,
    }
}

const INSERT_CREDENTIAL: &str = concat!(
    "INSERT INTO credentials (",
    cred_cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
     $18, $19, $20, $21, $22, $23)"
);

const UPDATE_CREDENTIAL: &str = "UPDATE credentials SET name = $3, type = $4, \
     environment = $5, description = $6, tags = $7, is_active = $8, expires_at = $9, \
     created_by = $10, created_at = $11, updated_at = $12, version = $13, last_used_at = $14, \
     last_tested = $15, test_status = $16, test_message = $17, public = $18, \
     secret_fields = $19, key_id = $20, secret = $21, mac = $22, reveal = $23 \
     WHERE tenant = $1 AND id = $2";

/// Runs `sql` (an insert or update taking every column, in `cred_cols!` order) for `row`.
fn write_row(
    db: &mut Tx<'_, '_>,
    sql: &'static str,
    row: &CredentialRow,
) -> Result<(), StorageError> {
    let st = db.st(sql)?;
    let tags = json(&row.tags);
    let secret_fields = json(&row.secret_fields);
    let reveal = json(&row.reveal);
    let version = to_i64(row.version);
    let key = row.key_id.as_bytes().as_slice();
    db.c.execute(
        &st,
        &[
            &row.tenant.as_str(),
            &row.id.as_str(),
            &row.name,
            &row.type_name,
            &row.environment,
            &row.description,
            &tags,
            &row.is_active,
            &row.expires_at,
            &row.created_by,
            &row.created_at,
            &row.updated_at,
            &version,
            &row.last_used_at,
            &row.last_tested,
            &row.test_status,
            &row.test_message,
            &row.public,
            &secret_fields,
            &key,
            &row.secret,
            &row.mac,
            &reveal,
        ],
    )
    .map(|_| ())
    .map_err(|e| map_row_error(e, row))
}

/// Inserts a data key row as it is (its state included).
fn insert_key(db: &mut Tx<'_, '_>, key: &DataKeyRow) -> Result<(), StorageError> {
    db.execute(
        "INSERT INTO data_keys (tenant, key_id, wrapped, state, usage, created_at, mac)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &key.tenant.as_str(),
            &key.key_id.as_bytes().as_slice(),
            &key.wrapped,
            &key.state.as_str(),
            &to_i64(key.usage),
            &key.created_at,
            &key.mac,
        ],
    )?;
    Ok(())
}

fn read_otp<C: GenericClient>(
    db: &mut Db<'_, C>,
    sql: &'static str,
    key: &str,
) -> Result<Option<OtpFailures>, StorageError> {
    const T: &str = "otp_throttle";
    let Some(r) = db.query_opt(sql, &[&key])? else {
        return Ok(None);
    };
    Ok(Some(OtpFailures {
        window_start: to_u64(get(&r, 0, T)?),
        failures: u32::try_from(get::<i64>(&r, 1, T)?).unwrap_or(u32::MAX),
        locked_until: to_u64(get(&r, 2, T)?),
    }))
}

fn read_hotp<C: GenericClient>(
    db: &mut Db<'_, C>,
    sql: &'static str,
    key: &str,
) -> Result<Option<u64>, StorageError> {
    match db.query_opt(sql, &[&key])? {
        None => Ok(None),
        Some(r) => u64::try_from(get::<i64>(&r, 0, "hotp_counters")?)
            .map(Some)
            .map_err(|_| corrupt("hotp_counters", "negative counter")),
    }
}

impl Storage for PostgresStorage {
    fn create_tenant(
        &self,
        tenant: &TenantRow,
        key: &DataKeyRow,
        hook: Hook<'_>,
    ) -> Result<(), StorageError> {
        self.write(|db| {
            let n = db.execute(
                "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO NOTHING",
                &[&tenant.id.as_str(), &tenant.name, &tenant.created_at],
            )?;
            if n == 0 {
                return Err(StorageError::TenantExists {
                    tenant: tenant.id.to_string(),
                });
            }
            insert_key(db, key)?;
            hook_in(db, self.chain.as_ref(), hook)
        })
    }

    /// A tenant row is never changed or deleted once written, so one this process has read is
    /// kept (up to 65,536 of them) and not asked for again: a scope costs no round
    /// trip for a known tenant. An unknown tenant is asked for every time.
    fn tenant(&self, id: &TenantId) -> Result<Option<TenantRow>, StorageError> {
        if let Some(row) = self.tenants.lock().ok().and_then(|t| t.get(id).cloned()) {
            return Ok(Some(row));
        }
        let row = self.read(|db| {
            let r = db.query_opt(
                "SELECT name, created_at FROM tenants WHERE id = $1",
                &[&id.as_str()],
            )?;
            r.map(|r| {
                Ok(TenantRow {
                    id: id.clone(),
                    name: get(&r, 0, "tenants")?,
                    created_at: get(&r, 1, "tenants")?,
                })
            })
            .transpose()
        })?;
        if let (Some(row), Ok(mut known)) = (&row, self.tenants.lock()) {
            if known.len() < TENANT_CACHE {
                known.insert(id.clone(), row.clone());
            }
        }
        Ok(row)
    }

    fn tenants(&self) -> Result<Vec<TenantRow>, StorageError> {
        self.read(|db| {
            db.query("SELECT id, name, created_at FROM tenants ORDER BY id", &[])?
                .iter()
                .map(|r| {
                    Ok(TenantRow {
                        id: TenantId::new(get::<String>(r, 0, "tenants")?)
                            .map_err(|_| corrupt("tenants", "id"))?,
                        name: get(r, 1, "tenants")?,
                        created_at: get(r, 2, "tenants")?,
                    })
                })
                .collect()
        })
    }

    fn data_keys(&self, tenant: &TenantId) -> Result<Vec<DataKeyRow>, StorageError> {
        self.read(|db| {
            db.query(
                "SELECT tenant, key_id, wrapped, state, usage, created_at, mac FROM data_keys
                 WHERE tenant = $1 ORDER BY state = 'retiring', created_at",
                &[&tenant.as_str()],
            )?
            .iter()
            .map(key_from_row)
            .collect()
        })
    }

    fn reserve_usage(
        &self,
        tenant: &TenantId,
        key_id: &KeyId,
        count: u64,
    ) -> Result<u64, StorageError> {
        self.read(|db| {
            db.query_opt(
                "UPDATE data_keys SET usage = usage + $3 WHERE tenant = $1 AND key_id = $2
                 RETURNING usage",
                &[
                    &tenant.as_str(),
                    &key_id.as_bytes().as_slice(),
                    &to_i64(count),
                ],
            )?
            .map(|r| get::<i64>(&r, 0, "data_keys").map(to_u64))
            .transpose()?
            .ok_or(StorageError::NotFound { what: "data key" })
        })
    }

    fn replace_wrapped(
        &self,
        tenant: &TenantId,
        key_id: &KeyId,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool, StorageError> {
        self.read(|db| {
            let n = db.execute(
                "UPDATE data_keys SET wrapped = $4
                 WHERE tenant = $1 AND key_id = $2 AND wrapped = $3",
                &[&tenant.as_str(), &key_id.as_bytes().as_slice(), &old, &new],
            )?;
            Ok(n == 1)
        })
    }

    fn start_key_rotation(&self, new_key: &DataKeyRow, hook: Hook<'_>) -> Result<(), StorageError> {
        self.write(|db| {
            let t = new_key.tenant.as_str();
            let n = db.execute(
                "UPDATE data_keys SET state = 'retiring' WHERE tenant = $1",
                &[&t],
            )?;
            if n == 0 {
                return Err(StorageError::NotFound { what: "tenant" });
            }
            db.execute(
                "INSERT INTO data_keys (tenant, key_id, wrapped, state, usage, created_at, mac)
                 VALUES ($1, $2, $3, 'active', $4, $5, $6)",
                &[
                    &t,
                    &new_key.key_id.as_bytes().as_slice(),
                    &new_key.wrapped,
                    &to_i64(new_key.usage),
                    &new_key.created_at,
                    &new_key.mac,
                ],
            )?;
            hook_in(db, self.chain.as_ref(), hook)
        })
    }

    fn retire_unreferenced_keys(
        &self,
        tenant: &TenantId,
        hook: Hook<'_>,
    ) -> Result<Vec<KeyId>, StorageError> {
        self.write(|db| {
            let ids = db
                .query(
                    "SELECT key_id FROM data_keys k WHERE tenant = $1 AND state = 'retiring'
                     AND NOT EXISTS (SELECT 1 FROM credentials c
                                     WHERE c.tenant = k.tenant AND c.key_id = k.key_id)
                     ORDER BY key_id",
                    &[&tenant.as_str()],
                )?
                .iter()
                .map(|r| key_id(get::<&[u8]>(r, 0, "data_keys")?, "data_keys"))
                .collect::<Result<Vec<_>, _>>()?;
            if ids.is_empty() {
                return Ok(ids);
            }
            hook_in(db, self.chain.as_ref(), hook)?;
            for id in &ids {
                db.execute(
                    "DELETE FROM data_keys WHERE tenant = $1 AND key_id = $2",
                    &[&tenant.as_str(), &id.as_bytes().as_slice()],
                )?;
            }
            Ok(ids)
        })
    }

    /// With the audit chain in the database, a create is group-committed like a standalone
    /// record: its row goes into the compare-and-set statement that appends its record
    /// (with the other callers' rows and records), on the condition that its data key is
    /// still active; the writer lock is taken only when that statement is refused, to find
    /// which row it was refused for.
    fn insert_credential(&self, row: &CredentialRow, hook: Hook<'_>) -> Result<(), StorageError> {
        if let Some(w) = &self.chain {
            let mut collected = Collect(Vec::new());
            let head = hook(&mut collected).map_err(StorageError::Hook)?;
            if collected.0.is_empty() {
                // The hook recorded elsewhere (a file log or a sink): the row alone.
                return self.write(|db| {
                    check_key_use(db, row)?;
                    write_row(db, INSERT_CREDENTIAL, row)?;
                    set_head(db, head)
                });
            }
            return self
                .group(w, collected.0, Some(row.clone()), Vec::new())
                .map(|_| ());
        }
        self.write(|db| {
            check_key_use(db, row)?;
            write_row(db, INSERT_CREDENTIAL, row)?;
            hook_in(db, self.chain.as_ref(), hook)
        })
    }

    fn credential(
        &self,
        tenant: &TenantId,
        id: &CredentialId,
    ) -> Result<Option<CredentialRow>, StorageError> {
        self.read(|db| {
            db.query_opt(
                concat!(
                    "SELECT ",
                    cred_cols!(),
                    " FROM credentials WHERE tenant = $1 AND id = $2"
                ),
                &[&tenant.as_str(), &id.as_str()],
            )?
            .as_ref()
            .map(cred_from_row)
            .transpose()
        })
    }

    /// A row read before for an access, else read now (and kept): the guarded append that
    /// records the access checks it is still the row in the database.
    fn credential_for_access(
        &self,
        tenant: &TenantId,
        id: &CredentialId,
    ) -> Result<Option<Arc<CredentialRow>>, StorageError> {
        let key = (tenant.clone(), id.clone());
        if let Some(row) = self.kept.lock().ok().and_then(|k| k.get(&key).cloned()) {
            return Ok(Some(row));
        }
        let row = self.credential(tenant, id)?.map(Arc::new);
        if let (Some(r), Ok(mut kept)) = (&row, self.kept.lock()) {
            crate::storage::keep(&mut kept, key, Arc::clone(r));
        }
        Ok(row)
    }

    fn forget_credential(&self, tenant: &TenantId, id: &CredentialId) {
        if let Ok(mut kept) = self.kept.lock() {
            kept.remove(&(tenant.clone(), id.clone()));
        }
    }

    fn credential_by_name(
        &self,
        tenant: &TenantId,
        name: &str,
        environment: &str,
    ) -> Result<Option<CredentialRow>, StorageError> {
        self.read(|db| {
            db.query_opt(
                concat!(
                    "SELECT ",
                    cred_cols!(),
                    " FROM credentials WHERE tenant = $1 AND name = $2 AND environment = $3
                     ORDER BY is_active DESC, updated_at DESC LIMIT 1"
                ),
                &[&tenant.as_str(), &name, &environment],
            )?
            .as_ref()
            .map(cred_from_row)
            .transpose()
        })
    }

    fn credentials(
        &self,
        tenant: &TenantId,
        filter: &ListFilter,
    ) -> Result<Vec<CredentialRow>, StorageError> {
        let rows = self.read(|db| {
            db.query(
                concat!(
                    "SELECT ",
                    cred_cols!(),
                    " FROM credentials
                     WHERE tenant = $1
                       AND ($2::text IS NULL OR type = $2)
                       AND ($3::text IS NULL OR environment = $3)
                       AND ($4::boolean IS NULL OR is_active = $4)
                       AND ($5::bigint IS NULL OR (expires_at IS NOT NULL AND expires_at < $5))
                     ORDER BY name, environment, id"
                ),
                &[
                    &tenant.as_str(),
                    &filter.type_name,
                    &filter.environment,
                    &filter.active,
                    &filter.expiring_before,
                ],
            )
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let row = cred_from_row(r)?;
            if filter.tags.iter().all(|t| row.tags.contains(t)) {
                out.push(row);
            }
        }
        Ok(out)
    }

    fn update_credential(
        &self,
        row: &CredentialRow,
        expected_version: u64,
        hook: Hook<'_>,
    ) -> Result<(), StorageError> {
        // A kept copy would only cost a failed guarded append.
        self.forget_credential(&row.tenant, &row.id);
        self.write(|db| {
            check_version(version_of(db, &row.tenant, &row.id)?, expected_version)?;
            check_key_use(db, row)?;
            write_row(db, UPDATE_CREDENTIAL, row)?;
            hook_in(db, self.chain.as_ref(), hook)
        })
    }

    fn delete_credential(
        &self,
        tenant: &TenantId,
        id: &CredentialId,
        expected_version: u64,
        hook: Hook<'_>,
    ) -> Result<(), StorageError> {
        self.forget_credential(tenant, id);
        self.write(|db| {
            check_version(version_of(db, tenant, id)?, expected_version)?;
            hook_in(db, self.chain.as_ref(), hook)?;
            // Overwrite the sealed data first: the old tuple version keeps the ciphertext until
            // VACUUM, the new one does not (see the threat model on dead tuples).
            db.execute(
                "UPDATE credentials SET secret = '\\x', public = '{}'
                 WHERE tenant = $1 AND id = $2",
                &[&tenant.as_str(), &id.as_str()],
            )?;
            db.execute(
                "DELETE FROM credentials WHERE tenant = $1 AND id = $2",
                &[&tenant.as_str(), &id.as_str()],
            )?;
            Ok(())
        })
    }

    fn credentials_not_under(
        &self,
        tenant: &TenantId,
        key: &KeyId,
        after: Option<&CredentialId>,
        limit: usize,
    ) -> Result<Vec<CredentialRow>, StorageError> {
        self.read(|db| {
            db.query(
                concat!(
                    "SELECT ",
                    cred_cols!(),
                    " FROM credentials WHERE tenant = $1 AND key_id <> $2 AND id > $3
                     ORDER BY id LIMIT $4"
                ),
                &[
                    &tenant.as_str(),
                    &key.as_bytes().as_slice(),
                    &after.map_or("", |a| a.as_str()),
                    &to_i64(limit as u64),
                ],
            )?
            .iter()
            .map(cred_from_row)
            .collect()
        })
    }

    fn count_under(
        &self,
        tenant: &TenantId,
        key: &KeyId,
        under: bool,
    ) -> Result<u64, StorageError> {
        self.read(|db| {
            let sql = if under {
                "SELECT count(*) FROM credentials WHERE tenant = $1 AND key_id = $2"
            } else {
                "SELECT count(*) FROM credentials WHERE tenant = $1 AND key_id <> $2"
            };
            let r = db.query_opt(sql, &[&tenant.as_str(), &key.as_bytes().as_slice()])?;
            Ok(match r {
                Some(r) => to_u64(get(&r, 0, "credentials")?),
                None => 0,
            })
        })
    }

    fn reseal(&self, tenant: &TenantId, batch: &[Reseal]) -> Result<usize, StorageError> {
        for r in batch {
            self.forget_credential(tenant, &r.id);
        }
        self.write(|db| {
            let st = db.st("UPDATE credentials SET key_id = $5, secret = $6, mac = $7
                 WHERE tenant = $1 AND id = $2 AND version = $3 AND key_id = $4")?;
            let mut n = 0;
            for r in batch {
                n +=
                    db.c.execute(
                        &st,
                        &[
                            &tenant.as_str(),
                            &r.id.as_str(),
                            &to_i64(r.version),
                            &r.old_key.as_bytes().as_slice(),
                            &r.new_key.as_bytes().as_slice(),
                            &r.secret,
                            &r.mac,
                        ],
                    )
                    .map_err(|e| match constraint(&e) {
                        Some((c, _)) if *c == SqlState::FOREIGN_KEY_VIOLATION => {
                            StorageError::UnknownKey { key_id: r.new_key }
                        }
                        _ => pe(e),
                    })?;
            }
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    fn record_use(
        &self,
        tenant: &TenantId,
        uses: &[(CredentialId, i64)],
        head: Option<AuditHead>,
    ) -> Result<(), StorageError> {
        // One statement for every row (a flush of a busy second can name thousands, and the
        // writer lock is held meanwhile); flushes run one at a time under that lock.
        let ids: Vec<&str> = uses.iter().map(|(id, _)| id.as_str()).collect();
        let ats: Vec<i64> = uses.iter().map(|&(_, at)| at).collect();
        self.write(|db| {
            db.execute(
                "UPDATE credentials c
                 SET last_used_at = greatest(coalesce(c.last_used_at, 0), u.at)
                 FROM unnest($2::text[], $3::bigint[]) AS u (id, at)
                 WHERE c.tenant = $1 AND c.id = u.id",
                &[&tenant.as_str(), &ids, &ats],
            )?;
            set_head(db, head)
        })
    }

    fn record_test(
        &self,
        tenant: &TenantId,
        id: &CredentialId,
        result: &TestRecord,
        hook: Hook<'_>,
    ) -> Result<(), StorageError> {
        self.write(|db| {
            version_of(db, tenant, id)?;
            hook_in(db, self.chain.as_ref(), hook)?;
            db.execute(
                "UPDATE credentials SET last_tested = $3, test_status = $4, test_message = $5
                 WHERE tenant = $1 AND id = $2",
                &[
                    &tenant.as_str(),
                    &id.as_str(),
                    &result.at,
                    &result.status,
                    &result.message,
                ],
            )?;
            Ok(())
        })
    }

    fn check_and_mark_step(
        &self,
        key: &str,
        step: u64,
        retain_until: u64,
        now: u64,
    ) -> Result<bool, StorageError> {
        // One statement: the conflicting row is locked and its condition re-checked on its
        // latest version, so of several nodes submitting one code exactly one is accepted.
        self.read(|db| {
            let r = db.query_opt(
                "INSERT INTO replay_guard AS g (key, step, retain_until) VALUES ($1, $2, $3)
                 ON CONFLICT (key) DO UPDATE SET step = excluded.step,
                   retain_until = excluded.retain_until
                 WHERE g.retain_until <= $4 OR g.step < excluded.step
                 RETURNING 1",
                &[&key, &to_i64(step), &to_i64(retain_until), &to_i64(now)],
            )?;
            Ok(r.is_some())
        })
    }

    fn otp_locked_until(&self, key: &str, now: u64) -> Result<Option<u64>, StorageError> {
        self.read(|db| {
            Ok(read_otp(
                db,
                "SELECT window_start, failures, locked_until FROM otp_throttle WHERE key = $1",
                key,
            )?
            .and_then(|f| f.locked_at(now)))
        })
    }

    fn otp_failed(
        &self,
        key: &str,
        now: u64,
        throttle: &OtpThrottle,
    ) -> Result<Option<u64>, StorageError> {
        self.tx(|db| {
            // The row exists (a zero state reads as no state), then is locked for this count.
            db.execute(
                "INSERT INTO otp_throttle (key, window_start, failures, locked_until)
                 VALUES ($1, 0, 0, 0) ON CONFLICT (key) DO NOTHING",
                &[&key],
            )?;
            let next = read_otp(
                db,
                "SELECT window_start, failures, locked_until FROM otp_throttle WHERE key = $1
                 FOR UPDATE",
                key,
            )?
            .unwrap_or_default()
            .after_failure(now, throttle);
            db.execute(
                "UPDATE otp_throttle SET window_start = $2, failures = $3, locked_until = $4
                 WHERE key = $1",
                &[
                    &key,
                    &to_i64(next.window_start),
                    &i64::from(next.failures),
                    &to_i64(next.locked_until),
                ],
            )?;
            Ok(next.locked_at(now))
        })
    }

    fn otp_succeeded(&self, key: &str) -> Result<(), StorageError> {
        self.read(|db| {
            db.execute("DELETE FROM otp_throttle WHERE key = $1", &[&key])?;
            Ok(())
        })
    }

    fn hotp_counter(&self, key: &str, initial: u64) -> Result<u64, StorageError> {
        self.read(|db| {
            Ok(
                read_hotp(db, "SELECT next FROM hotp_counters WHERE key = $1", key)?
                    .unwrap_or(initial),
            )
        })
    }

    fn advance_hotp_counter(
        &self,
        key: &str,
        initial: u64,
        from: u64,
        to: u64,
    ) -> Result<bool, StorageError> {
        let to_db = i64::try_from(to)
            .map_err(|_| StorageError::Backend("HOTP counter past i64::MAX".into()))?;
        self.tx(|db| {
            const LOCKED: &str = "SELECT next FROM hotp_counters WHERE key = $1 FOR UPDATE";
            let current = match read_hotp(db, LOCKED, key)? {
                Some(c) => c,
                None => {
                    if !crate::storage::hotp_may_advance(initial, from, to) {
                        return Ok(false);
                    }
                    let n = db.execute(
                        "INSERT INTO hotp_counters (key, next) VALUES ($1, $2)
                         ON CONFLICT (key) DO NOTHING",
                        &[&key, &to_db],
                    )?;
                    if n == 1 {
                        return Ok(true);
                    }
                    // Another node stored one meanwhile: judge against it.
                    read_hotp(db, LOCKED, key)?.unwrap_or(initial)
                }
            };
            if !crate::storage::hotp_may_advance(current, from, to) {
                return Ok(false);
            }
            db.execute(
                "UPDATE hotp_counters SET next = $2 WHERE key = $1",
                &[&key, &to_db],
            )?;
            Ok(true)
        })
    }

    fn reset_hotp_counter(&self, key: &str) -> Result<(), StorageError> {
        self.read(|db| {
            db.execute("DELETE FROM hotp_counters WHERE key = $1", &[&key])?;
            Ok(())
        })
    }

    fn audit_head(&self) -> Result<Option<AuditHead>, StorageError> {
        self.read(read_head)
    }

    fn records_authenticated(&self) -> Result<bool, StorageError> {
        self.read(|db| read_flag(db, "records_authenticated"))
    }

    fn heads_authenticated(&self) -> Result<bool, StorageError> {
        self.read(|db| read_flag(db, "heads_authenticated"))
    }

    fn authenticate_head(&self, hook: Hook<'_>) -> Result<(), StorageError> {
        self.write(|db| {
            set_flag(db, "heads_authenticated")?;
            hook_in(db, self.chain.as_ref(), hook)
        })
    }

    fn keeps_audit_chain(&self) -> bool {
        self.chain.is_some()
    }

    /// Standalone records (a reveal's `accessed`, a denial) are appended in one autocommit
    /// statement that moves the tip only if it is still the tip they were chained to
    /// (compare-and-set), with the tip this process last saw: one round trip, no
    /// `BEGIN`/`COMMIT`, no lock held between statements. Another node's append in between
    /// makes the statement change nothing; the tip is then read again and the records chained
    /// anew, and after four misses the append takes the writer lock as every other
    /// write does. The tip row stays the one point every append passes through, so the chain
    /// has no fork and no gap.
    ///
    /// Within a process, appends are group-committed: while one batch is being written, the
    /// callers that arrive queue their events, and the next of them writes all of them in one
    /// statement. Each caller returns once the batch holding its events committed (with that
    /// batch's head), or with its error: fail closed, as before.
    fn append_audit(&self, events: &[AuditEvent]) -> Result<Option<AuditHead>, StorageError> {
        self.append_audit_guarded(events, &[])
    }

    /// As [`append_audit`](Storage::append_audit), in the same compare-and-set statement, with
    /// the guarded rows' MACs checked in it: a batch one of whose rows changed is written
    /// caller by caller under the writer lock, where that caller gets
    /// [`StorageError::Stale`].
    fn append_audit_guarded(
        &self,
        events: &[AuditEvent],
        guards: &[RowGuard],
    ) -> Result<Option<AuditHead>, StorageError> {
        let Some(w) = &self.chain else {
            return NoChain.append(events).map(Some).map_err(StorageError::Hook);
        };
        self.group(w, events.to_vec(), None, guards.to_vec())
            .map(Some)
    }

    fn authenticate_records(
        &self,
        macs: &RecordMacs,
        hook: Hook<'_>,
    ) -> Result<usize, StorageError> {
        self.write(|db| {
            let mut n = 0u64;
            for (t, id, version, mac) in &macs.credentials {
                n += db.execute(
                    "UPDATE credentials SET mac = $4
                     WHERE tenant = $1 AND id = $2 AND version = $3 AND mac = '\\x'",
                    &[&t.as_str(), &id.as_str(), &to_i64(*version), mac],
                )?;
            }
            for (t, k, mac) in &macs.keys {
                n += db.execute(
                    "UPDATE data_keys SET mac = $3
                     WHERE tenant = $1 AND key_id = $2 AND mac = '\\x'",
                    &[&t.as_str(), &k.as_bytes().as_slice(), mac],
                )?;
            }
            set_flag(db, "records_authenticated")?;
            hook_in(db, self.chain.as_ref(), hook)?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }
}
