//! A master key in AWS KMS, through the official SDK (`aws-sdk-kms`, `aws-config`).
//!
//! - Credentials, region and endpoint come from the SDK's usual chain: environment,
//!   profiles and SSO, web identity (Kubernetes service accounts), IMDS; `AWS_REGION`,
//!   `AWS_ENDPOINT_URL_KMS`. HTTPS is rustls with ring (no aws-lc).
//! - Wrap is `Encrypt`, unwrap `Decrypt`, rewrap `ReEncrypt` (the data key never leaves KMS),
//!   new tenant keys come from `GenerateDataKey`. KMS checks the binding: the KMS encryption
//!   context is `{"credvault-aad-sha256": hex(SHA-256(header prefix ‖ context))}`, where the
//!   header prefix is the wrapped key's header without its payload length (unknown before
//!   KMS answers; [`WrappedKey::parse`] checks it against the bytes present).
//! - The payload is `alg (0x02) ‖ KMS ciphertext blob`. The provider id is
//!   `aws-kms:KEY-ID` (the key's id, resolved from an alias at open), version 1: KMS rotates
//!   a key's backing material itself, and moving to another key (or an alias to another key)
//!   is a provider change that `ReEncrypt` carries out. A provider unwraps keys wrapped under
//!   any `aws-kms:` key its credentials may use.
//! - Every call has a timeout (2 s connect, 5 s per attempt, 15 s in all) and at most three
//!   attempts with exponential backoff. Errors separate an unreachable KMS
//!   ([`ProviderError::Unavailable`]) from a refusal ([`ProviderError::Denied`]: access denied,
//!   disabled key, bad credentials) from a wrong context or tampered blob
//!   ([`ProviderError::Unwrap`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use credvault_envelope::{
    DataKey, DecryptError, EncryptionContext, FormatError, KeyId, MasterKey, MasterKeyRef,
    ProviderError, WrappedKey, DATA_KEY_LEN,
};
use zeroize::Zeroizing;

use crate::KmsError;

/// Provider ids of this provider start with this.
pub const PROVIDER_PREFIX: &str = "aws-kms:";
/// The one KMS encryption-context entry this provider writes.
pub const CONTEXT_KEY: &str = "credvault-aad-sha256";
const ALG_KMS_BLOB: u8 = 2;

/// Timeouts and retries for every KMS call.
#[derive(Clone, Debug)]
pub struct AwsKmsOptions {
    /// Connecting to KMS.
    pub connect_timeout: Duration,
    /// One attempt of a call.
    pub attempt_timeout: Duration,
    /// A call with all its attempts.
    pub operation_timeout: Duration,
    /// Attempts per call (1 = no retry).
    pub max_attempts: u32,
    /// Overrides the SDK's endpoint (`AWS_ENDPOINT_URL_KMS`): a VPC endpoint, a test server.
    pub endpoint_url: Option<String>,
    /// Overrides the SDK's region (`AWS_REGION`, the profile's).
    pub region: Option<String>,
    /// Static credentials instead of the SDK's chain: for tests and tools; production should
    /// leave this `None` and use the chain (profiles, SSO, web identity, IMDS).
    pub static_credentials: Option<StaticCredentials>,
}

/// An access key id and secret, used instead of the SDK's credential chain.
#[derive(Clone)]
pub struct StaticCredentials {
    /// The access key id (not secret).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: Zeroizing<String>,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"[redacted]")
            .finish()
    }
}

impl Default for AwsKmsOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(15),
            max_attempts: 3,
            endpoint_url: None,
            region: None,
            static_credentials: None,
        }
    }
}

/// A master key in AWS KMS. See the [module docs](self).
pub struct AwsKmsMasterKey {
    id: String,
    arn: String,
    client: aws_sdk_kms::Client,
    /// `Some` until dropped (see `Drop`).
    rt: Option<tokio::runtime::Runtime>,
}

fn unavailable(provider: &str, reason: String) -> ProviderError {
    ProviderError::Unavailable {
        provider: provider.to_owned(),
        reason,
    }
}

