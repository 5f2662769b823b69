//! Attachments: data an application keeps beside a credential (a browser session's state, a
//! received two-factor code), sealed under the tenant's data key with a context that binds the
//! tenant, the credential and the attachment's own name, and events it records about a
//! credential through the scope's audit target.

use credvault_audit::{Action, AuditEvent, Details};
use credvault_envelope::{EncryptionContext, EnvelopeHeader, Plaintext};

use super::{resource, Scope};
use crate::error::StoreError;
use crate::ids::CredentialId;
use crate::storage::StorageError;

/// Longest attachment name (it goes into an encryption context).
pub const MAX_ATTACHMENT_NAME: usize = 200;

impl Scope<'_> {
    fn attachment_context(
        &self,
        id: &CredentialId,
        name: &str,
    ) -> Result<EncryptionContext, StoreError> {
        if name.is_empty() || name.len() > MAX_ATTACHMENT_NAME {
            return Err(StoreError::Invalid {
                what: "attachment name",
                reason: format!("must be 1 to {MAX_ATTACHMENT_NAME} bytes"),
            });
        }
        EncryptionContext::new()
            .with("purpose", "credvault-attachment")
            .and_then(|c| c.with("tenant", self.tenant.as_str()))
            .and_then(|c| c.with("credential", id.as_str()))
            .and_then(|c| c.with("attachment", name))
            .map_err(|e| StoreError::Invalid {
                what: "encryption context",
                reason: e.to_string(),
            })
    }

    /// Seals `plaintext` as the attachment `name` of credential `id` (an application's own
    /// data about the credential: a browser session's state, a received code), under the
    /// tenant's active data key. The credential must be accessible now (in this tenant,
    /// active, not expired; a refusal is recorded as `access_denied`); nothing is recorded
    /// for the seal itself: the caller records what it did ([`record`](Self::record)).
    ///
    /// Put everything the blob must be bound to in `name` (a profile, a version number): a
    /// blob opens only under the same tenant, credential and name.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::AccessDenied`], [`StoreError::Integrity`],
    /// [`StoreError::Invalid`] (an empty or too long name), [`StoreError::KeyExhausted`].
    pub fn seal_attachment(
        &self,
        id: &CredentialId,
        name: &str,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let ctx = self.attachment_context(id, name)?;
        self.load_for_access(id)?;
        for _ in 0..4 {
            let (key_id, key) = self.store.active_key(&self.tenant)?;
            match self.store.seal(&self.tenant, key_id, &key, plaintext, &ctx) {
                // Retired by a rotation since it was looked up: seal under the new one.
                Err(StoreError::Storage(StorageError::UnknownKey { .. })) => continue,
                other => return other,
            }
        }
        Err(StoreError::Storage(StorageError::Busy {
            resource: "data key",
        }))
    }

    /// Opens an attachment sealed by [`seal_attachment`](Self::seal_attachment) under the same
    /// credential and name. The credential must be accessible now, as for a seal.
    ///
    /// # Errors
    /// [`StoreError::AttachmentDoesNotOpen`] when the blob does not open here: another tenant,
    /// credential or name, altered bytes, or a data key retired since (an attachment is not
    /// re-sealed by a key rotation: treat it as gone). Otherwise as
    /// [`seal_attachment`](Self::seal_attachment).
    pub fn open_attachment(
        &self,
        id: &CredentialId,
        name: &str,
        sealed: &[u8],
    ) -> Result<Plaintext, StoreError> {
        let ctx = self.attachment_context(id, name)?;
        self.load_for_access(id)?;
        let gone = || StoreError::AttachmentDoesNotOpen {
            name: name.to_owned(),
        };
        let header = EnvelopeHeader::parse(sealed).map_err(|_| gone())?;
        let key = match self.store.key(&self.tenant, header.key_id()) {
            Ok(k) => k,
            Err(StoreError::Storage(StorageError::UnknownKey { .. })) => return Err(gone()),
            Err(e) => return Err(e),
        };
        key.key.open(sealed, &ctx).map_err(|_| gone())
    }

    /// Checks that credential `id` may be used now: in this tenant, its record authentic,
    /// active, not expired. A refusal is recorded as `access_denied`, as for a reveal. For an
    /// application about to hand out something derived from the credential (a received
    /// code) without revealing a field.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::AccessDenied`], [`StoreError::Integrity`].
    pub fn check_usable(&self, id: &CredentialId) -> Result<(), StoreError> {
        self.load_for_access(id).map(|_| ())
    }

    /// Records an application's event about credential `id` (`session_restored`,
    /// `tfa_code_delivered`...) with this scope's actor, source IP, host and request id, and
    /// the credential's name, type and environment. Fail-closed like the store's own records:
    /// an error means nothing was recorded, and the caller must not act as if it were.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] (no such credential in this tenant),
    /// [`StoreError::Integrity`], [`StoreError::Audit`].
    pub fn record(
        &self,
        id: &CredentialId,
        action: Action,
        details: Option<Details>,
    ) -> Result<(), StoreError> {
        let mut e = self.credential_event(id, action)?;
        e.details = details;
        self.store.record(&e).map(|_| ())
    }

    /// The event [`record`](Self::record) would record (not recorded): to record later through
    /// [`Store::record_event`](crate::Store::record_event), when this scope is gone (a lease's
    /// release). Checks that the credential is in this tenant.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::Integrity`].
    pub fn credential_event(
        &self,
        id: &CredentialId,
        action: Action,
    ) -> Result<AuditEvent, StoreError> {
        let row = self.load(id)?;
        Ok(self.event(action).with_resource(resource(&row)))
    }
}
