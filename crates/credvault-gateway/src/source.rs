//! External sources: a tenant whose credentials never rest in credvault. Each request fetches
//! the credential from the external vault (a HashiCorp Vault KV v2 mount, or a 1Password
//! Connect server), uses it for that request only (a reveal, or the proxy's injection), wipes
//! it, and records the access in credvault's audit log. Nothing is stored or cached.
//!
//! A sourced credential names its credvault type: the Vault secret's `type` key, or the
//! Connect item's `credvault_type` field (a `LOGIN` item without one is a `website_login`).
//! Its other keys or fields are the type's fields, validated as for a stored credential.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue, Method, Request, StatusCode, Uri};
use credvault_store::wipe_json;
use zeroize::Zeroizing;

use crate::proxy::{client, UpstreamClient, UpstreamConfig};

/// Largest answer read from a source.
const MAX_ANSWER: usize = 1 << 20;

/// A credential fetched for one request: its type and fields. Wiped on drop; `Debug` shows
/// the type only.
pub struct SourcedCredential {
    /// The credvault type it is validated as.
    pub type_name: String,
    fields: serde_json::Value,
}

impl SourcedCredential {
    /// The fields, as a JSON object (values are secrets).
    pub fn fields(&self) -> &serde_json::Value {
        &self.fields
    }

    pub(crate) fn fields_mut(&mut self) -> &mut serde_json::Value {
        &mut self.fields
    }
}

impl std::fmt::Debug for SourcedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourcedCredential")
            .field("type_name", &self.type_name)
            .finish_non_exhaustive()
    }
}

impl Drop for SourcedCredential {
    fn drop(&mut self) {
        wipe_json(&mut self.fields);
    }
}

/// Why a source gave no credential (never a value, never the source's token).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The source has no credential of that name.
    #[error("the source has no credential of that name")]
    NotFound,
    /// The source refused the gateway's token.
    #[error("the source refused the gateway's credentials")]
    Denied,
    /// The source could not be reached or answered unexpectedly.
    #[error("the source is unavailable: {0}")]
    Unavailable(String),
    /// The credential is not usable (no type, a malformed answer, a bad name).
    #[error("the sourced credential is not usable: {0}")]
    Invalid(String),
}

type Fetch<'a> = Pin<Box<dyn Future<Output = Result<SourcedCredential, SourceError>> + Send + 'a>>;

/// Where a tenant's credentials come from when they do not rest in credvault.
pub trait Source: Send + Sync + std::fmt::Debug {
    /// A short name for records (`vault-kv`, `connect`).
    fn kind(&self) -> &'static str;
    /// Fetches the credential named `name`, for one request.
    fn fetch<'a>(&'a self, name: &'a str) -> Fetch<'a>;
}

