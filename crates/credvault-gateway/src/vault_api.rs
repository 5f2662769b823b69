//! A HashiCorp Vault HTTP API subset, so that Vault clients (the Python `hvac`, the `vault`
//! CLI's HTTP calls, libraries that speak KV v2) work against credvault: the token header
//! (`X-Vault-Token`) carries a credvault API key; responses and errors have Vault's envelope
//! (`{"errors": [...]}`, 403 for a bad token).
//!
//! - `sys/health`, `sys/seal-status`, `sys/init` (never sealed, always initialised);
//! - `auth/token/lookup-self`: the key's id, scopes (as policies), expiry;
//! - KV v2 at `secret/` (module `vault_kv`): `data/PATH` read (`?version=N`), write (with
//!   `options.cas`), delete (soft); `delete/PATH`, `undelete/PATH`, `destroy/PATH` by version;
//!   `metadata/PATH` read, write (`max_versions`, `cas_required`, `custom_metadata`), `LIST`
//!   (and `?list=true`), delete. A secret at `PATH` is the credential named `PATH` of type
//!   `kv_secret` in the `production` environment, its versions sealed with it.
//! - The TOTP engine at `totp/` (module `vault_totp`): keys generated or imported, codes made
//!   and checked by the store.
//! - The transit engine at `transit/` (module `vault_transit`): versioned AES-256-GCM keys,
//!   ciphertexts holding credvault envelopes.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use credvault_store::audit::Timestamp;
use credvault_store::{CredentialInfo, ListFilter, StoreError};
use serde::Deserialize;

use crate::apikey::ApiScope;
use crate::error::ApiError;
use crate::gateway::{blocking, scope, Caller, Shared};

/// The credential type KV secrets are kept as.
pub(crate) const KV_TYPE: &str = "kv_secret";
pub(crate) const KV_ENVIRONMENT: &str = credvault_store::DEFAULT_ENVIRONMENT;
/// Longest KV path.
const MAX_PATH: usize = 256;

