//! A 1Password Connect API subset (read), so an automation written for a Connect server can
//! point at credvault: `Authorization: Bearer` carries a credvault API key.
//!
//! - A Connect *vault* is one environment of the host's tenant (`production`, `staging`...):
//!   its id is 26 characters of lower-case base32 of a SHA-256 of tenant and environment, its
//!   name the environment.
//! - A Connect *item* is a credential: its id is the lower-case base32 of the credential id's
//!   16 bytes (26 characters), its title the credential's name; each field of the credential's
//!   type is a field whose id and label are the field's key (`username`, `password`). Secret fields are `CONCEALED` with their value
//!   (a read is a reveal: `reveal` scope, recorded as `accessed` with service `connect`);
//!   `use-only` fields are listed without a value. An authenticator key (`write-only`) is an
//!   `OTP` field without a value whose `totp` is the current code (`totp` scope, recorded as
//!   `totp_generated`).
//! - `GET /v1/vaults` (with `filter=name eq "..."`), `GET /v1/vaults/{id}`, `GET
//!   /v1/vaults/{id}/items` (with `filter=title eq "..."`), `GET /v1/vaults/{id}/items/{id}`,
//!   and `GET /heartbeat`, `GET /health`. Errors are Connect's `{"status": N, "message": "..."}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use credvault_store::audit::Timestamp;
use credvault_store::schema::FieldKind;
use credvault_store::{CredentialId, CredentialInfo, ListFilter, StoreError};
use serde::Deserialize;

use crate::apikey::ApiScope;
use crate::error::ApiError;
use crate::gateway::{blocking, scope, Caller, Shared};

/// Connect's error shape.
pub(crate) fn connect_error(e: ApiError) -> Response {
    let status = e.status;
    (
        status,
        Json(serde_json::json!({ "status": status.as_u16(), "message": e.message })),
    )
        .into_response()
}

/// Lower-case RFC 4648 base32 without padding.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut buf, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buf >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buf << (5 - bits)) & 31) as usize]));
    }
    out
}

/// A vault id: 26 characters for (tenant, environment).
fn vault_id(tenant: &str, environment: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in ["credvault-connect-vault", tenant, environment] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    base32(&ctx.finish().as_ref()[..16])
}

/// An item id: the credential id's 16 bytes in base32 (26 characters).
pub(crate) fn item_id(id: &CredentialId) -> String {
    let hex = id.as_str().strip_prefix("cred_").unwrap_or_default();
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect();
    base32(&bytes)
}

/// The credential id an item id names, or `None` for anything [`item_id`] does not write
/// (26 lower-case base32 characters whose 2 unused bits are zero).
pub(crate) fn item_credential(item: &str) -> Option<CredentialId> {
    if item.len() != 26 {
        return None;
    }
    let (mut buf, mut bits, mut hex) = (0u32, 0u32, String::with_capacity(5 + 32));
    hex.push_str("cred_");
    for b in item.bytes() {
        let v = match b {
            b'a'..=b'z' => b - b'a',
            b'2'..=b'7' => b - b'2' + 26,
            _ => return None,
        };
        buf = (buf << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            hex.push_str(&format!("{:02x}", (buf >> bits) & 0xff));
        }
    }
    if buf & ((1 << bits) - 1) != 0 {
        return None;
    }
    CredentialId::parse(&hex).ok()
}

fn time(ms: i64) -> String {
    Timestamp::from_unix_millis(u64::try_from(ms).unwrap_or(0)).to_string()
}

fn category(type_name: &str) -> &'static str {
    match type_name {
        "website_login" => "LOGIN",
        "postgres" | "mysql" | "mongodb" | "redis" => "DATABASE",
        "ssh_private_key" => "SSH_KEY",
        "smtp" => "EMAIL_ACCOUNT",
        "kv_secret" => "SECURE_NOTE",
        _ => "API_CREDENTIAL",
    }
}

