//! Vault's transit secrets engine at `transit/`, on credvault's store and envelope: a key named
//! NAME is the credential `transit/NAME` of type `transit_key` (environment `production`); its
//! versions (AES-256 data keys) are one sealed, use-only field. Encryption is the envelope
//! crate's AES-256-GCM bound to a context naming the tenant, the key and the version (and, for
//! a `derived` key, the caller's context); the ciphertext is `vault:vN:` and the standard
//! base64 of the envelope.
//!
//! - `POST transit/keys/NAME` (`type` `aes256-gcm96` only, `derived`), `GET`, `LIST
//!   transit/keys`, `POST transit/keys/NAME/config` (`min_decryption_version`,
//!   `min_encryption_version`, `deletion_allowed`), `POST transit/keys/NAME/rotate`, `DELETE`
//!   (only with `deletion_allowed`).
//! - `POST transit/encrypt/NAME`, `decrypt/NAME`, `rewrap/NAME` (each also with
//!   `batch_input`), `datakey/plaintext/NAME` and `datakey/wrapped/NAME`.
//!
//! Scopes: `read` to read and list keys, `write` to create, configure, rotate and delete
//! them, `reveal` to encrypt, decrypt, rewrap and make data keys (each such request records
//! one `accessed` event for the key, service `vault-transit:<operation>`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use credvault_store::envelope::{DataKey, EncryptionContext, KeyId, OpeningKey, SealingKey};
use credvault_store::{CredentialInfo, CredentialUpdate, NewCredential, StoreError};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::apikey::ApiScope;
use crate::error::ApiError;
use crate::gateway::{blocking, json_body, scope, Caller, Shared};
use crate::vault_api::{
    answer, envelope, no_store, require_list, vault_error, Engine, MetadataQuery,
};

const TRANSIT_TYPE: &str = "transit_key";
const KEYS_FIELD: &str = "keys";
const ENVIRONMENT: &str = credvault_store::DEFAULT_ENVIRONMENT;
const PREFIX: &str = "transit/";
/// The engine's keys.
const TRANSIT: Engine = Engine {
    prefix: PREFIX,
    type_name: TRANSIT_TYPE,
    what: "transit key",
};
/// Most items in one batch.
const MAX_BATCH: usize = 1000;
/// Most versions a key keeps.
const MAX_VERSIONS: u64 = 1000;

fn not_found() -> ApiError {
    ApiError::bad_request("encryption key not found")
}

/// A key's settings (its public fields).
struct Settings {
    latest: u64,
    min_decrypt: u64,
    min_encrypt: u64,
    deletion_allowed: bool,
    derived: bool,
}

impl Settings {
    fn of(info: &CredentialInfo) -> Self {
        let n = |k: &str, d: u64| {
            info.fields
                .get(k)
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(d)
        };
        let b = |k: &str| {
            info.fields
                .get(k)
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false)
        };
        Self {
            latest: n("latest_version", 1),
            min_decrypt: n("min_decryption_version", 1),
            min_encrypt: n("min_encryption_version", 0),
            deletion_allowed: b("deletion_allowed"),
            derived: b("derived"),
        }
    }

    /// The version new ciphertexts use.
    fn encrypt_version(&self) -> u64 {
        self.latest
    }
}

/// The key versions, opened for one request: version to data key.
pub(crate) struct Ring(BTreeMap<u64, DataKey>);

