//! Generating and verifying codes, on totp-rs.

use core::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use subtle::{ConditionallySelectable, ConstantTimeEq};
use totp_rs::{Builder, Totp};

use crate::error::{OtpError, VerifyError};
use crate::replay::ReplayGuard;
use crate::secret::TotpSecret;

/// The HMAC hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// HMAC-SHA1 (the default everywhere).
    #[default]
    Sha1,
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

impl Algorithm {
    /// Parses `SHA1`, `SHA256`, `SHA512` (any case, dash optional).
    pub fn parse(name: &str) -> Result<Self, OtpError> {
        match name.to_ascii_uppercase().replace('-', "").as_str() {
            "SHA1" => Ok(Algorithm::Sha1),
            "SHA256" => Ok(Algorithm::Sha256),
            "SHA512" => Ok(Algorithm::Sha512),
            _ => Err(OtpError::UnknownAlgorithm {
                name: name.chars().take(32).collect(),
            }),
        }
    }

    /// The otpauth name.
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha512 => "SHA512",
        }
    }

    fn engine(self) -> totp_rs::Algorithm {
        match self {
            Algorithm::Sha1 => totp_rs::Algorithm::SHA1,
            Algorithm::Sha256 => totp_rs::Algorithm::SHA256,
            Algorithm::Sha512 => totp_rs::Algorithm::SHA512,
        }
    }
}

/// What kind of one-time password.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Time-based (RFC 6238) with a period in seconds.
    Totp {
        /// Step length in seconds.
        period: u64,
    },
    /// Counter-based (RFC 4226), with the next counter to use.
    Hotp {
        /// Counter.
        counter: u64,
    },
    /// Steam Guard: TOTP/SHA1/30 s, 5 characters from Steam's alphabet.
    Steam,
}

/// A source of the current Unix time, injectable for tests and simulations.
pub trait Clock: Send + Sync {
    /// Seconds since the Unix epoch.
    fn now(&self) -> u64;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// A fixed time.
#[derive(Clone, Copy, Debug)]
pub struct FixedClock(pub u64);

impl Clock for FixedClock {
    fn now(&self) -> u64 {
        self.0
    }
}

/// A generated code and when it is valid.
#[derive(Clone, PartialEq, Eq)]
pub struct Code {
    token: totp_rs::Token,
    /// The step (TOTP: `time / period`; HOTP: the counter).
    pub step: u64,
    /// First second the code is valid (TOTP), or 0 for HOTP.
    pub valid_from: u64,
    /// First second it is no longer valid (TOTP), or `u64::MAX` for HOTP.
    pub valid_until: u64,
}

impl Code {
    /// Seconds left at `now` (0 when expired).
    pub fn remaining_at(&self, now: u64) -> u64 {
        self.valid_until.saturating_sub(now)
    }
}

impl fmt::Display for Code {
    /// The code itself, zero-padded ("012345") or Steam's 5 characters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.token, f)
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Code")
            .field("code", &"[REDACTED]")
            .field("step", &self.step)
            .field("valid_until", &self.valid_until)
            .finish()
    }
}

/// What [`Otp::code_for_submission`] advises.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submission {
    /// Submit this code now: it stays valid for at least the requested margin.
    Now(Code),
    /// The current code would expire mid-request: submit this (next-step) code at `use_at`.
    At {
        /// The next step's code.
        code: Code,
        /// The second it becomes valid.
        use_at: u64,
    },
}

/// An authenticator: secret, kind, algorithm, digits, and the labels an otpauth URI carries.
pub struct Otp {
    pub(crate) secret: TotpSecret,
    pub(crate) kind: Kind,
    pub(crate) algorithm: Algorithm,
    pub(crate) digits: u8,
    pub(crate) issuer: Option<String>,
    pub(crate) account: Option<String>,
    engine: Totp,
}

/// Steam Guard's code length.
pub const STEAM_DIGITS: u8 = 5;
/// The verification window used when none is given: one step either side (RFC 6238 §5.2).
pub const DEFAULT_SKEW: u32 = 1;

impl Otp {
    /// A TOTP authenticator (RFC 6238). `digits` 6–8, `period` > 0.
    pub fn totp(
        secret: TotpSecret,
        algorithm: Algorithm,
        digits: u8,
        period: u64,
    ) -> Result<Self, OtpError> {
        if period == 0 {
            return Err(OtpError::BadPeriod);
        }
        Self::build(secret, Kind::Totp { period }, algorithm, digits)
    }

    /// A HOTP authenticator (RFC 4226) whose next counter is `counter`.
    pub fn hotp(
        secret: TotpSecret,
        algorithm: Algorithm,
        digits: u8,
        counter: u64,
    ) -> Result<Self, OtpError> {
        Self::build(secret, Kind::Hotp { counter }, algorithm, digits)
    }

