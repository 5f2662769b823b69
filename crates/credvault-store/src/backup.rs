//! Backups: a consistent snapshot of a vault — its rows and its whole audit chain, never a
//! key — in one versioned file, authenticated under the vault's audit key.
//!
//! [`Vault::backup`](crate::Vault::backup) writes one from either backend;
//! [`Vault::restore`](crate::Vault::restore) verifies it and makes a vault of it. The format
//! (`credvault-backup v1`, docs/formats.md) is three parts:
//!
//! ```text
//! credvault-backup v1\n
//! BODY\n                    one JSON object (below)
//! mac:TAG\n                 64 lower hex: AuditKey::document_tag("credvault-backup v1", BODY)
//! ```
//!
//! The body holds every row verbatim (ciphertexts, wrapped data keys and record MACs as they
//! are stored: nothing is decrypted), the one-time-code state, the audit log's segments
//! byte for byte with the chain's genesis hash and tip, the wrapped audit sealing key and the
//! vault's own credential types. Unknown fields are refused: a reader never drops what it
//! does not understand. Nothing in it opens without the master key, and nothing in it is
//! believed without the audit key.
//!
//! ```
//! use credvault_store::backup::{parse, BackupLimits};
//!
//! // Not a backup: refused before anything is decoded.
//! assert!(parse(b"hello", &BackupLimits::default()).is_err());
//! ```

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use credvault_audit::AuditKey;
use credvault_envelope::KeyId;
use serde::{Deserialize, Serialize};

use crate::ids::{CredentialId, TenantId};
use crate::storage::{CredentialRow, DataKeyRow, KeyState, OneTimeState, OtpFailures, TenantRow};

/// The first line of a backup, and the label of its tag.
pub const MAGIC: &str = "credvault-backup v1";

/// Largest backup read by default (1 GiB).
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// Longest name of a credential type file in a backup (`NAME.json`).
const MAX_TYPE_FILE_NAME: usize = 128;

/// Length of the trailer `"\nmac:" + 64 hex + "\n"`.
const TRAILER_LEN: usize = 1 + 4 + 64 + 1;

/// Limits applied when reading a backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackupLimits {
    /// Largest file accepted, in bytes (default [`DEFAULT_MAX_BYTES`]).
    pub max_bytes: u64,
}

impl Default for BackupLimits {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

impl BackupLimits {
    /// At most `bytes` bytes.
    #[must_use]
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }
}

/// A backup that cannot be used. Names the part and the reason, never a value; a backup that
/// does not authenticate says only that.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// Larger than [`BackupLimits::max_bytes`].
    #[error("backup is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// Does not start with [`MAGIC`] or has no trailer.
    #[error("not a credvault backup v1 (no header line or no mac trailer)")]
    NotABackup,
    /// The tag does not verify under the audit key: another vault's key, or the file was
    /// changed.
    #[error("backup does not authenticate under this audit key (another vault's key, or the file was altered)")]
    NotAuthentic,
    /// The body is not a valid v1 body.
    #[error("malformed backup: {part}: {reason}")]
    Malformed {
        /// Which part (`body`, `credentials`, `audit.segments`, ...).
        part: &'static str,
        /// Why.
        reason: String,
    },
}

/// Now, Unix milliseconds (for the backends that write backups).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn bad(part: &'static str, reason: impl Into<String>) -> BackupError {
    BackupError::Malformed {
        part,
        reason: reason.into(),
    }
}

/// Where a backup's audit chain ends and begins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ChainEnds {
    /// The log id.
    pub(crate) log_id: String,
    /// The hash of record 0.
    pub(crate) genesis: [u8; 32],
    /// The last record's sequence number.
    pub(crate) last_seq: u64,
    /// The last record's hash.
    pub(crate) head: [u8; 32],
}

