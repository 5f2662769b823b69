//! Vault's TOTP secrets engine at `totp/`, on credvault's store: a key named NAME is the
//! credential `totp/NAME` of type `totp_key` (environment `production`), its authenticator key
//! sealed and write-only. Codes are made and checked by the store (`totp_generated`, a replay
//! refused across processes, wrong codes throttled).
//!
//! - `POST totp/keys/NAME`: `generate=true` (with `issuer`, `account_name`, `key_size`) makes a
//!   key and returns its `otpauth://` URL once (`exported`, default true; `barcode` is empty:
//!   no QR image is drawn); otherwise `url` or `key` (base32) imports one. `algorithm`,
//!   `digits` (6 or 8), `period` (seconds, or `"30s"`) as Vault takes them.
//! - `GET totp/keys/NAME` (issuer, account, algorithm, digits, period), `LIST totp/keys`,
//!   `DELETE totp/keys/NAME`.
//! - `GET totp/code/NAME`: the current code; `POST totp/code/NAME` with `code`:
//!   `{"valid": true|false}`, a code already used is refused with 400 as Vault refuses it.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use credvault_store::totp::{Algorithm, Otp, TotpSecret};
use credvault_store::{CredentialUpdate, NewCredential, StoreError};
use ring::rand::SecureRandom as _;
use serde::Deserialize;

use crate::apikey::ApiScope;
use crate::error::ApiError;
use crate::gateway::{blocking, json_body, scope, Caller, Shared};
use crate::vault_api::{
    answer, envelope, no_store, require_list, vault_error, Engine, MetadataQuery,
};

/// The credential type TOTP keys are kept as.
const TOTP_TYPE: &str = "totp_key";
const TOTP_FIELD: &str = "totp_secret";
const ENVIRONMENT: &str = credvault_store::DEFAULT_ENVIRONMENT;
/// Credential names of TOTP keys start with this.
const PREFIX: &str = "totp/";
/// The engine's keys.
const TOTP: Engine = Engine {
    prefix: PREFIX,
    type_name: TOTP_TYPE,
    what: "TOTP key",
};

fn not_found() -> ApiError {
    ApiError::not_found("unknown key")
}

/// A number Vault sends as a number or as text (`"30"`, `"30s"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Num {
    N(u64),
    S(String),
}

impl Num {
    fn get(&self, what: &str) -> Result<u64, ApiError> {
        match self {
            Num::N(n) => Ok(*n),
            Num::S(s) => s
                .trim()
                .trim_end_matches('s')
                .parse()
                .map_err(|_| ApiError::bad_request(format!("{what}: expected a number"))),
        }
    }
}

/// Body of `POST totp/keys/NAME` (Vault's parameters; `skew` and `qr_size` are accepted and
/// not used: the store checks one step either side, and no QR image is drawn).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKey {
    #[serde(default)]
    generate: bool,
    #[serde(default)]
    exported: Option<bool>,
    key_size: Option<Num>,
    url: Option<String>,
    key: Option<String>,
    issuer: Option<String>,
    account_name: Option<String>,
    period: Option<Num>,
    algorithm: Option<String>,
    digits: Option<Num>,
    #[allow(dead_code)]
    skew: Option<Num>,
    #[allow(dead_code)]
    qr_size: Option<Num>,
}

impl Drop for CreateKey {
    fn drop(&mut self) {
        for s in [&mut self.url, &mut self.key].into_iter().flatten() {
            zeroize::Zeroize::zeroize(s);
        }
    }
}

fn otp_error(what: &str) -> impl Fn(credvault_store::totp::OtpError) -> ApiError + '_ {
    move |e| ApiError::bad_request(format!("{what}: {e}"))
}

