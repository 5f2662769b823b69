//! The SQLite backend: bundled SQLite, WAL journal, versioned migrations, every write in one
//! `BEGIN IMMEDIATE` transaction.
//!
//! **Several processes.** Any number of processes may open one database file: each write
//! transaction takes SQLite's write lock (`BEGIN IMMEDIATE`), waiting up to the lock timeout
//! ([`SqliteStorage::with_lock_timeout`]) for another process's to end, then fails with
//! [`StorageError::Busy`]; readers never wait for writers (WAL). Migrations run once, whichever
//! process comes first. The file must be on a local file system (WAL needs shared memory
//! between the processes; not NFS or SMB).
//!
//! **Durability.** [`SqliteDurability::Full`] (the default) sets `synchronous = FULL`: a
//! committed write survives a crash of the process and of the machine. `Normal` sets
//! `synchronous = NORMAL`: it survives a crash of the process, and a power loss may roll back
//! the last transactions (never corrupt the database). `secure_delete` is on, so deleted rows
//! are overwritten in the database file; the WAL keeps old page images until its next
//! checkpoint (see the threat model).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use credvault_envelope::KeyId;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use crate::ids::{CredentialId, TenantId};
use crate::storage::codec::{check_version, corrupt, json, key_id, to_i64, to_u64};
use crate::storage::{
    AuditHead, CredentialRow, DataKeyRow, Hook, KeyState, ListFilter, OtpFailures, OtpThrottle,
    RecordMacs, Reseal, Storage, StorageError, TenantRow, TestRecord,
};

/// How hard SQLite syncs each commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SqliteDurability {
    /// `synchronous = FULL`: survives power loss.
    #[default]
    Full,
    /// `synchronous = NORMAL`: survives a process crash; power loss may lose recent commits.
    Normal,
}

/// How long a statement waits for another connection's (another process's) write lock by
/// default; [`SqliteStorage::with_lock_timeout`] changes it.
pub const DEFAULT_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The schema, one entry per version. Never edit a landed migration: add one.
const MIGRATIONS: &[&str] = &[
    // 1: tenants, data keys, credentials, replay guard, metadata.
    "CREATE TABLE tenants (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_at INTEGER NOT NULL
     ) STRICT;
     CREATE TABLE data_keys (
        tenant TEXT NOT NULL REFERENCES tenants(id),
        key_id BLOB NOT NULL,
        wrapped BLOB NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('active', 'retiring')),
        usage INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (tenant, key_id)
     ) STRICT;
     CREATE TABLE credentials (
        tenant TEXT NOT NULL REFERENCES tenants(id),
        id TEXT NOT NULL,
        name TEXT NOT NULL,
        type TEXT NOT NULL,
        environment TEXT NOT NULL,
        description TEXT NOT NULL,
        tags TEXT NOT NULL,
        is_active INTEGER NOT NULL,
        expires_at INTEGER,
        created_by TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        version INTEGER NOT NULL,
        last_used_at INTEGER,
        last_tested INTEGER,
        test_status TEXT,
        test_message TEXT,
        public TEXT NOT NULL,
        secret_fields TEXT NOT NULL,
        key_id BLOB NOT NULL,
        secret BLOB NOT NULL,
        PRIMARY KEY (tenant, id),
        FOREIGN KEY (tenant, key_id) REFERENCES data_keys(tenant, key_id)
     ) STRICT;
     CREATE UNIQUE INDEX credentials_active_name
        ON credentials(tenant, name, environment) WHERE is_active = 1;
     -- No index on (tenant, key_id): a rotation rewrites key_id in every row, and such an
     -- index tripled its page writes; counting and retiring scan the tenant's rows once.
     CREATE TABLE replay_guard (
        key TEXT PRIMARY KEY,
        step INTEGER NOT NULL,
        retain_until INTEGER NOT NULL
     ) STRICT;
     CREATE TABLE vault_meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
     ) STRICT;",
    // 2: lookups by name see inactive rows too, which the partial unique index leaves out, so
    // each one scanned the table (1,000 `cv://` references cost 1,000 scans).
    "CREATE INDEX credentials_name ON credentials(tenant, name, environment);",
    // 3: record MACs. A database with no data key yet (a new vault) starts authenticated;
    // an existing one is authenticated by the store when it next opens it.
    "ALTER TABLE credentials ADD COLUMN mac BLOB NOT NULL DEFAULT X'';
     ALTER TABLE data_keys ADD COLUMN mac BLOB NOT NULL DEFAULT X'';
     INSERT INTO vault_meta (key, value)
        SELECT 'records_authenticated', '1' WHERE NOT EXISTS (SELECT 1 FROM data_keys);",
    // 4: one-time-code throttling (RFC 4226 §7.3), shared by every process on the vault.
    "CREATE TABLE otp_throttle (
        key TEXT PRIMARY KEY,
        window_start INTEGER NOT NULL,
        failures INTEGER NOT NULL,
        locked_until INTEGER NOT NULL
     ) STRICT;",
    // 5: audit heads carry a tag under the audit key ("seq:hash:tag"). A database with no head
    // yet starts with tagged heads; an existing one is switched over by the store when it next
    // opens it (audited once), after which an untagged head is refused.
    "INSERT INTO vault_meta (key, value)
        SELECT 'heads_authenticated', '1'
        WHERE NOT EXISTS (SELECT 1 FROM vault_meta WHERE key = 'audit_head');",
    // 6: reveal policies set per credential (a JSON object: secret field -> policy), only ever
    // stricter than the type's. Covered by the record MAC when not empty, so rows from before
    // keep their MACs.
    "ALTER TABLE credentials ADD COLUMN reveal TEXT NOT NULL DEFAULT '{}';",
    // 7: HOTP counters (RFC 4226), one per credential (`TENANT/CREDENTIAL_ID`), advanced
    // atomically by every process on the vault. Stored as i64; counters past i64::MAX are
    // refused by the store.
    "CREATE TABLE hotp_counters (
        key TEXT PRIMARY KEY,
        next INTEGER NOT NULL
     ) STRICT;",
];

