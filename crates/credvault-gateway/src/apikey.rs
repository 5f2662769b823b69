//! API keys: their text form, what they allow, and where they are kept.
//!
//! A key reads `cvk_` + a 12-character id + a 32-character secret + a 6-character checksum, all
//! base62 (54 characters in all). The prefix and the checksum let secret scanners find a leaked
//! key and tell it from random text without asking the gateway (as GitHub's `ghp_` keys do).
//! The id is public (it is what `apikey list` shows and what audit records name); the secret
//! is about 190 bits.
//!
//! The gateway never stores a key: only HMAC-SHA256 of it under a key derived from the
//! gateway's server key, compared in constant time. Each record (tenant, scopes, limits,
//! expiry, revocation) carries a MAC under a second derived key, checked on every use, so a
//! record edited in the database is refused, never obeyed.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::sync::Mutex;

use credvault_store::TenantId;
use ring::{digest, hmac, rand::SecureRandom};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

/// What every key starts with.
pub const KEY_PREFIX: &str = "cvk_";
/// Characters in a key's id.
pub const ID_LEN: usize = 12;
const SECRET_LEN: usize = 32;
const CHECK_LEN: usize = 6;
/// Characters in a whole key.
pub const KEY_LEN: usize = KEY_PREFIX.len() + ID_LEN + SECRET_LEN + CHECK_LEN;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Longest key name.
pub const MAX_NAME_LEN: usize = 128;
/// Most credential-name globs (and environments) on one key.
pub const MAX_GLOBS: usize = 32;
const MAX_GLOB_LEN: usize = 256;

/// An error about an API key or the key store. Never contains a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text is not a credvault API key (prefix, length, alphabet or checksum).
    #[error("not a credvault API key")]
    Malformed,
    /// No key with this id, or its secret does not match (the two are not told apart).
    #[error("unknown API key")]
    Unknown,
    /// The key was revoked.
    #[error("API key {id} is revoked")]
    Revoked {
        /// The key id.
        id: String,
    },
    /// The key expired.
    #[error("API key {id} has expired")]
    Expired {
        /// The key id.
        id: String,
    },
    /// A stored record failed its MAC: it was changed outside the gateway and is not used.
    #[error("API key record {id} failed its integrity check")]
    Integrity {
        /// The key id.
        id: String,
    },
    /// A setting is not valid.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// Which setting.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The key store's database failed.
    #[error("key store: {0}")]
    Storage(String),
    /// The server key file could not be read or made.
    #[error("server key {path}: {reason}")]
    ServerKey {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

impl From<rusqlite::Error> for KeyError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Storage(e.to_string())
    }
}

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ApiScope {
    /// Metadata, secrets masked.
    Read,
    /// Secret values of selected fields.
    Reveal,
    /// TOTP codes (the seed never leaves).
    Totp,
    /// Requests through the credential-injecting proxy.
    Proxy,
    /// Credential tests.
    Test,
    /// Browser sessions, login leases and received two-factor codes of credentials (an
    /// automation that logs in by itself).
    Session,
    /// Create, update, delete.
    Write,
    /// Keys, audit, policies.
    Admin,
}

impl ApiScope {
    /// Every scope.
    pub const ALL: [ApiScope; 8] = [
        Self::Read,
        Self::Reveal,
        Self::Totp,
        Self::Proxy,
        Self::Test,
        Self::Session,
        Self::Write,
        Self::Admin,
    ];

    /// The scope's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Reveal => "reveal",
            Self::Totp => "totp",
            Self::Proxy => "proxy",
            Self::Test => "test",
            Self::Session => "session",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for ApiScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ApiScope {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| KeyError::Invalid {
                what: "scope",
                reason: format!(
                    "expected one of {}",
                    Self::ALL.map(ApiScope::as_str).join(", ")
                ),
            })
    }
}

/// A request rate: `count` requests per `per_seconds` seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Requests allowed in each period (also the burst).
    pub count: u32,
    /// The period in seconds (1 or 60 from the `N/s` and `N/min` forms).
    pub per_seconds: u32,
}

impl std::str::FromStr for RateLimit {
    type Err = KeyError;