/// The environments (vaults) of the caller's tenant that hold a credential the key reaches,
/// with their credentials.
fn vaults(s: &Shared, c: &Caller) -> Result<BTreeMap<String, Vec<CredentialInfo>>, ApiError> {
    let mut out: BTreeMap<String, Vec<CredentialInfo>> = BTreeMap::new();
    for i in scope(s, c)?.list(&ListFilter::new())? {
        if c.key.policy.covers(&i.name, &i.environment) {
            out.entry(i.environment.clone()).or_default().push(i);
        }
    }
    Ok(out)
}

fn vault_json(c: &Caller, env: &str, items: &[CredentialInfo]) -> serde_json::Value {
    let created = items.iter().map(|i| i.created_at).min().unwrap_or(0);
    let updated = items.iter().map(|i| i.updated_at).max().unwrap_or(0);
    let version: u64 = items.iter().map(|i| i.version).sum();
    serde_json::json!({
        "id": vault_id(c.tenant.as_str(), env),
        "name": env,
        "description": format!("credvault environment {env} of tenant {}", c.tenant.as_str()),
        "attributeVersion": 1,
        "contentVersion": version,
        "items": items.len(),
        "type": "USER_CREATED",
        "createdAt": time(created),
        "updatedAt": time(updated),
    })
}

/// The environment whose vault id is `id`.
fn find_vault(s: &Shared, c: &Caller, id: &str) -> Result<(String, Vec<CredentialInfo>), ApiError> {
    vaults(s, c)?
        .into_iter()
        .find(|(env, _)| vault_id(c.tenant.as_str(), env) == id)
        .ok_or_else(|| ApiError::not_found("vault not found"))
}

fn urls(info: &CredentialInfo) -> Vec<serde_json::Value> {
    ["login_url", "base_url", "url"]
        .iter()
        .filter_map(|k| info.fields.get(*k).and_then(serde_json::Value::as_str))
        .enumerate()
        .map(|(n, href)| serde_json::json!({ "href": href, "primary": n == 0 }))
        .collect()
}

fn summary(c: &Caller, info: &CredentialInfo) -> serde_json::Value {
    serde_json::json!({
        "id": item_id(&info.id),
        "title": info.name,
        "vault": { "id": vault_id(c.tenant.as_str(), &info.environment) },
        "category": category(&info.type_name),
        "urls": urls(info),
        "favorite": false,
        "tags": info.tags,
        "version": info.version,
        "trashed": false,
        "createdAt": time(info.created_at),
        "updatedAt": time(info.updated_at),
        "lastEditedBy": info.created_by,
    })
}

/// `title eq "X"` / `name eq "X"`: the X, or `None` for no filter. Anything else is refused.
pub(crate) fn filter_value<'a>(
    filter: Option<&'a str>,
    attr: &str,
) -> Result<Option<&'a str>, ApiError> {
    let Some(f) = filter else { return Ok(None) };
    f.trim()
        .strip_prefix(attr)
        .map(str::trim_start)
        .and_then(|r| r.strip_prefix("eq"))
        .map(str::trim)
        .and_then(|r| r.strip_prefix('"'))
        .and_then(|r| r.strip_suffix('"'))
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(format!("filter: only `{attr} eq \"...\"` is supported"))
        })
}

/// Query of the list routes.
#[derive(Debug, Deserialize)]
pub(crate) struct FilterQuery {
    filter: Option<String>,
}

fn json_list(v: Vec<serde_json::Value>) -> Response {
    Json(serde_json::Value::Array(v)).into_response()
}

