//! The session database: saved states, settings, leases.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::sql::{Db, DbError, Tx};
use crate::vals;
use crate::{BrowserState, SessionConfig, SessionError, SessionKey};
use credvault_store::audit::{Action, AuditEvent, Details, Resource};
use credvault_store::{CredentialId, Scope, Store, StoreError, TenantId};

/// The actor of events the sweeper records.
pub const SWEEPER_ACTOR: &str = "credvault:session-sweeper";

/// Longest profile name.
pub const MAX_PROFILE_LEN: usize = 64;

/// The database file's name in a vault directory.
pub const SESSIONS_DB: &str = "sessions.db";
/// The key file's name in a vault directory.
pub const SESSIONS_KEY: &str = "sessions.key";

/// A saved state's record, without the state.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The credential.
    pub credential: CredentialId,
    /// The browser profile.
    pub profile: String,
    /// The state's version: 1 for the first save of this credential and profile, one more
    /// for every save after (never reused, even after a removal).
    pub version: u64,
    /// When the login that made it happened (Unix ms).
    pub created_at: i64,
    /// When it was last saved or restored (Unix ms).
    pub last_used_at: i64,
    /// When it expires, under the credential's current settings (Unix ms; `None`: never).
    pub expires_at: Option<i64>,
}

/// Checks a profile name: 1 to 64 of `A-Z a-z 0-9 . _ -`.
///
/// # Errors
/// [`SessionError::Invalid`].
pub fn check_profile(profile: &str) -> Result<(), SessionError> {
    let ok = !profile.is_empty()
        && profile.len() <= MAX_PROFILE_LEN
        && profile
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(SessionError::Invalid {
            what: "profile",
            reason: format!("must be 1 to {MAX_PROFILE_LEN} of A-Z a-z 0-9 . _ -"),
        })
    }
}

/// The attachment name a state version is sealed under: it binds the profile and version.
fn attachment(profile: &str, version: u64) -> String {
    format!("browser-state:{profile}:v{version}")
}

pub(crate) fn event_like(template: &AuditEvent, action: &str, details: Details) -> AuditEvent {
    let mut e = AuditEvent::new(
        template.tenant.as_str(),
        template.actor.as_str(),
        Action::Other(action.into()),
    )
    .with_resource(template.resource.clone())
    .with_details(details);
    e.source_ip.clone_from(&template.source_ip);
    e.client_host.clone_from(&template.client_host);
    e.request_id.clone_from(&template.request_id);
    e
}

pub(crate) fn session_details(profile: &str, version: Option<u64>) -> Details {
    Details::Session {
        profile: Some(profile.to_owned()),
        version,
        lease: None,
        mode: None,
        reason: None,
    }
}

/// One stored state row.
struct StateRow {
    version: u64,
    created_at: i64,
    last_used_at: i64,
    sealed: Vec<u8>,
    mac: Vec<u8>,
}

fn expiry(cfg: &SessionConfig, created_at: i64, last_used_at: i64) -> Option<i64> {
    let add = |t: i64, ms: Option<u64>| {
        ms.map(|ms| t.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX)))
    };
    match (
        add(created_at, cfg.absolute_ms),
        add(last_used_at, cfg.idle_ms),
    ) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The session tables, for SQLite.