/// Maps an SDK error to the provider's kinds. Messages carry codes and the SDK's text,
/// which never holds key material.
fn map_err<E>(provider: &str, op: &str, e: SdkError<E>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match &e {
        SdkError::ServiceError(ctx) => {
            let code = ctx.err().code().unwrap_or("unknown");
            match code {
                "InvalidCiphertextException" | "IncorrectKeyException" => {
                    ProviderError::Unwrap(DecryptError)
                }
                "AccessDeniedException"
                | "AccessDenied"
                | "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "IncompleteSignature"
                | "ExpiredTokenException"
                | "DisabledException"
                | "KMSInvalidStateException"
                | "NotFoundException"
                | "InvalidKeyUsageException" => ProviderError::Denied {
                    provider: provider.to_owned(),
                    reason: format!("{op}: {code}"),
                },
                // A refusal the SDK could not parse (a proxy's or moto's XML 403).
                _ if matches!(ctx.raw().status().as_u16(), 401 | 403) => ProviderError::Denied {
                    provider: provider.to_owned(),
                    reason: format!("{op}: HTTP {}", ctx.raw().status().as_u16()),
                },
                _ => unavailable(provider, format!("{op}: {code}")),
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => unavailable(
            provider,
            format!("{op}: KMS unreachable ({})", DisplayErrorContext(&e)),
        ),
        _ => unavailable(provider, format!("{op}: {}", DisplayErrorContext(&e))),
    }
}

/// The KMS encryption context binding `header_prefix` and `ctx`.
fn kms_context(header_prefix: &[u8], ctx: &EncryptionContext) -> HashMap<String, String> {
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    h.update(&(header_prefix.len() as u32).to_be_bytes());
    h.update(header_prefix);
    h.update(ctx.canonical_bytes());
    HashMap::from([(CONTEXT_KEY.to_owned(), hex::encode(h.finish().as_ref()))])
}

impl AwsKmsMasterKey {
    /// Resolves `key` (key id, ARN, `alias/NAME`) with `DescribeKey` and checks it is an
    /// enabled symmetric encryption key.
    ///
    /// # Errors
    /// [`KmsError::Provider`]: [`ProviderError::Unavailable`] (KMS unreachable, no region),
    /// [`ProviderError::Denied`] (no access, key disabled or not found).
    pub fn open(key: &str, options: &AwsKmsOptions) -> Result<Self, KmsError> {
        let probe_id = format!("{PROVIDER_PREFIX}{key}");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("credvault-aws-kms")
            .enable_all()
            .build()
            .map_err(|e| {
                unavailable(
                    &probe_id,
                    format!("cannot start the KMS client's runtime: {e}"),
                )
            })?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(options.connect_timeout)
            .operation_attempt_timeout(options.attempt_timeout)
            .operation_timeout(options.operation_timeout)
            .build();
        let retry = RetryConfig::standard().with_max_attempts(options.max_attempts.max(1));
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(timeouts)
            .retry_config(retry);
        if let Some(url) = &options.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(region) = &options.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(c) = &options.static_credentials {
            loader = loader.credentials_provider(aws_sdk_kms::config::Credentials::new(
                c.access_key_id.clone(),
                c.secret_access_key.as_str().to_owned(),
                None,
                None,
                "credvault-static",
            ));
        }
        let config = rt.block_on(loader.load());
        if config.region().is_none() {
            return Err(KmsError::Provider(unavailable(
                &probe_id,
                "no AWS region: set AWS_REGION or a profile's region".to_owned(),
            )));
        }
        let client = aws_sdk_kms::Client::new(&config);
        let described = rt
            .block_on(client.describe_key().key_id(key).send())
            .map_err(|e| map_err(&probe_id, "DescribeKey", e))?;
        let meta = described.key_metadata().ok_or_else(|| {
            unavailable(&probe_id, "DescribeKey returned no key metadata".to_owned())
        })?;
        if !meta.enabled() {
            return Err(KmsError::Provider(ProviderError::Denied {
                provider: probe_id,
                reason: "the KMS key is disabled".to_owned(),
            }));
        }
        let key_id = meta.key_id();
        let id = format!("{PROVIDER_PREFIX}{key_id}");
        let arn = meta.arn().unwrap_or(key_id).to_owned();
        if id.len() > credvault_envelope::MAX_PROVIDER_ID_LEN {
            return Err(KmsError::Provider(unavailable(
                &probe_id,
                "the KMS key id is longer than a provider id may be".to_owned(),
            )));
        }
        Ok(Self {
            id,
            arn,
            client,
            rt: Some(rt),
        })
    }

    /// The key's ARN, as `DescribeKey` gave it.
    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// Runs a call on this provider's runtime and waits for it, from any thread (also from
    /// inside another async runtime, where `block_on` would panic).
    fn run<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T, ProviderError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| unavailable(&self.id, "the KMS client is shut down".to_owned()))?;
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| unavailable(&self.id, "the KMS call was dropped".to_owned()))
    }

    fn mref(&self) -> MasterKeyRef {
        MasterKeyRef {
            provider: self.id.clone(),
            version: 1,
        }
    }

    fn payload(&self, blob: Option<&Blob>) -> Result<Vec<u8>, ProviderError> {
        let blob =
            blob.ok_or_else(|| unavailable(&self.id, "KMS returned no ciphertext".to_owned()))?;
        let mut payload = Vec::with_capacity(1 + blob.as_ref().len());
        payload.push(ALG_KMS_BLOB);
        payload.extend_from_slice(blob.as_ref());
        Ok(payload)
    }

    fn blob_of<'w>(&self, wrapped: &'w WrappedKey) -> Result<(&'w str, &'w [u8]), ProviderError> {
        let m = wrapped.master_key();
        let Some(key_id) = m.provider.strip_prefix(PROVIDER_PREFIX) else {
            return Err(ProviderError::WrongProvider {
                expected: self.id.clone(),
                found: m.provider.clone(),
            });
        };
        if m.version != 1 {
            return Err(ProviderError::UnknownVersion(m.clone()));
        }
        let p = wrapped.payload();
        match p.split_first() {
            Some((&ALG_KMS_BLOB, blob)) if !blob.is_empty() => Ok((key_id, blob)),
            Some((&ALG_KMS_BLOB, _)) | None => Err(FormatError::Malformed {
                what: "wrapped key",
                reason: "AWS KMS payload holds no ciphertext",
            }
            .into()),
            Some((&suite, _)) => Err(FormatError::UnknownSuite {
                what: "wrapped key",
                suite,
            }
            .into()),
        }
    }
}

