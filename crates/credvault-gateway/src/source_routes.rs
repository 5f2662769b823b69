//! The routes of a tenant backed by an external source: reveal and the proxy's injection,
//! each on a credential fetched for the request, recorded, and wiped.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use credvault_store::audit::{Action, Details, Resource};
use credvault_store::schema::{CredentialType, FieldKind, FieldValue, RevealPolicy};
use credvault_store::{AuditEvent, RequestAuth};

use crate::error::ApiError;
use crate::gateway::{blocking, reveal_body, secret_json, Caller, Shared};
use crate::source::{Source, SourceError, SourcedCredential};

/// Sourced credentials are named in this environment for key globs and environment limits.
const ENVIRONMENT: &str = credvault_store::DEFAULT_ENVIRONMENT;

fn source_error(e: SourceError) -> ApiError {
    match e {
        SourceError::NotFound => ApiError::not_found("no such credential"),
        SourceError::Denied => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "source_denied",
            "the external source refused the gateway's credentials",
        ),
        SourceError::Unavailable(why) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "source_unavailable",
            format!("the external source is unavailable: {why}"),
        ),
        SourceError::Invalid(why) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "source_invalid",
            format!("the sourced credential is not usable: {why}"),
        ),
    }
}

/// A credential fetched for this request, with its type; numbers and booleans a source sends
/// as text (1Password fields are text) read as the type's fields want them.
pub(crate) async fn fetch(
    s: &Shared,
    c: &Caller,
    source: &dyn Source,
    name: &str,
) -> Result<(Arc<CredentialType>, SourcedCredential), ApiError> {
    if !c.key.policy.covers(name, ENVIRONMENT) {
        return Err(ApiError::not_found("no such credential"));
    }
    let mut cred = source.fetch(name).await.map_err(source_error)?;
    let ty = s
        .store
        .registry()
        .get(&cred.type_name)
        .cloned()
        .ok_or_else(|| source_error(SourceError::Invalid("an unknown credvault type".into())))?;
    cred.normalise(|key| {
        ty.definition()
            .fields
            .iter()
            .find(|f| f.key == key)
            .map(|f| f.kind)
    });
    Ok((ty, cred))
}

impl SourcedCredential {
    fn normalise(&mut self, kind: impl Fn(&str) -> Option<FieldKind>) {
        let Some(obj) = self.fields_mut().as_object_mut() else {
            return;
        };
        for (k, v) in obj.iter_mut() {
            let Some(text) = v.as_str() else { continue };
            let parsed = match kind(k) {
                Some(FieldKind::Number) => text.parse::<serde_json::Number>().ok().map(Into::into),
                Some(FieldKind::Boolean) => text.parse::<bool>().ok().map(Into::into),
                _ => None,
            };
            if let Some(p) = parsed {
                *v = p;
            }
        }
    }
}

/// Records the access of a sourced credential (before any value goes anywhere).
pub(crate) async fn record(
    s: &Arc<Shared>,
    c: &Caller,
    kind: &str,
    name: &str,
    service: &str,
    fields: Vec<String>,
) -> Result<(), ApiError> {
    let event = AuditEvent::new(
        c.tenant.as_str(),
        format!("apikey:{}", c.key.id),
        Action::Accessed,
    )
    .with_resource(Resource::credential(format!("source:{kind}:{name}")))
    .with_source_ip(c.source_ip.as_str())
    .with_client_host(c.host.as_str())
    .with_request_id(c.request_id.as_str())
    .with_details(Details::Accessed {
        service: Some(service.to_owned()),
        fields,
    });
    let store = s.store.clone();
    blocking(move || store.record_event(&event).map_err(ApiError::from)).await
}

/// `POST /api/credentials/{name}/reveal` on a sourced tenant.
pub(crate) async fn reveal(
    s: &Arc<Shared>,
    c: &Caller,
    source: &dyn Source,
    name: &str,
    asked: &[String],
    service: &str,
) -> Result<Response, ApiError> {
    let (ty, sourced) = fetch(s, c, source, name).await?;
    let cred = ty.validate(sourced.fields()).map_err(|e| {
        source_error(SourceError::Invalid(format!(
            "not a valid {}: {e}",
            ty.name()
        )))
    })?;
    drop(sourced);
    // A sourced credential has no policy of its own: its type's decides.
    let revealable = |key: &str| {
        ty.definition()
            .fields
            .iter()
            .find(|f| f.key == key)
            .map(|f| {
                (
                    f.kind == FieldKind::Password || f.secret,
                    credvault_store::effective_policy(Some(&ty), &BTreeMap::new(), key),
                )
            })
    };
    let names: Vec<String> = if asked.is_empty() {
        ty.definition()
            .fields
            .iter()
            .filter(|f| {
                matches!(revealable(&f.key), Some((true, RevealPolicy::Revealable)))
                    && cred.expose_secret(&f.key).is_some()
            })
            .map(|f| f.key.clone())
            .collect()
    } else {
        asked.to_vec()
    };
    for n in &names {
        match revealable(n) {
            Some((_, RevealPolicy::Revealable)) => {}
            Some(_) => {
                return Err(ApiError::forbidden(
                    "field_not_revealable",
                    format!("field {n}: its type's policy keeps it from being revealed"),
                ))
            }
            None => {
                return Err(ApiError::bad_request(format!(
                    "field {n}: not a field of type {}",
                    ty.name()
                )))
            }
        }
    }
    record(s, c, source.kind(), name, service, names.clone()).await?;
    let values: Vec<(&str, zeroize::Zeroizing<String>)> = names
        .iter()
        .map(|n| {
            let v = match cred.get(n) {
                Some(FieldValue::Secret(v)) => v.expose_secret().to_owned(),
                Some(FieldValue::Text(t)) => t.to_owned(),
                Some(FieldValue::Integer(i)) => i.to_string(),
                Some(FieldValue::Bool(b)) => b.to_string(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (n.as_str(), zeroize::Zeroizing::new(v))
        })
        .collect();
    let out = reveal_body("name", name, values.iter().map(|(n, v)| (*n, v.as_str())))?;
    Ok(secret_json(out))
}

/// The proxy's injection for a sourced credential (recorded before it is used).
pub(crate) async fn request_auth(
    s: &Arc<Shared>,
    c: &Caller,
    source: &dyn Source,
    name: &str,
    service: &str,
) -> Result<RequestAuth, ApiError> {
    let (ty, sourced) = fetch(s, c, source, name).await?;
    let auth = RequestAuth::for_fields(&ty, sourced.fields()).map_err(|e| match e {
        credvault_store::StoreError::Validation(v) => source_error(SourceError::Invalid(format!(
            "not a valid {}: {v}",
            ty.name()
        ))),
        other => other.into(),
    })?;
    drop(sourced);
    let fields: Vec<String> = ty
        .definition()
        .fields
        .iter()
        .filter(|f| f.kind == FieldKind::Password || f.secret)
        .map(|f| f.key.clone())
        .collect();
    record(s, c, source.kind(), name, service, fields).await?;
    Ok(auth)
}