    /// Parses `N/s` or `N/min` (N from 1 to 1,000,000).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || KeyError::Invalid {
            what: "rate limit",
            reason: "expected N/s or N/min with N from 1 to 1000000".into(),
        };
        let (n, unit) = s.split_once('/').ok_or_else(bad)?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        let per_seconds = match unit.trim() {
            "s" | "sec" | "second" => 1,
            "min" | "m" | "minute" => 60,
            _ => return Err(bad()),
        };
        if !(1..=1_000_000).contains(&count) {
            return Err(bad());
        }
        Ok(Self { count, per_seconds })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.per_seconds {
            1 => write!(f, "{}/s", self.count),
            60 => write!(f, "{}/min", self.count),
            p => write!(f, "{}/{p}s", self.count),
        }
    }
}

/// A key's settings: everything the gateway acts on, covered by the record's MAC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct KeyPolicy {
    /// The one tenant the key works for.
    pub tenant: TenantId,
    /// A name for people.
    pub name: String,
    /// What it may do.
    pub scopes: BTreeSet<ApiScope>,
    /// Credential-name globs (`*` any run, `?` one character); empty: every credential.
    pub credentials: Vec<String>,
    /// Environments; empty: every environment.
    pub environments: Vec<String>,
    /// Expiry, Unix milliseconds.
    pub expires_at: Option<i64>,
    /// Its own rate limit instead of the gateway's default.
    pub rate_limit: Option<RateLimit>,
}

impl KeyPolicy {
    /// A policy for `tenant` with `scopes`, no limits.
    pub fn new(tenant: TenantId, scopes: impl IntoIterator<Item = ApiScope>) -> Self {
        Self {
            tenant,
            name: String::new(),
            scopes: scopes.into_iter().collect(),
            credentials: Vec::new(),
            environments: Vec::new(),
            expires_at: None,
            rate_limit: None,
        }
    }

    /// Sets the name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Limits the key to credentials whose names match one of `globs`.
    pub fn credentials(mut self, globs: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.credentials = globs.into_iter().map(Into::into).collect();
        self
    }

    /// Limits the key to `environments`.
    pub fn environments(mut self, envs: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.environments = envs.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the expiry (Unix milliseconds).
    pub fn expires_at(mut self, at: i64) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Sets the key's own rate limit.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    fn check(&self) -> Result<(), KeyError> {
        let bad = |what, reason: &str| {
            Err(KeyError::Invalid {
                what,
                reason: reason.into(),
            })
        };
        if self.name.len() > MAX_NAME_LEN || self.name.chars().any(char::is_control) {
            return bad("name", "at most 128 bytes without control characters");
        }
        if self.scopes.is_empty() {
            return bad("scopes", "a key needs at least one scope");
        }
        for (what, list) in [
            ("credential glob", &self.credentials),
            ("environment", &self.environments),
        ] {
            if list.len() > MAX_GLOBS
                || list.iter().any(|g| {
                    g.is_empty() || g.len() > MAX_GLOB_LEN || g.chars().any(char::is_control)
                })
            {
                return bad(what, "at most 32 of 1-256 characters");
            }
        }
        Ok(())
    }

    /// Whether the key may act on a credential named `name` in `environment`.
    pub fn covers(&self, name: &str, environment: &str) -> bool {
        (self.credentials.is_empty() || self.credentials.iter().any(|g| glob(g, name)))
            && (self.environments.is_empty() || self.environments.iter().any(|e| e == environment))
    }
}

/// `*` matches any run of characters, `?` one character; everything else itself.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// A stored key, without its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct KeyInfo {
    /// The public id (12 base62 characters).
    pub id: String,
    /// Its settings.
    #[serde(flatten)]
    pub policy: KeyPolicy,
    /// When it was made, Unix milliseconds.
    pub created_at: i64,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
    /// When it was last used (kept at most once a minute; not authenticated, not acted on).
    pub last_used_at: Option<i64>,
    /// The source IP of that use.
    pub last_ip: Option<String>,
}

impl KeyInfo {
    /// Whether the key is usable at `now` (not revoked, not expired).
    pub fn is_live(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.policy.expires_at.is_none_or(|t| now < t)
    }
}

