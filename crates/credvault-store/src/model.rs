//! What callers pass in and get back.

use std::collections::BTreeMap;
use std::fmt;

use credvault_audit::TestStatus;
use credvault_schema::{CredentialType, RevealPolicy, SecretValue};
use serde::Serialize;
use zeroize::{Zeroize, Zeroizing};

use crate::ids::{CredentialId, TenantId};
use crate::storage::CredentialRow;

/// The default environment.
pub const DEFAULT_ENVIRONMENT: &str = "production";

/// Wipes every string in a JSON value (the inputs that carried secret values): for JSON that
/// held secrets on its way in or out (request bodies, command output) before it is dropped.
pub fn wipe_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => s.zeroize(),
        serde_json::Value::Array(a) => a.iter_mut().for_each(wipe_json),
        serde_json::Value::Object(o) => o.values_mut().for_each(wipe_json),
        _ => {}
    }
}

/// A credential to create. Its `fields` hold secret values: it has no `Clone`, its `Debug`
/// shows none, and they are wiped on drop.
pub struct NewCredential {
    pub(crate) type_name: String,
    pub(crate) name: String,
    pub(crate) fields: serde_json::Value,
    pub(crate) environment: String,
    pub(crate) description: String,
    pub(crate) tags: Vec<String>,
    pub(crate) is_active: bool,
    pub(crate) expires_at: Option<i64>,
    pub(crate) reveal: BTreeMap<String, RevealPolicy>,
}

impl NewCredential {
    /// A credential of type `type_name` named `name`, with its fields as a JSON object (the
    /// type's validation decides what is accepted).
    pub fn new(
        type_name: impl Into<String>,
        name: impl Into<String>,
        fields: serde_json::Value,
    ) -> Self {
        Self {
            type_name: type_name.into(),
            name: name.into(),
            fields,
            environment: DEFAULT_ENVIRONMENT.into(),
            description: String::new(),
            tags: Vec::new(),
            is_active: true,
            expires_at: None,
            reveal: BTreeMap::new(),
        }
    }

    /// Sets the environment (default `production`).
    pub fn environment(mut self, env: impl Into<String>) -> Self {
        self.environment = env.into();
        self
    }

    /// Sets the description.
    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.description = d.into();
        self
    }

    /// Sets the tags.
    pub fn tags(mut self, tags: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// Creates it inactive.
    pub fn inactive(mut self) -> Self {
        self.is_active = false;
        self
    }

    /// Sets an expiry (Unix milliseconds).
    pub fn expires_at(mut self, at: i64) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Tightens where the secret field `field` may go, beyond what its type declares
    /// (`use-only`: never returned by `reveal`; `write-only`: never leaves the vault). A
    /// policy looser than the type's is refused; once set, it is never loosened.
    pub fn reveal(mut self, field: impl Into<String>, policy: RevealPolicy) -> Self {
        self.reveal.insert(field.into(), policy);
        self
    }
}

impl Drop for NewCredential {
    fn drop(&mut self) {
        wipe_json(&mut self.fields);
    }
}