/// The SQLite backend: bundled SQLite, WAL journal, versioned migrations, every write in one
/// `BEGIN IMMEDIATE` transaction. One connection per handle, behind a mutex: SQLite has one
/// writer at a time anyway, and statements are cached on it.
///
/// **Several processes.** Any number of processes may open one database file: each write
/// transaction takes SQLite's write lock (`BEGIN IMMEDIATE`), waiting up to the lock timeout
/// ([`SqliteStorage::with_lock_timeout`]) for another process's to end, then fails with
/// [`StorageError::Busy`]; readers never wait for writers (WAL). Migrations run once, whichever
/// process comes first. The file must be on a local file system (WAL needs shared memory
/// between the processes; not NFS or SMB).
///
/// **Durability.** [`SqliteDurability::Full`] (the default) sets `synchronous = FULL`: a
/// committed write survives a crash of the process and of the machine. `Normal` sets
/// `synchronous = NORMAL`: it survives a crash of the process, and a power loss may roll back
/// the last transactions (never corrupt the database). `secure_delete` is on, so deleted rows
/// are overwritten in the database file; the WAL keeps old page images until its next
/// checkpoint (see the threat model).
///
/// **Repeated accesses.** A row read for an access (a reveal) is kept, with SQLite's own
/// answer to "has anything changed". The next access to the same credential returns the copy
/// only while that answer is unchanged (decisions 0021 and 0029). For a database file in WAL
/// mode the answer is the header of SQLite's shared WAL index (`FILE-shm`), which every
/// commit, by any connection in any process, replaces before anyone can read what it wrote:
/// one `pread`. Otherwise it is `PRAGMA data_version` (moves when any other connection
/// commits) with this connection's changed-row count: one small statement.
pub struct SqliteStorage {
    conn: Mutex<Connection>,
    /// `FILE-shm`, read only, when the database is a file in WAL mode.
    wal_index: Option<std::fs::File>,
    /// Rows read for accesses, each with the database's state when it was read (see
    /// [`Storage::credential_for_access`]). When both locks are held, `conn`'s is taken
    /// first.
    kept: Mutex<HashMap<CredentialId, Kept>>,
}

/// A row kept for accesses and the state of the database it was read in.
struct Kept {
    row: Arc<CredentialRow>,
    state: DbState,
}

/// The size of the WAL index's header; the `-shm` file starts with two copies of it.
const WAL_INDEX_HEADER: usize = 48;
/// The WAL index format version in the header's first four bytes (native byte order).
const WAL_INDEX_VERSION: u32 = 3_007_000;

/// What changes whenever any row of the database may have changed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DbState {
    /// The WAL index header (sqlite.org/walformat.html, section 2.2.1): every commit
    /// publishes a new one (its change counter, last frame, page count and checksum move),
    /// and a reader sees the commit only once it is published.
    WalIndex([u8; WAL_INDEX_HEADER]),
    /// `PRAGMA data_version` (moves when another connection, in this process or another,
    /// commits) and this connection's own count of changed rows (`sqlite3_total_changes`).
    Version { data_version: i64, own_changes: u64 },
}

impl DbState {
    fn of(c: &Connection, wal_index: Option<&std::fs::File>) -> Result<Self, StorageError> {
        if let Some(h) = wal_index.and_then(wal_index_header) {
            return Ok(Self::WalIndex(h));
        }
        let data_version = c
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(be)?;
        Ok(Self::Version {
            data_version,
            own_changes: c.total_changes(),
        })
    }
}

/// The WAL index's header as SQLite's own readers accept it: both copies equal (a writer
/// changes the second copy first, so a header read during a commit has them differ), the
/// index initialised, the known version. `None` otherwise, or if it cannot be read.
#[cfg(unix)]
fn wal_index_header(f: &std::fs::File) -> Option<[u8; WAL_INDEX_HEADER]> {
    use std::os::unix::fs::FileExt;
    let mut both = [0u8; 2 * WAL_INDEX_HEADER];
    f.read_exact_at(&mut both, 0).ok()?;
    let (first, second) = both.split_at(WAL_INDEX_HEADER);
    let version = u32::from_ne_bytes(first[..4].try_into().ok()?);
    // isInit, the byte after iVersion, unused and iChange.
    (first == second && version == WAL_INDEX_VERSION && first[12] == 1)
        .then(|| first.try_into().ok())
        .flatten()
}

#[cfg(not(unix))]
fn wal_index_header(_: &std::fs::File) -> Option<[u8; WAL_INDEX_HEADER]> {
    None
}

/// `FILE-shm` of a database file in WAL mode, opened read only; `None` for a database in
/// memory or in another journal mode (the state then comes from `PRAGMA data_version`).
/// This connection keeps the file in use: SQLite removes it only when its last connection
/// closes.
fn wal_index_of(c: &Connection) -> Option<std::fs::File> {
    let mode: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0)).ok()?;
    if !mode.eq_ignore_ascii_case("wal") {
        return None;
    }
    let path = c.path().filter(|p| !p.is_empty())?;
    std::fs::File::open(format!("{path}-shm")).ok()
}

impl std::fmt::Debug for SqliteStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStorage").finish_non_exhaustive()
    }
}

fn be(e: rusqlite::Error) -> StorageError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            StorageError::Busy {
                resource: "database",
            }
        }
        _ => StorageError::Backend(e.to_string()),
    }
}

fn key_bytes(k: &KeyId) -> &[u8] {
    k.as_bytes()
}

macro_rules! cred_cols {
    () => {
        "tenant, id, name, type, environment, description, tags, is_active, \
         expires_at, created_by, created_at, updated_at, version, last_used_at, last_tested, \
         test_status, test_message, public, secret_fields, key_id, secret, mac, reveal"
    };
}

const CRED_COLS: &str = cred_cols!();

/// One credential by primary key.
const CRED_BY_ID: &str = concat!(
    "SELECT ",
    cred_cols!(),
    " FROM credentials WHERE tenant = ?1 AND id = ?2"
);

