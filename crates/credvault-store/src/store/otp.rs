//! One-time passwords: codes from a credential's authenticator key, and verifying them once.

use std::sync::Arc;

use credvault_audit::{Action, DenyReason, Details, Outcome};
use credvault_schema::{CredentialType, Format};
use credvault_totp::{Algorithm, Otp, ReplayGuard, TotpSecret, DEFAULT_SKEW};

use super::sealing::Authentic;
use super::{resource, Scope};
use crate::error::StoreError;
use crate::fields::decode_secret_fields;
use crate::ids::CredentialId;
use crate::model::TotpCode;
use crate::storage::{CredentialRow, Storage};

/// A replay guard stored in the store's database (durable with a durable backend).
pub struct StorageReplayGuard(Arc<dyn Storage>);

impl StorageReplayGuard {
    /// A guard over `storage`.
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Self(storage)
    }
}

impl std::fmt::Debug for StorageReplayGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StorageReplayGuard")
    }
}

impl ReplayGuard for StorageReplayGuard {
    fn check_and_mark(
        &self,
        credential: &str,
        step: u64,
        retain_until: u64,
        now: u64,
    ) -> Result<bool, credvault_totp::GuardError> {
        self.0
            .check_and_mark_step(credential, step, retain_until, now)
            .map_err(|e| credvault_totp::GuardError(e.to_string()))
    }
}

impl Scope<'_> {
    pub(crate) fn totp_field(row: &CredentialRow, ty: &CredentialType) -> Option<String> {
        let base32 = ty
            .definition()
            .fields
            .iter()
            .find(|f| {
                f.secret && f.format == Some(Format::Base32) && row.secret_fields.contains(&f.key)
            })
            .map(|f| f.key.clone());
        base32.or_else(|| {
            row.secret_fields
                .iter()
                .find(|k| k.as_str() == "totp_secret" || k.contains("totp"))
                .cloned()
        })
    }

    pub(crate) fn otp(&self, row: &Authentic) -> Result<(Otp, String), StoreError> {
        let ty = self.store.credential_type(&row.type_name)?;
        let field = Self::totp_field(row, &ty).ok_or_else(|| StoreError::Totp {
            reason: "the credential has no authenticator key set".into(),
        })?;
        let pt = match self.store.open_row(row) {
            Ok(p) => p,
            Err(e) => {
                self.failed(Action::AccessFailed, row, "sealed data does not open");
                return Err(e);
            }
        };
        let fields = decode_secret_fields(pt.expose_secret()).map_err(|_| StoreError::Corrupt {
            credential: row.id.to_string(),
        })?;
        let value = fields
            .iter()
            .find(|(k, _)| *k == field)
            .map(|(_, v)| *v)
            .ok_or_else(|| StoreError::Totp {
                reason: "the authenticator key is not set".into(),
            })?;
        let bad = |e: credvault_totp::OtpError| StoreError::Totp {
            reason: format!("field {field:?}: {e}"),
        };
        let otp = if value.starts_with("otpauth://") {
            Otp::from_uri(value).map_err(bad)?
        } else {
            Otp::totp(
                TotpSecret::parse(value).map_err(bad)?,
                Algorithm::Sha1,
                6,
                30,
            )
            .map_err(bad)?
        };
        Ok((otp, field))
    }

    /// Generates the current TOTP code from the credential's authenticator key, recorded as
    /// `totp_generated`; the key itself is never returned.
    ///
    /// # Errors
    /// As [`reveal`](Self::reveal), and [`StoreError::Totp`].
    pub fn totp_code(
        &self,
        id: &CredentialId,
        service: Option<&str>,
    ) -> Result<TotpCode, StoreError> {
        let row = self.load_for_access(id)?;
        let (otp, field) = self.otp(&row)?;
        let now = u64::try_from(self.store.now() / 1000).unwrap_or(0);
        let code = otp.code_at(now);
        let event = self
            .event(Action::TotpGenerated)
            .with_resource(resource(&row))
            .with_details(Details::Accessed {
                service: service.map(str::to_owned),
                fields: vec![field],
            });
        let head = self.store.record(&event)?;
        self.store
            .note_use(&self.tenant, &row.id, self.store.now(), head);
        Ok(TotpCode {
            code: zeroize::Zeroizing::new(code.to_string()),
            step: code.step,
            expires_at: i64::try_from(code.valid_until)
                .unwrap_or(i64::MAX / 1000)
                .saturating_mul(1000),
        })
    }

    /// Verifies a TOTP code against the credential's authenticator key, at most once per
    /// code (the replay guard lives in the database). Returns the matched step.
    ///
    /// Throttled per credential (RFC 4226 §7.3, [`StoreConfig::otp_throttle`]): after too many
    /// wrong or replayed codes in a window, every attempt is refused without looking at the
    /// code until the lock-out ends, and recorded as `access_denied` (`throttled`). The count
    /// is kept in the database, so it holds across processes.
    ///
    /// [`StoreConfig::otp_throttle`]: crate::StoreConfig::otp_throttle
    ///
    /// # Errors
    /// [`StoreError::Totp`] for a wrong or replayed code, [`StoreError::Throttled`] during a
    /// lock-out, and as [`totp_code`](Self::totp_code).
    pub fn verify_totp(&self, id: &CredentialId, submitted: &str) -> Result<u64, StoreError> {
        let row = self.load_for_access(id)?;
        let now = u64::try_from(self.store.now() / 1000).unwrap_or(0);
        let key = format!("{}/{}", self.tenant, row.id);
        let storage = &self.store.storage;
        if let Some(until) = storage.otp_locked_until(&key, now)? {
            return Err(self.throttled(&row, until, now));
        }
        let (otp, _) = self.otp(&row)?;
        let guard = self.store.replay_guard();
        let res = otp.verify_once(&guard, &key, submitted, now, DEFAULT_SKEW);
        match &res {
            Ok(_) => storage.otp_succeeded(&key)?,
            Err(_) => {
                storage.otp_failed(&key, now, &self.store.cfg.otp_throttle)?;
            }
        }
        let outcome = if res.is_ok() {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        self.store.record(
            &self
                .event(Action::Other("totp_verified".into()))
                .with_resource(resource(&row))
                .with_outcome(outcome),
        )?;
        res.map_err(|e| StoreError::Totp {
            reason: e.to_string(),
        })
    }

    /// Records a throttled attempt and gives its error.
    fn throttled(&self, row: &Authentic, until: u64, now: u64) -> StoreError {
        let reason = DenyReason::Throttled;
        self.store.record_quietly(
            &self
                .event(Action::AccessDenied)
                .with_resource(resource(row))
                .with_details(Details::AccessDenied { reason }),
        );
        StoreError::Throttled {
            retry_after_secs: until.saturating_sub(now),
        }
    }
}
