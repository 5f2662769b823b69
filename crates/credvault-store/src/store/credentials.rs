//! Credentials: create (plain or client-sealed), read, list, reveal, update, delete.

use std::collections::BTreeMap;

use credvault_audit::{Action, AuditEvent, DenyReason, Details, FieldChange};
use credvault_envelope::{DataKey, EnvelopeHeader, KeyId};
use credvault_schema::{Credential, CredentialType, RevealPolicy, SecretValue};

use super::otp::HOTP_COUNTER_FIELD;
use super::sealing::{credential_context, Authentic};
use super::{check_meta, resource, Scope};
use crate::error::{SealRejection, StoreError};
use crate::fields::decode_secret_fields;
use crate::ids::CredentialId;
use crate::model::effective_policy;
use crate::model::{
    wipe_json, CredentialInfo, CredentialUpdate, NewCredential, Revealed, SealedCredential,
};
use crate::storage::{CredentialRow, KeyState, ListFilter, StorageError};

fn changed<T: PartialEq + ToString>(
    changes: &mut Vec<FieldChange>,
    field: &str,
    old: &T,
    new: &Option<T>,
) -> bool {
    match new {
        Some(n) if n != old => {
            changes.push(FieldChange::metadata(
                field,
                Some(old.to_string()),
                Some(n.to_string()),
            ));
            true
        }
        _ => false,
    }
}

fn opt_text(v: Option<i64>) -> String {
    v.map_or_else(|| "none".into(), |t| t.to_string())
}

/// Where revealed values go: back to the caller (`reveal`), or into a process (`reveal_many`:
/// `run`, `inject`, the proxy, a login callback).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    Show,
    Use,
}

impl Purpose {
    fn allows(self, p: RevealPolicy) -> bool {
        matches!(
            (p, self),
            (RevealPolicy::Revealable, _) | (RevealPolicy::UseOnly, Purpose::Use)
        )
    }
}

/// A new credential's metadata.
struct RowMeta<'a> {
    name: &'a str,
    type_name: &'a str,
    environment: &'a str,
    description: &'a str,
    tags: &'a [String],
    is_active: bool,
    expires_at: Option<i64>,
    reveal: BTreeMap<String, RevealPolicy>,
}

/// A field's policy: the type's, or the credential's own where it set a stricter one.
pub(crate) fn field_policy(ty: &CredentialType, row: &CredentialRow, field: &str) -> RevealPolicy {
    effective_policy(Some(ty), &row.reveal, field)
}

fn type_policy(ty: &CredentialType, field: &str) -> RevealPolicy {
    effective_policy(Some(ty), &BTreeMap::new(), field)
}

/// The reveal policies a credential of type `ty` holding `current` has after `asked`: each
/// must name a secret field of the type and be at least as strict as both the type's policy
/// and the credential's own; one equal to the type's is not stored. Returns the policies and
/// the changes (field, old, new) to audit.
///
/// # Errors
/// [`StoreError::Field`] for a field that is not a secret of the type, or a looser policy.
#[allow(clippy::type_complexity)]
fn tighten(
    ty: &CredentialType,
    current: &BTreeMap<String, RevealPolicy>,
    asked: &BTreeMap<String, RevealPolicy>,
) -> Result<
    (
        BTreeMap<String, RevealPolicy>,
        Vec<(String, RevealPolicy, RevealPolicy)>,
    ),
    StoreError,
> {
    let mut out = current.clone();
    let mut changes = Vec::new();
    for (field, &want) in asked {
        if ty.is_secret(field) != Some(true) {
            return Err(StoreError::Field {
                field: field.clone(),
                reason:
                    "is not a secret field of this type: only secret fields have a reveal policy",
            });
        }
        let by_type = type_policy(ty, field);
        let now = current.get(field).copied().unwrap_or(by_type).max(by_type);
        if want < by_type {
            return Err(StoreError::Field {
                field: field.clone(),
                reason:
                    "has a stricter reveal policy by its type: a credential can only tighten it",
            });
        }
        if want < now {
            return Err(StoreError::Field {
                field: field.clone(),
                reason: "has a stricter reveal policy on this credential: a policy once tightened is never loosened (create a new credential instead)",
            });
        }
        if want > now {
            changes.push((field.clone(), now, want));
            out.insert(field.clone(), want);
        }
    }
    Ok((out, changes))
}