const SQLITE_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS session_config (
        tenant TEXT NOT NULL, credential TEXT NOT NULL, body TEXT NOT NULL,
        mac BLOB NOT NULL, PRIMARY KEY (tenant, credential)) STRICT;
     CREATE TABLE IF NOT EXISTS session_state (
        tenant TEXT NOT NULL, credential TEXT NOT NULL, profile TEXT NOT NULL,
        version INTEGER NOT NULL, created_at INTEGER NOT NULL,
        last_used_at INTEGER NOT NULL, sealed BLOB NOT NULL, mac BLOB NOT NULL,
        PRIMARY KEY (tenant, credential, profile)) STRICT;
     CREATE TABLE IF NOT EXISTS session_versions (
        tenant TEXT NOT NULL, credential TEXT NOT NULL, profile TEXT NOT NULL,
        version INTEGER NOT NULL, mac BLOB NOT NULL,
        PRIMARY KEY (tenant, credential, profile)) STRICT;
     CREATE TABLE IF NOT EXISTS leases (
        id TEXT PRIMARY KEY NOT NULL, tenant TEXT NOT NULL, credential TEXT NOT NULL,
        kind TEXT NOT NULL, holder TEXT NOT NULL, acquired_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL, mac BLOB NOT NULL) STRICT;
     CREATE INDEX IF NOT EXISTS leases_by_credential ON leases (tenant, credential);
     CREATE TABLE IF NOT EXISTS lease_waiters (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
        tenant TEXT NOT NULL, credential TEXT NOT NULL, kind TEXT NOT NULL,
        expires_at INTEGER NOT NULL, mac BLOB NOT NULL);";

/// The same tables in the vault's PostgreSQL schema.
#[cfg(feature = "postgres")]
const PG_SCHEMA: &str = r#"CREATE TABLE IF NOT EXISTS session_config (
        tenant TEXT COLLATE "C" NOT NULL, credential TEXT COLLATE "C" NOT NULL,
        body TEXT NOT NULL, mac BYTEA NOT NULL, PRIMARY KEY (tenant, credential));
     CREATE TABLE IF NOT EXISTS session_state (
        tenant TEXT COLLATE "C" NOT NULL, credential TEXT COLLATE "C" NOT NULL,
        profile TEXT COLLATE "C" NOT NULL, version BIGINT NOT NULL, created_at BIGINT NOT NULL,
        last_used_at BIGINT NOT NULL, sealed BYTEA NOT NULL, mac BYTEA NOT NULL,
        PRIMARY KEY (tenant, credential, profile));
     CREATE TABLE IF NOT EXISTS session_versions (
        tenant TEXT COLLATE "C" NOT NULL, credential TEXT COLLATE "C" NOT NULL,
        profile TEXT COLLATE "C" NOT NULL, version BIGINT NOT NULL, mac BYTEA NOT NULL,
        PRIMARY KEY (tenant, credential, profile));
     CREATE TABLE IF NOT EXISTS leases (
        id TEXT COLLATE "C" PRIMARY KEY, tenant TEXT COLLATE "C" NOT NULL,
        credential TEXT COLLATE "C" NOT NULL, kind TEXT NOT NULL, holder TEXT NOT NULL,
        acquired_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, mac BYTEA NOT NULL);
     CREATE INDEX IF NOT EXISTS leases_by_credential ON leases (tenant, credential);
     CREATE TABLE IF NOT EXISTS lease_waiters (
        seq BIGSERIAL PRIMARY KEY, id TEXT COLLATE "C" NOT NULL UNIQUE,
        tenant TEXT COLLATE "C" NOT NULL, credential TEXT COLLATE "C" NOT NULL,
        kind TEXT NOT NULL, expires_at BIGINT NOT NULL, mac BYTEA NOT NULL)"#;

/// The advisory lock that serialises writes to the session tables on PostgreSQL.
#[cfg(feature = "postgres")]
const PG_LOCK: i64 = 0x6376_7365_7373_6e73; // "cvsessns"