/// A new key, returned once by [`KeyStore::create`]: show it, then drop it.
pub struct NewKey {
    key: Zeroizing<String>,
    /// The stored record.
    pub info: KeyInfo,
}

impl NewKey {
    /// The key text (`cvk_...`), shown once.
    pub fn expose(&self) -> &str {
        &self.key
    }
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewKey")
            .field("key", &"[redacted]")
            .field("info", &self.info)
            .finish()
    }
}

fn check_digits(body: &[u8]) -> [u8; CHECK_LEN] {
    let d = digest::digest(&digest::SHA256, body);
    let mut n = u32::from_be_bytes([d.as_ref()[0], d.as_ref()[1], d.as_ref()[2], d.as_ref()[3]]);
    let mut out = [b'0'; CHECK_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// `cvk_` + `chars` (id and secret, base62) + their checksum.
fn assemble(chars: &[u8]) -> Result<Zeroizing<String>, KeyError> {
    let mut text = Zeroizing::new(Vec::with_capacity(KEY_LEN));
    text.extend_from_slice(KEY_PREFIX.as_bytes());
    text.extend_from_slice(chars);
    let check = check_digits(&text);
    text.extend_from_slice(&check);
    let text = std::mem::take(&mut *text);
    String::from_utf8(text)
        .map(Zeroizing::new)
        .map_err(|_| KeyError::Malformed)
}

/// A key's public id, or `Malformed`. Checks prefix, length, alphabet and checksum (so that a
/// typo or a truncated paste is told apart from a wrong key without a lookup); nothing
/// secret-dependent is compared here.
pub fn parse_key(text: &str) -> Result<&str, KeyError> {
    let b = text.as_bytes();
    if b.len() != KEY_LEN
        || !text.starts_with(KEY_PREFIX)
        || !b[KEY_PREFIX.len()..].iter().all(u8::is_ascii_alphanumeric)
    {
        return Err(KeyError::Malformed);
    }
    let (body, check) = b.split_at(KEY_LEN - CHECK_LEN);
    if check_digits(body) != check {
        return Err(KeyError::Malformed);
    }
    Ok(&text[KEY_PREFIX.len()..KEY_PREFIX.len() + ID_LEN])
}

fn random_base62(rng: &dyn SecureRandom, out: &mut Vec<u8>, n: usize) -> Result<(), KeyError> {
    let mut buf = Zeroizing::new([0u8; 64]);
    let mut have = 0;
    while have < n {
        rng.fill(&mut buf[..])
            .map_err(|_| KeyError::Storage("the system random generator failed".into()))?;
        // 248 = 4 * 62: bytes above it are dropped so that every character is equally likely.
        for &x in buf.iter().filter(|&&x| x < 248) {
            if have == n {
                break;
            }
            out.push(BASE62[usize::from(x % 62)]);
            have += 1;
        }
    }
    Ok(())
}

/// The gateway's server key: 32 random bytes in a file readable only by its owner. Two keys
/// are derived from it: one for the keyed hashes of API keys, one for record MACs.
pub struct ServerKey {
    hash: hmac::Key,
    mac: hmac::Key,
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerKey([redacted])")
    }
}

impl ServerKey {
    /// From the 32 bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        let root = hmac::Key::new(hmac::HMAC_SHA256, bytes);
        let derive = |label: &[u8]| {
            let mut t = hmac::sign(&root, label).as_ref().to_vec();
            let k = hmac::Key::new(hmac::HMAC_SHA256, &t);
            t.zeroize();
            k
        };
        Self {
            hash: derive(b"credvault-gateway-v1 api-key hash"),
            mac: derive(b"credvault-gateway-v1 api-key record"),
        }
    }

    /// Reads `path`, or makes it (owner-only) with fresh random bytes when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        let bytes =
            credvault_store::files::load_or_create_key(path).map_err(|e| KeyError::ServerKey {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        Ok(Self::from_bytes(&bytes))
    }

    fn key_hash(&self, key: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(hmac::sign(&self.hash, key.as_bytes()).as_ref());
        out
    }

    fn record_mac(&self, id: &str, body: &str, hash: &[u8], revoked_at: Option<i64>) -> Vec<u8> {
        let mut ctx = hmac::Context::with_key(&self.mac);
        for part in [id.as_bytes(), body.as_bytes(), hash] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        match revoked_at {
            None => ctx.update(&[0]),
            Some(t) => {
                ctx.update(&[1]);
                ctx.update(&t.to_be_bytes());
            }
        }
        ctx.sign().as_ref().to_vec()
    }
}

/// Where keys are kept: a SQLite database (WAL) that several gateway processes on one machine
/// and the CLI share ([`KeyStore::open`]), or, for a vault kept in PostgreSQL, a table in that
/// database that every gateway node shares ([`KeyStore::open_postgres`], feature `postgres`).
/// Safe to use from many threads (one connection behind a mutex; calls are short).
pub struct KeyStore {
    table: Table,
    server: ServerKey,
    rng: ring::rand::SystemRandom,
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyStore").finish_non_exhaustive()
    }
}

