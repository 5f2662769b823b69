//! Browser sessions, leases and two-factor codes over HTTP (crates credvault-session and
//! credvault-tfa): the same operations as `credvault session`, `lease` and `tfa`, and Twilio's
//! inbound-SMS webhook.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use credvault_session::{BrowserState, LeaseKind, SessionConfig, SessionError, Sessions};
use credvault_store::{CredentialId, Scope};
use credvault_tfa::{Tfa, TfaError};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::apikey::ApiScope;
use crate::error::ApiError;
use crate::gateway::{blocking, covered, scope, Caller, Shared};

/// Longest a request waits for a lease or a code (a client waits longer by asking again).
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(25);

/// What the gate hands the Twilio webhook: the host's tenant, nothing about a key.
#[derive(Clone, Debug)]
pub(crate) struct Webhook {
    pub(crate) tenant: credvault_store::TenantId,
    pub(crate) tls: bool,
}

/// The sessions and the two-factor receiver a gateway serves
/// ([`Gateway::set_sessions`](crate::Gateway::set_sessions)).
pub(crate) struct Services {
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) tfa: Arc<Tfa>,
    pub(crate) twilio_token: Option<Zeroizing<Vec<u8>>>,
}

fn services(s: &Shared) -> Result<&Services, ApiError> {
    s.services.get().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_configured",
            "this gateway serves no browser sessions or two-factor codes",
        )
    })
}

fn session_error(e: SessionError) -> ApiError {
    match e {
        SessionError::Store(e) => e.into(),
        SessionError::InvalidState { .. } | SessionError::Invalid { .. } => {
            ApiError::bad_request(e.to_string())
        }
        SessionError::Refused(_) => ApiError::new(StatusCode::CONFLICT, "refused", e.to_string()),
        SessionError::WaitTimedOut { .. } => ApiError {
            retry_after: Some(1),
            ..ApiError::new(StatusCode::CONFLICT, "lease_unavailable", e.to_string())
        },
        SessionError::LeaseLost { .. } => {
            ApiError::new(StatusCode::GONE, "lease_lost", e.to_string())
        }
        SessionError::Integrity { .. } => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "integrity",
            "a stored record failed its integrity check; nothing was used",
        ),
        other => {
            tracing::error!(error = %other, "session error");
            ApiError::internal()
        }
    }
}

fn tfa_error(e: TfaError) -> ApiError {
    match e {
        TfaError::Store(e) => e.into(),
        TfaError::Invalid { .. } => ApiError::bad_request(e.to_string()),
        TfaError::Timeout { .. } => ApiError::new(StatusCode::NOT_FOUND, "no_code", e.to_string()),
        TfaError::Integrity { .. } => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "integrity",
            "a stored record failed its integrity check; nothing was used",
        ),
        other => {
            tracing::error!(error = %other, "two-factor error");
            ApiError::internal()
        }
    }
}

/// The caller's scope and the credential, which its key must cover.
fn credential<'s>(
    s: &'s Shared,
    c: &Caller,
    raw: &str,
) -> Result<(Scope<'s>, CredentialId), ApiError> {
    let id = CredentialId::parse(raw).map_err(|_| ApiError::not_found("no such credential"))?;
    let scope = scope(s, c)?;
    covered(c, &scope.get(&id)?)?;
    Ok((scope, id))
}

fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProfileQuery {
    profile: Option<String>,
}

/// `GET /api/credentials/{id}/session?profile=P`: the saved state (Playwright's
/// `storageState` JSON), or 404 `no_session`.
pub(crate) async fn load_state(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<ProfileQuery>,
) -> Result<Response, ApiError> {
    c.require(ApiScope::Session)?;
    let profile = q.profile.unwrap_or_else(|| "default".into());
    let text = blocking(move || {
        let svc = services(&s)?;
        let (scope, id) = credential(&s, &c, &id)?;
        let state = svc
            .sessions
            .load(&scope, &id, &profile)
            .map_err(session_error)?;
        Ok(state.map(|st| st.expose_json().to_owned()))
    })
    .await?;
    match text {
        Some(t) => {
            let mut resp = t.into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(no_store(resp))
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_session",
            "no saved session for this credential and profile (none was saved, or it expired)",
        )),
    }
}

/// `PUT /api/credentials/{id}/session?profile=P` with the state as the body.
pub(crate) async fn save_state(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<ProfileQuery>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    c.require(ApiScope::Session)?;
    let profile = q.profile.unwrap_or_else(|| "default".into());
    let out = blocking(move || {
        let svc = services(&s)?;
        let (scope, id) = credential(&s, &c, &id)?;
        let text = std::str::from_utf8(&body)
            .map_err(|_| ApiError::bad_request("request body: not UTF-8"))?;
        let state = BrowserState::parse(text).map_err(session_error)?;
        let info = svc
            .sessions
            .save(&scope, &id, &profile, &state)
            .map_err(session_error)?;
        Ok(
            serde_json::json!({"profile": info.profile, "version": info.version,
            "created_at": info.created_at, "expires_at": info.expires_at}),
        )
    })
    .await?;
    Ok(Json(out).into_response())
}