impl fmt::Debug for NewCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewCredential")
            .field("type_name", &self.type_name)
            .field("name", &self.name)
            .field("environment", &self.environment)
            .field("fields", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

/// A credential sealed by a client with the tenant's data key: the store checks that it
/// opens under the right key and context and that its fields validate, then stores the
/// envelope byte for byte.
pub struct SealedCredential {
    /// The id the client generated ([`CredentialId::generate`]); it is bound into the
    /// envelope's context.
    pub id: CredentialId,
    /// The type.
    pub type_name: String,
    /// The name.
    pub name: String,
    /// The environment.
    pub environment: String,
    /// The non-secret fields, as a JSON object.
    pub public_fields: serde_json::Value,
    /// The envelope of the secret fields ([`encode_secret_fields`](crate::encode_secret_fields)),
    /// sealed under [`credential_context`](crate::credential_context).
    pub envelope: Vec<u8>,
    /// Description.
    pub description: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Expiry, Unix milliseconds.
    pub expires_at: Option<i64>,
}

impl SealedCredential {
    /// Seals `credential` on the client side with the tenant's data key (from
    /// `Scope::client_data_key`), exactly as `Scope::create_sealed` expects: a new id, the
    /// fields split by `ty` into public ones (sent in clear) and secret ones (encoded with
    /// [`encode_secret_fields`](crate::encode_secret_fields) and sealed under
    /// [`credential_context`](crate::credential_context) for this tenant, id, environment and
    /// type). Only the types' split is checked here; the store validates the whole credential.
    ///
    /// # Errors
    /// [`StoreError::Field`](crate::StoreError::Field) for a field `ty` does not have or a
    /// secret that is not text; [`StoreError::Invalid`](crate::StoreError::Invalid) for fields
    /// that are not an object or do not seal; [`StoreError::Random`](crate::StoreError::Random).
    pub fn seal(
        key: &credvault_envelope::DataKey,
        tenant: &TenantId,
        ty: &credvault_schema::CredentialType,
        credential: NewCredential,
    ) -> Result<Self, crate::StoreError> {
        use crate::StoreError;
        if credential.type_name != ty.name() {
            return Err(StoreError::Invalid {
                what: "type",
                reason: "the credential names another type than the one given".into(),
            });
        }
        let serde_json::Value::Object(all) = &credential.fields else {
            return Err(StoreError::Invalid {
                what: "fields",
                reason: "must be a JSON object".into(),
            });
        };
        let mut public = serde_json::Map::new();
        let mut secrets: Vec<(&str, &str)> = Vec::new();
        for (k, v) in all {
            match ty.is_secret(k) {
                None => {
                    return Err(StoreError::Field {
                        field: k.clone(),
                        reason: "is not a field of this credential's type",
                    })
                }
                Some(true) => match v {
                    serde_json::Value::String(s) => secrets.push((k.as_str(), s.as_str())),
                    _ => {
                        return Err(StoreError::Field {
                            field: k.clone(),
                            reason: "is secret and must be text",
                        })
                    }
                },
                Some(false) => {
                    public.insert(k.clone(), v.clone());
                }
            }
        }
        let id = CredentialId::generate()?;
        let blob = crate::encode_secret_fields(secrets)?;
        let ctx = crate::credential_context(tenant, &id, &credential.environment, ty.name())?;
        let envelope = credvault_envelope::SealingKey::new(key)
            .seal(&blob, &ctx)
            .map_err(|e| StoreError::Invalid {
                what: "sealed fields",
                reason: e.to_string(),
            })?;
        Ok(Self {
            id,
            type_name: credential.type_name.clone(),
            name: credential.name.clone(),
            environment: credential.environment.clone(),
            public_fields: serde_json::Value::Object(public),
            envelope,
            description: credential.description.clone(),
            tags: credential.tags.clone(),
            expires_at: credential.expires_at,
        })
    }
}

impl fmt::Debug for SealedCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedCredential")
            .field("id", &self.id)
            .field("type_name", &self.type_name)
            .field("name", &self.name)
            .field("envelope_len", &self.envelope.len())
            .finish_non_exhaustive()
    }
}

/// A partial update. Fields not set are left alone.
#[derive(Default)]
pub struct CredentialUpdate {
    pub(crate) fields: Option<serde_json::Value>,
    pub(crate) name: Option<String>,
    pub(crate) environment: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) tags: Option<Vec<String>>,
    pub(crate) is_active: Option<bool>,
    pub(crate) expires_at: Option<Option<i64>>,
    pub(crate) expected_version: Option<u64>,
    pub(crate) reveal: BTreeMap<String, RevealPolicy>,
}

impl CredentialUpdate {
    /// An empty update.
    pub fn new() -> Self {
        Self::default()
    }

    /// Patches fields (a JSON object: `null` unsets an optional field; a secret field given
    /// `credvault_schema::SECRET_MARKER` keeps its value).
    pub fn fields(mut self, patch: serde_json::Value) -> Self {
        self.fields = Some(patch);
        self
    }

    /// Moves it to another environment: its secrets are sealed again under a context naming
    /// the new one (a vault that takes only client-sealed data for the tenant refuses that),
    /// and the name must be free there.
    pub fn environment(mut self, environment: impl Into<String>) -> Self {
        self.environment = Some(environment.into());
        self
    }

    /// Renames.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the description.
    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.description = Some(d.into());
        self
    }

    /// Replaces the tags.
    pub fn tags(mut self, tags: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.tags = Some(tags.into_iter().map(Into::into).collect());
        self
    }

    /// Activates or deactivates.
    pub fn active(mut self, active: bool) -> Self {
        self.is_active = Some(active);
        self
    }

    /// Sets (`Some`) or clears (`None`) the expiry.
    pub fn expires_at(mut self, at: Option<i64>) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Tightens where the secret field `field` may go ([`NewCredential::reveal`]): refused
    /// if looser than what the type or this credential already has.
    pub fn reveal(mut self, field: impl Into<String>, policy: RevealPolicy) -> Self {
        self.reveal.insert(field.into(), policy);
        self
    }

    /// Fails with a version conflict unless the credential is at `version`. Without it, the
    /// store retries on a concurrent change (the patch is re-applied to the new state).
    pub fn expect_version(mut self, version: u64) -> Self {
        self.expected_version = Some(version);
        self
    }
}

impl Drop for CredentialUpdate {
    fn drop(&mut self) {
        if let Some(f) = &mut self.fields {
            wipe_json(f);
        }
    }
}