impl MasterKey for AwsKmsMasterKey {
    fn provider_id(&self) -> &str {
        &self.id
    }

    fn active_version(&self) -> Result<u32, ProviderError> {
        Ok(1)
    }

    fn wrap(&self, key: &DataKey, ctx: &EncryptionContext) -> Result<WrappedKey, ProviderError> {
        let master = self.mref();
        let prefix = WrappedKey::header_prefix_for(&master, key.id())?;
        let call = self
            .client
            .encrypt()
            .key_id(&self.arn)
            .plaintext(Blob::new(key.expose_secret().to_vec()))
            .set_encryption_context(Some(kms_context(&prefix, ctx)))
            .send();
        let out = self
            .run(call)?
            .map_err(|e| map_err(&self.id, "Encrypt", e))?;
        let payload = self.payload(out.ciphertext_blob())?;
        Ok(WrappedKey::from_parts(master, key.id(), &payload)?)
    }

    fn generate(&self, ctx: &EncryptionContext) -> Result<(DataKey, WrappedKey), ProviderError> {
        let id = KeyId::generate().map_err(|e| unavailable(&self.id, e.to_string()))?;
        let master = self.mref();
        let prefix = WrappedKey::header_prefix_for(&master, id)?;
        let call = self
            .client
            .generate_data_key()
            .key_id(&self.arn)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(kms_context(&prefix, ctx)))
            .send();
        let out = self
            .run(call)?
            .map_err(|e| map_err(&self.id, "GenerateDataKey", e))?;
        let payload = self.payload(out.ciphertext_blob())?;
        let plain = out
            .plaintext()
            .ok_or_else(|| unavailable(&self.id, "GenerateDataKey returned no key".to_owned()))?;
        let bytes = Zeroizing::new(plain.as_ref().to_vec());
        if bytes.len() != DATA_KEY_LEN {
            return Err(unavailable(
                &self.id,
                "GenerateDataKey returned a key of the wrong length".to_owned(),
            ));
        }
        let key =
            DataKey::from_slice(id, &bytes).map_err(|e| unavailable(&self.id, e.to_string()))?;
        Ok((key, WrappedKey::from_parts(master, id, &payload)?))
    }

    fn unwrap(
        &self,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
    ) -> Result<DataKey, ProviderError> {
        let (key_id, blob) = self.blob_of(wrapped)?;
        let call = self
            .client
            .decrypt()
            .key_id(key_id)
            .ciphertext_blob(Blob::new(blob.to_vec()))
            .set_encryption_context(Some(kms_context(wrapped.header_prefix(), ctx)))
            .send();
        let out = self
            .run(call)?
            .map_err(|e| map_err(&self.id, "Decrypt", e))?;
        let plain = Zeroizing::new(
            out.plaintext()
                .map(|b| b.as_ref().to_vec())
                .unwrap_or_default(),
        );
        DataKey::from_slice(wrapped.data_key_id(), &plain)
            .map_err(|_| ProviderError::Unwrap(DecryptError))
    }

    fn rewrap(
        &self,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
    ) -> Result<WrappedKey, ProviderError> {
        let (key_id, blob) = self.blob_of(wrapped)?;
        let master = self.mref();
        let prefix = WrappedKey::header_prefix_for(&master, wrapped.data_key_id())?;
        let call = self
            .client
            .re_encrypt()
            .ciphertext_blob(Blob::new(blob.to_vec()))
            .source_key_id(key_id)
            .set_source_encryption_context(Some(kms_context(wrapped.header_prefix(), ctx)))
            .destination_key_id(&self.arn)
            .set_destination_encryption_context(Some(kms_context(&prefix, ctx)))
            .send();
        let out = self
            .run(call)?
            .map_err(|e| map_err(&self.id, "ReEncrypt", e))?;
        let payload = self.payload(out.ciphertext_blob())?;
        Ok(WrappedKey::from_parts(
            master,
            wrapped.data_key_id(),
            &payload,
        )?)
    }
}