/// `DELETE /api/credentials/{id}/session[?profile=P]`: every profile unless one is named.
pub(crate) async fn remove_state(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<ProfileQuery>,
) -> Result<Response, ApiError> {
    c.require(ApiScope::Session)?;
    let n = blocking(move || {
        let svc = services(&s)?;
        let (scope, id) = credential(&s, &c, &id)?;
        svc.sessions
            .remove(&scope, &id, q.profile.as_deref())
            .map_err(session_error)
    })
    .await?;
    Ok(Json(serde_json::json!({"removed": n})).into_response())
}

/// `GET /api/sessions`: the tenant's saved states (never the states).
pub(crate) async fn list_states(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
) -> Result<Response, ApiError> {
    c.require(ApiScope::Read)?;
    let out = blocking(move || {
        let svc = services(&s)?;
        let scope = scope(&s, &c)?;
        let mut rows = Vec::new();
        // One look per credential, however many profiles it has saved.
        let mut seen = std::collections::HashMap::new();
        for i in svc.sessions.list(&scope).map_err(session_error)? {
            let info = seen.entry(i.credential.clone()).or_insert_with(|| {
                scope
                    .get(&i.credential)
                    .ok()
                    .filter(|info| crate::gateway::covered(&c, info).is_ok())
            });
            let Some(info) = info else {
                continue;
            };
            rows.push(
                serde_json::json!({"credential": i.credential.as_str(), "name": info.name,
                "environment": info.environment, "profile": i.profile, "version": i.version,
                "created_at": i.created_at, "last_used_at": i.last_used_at,
                "expires_at": i.expires_at}),
            );
        }
        Ok(serde_json::json!({"sessions": rows}))
    })
    .await?;
    Ok(Json(out).into_response())
}

/// `GET /api/credentials/{id}/session-config`.
pub(crate) async fn get_config(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    c.require(ApiScope::Read)?;
    let cfg = blocking(move || {
        let svc = services(&s)?;
        let (scope, id) = credential(&s, &c, &id)?;
        svc.sessions.config(&scope, &id).map_err(session_error)
    })
    .await?;
    Ok(Json(cfg).into_response())
}

/// `PUT /api/credentials/{id}/session-config` with the whole settings object.
pub(crate) async fn put_config(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<SessionConfig>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    c.require(ApiScope::Write)?;
    let cfg = crate::gateway::json_body(body)?;
    let out = blocking(move || {
        let svc = services(&s)?;
        let (scope, id) = credential(&s, &c, &id)?;
        svc.sessions
            .configure(&scope, &id, &cfg)
            .map_err(session_error)?;
        Ok(cfg)
    })
    .await?;
    Ok(Json(out).into_response())
}