impl Ring {
    pub(crate) fn parse(text: &str) -> Result<Self, ApiError> {
        let corrupt = || {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "integrity",
                "the stored transit key is not readable",
            )
        };
        let mut doc: serde_json::Value = serde_json::from_str(text).map_err(|_| corrupt())?;
        let out = Self::entries(&doc);
        credvault_store::wipe_json(&mut doc);
        let out = out.ok_or_else(corrupt)?;
        Ok(Self(out))
    }

    fn entries(doc: &serde_json::Value) -> Option<BTreeMap<u64, DataKey>> {
        let mut out = BTreeMap::new();
        for (v, entry) in doc.as_object()? {
            let v: u64 = v.parse().ok()?;
            let (id, key) = entry.as_str()?.split_once(':')?;
            let id = KeyId::from_hex(id).ok()?;
            let bytes = Zeroizing::new(B64.decode(key).ok()?);
            out.insert(v, DataKey::from_slice(id, &bytes).ok()?);
        }
        Some(out)
    }

    fn text(&self) -> Zeroizing<String> {
        // Digits, hex and base64 only: nothing to escape.
        // Sized up front, so that no partial copy is left behind by a reallocation.
        let mut out = Zeroizing::new(String::with_capacity(2 + 96 * self.0.len()));
        out.push('{');
        for (i, (v, k)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&format!("\"{v}\":\"{}:", k.id()));
            B64.encode_string(k.expose_secret(), &mut out);
            out.push('"');
        }
        out.push('}');
        out
    }

    fn fresh() -> Result<DataKey, ApiError> {
        DataKey::generate().map_err(|_| ApiError::internal())
    }
}

/// The context a ciphertext of `name` at `version` is bound to.
fn context(
    tenant: &str,
    name: &str,
    version: u64,
    derived: Option<&[u8]>,
) -> Result<EncryptionContext, ApiError> {
    let mut ctx = EncryptionContext::new()
        .with("purpose", "vault-transit")
        .and_then(|c| c.with("tenant", tenant))
        .and_then(|c| c.with("transit_key", name))
        .and_then(|c| c.with("transit_version", version.to_string()))
        .map_err(|_| ApiError::internal())?;
    if let Some(d) = derived {
        ctx = ctx
            .with("context", B64.encode(d))
            .map_err(|_| ApiError::bad_request("context: too long"))?;
    }
    Ok(ctx)
}

/// One item of an encrypt, decrypt or rewrap (alone or in `batch_input`).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Item {
    plaintext: Option<String>,
    ciphertext: Option<String>,
    context: Option<String>,
    #[serde(default)]
    key_version: Option<u64>,
    #[allow(dead_code)]
    nonce: Option<String>,
    #[allow(dead_code)]
    reference: Option<String>,
}

impl Drop for Item {
    fn drop(&mut self) {
        if let Some(p) = &mut self.plaintext {
            zeroize::Zeroize::zeroize(p);
        }
    }
}

/// Body of encrypt, decrypt and rewrap: one item, or `batch_input`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct OpBody {
    #[serde(flatten)]
    item: Item,
    batch_input: Option<Vec<Item>>,
    #[allow(dead_code)]
    #[serde(rename = "type")]
    key_type: Option<String>,
    #[allow(dead_code)]
    convergent_encryption: Option<bool>,
    #[allow(dead_code)]
    partial_failure_response_code: Option<u16>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Encrypt,
    Decrypt,
    Rewrap,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Encrypt => "encrypt",
            Op::Decrypt => "decrypt",
            Op::Rewrap => "rewrap",
        }
    }
}

/// Everything an operation on key `name` needs, opened once per request (and recorded).
struct Opened {
    settings: Settings,
    ring: Ring,
    tenant: String,
    name: String,
}

/// Splits a `vault:vN:BASE64` ciphertext into its key version and the sealed envelope, with
/// Vault's error messages. Whether the version exists is the key ring's question.
pub(crate) fn parse_ciphertext(ciphertext: &str) -> Result<(u64, Vec<u8>), ApiError> {
    let invalid = || ApiError::bad_request("invalid ciphertext: no prefix");
    let rest = ciphertext.strip_prefix("vault:v").ok_or_else(invalid)?;
    let (v, body) = rest.split_once(':').ok_or_else(invalid)?;
    let v: u64 = v.parse().map_err(|_| {
        ApiError::bad_request("invalid ciphertext: version number could not be decoded")
    })?;
    let sealed = B64
        .decode(body)
        .map_err(|_| ApiError::bad_request("invalid ciphertext: could not decode base64"))?;
    Ok((v, sealed))
}

impl Opened {
    fn derived_ctx(&self, item: &Item) -> Result<Option<Zeroizing<Vec<u8>>>, ApiError> {
        if !self.settings.derived {
            return Ok(None);
        }
        let c = item
            .context
            .as_deref()
            .ok_or_else(|| ApiError::bad_request("missing 'context' for key derivation; the key was created using a derived key, which means additional, per-request information must be included in order to perform operations with the key"))?;
        Ok(Some(Zeroizing::new(B64.decode(c).map_err(|_| {
            ApiError::bad_request("context: not standard base64")
        })?)))
    }