impl Scope<'_> {
    /// A new row (version 1, created now by this scope's actor) for a validated credential
    /// and its sealed secrets `(key id, envelope, secret field names)`.
    fn new_row(
        &self,
        id: &CredentialId,
        m: RowMeta<'_>,
        cred: &Credential,
        sealed: (KeyId, Vec<u8>, Vec<String>),
    ) -> Result<CredentialRow, StoreError> {
        let now = self.store.now();
        let (key_id, secret, secret_fields) = sealed;
        let mut row = CredentialRow {
            id: id.clone(),
            tenant: self.tenant.clone(),
            name: m.name.to_owned(),
            type_name: m.type_name.to_owned(),
            environment: m.environment.to_owned(),
            description: m.description.to_owned(),
            tags: m.tags.to_vec(),
            is_active: m.is_active,
            expires_at: m.expires_at,
            created_by: self.actor.clone(),
            created_at: now,
            updated_at: now,
            version: 1,
            last_used_at: None,
            last_tested: None,
            test_status: None,
            test_message: None,
            public: serde_json::Value::Object(cred.public_json()).to_string(),
            secret_fields,
            key_id,
            secret,
            reveal: m.reveal,
            mac: Vec::new(),
        };
        row.mac = self.store.row_mac(&row)?;
        Ok(row)
    }

    /// Creates a credential: validates it against its type, seals its secret fields with the
    /// tenant's data key, records `created`, stores it.
    ///
    /// # Errors
    /// [`StoreError::UnknownType`], [`StoreError::Validation`], [`StoreError::Invalid`],
    /// [`StoreError::NameTaken`], [`StoreError::Audit`] (nothing stored), others.
    pub fn create(&self, new: NewCredential) -> Result<CredentialInfo, StoreError> {
        check_meta(&new.name, &new.environment, &new.description, &new.tags)?;
        let id = CredentialId::generate()?;
        self.refuse_plaintext(
            credvault_audit::Resource::credential(id.as_str())
                .with_name(new.name.as_str())
                .with_type(new.type_name.as_str())
                .with_environment(new.environment.as_str()),
        )?;
        let ty = self.store.credential_type(&new.type_name)?;
        let cred = ty.validate(&new.fields)?;
        let (reveal, _) = tighten(&ty, &BTreeMap::new(), &new.reveal)?;
        for _ in 0..4 {
            let (key_id, secret, secret_fields) =
                match self
                    .store
                    .seal_credential(&self.tenant, &id, &new.environment, &cred)
                {
                    Ok(sealed) => sealed,
                    // The key was retired by a rotation after it was looked up: seal again.
                    Err(StoreError::Storage(StorageError::UnknownKey { .. })) => continue,
                    Err(e) => return Err(e),
                };
            let row = self.new_row(
                &id,
                RowMeta {
                    name: &new.name,
                    type_name: &new.type_name,
                    environment: &new.environment,
                    description: &new.description,
                    tags: &new.tags,
                    is_active: new.is_active,
                    expires_at: new.expires_at,
                    reveal: reveal.clone(),
                },
                &cred,
                (key_id, secret, secret_fields),
            )?;
            let event = self.event(Action::Created).with_resource(resource(&row));
            match self
                .store
                .storage
                .insert_credential(&row, &mut |c| self.store.audit.record_in(c, &event))
            {
                Ok(()) => return Ok(CredentialInfo::from_row(&row)),
                // The key was retired by a rotation between sealing and storing: seal again.
                Err(StorageError::UnknownKey { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Storage(StorageError::Backend(
            "data key kept changing during create".into(),
        )))
    }

    /// Stores a credential sealed by a client under this tenant's active data key: checks
    /// that it opens under the right key and context and validates, then stores the
    /// envelope verbatim and counts the client's seal against the key's usage.
    ///
    /// # Errors
    /// [`StoreError::SealedRejected`] if it does not open (another tenant's key, another
    /// context, altered bytes), [`StoreError::Validation`], and as [`create`](Self::create).
    pub fn create_sealed(&self, sealed: SealedCredential) -> Result<CredentialInfo, StoreError> {
        check_meta(
            &sealed.name,
            &sealed.environment,
            &sealed.description,
            &sealed.tags,
        )?;
        let ty = self.store.credential_type(&sealed.type_name)?;
        let reject = |reason| StoreError::SealedRejected { reason };
        let header = EnvelopeHeader::parse(&sealed.envelope)
            .map_err(|_| reject(SealRejection::NotAnEnvelope))?;
        let key_id = header.key_id();
        let keys = self.store.storage.data_keys(&self.tenant)?;
        if !keys
            .iter()
            .any(|k| k.key_id == key_id && k.state == KeyState::Active)
        {
            return Err(reject(SealRejection::WrongKey));
        }
        let ctx = credential_context(
            &self.tenant,
            &sealed.id,
            &sealed.environment,
            &sealed.type_name,
        )?;
        let key = self.store.key(&self.tenant, key_id)?;
        let pt = key
            .key
            .open(&sealed.envelope, &ctx)
            .map_err(|_| reject(SealRejection::DoesNotOpen))?;
        let fields = decode_secret_fields(pt.expose_secret())?;
        let serde_json::Value::Object(mut obj) = sealed.public_fields.clone() else {
            return Err(StoreError::Invalid {
                what: "public fields",
                reason: "must be a JSON object".into(),
            });
        };
        for (k, _) in obj.iter() {
            if ty.is_secret(k) == Some(true) {
                return Err(StoreError::Field {
                    field: k.clone(),
                    reason: "is secret: it belongs in the sealed envelope",
                });
            }
        }
        for (k, v) in &fields {
            if ty.is_secret(k) != Some(true) {
                return Err(StoreError::Field {
                    field: (*k).to_owned(),
                    reason: "is not a secret field of this type",
                });
            }
            obj.insert((*k).to_owned(), serde_json::Value::String((*v).to_owned()));
        }
        let mut value = serde_json::Value::Object(obj);
        let validated = ty.validate(&value);
        wipe_json(&mut value);
        let cred = validated?;
        // Names in the type's order, as `create` stores them.
        let secret_fields: Vec<String> = cred.secrets().map(|(k, _)| k.to_owned()).collect();
        // A client's seal counts toward the key's limit like the vault's own.
        let total = self.store.storage.reserve_usage(&self.tenant, &key_id, 1)?;
        let rotation_due = self.store.cache.cfg.check_usage(total)?;
        let row = self.new_row(
            &sealed.id,
            RowMeta {
                name: &sealed.name,
                type_name: &sealed.type_name,
                environment: &sealed.environment,
                description: &sealed.description,
                tags: &sealed.tags,
                is_active: true,
                expires_at: sealed.expires_at,
                reveal: BTreeMap::new(),
            },
            &cred,
            (key_id, sealed.envelope, secret_fields),
        )?;
        let event = self.event(Action::Created).with_resource(resource(&row));
        self.store
            .storage
            .insert_credential(&row, &mut |c| self.store.audit.record_in(c, &event))?;
        // After storing: the client's envelope cannot be sealed again under a new key, and a
        // new row may not name a retiring one.
        if rotation_due {
            self.store.rotate_when_due(&self.tenant);
        }
        Ok(CredentialInfo::from_row(&row))
    }

    /// The tenant's active data key, for a client that seals credentials itself (recorded as
    /// `data_key_issued`). Handle it like the secrets it protects.
    ///
    /// # Errors
    /// [`StoreError::MasterKey`], [`StoreError::Audit`].
    pub fn client_data_key(&self) -> Result<DataKey, StoreError> {
        let row = self.store.active_key_row(&self.tenant)?;
        let dek = self.store.unwrap_row(&self.tenant, &row)?;
        self.store
            .record(&self.event(Action::Other("data_key_issued".into())))?;
        Ok(dek)
    }

    /// A credential's metadata and masked fields.
    ///
    /// # Errors
    /// [`StoreError::NotFound`].
    pub fn get(&self, id: &CredentialId) -> Result<CredentialInfo, StoreError> {
        Ok(CredentialInfo::from_row(&self.load(id)?.row))
    }

    /// Finds a credential by name in an environment (the active one if any).
    ///
    /// # Errors
    /// [`StoreError::NotFound`].
    pub fn find(&self, name: &str, environment: &str) -> Result<CredentialInfo, StoreError> {
        let row = self
            .store
            .storage
            .credential_by_name(&self.tenant, name, environment)?
            .ok_or_else(|| StoreError::NotFound {
                credential: name.to_owned(),
            })?;
        let row = self.store.authenticated(row, &self.actor)?;
        Ok(CredentialInfo::from_row(&row))
    }

    /// Lists credentials.
    ///
    /// # Errors
    /// [`StoreError::Storage`].
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<CredentialInfo>, StoreError> {
        self.store
            .storage
            .credentials(&self.tenant, filter)?
            .into_iter()
            .map(|r| {
                self.store
                    .authenticated(r, &self.actor)
                    .map(|r| CredentialInfo::from_row(&r))
            })
            .collect()
    }

    /// Decrypts and returns the fields asked for (none named: every `revealable` secret field
    /// that is set). Refuses inactive and expired credentials (recorded as `access_denied`),
    /// and fields whose [`RevealPolicy`] is `use-only` or `write-only` (an authenticator key
    /// by default: only its codes come out, [`totp_code`](Self::totp_code)); records
    /// `accessed` with the service and the field names before returning anything.
    ///
    /// # Errors
    /// [`StoreError::AccessDenied`], [`StoreError::NotFound`], [`StoreError::Field`] (a field
    /// the type does not have, not set, or not revealable), [`StoreError::Corrupt`],
    /// [`StoreError::Audit`].
    pub fn reveal(
        &self,
        id: &CredentialId,
        fields: &[&str],
        service: Option<&str>,
    ) -> Result<Revealed, StoreError> {
        // First on the backend's copy of the row, if it keeps one and the copy allows the
        // access: nothing refused is recorded on a copy, and the access is recorded only if
        // the row is still as read (one statement on PostgreSQL, no read). Anything else is
        // decided again on the row as it is now.
        if let Some(row) = self.kept_for_access(id)? {
            if let Ok((revealed, event)) =
                self.reveal_row(&row, fields, service, Purpose::Show, true)
            {
                if let Some(head) = self.store.record_access(&event, &row)? {
                    self.store
                        .note_use(&self.tenant, &row.id, self.store.now(), head);
                    return Ok(revealed);
                }
            }
            self.store.storage.forget_credential(&self.tenant, id);
        }
        let row = self.load_for_access(id)?;
        let (revealed, event) = self.reveal_row(&row, fields, service, Purpose::Show, false)?;
        let head = self.store.record(&event)?;
        self.store
            .note_use(&self.tenant, &row.id, self.store.now(), head);
        Ok(revealed)
    }

    /// Reveals several credentials' fields at once, to hand them to a process (`credvault
    /// run`/`inject`, a proxy, a login callback): `use-only` fields are allowed here,
    /// `write-only` ones never (none named: every field that may be used). Every access is
    /// checked first, and one `accessed` event per credential is recorded in
    /// one audit batch (one sync) before anything is returned. All or nothing: if any
    /// credential is refused or any event is not recorded, no value is returned.
    ///
    /// # Errors
    /// As [`reveal`](Self::reveal), for the first request that fails.
    pub fn reveal_many(
        &self,
        requests: &[(CredentialId, Vec<String>)],
        service: Option<&str>,
    ) -> Result<Vec<Revealed>, StoreError> {
        let mut rows = Vec::with_capacity(requests.len());
        for (id, _) in requests {
            rows.push(self.load_for_access(id)?);
        }
        let mut out = Vec::with_capacity(requests.len());
        let mut events = Vec::with_capacity(requests.len());
        for (row, (_, fields)) in rows.iter().zip(requests) {
            let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
            let (revealed, event) = self.reveal_row(row, &fields, service, Purpose::Use, false)?;
            out.push(revealed);
            events.push(event);
        }
        let head = self.store.record_batch(&events)?;
        let now = self.store.now();
        for row in &rows {
            self.store.note_use(&self.tenant, &row.id, now, head);
        }
        Ok(out)
    }

    /// Decrypts the fields asked for from an access-checked row, and builds (does not record)
    /// the `accessed` event. `quiet`: a refusal or failure is not recorded (the row is a kept
    /// copy, and the caller decides again on the row as it is now).
    pub(crate) fn reveal_row(
        &self,
        row: &Authentic,
        fields: &[&str],
        service: Option<&str>,
        purpose: Purpose,
        quiet: bool,
    ) -> Result<(Revealed, AuditEvent), StoreError> {
        let ty = self.store.registry.get(&row.type_name);
        // The type's policy, or the credential's own where it set a stricter one.
        let policy = |f: &str| effective_policy(ty.map(|t| &**t), &row.reveal, f);
        // None named: every secret field that is set and may go where this reveal goes.
        let every: Vec<&str>;
        let fields = if fields.is_empty() {
            every = row
                .secret_fields
                .iter()
                .map(String::as_str)
                .filter(|f| purpose.allows(policy(f)))
                .collect();
            &every[..]
        } else {
            fields
        };
        for f in fields {
            let p = policy(f);
            if !purpose.allows(p) {
                if quiet {
                    return Err(StoreError::AccessDenied {
                        reason: DenyReason::Forbidden,
                    });
                }
                self.store.record_quietly(
                    &self
                        .event(Action::AccessDenied)
                        .with_resource(resource(row))
                        .with_details(Details::AccessDenied {
                            reason: DenyReason::Forbidden,
                        }),
                );
                return Err(StoreError::Field {
                    field: (*f).to_owned(),
                    reason: match p {
                        RevealPolicy::WriteOnly => {
                            "is write-only: it never leaves the vault, only values derived from it do (a TOTP code: `totp NAME`)"
                        }
                        _ => "is use-only: it reaches a process (`run`, `inject`), never `reveal`",
                    },
                });
            }
        }
        let public = if fields
            .iter()
            .all(|f| row.secret_fields.iter().any(|s| s == f))
        {
            None
        } else {
            row.public_fields()
        };
        for f in fields {
            let is_secret = row.secret_fields.iter().any(|s| s == f);
            if !is_secret && !public.as_ref().is_some_and(|p| p.contains_key(*f)) {
                let reason = match self.store.registry.get(&row.type_name) {
                    Some(t) if t.is_secret(f).is_some() => "is not set",
                    _ => "is not a field of this credential's type",
                };
                return Err(StoreError::Field {
                    field: (*f).to_owned(),
                    reason,
                });
            }
        }
        let pt = match self.store.open_row(row) {
            Ok(p) => p,
            Err(e) => {
                if !quiet {
                    self.failed(Action::AccessFailed, row, "sealed data does not open");
                }
                return Err(e);
            }
        };
        let secrets =
            decode_secret_fields(pt.expose_secret()).map_err(|_| StoreError::Corrupt {
                credential: row.id.to_string(),
            })?;
        let mut out = Vec::with_capacity(fields.len());
        for f in fields {
            let v = match secrets.iter().find(|(k, _)| k == f) {
                Some((_, v)) => SecretValue::new((*v).to_owned()),
                None => match public.as_ref().and_then(|p| p.get(*f)) {
                    Some(serde_json::Value::String(s)) => SecretValue::new(s.clone()),
                    Some(other) => SecretValue::new(other.to_string()),
                    None => {
                        return Err(StoreError::Corrupt {
                            credential: row.id.to_string(),
                        })
                    }
                },
            };
            out.push(((*f).to_owned(), v));
        }
        let event = self
            .event(Action::Accessed)
            .with_resource(resource(row))
            .with_details(Details::Accessed {
                service: service.map(str::to_owned),
                fields: fields.iter().map(|f| (*f).to_owned()).collect(),
            });
        Ok((Revealed { fields: out }, event))
    }

    /// The credential a row holds, to change it; sealed data that does not open is recorded as
    /// a failed update.
    fn open_for_update(
        &self,
        row: &Authentic,
        ty: &std::sync::Arc<CredentialType>,
    ) -> Result<Credential, StoreError> {
        self.store.credential_of(row, ty).inspect_err(|e| {
            if matches!(e, StoreError::Corrupt { .. }) {
                self.failed(Action::Updated, row, "sealed data does not open");
            }
        })
    }

    /// Applies a partial update: re-validates, re-seals with the active key if a field
    /// changed, records `updated` with what changed (secret fields by name only).
    ///
    /// # Errors
    /// [`StoreError::VersionConflict`] (only with [`CredentialUpdate::expect_version`]),
    /// [`StoreError::Validation`], [`StoreError::NameTaken`], [`StoreError::Corrupt`],
    /// [`StoreError::Audit`], [`StoreError::NotFound`].
    pub fn update(
        &self,
        id: &CredentialId,
        upd: CredentialUpdate,
    ) -> Result<CredentialInfo, StoreError> {
        if let Some(n) = &upd.name {
            check_meta(n, "x", "", &[])?;
        }
        if let Some(e) = &upd.environment {
            check_meta("x", e, "", &[])?;
        }
        if let Some(d) = &upd.description {
            check_meta("x", "x", d, &[])?;
        }
        if let Some(t) = &upd.tags {
            check_meta("x", "x", "", t)?;
        }
        for _ in 0..16 {
            let row = self.load(id)?;
            if let Some(v) = upd.expected_version {
                if v != row.version {
                    return Err(StoreError::VersionConflict {
                        expected: v,
                        found: row.version,
                    });
                }
            }
            let mut new = row.clone();
            let mut changes = Vec::new();
            // A move to another environment: the secrets are sealed under the new context.
            let moved_to = upd.environment.as_ref().filter(|e| **e != row.environment);
            let seal_env = moved_to.unwrap_or(&row.environment).clone();
            let mut resealed = false;
            // Whether the authenticator key (or a HOTP key's first counter) changes: a new key
            // starts from its own first counter.
            let mut otp_changed = false;
            if let Some(patch) = &upd.fields {
                let ty = self.store.credential_type(&row.type_name)?;
                let existing = self.open_for_update(&row, &ty)?;
                let patched = ty.validate_patch(&existing, patch)?;
                if patched.changes.iter().any(|c| c.secret) {
                    self.refuse_plaintext(resource(&row))?;
                }
                let otp_field = Self::totp_field(&row, &ty);
                otp_changed = patched.changes.iter().any(|c| {
                    c.key == HOTP_COUNTER_FIELD
                        || (c.secret
                            && (otp_field.as_deref() == Some(c.key.as_str())
                                || Self::is_key_field(&ty, &c.key)))
                });
                if !patched.changes.is_empty() {
                    for c in &patched.changes {
                        changes.push(if c.secret {
                            FieldChange::secret(c.key.as_str())
                        } else {
                            FieldChange::metadata(
                                c.key.as_str(),
                                c.old.as_ref().map(|v| v.to_string()),
                                c.new.as_ref().map(|v| v.to_string()),
                            )
                        });
                    }
                    let sealed = self.store.seal_credential(
                        &self.tenant,
                        &row.id,
                        &seal_env,
                        &patched.credential,
                    );
                    let (key_id, secret, names) = match sealed {
                        Ok(s) => s,
                        // Its key was retired by a rotation after the lookup: start over.
                        Err(StoreError::Storage(StorageError::UnknownKey { .. })) => continue,
                        Err(e) => return Err(e),
                    };
                    new.public =
                        serde_json::Value::Object(patched.credential.public_json()).to_string();
                    new.secret_fields = names;
                    new.key_id = key_id;
                    new.secret = secret;
                    resealed = true;
                }
            }
            if let Some(env) = moved_to {
                if !resealed {
                    let ty = self.store.credential_type(&row.type_name)?;
                    let existing = self.open_for_update(&row, &ty)?;
                    if !row.secret_fields.is_empty() {
                        self.refuse_plaintext(resource(&row))?;
                    }
                    let sealed = self
                        .store
                        .seal_credential(&self.tenant, &row.id, env, &existing);
                    let (key_id, secret, names) = match sealed {
                        Ok(s) => s,
                        Err(StoreError::Storage(StorageError::UnknownKey { .. })) => continue,
                        Err(e) => return Err(e),
                    };
                    new.secret_fields = names;
                    new.key_id = key_id;
                    new.secret = secret;
                }
                changes.push(FieldChange::metadata(
                    "environment",
                    Some(row.environment.clone()),
                    Some(env.clone()),
                ));
                new.environment.clone_from(env);
            }
            if changed(&mut changes, "name", &row.name, &upd.name) {
                new.name.clone_from(upd.name.as_ref().unwrap_or(&row.name));
            }
            if changed(
                &mut changes,
                "description",
                &row.description,
                &upd.description,
            ) {
                new.description
                    .clone_from(upd.description.as_ref().unwrap_or(&row.description));
            }
            if let Some(tags) = &upd.tags {
                if *tags != row.tags {
                    changes.push(FieldChange::metadata(
                        "tags",
                        Some(row.tags.join(",")),
                        Some(tags.join(",")),
                    ));
                    new.tags.clone_from(tags);
                }
            }
            if changed(&mut changes, "is_active", &row.is_active, &upd.is_active) {
                new.is_active = upd.is_active.unwrap_or(row.is_active);
            }
            if !upd.reveal.is_empty() {
                let ty = self.store.credential_type(&row.type_name)?;
                let (reveal, tightened) = tighten(&ty, &row.reveal, &upd.reveal)?;
                for (field, old, now) in tightened {
                    changes.push(FieldChange::metadata(
                        format!("reveal.{field}").as_str(),
                        Some(old.as_str().to_owned()),
                        Some(now.as_str().to_owned()),
                    ));
                }
                new.reveal = reveal;
            }
            if let Some(e) = upd.expires_at {
                if e != row.expires_at {
                    changes.push(FieldChange::metadata(
                        "expires_at",
                        Some(opt_text(row.expires_at)),
                        Some(opt_text(e)),
                    ));
                    new.expires_at = e;
                }
            }
            if changes.is_empty() {
                return Ok(CredentialInfo::from_row(&row));
            }
            new.version = row.version + 1;
            new.updated_at = self.store.now();
            new.mac = match self.store.row_mac(&new) {
                Ok(m) => m,
                // Its key was retired by a rotation meanwhile: start over from the new row.
                Err(StoreError::Storage(StorageError::UnknownKey { .. })) => continue,
                Err(e) => return Err(e),
            };
            let event = self
                .event(Action::Updated)
                .with_resource(resource(&new))
                .with_details(Details::Updated { changes });
            match self
                .store
                .storage
                .update_credential(&new, row.version, &mut |c| {
                    self.store.audit.record_in(c, &event)
                }) {
                Ok(()) => {
                    if otp_changed {
                        self.store
                            .storage
                            .reset_hotp_counter(&self.otp_key(&new.id))?;
                    }
                    return Ok(CredentialInfo::from_row(&new));
                }
                Err(StorageError::VersionConflict { .. }) if upd.expected_version.is_none() => {
                    continue
                }
                Err(StorageError::UnknownKey { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Storage(StorageError::Backend(
            "the credential kept changing during the update".into(),
        )))
    }

    /// Deletes a credential: records `deleted` first, then overwrites its sealed data and
    /// deletes the row, in one transaction.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::VersionConflict`] (only with
    /// `expected_version`), [`StoreError::Audit`].
    pub fn delete(
        &self,
        id: &CredentialId,
        expected_version: Option<u64>,
    ) -> Result<(), StoreError> {
        for _ in 0..16 {
            let row = self.load(id)?;
            let v = expected_version.unwrap_or(row.version);
            let event = self.event(Action::Deleted).with_resource(resource(&row));
            match self
                .store
                .storage
                .delete_credential(&self.tenant, id, v, &mut |c| {
                    self.store.audit.record_in(c, &event)
                }) {
                Ok(()) => {
                    // Ids are never reused: the counter row is only tidied away, and a failure
                    // to do so does not undo the delete.
                    let _ = self.store.storage.reset_hotp_counter(&self.otp_key(id));
                    return Ok(());
                }
                Err(StorageError::VersionConflict { .. }) if expected_version.is_none() => continue,
                Err(StorageError::NotFound { .. }) => {
                    return Err(StoreError::NotFound {
                        credential: id.to_string(),
                    })
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Storage(StorageError::Backend(
            "the credential kept changing during the delete".into(),
        )))
    }
}
