//! The master-key joint: where key providers (local keyring, HSM, cloud KMS) plug in.
//!
//! A [`MasterKey`] wraps a [`DataKey`] under an [`EncryptionContext`] into a [`WrappedKey`]
//! and unwraps it back. The trait is synchronous on purpose
//! (`docs/decisions/0001-sync-master-key-trait.md`).
//!
//! Wrapped key format v1 (frozen, `docs/formats.md`):
//!
//! ```text
//! offset  size  field
//! 0       1     version = 0x01
//! 1       1     provider id length p (1..=64)
//! 2       p     provider id (ASCII, e.g. "local")
//! 2+p     4     master key version (u32 BE)
//! 6+p     16    data key id
//! 22+p    2     payload length q (u16 BE, 1..=4096)
//! 24+p    q     provider payload (for the local keyring: alg ‖ nonce ‖ ciphertext ‖ tag)
//! ```
//!
//! Everything before the payload is the public header; providers must authenticate it.

use core::fmt;

use crate::context::EncryptionContext;
use crate::error::{DecryptError, FormatError};
use crate::key::{DataKey, KeyId, KEY_ID_LEN};

/// The wrapped key format version this library writes.
pub const WRAPPED_KEY_VERSION: u8 = 1;
/// Longest provider id.
pub const MAX_PROVIDER_ID_LEN: usize = 64;
/// Longest provider payload.
pub const MAX_WRAP_PAYLOAD_LEN: usize = 4096;
/// Longest wrapped key the parser accepts.
pub const MAX_WRAPPED_KEY_LEN: usize =
    2 + MAX_PROVIDER_ID_LEN + 4 + KEY_ID_LEN + 2 + MAX_WRAP_PAYLOAD_LEN;

/// Names the master key that wrapped a data key: the provider and the key version.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct MasterKeyRef {
    /// Provider id, e.g. `local`.
    pub provider: String,
    /// Master key version within the provider.
    pub version: u32,
}

impl fmt::Display for MasterKeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/v{}", self.provider, self.version)
    }
}

/// A data key wrapped by a master key: safe to store anywhere.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey {
    bytes: Vec<u8>,
    master: MasterKeyRef,
    data_key_id: KeyId,
    payload_start: usize,
}

impl WrappedKey {
    /// The header bytes a wrapped key with these parts will have, so a provider can
    /// authenticate them before it has produced the payload.
    pub fn header_for(
        master: &MasterKeyRef,
        data_key_id: KeyId,
        payload_len: usize,
    ) -> Result<Vec<u8>, FormatError> {
        let pid = master.provider.as_bytes();
        check_provider_id(pid)?;
        if payload_len == 0 || payload_len > MAX_WRAP_PAYLOAD_LEN {
            return Err(FormatError::Malformed {
                what: "wrapped key",
                reason: "payload must be 1..=4096 bytes",
            });
        }
        let mut bytes = Vec::with_capacity(2 + pid.len() + 4 + KEY_ID_LEN + 2 + payload_len);
        bytes.push(WRAPPED_KEY_VERSION);
        bytes.push(pid.len() as u8);
        bytes.extend_from_slice(pid);
        bytes.extend_from_slice(&master.version.to_be_bytes());
        bytes.extend_from_slice(data_key_id.as_bytes());
        bytes.extend_from_slice(&(payload_len as u16).to_be_bytes());
        Ok(bytes)
    }

    /// The header without its last field (the payload length), for a provider whose payload
    /// length is only known after the provider answered (a KMS ciphertext blob). Binding this
    /// prefix binds everything but the length, which [`parse`](Self::parse) checks against
    /// the bytes present.
    pub fn header_prefix_for(
        master: &MasterKeyRef,
        data_key_id: KeyId,
    ) -> Result<Vec<u8>, FormatError> {
        let mut h = Self::header_for(master, data_key_id, 1)?;
        h.truncate(h.len() - 2);
        Ok(h)
    }