/// How to reach a source: its base URL, its token (kept wiped), the CAs it is trusted with.
struct Endpoint {
    base: String,
    token: Zeroizing<String>,
    client: UpstreamClient,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    fn new(
        base: &str,
        token: Zeroizing<String>,
        roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    ) -> Result<Self, SourceError> {
        let url = url::Url::parse(base)
            .map_err(|_| SourceError::Invalid("the source URL does not parse".into()))?;
        if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
            return Err(SourceError::Invalid("the source URL is not http(s)".into()));
        }
        // The operator names the source: any address but a reserved one may be reached.
        let everywhere = |r: &str| {
            r.parse::<ipnet::IpNet>()
                .map_err(|_| SourceError::Invalid("range".into()))
        };
        let cfg = UpstreamConfig {
            allow: vec![everywhere("0.0.0.0/0")?, everywhere("::/0")?],
            extra_roots: roots,
            connect_timeout: Duration::from_secs(10),
            ..UpstreamConfig::default()
        };
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            client: client(&cfg),
        })
    }

    /// GET `path` with `auth` carrying the token; the JSON answer, or the status.
    async fn get(
        &self,
        path: &str,
        auth: (&'static str, String),
    ) -> Result<serde_json::Value, SourceError> {
        let uri: Uri = format!("{}{path}", self.base)
            .parse()
            .map_err(|_| SourceError::Invalid("a request URI".into()))?;
        let mut value = HeaderValue::from_str(&auth.1)
            .map_err(|_| SourceError::Invalid("the token is not a header value".into()))?;
        drop(Zeroizing::new(auth.1));
        value.set_sensitive(true);
        let mut req = Request::new(axum::body::Body::empty());
        *req.method_mut() = Method::GET;
        *req.uri_mut() = uri;
        req.headers_mut().insert(auth.0, value);
        req.headers_mut()
            .insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let answer = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .map_err(|_| SourceError::Unavailable("timed out".into()))?
            .map_err(|_| SourceError::Unavailable("could not connect".into()))?;
        let status = answer.status();
        let body = axum::body::to_bytes(axum::body::Body::new(answer.into_body()), MAX_ANSWER)
            .await
            .map_err(|_| SourceError::Unavailable("the answer broke off or is too large".into()))?;
        let body = Zeroizing::new(body.to_vec());
        match status {
            s if s.is_success() => serde_json::from_slice(&body)
                .map_err(|_| SourceError::Unavailable("the answer is not JSON".into())),
            StatusCode::NOT_FOUND => Err(SourceError::NotFound),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(SourceError::Denied),
            s => Err(SourceError::Unavailable(format!("status {}", s.as_u16()))),
        }
    }
}

/// Percent-encodes one path segment.
fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A HashiCorp Vault KV v2 mount: the credential NAME is the secret at `MOUNT/data/NAME`, its
/// `type` key the credvault type.
#[derive(Debug)]
pub struct VaultKvSource {
    endpoint: Endpoint,
    mount: String,
}

impl VaultKvSource {
    /// A source reading `mount` at `base` (`https://vault.example:8200`) with `token`,
    /// trusting `roots` beside the system's.
    ///
    /// # Errors
    /// [`SourceError::Invalid`] for a URL that is not http(s) or an empty mount.
    pub fn new(
        base: &str,
        mount: &str,
        token: Zeroizing<String>,
        roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    ) -> Result<Self, SourceError> {
        let mount = mount.trim_matches('/');
        if mount.is_empty() {
            return Err(SourceError::Invalid("an empty mount".into()));
        }
        Ok(Self {
            endpoint: Endpoint::new(base, token, roots)?,
            mount: mount.to_owned(),
        })
    }
}

impl Source for VaultKvSource {
    fn kind(&self) -> &'static str {
        "vault-kv"
    }

    fn fetch<'a>(&'a self, name: &'a str) -> Fetch<'a> {
        Box::pin(async move {
            if name.is_empty()
                || name
                    .split('/')
                    .any(|s| s.is_empty() || s == "." || s == "..")
            {
                return Err(SourceError::Invalid(
                    "a name with an empty, `.` or `..` segment".into(),
                ));
            }
            let path: Vec<String> = name.split('/').map(segment).collect();
            let doc = self
                .endpoint
                .get(
                    &format!("/v1/{}/data/{}", segment(&self.mount), path.join("/")),
                    ("x-vault-token", self.endpoint.token.as_str().to_owned()),
                )
                .await?;
            from_kv_answer(doc)
        })
    }
}

/// The credential in a KV v2 read's answer (`{"data": {"data": {...}, "metadata": ...}}`):
/// its `type` key and the other keys as fields. The answer is wiped.
pub(crate) fn from_kv_answer(mut doc: serde_json::Value) -> Result<SourcedCredential, SourceError> {
    let data = doc
        .get_mut("data")
        .and_then(|d| d.get_mut("data"))
        .map(serde_json::Value::take);
    wipe_json(&mut doc);
    let mut data = data.ok_or_else(|| SourceError::Invalid("no data in the answer".into()))?;
    let type_name = data
        .as_object_mut()
        .and_then(|o| o.remove("type"))
        .and_then(|t| t.as_str().map(str::to_owned));
    let Some(type_name) = type_name else {
        wipe_json(&mut data);
        return Err(SourceError::Invalid("the secret has no `type` key".into()));
    };
    Ok(SourcedCredential {
        type_name,
        fields: data,
    })
}