    /// A Steam Guard authenticator.
    pub fn steam(secret: TotpSecret) -> Result<Self, OtpError> {
        Self::build(secret, Kind::Steam, Algorithm::Sha1, STEAM_DIGITS)
    }

    pub(crate) fn build(
        secret: TotpSecret,
        kind: Kind,
        algorithm: Algorithm,
        digits: u8,
    ) -> Result<Self, OtpError> {
        let builder = match kind {
            Kind::Steam => Builder::new_steam(),
            Kind::Totp { .. } | Kind::Hotp { .. } => {
                if !(6..=8).contains(&digits) {
                    return Err(OtpError::DigitsOutOfRange {
                        digits: u32::from(digits),
                    });
                }
                Builder::new()
                    .with_algorithm(algorithm.engine())
                    .with_digits(digits)
            }
        };
        // HOTP(c) is TOTP with a 1-second step at time c (T0 = 0), so one engine serves both.
        let step = match kind {
            Kind::Totp { period } => period,
            Kind::Hotp { .. } => 1,
            Kind::Steam => 30,
        };
        // Non-compliant build: real sites issue secrets under 128 bits (reported, not refused).
        let engine = builder
            .with_secret(secret.expose_secret().to_vec())
            .with_step_duration(step)
            .with_skew(0)
            .build_noncompliant();
        Ok(Self {
            secret,
            kind,
            algorithm,
            digits,
            issuer: None,
            account: None,
            engine,
        })
    }

    /// Sets the issuer and account labels (for otpauth URIs).
    pub fn with_labels(mut self, issuer: Option<String>, account: Option<String>) -> Self {
        self.issuer = issuer;
        self.account = account;
        self
    }

    /// The kind (with period or counter).
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The hash algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Code length.
    pub fn digits(&self) -> u8 {
        self.digits
    }

    /// Issuer label.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// Account label.
    pub fn account(&self) -> Option<&str> {
        self.account.as_deref()
    }

    /// The secret.
    pub fn secret(&self) -> &TotpSecret {
        &self.secret
    }

    /// True when the secret is under 128 bits (RFC 4226's recommendation); codes still work.
    pub fn secret_below_recommended(&self) -> bool {
        self.secret.is_below_recommended()
    }

    fn period(&self) -> u64 {
        match self.kind {
            Kind::Totp { period } => period,
            Kind::Steam => 30,
            Kind::Hotp { .. } => 1,
        }
    }

    /// The code for `step` (TOTP/Steam: time step; HOTP: counter).
    fn code_for_step(&self, step: u64) -> Code {
        let p = self.period();
        let t = step.saturating_mul(p);
        let hotp = matches!(self.kind, Kind::Hotp { .. });
        Code {
            token: self.engine.generate(t),
            step,
            valid_from: if hotp { 0 } else { t },
            valid_until: if hotp { u64::MAX } else { t.saturating_add(p) },
        }
    }

    /// The TOTP/Steam code at Unix time `time` (for HOTP, the code for counter `time`).
    pub fn code_at(&self, time: u64) -> Code {
        self.code_for_step(time / self.period())
    }

    /// The code now, from `clock`.
    pub fn code_now(&self, clock: &dyn Clock) -> Code {
        self.code_at(clock.now())
    }

    /// The HOTP code for `counter`.
    pub fn hotp_code(&self, counter: u64) -> Code {
        self.code_for_step(counter)
    }

    /// A code that will not expire mid-request: the current one if it is valid for at least
    /// `min_remaining` more seconds, otherwise the next step's code and the second it becomes
    /// valid (wait until then, or schedule the request).
    pub fn code_for_submission(&self, clock: &dyn Clock, min_remaining: u64) -> Submission {
        let now = clock.now();
        let current = self.code_at(now);
        if current.remaining_at(now) >= min_remaining.max(1) {
            Submission::Now(current)
        } else {
            let next = self.code_for_step(current.step + 1);
            let use_at = next.valid_from;
            Submission::At { code: next, use_at }
        }
    }

    /// Verifies a submitted TOTP/Steam code at `time` within ±`skew` steps and returns the
    /// matched step. Whitespace, dashes and dots in the submission are ignored, so "123 456" and
    /// "123456" are the same code. Every step of the window is compared in constant time; the
    /// result does not reveal which steps were tried.
    pub fn verify_at(&self, submitted: &str, time: u64, skew: u32) -> Result<u64, VerifyError> {
        let origin = time / self.period();
        let first = origin.saturating_sub(u64::from(skew));
        let last = origin.saturating_add(u64::from(skew));
        self.match_range(submitted, first, last)
    }

    /// Verifies a submitted code now (from `clock`) with the default window of ±1 step.
    pub fn verify_now(&self, submitted: &str, clock: &dyn Clock) -> Result<u64, VerifyError> {
        self.verify_at(submitted, clock.now(), DEFAULT_SKEW)
    }

