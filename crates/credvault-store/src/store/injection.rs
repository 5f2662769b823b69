//! A credential put to use in an outbound HTTP request (the gateway's proxy): the type's
//! `authenticate` rule rendered, with the values to keep out of whatever comes back.

use credvault_audit::{Action, DenyReason, Details};
use credvault_schema::{FieldValue, RenderedAuth, RevealPolicy, SecretValue};

use super::credentials::field_policy;
use super::{resource, Scope};
use crate::error::StoreError;
use crate::ids::CredentialId;

/// The parts a credential adds to an outbound request, and where the request may go.
///
/// Holds secrets: no `Clone`, redacted `Debug`, every value wiped on drop.
#[non_exhaustive]
pub struct RequestAuth {
    /// The credential type's name.
    pub type_name: String,
    /// The credential's `base_url` field, when its type has one and it is set: where its
    /// requests go. Stored and authenticated with the credential (an edited row is refused).
    pub base_url: Option<String>,
    /// Headers, query parameters, body parameters and basic authentication to add, rendered
    /// from the type's `authenticate` rule.
    pub auth: RenderedAuth,
    secrets: Vec<SecretValue>,
}

impl std::fmt::Debug for RequestAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestAuth")
            .field("type_name", &self.type_name)
            .field("secrets", &self.secrets.len())
            .finish_non_exhaustive()
    }
}

impl RequestAuth {
    /// Every value to keep out of what the request's answer hands back: each secret field the
    /// credential has set, and each rendered header, query and basic-auth value (`Bearer
    /// sk-...`, the base64 of `user:password` is found by the masker from its parts).
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        let auth = &self.auth;
        self.secrets
            .iter()
            .map(SecretValue::expose_secret)
            .chain(
                auth.headers
                    .iter()
                    .chain(&auth.query)
                    .chain(&auth.body)
                    .map(|(_, v)| v.expose_secret()),
            )
            .chain(
                auth.basic
                    .iter()
                    .flat_map(|(u, p)| [u.expose_secret(), p.expose_secret()]),
            )
    }
}

impl RequestAuth {
    /// The parts a credential that does not rest in this vault (fetched from an external
    /// source for one request) adds to an outbound request: `fields` validated as a
    /// credential of type `ty`, its `authenticate` rule rendered. Nothing is stored or
    /// recorded here; the caller records the access. A rule that would carry a `write-only`
    /// field is refused as for a stored credential.
    ///
    /// # Errors
    /// [`StoreError::Validation`] (the fields are not a valid credential of the type),
    /// [`StoreError::Unsupported`] (no `authenticate` rule), [`StoreError::AccessDenied`].
    pub fn for_fields(
        ty: &std::sync::Arc<credvault_schema::CredentialType>,
        fields: &serde_json::Value,
    ) -> Result<Self, StoreError> {
        let cred = ty.validate(fields)?;
        let Some(auth) = ty.authenticate(&cred) else {
            return Err(StoreError::Unsupported(format!(
                "type {} has no authenticate rule",
                ty.name()
            )));
        };
        let mut secrets = Vec::new();
        for f in &ty.definition().fields {
            let Some(v) = cred.expose_secret(&f.key).filter(|v| !v.is_empty()) else {
                continue;
            };
            if f.reveal_policy() == RevealPolicy::WriteOnly {
                let carried = auth
                    .headers
                    .iter()
                    .chain(&auth.query)
                    .chain(&auth.body)
                    .any(|(_, r)| r.expose_secret().contains(v));
                if carried {
                    return Err(StoreError::AccessDenied {
                        reason: DenyReason::Forbidden,
                    });
                }
                continue;
            }
            secrets.push(SecretValue::new(v.to_owned()));
        }
        let base_url = match cred.get("base_url") {
            Some(FieldValue::Text(t)) if !t.is_empty() => Some(t.to_owned()),
            _ => None,
        };
        Ok(Self {
            type_name: ty.name().to_owned(),
            base_url,
            auth,
            secrets,
        })
    }
}

impl Scope<'_> {
    /// Puts a credential to use in an outbound request made on the caller's behalf: checks
    /// access as [`reveal`](Self::reveal) does (active, not expired, authentic), renders the
    /// type's `authenticate` rule and records `accessed` with `service` and the secret fields
    /// the request may carry, before returning anything. The values go into the request,
    /// never back to the caller: `use-only` fields are allowed; a `write-only` field (an
    /// authenticator key) is refused if the rendered rule would carry it.
    ///
    /// # Errors
    /// [`StoreError::Unsupported`] if the type has no `authenticate` rule;
    /// [`StoreError::AccessDenied`] for a rule that would carry a write-only field; as
    /// [`reveal`](Self::reveal).
    pub fn authenticate_request(
        &self,
        id: &CredentialId,
        service: Option<&str>,
    ) -> Result<RequestAuth, StoreError> {
        let row = self.load_for_access(id)?;
        let ty = self.store.credential_type(&row.type_name)?;
        let cred = match self.store.credential_of(&row, &ty) {
            Ok(c) => c,
            Err(e) => {
                self.failed(Action::AccessFailed, &row, "sealed data does not open");
                return Err(e);
            }
        };
        let Some(auth) = ty.authenticate(&cred) else {
            return Err(StoreError::Unsupported(format!(
                "type {} has no authenticate rule",
                row.type_name
            )));
        };
        let rendered: Vec<&str> = auth
            .headers
            .iter()
            .chain(&auth.query)
            .chain(&auth.body)
            .flat_map(|(k, v)| [k.expose_secret(), v.expose_secret()])
            .chain(
                auth.basic
                    .iter()
                    .flat_map(|(u, p)| [u.expose_secret(), p.expose_secret()]),
            )
            .collect();
        let mut secrets = Vec::new();
        let mut used = Vec::new();
        for f in &row.secret_fields {
            let Some(v) = cred.expose_secret(f).filter(|v| !v.is_empty()) else {
                continue;
            };
            if field_policy(&ty, &row, f) == RevealPolicy::WriteOnly {
                if rendered.iter().any(|r| r.contains(v)) {
                    self.store.record_quietly(
                        &self
                            .event(Action::AccessDenied)
                            .with_resource(resource(&row))
                            .with_details(Details::AccessDenied {
                                reason: DenyReason::Forbidden,
                            }),
                    );
                    return Err(StoreError::AccessDenied {
                        reason: DenyReason::Forbidden,
                    });
                }
                continue;
            }
            if rendered.iter().any(|r| r.contains(v)) {
                used.push(f.clone());
            }
            secrets.push(SecretValue::new(v.to_owned()));
        }
        drop(rendered);
        let base_url = match cred.get("base_url") {
            Some(FieldValue::Text(t)) if !t.is_empty() => Some(t.to_owned()),
            _ => None,
        };
        let event = self
            .event(Action::Accessed)
            .with_resource(resource(&row))
            .with_details(Details::Accessed {
                service: service.map(str::to_owned),
                fields: used,
            });
        let head = self.store.record(&event)?;
        self.store
            .note_use(&self.tenant, &row.id, self.store.now(), head);
        Ok(RequestAuth {
            type_name: row.type_name.clone(),
            base_url,
            auth,
            secrets,
        })
    }
}