/// An [`ApiError`] in Vault's shape: `{"errors": ["message"]}`; a missing or bad token is 403
/// "permission denied", as Vault answers it.
pub(crate) fn vault_error(e: ApiError) -> Response {
    let (status, message) = match e.status {
        StatusCode::UNAUTHORIZED => (StatusCode::FORBIDDEN, "permission denied".to_owned()),
        s => (s, e.message.clone()),
    };
    let mut resp = (status, Json(serde_json::json!({ "errors": [message] }))).into_response();
    if let Some(r) = e.retry_after {
        if let Ok(v) = HeaderValue::from_str(&r.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    resp
}

/// A Vault response envelope around `data`.
pub(crate) fn envelope(c: &Caller, data: serde_json::Value) -> Response {
    Json(serde_json::json!({
        "request_id": c.request_id,
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": data,
        "wrap_info": null,
        "warnings": null,
        "auth": null,
    }))
    .into_response()
}

pub(crate) fn time_text(ms: i64) -> String {
    Timestamp::from_unix_millis(u64::try_from(ms).unwrap_or(0)).to_string()
}

pub(crate) async fn health() -> Response {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Json(serde_json::json!({
        "status": "ok",
        "initialized": true,
        "sealed": false,
        "standby": false,
        "performance_standby": false,
        "replication_performance_mode": "disabled",
        "replication_dr_mode": "disabled",
        "server_time_utc": now,
        "version": concat!("credvault-", env!("CARGO_PKG_VERSION")),
    }))
    .into_response()
}

pub(crate) async fn seal_status() -> Response {
    Json(serde_json::json!({
        "type": "credvault",
        "initialized": true,
        "sealed": false,
        "t": 1,
        "n": 1,
        "progress": 0,
        "nonce": "",
        "version": concat!("credvault-", env!("CARGO_PKG_VERSION")),
        "migration": false,
        "recovery_seal": false,
        "storage_type": "credvault",
    }))
    .into_response()
}

pub(crate) async fn init_status() -> Response {
    Json(serde_json::json!({ "initialized": true })).into_response()
}

pub(crate) async fn lookup_self(axum::Extension(c): axum::Extension<Caller>) -> Response {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let ttl = c
        .key
        .policy
        .expires_at
        .map_or(0, |t| (t.saturating_sub(now) / 1000).max(0));
    let policies: Vec<&str> = c.key.policy.scopes.iter().map(|s| s.as_str()).collect();
    envelope(
        &c,
        serde_json::json!({
            "accessor": c.key.id,
            "creation_time": c.key.created_at / 1000,
            "creation_ttl": ttl,
            "display_name": format!("apikey-{}", if c.key.policy.name.is_empty() { c.key.id.as_str() } else { c.key.policy.name.as_str() }),
            "entity_id": "",
            "expire_time": c.key.policy.expires_at.map(time_text),
            "explicit_max_ttl": 0,
            "id": "",
            "meta": { "tenant": c.tenant.as_str(), "key_id": c.key.id },
            "num_uses": 0,
            "orphan": true,
            "path": "auth/token/create",
            "policies": policies,
            "renewable": false,
            "ttl": ttl,
            "type": "service",
        }),
    )
}

/// A KV path: no leading or trailing `/`, no empty or `.`/`..` segment, no control
/// characters, at most 256 bytes.
pub(crate) fn kv_path(raw: &str) -> Result<String, ApiError> {
    let p = raw.trim_matches('/');
    if p.is_empty()
        || p.len() > MAX_PATH
        || p.chars().any(char::is_control)
        || p.split('/').any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(ApiError::bad_request(
            "path: 1-256 characters, segments not empty, `.` or `..`",
        ));
    }
    Ok(p.to_owned())
}

/// KV v2 secrets: credentials of type `kv_secret` named by their path.
pub(crate) const KV: Engine = Engine {
    prefix: "",
    type_name: KV_TYPE,
    what: "path",
};

fn covered(c: &Caller, name: &str) -> Result<(), ApiError> {
    KV.covered(c, name)
}

/// A secrets engine whose keys are credentials of one type named `PREFIX` + NAME in the
/// `production` environment (the TOTP and transit engines; KV v2 with no prefix).
pub(crate) struct Engine {
    /// `totp/`, `transit/`.
    pub(crate) prefix: &'static str,
    /// The credential type its keys are.
    pub(crate) type_name: &'static str,
    /// What a key is called in refusals (`TOTP key`).
    pub(crate) what: &'static str,
}

impl Engine {
    /// The credential name of key `raw`: 1-128 letters, digits, `-`, `_` or `.`, prefixed.
    pub(crate) fn name(&self, raw: &str) -> Result<String, ApiError> {
        if raw.is_empty()
            || raw.len() > 128
            || raw == "."
            || raw == ".."
            || !raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(ApiError::bad_request(
                "name: 1-128 letters, digits, `-`, `_` or `.`",
            ));
        }
        Ok(format!("{}{raw}", self.prefix))
    }

    /// Whether the caller's key reaches the key named `name`.
    pub(crate) fn covered(&self, c: &Caller, name: &str) -> Result<(), ApiError> {
        if c.key.policy.covers(name, KV_ENVIRONMENT) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "outside_key_scope",
                format!(
                    "permission denied: the key does not reach this {}",
                    self.what
                ),
            ))
        }
    }

    /// The key named `name`, or `None`; a credential of another type by that name is refused.
    pub(crate) fn find(
        &self,
        scope: &credvault_store::Scope<'_>,
        name: &str,
    ) -> Result<Option<CredentialInfo>, ApiError> {
        match scope.find(name, KV_ENVIRONMENT) {
            Ok(i) if i.type_name == self.type_name => Ok(Some(i)),
            Ok(_) => Err(ApiError::bad_request(
                "name: a credential of another type has this name",
            )),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the key named `name` (already checked by [`Engine::name`] and
    /// [`Engine::covered`]); deleting an absent key succeeds, as in Vault.
    pub(crate) async fn remove(
        &'static self,
        s: Arc<Shared>,
        c: Caller,
        name: String,
    ) -> Result<(), ApiError> {
        blocking(move || {
            let scope = scope(&s, &c)?;
            if let Some(info) = self.find(&scope, &name)? {
                scope.delete(&info.id, None)?;
            }
            Ok(())
        })
        .await
    }

    /// `LIST PREFIX/keys`: the names the caller's key reaches (404 when none, as Vault).
    pub(crate) fn list(&self, s: &Shared, c: &Caller) -> Result<serde_json::Value, ApiError> {
        let all = scope(s, c)?.list(
            &ListFilter::new()
                .type_name(self.type_name)
                .environment(KV_ENVIRONMENT),
        )?;
        let mut keys: Vec<String> = all
            .into_iter()
            .filter(|i| c.key.policy.covers(&i.name, &i.environment))
            .filter_map(|i| i.name.strip_prefix(self.prefix).map(str::to_owned))
            .collect();
        keys.sort();
        if keys.is_empty() {
            return Err(ApiError::not_found(""));
        }
        Ok(serde_json::json!({ "keys": keys }))
    }
}

/// A list route answered only for `LIST` (or `?list=true`).
pub(crate) fn require_list(
    q: Result<Query<MetadataQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<(), ApiError> {
    if q.ok().is_some_and(|Query(q)| q.list()) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "unsupported",
            "use LIST (or ?list=true)",
        ))
    }
}