    /// Verifies a HOTP code against counters `counter ..= counter + look_ahead` (RFC 4226 §7.4
    /// resynchronisation) and returns the matched counter; the caller stores `matched + 1`.
    pub fn verify_hotp(
        &self,
        submitted: &str,
        counter: u64,
        look_ahead: u32,
    ) -> Result<u64, VerifyError> {
        self.match_range(
            submitted,
            counter,
            counter.saturating_add(u64::from(look_ahead)),
        )
    }

    /// Verifies at `time` and records the matched step in `guard` for `credential`, atomically:
    /// a code is accepted at most once, including re-formatted copies of it.
    pub fn verify_once(
        &self,
        guard: &dyn ReplayGuard,
        credential: &str,
        submitted: &str,
        time: u64,
        skew: u32,
    ) -> Result<u64, VerifyError> {
        let step = self.verify_at(submitted, time, skew)?;
        // Remember the step until every window that could still accept it has passed:
        // (2·skew + 1) periods after the step started.
        let retain_until = step
            .saturating_add(2 * u64::from(skew) + 1)
            .saturating_mul(self.period());
        match guard.check_and_mark(credential, step, retain_until, time) {
            Ok(true) => Ok(step),
            Ok(false) => Err(VerifyError::Replayed),
            Err(e) => Err(VerifyError::GuardUnavailable(e.to_string())),
        }
    }

    /// The code value for `step` without formatting it: totp-rs's HMAC (`Totp::sign`), then
    /// RFC 4226 §5.3 dynamic truncation. Used only to compare; generation stays totp-rs's
    /// `generate` (formatting each candidate made verification 3.65× one generation, over the
    /// 3.5× budget; docs/PERFORMANCE.md).
    fn truncated(&self, step: u64) -> u32 {
        let sig = self.engine.sign(step.saturating_mul(self.period()));
        let sig = sig.as_ref();
        let off = usize::from(sig.last().copied().unwrap_or(0) & 0x0f);
        let mut word = [0u8; 4];
        if let Some(w) = sig.get(off..off + 4) {
            word.copy_from_slice(w);
        }
        u32::from_be_bytes(word) & 0x7fff_ffff
    }

    fn match_range(&self, submitted: &str, first: u64, last: u64) -> Result<u64, VerifyError> {
        let steam = self.kind == Kind::Steam;
        let code = Submitted::parse(submitted, usize::from(self.digits), steam)
            .ok_or(VerifyError::Invalid)?;
        // Bound the work: a window of more than 1,000 steps is refused as invalid input.
        if last.saturating_sub(first) > 1_000 {
            return Err(VerifyError::Invalid);
        }
        let modulus = 10u32.pow(u32::from(self.digits.min(9)));
        let mut found = subtle::Choice::from(0u8);
        let mut step = 0u64;
        for s in first..=last {
            let v = self.truncated(s);
            let eq = if steam {
                code.chars.ct_eq(&steam_chars(v))
            } else {
                (v % modulus).ct_eq(&code.value)
            } & !found;
            step.conditional_assign(&s, eq);
            found |= eq;
        }
        if bool::from(found) {
            Ok(step)
        } else {
            Err(VerifyError::Invalid)
        }
    }
}

const STEAM_ALPHABET: &[u8; 26] = b"23456789BCDFGHJKMNPQRTVWXY";

/// Steam's five characters, least significant first.
fn steam_chars(mut v: u32) -> [u8; 5] {
    let mut out = [0u8; 5];
    for c in &mut out {
        *c = STEAM_ALPHABET[(v % 26) as usize];
        v /= 26;
    }
    out
}

/// A submitted code, parsed once: its numeric value (digit codes) or characters (Steam).
struct Submitted {
    value: u32,
    chars: [u8; 5],
}

impl Submitted {
    /// Drops ASCII whitespace, `-` and `.`; upper-cases letters. `None` unless exactly `len`
    /// digits (or, for Steam, `len` characters of its alphabet) remain.
    fn parse(submitted: &str, len: usize, steam: bool) -> Option<Self> {
        if submitted.len() > 64 {
            return None;
        }
        let mut chars = [0u8; 5];
        let (mut value, mut n) = (0u32, 0usize);
        for c in submitted.bytes() {
            if c.is_ascii_whitespace() || c == b'-' || c == b'.' {
                continue;
            }
            if n >= len {
                return None;
            }
            if steam {
                let c = c.to_ascii_uppercase();
                if !STEAM_ALPHABET.contains(&c) {
                    return None;
                }
                *chars.get_mut(n)? = c;
            } else {
                if !c.is_ascii_digit() {
                    return None;
                }
                value = value * 10 + u32::from(c - b'0');
            }
            n += 1;
        }
        (n == len).then_some(Self { value, chars })
    }
}

impl fmt::Debug for Otp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Otp")
            .field("kind", &self.kind)
            .field("algorithm", &self.algorithm)
            .field("digits", &self.digits)
            .field("issuer", &self.issuer)
            .field("account", &self.account)
            .field("secret", &self.secret)
            .finish()
    }
}