/// Last-use times are written at most this often per key (ms).
const LAST_USED_EVERY_MS: i64 = 60_000;

/// The database the records are in. Every statement is one of five; each backend has them.
enum Table {
    Sqlite(Mutex<rusqlite::Connection>),
    #[cfg(feature = "postgres")]
    Postgres(Box<crate::apikey_pg::PgTable>),
}

impl Table {
    fn sqlite(&self) -> Option<std::sync::MutexGuard<'_, rusqlite::Connection>> {
        match self {
            Self::Sqlite(c) => Some(c.lock().unwrap_or_else(|p| p.into_inner())),
            #[cfg(feature = "postgres")]
            Self::Postgres(_) => None,
        }
    }

    fn insert(&self, r: &Stored) -> Result<(), KeyError> {
        #[cfg(feature = "postgres")]
        if let Self::Postgres(pg) = self {
            return pg.insert(r);
        }
        let conn = self.sqlite().ok_or_else(unreachable_backend)?;
        conn.execute(
            "INSERT INTO api_keys (id, body, hash, created_at, revoked_at, mac) \
             VALUES (?1, ?2, ?3, ?4, NULL, ?5)",
            params![r.id, r.body, r.hash, r.created_at, r.mac],
        )?;
        Ok(())
    }

    fn one(&self, id: &str) -> Result<Option<Stored>, KeyError> {
        #[cfg(feature = "postgres")]
        if let Self::Postgres(pg) = self {
            return pg.one(id);
        }
        let conn = self.sqlite().ok_or_else(unreachable_backend)?;
        let mut st =
            conn.prepare_cached(&format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1"))?;
        Ok(st.query_row([id], Stored::read).optional()?)
    }

    fn all(&self) -> Result<Vec<Stored>, KeyError> {
        #[cfg(feature = "postgres")]
        if let Self::Postgres(pg) = self {
            return pg.all();
        }
        let conn = self.sqlite().ok_or_else(unreachable_backend)?;
        let mut st = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM api_keys ORDER BY created_at, id"
        ))?;
        let rows = st
            .query_map([], Stored::read)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn used(&self, id: &str, now: i64, ip: &str) -> Result<(), KeyError> {
        #[cfg(feature = "postgres")]
        if let Self::Postgres(pg) = self {
            return pg.used(id, now, ip);
        }
        let conn = self.sqlite().ok_or_else(unreachable_backend)?;
        conn.execute(
            "UPDATE api_keys SET last_used_at = ?2, last_ip = ?3 WHERE id = ?1",
            params![id, now, ip],
        )?;
        Ok(())
    }

    fn revoke(&self, id: &str, now: i64, mac: &[u8]) -> Result<(), KeyError> {
        #[cfg(feature = "postgres")]
        if let Self::Postgres(pg) = self {
            return pg.revoke(id, now, mac);
        }
        let conn = self.sqlite().ok_or_else(unreachable_backend)?;
        conn.execute(
            "UPDATE api_keys SET revoked_at = ?2, mac = ?3 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, now, mac],
        )?;
        Ok(())
    }
}

fn unreachable_backend() -> KeyError {
    KeyError::Storage("no such backend".into())
}