    fn encrypt(&self, plaintext: &[u8], item: &Item) -> Result<(String, u64), ApiError> {
        let v = match item.key_version {
            None | Some(0) => self.settings.encrypt_version(),
            Some(v) => v,
        };
        if v < self.settings.min_encrypt.max(1) || v > self.settings.latest {
            return Err(ApiError::bad_request(
                "requested version for encryption is not allowed",
            ));
        }
        let key = self.ring.0.get(&v).ok_or_else(not_found)?;
        let derived = self.derived_ctx(item)?;
        let ctx = context(
            &self.tenant,
            &self.name,
            v,
            derived.as_deref().map(|d| &d[..]),
        )?;
        let sealed = SealingKey::new(key)
            .seal(plaintext, &ctx)
            .map_err(|_| ApiError::internal())?;
        Ok((format!("vault:v{v}:{}", B64.encode(sealed)), v))
    }

    fn decrypt(&self, ciphertext: &str, item: &Item) -> Result<Zeroizing<Vec<u8>>, ApiError> {
        let (v, sealed) = parse_ciphertext(ciphertext)?;
        if v < self.settings.min_decrypt {
            return Err(ApiError::bad_request(
                "ciphertext or signature version is disallowed by policy (too old)",
            ));
        }
        let key =
            self.ring.0.get(&v).ok_or_else(|| {
                ApiError::bad_request("invalid ciphertext: key version not found")
            })?;
        let derived = self.derived_ctx(item)?;
        let ctx = context(
            &self.tenant,
            &self.name,
            v,
            derived.as_deref().map(|d| &d[..]),
        )?;
        let plain = OpeningKey::new(key)
            .open(&sealed, &ctx)
            .map_err(|_| ApiError::bad_request("cipher: message authentication failed"))?;
        Ok(Zeroizing::new(plain.expose_secret().to_vec()))
    }

    fn one(&self, op: Op, item: &Item) -> Result<serde_json::Value, ApiError> {
        match op {
            Op::Encrypt => {
                let p = item
                    .plaintext
                    .as_deref()
                    .ok_or_else(|| ApiError::bad_request("missing plaintext to encrypt"))?;
                let plain = Zeroizing::new(
                    B64.decode(p)
                        .map_err(|_| ApiError::bad_request("failed to base64-decode plaintext"))?,
                );
                let (ct, v) = self.encrypt(&plain, item)?;
                Ok(serde_json::json!({ "ciphertext": ct, "key_version": v }))
            }
            Op::Decrypt => {
                let ct = item
                    .ciphertext
                    .as_deref()
                    .ok_or_else(|| ApiError::bad_request("missing ciphertext to decrypt"))?;
                let plain = self.decrypt(ct, item)?;
                Ok(serde_json::json!({ "plaintext": B64.encode(&*plain) }))
            }
            Op::Rewrap => {
                let ct = item
                    .ciphertext
                    .as_deref()
                    .ok_or_else(|| ApiError::bad_request("missing ciphertext to rewrap"))?;
                let plain = self.decrypt(ct, item)?;
                let mut fresh = Item::default();
                fresh.context.clone_from(&item.context);
                fresh.key_version = item.key_version;
                let (ct, v) = self.encrypt(&plain, &fresh)?;
                Ok(serde_json::json!({ "ciphertext": ct, "key_version": v }))
            }
        }
    }
}

/// Opens key `name` for one request: the versions revealed for use (recorded as `accessed`,
/// service `vault-transit:<operation>`).
fn open(s: &Shared, c: &Caller, name: &str, operation: &str) -> Result<Opened, ApiError> {
    let scope = scope(s, c)?;
    let info = TRANSIT.find(&scope, name)?.ok_or_else(not_found)?;
    let service = format!("vault-transit:{operation}");
    let revealed = scope.reveal_many(
        &[(info.id.clone(), vec![KEYS_FIELD.to_owned()])],
        Some(&service),
    )?;
    let text = revealed
        .first()
        .and_then(|r| r.expose_secret(KEYS_FIELD))
        .ok_or_else(ApiError::internal)?;
    Ok(Opened {
        settings: Settings::of(&info),
        ring: Ring::parse(text)?,
        tenant: c.tenant.as_str().to_owned(),
        name: name.to_owned(),
    })
}