/// Browser sessions, their settings and leases, over one [`Store`]: the records in a SQLite
/// database beside the vault (`sessions.db`) or in the vault's PostgreSQL database (feature
/// `postgres`), authenticated under a [`SessionKey`]; the states themselves sealed under each
/// tenant's data key. Several processes (and, on PostgreSQL, several machines) may open the
/// same records: leases coordinate them.
///
/// Every method takes the [`Scope`] it acts for: the tenant is the scope's, its actor, source
/// IP and host go into the events, and states open only for credentials the scope can use
/// (active, not expired). The scope must come from the store the sessions were opened with.
pub struct Sessions {
    db: Db,
    key: SessionKey,
    store: Store,
    pub(crate) poll: Duration,
    pub(crate) login_ttl: Duration,
    pub(crate) login_wait: Duration,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

fn db_err(e: DbError) -> SessionError {
    SessionError::Database(e.0)
}

impl From<DbError> for SessionError {
    fn from(e: DbError) -> Self {
        db_err(e)
    }
}

impl Sessions {
    fn with_db(db: Db, key: SessionKey, store: Store) -> Self {
        Self {
            db,
            key,
            store,
            poll: Duration::from_millis(20),
            login_ttl: Duration::from_secs(300),
            login_wait: Duration::from_secs(300),
        }
    }

    /// Opens (creating when missing, owner-only) the SQLite database at `path`.
    ///
    /// # Errors
    /// [`SessionError::Database`].
    pub fn open(path: &Path, key: SessionKey, store: Store) -> Result<Self, SessionError> {
        Ok(Self::with_db(Db::sqlite(path, SQLITE_SCHEMA)?, key, store))
    }

    /// Keeps the records in the PostgreSQL database `url` names (tables `session_config`,
    /// `session_state`, `session_versions`, `leases`, `lease_waiters` in `options`' schema,
    /// made when missing): for a vault kept there, so that every node shares states and
    /// leases. The connection is made with the vault's own checks; every node needs the same
    /// `sessions.key`.
    ///
    /// # Errors
    /// [`SessionError::Database`] naming the problem (URL, TLS, password, connection,
    /// privileges).
    #[cfg(feature = "postgres")]
    pub fn open_postgres(
        url: &str,
        options: &credvault_store::PostgresOptions,
        key: SessionKey,
        store: Store,
    ) -> Result<Self, SessionError> {
        Ok(Self::with_db(
            Db::postgres(
                url,
                options,
                PG_SCHEMA,
                &[
                    "session_config",
                    "session_state",
                    "session_versions",
                    "leases",
                    "lease_waiters",
                ],
                PG_LOCK,
            )?,
            key,
            store,
        ))
    }

    /// Opens the sessions of the vault in `vault_dir`, with `sessions.key` beside it (made
    /// when missing): in `sessions.db` there, or in the vault's PostgreSQL database when the
    /// vault is kept in one (`database.json`, feature `postgres`).
    ///
    /// # Errors
    /// [`SessionError::Key`], [`SessionError::Database`].
    pub fn open_in(vault_dir: &Path, store: Store) -> Result<Self, SessionError> {
        #[cfg(feature = "postgres")]
        {
            Self::open_in_with(
                vault_dir,
                store,
                &credvault_store::PostgresOptions::default(),
            )
        }
        #[cfg(not(feature = "postgres"))]
        {
            let key = SessionKey::load_or_create(&vault_dir.join(SESSIONS_KEY))?;
            Self::open(&vault_dir.join(SESSIONS_DB), key, store)
        }
    }

    /// [`open_in`](Self::open_in), connecting to a PostgreSQL vault's database with `base`'s
    /// settings (CA file, timeouts; the schema is the vault's).
    ///
    /// # Errors
    /// [`SessionError::Key`], [`SessionError::Database`].
    #[cfg(feature = "postgres")]
    pub fn open_in_with(
        vault_dir: &Path,
        store: Store,
        base: &credvault_store::PostgresOptions,
    ) -> Result<Self, SessionError> {
        let key = SessionKey::load_or_create(&vault_dir.join(SESSIONS_KEY))?;
        match postgres_of(vault_dir, base)? {
            Some((url, options)) => Self::open_postgres(&url, &options, key, store),
            None => Self::open(&vault_dir.join(SESSIONS_DB), key, store),
        }
    }

    /// How long [`with_session`](Self::with_session)'s login lease lasts without a heartbeat,
    /// and how long it waits for one (default 5 minutes each).
    pub fn login_timeouts(mut self, ttl: Duration, wait: Duration) -> Self {
        self.login_ttl = ttl;
        self.login_wait = wait;
        self
    }