/// A vault's contents at one instant: what a backup holds, and what a move to another
/// backend copies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// `sqlite` or `postgres`.
    pub(crate) source: String,
    /// When it was taken, Unix milliseconds.
    pub(crate) created_at: i64,
    pub(crate) tenants: Vec<TenantRow>,
    pub(crate) keys: Vec<DataKeyRow>,
    pub(crate) credentials: Vec<CredentialRow>,
    pub(crate) one_time: OneTimeState,
    pub(crate) records_authenticated: bool,
    pub(crate) heads_authenticated: bool,
    /// The audit log's segments, verbatim, in order (a PostgreSQL chain is its last segment).
    pub(crate) audit_segments: Vec<Vec<u8>>,
    pub(crate) chain: ChainEnds,
    /// The audit sealing key file's text (a wrapped key, hex), if the log seals its events.
    pub(crate) sealing_key: Option<String>,
    /// The vault's own credential types: file name (`NAME.json`) to its text.
    pub(crate) types: BTreeMap<String, String>,
}

/// What a backup holds, by count.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackupSummary {
    /// The backend it was taken from (`sqlite` or `postgres`).
    pub source: String,
    /// When it was taken, Unix milliseconds.
    pub created_at: i64,
    /// Tenants.
    pub tenants: usize,
    /// Data keys (wrapped).
    pub data_keys: usize,
    /// Credentials (sealed).
    pub credentials: usize,
    /// The audit chain's last record.
    pub audit_last_seq: u64,
    /// The audit log's id.
    pub audit_log_id: String,
    /// The file's size in bytes.
    pub bytes: u64,
}

impl Snapshot {
    pub(crate) fn summary(&self, bytes: u64) -> BackupSummary {
        BackupSummary {
            source: self.source.clone(),
            created_at: self.created_at,
            tenants: self.tenants.len(),
            data_keys: self.keys.len(),
            credentials: self.credentials.len(),
            audit_last_seq: self.chain.last_seq,
            audit_log_id: self.chain.log_id.clone(),
            bytes,
        }
    }
}