async fn operation(
    s: Arc<Shared>,
    c: Caller,
    raw: String,
    body: Result<Json<OpBody>, JsonRejection>,
    op: Op,
) -> Response {
    let c2 = c.clone();
    let run = async move {
        c2.require(ApiScope::Reveal)?;
        let name = TRANSIT.name(&raw)?;
        TRANSIT.covered(&c2, &name)?;
        let b = json_body(body)?;
        if b.batch_input.as_ref().is_some_and(|v| v.len() > MAX_BATCH) {
            return Err(ApiError::bad_request("batch_input: at most 1000 items"));
        }
        blocking(move || {
            let opened = open(&s, &c2, &name, op.name())?;
            match &b.batch_input {
                Some(items) => {
                    let results: Vec<serde_json::Value> = items
                        .iter()
                        .map(|i| {
                            opened
                                .one(op, i)
                                .unwrap_or_else(|e| serde_json::json!({ "error": e.message }))
                        })
                        .collect();
                    Ok(serde_json::json!({ "batch_results": results }))
                }
                None => opened.one(op, &b.item),
            }
        })
        .await
    };
    match run.await {
        Ok(data) => no_store(envelope(&c, data)),
        Err(e) => vault_error(e),
    }
}

pub(crate) async fn encrypt(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(raw): Path<String>,
    body: Result<Json<OpBody>, JsonRejection>,
) -> Response {
    operation(s, c, raw, body, Op::Encrypt).await
}

pub(crate) async fn decrypt(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(raw): Path<String>,
    body: Result<Json<OpBody>, JsonRejection>,
) -> Response {
    operation(s, c, raw, body, Op::Decrypt).await
}

pub(crate) async fn rewrap(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(raw): Path<String>,
    body: Result<Json<OpBody>, JsonRejection>,
) -> Response {
    operation(s, c, raw, body, Op::Rewrap).await
}

/// Body of `POST transit/datakey/{plaintext|wrapped}/NAME`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct DataKeyBody {
    context: Option<String>,
    bits: Option<u32>,
    #[allow(dead_code)]
    nonce: Option<String>,
    key_version: Option<u64>,
}

pub(crate) async fn datakey(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path((kind, raw)): Path<(String, String)>,
    body: Option<Json<DataKeyBody>>,
) -> Response {
    let c2 = c.clone();
    let run = async move {
        c2.require(ApiScope::Reveal)?;
        let show = match kind.as_str() {
            "plaintext" => true,
            "wrapped" => false,
            _ => return Err(ApiError::bad_request("type: plaintext or wrapped")),
        };
        let name = TRANSIT.name(&raw)?;
        TRANSIT.covered(&c2, &name)?;
        let b = body.map(|Json(b)| b).unwrap_or_default();
        let bits = b.bits.unwrap_or(256);
        if !matches!(bits, 128 | 256 | 512) {
            return Err(ApiError::bad_request("bits: 128, 256 or 512"));
        }
        blocking(move || {
            let opened = open(&s, &c2, &name, "datakey")?;
            let mut key = Zeroizing::new(vec![0u8; (bits / 8) as usize]);
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
                .map_err(|_| ApiError::internal())?;
            let mut item = Item::default();
            item.context.clone_from(&b.context);
            item.key_version = b.key_version;
            let (ct, v) = opened.encrypt(&key, &item)?;
            let mut out = serde_json::json!({ "ciphertext": ct, "key_version": v });
            if show {
                out["plaintext"] = B64.encode(&*key).into();
            }
            Ok(out)
        })
        .await
    };
    match run.await {
        Ok(data) => no_store(envelope(&c, data)),
        Err(e) => vault_error(e),
    }
}