    /// Whether the records are in PostgreSQL.
    pub fn in_postgres(&self) -> bool {
        self.db.is_postgres()
    }

    /// The store's clock (Unix ms).
    pub(crate) fn now(&self) -> i64 {
        self.store.now()
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn key(&self) -> &SessionKey {
        &self.key
    }

    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    // ---- settings ----

    /// Sets credential `id`'s session settings (recorded as `session_configured`).
    ///
    /// # Errors
    /// [`SessionError::Invalid`], [`SessionError::Store`] (no such credential in the scope's
    /// tenant; the event not recorded), [`SessionError::Database`].
    pub fn configure(
        &self,
        scope: &Scope<'_>,
        id: &CredentialId,
        cfg: &SessionConfig,
    ) -> Result<(), SessionError> {
        cfg.check()?;
        let body = serde_json::to_string(cfg).map_err(|e| SessionError::Database(e.to_string()))?;
        let t = scope.tenant_id();
        let mac = self.config_mac(t, id, &body);
        self.db.write(|tx| {
            tx.exec(
                "INSERT INTO session_config (tenant, credential, body, mac) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (tenant, credential) DO UPDATE SET body = $3, mac = $4",
                vals![t.as_str(), id.as_str(), body, mac],
            )?;
            scope.record(id, Action::Other("session_configured".into()), None)?;
            Ok(())
        })
    }

    fn config_mac(&self, t: &TenantId, id: &CredentialId, body: &str) -> Vec<u8> {
        self.key.mac(
            "session config",
            &[
                t.as_str().as_bytes(),
                id.as_str().as_bytes(),
                body.as_bytes(),
            ],
        )
    }

    /// Credential `id`'s session settings (the defaults when none were set).
    ///
    /// # Errors
    /// [`SessionError::Integrity`] (the stored settings were changed outside the vault),
    /// [`SessionError::Database`].
    pub fn config(
        &self,
        scope: &Scope<'_>,
        id: &CredentialId,
    ) -> Result<SessionConfig, SessionError> {
        self.db.read(|tx| self.config_in(tx, scope.tenant_id(), id))
    }

    pub(crate) fn config_in(
        &self,
        tx: &mut dyn Tx,
        t: &TenantId,
        id: &CredentialId,
    ) -> Result<SessionConfig, SessionError> {
        let Some(row) = tx.row(
            "SELECT body, mac FROM session_config WHERE tenant = $1 AND credential = $2",
            vals![t.as_str(), id.as_str()],
        )?
        else {
            return Ok(SessionConfig::default());
        };
        let (body, mac): (String, Vec<u8>) = (row.get(0)?, row.get(1)?);
        if !self.key.verify(
            "session config",
            &[
                t.as_str().as_bytes(),
                id.as_str().as_bytes(),
                body.as_bytes(),
            ],
            &mac,
        ) {
            return Err(SessionError::Integrity {
                record: "session config",
            });
        }
        serde_json::from_str(&body).map_err(|_| SessionError::Integrity {
            record: "session config",
        })
    }

    // ---- states ----

    fn state_mac(&self, t: &TenantId, id: &CredentialId, profile: &str, r: &StateRow) -> Vec<u8> {
        self.key.mac(
            "session state",
            &[
                t.as_str().as_bytes(),
                id.as_str().as_bytes(),
                profile.as_bytes(),
                &r.version.to_be_bytes(),
                &r.created_at.to_be_bytes(),
                &r.last_used_at.to_be_bytes(),
                &r.sealed,
            ],
        )
    }

    fn high_water_mac(&self, t: &TenantId, id: &CredentialId, profile: &str, v: u64) -> Vec<u8> {
        self.key.mac(
            "session version",
            &[
                t.as_str().as_bytes(),
                id.as_str().as_bytes(),
                profile.as_bytes(),
                &v.to_be_bytes(),
            ],
        )
    }

    fn state_row(
        &self,
        tx: &mut dyn Tx,
        t: &TenantId,
        id: &CredentialId,
        profile: &str,
    ) -> Result<Option<StateRow>, SessionError> {
        let Some(r) = tx.row(
            "SELECT version, created_at, last_used_at, sealed, mac FROM session_state
             WHERE tenant = $1 AND credential = $2 AND profile = $3",
            vals![t.as_str(), id.as_str(), profile],
        )?
        else {
            return Ok(None);
        };
        let row = StateRow {
            version: u64::try_from(r.get::<i64>(0)?).unwrap_or(0),
            created_at: r.get(1)?,
            last_used_at: r.get(2)?,
            sealed: r.get(3)?,
            mac: r.get(4)?,
        };
        if !self
            .key
            .verify_tag(&self.state_mac(t, id, profile, &row), &row.mac)
        {
            return Err(SessionError::Integrity { record: "session" });
        }
        Ok(Some(row))
    }

    /// The highest version ever saved for this credential and profile (0: none).
    fn high_water(
        &self,
        tx: &mut dyn Tx,
        t: &TenantId,
        id: &CredentialId,
        profile: &str,
    ) -> Result<u64, SessionError> {
        let Some(r) = tx.row(
            "SELECT version, mac FROM session_versions
             WHERE tenant = $1 AND credential = $2 AND profile = $3",
            vals![t.as_str(), id.as_str(), profile],
        )?
        else {
            return Ok(0);
        };
        let (v, mac): (i64, Vec<u8>) = (r.get(0)?, r.get(1)?);
        let v = u64::try_from(v).map_err(|_| SessionError::Integrity { record: "session" })?;
        if !self
            .key
            .verify_tag(&self.high_water_mac(t, id, profile, v), &mac)
        {
            return Err(SessionError::Integrity { record: "session" });
        }
        Ok(v)
    }

    /// Saves `state` as credential `id`'s browser state for `profile` (keeping only the kinds
    /// its settings keep), sealed under the tenant's data key and bound to tenant, credential,
    /// profile and the new version; recorded as `session_saved`. Saving over a live state
    /// keeps its login time (the absolute expiry still counts from the login).
    ///
    /// # Errors
    /// [`SessionError::Refused`] (the settings keep no kind), [`SessionError::Store`] (the
    /// credential cannot be used now; the event not recorded), [`SessionError::Integrity`],
    /// [`SessionError::Database`].
    pub fn save(
        &self,
        scope: &Scope<'_>,
        id: &CredentialId,
        profile: &str,
        state: &BrowserState,
    ) -> Result<SessionInfo, SessionError> {
        self.save_state(scope, id, profile, state, false)
    }

    pub(crate) fn save_state(
        &self,
        scope: &Scope<'_>,
        id: &CredentialId,
        profile: &str,
        state: &BrowserState,
        new_login: bool,
    ) -> Result<SessionInfo, SessionError> {
        check_profile(profile)?;
        let t = scope.tenant_id().clone();
        let cfg = self.db.read(|tx| self.config_in(tx, &t, id))?;
        if !(cfg.store.cookies || cfg.store.local || cfg.store.session) {
            return Err(SessionError::Refused(
                "this credential's settings keep no browser state (session config --store)".into(),
            ));
        }
        let kept = state.keeping(cfg.store)?;
        self.db.write(|tx| {
            let now = self.now();
            let version = self.high_water(tx, &t, id, profile)? + 1;
            let created_at = match self.state_row(tx, &t, id, profile) {
                Ok(Some(r))
                    if !new_login
                        && expiry(&cfg, r.created_at, r.last_used_at).is_none_or(|e| now < e) =>
                {
                    r.created_at
                }
                // A row that does not authenticate is replaced by this save.
                Ok(_) | Err(SessionError::Integrity { .. }) => now,
                Err(e) => return Err(e),
            };
            let sealed = scope.seal_attachment(
                id,
                &attachment(profile, version),
                kept.expose_json().as_bytes(),
            )?;
            let mut row = StateRow {
                version,
                created_at,
                last_used_at: now,
                sealed,
                mac: Vec::new(),
            };
            row.mac = self.state_mac(&t, id, profile, &row);
            let v = i64::try_from(version)
                .map_err(|_| SessionError::Integrity { record: "session" })?;
            tx.exec(
                "INSERT INTO session_state (tenant, credential, profile, version, created_at,
                    last_used_at, sealed, mac) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (tenant, credential, profile) DO UPDATE SET version = $4,
                    created_at = $5, last_used_at = $6, sealed = $7, mac = $8",
                vals![
                    t.as_str(),
                    id.as_str(),
                    profile,
                    v,
                    row.created_at,
                    row.last_used_at,
                    row.sealed,
                    row.mac
                ],
            )?;
            tx.exec(
                "INSERT INTO session_versions (tenant, credential, profile, version, mac)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (tenant, credential, profile) DO UPDATE SET version = $4, mac = $5",
                vals![
                    t.as_str(),
                    id.as_str(),
                    profile,
                    v,
                    self.high_water_mac(&t, id, profile, version)
                ],
            )?;
            scope.record(
                id,
                Action::Other("session_saved".into()),
                Some(session_details(profile, Some(version))),
            )?;
            Ok(SessionInfo {
                credential: id.clone(),
                profile: profile.to_owned(),
                version,
                created_at: row.created_at,
                last_used_at: row.last_used_at,
                expires_at: expiry(&cfg, row.created_at, row.last_used_at),
            })
        })
    }