impl KeyStore {
    /// Opens (creating when missing) the database at `path`, with `server` for hashes and MACs.
    pub fn open(path: &Path, server: ServerKey) -> Result<Self, KeyError> {
        // Owner-only from creation, like every file of the vault (SQLite would create it with
        // the umask's mode; its -wal and -shm files take the database file's mode).
        if !path.exists() {
            match credvault_store::files::write_new_private(path, b"") {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(KeyError::Storage(e.to_string()))
                }
                _ => {}
            }
        }
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS api_keys (
                id TEXT PRIMARY KEY NOT NULL,
                body TEXT NOT NULL,
                hash BLOB NOT NULL,
                created_at INTEGER NOT NULL,
                revoked_at INTEGER,
                mac BLOB NOT NULL,
                last_used_at INTEGER,
                last_ip TEXT
            ) STRICT;",
        )?;
        Ok(Self::with(Table::Sqlite(Mutex::new(conn)), server))
    }

    /// Keeps the keys in the PostgreSQL database `url` names, in table `gateway_api_keys`
    /// (created when missing) of `options`' schema: for a vault kept there, so that every
    /// gateway node sees a key made, used or revoked on any other. The connection is made
    /// with the vault's own checks ([`credvault_store::postgres::connect_one`]); every node
    /// needs the same server key (copy `gateway.key` with the vault directory).
    ///
    /// # Errors
    /// [`KeyError::Storage`] naming the problem (URL, TLS, password, connection, privileges).
    #[cfg(feature = "postgres")]
    pub fn open_postgres(
        url: &str,
        options: &credvault_store::PostgresOptions,
        server: ServerKey,
    ) -> Result<Self, KeyError> {
        let table = crate::apikey_pg::PgTable::open(url, options)?;
        Ok(Self::with(Table::Postgres(Box::new(table)), server))
    }

    fn with(table: Table, server: ServerKey) -> Self {
        Self {
            table,
            server,
            rng: ring::rand::SystemRandom::new(),
        }
    }

    /// Makes a key with `policy` at time `now` (Unix ms). The key text is in the result only.
    pub fn create(&self, policy: KeyPolicy, now: i64) -> Result<NewKey, KeyError> {
        policy.check()?;
        let mut chars = Zeroizing::new(Vec::with_capacity(ID_LEN + SECRET_LEN));
        random_base62(&self.rng, &mut chars, ID_LEN + SECRET_LEN)?;
        let key = assemble(&chars)?;
        let id = key[KEY_PREFIX.len()..KEY_PREFIX.len() + ID_LEN].to_owned();
        let body = serde_json::to_string(&policy).map_err(|e| KeyError::Storage(e.to_string()))?;
        let hash = self.server.key_hash(&key);
        let mac = self.server.record_mac(&id, &body, &hash, None);
        self.table.insert(&Stored {
            id: id.clone(),
            body,
            hash: hash.to_vec(),
            created_at: now,
            revoked_at: None,
            mac,
            last_used_at: None,
            last_ip: None,
        })?;
        Ok(NewKey {
            key,
            info: KeyInfo {
                id,
                policy,
                created_at: now,
                revoked_at: None,
                last_used_at: None,
                last_ip: None,
            },
        })
    }

    fn stored(&self, id: &str) -> Result<Option<Stored>, KeyError> {
        self.table.one(id)
    }

    /// Checks a stored record's MAC and reads its policy.
    fn verify(&self, st: Stored) -> Result<(KeyInfo, Vec<u8>), KeyError> {
        let integrity = || KeyError::Integrity { id: st.id.clone() };
        // The creation and last-use times are informational; everything acted on is under
        // the MAC.
        let expected = self
            .server
            .record_mac(&st.id, &st.body, &st.hash, st.revoked_at);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], &st.mac[..])) {
            return Err(integrity());
        }
        let policy: KeyPolicy = serde_json::from_str(&st.body).map_err(|_| integrity())?;
        Ok((
            KeyInfo {
                id: st.id,
                policy,
                created_at: st.created_at,
                revoked_at: st.revoked_at,
                last_used_at: st.last_used_at,
                last_ip: st.last_ip,
            },
            st.hash,
        ))
    }

    /// Checks a presented key: well formed, known, secret matching (constant time), record
    /// intact, not revoked, not expired at `now`.
    pub fn authenticate(&self, text: &str, now: i64) -> Result<KeyInfo, KeyError> {
        let id = parse_key(text)?;
        let hash = self.server.key_hash(text);
        let Some(st) = self.stored(id)? else {
            return Err(KeyError::Unknown);
        };
        let (info, stored) = self.verify(st)?;
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&hash[..], &stored[..])) {
            return Err(KeyError::Unknown);
        }
        if info.revoked_at.is_some() {
            return Err(KeyError::Revoked { id: info.id });
        }
        if info.policy.expires_at.is_some_and(|t| now >= t) {
            return Err(KeyError::Expired { id: info.id });
        }
        Ok(info)
    }

    /// Notes a use (at most one write a minute per key).
    pub fn note_use(&self, info: &KeyInfo, now: i64, ip: &str) -> Result<(), KeyError> {
        if info
            .last_used_at
            .is_some_and(|t| now.saturating_sub(t) < LAST_USED_EVERY_MS)
        {
            return Ok(());
        }
        self.table.used(&info.id, now, ip)
    }

    /// Every key (never a secret), oldest first. A record that fails its MAC is an error.
    pub fn list(&self) -> Result<Vec<KeyInfo>, KeyError> {
        self.table
            .all()?
            .into_iter()
            .map(|st| self.verify(st).map(|(i, _)| i))
            .collect()
    }

    /// One key by id, as a key in use: record intact, not revoked, not expired at `now` (a
    /// setup-page session made with a key is checked this way on every request).
    pub fn live(&self, id: &str, now: i64) -> Result<KeyInfo, KeyError> {
        let info = self.get(id)?;
        if info.revoked_at.is_some() {
            return Err(KeyError::Revoked { id: info.id });
        }
        if info.policy.expires_at.is_some_and(|t| now >= t) {
            return Err(KeyError::Expired { id: info.id });
        }
        Ok(info)
    }

    /// One key by id.
    pub fn get(&self, id: &str) -> Result<KeyInfo, KeyError> {
        let st = self.stored(id)?.ok_or(KeyError::Unknown)?;
        self.verify(st).map(|(i, _)| i)
    }

    /// Revokes a key at `now`; revoking a revoked key keeps the first time.
    pub fn revoke(&self, id: &str, now: i64) -> Result<KeyInfo, KeyError> {
        let st = self.stored(id)?.ok_or(KeyError::Unknown)?;
        let (body, hash) = (st.body.clone(), st.hash.clone());
        let (info, _) = self.verify(st)?;
        if info.revoked_at.is_some() {
            return Ok(info);
        }
        let mac = self.server.record_mac(id, &body, &hash, Some(now));
        self.table.revoke(id, now, &mac)?;
        self.get(id)
    }
}