fn cred_from_row(r: &Row<'_>) -> Result<CredentialRow, StorageError> {
    let get_s = |i: usize| r.get::<_, String>(i).map_err(be);
    let tags: Vec<String> =
        serde_json::from_str(&get_s(6)?).map_err(|_| corrupt("credentials", "tags"))?;
    let secret_fields: Vec<String> =
        serde_json::from_str(&get_s(18)?).map_err(|_| corrupt("credentials", "secret_fields"))?;
    let kb: Vec<u8> = r.get(19).map_err(be)?;
    Ok(CredentialRow {
        tenant: TenantId::new(get_s(0)?).map_err(|_| corrupt("credentials", "tenant"))?,
        id: CredentialId::parse(&get_s(1)?).map_err(|_| corrupt("credentials", "id"))?,
        name: get_s(2)?,
        type_name: get_s(3)?,
        environment: get_s(4)?,
        description: get_s(5)?,
        tags,
        is_active: r.get::<_, i64>(7).map_err(be)? != 0,
        expires_at: r.get(8).map_err(be)?,
        created_by: get_s(9)?,
        created_at: r.get(10).map_err(be)?,
        updated_at: r.get(11).map_err(be)?,
        version: to_u64(r.get(12).map_err(be)?),
        last_used_at: r.get(13).map_err(be)?,
        last_tested: r.get(14).map_err(be)?,
        test_status: r.get(15).map_err(be)?,
        test_message: r.get(16).map_err(be)?,
        public: get_s(17)?,
        secret_fields,
        key_id: key_id(&kb, "credentials")?,
        secret: r.get(20).map_err(be)?,
        mac: r.get(21).map_err(be)?,
        reveal: serde_json::from_str(&get_s(22)?).map_err(|_| corrupt("credentials", "reveal"))?,
    })
}

/// Reads one credential row on `c`.
fn read_credential(
    c: &Connection,
    tenant: &TenantId,
    id: &CredentialId,
) -> Result<Option<CredentialRow>, StorageError> {
    let mut s = c.prepare_cached(CRED_BY_ID).map_err(be)?;
    let mut rows = s.query(params![tenant.as_str(), id.as_str()]).map_err(be)?;
    match rows.next().map_err(be)? {
        Some(r) => Ok(Some(cred_from_row(r)?)),
        None => Ok(None),
    }
}

fn key_from_row(r: &Row<'_>) -> Result<DataKeyRow, StorageError> {
    let t: String = r.get(0).map_err(be)?;
    let kb: Vec<u8> = r.get(1).map_err(be)?;
    let st: String = r.get(3).map_err(be)?;
    Ok(DataKeyRow {
        tenant: TenantId::new(t).map_err(|_| corrupt("data_keys", "tenant"))?,
        key_id: key_id(&kb, "data_keys")?,
        wrapped: r.get(2).map_err(be)?,
        state: KeyState::parse(&st).ok_or_else(|| corrupt("data_keys", "state"))?,
        usage: to_u64(r.get(4).map_err(be)?),
        created_at: r.get(5).map_err(be)?,
        mac: r.get(6).map_err(be)?,
    })
}

fn map_unique(e: rusqlite::Error, row: &CredentialRow) -> StorageError {
    match &e {
        rusqlite::Error::SqliteFailure(f, Some(msg))
            if f.code == rusqlite::ErrorCode::ConstraintViolation
                && msg.contains("credentials.tenant, credentials.name") =>
        {
            StorageError::NameTaken {
                name: row.name.clone(),
                environment: row.environment.clone(),
            }
        }
        rusqlite::Error::SqliteFailure(f, Some(msg))
            if f.code == rusqlite::ErrorCode::ConstraintViolation
                && msg.contains("FOREIGN KEY") =>
        {
            StorageError::UnknownKey { key_id: row.key_id }
        }
        _ => be(e),
    }
}

/// A row may name the tenant's active key, or keep the key its stored version names (a
/// metadata change during a rotation); it may never start naming a retiring key. A writer
/// that sealed under the active key just before a rotation started gets `UnknownKey` and
/// seals again, instead of adding a row the rotation has already swept past.
fn check_key_use(tx: &rusqlite::Transaction<'_>, row: &CredentialRow) -> Result<(), StorageError> {
    let state: Option<String> = tx
        .prepare_cached("SELECT state FROM data_keys WHERE tenant = ?1 AND key_id = ?2")
        .and_then(|mut s| {
            s.query_row(params![row.tenant.as_str(), key_bytes(&row.key_id)], |r| {
                r.get(0)
            })
            .optional()
        })
        .map_err(be)?;
    let unknown = Err(StorageError::UnknownKey { key_id: row.key_id });
    match state.as_deref() {
        None => unknown,
        Some("active") => Ok(()),
        Some(_) => {
            let stored: Option<Vec<u8>> = tx
                .prepare_cached("SELECT key_id FROM credentials WHERE tenant = ?1 AND id = ?2")
                .and_then(|mut s| {
                    s.query_row(params![row.tenant.as_str(), row.id.as_str()], |r| r.get(0))
                        .optional()
                })
                .map_err(be)?;
            if stored.as_deref() == Some(key_bytes(&row.key_id)) {
                Ok(())
            } else {
                unknown
            }
        }
    }
}

/// Runs `sql` (an insert or an update naming every column as `:column`) for `row`.
fn write_row(
    tx: &rusqlite::Transaction<'_>,
    sql: &str,
    row: &CredentialRow,
) -> Result<(), StorageError> {
    tx.prepare_cached(sql)
        .and_then(|mut s| {
            s.execute(rusqlite::named_params! {
                ":tenant": row.tenant.as_str(),
                ":id": row.id.as_str(),
                ":name": row.name,
                ":type": row.type_name,
                ":environment": row.environment,
                ":description": row.description,
                ":tags": json(&row.tags),
                ":is_active": row.is_active,
                ":expires_at": row.expires_at,
                ":created_by": row.created_by,
                ":created_at": row.created_at,
                ":updated_at": row.updated_at,
                ":version": to_i64(row.version),
                ":last_used_at": row.last_used_at,
                ":last_tested": row.last_tested,
                ":test_status": row.test_status,
                ":test_message": row.test_message,
                ":public": row.public,
                ":secret_fields": json(&row.secret_fields),
                ":key_id": key_bytes(&row.key_id),
                ":secret": row.secret,
                ":mac": row.mac,
                ":reveal": json(&row.reveal),
            })
        })
        .map(|_| ())
        .map_err(|e| map_unique(e, row))
}

/// Inserts a data key row, verbatim.
fn insert_key(tx: &rusqlite::Transaction<'_>, key: &DataKeyRow) -> Result<(), StorageError> {
    tx.execute(
        "INSERT INTO data_keys (tenant, key_id, wrapped, state, usage, created_at, mac)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            key.tenant.as_str(),
            key_bytes(&key.key_id),
            key.wrapped,
            key.state.as_str(),
            to_i64(key.usage),
            key.created_at,
            key.mac
        ],
    )
    .map_err(be)?;
    Ok(())
}

