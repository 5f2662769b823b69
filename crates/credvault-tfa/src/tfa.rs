//! Routes, received codes, delivery.

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use credvault_session::sql::{Db, DbError, Tx};
use credvault_session::vals;
use credvault_session::SessionKey;
use credvault_store::audit::{Action, Details};
use credvault_store::{CredentialId, Scope, Store, TenantId};
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::TfaError;

/// The actor of the receiver's events (`tfa_code_received`, `tfa_message_ignored`).
pub const RECEIVER_ACTOR: &str = "credvault:tfa-receiver";
/// How long a received code is kept when nobody asks for it (default).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(10 * 60);
/// Largest email accepted, in bytes.
pub const MAX_EMAIL_LEN: usize = 1 << 20;
/// Longest SMS body accepted, in bytes.
pub const MAX_SMS_LEN: usize = 4096;
/// The database file's name in a vault directory.
pub const TFA_DB: &str = "tfa.db";
/// The local part before `+` of every receiving address.
pub const ADDRESS_PREFIX: &str = "vault";

/// The two-factor tables, for SQLite.
const SQLITE_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS tfa_routes (
        tenant TEXT NOT NULL, credential TEXT NOT NULL, token TEXT NOT NULL UNIQUE,
        phone TEXT, rules TEXT NOT NULL, mac BLOB NOT NULL,
        PRIMARY KEY (tenant, credential)) STRICT;
     CREATE INDEX IF NOT EXISTS tfa_routes_by_phone ON tfa_routes (phone);
     CREATE TABLE IF NOT EXISTS tfa_codes (
        id TEXT PRIMARY KEY NOT NULL, tenant TEXT NOT NULL, credential TEXT NOT NULL,
        channel TEXT NOT NULL, received_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL, sealed BLOB NOT NULL, mac BLOB NOT NULL) STRICT;
     CREATE INDEX IF NOT EXISTS tfa_codes_by_credential
        ON tfa_codes (tenant, credential, received_at);";

/// The same tables in the vault's PostgreSQL schema.
#[cfg(feature = "postgres")]
const PG_SCHEMA: &str = r#"CREATE TABLE IF NOT EXISTS tfa_routes (
        tenant TEXT COLLATE "C" NOT NULL, credential TEXT COLLATE "C" NOT NULL,
        token TEXT COLLATE "C" NOT NULL UNIQUE, phone TEXT COLLATE "C", rules TEXT NOT NULL,
        mac BYTEA NOT NULL, PRIMARY KEY (tenant, credential));
     CREATE INDEX IF NOT EXISTS tfa_routes_by_phone ON tfa_routes (phone);
     CREATE TABLE IF NOT EXISTS tfa_codes (
        id TEXT COLLATE "C" PRIMARY KEY, tenant TEXT COLLATE "C" NOT NULL,
        credential TEXT COLLATE "C" NOT NULL, channel TEXT NOT NULL, received_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL, sealed BYTEA NOT NULL, mac BYTEA NOT NULL);
     CREATE INDEX IF NOT EXISTS tfa_codes_by_credential
        ON tfa_codes (tenant, credential, received_at)"#;

/// The advisory lock that serialises writes to the two-factor tables on PostgreSQL.
#[cfg(feature = "postgres")]
const PG_LOCK: i64 = 0x6376_7466_6173_6d73; // "cvtfasms"

impl From<DbError> for TfaError {
    fn from(e: DbError) -> Self {
        Self::Database(e.0)
    }
}

/// Where a code came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// An email to the credential's address.
    Email,
    /// An SMS to the credential's phone number.
    Sms,
}

impl Channel {
    /// `email` or `sms`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Sms => "sms",
        }
    }
}

/// Which messages count for a credential, beyond reaching its address or number.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Rules {
    /// Senders allowed (case-insensitive; a whole address, or an `@domain` suffix); empty:
    /// any sender.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<String>,
    /// Text the subject must contain (case-insensitive); `None`: any subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The phone number (E.164, `+15551234567`) the site sends this credential's SMS to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

impl Rules {
    /// Only messages from `sender` (an address, or `@domain`).
    pub fn from(mut self, sender: impl Into<String>) -> Self {
        self.from.push(sender.into());
        self
    }