const COLUMNS: &str = "id, body, hash, created_at, revoked_at, mac, last_used_at, last_ip";

/// A row as stored, not yet checked.
pub(crate) struct Stored {
    pub(crate) id: String,
    pub(crate) body: String,
    pub(crate) hash: Vec<u8>,
    pub(crate) created_at: i64,
    pub(crate) revoked_at: Option<i64>,
    pub(crate) mac: Vec<u8>,
    pub(crate) last_used_at: Option<i64>,
    pub(crate) last_ip: Option<String>,
}

impl Stored {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            body: r.get(1)?,
            hash: r.get(2)?,
            created_at: r.get(3)?,
            revoked_at: r.get(4)?,
            mac: r.get(5)?,
            last_used_at: r.get(6)?,
            last_ip: r.get(7)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[cfg(unix)]
    #[test]
    fn the_server_key_and_the_key_database_are_owner_only_and_the_key_is_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (kp, db) = (
            dir.path().join("gateway.key"),
            dir.path().join("gateway.db"),
        );
        let first = ServerKey::load_or_create(&kp).unwrap();
        let bytes = std::fs::read(&kp).unwrap();
        assert_eq!(bytes.len(), 32);
        // A second start reads the same key rather than making another.
        let again = ServerKey::load_or_create(&kp).unwrap();
        assert_eq!(std::fs::read(&kp).unwrap(), bytes);
        assert_eq!(first.key_hash("cvk_x"), again.key_hash("cvk_x"));
        let store = KeyStore::open(&db, again).unwrap();
        drop(store);
        for p in [&kp, &db] {
            let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
        std::fs::write(&kp, b"short").unwrap();
        assert!(matches!(
            ServerKey::load_or_create(&kp),
            Err(KeyError::ServerKey { .. })
        ));
    }