/// The credential in a Connect item (`{"category": ..., "fields": [{"label", "value"}...]}`):
/// fields by label, the type from the `credvault_type` field (a `LOGIN` is a
/// `website_login`). The item is wiped.
pub(crate) fn from_connect_item(
    mut item: serde_json::Value,
) -> Result<SourcedCredential, SourceError> {
    let mut fields = serde_json::Map::new();
    let mut type_name = None;
    if let Some(list) = item.get("fields").and_then(serde_json::Value::as_array) {
        for f in list {
            let (Some(label), Some(value)) = (
                f.get("label").and_then(serde_json::Value::as_str),
                f.get("value").and_then(serde_json::Value::as_str),
            ) else {
                continue;
            };
            if label == "credvault_type" {
                type_name = Some(value.to_owned());
            } else if !value.is_empty() {
                fields.insert(label.to_owned(), value.into());
            }
        }
    }
    let category = item
        .get("category")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned);
    wipe_json(&mut item);
    let mut fields = serde_json::Value::Object(fields);
    let type_name = match (type_name, category.as_deref()) {
        (Some(t), _) => t,
        (None, Some("LOGIN")) => "website_login".to_owned(),
        _ => {
            wipe_json(&mut fields);
            return Err(SourceError::Invalid(
                "the item names no credvault_type and is not a LOGIN".into(),
            ));
        }
    };
    Ok(SourcedCredential { type_name, fields })
}

/// A 1Password Connect server: the credential NAME is the item titled NAME in the vault
/// named `vault`; its fields by label.
#[derive(Debug)]
pub struct ConnectSource {
    endpoint: Endpoint,
    vault: String,
}

impl ConnectSource {
    /// A source reading the vault named `vault` at `base` with `token`, trusting `roots`
    /// beside the system's.
    ///
    /// # Errors
    /// [`SourceError::Invalid`] for a URL that is not http(s) or a vault name holding `"`.
    pub fn new(
        base: &str,
        vault: &str,
        token: Zeroizing<String>,
        roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    ) -> Result<Self, SourceError> {
        if vault.is_empty() || vault.contains('"') {
            return Err(SourceError::Invalid("a vault name without `\"`".into()));
        }
        Ok(Self {
            endpoint: Endpoint::new(base, token, roots)?,
            vault: vault.to_owned(),
        })
    }

    fn bearer(&self) -> (&'static str, String) {
        (
            "authorization",
            format!("Bearer {}", self.endpoint.token.as_str()),
        )
    }
}

fn eq_filter(attr: &str, value: &str) -> String {
    segment(&format!("{attr} eq \"{value}\""))
}

impl Source for ConnectSource {
    fn kind(&self) -> &'static str {
        "connect"
    }

    fn fetch<'a>(&'a self, name: &'a str) -> Fetch<'a> {
        Box::pin(async move {
            if name.is_empty() || name.contains('"') {
                return Err(SourceError::Invalid("a title without `\"`".into()));
            }
            let one_id = |list: serde_json::Value| -> Result<String, SourceError> {
                match list.as_array().map(Vec::as_slice) {
                    Some([one]) => one
                        .get("id")
                        .and_then(serde_json::Value::as_str)
                        .map(str::to_owned)
                        .ok_or_else(|| SourceError::Invalid("an entry without an id".into())),
                    Some([]) => Err(SourceError::NotFound),
                    Some(_) => Err(SourceError::Invalid("more than one match".into())),
                    None => Err(SourceError::Unavailable("the answer is not a list".into())),
                }
            };
            let vaults = self
                .endpoint
                .get(
                    &format!("/v1/vaults?filter={}", eq_filter("name", &self.vault)),
                    self.bearer(),
                )
                .await?;
            let vid = one_id(vaults)?;
            let items = self
                .endpoint
                .get(
                    &format!(
                        "/v1/vaults/{}/items?filter={}",
                        segment(&vid),
                        eq_filter("title", name)
                    ),
                    self.bearer(),
                )
                .await?;
            let iid = one_id(items)?;
            let item = self
                .endpoint
                .get(
                    &format!("/v1/vaults/{}/items/{}", segment(&vid), segment(&iid)),
                    self.bearer(),
                )
                .await?;
            from_connect_item(item)
        })
    }
}