    /// Credential `id`'s saved state for `profile`, when there is one and it has not
    /// expired (recorded as `session_restored`; its last use becomes now). An expired state
    /// is removed here (recorded as `session_expired`) and `None` returned, as for a state
    /// whose data key was retired since.
    ///
    /// # Errors
    /// [`SessionError::Integrity`] (the record was changed outside the vault, or an older
    /// state was put back; recorded as `integrity_failure`), [`SessionError::Store`] (the
    /// credential cannot be used now), [`SessionError::Database`].
    pub fn load(
        &self,
        scope: &Scope<'_>,
        id: &CredentialId,
        profile: &str,
    ) -> Result<Option<BrowserState>, SessionError> {
        check_profile(profile)?;
        let t = scope.tenant_id().clone();
        let integrity = |reason: &str| {
            let _ = scope.record(
                id,
                Action::IntegrityFailure,
                Some(Details::Session {
                    profile: Some(profile.to_owned()),
                    version: None,
                    lease: None,
                    mode: None,
                    reason: Some(reason.into()),
                }),
            );
            SessionError::Integrity { record: "session" }
        };
        self.db.write(|tx| {
            let row = match self.state_row(tx, &t, id, profile) {
                Ok(Some(r)) => r,
                Ok(None) => return Ok(None),
                Err(SessionError::Integrity { .. }) => {
                    return Err(integrity("the saved state's record does not match its MAC"))
                }
                Err(e) => return Err(e),
            };
            if row.version < self.high_water(tx, &t, id, profile)? {
                return Err(integrity(
                    "an older saved state was put back over a newer one",
                ));
            }
            let cfg = self.config_in(tx, &t, id)?;
            let now = self.now();
            let gone = |tx: &mut dyn Tx, reason: &str| -> Result<Option<BrowserState>, SessionError> {
                tx.exec(
                    "DELETE FROM session_state WHERE tenant = $1 AND credential = $2 AND profile = $3",
                    vals![t.as_str(), id.as_str(), profile],
                )?;
                let mut d = session_details(profile, Some(row.version));
                if let Details::Session { reason: r, .. } = &mut d {
                    *r = Some(reason.into());
                }
                scope.record(id, Action::Other("session_expired".into()), Some(d))?;
                Ok(None)
            };
            if expiry(&cfg, row.created_at, row.last_used_at).is_some_and(|e| now >= e) {
                return gone(tx, "expired");
            }
            let text = match scope.open_attachment(id, &attachment(profile, row.version), &row.sealed)
            {
                Ok(pt) => pt,
                Err(StoreError::AttachmentDoesNotOpen { .. }) => {
                    return gone(tx, "its data key was retired");
                }
                Err(e) => return Err(e.into()),
            };
            let text = std::str::from_utf8(text.expose_secret())
                .map_err(|_| SessionError::Integrity { record: "session" })?;
            let state = BrowserState::parse(text)?;
            let mut used = StateRow {
                last_used_at: now.max(row.last_used_at),
                ..row
            };
            used.mac = self.state_mac(&t, id, profile, &used);
            tx.exec(
                "UPDATE session_state SET last_used_at = $4, mac = $5
                 WHERE tenant = $1 AND credential = $2 AND profile = $3",
                vals![
                    t.as_str(),
                    id.as_str(),
                    profile,
                    used.last_used_at,
                    used.mac
                ],
            )?;
            scope.record(
                id,
                Action::Other("session_restored".into()),
                Some(session_details(profile, Some(used.version))),
            )?;
            Ok(Some(state))
        })
    }