fn set_head(tx: &rusqlite::Transaction<'_>, head: Option<AuditHead>) -> Result<(), StorageError> {
    let Some(h) = head else { return Ok(()) };
    let cur = read_head(tx)?;
    if crate::storage::later(cur, Some(h)) == cur {
        return Ok(());
    }
    let value = h.to_meta();
    tx.prepare_cached(
        "INSERT INTO vault_meta (key, value) VALUES ('audit_head', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .and_then(|mut s| s.execute(params![value]))
    .map_err(be)?;
    Ok(())
}

fn read_otp(c: &Connection, key: &str) -> Result<Option<OtpFailures>, StorageError> {
    c.prepare_cached("SELECT window_start, failures, locked_until FROM otp_throttle WHERE key = ?1")
        .and_then(|mut s| {
            s.query_row(params![key], |r| {
                Ok(OtpFailures {
                    window_start: to_u64(r.get(0)?),
                    failures: u32::try_from(r.get::<_, i64>(1)?).unwrap_or(u32::MAX),
                    locked_until: to_u64(r.get(2)?),
                })
            })
            .optional()
        })
        .map_err(be)
}

/// Whether the `vault_meta` flag `key` is set.
fn read_flag(c: &Connection, key: &str) -> Result<bool, StorageError> {
    let v: Option<String> = c
        .prepare_cached("SELECT value FROM vault_meta WHERE key = ?1")
        .and_then(|mut s| s.query_row(params![key], |r| r.get(0)).optional())
        .map_err(be)?;
    Ok(v.as_deref() == Some("1"))
}

/// Sets the `vault_meta` flag `key`.
fn set_flag(c: &Connection, key: &str) -> Result<(), StorageError> {
    c.prepare_cached(
        "INSERT INTO vault_meta (key, value) VALUES (?1, '1')
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .and_then(|mut s| s.execute(params![key]))
    .map_err(be)?;
    Ok(())
}

fn read_hotp(c: &Connection, key: &str, initial: u64) -> Result<u64, StorageError> {
    let v: Option<i64> = c
        .prepare_cached("SELECT next FROM hotp_counters WHERE key = ?1")
        .and_then(|mut s| s.query_row(params![key], |r| r.get(0)).optional())
        .map_err(be)?;
    match v {
        None => Ok(initial),
        Some(n) => u64::try_from(n).map_err(|_| corrupt("hotp_counters", "negative counter")),
    }
}

fn read_head(conn: &Connection) -> Result<Option<AuditHead>, StorageError> {
    let v: Option<String> = conn
        .prepare_cached("SELECT value FROM vault_meta WHERE key = 'audit_head'")
        .and_then(|mut s| s.query_row([], |r| r.get(0)).optional())
        .map_err(be)?;
    let Some(v) = v else { return Ok(None) };
    AuditHead::from_meta(&v)
        .map(Some)
        .ok_or_else(|| corrupt("vault_meta", "audit head"))
}

fn hook_in(tx: &rusqlite::Transaction<'_>, hook: Hook<'_>) -> Result<(), StorageError> {
    let head = hook(&mut crate::storage::NoChain).map_err(StorageError::Hook)?;
    set_head(tx, head)
}

impl SqliteStorage {
    /// Opens (creating if needed) a database file and brings its schema up to date.
    ///
    /// # Errors
    /// [`StorageError::Backend`] if the file cannot be opened or migrated, or was written by
    /// a newer version.
    pub fn open(
        path: impl AsRef<Path>,
        durability: SqliteDurability,
    ) -> Result<Self, StorageError> {
        let conn = Connection::open(path).map_err(be)?;
        Self::setup(conn, durability)
    }

    /// A private in-memory database (for tests).
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_in_memory() -> Result<Self, StorageError> {
        let conn = Connection::open_in_memory().map_err(be)?;
        Self::setup(conn, SqliteDurability::Full)
    }

    fn setup(mut conn: Connection, durability: SqliteDurability) -> Result<Self, StorageError> {
        conn.busy_timeout(DEFAULT_LOCK_TIMEOUT).map_err(be)?;
        let sync = match durability {
            SqliteDurability::Full => "FULL",
            SqliteDurability::Normal => "NORMAL",
        };
        // Switching a new database to WAL can answer SQLITE_BUSY at once, without the busy
        // handler, while another process opening it at the same moment does the same: retry
        // within the lock timeout.
        let until = std::time::Instant::now() + DEFAULT_LOCK_TIMEOUT;
        loop {
            match conn.execute_batch(&format!(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON;
                 PRAGMA secure_delete = ON;"
            )) {
                Ok(()) => break,
                Err(e)
                    if matches!(
                        e.sqlite_error_code(),
                        Some(
                            rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                        )
                    ) && std::time::Instant::now() < until =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => return Err(be(e)),
            }
        }
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(be)?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StorageError::Backend(format!(
                "database schema version {version} is newer than this build ({known})"
            )));
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(to_u64(version) as usize) {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(be)?;
            // Another process opening the same file may have applied it meanwhile.
            let now: i64 = tx
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(be)?;
            if to_u64(now) > i as u64 {
                continue;
            }
            tx.execute_batch(m).map_err(be)?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
                .map_err(be)?;
            tx.commit().map_err(be)?;
        }
        let wal_index = wal_index_of(&conn);
        Ok(Self {
            conn: Mutex::new(conn),
            wal_index,
            kept: Mutex::new(HashMap::new()),
        })
    }

    /// Sets how long a write waits for another process's write lock before failing with
    /// [`StorageError::Busy`] (default [`DEFAULT_LOCK_TIMEOUT`]).
    ///
    /// # Errors
    /// [`StorageError::Backend`].
    pub fn with_lock_timeout(self, timeout: std::time::Duration) -> Result<Self, StorageError> {
        self.lock()?.busy_timeout(timeout).map_err(be)?;
        Ok(self)
    }

    fn lock(&self) -> Result<MutexGuard<'_, Connection>, StorageError> {
        self.conn
            .lock()
            .map_err(|_| StorageError::Backend("sqlite connection lock poisoned".into()))
    }

    /// The schema version of the open database.
    ///
    /// # Errors
    /// [`StorageError::Backend`].
    pub fn schema_version(&self) -> Result<u32, StorageError> {
        let c = self.lock()?;
        let v: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(be)?;
        Ok(u32::try_from(v).unwrap_or(0))
    }

    /// The replay guard, throttling and HOTP counters, for a move to another backend.
    ///
    /// # Errors
    /// [`StorageError`].
    pub fn one_time_state(&self) -> Result<crate::storage::OneTimeState, StorageError> {
        let c = self.lock()?;
        let mut out = crate::storage::OneTimeState::default();
        let mut s = c
            .prepare("SELECT key, step, retain_until FROM replay_guard ORDER BY key")
            .map_err(be)?;
        let rows = s
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(be)?;
        for r in rows {
            let (k, step, until) = r.map_err(be)?;
            out.replay.push((k, to_u64(step), to_u64(until)));
        }
        let mut s = c
            .prepare(
                "SELECT key, window_start, failures, locked_until FROM otp_throttle ORDER BY key",
            )
            .map_err(be)?;
        let rows = s
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    OtpFailures {
                        window_start: to_u64(r.get(1)?),
                        failures: u32::try_from(r.get::<_, i64>(2)?).unwrap_or(u32::MAX),
                        locked_until: to_u64(r.get(3)?),
                    },
                ))
            })
            .map_err(be)?;
        for r in rows {
            out.throttle.push(r.map_err(be)?);
        }
        let mut s = c
            .prepare("SELECT key, next FROM hotp_counters ORDER BY key")
            .map_err(be)?;
        let rows = s
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(be)?;
        for r in rows {
            let (k, n) = r.map_err(be)?;
            out.hotp.push((k, to_u64(n)));
        }
        Ok(out)
    }

    /// Writes a snapshot's rows into this new, empty database in one transaction, verbatim,
    /// with `head` as its audit head (a restore).
    ///
    /// # Errors
    /// [`StorageError::Backend`] if the database holds a tenant already; [`StorageError`].
    pub(crate) fn import(
        &self,
        snap: &crate::backup::Snapshot,
        head: AuditHead,
    ) -> Result<(), StorageError> {
        self.write(|tx| {
            let held: Option<i64> = tx
                .query_row("SELECT 1 FROM tenants LIMIT 1", [], |r| r.get(0))
                .optional()
                .map_err(be)?;
            if held.is_some() {
                return Err(StorageError::Backend(
                    "the database holds tenants already; restore into a new vault".into(),
                ));
            }
            for t in &snap.tenants {
                tx.execute(
                    "INSERT INTO tenants (id, name, created_at) VALUES (?1, ?2, ?3)",
                    params![t.id.as_str(), t.name, t.created_at],
                )
                .map_err(be)?;
            }
            for k in &snap.keys {
                insert_key(tx, k)?;
            }
            let insert = format!(
                "INSERT INTO credentials ({CRED_COLS}) VALUES (:tenant, :id, :name, :type,
                 :environment, :description, :tags, :is_active, :expires_at, :created_by,
                 :created_at, :updated_at, :version, :last_used_at, :last_tested,
                 :test_status, :test_message, :public, :secret_fields, :key_id, :secret, :mac,
                 :reveal)"
            );
            for c in &snap.credentials {
                write_row(tx, &insert, c)?;
            }
            for (k, step, until) in &snap.one_time.replay {
                tx.execute(
                    "INSERT INTO replay_guard (key, step, retain_until) VALUES (?1, ?2, ?3)",
                    params![k, to_i64(*step), to_i64(*until)],
                )
                .map_err(be)?;
            }
            for (k, f) in &snap.one_time.throttle {
                tx.execute(
                    "INSERT INTO otp_throttle (key, window_start, failures, locked_until)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![
                        k,
                        to_i64(f.window_start),
                        i64::from(f.failures),
                        to_i64(f.locked_until)
                    ],
                )
                .map_err(be)?;
            }
            for (k, n) in &snap.one_time.hotp {
                tx.execute(
                    "INSERT INTO hotp_counters (key, next) VALUES (?1, ?2)",
                    params![k, to_i64(*n)],
                )
                .map_err(be)?;
            }
            for (flag, on) in [
                ("records_authenticated", snap.records_authenticated),
                ("heads_authenticated", snap.heads_authenticated),
            ] {
                if on {
                    set_flag(tx, flag)?;
                } else {
                    tx.execute("DELETE FROM vault_meta WHERE key = ?1", params![flag])
                        .map_err(be)?;
                }
            }
            set_head(tx, Some(head))
        })
    }

    /// Runs a statement on the raw connection (tests simulate tampering at rest with it).
    #[doc(hidden)]
    pub fn execute_raw(
        &self,
        sql: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<usize, StorageError> {
        self.lock()?.execute(sql, args).map_err(be)
    }

    /// Appends SQLite's query plan for `sql` to `out`, one detail per line (tests check that a
    /// lookup uses an index).
    #[doc(hidden)]
    pub fn query_plan(&self, sql: &str, out: &mut String) -> Result<(), StorageError> {
        let c = self.lock()?;
        let mut st = c
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .map_err(be)?;
        let mut rows = st.query([]).map_err(be)?;
        while let Some(r) = rows.next().map_err(be)? {
            out.push_str(&r.get::<_, String>(3).map_err(be)?);
            out.push('\n');
        }
        Ok(())
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let mut c = self.lock()?;
        let tx = c
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(be)?;
        let out = f(&tx)?;
        tx.commit().map_err(be)?;
        Ok(out)
    }

    fn version_of(
        tx: &rusqlite::Transaction<'_>,
        tenant: &TenantId,
        id: &CredentialId,
    ) -> Result<u64, StorageError> {
        tx.prepare_cached("SELECT version FROM credentials WHERE tenant = ?1 AND id = ?2")
            .and_then(|mut s| {
                s.query_row(params![tenant.as_str(), id.as_str()], |r| {
                    r.get::<_, i64>(0)
                })
                .optional()
            })
            .map_err(be)?
            .map(to_u64)
            .ok_or(StorageError::NotFound { what: "credential" })
    }
}