    /// Only messages whose subject contains `text`.
    pub fn subject(mut self, text: impl Into<String>) -> Self {
        self.subject = Some(text.into());
        self
    }

    /// SMS to `number` are this credential's.
    pub fn phone(mut self, number: impl Into<String>) -> Self {
        self.phone = Some(number.into());
        self
    }

    fn check(&self) -> Result<(), TfaError> {
        let bad = |what, reason: &str| TfaError::Invalid {
            what,
            reason: reason.into(),
        };
        if self.from.len() > 32 || self.from.iter().any(|f| f.is_empty() || f.len() > 254) {
            return Err(bad("sender rule", "1 to 32 senders of 1 to 254 bytes"));
        }
        if self
            .subject
            .as_ref()
            .is_some_and(|s| s.is_empty() || s.len() > 200)
        {
            return Err(bad("subject rule", "1 to 200 bytes"));
        }
        if let Some(p) = &self.phone {
            let digits = p.strip_prefix('+').unwrap_or("");
            if !(6..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("phone", "an E.164 number: + and 6 to 15 digits"));
            }
        }
        Ok(())
    }

    fn sender_allowed(&self, sender: &str) -> bool {
        let sender = sender.to_ascii_lowercase();
        self.from.is_empty()
            || self.from.iter().any(|f| {
                let f = f.to_ascii_lowercase();
                if f.starts_with('@') {
                    sender.ends_with(&f)
                } else {
                    sender == f
                }
            })
    }

    fn subject_allowed(&self, subject: &str) -> bool {
        self.subject
            .as_ref()
            .is_none_or(|s| subject.to_lowercase().contains(&s.to_lowercase()))
    }
}

/// A code handed out by [`Tfa::wait_for_code`]: a secret (redacted `Debug`, wiped on drop).
pub struct ReceivedCode {
    code: Zeroizing<String>,
    /// When it arrived (Unix ms).
    pub received_at: i64,
    /// Where from.
    pub channel: Channel,
}

impl ReceivedCode {
    /// The code.
    pub fn expose_secret(&self) -> &str {
        &self.code
    }
}

impl fmt::Debug for ReceivedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceivedCode")
            .field("code", &"[REDACTED]")
            .field("received_at", &self.received_at)
            .field("channel", &self.channel)
            .finish()
    }
}

/// What became of one received message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// A code was stored for the credential.
    Stored {
        /// The credential.
        credential: CredentialId,
    },
    /// The message reached no credential (an unknown address or number).
    NoRoute,
    /// The message reached a credential but was not taken (recorded as
    /// `tfa_message_ignored` with this reason).
    Ignored {
        /// The credential.
        credential: CredentialId,
        /// Why (sender not allowed, subject not matching, no code found).
        reason: &'static str,
    },
}

/// A received code's row (its MAC aside).
struct CodeRow {
    id: String,
    tenant: String,
    credential: String,
    channel: String,
    received_at: i64,
    expires_at: i64,
    sealed: Vec<u8>,
}

struct Route {
    tenant: TenantId,
    credential: CredentialId,
    rules: Rules,
}

/// Two-factor codes received by email and SMS for the credentials of one [`Store`]: routes
/// (a credential's address token, phone number and rules) and received codes in a SQLite
/// database beside the vault (`tfa.db`), each record authenticated under the session key
/// (`sessions.key`); each code sealed under its tenant's data key, kept for the retention
/// time (10 minutes by default), handed out once.
pub struct Tfa {
    db: Db,
    key: SessionKey,
    store: Store,
    retention: Duration,
    poll: Duration,
}

impl fmt::Debug for Tfa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tfa").finish_non_exhaustive()
    }
}

fn random_token() -> Result<String, TfaError> {
    // 12 characters of a-z0-9: about 62 bits, unguessable enough that an address is not
    // found by trying.
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut b = [0u8; 12];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| TfaError::Database("the system random generator failed".into()))?;
    // 252 is a multiple of 36: rejection keeps the choice uniform.
    let mut out = String::with_capacity(12);
    let mut pool: Vec<u8> = b.to_vec();
    while out.len() < 12 {
        for &x in &pool {
            if x < 252 && out.len() < 12 {
                out.push(char::from(ALPHABET[usize::from(x % 36)]));
            }
        }
        ring::rand::SystemRandom::new()
            .fill(&mut pool)
            .map_err(|_| TfaError::Database("the system random generator failed".into()))?;
    }
    Ok(out)
}