/// The authenticator a create asks for, and whether its URL goes back.
fn build(b: &CreateKey) -> Result<(Otp, bool), ApiError> {
    let algorithm = b
        .algorithm
        .as_deref()
        .map(Algorithm::parse)
        .transpose()
        .map_err(otp_error("algorithm"))?
        .unwrap_or(Algorithm::Sha1);
    let digits = match &b.digits {
        Some(d) => u8::try_from(d.get("digits")?)
            .ok()
            .filter(|d| matches!(d, 6 | 8))
            .ok_or_else(|| ApiError::bad_request("digits: 6 or 8"))?,
        None => 6,
    };
    let period = match &b.period {
        Some(p) => p.get("period")?,
        None => 30,
    };
    let labels = |o: Otp, issuer: Option<String>, account: Option<String>| {
        o.with_labels(
            issuer.filter(|s| !s.is_empty()),
            account.filter(|s| !s.is_empty()),
        )
    };
    if b.generate {
        if b.url.is_some() || b.key.is_some() {
            return Err(ApiError::bad_request(
                "generate: a generated key takes no url or key",
            ));
        }
        let (Some(issuer), Some(account)) = (&b.issuer, &b.account_name) else {
            return Err(ApiError::bad_request(
                "generate: issuer and account_name are required",
            ));
        };
        let size = match &b.key_size {
            Some(k) => usize::try_from(k.get("key_size")?).unwrap_or(usize::MAX),
            None => 20,
        };
        if !(10..=64).contains(&size) {
            return Err(ApiError::bad_request("key_size: 10 to 64 bytes"));
        }
        let mut bytes = zeroize::Zeroizing::new(vec![0u8; size]);
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| ApiError::internal())?;
        let secret = TotpSecret::from_bytes(&bytes).map_err(otp_error("key"))?;
        let otp = Otp::totp(secret, algorithm, digits, period).map_err(otp_error("key"))?;
        return Ok((
            labels(otp, Some(issuer.clone()), Some(account.clone())),
            b.exported.unwrap_or(true),
        ));
    }
    let otp = match (&b.url, &b.key) {
        (Some(url), None) => {
            let o = Otp::from_uri(url).map_err(otp_error("url"))?;
            if !matches!(o.kind(), credvault_store::totp::Kind::Totp { .. }) {
                return Err(ApiError::bad_request("url: not an otpauth://totp URL"));
            }
            // Vault's own issuer/account_name, when given, name the key.
            let (issuer, account) = (
                b.issuer.clone().or_else(|| o.issuer().map(str::to_owned)),
                b.account_name
                    .clone()
                    .or_else(|| o.account().map(str::to_owned)),
            );
            labels(o, issuer, account)
        }
        (None, Some(key)) => {
            let secret = TotpSecret::parse(key).map_err(otp_error("key"))?;
            let o = Otp::totp(secret, algorithm, digits, period).map_err(otp_error("key"))?;
            labels(o, b.issuer.clone(), b.account_name.clone())
        }
        _ => {
            return Err(ApiError::bad_request(
                "give generate=true, or one of url and key",
            ))
        }
    };
    Ok((otp, false))
}

pub(crate) async fn create_key(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(raw): Path<String>,
    body: Result<Json<CreateKey>, JsonRejection>,
) -> Response {
    let run = async {
        c.require(ApiScope::Write)?;
        let name = TOTP.name(&raw)?;
        TOTP.covered(&c, &name)?;
        let b = json_body(body)?;
        let (otp, exported) = build(&b)?;
        drop(b);
        let uri = otp.to_uri();
        let period = match otp.kind() {
            credvault_store::totp::Kind::Totp { period } => period,
            _ => 30,
        };
        let mut fields = serde_json::json!({
            TOTP_FIELD: uri.as_str(),
            "algorithm": otp.algorithm().name(),
            "digits": otp.digits(),
            "period": period,
        });
        if let Some(i) = otp.issuer() {
            fields["issuer"] = i.into();
        }
        if let Some(a) = otp.account() {
            fields["account"] = a.into();
        }
        let c2 = c.clone();
        blocking(move || {
            let scope = scope(&s, &c2)?;
            match TOTP.find(&scope, &name)? {
                Some(current) => {
                    scope.update(&current.id, CredentialUpdate::new().fields(fields))?;
                }
                None => {
                    scope.create(
                        NewCredential::new(TOTP_TYPE, name.as_str(), fields)
                            .environment(ENVIRONMENT),
                    )?;
                }
            }
            Ok(())
        })
        .await?;
        Ok::<_, ApiError>(exported.then_some(uri))
    };
    match run.await {
        Ok(Some(url)) => no_store(envelope(
            &c,
            serde_json::json!({ "barcode": "", "url": url.as_str() }),
        )),
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => vault_error(e),
    }
}