fn secs(what: &'static str, v: f64, max: Duration) -> Result<Duration, ApiError> {
    let d = Duration::try_from_secs_f64(v)
        .map_err(|_| ApiError::bad_request(format!("{what}: expected seconds")))?;
    if d > max {
        return Err(ApiError::bad_request(format!(
            "{what}: at most {} seconds",
            max.as_secs()
        )));
    }
    Ok(d)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AcquireBody {
    #[serde(default = "run_kind")]
    kind: String,
    #[serde(default = "default_ttl")]
    ttl_seconds: f64,
    #[serde(default)]
    wait_seconds: f64,
}

fn run_kind() -> String {
    "run".into()
}

fn default_ttl() -> f64 {
    30.0
}

/// `POST /api/credentials/{id}/leases` `{"kind": "run"|"login", "ttl_seconds", "wait_seconds"}`:
/// 201 with the lease's id and expiry; 409 `lease_unavailable` when not granted in the wait.
pub(crate) async fn acquire(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<AcquireBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    c.require(ApiScope::Session)?;
    let b = crate::gateway::json_body(body)?;
    let kind = match b.kind.as_str() {
        "run" => LeaseKind::Run,
        "login" => LeaseKind::Login,
        _ => return Err(ApiError::bad_request("kind: expected run or login")),
    };
    let ttl = secs(
        "ttl_seconds",
        b.ttl_seconds,
        credvault_session::MAX_LEASE_TTL,
    )?;
    let wait = secs("wait_seconds", b.wait_seconds, MAX_WAIT)?;
    let out = blocking(move || {
        let svc = services(&s)?;
        let (scope, id) = credential(&s, &c, &id)?;
        let (lease, expires_at) = svc
            .sessions
            .acquire(&scope, &id, kind, ttl, wait)
            .map_err(session_error)?
            .keep();
        Ok(serde_json::json!({"lease": lease, "kind": kind.as_str(), "expires_at": expires_at}))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RenewBody {
    #[serde(default = "default_ttl")]
    ttl_seconds: f64,
}

/// `POST /api/credentials/{id}/leases/{lease}/renew` `{"ttl_seconds"}`: the heartbeat; 410
/// `lease_lost` when it expired.
pub(crate) async fn renew(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path((id, lease)): Path<(String, String)>,
    body: Result<Json<RenewBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    c.require(ApiScope::Session)?;
    let b = crate::gateway::json_body(body)?;
    let ttl = secs(
        "ttl_seconds",
        b.ttl_seconds,
        credvault_session::MAX_LEASE_TTL,
    )?;
    let expires_at = blocking(move || {
        let svc = services(&s)?;
        let (scope, id) = credential(&s, &c, &id)?;
        svc.sessions
            .renew_lease(&scope, &id, &lease, ttl)
            .map_err(session_error)
    })
    .await?;
    Ok(Json(serde_json::json!({"expires_at": expires_at})).into_response())
}

/// `DELETE /api/credentials/{id}/leases/{lease}`: 204; 410 `lease_lost` when it had expired.
pub(crate) async fn release(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path((id, lease)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    c.require(ApiScope::Session)?;
    blocking(move || {
        let svc = services(&s)?;
        let (scope, id) = credential(&s, &c, &id)?;
        svc.sessions
            .release_lease(&scope, &id, &lease)
            .map_err(session_error)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DomainQuery {
    domain: String,
}

/// `GET /api/credentials/{id}/tfa/address?domain=D`: the credential's receiving address.
pub(crate) async fn tfa_address(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<DomainQuery>,
) -> Result<Response, ApiError> {
    c.require(ApiScope::Read)?;
    let address = blocking(move || {
        let svc = services(&s)?;
        let (scope, id) = credential(&s, &c, &id)?;
        svc.tfa.address(&scope, &id, &q.domain).map_err(tfa_error)
    })
    .await?;
    Ok(Json(serde_json::json!({"address": address})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CodeBody {
    #[serde(default)]
    since: i64,
    #[serde(default)]
    timeout_seconds: f64,
}

/// `POST /api/credentials/{id}/tfa/code` `{"since", "timeout_seconds"}`: the next unused
/// code received (handed out once); 404 `no_code` when none arrived in the wait.
pub(crate) async fn tfa_code(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<CodeBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    c.require(ApiScope::Totp)?;
    let b = crate::gateway::json_body(body)?;
    let wait = secs("timeout_seconds", b.timeout_seconds, MAX_WAIT)?;
    let out = blocking(move || {
        let svc = services(&s)?;
        let (scope, id) = credential(&s, &c, &id)?;
        let code = svc
            .tfa
            .wait_for_code(&scope, &id, b.since, wait)
            .map_err(tfa_error)?;
        Ok(
            serde_json::json!({"code": code.expose_secret(), "channel": code.channel.as_str(),
            "received_at": code.received_at}),
        )
    })
    .await?;
    Ok(no_store(Json(out).into_response()))
}

/// `POST /tfa/sms/twilio`: Twilio's inbound-message webhook (form-encoded, signed with
/// `X-Twilio-Signature` over this URL as the client addressed it). A post whose signature
/// does not verify under the configured auth token is refused (403) and changes nothing.
pub(crate) async fn twilio_sms(
    State(s): State<Arc<Shared>>,
    axum::Extension(w): axum::Extension<Webhook>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let svc = services(&s)?;
    let Some(token) = svc.twilio_token.as_ref() else {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_configured",
            "no Twilio auth token is configured",
        ));
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .ok_or_else(|| ApiError::bad_request("no Host"))?;
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}://{host}{pq}", if w.tls { "https" } else { "http" });
    let params: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
        .map_err(|_| ApiError::bad_request("request body: not a form"))?;
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !credvault_tfa::verify_twilio_signature(token, &url, &params, signature) {
        return Err(ApiError::forbidden(
            "bad_signature",
            "X-Twilio-Signature does not verify for this URL and body",
        ));
    }
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (to, from, text) = (get("To"), get("From"), Zeroizing::new(get("Body")));
    let tfa = Arc::clone(&svc.tfa);
    let tenant = w.tenant.clone();
    blocking(move || {
        tfa.receive_sms(Some(&tenant), &to, &from, &text)
            .map_err(tfa_error)
    })
    .await?;
    let mut resp =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>".into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    Ok(resp)
}