fn random_id() -> Result<String, TfaError> {
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| TfaError::Database("the system random generator failed".into()))?;
    Ok(hex::encode(b))
}

fn details(channel: Channel, reason: Option<&str>) -> Details {
    Details::Session {
        profile: None,
        version: None,
        lease: None,
        mode: Some(channel.as_str().to_owned()),
        reason: reason.map(str::to_owned),
    }
}

/// The token of a receiving address: what follows `+` in its local part, lower-cased.
pub fn address_token(address: &str) -> Option<String> {
    let a = address.trim().trim_start_matches('<').trim_end_matches('>');
    let (local, _) = a.rsplit_once('@')?;
    let (_, token) = local.split_once('+')?;
    (!token.is_empty() && token.len() <= 64).then(|| token.to_ascii_lowercase())
}

/// An email's sender address, subject and text (its first text part, or its first HTML part
/// as text): what matching and extraction look at.
pub(crate) fn parse_email(raw: &[u8]) -> Result<(String, String, Zeroizing<String>), TfaError> {
    if raw.len() > MAX_EMAIL_LEN {
        return Err(TfaError::Invalid {
            what: "email",
            reason: format!("larger than {MAX_EMAIL_LEN} bytes"),
        });
    }
    let msg = mail_parser::MessageParser::default()
        .parse(raw)
        .ok_or_else(|| TfaError::Invalid {
            what: "email",
            reason: "not an RFC 5322 message".into(),
        })?;
    let sender = msg
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .unwrap_or("")
        .to_owned();
    let subject = msg.subject().unwrap_or("").to_owned();
    let text = Zeroizing::new(
        msg.body_text(0)
            .or_else(|| msg.body_html(0))
            .map(|b| b.into_owned())
            .unwrap_or_default(),
    );
    Ok((sender, subject, text))
}

impl Tfa {
    /// Opens (creating when missing, owner-only) the database at `path`.
    ///
    /// # Errors
    /// [`TfaError::Database`].
    pub fn open(path: &Path, key: SessionKey, store: Store) -> Result<Self, TfaError> {
        Ok(Self::with_db(Db::sqlite(path, SQLITE_SCHEMA)?, key, store))
    }

    fn with_db(db: Db, key: SessionKey, store: Store) -> Self {
        Self {
            db,
            key,
            store,
            retention: DEFAULT_RETENTION,
            poll: Duration::from_millis(100),
        }
    }

    /// Keeps the routes and codes in the PostgreSQL database `url` names (tables `tfa_routes`
    /// and `tfa_codes` of `options`' schema, made when missing): for a vault kept there, so that
    /// a code received by one node is handed out by any other. Every node needs the same
    /// `sessions.key`.
    ///
    /// # Errors
    /// [`TfaError::Database`].
    #[cfg(feature = "postgres")]
    pub fn open_postgres(
        url: &str,
        options: &credvault_store::PostgresOptions,
        key: SessionKey,
        store: Store,
    ) -> Result<Self, TfaError> {
        Ok(Self::with_db(
            Db::postgres(
                url,
                options,
                PG_SCHEMA,
                &["tfa_routes", "tfa_codes"],
                PG_LOCK,
            )?,
            key,
            store,
        ))
    }