// ---- The v1 body, as JSON ----------------------------------------------------------------

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    format: String,
    version: u32,
    source: String,
    created_at: i64,
    audit: AuditJ,
    records_authenticated: bool,
    heads_authenticated: bool,
    tenants: Vec<TenantJ>,
    data_keys: Vec<KeyJ>,
    credentials: Vec<CredJ>,
    replay_guard: Vec<ReplayJ>,
    otp_throttle: Vec<ThrottleJ>,
    hotp_counters: Vec<HotpJ>,
    audit_sealing_key: Option<String>,
    types: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditJ {
    log_id: String,
    genesis: String,
    last_seq: u64,
    head: String,
    segments: Vec<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantJ {
    id: String,
    name: String,
    created_at: i64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyJ {
    tenant: String,
    key_id: String,
    wrapped: String,
    state: String,
    usage: u64,
    created_at: i64,
    mac: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredJ {
    tenant: String,
    id: String,
    name: String,
    #[serde(rename = "type")]
    type_name: String,
    environment: String,
    description: String,
    tags: Vec<String>,
    is_active: bool,
    expires_at: Option<i64>,
    created_by: String,
    created_at: i64,
    updated_at: i64,
    version: u64,
    last_used_at: Option<i64>,
    last_tested: Option<i64>,
    test_status: Option<String>,
    test_message: Option<String>,
    public: String,
    secret_fields: Vec<String>,
    key_id: String,
    secret: String,
    reveal: BTreeMap<String, credvault_schema::RevealPolicy>,
    mac: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayJ {
    key: String,
    step: u64,
    retain_until: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThrottleJ {
    key: String,
    window_start: u64,
    failures: u32,
    locked_until: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HotpJ {
    key: String,
    next: u64,
}

fn b64(part: &'static str, s: &str) -> Result<Vec<u8>, BackupError> {
    B64.decode(s).map_err(|_| bad(part, "not base64"))
}

fn hash32(part: &'static str, s: &str) -> Result<[u8; 32], BackupError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| bad(part, "not 64 hex digits"))?;
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(bad(part, "not lower-case hex"));
    }
    Ok(out)
}

fn key_id(part: &'static str, s: &str) -> Result<KeyId, BackupError> {
    let id = KeyId::from_hex(s).map_err(|_| bad(part, "not a key id"))?;
    // One spelling only, so that what parses re-encodes to the same bytes.
    if id.to_string() != s {
        return Err(bad(part, "not a key id in lower-case hex"));
    }
    Ok(id)
}

fn tenant(part: &'static str, s: String) -> Result<TenantId, BackupError> {
    TenantId::new(s).map_err(|e| bad(part, format!("tenant id: {e}")))
}

/// Whether `name` may be written as a file of the types directory: `NAME.json`, with `NAME`
/// of letters, digits, `_`, `-` and `.`, not starting with `.`.
fn safe_type_file(name: &str) -> bool {
    name.len() <= MAX_TYPE_FILE_NAME
        && name.strip_suffix(".json").is_some_and(|stem| {
            !stem.is_empty()
                && !stem.starts_with('.')
                && stem
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        })
}

impl Snapshot {
    fn to_body(&self) -> Body {
        Body {
            format: "credvault-backup".into(),
            version: 1,
            source: self.source.clone(),
            created_at: self.created_at,
            audit: AuditJ {
                log_id: self.chain.log_id.clone(),
                genesis: hex::encode(self.chain.genesis),
                last_seq: self.chain.last_seq,
                head: hex::encode(self.chain.head),
                segments: self.audit_segments.iter().map(|s| B64.encode(s)).collect(),
            },
            records_authenticated: self.records_authenticated,
            heads_authenticated: self.heads_authenticated,
            tenants: self
                .tenants
                .iter()
                .map(|t| TenantJ {
                    id: t.id.as_str().to_owned(),
                    name: t.name.clone(),
                    created_at: t.created_at,
                })
                .collect(),
            data_keys: self
                .keys
                .iter()
                .map(|k| KeyJ {
                    tenant: k.tenant.as_str().to_owned(),
                    key_id: k.key_id.to_string(),
                    wrapped: B64.encode(&k.wrapped),
                    state: k.state.as_str().to_owned(),
                    usage: k.usage,
                    created_at: k.created_at,
                    mac: B64.encode(&k.mac),
                })
                .collect(),
            credentials: self
                .credentials
                .iter()
                .map(|c| CredJ {
                    tenant: c.tenant.as_str().to_owned(),
                    id: c.id.as_str().to_owned(),
                    name: c.name.clone(),
                    type_name: c.type_name.clone(),
                    environment: c.environment.clone(),
                    description: c.description.clone(),
                    tags: c.tags.clone(),
                    is_active: c.is_active,
                    expires_at: c.expires_at,
                    created_by: c.created_by.clone(),
                    created_at: c.created_at,
                    updated_at: c.updated_at,
                    version: c.version,
                    last_used_at: c.last_used_at,
                    last_tested: c.last_tested,
                    test_status: c.test_status.clone(),
                    test_message: c.test_message.clone(),
                    public: c.public.clone(),
                    secret_fields: c.secret_fields.clone(),
                    key_id: c.key_id.to_string(),
                    secret: B64.encode(&c.secret),
                    reveal: c.reveal.clone(),
                    mac: B64.encode(&c.mac),
                })
                .collect(),
            replay_guard: self
                .one_time
                .replay
                .iter()
                .map(|(key, step, until)| ReplayJ {
                    key: key.clone(),
                    step: *step,
                    retain_until: *until,
                })
                .collect(),
            otp_throttle: self
                .one_time
                .throttle
                .iter()
                .map(|(key, f)| ThrottleJ {
                    key: key.clone(),
                    window_start: f.window_start,
                    failures: f.failures,
                    locked_until: f.locked_until,
                })
                .collect(),
            hotp_counters: self
                .one_time
                .hotp
                .iter()
                .map(|(key, next)| HotpJ {
                    key: key.clone(),
                    next: *next,
                })
                .collect(),
            audit_sealing_key: self.sealing_key.clone(),
            types: self.types.clone(),
        }
    }

    fn from_body(b: Body) -> Result<Self, BackupError> {
        if b.format != "credvault-backup" {
            return Err(bad("format", "not credvault-backup"));
        }
        if b.version != 1 {
            return Err(bad("version", format!("version {} is not 1", b.version)));
        }
        if !matches!(b.source.as_str(), "sqlite" | "postgres") {
            return Err(bad("source", "neither sqlite nor postgres"));
        }
        if b.audit.segments.is_empty() {
            return Err(bad("audit.segments", "no segment"));
        }
        if b.audit.log_id.is_empty() || b.audit.log_id.len() > 128 {
            return Err(bad("audit.log_id", "empty or longer than 128 bytes"));
        }
        let chain = ChainEnds {
            log_id: b.audit.log_id,
            genesis: hash32("audit.genesis", &b.audit.genesis)?,
            last_seq: b.audit.last_seq,
            head: hash32("audit.head", &b.audit.head)?,
        };
        let audit_segments = b
            .audit
            .segments
            .iter()
            .map(|s| b64("audit.segments", s))
            .collect::<Result<Vec<_>, _>>()?;
        let tenants = b
            .tenants
            .into_iter()
            .map(|t| {
                Ok(TenantRow {
                    id: tenant("tenants", t.id)?,
                    name: t.name,
                    created_at: t.created_at,
                })
            })
            .collect::<Result<Vec<_>, BackupError>>()?;
        let keys = b
            .data_keys
            .into_iter()
            .map(|k| {
                Ok(DataKeyRow {
                    tenant: tenant("data_keys", k.tenant)?,
                    key_id: key_id("data_keys", &k.key_id)?,
                    wrapped: b64("data_keys", &k.wrapped)?,
                    state: KeyState::parse(&k.state)
                        .ok_or_else(|| bad("data_keys", "state is neither active nor retiring"))?,
                    usage: k.usage,
                    created_at: k.created_at,
                    mac: b64("data_keys", &k.mac)?,
                })
            })
            .collect::<Result<Vec<_>, BackupError>>()?;
        let credentials = b
            .credentials
            .into_iter()
            .map(|c| {
                Ok(CredentialRow {
                    tenant: tenant("credentials", c.tenant)?,
                    id: CredentialId::parse(&c.id)
                        .map_err(|e| bad("credentials", format!("id: {e}")))?,
                    name: c.name,
                    type_name: c.type_name,
                    environment: c.environment,
                    description: c.description,
                    tags: c.tags,
                    is_active: c.is_active,
                    expires_at: c.expires_at,
                    created_by: c.created_by,
                    created_at: c.created_at,
                    updated_at: c.updated_at,
                    version: c.version,
                    last_used_at: c.last_used_at,
                    last_tested: c.last_tested,
                    test_status: c.test_status,
                    test_message: c.test_message,
                    public: c.public,
                    secret_fields: c.secret_fields,
                    key_id: key_id("credentials", &c.key_id)?,
                    secret: b64("credentials", &c.secret)?,
                    reveal: c.reveal,
                    mac: b64("credentials", &c.mac)?,
                })
            })
            .collect::<Result<Vec<_>, BackupError>>()?;
        let one_time = OneTimeState {
            replay: b
                .replay_guard
                .into_iter()
                .map(|r| (r.key, r.step, r.retain_until))
                .collect(),
            throttle: b
                .otp_throttle
                .into_iter()
                .map(|t| {
                    (
                        t.key,
                        OtpFailures {
                            window_start: t.window_start,
                            failures: t.failures,
                            locked_until: t.locked_until,
                        },
                    )
                })
                .collect(),
            hotp: b
                .hotp_counters
                .into_iter()
                .map(|h| (h.key, h.next))
                .collect(),
        };
        if let Some(k) = &b.audit_sealing_key {
            let bytes = hex::decode(k).map_err(|_| bad("audit_sealing_key", "not hex"))?;
            credvault_envelope::WrappedKey::parse(&bytes)
                .map_err(|_| bad("audit_sealing_key", "not a wrapped key"))?;
        }
        if let Some(name) = b.types.keys().find(|n| !safe_type_file(n)) {
            // A file name is not a secret; it is shown so the operator can find it.
            return Err(bad(
                "types",
                format!("{name:?} is not a type file name (NAME.json)"),
            ));
        }
        Ok(Self {
            source: b.source,
            created_at: b.created_at,
            tenants,
            keys,
            credentials,
            one_time,
            records_authenticated: b.records_authenticated,
            heads_authenticated: b.heads_authenticated,
            audit_segments,
            chain,
            sealing_key: b.audit_sealing_key,
            types: b.types,
        })
    }

    /// The backup file: header, body, tag under `key`.
    pub(crate) fn encode(&self, key: &AuditKey) -> Vec<u8> {
        // Serializing these plain structs cannot fail (string keys, no floats).
        let body = serde_json::to_vec(&self.to_body()).unwrap_or_default();
        let tag = key.document_tag(MAGIC, &body);
        let mut out = Vec::with_capacity(MAGIC.len() + body.len() + TRAILER_LEN + 1);
        out.extend_from_slice(MAGIC.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(&body);
        out.extend_from_slice(b"\nmac:");
        out.extend_from_slice(hex::encode(tag).as_bytes());
        out.push(b'\n');
        out
    }
}

/// The body and tag of a backup file, split without checking either.
fn split<'a>(bytes: &'a [u8], limits: &BackupLimits) -> Result<(&'a [u8], [u8; 32]), BackupError> {
    if bytes.len() as u64 > limits.max_bytes {
        return Err(BackupError::TooLarge {
            limit: limits.max_bytes,
        });
    }
    let rest = bytes
        .strip_prefix(MAGIC.as_bytes())
        .and_then(|r| r.strip_prefix(b"\n"))
        .ok_or(BackupError::NotABackup)?;
    let cut = rest
        .len()
        .checked_sub(TRAILER_LEN)
        .ok_or(BackupError::NotABackup)?;
    let (body, trailer) = rest.split_at(cut);
    let hex_tag = trailer
        .strip_prefix(b"\nmac:")
        .and_then(|t| t.strip_suffix(b"\n"))
        .ok_or(BackupError::NotABackup)?;
    // Lower-case hex only, as the body's hashes: one spelling per tag, so no changed bit
    // (the case bit of a hex letter) still opens.
    let tag = std::str::from_utf8(hex_tag)
        .ok()
        .and_then(|t| hash32("mac", t).ok())
        .ok_or(BackupError::NotABackup)?;
    Ok((body, tag))
}

/// Parses a backup's body without authenticating it (for inspection and fuzzing): nothing
/// it returns may be acted on. [`Vault::restore`](crate::Vault::restore) authenticates a
/// backup before it uses anything in it.
///
/// # Errors
/// [`BackupError`].
pub fn parse(bytes: &[u8], limits: &BackupLimits) -> Result<BackupSummary, BackupError> {
    let (body, _) = split(bytes, limits)?;
    Ok(parse_body(body)?.summary(bytes.len() as u64))
}

fn parse_body(body: &[u8]) -> Result<Snapshot, BackupError> {
    let b: Body = serde_json::from_slice(body).map_err(|e| {
        // serde_json names the position and what was expected, never the input.
        bad("body", format!("not a v1 body ({})", e.classify_name()))
    })?;
    Snapshot::from_body(b)
}

/// Authenticates a backup under `key`, then parses it.
pub(crate) fn open(
    bytes: &[u8],
    key: &AuditKey,
    limits: &BackupLimits,
) -> Result<Snapshot, BackupError> {
    let (body, tag) = split(bytes, limits)?;
    if !key.check_document_tag(MAGIC, body, &tag) {
        return Err(BackupError::NotAuthentic);
    }
    parse_body(body)
}

/// Names of serde_json error categories (the error's own text may quote the input).
trait Classify {
    fn classify_name(&self) -> &'static str;
}

impl Classify for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "a field is missing, unknown or of the wrong type",
            serde_json::error::Category::Eof => "ends early",
        }
    }
}

/// Test support: a snapshot's backup bytes and back (not a public API).
#[doc(hidden)]
pub mod testing {
    use super::{open, parse_body, split, BackupError, BackupLimits, Snapshot};
    use credvault_audit::AuditKey;

    /// Parses `bytes` unauthenticated and, if they parse, re-encodes them under `key`: the
    /// result must authenticate and parse to the same snapshot.
    ///
    /// # Panics
    /// On a broken round trip.
    pub fn round_trip(bytes: &[u8], key: &AuditKey) -> Result<(), BackupError> {
        let (body, _) = split(bytes, &BackupLimits::default())?;
        let snap: Snapshot = parse_body(body)?;
        let again = snap.encode(key);
        match open(&again, key, &BackupLimits::default()) {
            Ok(reopened) => assert_eq!(reopened, snap, "backup does not round-trip"),
            Err(e) => panic!("a re-encoded backup does not open: {e}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use credvault_schema::RevealPolicy;
    use proptest::collection::{btree_map, vec};
    use proptest::prelude::*;

    fn key() -> AuditKey {
        AuditKey::from_bytes(&[7; 32])
    }

    fn tenant_id() -> impl Strategy<Value = TenantId> {
        "[a-z0-9][a-z0-9_.-]{0,20}".prop_map(|s| TenantId::new(s).unwrap())
    }

    fn key_id() -> impl Strategy<Value = KeyId> {
        any::<[u8; 16]>().prop_map(|b| KeyId::from_hex(&hex::encode(b)).unwrap())
    }

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        vec(any::<u8>(), 0..40)
    }

    fn text() -> impl Strategy<Value = String> {
        "\\PC{0,12}"
    }

    fn data_key() -> impl Strategy<Value = DataKeyRow> {
        (
            tenant_id(),
            key_id(),
            bytes(),
            any::<bool>(),
            any::<u64>(),
            any::<i64>(),
            bytes(),
        )
            .prop_map(
                |(tenant, key_id, wrapped, active, usage, created_at, mac)| DataKeyRow {
                    tenant,
                    key_id,
                    wrapped,
                    state: if active {
                        KeyState::Active
                    } else {
                        KeyState::Retiring
                    },
                    usage,
                    created_at,
                    mac,
                },
            )
    }

    fn credential() -> impl Strategy<Value = CredentialRow> {
        (
            (
                tenant_id(),
                any::<[u8; 16]>(),
                text(),
                text(),
                text(),
                text(),
            ),
            (
                vec(text(), 0..3),
                any::<bool>(),
                any::<Option<i64>>(),
                any::<(i64, i64, u64)>(),
                any::<(Option<i64>, Option<i64>)>(),
                proptest::option::of(text()),
            ),
            (
                text(),
                vec(text(), 0..3),
                key_id(),
                bytes(),
                bytes(),
                btree_map(text(), 0..3usize, 0..3),
            ),
        )
            .prop_map(
                |(
                    (tenant, id, name, type_name, environment, description),
                    (tags, is_active, expires_at, (created_at, updated_at, version), used, status),
                    (public, secret_fields, key_id, secret, mac, reveal),
                )| CredentialRow {
                    id: CredentialId::parse(&format!("cred_{}", hex::encode(id))).unwrap(),
                    tenant,
                    name,
                    type_name,
                    environment,
                    description,
                    tags,
                    is_active,
                    expires_at,
                    created_by: "someone".into(),
                    created_at,
                    updated_at,
                    version,
                    last_used_at: used.0,
                    last_tested: used.1,
                    test_status: status.clone(),
                    test_message: status,
                    public,
                    secret_fields,
                    key_id,
                    secret,
                    reveal: reveal
                        .into_iter()
                        .map(|(k, p)| {
                            let p = [
                                RevealPolicy::Revealable,
                                RevealPolicy::UseOnly,
                                RevealPolicy::WriteOnly,
                            ][p];
                            (k, p)
                        })
                        .collect(),
                    mac,
                },
            )
    }

    prop_compose! {
        fn snapshot()(
            postgres in any::<bool>(),
            created_at in any::<i64>(),
            tenants in vec((tenant_id(), text(), any::<i64>()), 0..3),
            keys in vec(data_key(), 0..3),
            credentials in vec(credential(), 0..3),
            replay in vec((text(), any::<u64>(), any::<u64>()), 0..3),
            throttle in vec((text(), any::<(u64, u32, u64)>()), 0..3),
            hotp in vec((text(), any::<u64>()), 0..3),
            flags in any::<(bool, bool)>(),
            audit_segments in vec(bytes(), 1..3),
            log_id in "[a-z0-9-]{1,40}",
            ends in any::<([u8; 32], u64, [u8; 32])>(),
            types in btree_map("[a-z_]{1,10}\\.json", text(), 0..3),
        ) -> Snapshot {
            Snapshot {
                source: if postgres { "postgres" } else { "sqlite" }.into(),
                created_at,
                tenants: tenants
                    .into_iter()
                    .map(|(id, name, created_at)| TenantRow { id, name, created_at })
                    .collect(),
                keys,
                credentials,
                one_time: OneTimeState {
                    replay,
                    throttle: throttle
                        .into_iter()
                        .map(|(k, (window_start, failures, locked_until))| {
                            (k, OtpFailures { window_start, failures, locked_until })
                        })
                        .collect(),
                    hotp,
                },
                records_authenticated: flags.0,
                heads_authenticated: flags.1,
                audit_segments,
                chain: ChainEnds { log_id, genesis: ends.0, last_seq: ends.1, head: ends.2 },
                sealing_key: None,
                types,
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn a_backup_opens_to_exactly_what_was_written(s in snapshot()) {
            let b = s.encode(&key());
            prop_assert_eq!(open(&b, &key(), &BackupLimits::default()).unwrap(), s.clone());
            let summary = parse(&b, &BackupLimits::default()).unwrap();
            prop_assert_eq!(summary.credentials, s.credentials.len());
            prop_assert_eq!(summary.bytes, b.len() as u64);
        }

        #[test]
        fn any_changed_bit_is_refused(s in snapshot(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut b = s.encode(&key());
            let i = at.index(b.len());
            b[i] ^= 1 << bit;
            prop_assert!(open(&b, &key(), &BackupLimits::default()).is_err());
        }

        #[test]
        fn any_cut_or_addition_is_refused(s in snapshot(), at in any::<prop::sample::Index>(), extra in vec(any::<u8>(), 1..4)) {
            let b = s.encode(&key());
            let cut = at.index(b.len());
            prop_assert!(open(&b[..cut], &key(), &BackupLimits::default()).is_err());
            let mut longer = b.clone();
            longer.splice(cut..cut, extra);
            prop_assert!(open(&longer, &key(), &BackupLimits::default()).is_err());
        }

        #[test]
        fn another_key_is_refused(s in snapshot(), other in any::<[u8; 32]>()) {
            prop_assume!(other != [7; 32]);
            let b = s.encode(&key());
            prop_assert_eq!(
                open(&b, &AuditKey::from_bytes(&other), &BackupLimits::default()),
                Err(BackupError::NotAuthentic)
            );
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in vec(any::<u8>(), 0..300)) {
            let mut framed = MAGIC.as_bytes().to_vec();
            framed.push(b'\n');
            framed.extend_from_slice(&data);
            framed.extend_from_slice(b"\nmac:");
            framed.extend_from_slice(&[b'0'; 64]);
            framed.push(b'\n');
            for input in [&data[..], &framed[..]] {
                let _ = parse(input, &BackupLimits::default());
                let _ = testing::round_trip(input, &key());
            }
        }
    }

    #[test]
    fn type_file_names_cannot_leave_the_types_directory() {
        for bad_name in [
            "../x.json",
            "a/b.json",
            ".hidden.json",
            "x.txt",
            ".json",
            "..json",
        ] {
            assert!(!safe_type_file(bad_name), "{bad_name}");
        }
        for good in ["acme_token.json", "a-b.c.json"] {
            assert!(safe_type_file(good), "{good}");
        }
    }

    #[test]
    fn the_limit_is_checked_before_anything_else() {
        let b = vec![b'x'; 101];
        assert_eq!(
            parse(&b, &BackupLimits::default().max_bytes(100)),
            Err(BackupError::TooLarge { limit: 100 })
        );
    }
}