/// Body of `POST transit/keys/NAME`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKey {
    #[serde(rename = "type")]
    key_type: Option<String>,
    #[serde(default)]
    derived: bool,
    #[allow(dead_code)]
    convergent_encryption: Option<bool>,
    #[allow(dead_code)]
    exportable: Option<bool>,
    #[allow(dead_code)]
    allow_plaintext_backup: Option<bool>,
    #[allow(dead_code)]
    auto_rotate_period: Option<serde_json::Value>,
}

fn key_info(name: &str, info: &CredentialInfo) -> serde_json::Value {
    let st = Settings::of(info);
    let created = info.created_at / 1000;
    let keys: serde_json::Map<String, serde_json::Value> = (st.min_decrypt..=st.latest)
        .map(|v| (v.to_string(), created.into()))
        .collect();
    serde_json::json!({
        "name": name.strip_prefix(PREFIX).unwrap_or(name),
        "type": "aes256-gcm96",
        "keys": keys,
        "latest_version": st.latest,
        "min_available_version": 0,
        "min_decryption_version": st.min_decrypt,
        "min_encryption_version": st.min_encrypt,
        "deletion_allowed": st.deletion_allowed,
        "derived": st.derived,
        "exportable": false,
        "allow_plaintext_backup": false,
        "supports_encryption": true,
        "supports_decryption": true,
        "supports_derivation": true,
        "supports_signing": false,
        "imported_key": false,
    })
}

pub(crate) async fn create_key(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(raw): Path<String>,
    body: Option<Json<CreateKey>>,
) -> Response {
    let c2 = c.clone();
    let run = async move {
        c2.require(ApiScope::Write)?;
        let name = TRANSIT.name(&raw)?;
        TRANSIT.covered(&c2, &name)?;
        let b = body.map(|Json(b)| b).unwrap_or_default();
        if b.key_type.as_deref().is_some_and(|t| t != "aes256-gcm96") {
            return Err(ApiError::bad_request(
                "type: only aes256-gcm96 is offered by this server",
            ));
        }
        blocking(move || {
            let scope = scope(&s, &c2)?;
            // Vault: creating an existing key changes nothing.
            let info = match TRANSIT.find(&scope, &name)? {
                Some(i) => i,
                None => {
                    let ring = Ring(BTreeMap::from([(1, Ring::fresh()?)]));
                    let text = ring.text();
                    scope.create(
                        NewCredential::new(
                            TRANSIT_TYPE,
                            name.as_str(),
                            serde_json::json!({
                                KEYS_FIELD: text.as_str(),
                                "latest_version": 1,
                                "derived": b.derived,
                            }),
                        )
                        .environment(ENVIRONMENT),
                    )?
                }
            };
            Ok(key_info(&name, &info))
        })
        .await
    };
    answer(&c, run.await)
}