    /// The scope's tenant's saved states (without the states), by credential and profile.
    ///
    /// # Errors
    /// [`SessionError::Integrity`] (a record changed outside the vault),
    /// [`SessionError::Database`].
    pub fn list(&self, scope: &Scope<'_>) -> Result<Vec<SessionInfo>, SessionError> {
        let t = scope.tenant_id();
        self.db.read(|tx| {
            let keys = tx.rows(
                "SELECT credential, profile FROM session_state WHERE tenant = $1
                 ORDER BY credential, profile",
                vals![t.as_str()],
            )?;
            let mut out = Vec::with_capacity(keys.len());
            // Rows come by credential: its settings are read once for all its profiles.
            let mut settings: Option<(CredentialId, SessionConfig)> = None;
            for k in keys {
                let (cred, profile): (String, String) = (k.get(0)?, k.get(1)?);
                let id = CredentialId::parse(&cred)
                    .map_err(|_| SessionError::Integrity { record: "session" })?;
                let Some(r) = self.state_row(tx, t, &id, &profile)? else {
                    continue;
                };
                let cfg = match settings {
                    Some((ref of, ref cfg)) if *of == id => cfg,
                    _ => &settings.insert((id.clone(), self.config_in(tx, t, &id)?)).1,
                };
                out.push(SessionInfo {
                    expires_at: expiry(cfg, r.created_at, r.last_used_at),
                    credential: id,
                    profile,
                    version: r.version,
                    created_at: r.created_at,
                    last_used_at: r.last_used_at,
                });
            }
            Ok(out)
        })
    }