impl Drop for AwsKmsMasterKey {
    fn drop(&mut self) {
        // Dropping a runtime from inside another one panics; this never waits.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for AwsKmsMasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKmsMasterKey")
            .field("id", &self.id)
            .field("arn", &self.arn)
            .finish_non_exhaustive()
    }
}

/// Shared handle, as the store takes providers.
pub fn shared(key: AwsKmsMasterKey) -> Arc<dyn MasterKey> {
    Arc::new(key)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The KMS encryption context, frozen by `tests/data/kms_v1.json` (Python's hashlib,
    /// written from docs/formats.md).
    #[test]
    fn the_kms_context_matches_the_frozen_vector() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../tests/data/kms_v1.json")).unwrap();
        let v = &v["aws_kms_context_v1"];
        let hex = |k: &str| hex::decode(v[k].as_str().unwrap()).unwrap();
        let mut id = [0u8; 16];
        id.copy_from_slice(&hex("key_id"));
        let master = MasterKeyRef {
            provider: v["provider"].as_str().unwrap().to_owned(),
            version: 1,
        };
        let prefix = WrappedKey::header_prefix_for(&master, KeyId::from_bytes(id)).unwrap();
        assert_eq!(prefix, hex("header_prefix"));
        let mut ctx = EncryptionContext::new();
        ctx.insert("tenant", "acme").unwrap();
        ctx.insert("purpose", "vector").unwrap();
        assert_eq!(ctx.canonical_bytes(), &hex("context")[..]);
        let got = kms_context(&prefix, &ctx);
        let want: HashMap<String, String> =
            serde_json::from_value(v["kms_context"].clone()).unwrap();
        assert_eq!(got, want);
    }
}