impl fmt::Debug for CredentialUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialUpdate")
            .field("fields", &self.fields.as_ref().map(|_| "[REDACTED]"))
            .field("name", &self.name)
            .field("is_active", &self.is_active)
            .field("expected_version", &self.expected_version)
            .finish_non_exhaustive()
    }
}

/// A credential's metadata and masked fields: what `get` and `list` return. Serializable;
/// never holds a secret value.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct CredentialInfo {
    /// Id.
    pub id: CredentialId,
    /// Tenant.
    pub tenant: TenantId,
    /// Name.
    pub name: String,
    /// Type.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Environment.
    pub environment: String,
    /// Description.
    pub description: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Whether it may be used.
    pub is_active: bool,
    /// Expiry (Unix milliseconds).
    pub expires_at: Option<i64>,
    /// Creator.
    pub created_by: String,
    /// Created (Unix milliseconds).
    pub created_at: i64,
    /// Updated (Unix milliseconds).
    pub updated_at: i64,
    /// Version.
    pub version: u64,
    /// Last use (Unix milliseconds).
    pub last_used_at: Option<i64>,
    /// Last test (Unix milliseconds).
    pub last_tested: Option<i64>,
    /// Last test status.
    pub test_status: Option<String>,
    /// Last test message.
    pub test_message: Option<String>,
    /// The data key id its secrets are sealed under.
    pub key_id: String,
    /// Fields: non-secret values, and `credvault_schema::SECRET_MARKER` for each secret set.
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// Reveal policies this credential sets beyond its type's, by secret field.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub reveal: BTreeMap<String, RevealPolicy>,
}

impl CredentialInfo {
    pub(crate) fn from_row(row: &CredentialRow) -> Self {
        let mut fields: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&row.public).unwrap_or_default();
        for s in &row.secret_fields {
            fields.insert(
                s.clone(),
                serde_json::Value::String(credvault_schema::SECRET_MARKER.into()),
            );
        }
        Self {
            id: row.id.clone(),
            tenant: row.tenant.clone(),
            name: row.name.clone(),
            type_name: row.type_name.clone(),
            environment: row.environment.clone(),
            description: row.description.clone(),
            tags: row.tags.clone(),
            is_active: row.is_active,
            expires_at: row.expires_at,
            created_by: row.created_by.clone(),
            created_at: row.created_at,
            updated_at: row.updated_at,
            version: row.version,
            last_used_at: row.last_used_at,
            last_tested: row.last_tested,
            test_status: row.test_status.clone(),
            test_message: row.test_message.clone(),
            key_id: row.key_id.to_string(),
            fields,
            reveal: row.reveal.clone(),
        }
    }

    /// The reveal policy of field `field` of this credential, of type `ty`: the type's, or
    /// this credential's own where it set a stricter one. It decides what
    /// [`Scope::reveal`](crate::Scope::reveal) returns (`revealable` only) and what a process
    /// may be handed (`use-only` too); a `write-only` field never leaves the store.
    #[must_use]
    pub fn field_policy(&self, ty: &CredentialType, field: &str) -> RevealPolicy {
        effective_policy(Some(ty), &self.reveal, field)
    }

    /// The id (the same as the `id` field; kept for code written against earlier versions).
    ///
    /// # Errors
    /// Never.
    #[deprecated(note = "`CredentialInfo::id` is a `CredentialId` now; use it")]
    pub fn credential_id(&self) -> Result<CredentialId, crate::StoreError> {
        Ok(self.id.clone())
    }
}

/// The policy of `field`: its type's (`revealable` for a field the type does not define, or
/// with no type), or the credential's `own` where that is stricter. An external credential
/// (one a gateway sources from another vault) has no policy of its own: pass an empty map.
#[must_use]
pub fn effective_policy(
    ty: Option<&CredentialType>,
    own: &BTreeMap<String, RevealPolicy>,
    field: &str,
) -> RevealPolicy {
    let by_type = ty
        .and_then(|t| t.definition().fields.iter().find(|d| d.key == field))
        .map_or(
            RevealPolicy::Revealable,
            credvault_schema::FieldDef::reveal_policy,
        );
    own.get(field).map_or(by_type, |&own| own.max(by_type))
}

/// Revealed field values. No `Clone`, redacted `Debug`, wiped on drop.
pub struct Revealed {
    pub(crate) fields: Vec<(String, SecretValue)>,
}

impl Revealed {
    /// A field's value, if it was asked for and is set.
    pub fn expose_secret(&self, field: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == field)
            .map(|(_, v)| v.expose_secret())
    }

    /// Takes a field's value out as an owned [`SecretValue`] (redacted `Debug`, no `Clone`,
    /// wiped on drop), to hand it on without copying the text; `None` if it was not revealed
    /// (or was taken already).
    pub fn take(&mut self, field: &str) -> Option<SecretValue> {
        let i = self.fields.iter().position(|(k, _)| k == field)?;
        Some(self.fields.remove(i).1)
    }

    /// The names revealed, in the order asked.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(k, _)| k.as_str())
    }

    /// How many fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether none.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

