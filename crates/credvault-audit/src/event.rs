//! Audit events: who did what to which credential, when, from where, and how it ended.
//!
//! Every text field of an event takes `impl Into<String>`: there is no conversion from a secret
//! type (a `Zeroizing` buffer, a `secrecy::SecretString`, a decrypted credential) to an event
//! field, so a secret can only reach an event by being copied out on purpose. Field changes
//! carry old and new values only for metadata ([`FieldChange::metadata`]); a secret field change
//! is recorded by name alone ([`FieldChange::secret`]).
//!
//! ```compile_fail
//! use credvault_audit::{Action, AuditEvent};
//! let secret = zeroize::Zeroizing::new(String::from("hunter2"));
//! // error: `Zeroizing<String>` is not `Into<String>`
//! let event = AuditEvent::new("acme", "alice", Action::Accessed).with_request_id(secret);
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time, UTC, with millisecond precision; written as RFC 3339
/// (`2026-11-22T14:21:58.123Z`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The current time (the Unix epoch if the system clock is set before it).
    pub fn now() -> Self {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        Self(u64::try_from(millis).unwrap_or(u64::MAX))
    }

    /// The time `millis` milliseconds after the Unix epoch.
    pub const fn from_unix_millis(millis: u64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_unix_millis(self) -> u64 {
        self.0
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`, for a time in years 1970 to 9999; `None` past them.
    pub(crate) fn rfc3339(self) -> Option<[u8; 24]> {
        let ms = self.0;
        let days = ms / 86_400_000;
        let in_day = ms % 86_400_000;
        // Civil date from days since 1970-01-01 (H. Hinnant, "chrono-compatible low-level date
        // algorithms"), in eras of 400 years starting on 0000-03-01.
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z % 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + u64::from(month <= 2);
        if year > 9_999 {
            return None;
        }
        let mut t = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut v: u64| {
            for i in (at..at + width).rev() {
                t[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, in_day / 3_600_000);
        put(14, 2, in_day / 60_000 % 60);
        put(17, 2, in_day / 1_000 % 60);
        put(20, 3, in_day % 1_000);
        Some(t)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(t) = self.rfc3339() {
            return f.write_str(core::str::from_utf8(&t).map_err(|_| fmt::Error)?);
        }
        let t = UNIX_EPOCH + Duration::from_millis(self.0);
        write!(f, "{}", humantime::format_rfc3339_millis(t))
    }
}

/// A timestamp that is not RFC 3339 UTC (`YYYY-MM-DDTHH:MM:SS[.fff]Z`), or a bare date
/// (`YYYY-MM-DD`, meaning midnight UTC).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("timestamp is not RFC 3339 UTC (e.g. 2026-11-22T14:21:58.123Z) or a date (2026-11-22)")]
pub struct TimestampError;

impl FromStr for Timestamp {
    type Err = TimestampError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = if s.len() == 10 {
            humantime::parse_rfc3339(&format!("{s}T00:00:00Z"))
        } else {
            humantime::parse_rfc3339(s)
        }
        .map_err(|_| TimestampError)?;
        let millis = t.duration_since(UNIX_EPOCH).map_err(|_| TimestampError)?;
        u64::try_from(millis.as_millis())
            .map(Self)
            .map_err(|_| TimestampError)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Handed over as one string (`collect_str` goes through the formatter and the
        // serializer's escaping a piece at a time).
        match self.rfc3339() {
            Some(t) => {
                s.serialize_str(core::str::from_utf8(&t).map_err(serde::ser::Error::custom)?)
            }
            None => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A random 128-bit event identifier, written as a UUID-shaped hex string.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventId([u8; 16]);

/// Identifiers drawn from one operating-system base before the next (see [`EventId::random`]).
const ID_RESEED_EVERY: u32 = 1 << 20;

thread_local! {
    static ID_STATE: std::cell::Cell<([u8; 16], u32)> =
        const { std::cell::Cell::new(([0; 16], ID_RESEED_EVERY)) };
}

impl EventId {
    /// A fresh identifier in the UUID v4 layout. Each thread draws a random 128-bit base from
    /// the operating system once per 2^20 identifiers and adds a counter to it, so identifiers
    /// are distinct by construction within a thread and independent across threads and
    /// processes (a system call per event cost about a microsecond on every audited read).
    /// They identify; they are not secrets and need not be unpredictable. A process that
    /// forks without `exec` and records events in the child should call
    /// [`EventId::reseed`] there first.
    pub fn random() -> Self {
        let mut b = ID_STATE.with(|st| {
            let (mut base, mut used) = st.get();
            if used >= ID_RESEED_EVERY {
                base = Self::os_bytes();
                used = 0;
            }
            st.set((base, used + 1));
            // The counter goes into the low end of the big-endian bytes 8..16: it changes
            // bytes 15, 14, ... first and can never reach the variant bits of byte 8 within
            // one base (a carry there would need 2^56 identifiers).
            let mut low = [0u8; 8];
            low.copy_from_slice(&base[8..]);
            let low = u64::from_be_bytes(low).wrapping_add(u64::from(used));
            let mut b = base;
            b[8..].copy_from_slice(&low.to_be_bytes());
            b
        });
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Self(b)
    }

    /// Makes this thread's next [`random`](Self::random) draw a new base (call it in a child
    /// process after `fork`, before recording events there).
    pub fn reseed() {
        ID_STATE.with(|st| st.set(([0; 16], ID_RESEED_EVERY)));
    }

    fn os_bytes() -> [u8; 16] {
        let mut b = [0u8; 16];
        // An identifier, not a key: if the OS generator fails, fall back to time-derived bytes
        // rather than refusing to record the event.
        if getrandom::fill(&mut b).is_err() {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            b = nanos.to_le_bytes();
        }
        b
    }

    /// The identifier's 16 bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl EventId {
    /// 8-4-4-4-12 lowercase hex digits, built on the stack.
    pub(crate) fn text(&self) -> [u8; 36] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [b'-'; 36];
        let mut at = 0;
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                at += 1;
            }
            buf[at] = HEX[usize::from(b >> 4)];
            buf[at + 1] = HEX[usize::from(b & 15)];
            at += 2;
        }
        buf
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(core::str::from_utf8(&self.text()).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({self})")
    }
}

impl FromStr for EventId {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let compact: String = s.chars().filter(|c| *c != '-').collect();
        let mut b = [0u8; 16];
        hex::decode_to_slice(compact, &mut b).map_err(|_| "event id is not 32 hex digits")?;
        Ok(Self(b))
    }
}

impl Serialize for EventId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = self.text();
        s.serialize_str(core::str::from_utf8(&text).map_err(serde::ser::Error::custom)?)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What happened. Written as a snake_case string; a reader meets actions added by newer
/// writers as [`Action::Other`] instead of failing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// A credential was created.
    Created,
    /// A credential was updated.
    Updated,
    /// A credential was deleted.
    Deleted,
    /// A credential's secret values were read.
    Accessed,
    /// An access was refused (inactive, expired, wrong tenant...).
    AccessDenied,
    /// An access was allowed but failed (decryption, storage...).
    AccessFailed,
    /// A credential was tested against its service.
    Tested,
    /// A credential's secret was rotated.
    Rotated,
    /// A master or tenant key was rotated.
    KeyRotated,
    /// A TOTP code was generated from a credential.
    TotpGenerated,
    /// A DLP detector found a secret in text.
    DlpDetected,
    /// A stored record failed its integrity check (changed outside the vault); nothing was
    /// used or revealed.
    IntegrityFailure,
    /// A request to a network gateway: one record per request, whatever it did (the store's
    /// own records of what it did carry the same `request_id`).
    Request,
    /// A request a gateway forwarded upstream with a credential injected, recorded when the
    /// exchange ends (the answer's status, sizes, DLP detections, an LLM's token usage).
    Proxied,
    /// An action this version does not know (written by a newer version, or by an application).
    Other(String),
}

impl Action {
    /// The action's name as written in records.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Deleted => "deleted",
            Self::Accessed => "accessed",
            Self::AccessDenied => "access_denied",
            Self::AccessFailed => "access_failed",
            Self::Tested => "tested",
            Self::Rotated => "rotated",
            Self::KeyRotated => "key_rotated",
            Self::TotpGenerated => "totp_generated",
            Self::DlpDetected => "dlp_detected",
            Self::IntegrityFailure => "integrity_failure",
            Self::Request => "request",
            Self::Proxied => "proxied",
            Self::Other(s) => s,
        }
    }

    /// Every action this version knows, in a stable order.
    pub const KNOWN: [Action; 14] = [
        Self::Created,
        Self::Updated,
        Self::Deleted,
        Self::Accessed,
        Self::AccessDenied,
        Self::AccessFailed,
        Self::Tested,
        Self::Rotated,
        Self::KeyRotated,
        Self::TotpGenerated,
        Self::DlpDetected,
        Self::IntegrityFailure,
        Self::Request,
        Self::Proxied,
    ];
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::KNOWN
            .iter()
            .find(|a| a.as_str() == s)
            .cloned()
            .unwrap_or_else(|| Self::Other(s.to_owned())))
    }
}

impl Serialize for Action {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let Ok(a) = s.parse();
        Ok(a)
    }
}

/// How the operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// It succeeded.
    Success,
    /// It was refused by policy.
    Denied,
    /// It was attempted and failed.
    Failure,
}

impl Outcome {
    /// The outcome's name as written in records.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Denied => "denied",
            Self::Failure => "failure",
        }
    }
}

/// The credential an event is about. Every part is optional (a key rotation has no credential).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Resource {
    /// Credential id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Credential name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Credential type (a schema type name such as `postgres`).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Environment (`production`, `staging`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// The credential's version the event saw or wrote (`created`: 1; `updated`: the new
    /// version; `deleted`: the version deleted). Lets a verifier check the store against the
    /// log. Absent in records written before version 0.2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The tenant data key (its id, hex) the credential's fields are sealed under: the key
    /// this event's operation sealed or opened with. Absent in records written before 0.2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl Resource {
    /// A resource naming a credential by id.
    pub fn credential(id: impl Into<String>) -> Self {
        Self {
            id: Some(id.into()),
            ..Self::default()
        }
    }

    /// Sets the credential version.
    pub fn with_version(mut self, version: u64) -> Self {
        self.version = Some(version);
        self
    }

    /// Sets the data key the event's operation used.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the credential name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the credential type.
    pub fn with_type(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// Sets the environment.
    pub fn with_environment(mut self, environment: impl Into<String>) -> Self {
        self.environment = Some(environment.into());
        self
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.id.is_none()
            && self.name.is_none()
            && self.kind.is_none()
            && self.environment.is_none()
    }
}

/// One changed field of an `updated` event. Metadata changes carry old and new values; a
/// secret field's change carries only its name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    field: String,
    secret: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    old: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    new: Option<String>,
}

impl FieldChange {
    /// A non-secret field (description, tags, environment, a `string` field...) changed from
    /// `old` to `new` (`None`: unset).
    pub fn metadata(
        field: impl Into<String>,
        old: Option<impl Into<String>>,
        new: Option<impl Into<String>>,
    ) -> Self {
        Self {
            field: field.into(),
            secret: false,
            old: old.map(Into::into),
            new: new.map(Into::into),
        }
    }

    /// A secret field changed. Only the name is recorded; there is no way to attach a value.
    pub fn secret(field: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            secret: true,
            old: None,
            new: None,
        }
    }

    /// The field's name.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// Whether the field is secret (and so has no values).
    pub fn is_secret(&self) -> bool {
        self.secret
    }

    /// The old value of a metadata field.
    pub fn old(&self) -> Option<&str> {
        self.old.as_deref()
    }

    /// The new value of a metadata field.
    pub fn new_value(&self) -> Option<&str> {
        self.new.as_deref()
    }
}

/// Why an access was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DenyReason {
    /// The credential is marked inactive.
    Inactive,
    /// The credential is past its expiry.
    Expired,
    /// The credential belongs to another tenant.
    WrongTenant,
    /// No such tenant.
    UnknownTenant,
    /// No such credential.
    UnknownCredential,
    /// The caller is not allowed this operation.
    Forbidden,
    /// Too many wrong one-time codes for the credential: verification is refused for a while
    /// (RFC 4226 §7.3).
    Throttled,
    /// A reason written by a newer version.
    #[serde(other)]
    Unknown,
}

/// Result of a credential test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TestStatus {
    /// The service accepted the credential.
    Ok,
    /// The service rejected the credential.
    Failed,
    /// The test could not run (network, timeout...).
    Error,
    /// A status written by a newer version.
    #[serde(other)]
    Unknown,
}

/// Action-specific details.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Details {
    /// For `updated`: the fields that changed.
    Updated {
        /// Changed fields, metadata with values, secrets by name only.
        changes: Vec<FieldChange>,
    },
    /// For `accessed`: the service that asked, and the fields it read.
    Accessed {
        /// The service (automation, agent, tool) that read the credential.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service: Option<String>,
        /// Names of the fields read.
        fields: Vec<String>,
    },
    /// For `access_denied`: why.
    AccessDenied {
        /// The reason.
        reason: DenyReason,
    },
    /// For `access_failed`: what failed (never a value).
    AccessFailed {
        /// A short description such as `decryption failed`.
        reason: String,
    },
    /// For `tested`: the result.
    Tested {
        /// Test status.
        status: TestStatus,
        /// The tester's message.
        message: String,
    },
    /// For `key_rotated`: which key and versions.
    KeyRotated {
        /// `master` or `tenant`.
        key: String,
        /// Version before.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from_version: Option<u32>,
        /// Version after.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to_version: Option<u32>,
    },
    /// For `dlp_detected`: which detector, how many matches (never the matches).
    DlpDetected {
        /// Detector name.
        detector: String,
        /// Number of matches.
        count: u64,
    },
    /// For `key_used`: a master key operation on a tenant data key.
    KeyUsed {
        /// The data key's id (hex).
        key: String,
        /// The master key, as `provider:version`.
        master: String,
        /// The operation: `unwrap`.
        operation: String,
    },
    /// For `request`: what a gateway was asked and what it answered (never a key, a header
    /// value or a body).
    Request {
        /// HTTP method.
        method: String,
        /// The route as declared (`/api/credentials/{id}`), not the path, so that no value in
        /// a path reaches the log; `unmatched` for a path no route serves.
        route: String,
        /// The HTTP status sent.
        status: u16,
        /// Time from the request's arrival to the response, in microseconds.
        latency_us: u64,
        /// The API key's public id, when one was presented and recognised.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        api_key: Option<String>,
    },
    /// For `proxied`: how a forwarded exchange ended (never a header, a body or a value).
    Proxied {
        /// The credential type whose rule was injected.
        credential_type: String,
        /// The upstream's HTTP status (absent when no answer came).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        upstream_status: Option<u16>,
        /// Request body bytes sent upstream.
        bytes_sent: u64,
        /// Response body bytes received from upstream.
        bytes_received: u64,
        /// Whether the response body reached its end (`false`: cut by a `block` detector,
        /// an upstream error, the client leaving or the time limit).
        completed: bool,
        /// Detections in either direction, counted per detector and action.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        detections: Vec<DlpCount>,
        /// Known secrets (the injected credential's values) masked in the answer.
        #[serde(default, skip_serializing_if = "is_zero")]
        masked: u64,
        /// The model named by an LLM upstream's answer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<String>,
        /// Input (prompt) tokens an LLM upstream reported.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input_tokens: Option<u64>,
        /// Output (completion) tokens an LLM upstream reported.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output_tokens: Option<u64>,
    },
    /// For an application's events about a credential's browser sessions, leases and
    /// second-factor codes (`session_saved`, `session_restored`, `login_started`,
    /// `lease_acquired`, `tfa_code_received`...): which profile, version, lease or channel;
    /// never a state, a cookie or a code.
    Session {
        /// The browser profile.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        profile: Option<String>,
        /// The saved state's version.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u64>,
        /// The lease's id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lease: Option<String>,
        /// The lease's kind (`run`, `login`) or the code's channel (`email`, `sms`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<String>,
        /// Why, for a failure or an expiry (never a value).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Details written by a newer version.
    #[serde(other)]
    Unknown,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Detections of one detector in one direction of a proxied exchange.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DlpCount {
    /// `request` (client to upstream) or `response`.
    pub direction: String,
    /// Detector name.
    pub detector: String,
    /// What was done: `redact`, `block` or `warn`.
    pub action: String,
    /// Number of matches.
    pub count: u64,
}

impl DlpCount {
    /// A count.
    pub fn new(
        direction: impl Into<String>,
        detector: impl Into<String>,
        action: impl Into<String>,
        count: u64,
    ) -> Self {
        Self {
            direction: direction.into(),
            detector: detector.into(),
            action: action.into(),
            count,
        }
    }
}

/// One audit event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditEvent {
    /// Unique id.
    pub id: EventId,
    /// When it happened.
    pub time: Timestamp,
    /// The tenant (workspace) it happened in.
    pub tenant: String,
    /// Who did it: a user id or a service name.
    pub actor: String,
    /// Source IP address of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    /// Client host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_host: Option<String>,
    /// Request id, for correlation with application logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// What happened.
    pub action: Action,
    /// The credential concerned.
    #[serde(default, skip_serializing_if = "Resource::is_empty")]
    pub resource: Resource,
    /// How it ended.
    pub outcome: Outcome,
    /// Action-specific details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Details>,
}

impl AuditEvent {
    /// A new event, now, with a fresh id. The outcome follows the action (`access_denied` is
    /// denied, `access_failed` and `integrity_failure` a failure, anything else a success) until
    /// [`with_outcome`](Self::with_outcome) says otherwise.
    pub fn new(tenant: impl Into<String>, actor: impl Into<String>, action: Action) -> Self {
        let outcome = match action {
            Action::AccessDenied => Outcome::Denied,
            Action::AccessFailed | Action::IntegrityFailure => Outcome::Failure,
            _ => Outcome::Success,
        };
        Self {
            id: EventId::random(),
            time: Timestamp::now(),
            tenant: tenant.into(),
            actor: actor.into(),
            source_ip: None,
            client_host: None,
            request_id: None,
            action,
            resource: Resource::default(),
            outcome,
            details: None,
        }
    }

    /// Sets the time.
    pub fn at(mut self, time: Timestamp) -> Self {
        self.time = time;
        self
    }

    /// Sets the resource.
    pub fn with_resource(mut self, resource: Resource) -> Self {
        self.resource = resource;
        self
    }

    /// Sets the source IP.
    pub fn with_source_ip(mut self, ip: impl Into<String>) -> Self {
        self.source_ip = Some(ip.into());
        self
    }

    /// Sets the client host name.
    pub fn with_client_host(mut self, host: impl Into<String>) -> Self {
        self.client_host = Some(host.into());
        self
    }

    /// Sets the request id.
    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// Sets the outcome.
    pub fn with_outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    /// Sets the details.
    pub fn with_details(mut self, details: Details) -> Self {
        self.details = Some(details);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn times_are_written_as_humantime_writes_them(ms in 0u64..253_402_300_800_000) {
            let t = Timestamp::from_unix_millis(ms).rfc3339().unwrap();
            let expected =
                humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms));
            prop_assert_eq!(std::str::from_utf8(&t).unwrap(), expected.to_string());
        }
    }

    #[test]
    fn times_at_the_edges_of_days_months_and_years() {
        for text in [
            "1970-01-01T00:00:00.000Z",
            "1999-12-31T23:59:59.999Z",
            "2000-02-29T12:00:00.001Z",
            "2100-03-01T00:00:00.000Z",
            "2026-12-07T18:30:05.250Z",
            "9999-12-31T23:59:59.999Z",
        ] {
            let t = text.parse::<Timestamp>().unwrap();
            assert_eq!(
                t.rfc3339().map(|t| t.to_vec()),
                Some(text.as_bytes().to_vec())
            );
            assert_eq!(t.to_string(), text);
        }
        assert_eq!(
            Timestamp::from_unix_millis(253_402_300_800_000).rfc3339(),
            None
        );
    }
}