impl Storage for SqliteStorage {
    fn create_tenant(
        &self,
        tenant: &TenantRow,
        key: &DataKeyRow,
        hook: Hook<'_>,
    ) -> Result<(), StorageError> {
        self.write(|tx| {
            let n = tx
                .execute(
                    "INSERT INTO tenants (id, name, created_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (id) DO NOTHING",
                    params![tenant.id.as_str(), tenant.name, tenant.created_at],
                )
                .map_err(be)?;
            if n == 0 {
                return Err(StorageError::TenantExists {
                    tenant: tenant.id.to_string(),
                });
            }
            insert_key(tx, key)?;
            hook_in(tx, hook)
        })
    }

    fn tenant(&self, id: &TenantId) -> Result<Option<TenantRow>, StorageError> {
        let c = self.lock()?;
        let r = c
            .prepare_cached("SELECT name, created_at FROM tenants WHERE id = ?1")
            .and_then(|mut s| {
                s.query_row(params![id.as_str()], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })
                .optional()
            })
            .map_err(be)?;
        Ok(r.map(|(name, created_at)| TenantRow {
            id: id.clone(),
            name,
            created_at,
        }))
    }

    fn tenants(&self) -> Result<Vec<TenantRow>, StorageError> {
        let c = self.lock()?;
        let mut s = c
            .prepare_cached("SELECT id, name, created_at FROM tenants ORDER BY id")
            .map_err(be)?;
        let rows = s
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(be)?;
        let mut out = Vec::new();
        for r in rows {
            let (id, name, created_at) = r.map_err(be)?;
            out.push(TenantRow {
                id: TenantId::new(id).map_err(|_| corrupt("tenants", "id"))?,
                name,
                created_at,
            });
        }
        Ok(out)
    }

    fn data_keys(&self, tenant: &TenantId) -> Result<Vec<DataKeyRow>, StorageError> {
        let c = self.lock()?;
        let mut s = c
            .prepare_cached(
                "SELECT tenant, key_id, wrapped, state, usage, created_at, mac FROM data_keys
                 WHERE tenant = ?1 ORDER BY state = 'retiring', created_at",
            )
            .map_err(be)?;
        let mut rows = s.query(params![tenant.as_str()]).map_err(be)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(be)? {
            out.push(key_from_row(r)?);
        }
        Ok(out)
    }

    fn reserve_usage(
        &self,
        tenant: &TenantId,
        key_id: &KeyId,
        count: u64,
    ) -> Result<u64, StorageError> {
        self.write(|tx| {
            tx.prepare_cached(
                "UPDATE data_keys SET usage = usage + ?3 WHERE tenant = ?1 AND key_id = ?2
                 RETURNING usage",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![tenant.as_str(), key_bytes(key_id), to_i64(count)],
                    |r| r.get::<_, i64>(0),
                )
                .optional()
            })
            .map_err(be)?
            .map(to_u64)
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
        self.write(|tx| {
            let n = tx
                .execute(
                    "UPDATE data_keys SET wrapped = ?4
                     WHERE tenant = ?1 AND key_id = ?2 AND wrapped = ?3",
                    params![tenant.as_str(), key_bytes(key_id), old, new],
                )
                .map_err(be)?;
            Ok(n == 1)
        })
    }

    fn start_key_rotation(&self, new_key: &DataKeyRow, hook: Hook<'_>) -> Result<(), StorageError> {
        self.write(|tx| {
            let t = new_key.tenant.as_str();
            let n = tx
                .execute(
                    "UPDATE data_keys SET state = 'retiring' WHERE tenant = ?1",
                    params![t],
                )
                .map_err(be)?;
            if n == 0 {
                return Err(StorageError::NotFound { what: "tenant" });
            }
            tx.execute(
                "INSERT INTO data_keys (tenant, key_id, wrapped, state, usage, created_at, mac)
                 VALUES (?1, ?2, ?3, 'active', ?4, ?5, ?6)",
                params![
                    t,
                    key_bytes(&new_key.key_id),
                    new_key.wrapped,
                    to_i64(new_key.usage),
                    new_key.created_at,
                    new_key.mac
                ],
            )
            .map_err(be)?;
            hook_in(tx, hook)
        })
    }

    fn retire_unreferenced_keys(
        &self,
        tenant: &TenantId,
        hook: Hook<'_>,
    ) -> Result<Vec<KeyId>, StorageError> {
        self.write(|tx| {
            let mut s = tx
                .prepare(
                    "SELECT key_id FROM data_keys k WHERE tenant = ?1 AND state = 'retiring'
                     AND NOT EXISTS (SELECT 1 FROM credentials c
                                     WHERE c.tenant = k.tenant AND c.key_id = k.key_id)",
                )
                .map_err(be)?;
            let ids = s
                .query_map(params![tenant.as_str()], |r| r.get::<_, Vec<u8>>(0))
                .map_err(be)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(be)?;
            drop(s);
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            hook_in(tx, hook)?;
            let mut out = Vec::new();
            for id in ids {
                tx.execute(
                    "DELETE FROM data_keys WHERE tenant = ?1 AND key_id = ?2",
                    params![tenant.as_str(), id],
                )
                .map_err(be)?;
                out.push(key_id(&id, "data_keys")?);
            }
            Ok(out)
        })
    }

    fn insert_credential(&self, row: &CredentialRow, hook: Hook<'_>) -> Result<(), StorageError> {
        self.write(|tx| {
            check_key_use(tx, row)?;
            write_row(
                tx,
                &format!(
                    "INSERT INTO credentials ({CRED_COLS}) VALUES (:tenant, :id, :name, :type,
                     :environment, :description, :tags, :is_active, :expires_at, :created_by,
                     :created_at, :updated_at, :version, :last_used_at, :last_tested,
                     :test_status, :test_message, :public, :secret_fields, :key_id, :secret, :mac,
                     :reveal)"
                ),
                row,
            )?;
            hook_in(tx, hook)
        })
    }

    fn credential(
        &self,
        tenant: &TenantId,
        id: &CredentialId,
    ) -> Result<Option<CredentialRow>, StorageError> {
        read_credential(&*self.lock()?, tenant, id)
    }

    /// The row kept from an earlier access if nothing in the database can have changed since
    /// it was read, else the row read now (and kept). "Nothing changed" is SQLite's own
    /// answer: the same WAL index header (no commit published since, by any connection in any
    /// process), or without one, the same `PRAGMA data_version` and count of this
    /// connection's changed rows. The state is read before the row, so a commit between the
    /// two only costs a read next time. A copy returned is the row as the database holds it
    /// at this call, as a fresh read would be.
    fn credential_for_access(
        &self,
        tenant: &TenantId,
        id: &CredentialId,
    ) -> Result<Option<Arc<CredentialRow>>, StorageError> {
        let c = self.lock()?;
        let state = DbState::of(&c, self.wal_index.as_ref())?;
        let Ok(mut kept) = self.kept.lock() else {
            return Ok(read_credential(&c, tenant, id)?.map(Arc::new));
        };
        if let Some(k) = kept.get(id) {
            if k.state == state && k.row.tenant == *tenant {
                return Ok(Some(Arc::clone(&k.row)));
            }
        }
        let row = read_credential(&c, tenant, id)?.map(Arc::new);
        match &row {
            Some(r) => crate::storage::keep(
                &mut kept,
                id.clone(),
                Kept {
                    row: Arc::clone(r),
                    state,
                },
            ),
            None => {
                kept.remove(id);
            }
        }
        Ok(row)
    }

    fn forget_credential(&self, _tenant: &TenantId, id: &CredentialId) {
        if let Ok(mut kept) = self.kept.lock() {
            kept.remove(id);
        }
    }

    fn credential_by_name(
        &self,
        tenant: &TenantId,
        name: &str,
        environment: &str,
    ) -> Result<Option<CredentialRow>, StorageError> {
        let c = self.lock()?;
        let mut s = c
            .prepare_cached(&format!(
                "SELECT {CRED_COLS} FROM credentials
                 WHERE tenant = ?1 AND name = ?2 AND environment = ?3
                 ORDER BY is_active DESC, updated_at DESC LIMIT 1"
            ))
            .map_err(be)?;
        let mut rows = s
            .query(params![tenant.as_str(), name, environment])
            .map_err(be)?;
        match rows.next().map_err(be)? {
            Some(r) => Ok(Some(cred_from_row(r)?)),
            None => Ok(None),
        }
    }

    fn credentials(
        &self,
        tenant: &TenantId,
        filter: &ListFilter,
    ) -> Result<Vec<CredentialRow>, StorageError> {
        let c = self.lock()?;
        let mut s = c
            .prepare_cached(&format!(
                "SELECT {CRED_COLS} FROM credentials
                 WHERE tenant = ?1
                   AND (?2 IS NULL OR type = ?2)
                   AND (?3 IS NULL OR environment = ?3)
                   AND (?4 IS NULL OR is_active = ?4)
                   AND (?5 IS NULL OR (expires_at IS NOT NULL AND expires_at < ?5))
                 ORDER BY name, environment, id"
            ))
            .map_err(be)?;
        let mut rows = s
            .query(params![
                tenant.as_str(),
                filter.type_name,
                filter.environment,
                filter.active,
                filter.expiring_before
            ])
            .map_err(be)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(be)? {
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
        self.write(|tx| {
            check_version(
                Self::version_of(tx, &row.tenant, &row.id)?,
                expected_version,
            )?;
            check_key_use(tx, row)?;
            write_row(
                tx,
                "UPDATE credentials SET name = :name, type = :type, environment = :environment,
                   description = :description, tags = :tags, is_active = :is_active,
                   expires_at = :expires_at, created_by = :created_by, created_at = :created_at,
                   updated_at = :updated_at, version = :version, last_used_at = :last_used_at,
                   last_tested = :last_tested, test_status = :test_status,
                   test_message = :test_message, public = :public,
                   secret_fields = :secret_fields, key_id = :key_id, secret = :secret, mac = :mac,
                   reveal = :reveal
                 WHERE tenant = :tenant AND id = :id",
                row,
            )?;
            hook_in(tx, hook)
        })
    }

    fn delete_credential(
        &self,
        tenant: &TenantId,
        id: &CredentialId,
        expected_version: u64,
        hook: Hook<'_>,
    ) -> Result<(), StorageError> {
        self.write(|tx| {
            check_version(Self::version_of(tx, tenant, id)?, expected_version)?;
            hook_in(tx, hook)?;
            // Overwrite the sealed data in place, then delete (secure_delete zeroes the freed
            // cells too).
            tx.execute(
                "UPDATE credentials SET secret = zeroblob(length(secret)), public = '{}'
                 WHERE tenant = ?1 AND id = ?2",
                params![tenant.as_str(), id.as_str()],
            )
            .map_err(be)?;
            tx.execute(
                "DELETE FROM credentials WHERE tenant = ?1 AND id = ?2",
                params![tenant.as_str(), id.as_str()],
            )
            .map_err(be)?;
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
        let c = self.lock()?;
        let mut s = c
            .prepare_cached(&format!(
                "SELECT {CRED_COLS} FROM credentials
                 WHERE tenant = ?1 AND key_id != ?2 AND id > ?3 ORDER BY id LIMIT ?4"
            ))
            .map_err(be)?;
        let mut rows = s
            .query(params![
                tenant.as_str(),
                key_bytes(key),
                after.map_or("", |a| a.as_str()),
                to_i64(limit as u64)
            ])
            .map_err(be)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(be)? {
            out.push(cred_from_row(r)?);
        }
        Ok(out)
    }

    fn count_under(
        &self,
        tenant: &TenantId,
        key: &KeyId,
        under: bool,
    ) -> Result<u64, StorageError> {
        let c = self.lock()?;
        let sql = if under {
            "SELECT count(*) FROM credentials WHERE tenant = ?1 AND key_id = ?2"
        } else {
            "SELECT count(*) FROM credentials WHERE tenant = ?1 AND key_id != ?2"
        };
        let n: i64 = c
            .prepare_cached(sql)
            .and_then(|mut s| s.query_row(params![tenant.as_str(), key_bytes(key)], |r| r.get(0)))
            .map_err(be)?;
        Ok(to_u64(n))
    }

    fn reseal(&self, tenant: &TenantId, batch: &[Reseal]) -> Result<usize, StorageError> {
        self.write(|tx| {
            let mut s = tx
                .prepare_cached(
                    "UPDATE credentials SET key_id = ?5, secret = ?6, mac = ?7
                     WHERE tenant = ?1 AND id = ?2 AND version = ?3 AND key_id = ?4",
                )
                .map_err(be)?;
            let mut n = 0;
            for r in batch {
                n += s
                    .execute(params![
                        tenant.as_str(),
                        r.id.as_str(),
                        to_i64(r.version),
                        key_bytes(&r.old_key),
                        key_bytes(&r.new_key),
                        r.secret,
                        r.mac
                    ])
                    .map_err(|e| match &e {
                        rusqlite::Error::SqliteFailure(f, _)
                            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                        {
                            StorageError::UnknownKey { key_id: r.new_key }
                        }
                        _ => be(e),
                    })?;
            }
            Ok(n)
        })
    }

    fn record_use(
        &self,
        tenant: &TenantId,
        uses: &[(CredentialId, i64)],
        head: Option<AuditHead>,
    ) -> Result<(), StorageError> {
        self.write(|tx| {
            let mut s = tx
                .prepare_cached(
                    "UPDATE credentials SET last_used_at = max(coalesce(last_used_at, 0), ?3)
                     WHERE tenant = ?1 AND id = ?2",
                )
                .map_err(be)?;
            for (id, at) in uses {
                s.execute(params![tenant.as_str(), id.as_str(), at])
                    .map_err(be)?;
            }
            set_head(tx, head)
        })
    }

    fn record_test(
        &self,
        tenant: &TenantId,
        id: &CredentialId,
        result: &TestRecord,
        hook: Hook<'_>,
    ) -> Result<(), StorageError> {
        self.write(|tx| {
            Self::version_of(tx, tenant, id)?;
            hook_in(tx, hook)?;
            tx.execute(
                "UPDATE credentials SET last_tested = ?3, test_status = ?4, test_message = ?5
                 WHERE tenant = ?1 AND id = ?2",
                params![
                    tenant.as_str(),
                    id.as_str(),
                    result.at,
                    result.status,
                    result.message
                ],
            )
            .map_err(be)?;
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
        self.write(|tx| {
            let last: Option<(i64, i64)> = tx
                .prepare_cached("SELECT step, retain_until FROM replay_guard WHERE key = ?1")
                .and_then(|mut s| {
                    s.query_row(params![key], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                })
                .map_err(be)?;
            if let Some((last, until)) = last {
                if to_u64(until) > now && step <= to_u64(last) {
                    return Ok(false);
                }
            }
            tx.prepare_cached(
                "INSERT INTO replay_guard (key, step, retain_until) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET step = excluded.step,
                   retain_until = excluded.retain_until",
            )
            .and_then(|mut s| s.execute(params![key, to_i64(step), to_i64(retain_until)]))
            .map_err(be)?;
            Ok(true)
        })
    }

    fn otp_locked_until(&self, key: &str, now: u64) -> Result<Option<u64>, StorageError> {
        let c = self.lock()?;
        Ok(read_otp(&c, key)?.and_then(|f| f.locked_at(now)))
    }

    fn otp_failed(
        &self,
        key: &str,
        now: u64,
        throttle: &OtpThrottle,
    ) -> Result<Option<u64>, StorageError> {
        self.write(|tx| {
            let next = read_otp(tx, key)?
                .unwrap_or_default()
                .after_failure(now, throttle);
            tx.prepare_cached(
                "INSERT INTO otp_throttle (key, window_start, failures, locked_until)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (key) DO UPDATE SET window_start = excluded.window_start,
                   failures = excluded.failures, locked_until = excluded.locked_until",
            )
            .and_then(|mut s| {
                s.execute(params![
                    key,
                    to_i64(next.window_start),
                    i64::from(next.failures),
                    to_i64(next.locked_until)
                ])
            })
            .map_err(be)?;
            Ok(next.locked_at(now))
        })
    }

    fn otp_succeeded(&self, key: &str) -> Result<(), StorageError> {
        self.write(|tx| {
            tx.prepare_cached("DELETE FROM otp_throttle WHERE key = ?1")
                .and_then(|mut s| s.execute(params![key]))
                .map_err(be)?;
            Ok(())
        })
    }

    fn hotp_counter(&self, key: &str, initial: u64) -> Result<u64, StorageError> {
        let c = self.lock()?;
        read_hotp(&c, key, initial)
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
        self.write(|tx| {
            if !crate::storage::hotp_may_advance(read_hotp(tx, key, initial)?, from, to) {
                return Ok(false);
            }
            tx.prepare_cached(
                "INSERT INTO hotp_counters (key, next) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET next = excluded.next",
            )
            .and_then(|mut s| s.execute(params![key, to_db]))
            .map_err(be)?;
            Ok(true)
        })
    }

    fn reset_hotp_counter(&self, key: &str) -> Result<(), StorageError> {
        self.write(|tx| {
            tx.prepare_cached("DELETE FROM hotp_counters WHERE key = ?1")
                .and_then(|mut s| s.execute(params![key]))
                .map_err(be)?;
            Ok(())
        })
    }

    fn audit_head(&self) -> Result<Option<AuditHead>, StorageError> {
        let c = self.lock()?;
        read_head(&c)
    }

    fn heads_authenticated(&self) -> Result<bool, StorageError> {
        read_flag(&*self.lock()?, "heads_authenticated")
    }

    fn authenticate_head(&self, hook: Hook<'_>) -> Result<(), StorageError> {
        self.write(|tx| {
            set_flag(tx, "heads_authenticated")?;
            hook_in(tx, hook)
        })
    }

    fn records_authenticated(&self) -> Result<bool, StorageError> {
        read_flag(&*self.lock()?, "records_authenticated")
    }

    fn authenticate_records(
        &self,
        macs: &RecordMacs,
        hook: Hook<'_>,
    ) -> Result<usize, StorageError> {
        self.write(|tx| {
            let mut n = 0;
            {
                let mut s = tx
                    .prepare_cached(
                        "UPDATE credentials SET mac = ?4
                         WHERE tenant = ?1 AND id = ?2 AND version = ?3 AND mac = X''",
                    )
                    .map_err(be)?;
                for (t, id, version, mac) in &macs.credentials {
                    n += s
                        .execute(params![t.as_str(), id.as_str(), to_i64(*version), mac])
                        .map_err(be)?;
                }
                let mut s = tx
                    .prepare_cached(
                        "UPDATE data_keys SET mac = ?3
                         WHERE tenant = ?1 AND key_id = ?2 AND mac = X''",
                    )
                    .map_err(be)?;
                for (t, k, mac) in &macs.keys {
                    n += s
                        .execute(params![t.as_str(), key_bytes(k), mac])
                        .map_err(be)?;
                }
            }
            set_flag(tx, "records_authenticated")?;
            hook_in(tx, hook)?;
            Ok(n)
        })
    }
}