impl fmt::Debug for Revealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revealed")
            .field(
                "fields",
                &self.fields.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// A TOTP code generated from a credential's authenticator key.
pub struct TotpCode {
    pub(crate) code: Zeroizing<String>,
    /// The time step.
    pub step: u64,
    /// First moment the code is no longer valid (Unix milliseconds, like every time in this
    /// crate).
    pub expires_at: i64,
}

impl TotpCode {
    /// The code.
    pub fn expose_secret(&self) -> &str {
        &self.code
    }
}

impl fmt::Debug for TotpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TotpCode")
            .field("code", &"[REDACTED]")
            .field("step", &self.step)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A tenant as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TenantInfo {
    /// Id.
    pub id: TenantId,
    /// Name.
    pub name: String,
    /// Created (Unix milliseconds).
    pub created_at: i64,
    /// The active data key's id.
    pub active_key: Option<String>,
    /// Seal permits reserved under the active key.
    pub active_key_usage: u64,
    /// Whether a tenant-key rotation is unfinished (retiring keys remain).
    pub rotation_pending: bool,
    /// The master key version wrapping the active data key.
    pub master_key_version: Option<u32>,
}

/// The result of a credential test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestOutcome {
    /// Ok, failed (rejected by the service) or error (could not run).
    pub status: TestStatus,
    /// A message for people (never a secret).
    pub message: String,
}

impl TestOutcome {
    /// The status as stored.
    pub fn status_str(&self) -> &'static str {
        match self.status {
            TestStatus::Ok => "ok",
            TestStatus::Failed => "failed",
            _ => "error",
        }
    }
}

/// Progress of a long job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Items done.
    pub done: u64,
    /// Items in all (may grow if rows are added meanwhile).
    pub total: u64,
}

/// What a tenant-key rotation did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyRotation {
    /// The tenant.
    pub tenant: TenantId,
    /// Whether this call started the rotation (false: it resumed one).
    pub started: bool,
    /// The new active key.
    pub new_key: String,
    /// Credentials re-encrypted by this call.
    pub resealed: u64,
    /// Credentials that could not be re-encrypted (corrupt): their old key stays.
    pub failed: Vec<String>,
    /// Old keys retired (none while a credential still names one).
    pub retired: Vec<String>,
    /// Credentials still under an old key when this call returned (corrupt ones included):
    /// zero when the rotation finished.
    pub remaining: u64,
}

impl KeyRotation {
    /// Whether the rotation finished: every credential is under the new key. If not, the
    /// old key is kept and calling `rotate_key` again resumes the job.
    pub fn is_finished(&self) -> bool {
        self.remaining == 0
    }
}

/// What a master-key rotation did.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct MasterRotation {
    /// Data keys re-wrapped under the active master version.
    pub rewrapped: u64,
    /// Data keys already under it.
    pub current: u64,
    /// Data keys that could not be re-wrapped (tenant, key id).
    pub failed: Vec<(String, String)>,
}

/// What an integrity check found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Integrity {
    /// Credentials opened.
    pub checked: u64,
    /// Ids of those that did not open.
    pub corrupt: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use credvault_schema::Registry;

    #[test]
    fn a_field_policy_is_the_stricter_of_the_type_and_the_credential() {
        let registry = Registry::with_builtins();
        let login = registry.get("website_login").expect("built-in");
        let none = BTreeMap::new();
        // The type keeps an authenticator key write-only and lets a password be revealed.
        assert_eq!(
            effective_policy(Some(login), &none, "totp_secret"),
            RevealPolicy::WriteOnly
        );
        assert_eq!(
            effective_policy(Some(login), &none, "password"),
            RevealPolicy::Revealable
        );
        // A credential may tighten the type's policy, never loosen it.
        let own = BTreeMap::from([
            ("password".to_owned(), RevealPolicy::UseOnly),
            ("totp_secret".to_owned(), RevealPolicy::Revealable),
        ]);
        assert_eq!(
            effective_policy(Some(login), &own, "password"),
            RevealPolicy::UseOnly
        );
        assert_eq!(
            effective_policy(Some(login), &own, "totp_secret"),
            RevealPolicy::WriteOnly
        );
        // No type, or a field the type does not define: only the credential's own counts.
        assert_eq!(effective_policy(None, &none, "x"), RevealPolicy::Revealable);
        assert_eq!(
            effective_policy(None, &own, "password"),
            RevealPolicy::UseOnly
        );
    }
}