    /// Removes credential `id`'s saved state for `profile` (every profile: `None`), each
    /// recorded as `session_removed`; how many were removed.
    ///
    /// # Errors
    /// [`SessionError::Store`] (no such credential; the event not recorded),
    /// [`SessionError::Database`].
    pub fn remove(
        &self,
        scope: &Scope<'_>,
        id: &CredentialId,
        profile: Option<&str>,
    ) -> Result<usize, SessionError> {
        if let Some(p) = profile {
            check_profile(p)?;
        }
        let t = scope.tenant_id();
        self.db.write(|tx| {
            let rows = match profile {
                Some(p) => tx.rows(
                    "SELECT profile FROM session_state
                     WHERE tenant = $1 AND credential = $2 AND profile = $3",
                    vals![t.as_str(), id.as_str(), p],
                )?,
                None => tx.rows(
                    "SELECT profile FROM session_state WHERE tenant = $1 AND credential = $2",
                    vals![t.as_str(), id.as_str()],
                )?,
            };
            let mut profiles = Vec::with_capacity(rows.len());
            for r in rows {
                profiles.push(r.get::<String>(0)?);
            }
            for p in &profiles {
                tx.exec(
                    "DELETE FROM session_state WHERE tenant = $1 AND credential = $2 AND profile = $3",
                    vals![t.as_str(), id.as_str(), p],
                )?;
                scope.record(
                    id,
                    Action::Other("session_removed".into()),
                    Some(session_details(p, None)),
                )?;
            }
            Ok(profiles.len())
        })
    }