pub(crate) async fn read_key(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(raw): Path<String>,
) -> Response {
    let c2 = c.clone();
    let run = async move {
        c2.require(ApiScope::Read)?;
        let name = TRANSIT.name(&raw)?;
        TRANSIT.covered(&c2, &name)?;
        blocking(move || {
            let info = TRANSIT
                .find(&scope(&s, &c2)?, &name)?
                .ok_or_else(|| ApiError::not_found(""))?;
            Ok(key_info(&name, &info))
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
        blocking(move || TRANSIT.list(&s, &c2)).await
    };
    answer(&c, run.await)
}

/// Body of `POST transit/keys/NAME/config`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigBody {
    min_decryption_version: Option<u64>,
    min_encryption_version: Option<u64>,
    deletion_allowed: Option<bool>,
    #[allow(dead_code)]
    exportable: Option<bool>,
    #[allow(dead_code)]
    allow_plaintext_backup: Option<bool>,
    #[allow(dead_code)]
    auto_rotate_period: Option<serde_json::Value>,
}

/// Applies `change` to key `name`'s settings (and maybe versions), with the credential's
/// version as a check-and-set: two writers never lose one another's change.
fn change_key(
    s: &Shared,
    c: &Caller,
    name: &str,
    rotate: bool,
    cfg: &ConfigBody,
) -> Result<serde_json::Value, ApiError> {
    let scope = scope(s, c)?;
    let info = TRANSIT.find(&scope, name)?.ok_or_else(not_found)?;
    let mut st = Settings::of(&info);
    let mut fields = serde_json::Map::new();
    if rotate {
        let opened = open(s, c, name, "rotate")?;
        let mut ring = opened.ring;
        if st.latest >= MAX_VERSIONS {
            return Err(ApiError::bad_request(
                "the key has as many versions as it may",
            ));
        }
        st.latest += 1;
        ring.0.insert(st.latest, Ring::fresh()?);
        fields.insert(KEYS_FIELD.into(), ring.text().as_str().into());
        fields.insert("latest_version".into(), st.latest.into());
    }
    if let Some(v) = cfg.min_decryption_version {
        if v == 0 || v > st.latest {
            return Err(ApiError::bad_request(
                "min_decryption_version: between 1 and the latest version",
            ));
        }
        st.min_decrypt = v;
        fields.insert("min_decryption_version".into(), v.into());
    }
    if let Some(v) = cfg.min_encryption_version {
        if v > st.latest {
            return Err(ApiError::bad_request(
                "min_encryption_version: at most the latest version",
            ));
        }
        st.min_encrypt = v;
        fields.insert("min_encryption_version".into(), v.into());
    }
    if st.min_encrypt != 0 && st.min_encrypt < st.min_decrypt {
        return Err(ApiError::bad_request(
            "min_encryption_version must be 0 or at least min_decryption_version",
        ));
    }
    if let Some(d) = cfg.deletion_allowed {
        fields.insert("deletion_allowed".into(), d.into());
    }
    let info = if fields.is_empty() {
        info
    } else {
        scope
            .update(
                &info.id,
                CredentialUpdate::new()
                    .fields(serde_json::Value::Object(fields))
                    .expect_version(info.version),
            )
            .map_err(|e| match e {
                StoreError::VersionConflict { .. } => ApiError::new(
                    StatusCode::CONFLICT,
                    "busy",
                    "the key changed during this request; retry",
                ),
                e => e.into(),
            })?
    };
    Ok(key_info(name, &info))
}

pub(crate) async fn configure(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(raw): Path<String>,
    body: Result<Json<ConfigBody>, JsonRejection>,
) -> Response {
    let c2 = c.clone();
    let run = async move {
        c2.require(ApiScope::Write)?;
        let name = TRANSIT.name(&raw)?;
        TRANSIT.covered(&c2, &name)?;
        let b = json_body(body)?;
        blocking(move || change_key(&s, &c2, &name, false, &b)).await
    };
    answer(&c, run.await)
}

pub(crate) async fn rotate(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(raw): Path<String>,
) -> Response {
    let c2 = c.clone();
    let run = async move {
        c2.require(ApiScope::Write)?;
        let name = TRANSIT.name(&raw)?;
        TRANSIT.covered(&c2, &name)?;
        blocking(move || change_key(&s, &c2, &name, true, &ConfigBody::default())).await
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
        let name = TRANSIT.name(&raw)?;
        TRANSIT.covered(&c, &name)?;
        let c2 = c.clone();
        blocking(move || {
            let scope = scope(&s, &c2)?;
            let info = TRANSIT.find(&scope, &name)?.ok_or_else(not_found)?;
            if !Settings::of(&info).deletion_allowed {
                return Err(ApiError::bad_request(
                    "deletion is not allowed for this key",
                ));
            }
            scope.delete(&info.id, Some(info.version))?;
            Ok(())
        })
        .await
    };
    crate::vault_api::done(run.await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_reads_back_as_written() {
        let ring = Ring(BTreeMap::from([
            (1, Ring::fresh().unwrap()),
            (2, Ring::fresh().unwrap()),
        ]));
        let back = Ring::parse(&ring.text()).unwrap();
        assert_eq!(back.0.len(), 2);
        for v in [1, 2] {
            assert_eq!(back.0[&v].id(), ring.0[&v].id());
            assert_eq!(back.0[&v].expose_secret(), ring.0[&v].expose_secret());
        }
        for bad in [
            "",
            "{}x",
            r#"{"x": "a:b"}"#,
            r#"{"1": "nocolon"}"#,
            r#"{"1": "zz:AAAA"}"#,
        ] {
            assert!(Ring::parse(bad).is_err(), "{bad}");
        }
    }
}