pub(crate) async fn heartbeat() -> Response {
    let mut r = ".".into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

pub(crate) async fn health() -> Response {
    Json(serde_json::json!({
        "name": "credvault",
        "version": env!("CARGO_PKG_VERSION"),
        "dependencies": [{ "service": "store", "status": "ACTIVE" }],
    }))
    .into_response()
}

pub(crate) async fn list_vaults(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Query(q): Query<FilterQuery>,
) -> Response {
    let run = async {
        c.require(ApiScope::Read)?;
        let name = filter_value(q.filter.as_deref(), "name")?.map(str::to_owned);
        let c2 = c.clone();
        blocking(move || {
            Ok(vaults(&s, &c2)?
                .iter()
                .filter(|(env, _)| name.as_deref().is_none_or(|n| n == env.as_str()))
                .map(|(env, items)| vault_json(&c2, env, items))
                .collect::<Vec<_>>())
        })
        .await
    };
    match run.await {
        Ok(v) => json_list(v),
        Err(e) => connect_error(e),
    }
}

pub(crate) async fn get_vault(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let run = async {
        c.require(ApiScope::Read)?;
        let c2 = c.clone();
        blocking(move || {
            let (env, items) = find_vault(&s, &c2, &id)?;
            Ok(vault_json(&c2, &env, &items))
        })
        .await
    };
    match run.await {
        Ok(v) => Json(v).into_response(),
        Err(e) => connect_error(e),
    }
}

pub(crate) async fn list_items(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(vault): Path<String>,
    Query(q): Query<FilterQuery>,
) -> Response {
    let run = async {
        c.require(ApiScope::Read)?;
        let title = filter_value(q.filter.as_deref(), "title")?.map(str::to_owned);
        let c2 = c.clone();
        blocking(move || {
            let (_, items) = find_vault(&s, &c2, &vault)?;
            Ok(items
                .iter()
                .filter(|i| title.as_deref().is_none_or(|t| t == i.name))
                .map(|i| summary(&c2, i))
                .collect::<Vec<_>>())
        })
        .await
    };
    match run.await {
        Ok(v) => json_list(v),
        Err(e) => connect_error(e),
    }
}

pub(crate) async fn get_item(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path((vault, item)): Path<(String, String)>,
) -> Response {
    let run = async {
        c.require(ApiScope::Reveal)?;
        let c2 = c.clone();
        blocking(move || {
            // One lookup by the id the item id encodes; an item outside the key's reach, or
            // in another vault, is as absent as one that does not exist.
            let absent = || ApiError::not_found("item not found");
            let id = item_credential(&item).ok_or_else(absent)?;
            let info = match scope(&s, &c2)?.get(&id) {
                Ok(info) => info,
                Err(StoreError::NotFound { .. }) => return Err(absent()),
                Err(e) => return Err(e.into()),
            };
            if !c2.key.policy.covers(&info.name, &info.environment) {
                return Err(absent());
            }
            if vault_id(c2.tenant.as_str(), &info.environment) != vault {
                // The vault itself must exist for the key, as before: a known vault answers
                // "item not found", an unknown one "vault not found".
                find_vault(&s, &c2, &vault)?;
                return Err(absent());
            }
            item_json(&s, &c2, &info)
        })
        .await
    };
    match run.await {
        Ok(v) => {
            let mut r = Json(v).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => connect_error(e),
    }
}

/// The full item: every field of the type that is set, secret values revealed (one
/// `accessed` event), the authenticator key as its current code.
fn item_json(s: &Shared, c: &Caller, info: &CredentialInfo) -> Result<serde_json::Value, ApiError> {
    let scope = scope(s, c)?;
    let ty = s
        .store
        .registry()
        .get(&info.type_name)
        .cloned()
        .ok_or_else(ApiError::internal)?;
    let def = ty.definition();
    let policy = |key: &str| info.field_policy(&ty, key);
    let set_secret = |key: &str| {
        info.fields.get(key).and_then(serde_json::Value::as_str)
            == Some(credvault_store::SECRET_MARKER)
    };
    let revealable: Vec<&str> = def
        .fields
        .iter()
        .filter(|f| {
            set_secret(&f.key)
                && policy(&f.key) == credvault_store::schema::RevealPolicy::Revealable
        })
        .map(|f| f.key.as_str())
        .collect();
    let revealed = if revealable.is_empty() {
        None
    } else {
        Some(scope.reveal(&info.id, &revealable, Some("connect"))?)
    };
    let otp_field = def.fields.iter().find(|f| {
        set_secret(&f.key)
            && policy(&f.key) == credvault_store::schema::RevealPolicy::WriteOnly
            && (f.key.contains("totp") || f.format == Some(credvault_store::schema::Format::Base32))
    });
    // A counter-based key (HOTP) gives each code once: reading an item must not spend one.
    let counter_based = def
        .fields
        .iter()
        .any(|f| f.key == credvault_store::HOTP_COUNTER_FIELD);
    let code = match (otp_field, c.key.policy.scopes.contains(&ApiScope::Totp)) {
        (Some(_), true) if !counter_based => Some(scope.totp_code(&info.id, Some("connect"))?),
        _ => None,
    };
    // The credvault type, so that a credvault gateway sourcing from this one (or any client)
    // knows how to read the fields.
    let mut fields = vec![serde_json::json!({
        "id": "credvault_type",
        "label": "credvault_type",
        "type": "STRING",
        "purpose": "",
        "value": info.type_name,
    })];
    for f in &def.fields {
        let Some(v) = info.fields.get(&f.key) else {
            continue;
        };
        let secret = v.as_str() == Some(credvault_store::SECRET_MARKER);
        let purpose = match f.key.as_str() {
            "username" | "user" => "USERNAME",
            "password" => "PASSWORD",
            "notes" => "NOTES",
            _ => "",
        };
        let mut field = serde_json::json!({
            "id": f.key,
            // The field's key, as Connect labels a login's `username` and `password`: what
            // automations look fields up by (`load_dict`'s `.password`).
            "label": f.key,
            "purpose": purpose,
        });
        if secret {
            if otp_field.is_some_and(|o| o.key == f.key) {
                field["type"] = "OTP".into();
                if let Some(code) = &code {
                    field["totp"] = code.expose_secret().into();
                }
            } else {
                field["type"] = "CONCEALED".into();
                if let Some(val) = revealed.as_ref().and_then(|r| r.expose_secret(&f.key)) {
                    field["value"] = val.into();
                }
            }
        } else {
            let kind = match (f.kind, f.format) {
                (_, Some(credvault_store::schema::Format::Url)) => "URL",
                (_, Some(credvault_store::schema::Format::Email)) => "EMAIL",
                (FieldKind::Options, _) => "MENU",
                _ => "STRING",
            };
            field["type"] = kind.into();
            field["value"] = match v {
                serde_json::Value::String(t) => t.clone().into(),
                other => other.to_string().into(),
            };
        }
        fields.push(field);
    }
    let mut out = summary(c, info);
    out["fields"] = fields.into();
    out["sections"] = serde_json::json!([]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_ids_name_their_credential_and_nothing_else() {
        for _ in 0..64 {
            let id = CredentialId::generate().unwrap();
            assert_eq!(item_credential(&item_id(&id)), Some(id));
        }
        let one = item_id(&CredentialId::generate().unwrap());
        // The last character carries 2 unused bits, zero in every id we write: the next
        // character of the alphabet sets one.
        let last = one.as_bytes()[25];
        assert!(b"aeimquy4".contains(&last), "{one}");
        let next = if last == b'4' {
            '5'
        } else {
            char::from(last + 1)
        };
        let odd = format!("{}{next}", &one[..25]);
        let long = format!("{one}a");
        for bad in [
            "",
            "a",
            &one.to_uppercase(),
            &one[..25],
            &long,
            &odd,
            &"1".repeat(26),
        ] {
            assert_eq!(item_credential(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn base32_is_rfc_4648_lower_case_without_padding() {
        // RFC 4648 section 10.
        for (input, want) in [
            ("", ""),
            ("f", "my"),
            ("fo", "mzxq"),
            ("foo", "mzxw6"),
            ("foob", "mzxw6yq"),
            ("fooba", "mzxw6ytb"),
            ("foobar", "mzxw6ytboi"),
        ] {
            assert_eq!(base32(input.as_bytes()), want);
        }
        assert_eq!(base32(&[0xff; 16]).len(), 26);
    }

    #[test]
    fn filters_take_one_equality_and_nothing_else() {
        assert_eq!(filter_value(None, "title").unwrap(), None);
        assert_eq!(
            filter_value(Some(r#"title eq "a b""#), "title").unwrap(),
            Some("a b")
        );
        for bad in [r#"title ne "x""#, "title eq x", r#"name eq "x""#, ""] {
            assert!(filter_value(Some(bad), "title").is_err(), "{bad}");
        }
    }
}