/// `r` in Vault's envelope, or its error shape.
pub(crate) fn answer(c: &Caller, r: Result<serde_json::Value, ApiError>) -> Response {
    match r {
        Ok(data) => envelope(c, data),
        Err(e) => vault_error(e),
    }
}

/// 204 for a change Vault answers with no body, or its error shape.
pub(crate) fn done(r: Result<(), ApiError>) -> Response {
    match r {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => vault_error(e),
    }
}

pub(crate) fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Query of a metadata read: `list=true` lists the keys under the path.
#[derive(Debug, Deserialize)]
pub(crate) struct MetadataQuery {
    list: Option<String>,
}

impl MetadataQuery {
    /// Whether `list` is true as Vault (Go's `strconv.ParseBool`) reads it: `true`, `True`,
    /// `TRUE`, `t`, `T` or `1` (Python clients send `True`).
    pub(crate) fn list(&self) -> bool {
        matches!(
            self.list.as_deref(),
            Some("1" | "t" | "T" | "true" | "True" | "TRUE")
        )
    }
}

pub(crate) async fn kv_metadata(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    raw: Option<Path<String>>,
    q: Result<Query<MetadataQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let raw = raw.map(|Path(p)| p).unwrap_or_default();
    let list = q.ok().is_some_and(|Query(q)| q.list());
    let run = async {
        c.require(ApiScope::Read)?;
        let c2 = c.clone();
        if list {
            let prefix = raw.trim_matches('/').to_owned();
            blocking(move || {
                let all = scope(&s, &c2)?.list(
                    &ListFilter::new()
                        .type_name(KV_TYPE)
                        .environment(KV_ENVIRONMENT),
                )?;
                let mut keys: Vec<String> = all
                    .iter()
                    .filter(|i| c2.key.policy.covers(&i.name, KV_ENVIRONMENT))
                    .filter_map(|i| {
                        let rest = if prefix.is_empty() {
                            i.name.as_str()
                        } else {
                            i.name.strip_prefix(prefix.as_str())?.strip_prefix('/')?
                        };
                        Some(match rest.split_once('/') {
                            Some((dir, _)) => format!("{dir}/"),
                            None => rest.to_owned(),
                        })
                    })
                    .collect();
                keys.sort_unstable();
                keys.dedup();
                if keys.is_empty() {
                    return Err(ApiError::not_found(""));
                }
                Ok(serde_json::json!({ "keys": keys }))
            })
            .await
        } else {
            let name = kv_path(&raw)?;
            covered(&c, &name)?;
            blocking(move || crate::vault_kv::metadata(&s, &c2, &name)).await
        }
    };
    match run.await {
        Ok(data) => envelope(&c, data),
        Err(e) => vault_error(e),
    }
}

/// `DELETE secret/metadata/PATH`: the secret and every version go.
pub(crate) async fn kv_metadata_delete(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(raw): Path<String>,
) -> Response {
    let run = async {
        c.require(ApiScope::Write)?;
        let name = kv_path(&raw)?;
        covered(&c, &name)?;
        KV.remove(s, c.clone(), name).await
    };
    done(run.await)
}