    /// Removes every expired state of every tenant, and every state whose credential is gone
    /// (each recorded as `session_expired` by [`SWEEPER_ACTOR`]); how many were removed. Run
    /// it now and then (`credvault serve` runs it every minute); states are also removed
    /// when a [`load`](Self::load) finds them expired.
    ///
    /// # Errors
    /// [`SessionError::Database`], [`SessionError::Store`] (an event not recorded: the
    /// state is kept).
    pub fn sweep(&self) -> Result<usize, SessionError> {
        self.db.write(|tx| {
            let rows = tx.rows(
                "SELECT tenant, credential, profile, version, created_at, last_used_at
                 FROM session_state",
                &[],
            )?;
            let now = self.now();
            let mut removed = 0;
            for r in rows {
                let (tenant, cred, profile): (String, String, String) =
                    (r.get(0)?, r.get(1)?, r.get(2)?);
                let (version, created_at, last_used_at): (i64, i64, i64) =
                    (r.get(3)?, r.get(4)?, r.get(5)?);
                let (Ok(t), Ok(id)) = (TenantId::new(&tenant), CredentialId::parse(&cred)) else {
                    continue;
                };
                let credential_gone = match self.store.tenant(&t, SWEEPER_ACTOR) {
                    Ok(scope) => matches!(scope.get(&id), Err(StoreError::NotFound { .. })),
                    Err(StoreError::UnknownTenant { .. }) => true,
                    Err(e) => return Err(e.into()),
                };
                // Settings that do not authenticate leave the state to `load`, which refuses it.
                let expired = match self.config_in(tx, &t, &id) {
                    Ok(cfg) => expiry(&cfg, created_at, last_used_at).is_some_and(|e| now >= e),
                    Err(_) => false,
                };
                if !(expired || credential_gone) {
                    continue;
                }
                tx.exec(
                    "DELETE FROM session_state WHERE tenant = $1 AND credential = $2 AND profile = $3",
                    vals![tenant, cred, profile],
                )?;
                let mut d = session_details(&profile, u64::try_from(version).ok());
                if let Details::Session { reason, .. } = &mut d {
                    *reason = Some(
                        if credential_gone {
                            "credential deleted"
                        } else {
                            "expired"
                        }
                        .into(),
                    );
                }
                self.store.record_event(
                    &AuditEvent::new(
                        tenant.as_str(),
                        SWEEPER_ACTOR,
                        Action::Other("session_expired".into()),
                    )
                    .with_resource(Resource::credential(cred.as_str()))
                    .with_details(d),
                )?;
                removed += 1;
            }
            Ok(removed)
        })
    }
}

/// The PostgreSQL database a vault directory's vault is kept in (`database.json`), if any,
/// with `base`'s settings and the vault's schema.
///
/// # Errors
/// [`SessionError::Database`] when the configuration does not read.
#[cfg(feature = "postgres")]
pub(crate) fn postgres_of(
    vault_dir: &Path,
    base: &credvault_store::PostgresOptions,
) -> Result<Option<(String, credvault_store::PostgresOptions)>, SessionError> {
    let cfg = credvault_store::Vault::database_config(vault_dir)
        .map_err(|e| SessionError::Database(e.to_string()))?;
    Ok(cfg.map(|c| {
        let mut options = base.clone();
        if let Some(s) = &c.schema {
            options = options.schema(s.clone());
        }
        (c.url, options)
    }))
}

/// A cheap handle for threads: the sessions behind an `Arc`.
pub type SharedSessions = Arc<Sessions>;