    /// Builds a wrapped key from its parts (for providers).
    pub fn from_parts(
        master: MasterKeyRef,
        data_key_id: KeyId,
        payload: &[u8],
    ) -> Result<Self, FormatError> {
        let mut bytes = Self::header_for(&master, data_key_id, payload.len())?;
        let payload_start = bytes.len();
        bytes.extend_from_slice(payload);
        Ok(Self {
            bytes,
            master,
            data_key_id,
            payload_start,
        })
    }

    /// Parses a stored wrapped key. Checks structure and limits only; no cryptography.
    pub fn parse(bytes: &[u8]) -> Result<Self, FormatError> {
        const WHAT: &str = "wrapped key";
        let malformed = |reason| FormatError::Malformed { what: WHAT, reason };
        if bytes.len() > MAX_WRAPPED_KEY_LEN {
            return Err(FormatError::TooLong {
                what: WHAT,
                len: bytes.len(),
                max: MAX_WRAPPED_KEY_LEN,
            });
        }
        let min = 2 + 1 + 4 + KEY_ID_LEN + 2 + 1;
        if bytes.len() < min {
            return Err(FormatError::TooShort {
                what: WHAT,
                len: bytes.len(),
                min,
            });
        }
        if bytes[0] != WRAPPED_KEY_VERSION {
            return Err(FormatError::UnsupportedVersion {
                what: WHAT,
                version: bytes[0],
            });
        }
        let p = bytes[1] as usize;
        let rest = &bytes[2..];
        if rest.len() < p + 4 + KEY_ID_LEN + 2 {
            return Err(malformed("truncated header"));
        }
        let (pid, rest) = rest.split_at(p);
        check_provider_id(pid)?;
        let (ver, rest) = rest.split_at(4);
        let (kid, rest) = rest.split_at(KEY_ID_LEN);
        let (qlen, payload) = rest.split_at(2);
        let q = u16::from_be_bytes([qlen[0], qlen[1]]) as usize;
        if q == 0 || q > MAX_WRAP_PAYLOAD_LEN {
            return Err(malformed("payload length must be 1..=4096"));
        }
        if payload.len() != q {
            return Err(malformed("payload length does not match the bytes present"));
        }
        let provider =
            core::str::from_utf8(pid).map_err(|_| malformed("provider id is not ASCII"))?;
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(kid);
        Ok(Self {
            master: MasterKeyRef {
                provider: provider.to_owned(),
                version: u32::from_be_bytes([ver[0], ver[1], ver[2], ver[3]]),
            },
            data_key_id: KeyId::from_bytes(id),
            payload_start: bytes.len() - q,
            bytes: bytes.to_vec(),
        })
    }

    /// The encoded bytes, to store.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Which master key (provider and version) wrapped it.
    pub fn master_key(&self) -> &MasterKeyRef {
        &self.master
    }

    /// The id of the data key inside.
    pub fn data_key_id(&self) -> KeyId {
        self.data_key_id
    }

    /// The public header (everything before the payload), which providers authenticate.
    pub fn header(&self) -> &[u8] {
        &self.bytes[..self.payload_start]
    }

    /// The header without the payload length (see [`header_prefix_for`](Self::header_prefix_for)).
    pub fn header_prefix(&self) -> &[u8] {
        &self.bytes[..self.payload_start - 2]
    }

    /// The provider-specific payload.
    pub fn payload(&self) -> &[u8] {
        &self.bytes[self.payload_start..]
    }
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedKey")
            .field("master", &self.master)
            .field("data_key_id", &self.data_key_id)
            .field("len", &self.bytes.len())
            .finish()
    }
}

fn check_provider_id(pid: &[u8]) -> Result<(), FormatError> {
    if pid.is_empty()
        || pid.len() > MAX_PROVIDER_ID_LEN
        || !pid.iter().all(|b| b.is_ascii_graphic())
    {
        return Err(FormatError::Malformed {
            what: "wrapped key",
            reason: "provider id must be 1..=64 printable ASCII bytes",
        });
    }
    Ok(())
}