    fn base62(n: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(proptest::sample::select(BASE62.to_vec()), n)
    }

    proptest! {
        #[test]
        fn any_text_is_parsed_without_panicking(s in "\\PC{0,80}", b in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = parse_key(&s);
            let _ = parse_key(&String::from_utf8_lossy(&b));
        }

        #[test]
        fn made_keys_parse_to_their_id_and_one_changed_character_is_refused(
            chars in base62(ID_LEN + SECRET_LEN),
            at in 0..KEY_LEN,
            to in proptest::sample::select(BASE62.to_vec()),
        ) {
            let key = assemble(&chars).unwrap();
            prop_assert_eq!(key.len(), KEY_LEN);
            prop_assert_eq!(parse_key(&key).unwrap().as_bytes(), &chars[..ID_LEN]);
            let mut changed = key.as_bytes().to_vec();
            prop_assume!(changed[at] != to);
            changed[at] = to;
            let changed = String::from_utf8(changed).unwrap();
            prop_assert!(matches!(parse_key(&changed), Err(KeyError::Malformed)));
            // Truncated or extended pastes too.
            prop_assert!(parse_key(&key[..KEY_LEN - 1]).is_err());
            let longer = format!("{}0", &*key);
            prop_assert!(parse_key(&longer).is_err());
        }

        #[test]
        fn globs_never_panic_and_a_star_matches_everything(p in "\\PC{0,20}", t in "\\PC{0,40}") {
            let _ = glob(&p, &t);
            prop_assert!(glob("*", &t));
            let around = format!("*{t}*");
            prop_assert!(glob(&around, &t));
        }
    }

    /// docs/formats.md, "Gateway API keys v1": vectors computed with Python's hashlib and hmac.
    #[test]
    fn the_key_format_hash_and_record_mac_match_the_independent_vectors() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../tests/data/apikey_v1.json")).unwrap();
        let server: [u8; 32] = hex::decode(v["server_key"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let server = ServerKey::from_bytes(&server);
        let vectors = v["vectors"].as_array().unwrap();
        assert_eq!(vectors.len(), 2);
        for t in vectors {
            let key = t["key"].as_str().unwrap();
            let id = t["id"].as_str().unwrap();
            assert_eq!(parse_key(key).unwrap(), id);
            let chars = &key.as_bytes()[KEY_PREFIX.len()..KEY_LEN - CHECK_LEN];
            assert_eq!(assemble(chars).unwrap().as_str(), key);
            let hash = server.key_hash(key);
            assert_eq!(hex::encode(hash), t["key_hash"].as_str().unwrap());
            let body = t["body"].as_str().unwrap();
            let revoked = t["revoked_at"].as_i64();
            assert_eq!(
                hex::encode(server.record_mac(id, body, &hash, revoked)),
                t["record_mac"].as_str().unwrap()
            );
            // The body is what a policy is written as, byte for byte.
            let policy: KeyPolicy = serde_json::from_str(body).unwrap();
            assert_eq!(serde_json::to_string(&policy).unwrap(), body);
        }
    }

    #[test]
    fn globs_match_as_documented() {
        assert!(glob("*", ""));
        assert!(glob("stripe-*", "stripe-live"));
        assert!(!glob("stripe-*", "github"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("*-prod-*", "db-prod-eu"));
        assert!(!glob("*-prod", "db-prod-eu"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
    }

    #[test]
    fn rate_limits_parse_and_print() {
        let r: RateLimit = "10/s".parse().unwrap();
        assert_eq!((r.count, r.per_seconds), (10, 1));
        let r: RateLimit = "600/min".parse().unwrap();
        assert_eq!((r.count, r.per_seconds), (600, 60));
        assert_eq!(r.to_string(), "600/min");
        for bad in ["", "10", "0/s", "x/s", "10/h", "2000000/s"] {
            assert!(bad.parse::<RateLimit>().is_err(), "{bad}");
        }
    }
}