/// A shared source.
pub type SharedSource = Arc<dyn Source>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of the "Read secret version" sample response in Vault's KV v2 API docs
    /// (developer.hashicorp.com/vault/api-docs/secret/kv/kv-v2), with a `type` key.
    #[test]
    fn a_kv_read_answer_as_vault_documents_it() {
        let doc = serde_json::json!({
            "data": {
                "data": {"type": "http_bearer_token", "token": "abc123", "base_url": "https://api.example.com"},
                "metadata": {
                    "created_time": "2018-03-22T02:24:06.945319214Z",
                    "custom_metadata": {"owner": "jdoe", "mission_critical": "false"},
                    "deletion_time": "",
                    "destroyed": false,
                    "version": 2
                }
            }
        });
        let c = from_kv_answer(doc).unwrap();
        assert_eq!(c.type_name, "http_bearer_token");
        assert_eq!(
            c.fields(),
            &serde_json::json!({"token": "abc123", "base_url": "https://api.example.com"})
        );
        assert!(!format!("{c:?}").contains("abc123"));
        for bad in [
            serde_json::json!({"data": {"data": {"token": "x"}}}),
            serde_json::json!({"data": {}}),
            serde_json::json!([]),
        ] {
            assert!(matches!(from_kv_answer(bad), Err(SourceError::Invalid(_))));
        }
    }

    /// The shape of the item in 1Password Connect's API reference ("Get item details":
    /// developer.1password.com/docs/connect/api-reference), a LOGIN with username, password
    /// and a one-time password field (whose value the source skips: Connect gives `totp`).
    #[test]
    fn a_connect_item_as_1password_documents_it() {
        let item = serde_json::json!({
            "id": "2fcbqwe9ndg175zg2dzwftvkpa",
            "title": "Secrets Automation Item",
            "tags": ["connect", "\u{1f427}"],
            "vault": {"id": "ftz4pm2xxwmwrsd7rjqn7grzfz"},
            "category": "LOGIN",
            "sections": [{"id": "95cdbc3b-7742-47ec-9056-44d6af82d562", "label": "Security Questions"}],
            "fields": [
                {"id": "password", "type": "CONCEALED", "purpose": "PASSWORD", "label": "password", "value": "RGVJYcCFrRR", "entropy": 80.2},
                {"id": "username", "type": "STRING", "purpose": "USERNAME", "label": "username", "value": "ops@example.com"},
                {"id": "login_url", "type": "URL", "label": "login_url", "value": "https://example.com/login"},
                {"id": "TOTP_1", "type": "OTP", "label": "one-time password", "totp": "134253"}
            ],
            "createdAt": "2021-04-10T17:20:05.98944527Z",
            "updatedAt": "2021-04-13T17:20:05.989445411Z"
        });
        let c = from_connect_item(item).unwrap();
        assert_eq!(c.type_name, "website_login");
        assert_eq!(
            c.fields(),
            &serde_json::json!({"password": "RGVJYcCFrRR", "username": "ops@example.com", "login_url": "https://example.com/login"})
        );
        let note = serde_json::json!({"category": "SECURE_NOTE", "fields": []});
        assert!(matches!(
            from_connect_item(note),
            Err(SourceError::Invalid(_))
        ));
    }
}