    /// Opens `tfa.db` in a vault directory, with the session key (`sessions.key`) beside it.
    ///
    /// # Errors
    /// [`TfaError::Session`] (the key file), [`TfaError::Database`].
    pub fn open_in(vault_dir: &Path, store: Store) -> Result<Self, TfaError> {
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
            let key = SessionKey::load_or_create(&vault_dir.join(credvault_session::SESSIONS_KEY))?;
            Self::open(&vault_dir.join(TFA_DB), key, store)
        }
    }

    /// [`open_in`](Self::open_in), connecting to a PostgreSQL vault's database with `base`'s
    /// settings (CA file, timeouts; the schema is the vault's).
    ///
    /// # Errors
    /// [`TfaError::Session`] (the key file), [`TfaError::Database`].
    #[cfg(feature = "postgres")]
    pub fn open_in_with(
        vault_dir: &Path,
        store: Store,
        base: &credvault_store::PostgresOptions,
    ) -> Result<Self, TfaError> {
        let key = SessionKey::load_or_create(&vault_dir.join(credvault_session::SESSIONS_KEY))?;
        let cfg = credvault_store::Vault::database_config(vault_dir)
            .map_err(|e| TfaError::Database(e.to_string()))?;
        match cfg {
            Some(c) => {
                let mut options = base.clone();
                if let Some(s) = &c.schema {
                    options = options.schema(s.clone());
                }
                Self::open_postgres(&c.url, &options, key, store)
            }
            None => Self::open(&vault_dir.join(TFA_DB), key, store),
        }
    }

    /// How long a received code is kept when nobody asks for it.
    pub fn retention(mut self, d: Duration) -> Self {
        self.retention = d;
        self
    }

    /// How often [`wait_for_code`](Self::wait_for_code) looks (default 100 ms).
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll = d;
        self
    }

    /// Whether the records are in PostgreSQL.
    pub fn in_postgres(&self) -> bool {
        self.db.is_postgres()
    }

    fn route_mac(
        &self,
        t: &str,
        c: &str,
        token: &str,
        phone: Option<&str>,
        rules: &str,
    ) -> Vec<u8> {
        self.key.mac(
            "tfa route",
            &[
                t.as_bytes(),
                c.as_bytes(),
                token.as_bytes(),
                phone.unwrap_or("").as_bytes(),
                &[u8::from(phone.is_some())],
                rules.as_bytes(),
            ],
        )
    }

    fn code_mac(&self, r: &CodeRow) -> Vec<u8> {
        self.key.mac(
            "tfa code",
            &[
                r.id.as_bytes(),
                r.tenant.as_bytes(),
                r.credential.as_bytes(),
                r.channel.as_bytes(),
                &r.received_at.to_be_bytes(),
                &r.expires_at.to_be_bytes(),
                &r.sealed,
            ],
        )
    }

    /// The route row of a credential: (token, rules), authenticated.
    fn route_of(
        &self,
        tx: &mut dyn Tx,
        t: &TenantId,
        id: &CredentialId,
    ) -> Result<Option<(String, Rules)>, TfaError> {
        let Some(r) = tx.row(
            "SELECT token, phone, rules, mac FROM tfa_routes WHERE tenant = $1 AND credential = $2",
            vals![t.as_str(), id.as_str()],
        )?
        else {
            return Ok(None);
        };
        let (token, phone, rules, mac): (String, Option<String>, String, Vec<u8>) =
            (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
        let parts: [&[u8]; 6] = [
            t.as_str().as_bytes(),
            id.as_str().as_bytes(),
            token.as_bytes(),
            phone.as_deref().unwrap_or("").as_bytes(),
            &[u8::from(phone.is_some())],
            rules.as_bytes(),
        ];
        if !self.key.verify("tfa route", &parts, &mac) {
            return Err(TfaError::Integrity { record: "route" });
        }
        let rules =
            serde_json::from_str(&rules).map_err(|_| TfaError::Integrity { record: "route" })?;
        Ok(Some((token, rules)))
    }

    fn write_route(
        &self,
        tx: &mut dyn Tx,
        t: &TenantId,
        id: &CredentialId,
        token: &str,
        rules: &Rules,
    ) -> Result<(), TfaError> {
        let body = serde_json::to_string(rules).map_err(|e| TfaError::Database(e.to_string()))?;
        let phone = rules.phone.as_deref();
        tx.exec(
            "INSERT INTO tfa_routes (tenant, credential, token, phone, rules, mac)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (tenant, credential) DO UPDATE SET token = $3, phone = $4, rules = $5, mac = $6",
            vals![t.as_str(), id.as_str(), token, phone, body,
                self.route_mac(t.as_str(), id.as_str(), token, phone, &body)],
        )?;
        Ok(())
    }

    /// Credential `id`'s receiving address at `domain` (`vault+<token>@domain`), made on first
    /// use: point the site's 2FA email there (the domain's MX, or a forwarding rule, must
    /// reach the receiver).
    ///
    /// # Errors
    /// [`TfaError::Store`] (no such credential in the scope's tenant),
    /// [`TfaError::Integrity`], [`TfaError::Database`].
    pub fn address(
        &self,
        scope: &Scope<'_>,
        id: &CredentialId,
        domain: &str,
    ) -> Result<String, TfaError> {
        if domain.is_empty()
            || domain.len() > 253
            || !domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
        {
            return Err(TfaError::Invalid {
                what: "domain",
                reason: "a host name (letters, digits, dots, hyphens)".into(),
            });
        }
        scope.get(id)?;
        let t = scope.tenant_id();
        let token = self.db.write(|tx| -> Result<String, TfaError> {
            Ok(match self.route_of(tx, t, id)? {
                Some((token, _)) => token,
                None => {
                    let token = random_token()?;
                    self.write_route(tx, t, id, &token, &Rules::default())?;
                    scope.record(id, Action::Other("tfa_route_created".into()), None)?;
                    token
                }
            })
        })?;
        Ok(format!("{ADDRESS_PREFIX}+{token}@{domain}"))
    }

    /// Sets credential `id`'s rules (sender, subject, phone number); recorded as
    /// `tfa_route_updated`.
    ///
    /// # Errors
    /// [`TfaError::Invalid`], [`TfaError::Store`], [`TfaError::Database`] (another
    /// credential has that phone number).
    pub fn set_rules(
        &self,
        scope: &Scope<'_>,
        id: &CredentialId,
        rules: &Rules,
    ) -> Result<(), TfaError> {
        rules.check()?;
        scope.get(id)?;
        let t = scope.tenant_id();
        self.db.write(|tx| {
            if let Some(p) = &rules.phone {
                let taken = tx.row(
                    "SELECT credential FROM tfa_routes WHERE phone = $1 AND NOT (tenant = $2 AND credential = $3)",
                    vals![p, t.as_str(), id.as_str()],
                )?;
                if taken.is_some() {
                    return Err(TfaError::Invalid {
                        what: "phone",
                        reason: "another credential receives this number's messages".into(),
                    });
                }
            }
            let token = match self.route_of(tx, t, id)? {
                Some((token, _)) => token,
                None => random_token()?,
            };
            self.write_route(tx, t, id, &token, rules)?;
            scope.record(id, Action::Other("tfa_route_updated".into()), None)?;
            Ok(())
        })
    }

    /// Credential `id`'s rules (the defaults when none were set).
    ///
    /// # Errors
    /// [`TfaError::Integrity`], [`TfaError::Database`].
    pub fn rules(&self, scope: &Scope<'_>, id: &CredentialId) -> Result<Rules, TfaError> {
        Ok(self
            .db
            .read(|tx| self.route_of(tx, scope.tenant_id(), id))?
            .map(|(_, r)| r)
            .unwrap_or_default())
    }

    fn route_by(
        &self,
        column: &str,
        value: &str,
        tenant: Option<&TenantId>,
    ) -> Result<Option<Route>, TfaError> {
        let sql = format!("SELECT tenant, credential FROM tfa_routes WHERE {column} = $1");
        let found = self.db.read(
            |tx| -> Result<Option<(TenantId, CredentialId, Rules)>, TfaError> {
                let Some(r) = tx.row(&sql, vals![value])? else {
                    return Ok(None);
                };
                let (t, c): (String, String) = (r.get(0)?, r.get(1)?);
                let t = TenantId::new(&t).map_err(|_| TfaError::Integrity { record: "route" })?;
                if tenant.is_some_and(|want| *want != t) {
                    return Ok(None);
                }
                let c =
                    CredentialId::parse(&c).map_err(|_| TfaError::Integrity { record: "route" })?;
                Ok(self.route_of(tx, &t, &c)?.map(|(_, rules)| (t, c, rules)))
            },
        )?;
        let Some((t, c, rules)) = found else {
            return Ok(None);
        };
        Ok(Some(Route {
            tenant: t,
            credential: c,
            rules,
        }))
    }

    /// Takes a message for a route: checks the rules, extracts the code, seals and stores it.
    fn take(
        &self,
        route: &Route,
        channel: Channel,
        sender: &str,
        subject: &str,
        text: &str,
    ) -> Result<Outcome, TfaError> {
        let scope = self.store.tenant(&route.tenant, RECEIVER_ACTOR)?;
        let ignored = |reason: &'static str| -> Result<Outcome, TfaError> {
            scope.record(
                &route.credential,
                Action::Other("tfa_message_ignored".into()),
                Some(details(channel, Some(reason))),
            )?;
            Ok(Outcome::Ignored {
                credential: route.credential.clone(),
                reason,
            })
        };
        if !route.rules.sender_allowed(sender) {
            return ignored("sender not allowed");
        }
        if channel == Channel::Email && !route.rules.subject_allowed(subject) {
            return ignored("subject does not match");
        }
        let message = Zeroizing::new(if subject.is_empty() {
            text.to_owned()
        } else {
            format!("Subject: {subject}\n\n{text}")
        });
        let Some(found) = credvault_totp::extract_code(&message) else {
            return ignored("no code found");
        };
        let code = Zeroizing::new(found.code);
        let id = random_id()?;
        let sealed = scope.seal_attachment(
            &route.credential,
            &format!("tfa-code:{id}"),
            code.as_bytes(),
        )?;
        let now = self.store.now();
        let expires =
            now.saturating_add(i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX));
        let row = CodeRow {
            id,
            tenant: route.tenant.as_str().to_owned(),
            credential: route.credential.as_str().to_owned(),
            channel: channel.as_str().to_owned(),
            received_at: now,
            expires_at: expires,
            sealed,
        };
        self.db.write(|tx| -> Result<(), TfaError> {
            tx.exec(
                "INSERT INTO tfa_codes (id, tenant, credential, channel, received_at, expires_at, sealed, mac)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                vals![row.id, row.tenant, row.credential, row.channel, row.received_at,
                    row.expires_at, row.sealed, self.code_mac(&row)],
            )?;
            scope.record(
                &route.credential,
                Action::Other("tfa_code_received".into()),
                Some(details(channel, None)),
            )?;
            Ok(())
        })?;
        Ok(Outcome::Stored {
            credential: route.credential.clone(),
        })
    }

    /// Receives one email (its raw RFC 5322 bytes) sent to `recipients` (the SMTP envelope's
    /// `RCPT TO` addresses): for each recipient that is a credential's address, takes the
    /// code if the credential's rules allow the message. The body is parsed (MIME, any
    /// transfer encoding, HTML turned into text), never stored or logged.
    ///
    /// # Errors
    /// [`TfaError::Invalid`] (larger than [`MAX_EMAIL_LEN`], or not a message),
    /// [`TfaError::Store`] (the credential cannot be used now; the event not recorded),
    /// [`TfaError::Integrity`], [`TfaError::Database`].
    pub fn receive_email(
        &self,
        raw: &[u8],
        recipients: &[String],
    ) -> Result<Vec<Outcome>, TfaError> {
        if raw.len() > MAX_EMAIL_LEN {
            return Err(TfaError::Invalid {
                what: "email",
                reason: format!("larger than {MAX_EMAIL_LEN} bytes"),
            });
        }
        let (sender, subject, text) = parse_email(raw)?;
        let mut out = Vec::new();
        for r in recipients {
            let Some(token) = address_token(r) else {
                out.push(Outcome::NoRoute);
                continue;
            };
            match self.route_by("token", &token, None)? {
                Some(route) => {
                    out.push(self.take(&route, Channel::Email, &sender, &subject, &text)?)
                }
                None => out.push(Outcome::NoRoute),
            }
        }
        Ok(out)
    }

    /// Receives one SMS to `to` from `from`: for the credential whose phone number is `to`
    /// (in `tenant`, when given: a gateway passes its host's tenant), takes the code if its
    /// rules allow the sender.
    ///
    /// # Errors
    /// [`TfaError::Invalid`] (a body longer than [`MAX_SMS_LEN`]), as
    /// [`receive_email`](Self::receive_email) otherwise.
    pub fn receive_sms(
        &self,
        tenant: Option<&TenantId>,
        to: &str,
        from: &str,
        body: &str,
    ) -> Result<Outcome, TfaError> {
        if body.len() > MAX_SMS_LEN {
            return Err(TfaError::Invalid {
                what: "sms",
                reason: format!("longer than {MAX_SMS_LEN} bytes"),
            });
        }
        match self.route_by("phone", to.trim(), tenant)? {
            Some(route) => self.take(&route, Channel::Sms, from.trim(), "", body),
            None => Ok(Outcome::NoRoute),
        }
    }

    /// The oldest unused code for credential `id` that arrived at or after `since` (Unix ms),
    /// waiting for one at most `timeout`. A code is handed out once: it is deleted as it is
    /// returned (recorded as `tfa_code_delivered`).
    ///
    /// # Errors
    /// [`TfaError::Timeout`], [`TfaError::Store`] (the credential cannot be used now),
    /// [`TfaError::Integrity`] (a code record changed outside the vault: it is deleted,
    /// unused), [`TfaError::Database`].
    pub fn wait_for_code(
        &self,
        scope: &Scope<'_>,
        id: &CredentialId,
        since: i64,
        timeout: Duration,
    ) -> Result<ReceivedCode, TfaError> {
        // Refuses (and records) a credential that cannot be used before waiting.
        scope.check_usable(id)?;
        let started = Instant::now();
        let t = scope.tenant_id().as_str();
        loop {
            let now = self.store.now();
            // Err(e) inside Ok: the code was taken out (deleted) but does not authenticate.
            let taken = self.db.write(
                |tx| -> Result<Result<Option<ReceivedCode>, TfaError>, TfaError> {
                    let Some(r) = tx.row(
                        "SELECT id, channel, received_at, expires_at, sealed, mac FROM tfa_codes
                     WHERE tenant = $1 AND credential = $2 AND received_at >= $3 AND expires_at > $4
                     ORDER BY received_at, id LIMIT 1",
                        vals![t, id.as_str(), since, now],
                    )?
                    else {
                        return Ok(Ok(None));
                    };
                    let row = CodeRow {
                        id: r.get(0)?,
                        tenant: t.to_owned(),
                        credential: id.as_str().to_owned(),
                        channel: r.get(1)?,
                        received_at: r.get(2)?,
                        expires_at: r.get(3)?,
                        sealed: r.get(4)?,
                    };
                    let mac: Vec<u8> = r.get(5)?;
                    tx.exec("DELETE FROM tfa_codes WHERE id = $1", vals![row.id])?;
                    if !self.key.verify_tag_of(&self.code_mac(&row), &mac) {
                        return Ok(Err(TfaError::Integrity { record: "code" }));
                    }
                    let (cid, ch, at, sealed) = (row.id, row.channel, row.received_at, row.sealed);
                    let channel = if ch == "sms" {
                        Channel::Sms
                    } else {
                        Channel::Email
                    };
                    let pt = scope.open_attachment(id, &format!("tfa-code:{cid}"), &sealed)?;
                    let code = Zeroizing::new(
                        std::str::from_utf8(pt.expose_secret())
                            .map_err(|_| TfaError::Integrity { record: "code" })?
                            .to_owned(),
                    );
                    scope.record(
                        id,
                        Action::Other("tfa_code_delivered".into()),
                        Some(details(channel, None)),
                    )?;
                    Ok(Ok(Some(ReceivedCode {
                        code,
                        received_at: at,
                        channel,
                    })))
                },
            )?;
            let taken = match taken {
                Ok(t) => t,
                Err(e) => {
                    let _ = scope.record(
                        id,
                        Action::IntegrityFailure,
                        Some(details(
                            Channel::Email,
                            Some("a received code's record does not match its MAC"),
                        )),
                    );
                    return Err(e);
                }
            };
            if let Some(c) = taken {
                return Ok(c);
            }
            let waited = started.elapsed();
            if waited >= timeout {
                return Err(TfaError::Timeout {
                    waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
                });
            }
            std::thread::sleep(self.poll.min(timeout - waited));
        }
    }

    /// Deletes every code past its retention; how many.
    ///
    /// # Errors
    /// [`TfaError::Database`].
    pub fn sweep(&self) -> Result<usize, TfaError> {
        let now = self.store.now();
        let n = self.db.write(|tx| -> Result<u64, TfaError> {
            Ok(tx.exec("DELETE FROM tfa_codes WHERE expires_at <= $1", vals![now])?)
        })?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}