pub(crate) async fn read_key(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(raw): Path<String>,
) -> Response {
    let run = async {
        c.require(ApiScope::Read)?;
        let name = TOTP.name(&raw)?;
        TOTP.covered(&c, &name)?;
        let c2 = c.clone();
        blocking(move || {
            let info = TOTP.find(&scope(&s, &c2)?, &name)?.ok_or_else(not_found)?;
            let f = &info.fields;
            Ok(serde_json::json!({
                "account_name": f.get("account").cloned().unwrap_or_default(),
                "algorithm": f.get("algorithm").cloned().unwrap_or_else(|| "SHA1".into()),
                "digits": f.get("digits").cloned().unwrap_or_else(|| 6.into()),
                "issuer": f.get("issuer").cloned().unwrap_or_default(),
                "period": f.get("period").cloned().unwrap_or_else(|| 30.into()),
            }))
        })
        .await
    };
    answer(&c, run.await)
}

pub(crate) async fn list_keys(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    q: Result<Query<MetadataQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let run = async {
        c.require(ApiScope::Read)?;
        require_list(q)?;
        let c2 = c.clone();
        blocking(move || TOTP.list(&s, &c2)).await
    };
    answer(&c, run.await)
}

pub(crate) async fn delete_key(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(raw): Path<String>,
) -> Response {
    let run = async {
        c.require(ApiScope::Write)?;
        let name = TOTP.name(&raw)?;
        TOTP.covered(&c, &name)?;
        TOTP.remove(s, c.clone(), name).await
    };
    crate::vault_api::done(run.await)
}

pub(crate) async fn generate_code(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(raw): Path<String>,
) -> Response {
    let run = async {
        c.require(ApiScope::Totp)?;
        let name = TOTP.name(&raw)?;
        TOTP.covered(&c, &name)?;
        let c2 = c.clone();
        blocking(move || {
            let scope = scope(&s, &c2)?;
            let info = TOTP.find(&scope, &name)?.ok_or_else(not_found)?;
            let service = format!("vault-totp:{}", c2.key.id);
            let code = scope.totp_code(&info.id, Some(&service))?;
            Ok(serde_json::json!({ "code": code.expose_secret() }))
        })
        .await
    };
    match run.await {
        Ok(data) => no_store(envelope(&c, data)),
        Err(e) => vault_error(e),
    }
}

/// Body of `POST totp/code/NAME`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Validate {
    code: String,
}

pub(crate) async fn validate_code(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(raw): Path<String>,
    body: Result<Json<Validate>, JsonRejection>,
) -> Response {
    let run = async {
        c.require(ApiScope::Totp)?;
        let name = TOTP.name(&raw)?;
        TOTP.covered(&c, &name)?;
        let b = json_body(body)?;
        let c2 = c.clone();
        blocking(move || {
            let scope = scope(&s, &c2)?;
            let info = TOTP.find(&scope, &name)?.ok_or_else(not_found)?;
            match scope.verify_totp(&info.id, &b.code) {
                Ok(_) => Ok(true),
                Err(StoreError::Totp { reason }) if reason.contains("already used") => Err(
                    ApiError::bad_request("code already used; wait until the next time period"),
                ),
                Err(StoreError::Totp { .. }) => Ok(false),
                Err(e) => Err(e.into()),
            }
        })
        .await
    };
    match run.await {
        Ok(valid) => envelope(&c, serde_json::json!({ "valid": valid })),
        Err(e) => vault_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_are_plain_and_prefixed() {
        assert_eq!(TOTP.name("bot-1.prod").unwrap(), "totp/bot-1.prod");
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(129)] {
            assert!(TOTP.name(bad).is_err(), "{bad:?}");
        }
    }
}