/// Why a master-key provider could not wrap or unwrap.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The provider cannot be reached or used right now (HSM offline, KMS unreachable, key
    /// file unreadable). Callers must fail closed.
    #[error("master key provider {provider:?} unavailable: {reason}")]
    Unavailable {
        /// Provider id.
        provider: String,
        /// Why (no secret material).
        reason: String,
    },
    /// The provider refused this caller: wrong PIN, a KMS key policy or IAM denial, a
    /// disabled key. Distinct from [`Unavailable`](Self::Unavailable): retrying will not help.
    #[error("master key provider {provider:?} denied access: {reason}")]
    Denied {
        /// Provider id.
        provider: String,
        /// Why (no secret material).
        reason: String,
    },
    /// The wrapped key names a provider other than this one.
    #[error("wrapped key belongs to provider {found:?}, not {expected:?}")]
    WrongProvider {
        /// This provider's id.
        expected: String,
        /// The id in the wrapped key.
        found: String,
    },
    /// The wrapped key names a master key version this provider does not hold (never had it,
    /// or it was retired).
    #[error("master key {0} is not available in this provider")]
    UnknownVersion(MasterKeyRef),
    /// The wrapped key's bytes are malformed.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// Unwrapping failed: wrong context, tampered bytes. Opaque by design.
    #[error("could not unwrap the data key")]
    Unwrap(#[from] DecryptError),
}

/// A master key (KEK) provider: the one joint where a local keyring, a PKCS#11 HSM or a
/// cloud KMS plugs in. Implementations must pass `credvault_test::master_key_conformance`.
///
/// Contract:
/// - `wrap` uses the active version and authenticates the wrapped key's header and `ctx`;
/// - `unwrap` succeeds only with the same `ctx` and returns a key with the same [`KeyId`];
/// - crypto failures are [`ProviderError::Unwrap`] (opaque), outages are
///   [`ProviderError::Unavailable`].
pub trait MasterKey: Send + Sync {
    /// Provider id written into every wrapped key (printable ASCII, 1..=64 bytes).
    fn provider_id(&self) -> &str;

    /// The version that [`wrap`](Self::wrap) uses now.
    fn active_version(&self) -> Result<u32, ProviderError>;

    /// Wraps `key` under the active master key version, bound to `ctx`.
    fn wrap(&self, key: &DataKey, ctx: &EncryptionContext) -> Result<WrappedKey, ProviderError>;

    /// Unwraps a data key wrapped under `ctx`.
    fn unwrap(
        &self,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
    ) -> Result<DataKey, ProviderError>;

    /// Generates a new data key and wraps it under the active version, bound to `ctx`. The
    /// default draws the key from the OS generator and calls [`wrap`](Self::wrap); a KMS
    /// with its own data-key generation (AWS `GenerateDataKey`) overrides it.
    fn generate(&self, ctx: &EncryptionContext) -> Result<(DataKey, WrappedKey), ProviderError> {
        let key = DataKey::generate().map_err(|e| ProviderError::Unavailable {
            provider: self.provider_id().to_owned(),
            reason: e.to_string(),
        })?;
        let wrapped = self.wrap(&key, ctx)?;
        Ok((key, wrapped))
    }

    /// Re-wraps under the active version. The data key never leaves the library (and, for a
    /// KMS offering re-encryption, need not leave the provider: override this).
    fn rewrap(
        &self,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
    ) -> Result<WrappedKey, ProviderError> {
        let key = self.unwrap(wrapped, ctx)?;
        self.wrap(&key, ctx)
    }
}

/// True when `wrapped` was not made by `provider`'s active version, so a master-key rotation
/// job should [`rewrap`](MasterKey::rewrap) it.
pub fn needs_rewrap(provider: &dyn MasterKey, wrapped: &WrappedKey) -> Result<bool, ProviderError> {
    let m = wrapped.master_key();
    Ok(m.provider != provider.provider_id() || m.version != provider.active_version()?)
}

/// Generates a new data key and wraps it: what a store does when it creates a tenant.
/// (The provider's [`MasterKey::generate`]: a KMS may generate it.)
pub fn generate_data_key(
    provider: &dyn MasterKey,
    ctx: &EncryptionContext,
) -> Result<(DataKey, WrappedKey), ProviderError> {
    provider.generate(ctx)
}
