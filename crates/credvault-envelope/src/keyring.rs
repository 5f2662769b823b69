//! The local master key: a versioned keyring of 256-bit keys held by this process.
//!
//! One version is active and wraps; older versions only unwrap, until retired. Wrapping is
//! AES-256-GCM (not RFC 3394 key wrap; `docs/decisions/0004-local-wrap-aes-gcm.md`): the
//! context is bound as associated data, which key wrap cannot do.
//!
//! Key text (what the key file and the environment variable hold), whitespace separated:
//!
//! ```text
//! credvault-keyring-v1 active=2 1:<base64 32 bytes> 2:<base64 32 bytes>
//! ```
//!
//! A single bare base64 key is also accepted and becomes version 1.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use zeroize::Zeroizing;

use crate::aead::{AeadKey, Backend, NONCE_LEN, TAG_LEN};
use crate::context::EncryptionContext;
use crate::error::{DecryptError, FormatError, RandomError};
use crate::key::{DataKey, DATA_KEY_LEN};
use crate::master::{MasterKey, MasterKeyRef, ProviderError, WrappedKey};
use crate::nonce;

/// Provider id the local keyring writes into wrapped keys.
pub const LOCAL_PROVIDER_ID: &str = "local";
/// First token of the key text.
pub const KEY_TEXT_MAGIC: &str = "credvault-keyring-v1";
/// Most versions one keyring holds.
pub const MAX_VERSIONS: usize = 1024;
/// Largest key file or variable accepted, in bytes.
pub const MAX_KEY_TEXT_LEN: usize = 64 * 1024;

/// Payload algorithm id: AES-256-GCM, random nonce.
const WRAP_ALG_AES256GCM: u8 = 1;
const PAYLOAD_LEN: usize = 1 + NONCE_LEN + DATA_KEY_LEN + TAG_LEN;

/// Why a keyring could not be loaded, saved or changed. Never contains key material.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The key text is malformed.
    #[error("keyring: {reason}")]
    Parse {
        /// What is wrong (never the text itself).
        reason: &'static str,
    },
    /// The environment variable is missing or not UTF-8.
    #[error("keyring: environment variable {var} is not set or not valid UTF-8")]
    EnvNotSet {
        /// The variable's name.
        var: String,
    },
    /// The key file could not be read or written.
    #[error("keyring file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file can be read by its group or by others.
    #[error("keyring file {path} is accessible by group or others (mode {mode:04o}); run `chmod 600` on it")]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// No such version in the keyring.
    #[error("keyring: version {0} does not exist")]
    UnknownVersion(u32),
    /// The active version cannot be retired.
    #[error("keyring: version {0} is active; rotate before retiring it")]
    RetireActive(u32),
    /// The caller reported data keys still wrapped under the version.
    #[error("keyring: version {version} still wraps {references} data key(s); rewrap them first")]
    StillReferenced {
        /// The version.
        version: u32,
        /// How many data keys the caller reported.
        references: u64,
    },
    /// The keyring is full or version numbers ran out.
    #[error("keyring: no room for another version (limit {MAX_VERSIONS})")]
    Full,
    /// The OS random generator failed.
    #[error(transparent)]
    Random(#[from] RandomError),
}

struct Version {
    bytes: Zeroizing<[u8; DATA_KEY_LEN]>,
    aead: AeadKey,
}

/// A versioned local master key: 256-bit keys held by this process. One version is active
/// and wraps; older versions only unwrap, until retired. Wrapping is AES-256-GCM with the
/// context bound as associated data (not RFC 3394 key wrap, which cannot bind it; decision
/// 0004).
///
/// **Key text** (what a key file and the `CREDVAULT_MASTER_KEY` variable hold), whitespace
/// separated; a single bare base64 key is also accepted and becomes version 1:
///
/// ```text
/// credvault-keyring-v1 active=2 1:<base64 32 bytes> 2:<base64 32 bytes>
/// ```
///
/// ```
/// use credvault_envelope::{generate_data_key, EncryptionContext, LocalKeyring, MasterKey};
/// let mut keyring = LocalKeyring::generate()?;
/// let ctx = EncryptionContext::new().with("tenant", "acme")?;
/// let (dek, wrapped) = generate_data_key(&keyring, &ctx)?;
/// keyring.rotate()?; // version 2 wraps from now on; version 1 still unwraps
/// let again = keyring.unwrap(&wrapped, &ctx)?;
/// assert_eq!(again.id(), dek.id());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct LocalKeyring {
    versions: BTreeMap<u32, Version>,
    active: u32,
    backend: Backend,
}

impl LocalKeyring {
    /// A new keyring with one random version (1), active.
    pub fn generate() -> Result<Self, KeyringError> {
        let mut k = Self {
            versions: BTreeMap::new(),
            active: 0,
            backend: Backend::default(),
        };
        k.rotate()?;
        Ok(k)
    }

    /// Parses key text (see the module docs).
    pub fn from_secret_text(text: &str) -> Result<Self, KeyringError> {
        if text.len() > MAX_KEY_TEXT_LEN {
            return Err(KeyringError::Parse {
                reason: "key text exceeds 64 KiB",
            });
        }
        let mut tokens = text.split_whitespace();
        let first = tokens.next().ok_or(KeyringError::Parse {
            reason: "key text is empty",
        })?;
        let mut versions = BTreeMap::new();
        let active;
        if first == KEY_TEXT_MAGIC {
            let act = tokens
                .next()
                .and_then(|t| t.strip_prefix("active="))
                .ok_or(KeyringError::Parse {
                    reason: "expected `active=N` after the header",
                })?;
            active = parse_version(act)?;
            for tok in tokens {
                let (v, b64) = tok.split_once(':').ok_or(KeyringError::Parse {
                    reason: "expected VERSION:BASE64 entries",
                })?;
                let v = parse_version(v)?;
                if versions.len() >= MAX_VERSIONS {
                    return Err(KeyringError::Full);
                }
                if versions.insert(v, decode_key(b64)?).is_some() {
                    return Err(KeyringError::Parse {
                        reason: "a version appears twice",
                    });
                }
            }
            if !versions.contains_key(&active) {
                return Err(KeyringError::Parse {
                    reason: "the active version has no key",
                });
            }
        } else {
            if tokens.next().is_some() {
                return Err(KeyringError::Parse {
                    reason: "expected a single base64 key or a `credvault-keyring-v1` keyring",
                });
            }
            versions.insert(1, decode_key(first)?);
            active = 1;
        }
        let backend = Backend::default();
        let versions = versions
            .into_iter()
            .map(|(v, bytes)| (v, Version::new(backend, bytes)))
            .collect();
        Ok(Self {
            versions,
            active,
            backend,
        })
    }

    /// Reads key text from an environment variable.
    pub fn from_env(var: &str) -> Result<Self, KeyringError> {
        let text = Zeroizing::new(std::env::var(var).map_err(|_| KeyringError::EnvNotSet {
            var: var.to_owned(),
        })?);
        Self::from_secret_text(&text)
    }

    /// Reads key text from a file, refusing one that its group or others can access.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, KeyringError> {
        let path = path.as_ref();
        let io = |source| KeyringError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        check_private(path, &meta)?;
        if meta.len() > MAX_KEY_TEXT_LEN as u64 {
            return Err(KeyringError::Parse {
                reason: "key file exceeds 64 KiB",
            });
        }
        let bytes = Zeroizing::new(std::fs::read(path).map_err(io)?);
        let text = core::str::from_utf8(&bytes).map_err(|_| KeyringError::Parse {
            reason: "key file is not UTF-8",
        })?;
        Self::from_secret_text(text)
    }

    /// The key text for this keyring. It contains every key: handle it like the keys.
    pub fn export_secret_text(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(format!("{KEY_TEXT_MAGIC} active={}\n", self.active));
        for (v, ver) in &self.versions {
            let b64 = Zeroizing::new(STANDARD.encode(ver.bytes.as_ref()));
            s.push_str(&format!("{v}:{}\n", b64.as_str()));
        }
        s
    }

    /// Writes the key text to `path` atomically, readable and writable by the owner only: an
    /// owner-only temporary file with an unpredictable name beside it (created `O_EXCL`, so a
    /// planted file or symlink is never written through, whatever the umask), fsync, rename,
    /// directory fsync.
    pub fn save_to_file(&self, path: impl AsRef<Path>) -> Result<(), KeyringError> {
        let path = path.as_ref();
        let io = |source| KeyringError::Io {
            path: path.to_owned(),
            source,
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut tmp = tempfile::Builder::new()
            .prefix(".key-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(io)?;
        let text = self.export_secret_text();
        tmp.write_all(text.as_bytes()).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(path).map_err(|e| io(e.error))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all(); // best effort: not every platform can fsync a directory
        }
        Ok(())
    }

    /// Adds a new random version and makes it active. Returns its number.
    pub fn rotate(&mut self) -> Result<u32, KeyringError> {
        if self.versions.len() >= MAX_VERSIONS {
            return Err(KeyringError::Full);
        }
        let next = self
            .versions
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .checked_add(1)
            .ok_or(KeyringError::Full)?;
        let mut bytes = Zeroizing::new([0u8; DATA_KEY_LEN]);
        getrandom::fill(bytes.as_mut()).map_err(|_| RandomError)?;
        self.versions
            .insert(next, Version::new(self.backend, bytes));
        self.active = next;
        Ok(next)
    }

    /// Removes an old version. The caller states how many data keys are still wrapped under
    /// it (a store counts its rows); anything but zero is refused, and so is the active
    /// version. Once retired, keys wrapped under it can never be unwrapped here.
    pub fn retire(&mut self, version: u32, still_referenced: u64) -> Result<(), KeyringError> {
        if !self.versions.contains_key(&version) {
            return Err(KeyringError::UnknownVersion(version));
        }
        if version == self.active {
            return Err(KeyringError::RetireActive(version));
        }
        if still_referenced != 0 {
            return Err(KeyringError::StillReferenced {
                version,
                references: still_referenced,
            });
        }
        self.versions.remove(&version);
        Ok(())
    }

    /// Version numbers held, oldest first.
    pub fn versions(&self) -> impl Iterator<Item = u32> + '_ {
        self.versions.keys().copied()
    }

    /// The active version.
    pub fn active(&self) -> u32 {
        self.active
    }

    /// Uses another AEAD backend for wrapping and unwrapping.
    pub fn with_backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        for v in self.versions.values_mut() {
            *v = Version::new(backend, Zeroizing::new(*v.bytes));
        }
        self
    }

    fn version(&self, v: u32) -> Result<&Version, ProviderError> {
        self.versions.get(&v).ok_or_else(|| {
            ProviderError::UnknownVersion(MasterKeyRef {
                provider: LOCAL_PROVIDER_ID.to_owned(),
                version: v,
            })
        })
    }
}

impl Version {
    fn new(backend: Backend, bytes: Zeroizing<[u8; DATA_KEY_LEN]>) -> Self {
        let aead = match AeadKey::new(backend, bytes.as_ref()) {
            Ok(a) => a,
            Err(_) => unreachable!("AES-256 is supported by every backend"),
        };
        Self { bytes, aead }
    }
}

fn parse_version(s: &str) -> Result<u32, KeyringError> {
    match s.parse::<u32>() {
        Ok(v) if v > 0 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(v),
        _ => Err(KeyringError::Parse {
            reason: "a version must be a positive decimal number",
        }),
    }
}

fn decode_key(b64: &str) -> Result<Zeroizing<[u8; DATA_KEY_LEN]>, KeyringError> {
    let bad = KeyringError::Parse {
        reason: "a key must be 32 bytes in standard base64",
    };
    if b64.len() > 64 {
        return Err(bad);
    }
    let raw = Zeroizing::new(STANDARD.decode(b64).map_err(|_| KeyringError::Parse {
        reason: "a key must be 32 bytes in standard base64",
    })?);
    let mut out = Zeroizing::new([0u8; DATA_KEY_LEN]);
    if raw.len() != DATA_KEY_LEN {
        return Err(bad);
    }
    out.copy_from_slice(&raw);
    Ok(out)
}

#[cfg(unix)]
fn check_private(path: &Path, meta: &std::fs::Metadata) -> Result<(), KeyringError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyringError::InsecurePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _meta: &std::fs::Metadata) -> Result<(), KeyringError> {
    Ok(())
}

impl MasterKey for LocalKeyring {
    fn provider_id(&self) -> &str {
        LOCAL_PROVIDER_ID
    }

    fn active_version(&self) -> Result<u32, ProviderError> {
        Ok(self.active)
    }

    fn wrap(&self, key: &DataKey, ctx: &EncryptionContext) -> Result<WrappedKey, ProviderError> {
        let master = MasterKeyRef {
            provider: LOCAL_PROVIDER_ID.to_owned(),
            version: self.active,
        };
        let ver = self.version(self.active)?;
        let mut aad = WrappedKey::header_for(&master, key.id(), PAYLOAD_LEN)?;
        aad.extend_from_slice(ctx.canonical_bytes());
        let mut nonce = [0u8; NONCE_LEN];
        nonce::fill(&mut nonce).map_err(|e| ProviderError::Unavailable {
            provider: LOCAL_PROVIDER_ID.to_owned(),
            reason: e.to_string(),
        })?;
        let mut payload = [0u8; PAYLOAD_LEN];
        payload[0] = WRAP_ALG_AES256GCM;
        payload[1..1 + NONCE_LEN].copy_from_slice(&nonce);
        let body = &mut payload[1 + NONCE_LEN..1 + NONCE_LEN + DATA_KEY_LEN];
        body.copy_from_slice(key.expose_secret());
        let tag = ver.aead.seal_in_place(&nonce, &aad, body)?;
        payload[1 + NONCE_LEN + DATA_KEY_LEN..].copy_from_slice(&tag);
        Ok(WrappedKey::from_parts(master, key.id(), &payload)?)
    }

    fn unwrap(
        &self,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
    ) -> Result<DataKey, ProviderError> {
        let m = wrapped.master_key();
        if m.provider != LOCAL_PROVIDER_ID {
            return Err(ProviderError::WrongProvider {
                expected: LOCAL_PROVIDER_ID.to_owned(),
                found: m.provider.clone(),
            });
        }
        let ver = self.version(m.version)?;
        let p = wrapped.payload();
        if p.len() != PAYLOAD_LEN {
            return Err(FormatError::Malformed {
                what: "wrapped key",
                reason: "local keyring payload must be 61 bytes",
            }
            .into());
        }
        if p[0] != WRAP_ALG_AES256GCM {
            return Err(FormatError::UnknownSuite {
                what: "wrapped key",
                suite: p[0],
            }
            .into());
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&p[1..1 + NONCE_LEN]);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&p[1 + NONCE_LEN + DATA_KEY_LEN..]);
        let mut body = Zeroizing::new([0u8; DATA_KEY_LEN]);
        body.copy_from_slice(&p[1 + NONCE_LEN..1 + NONCE_LEN + DATA_KEY_LEN]);
        let mut aad = wrapped.header().to_vec();
        aad.extend_from_slice(ctx.canonical_bytes());
        ver.aead
            .open_in_place(&nonce, &aad, body.as_mut(), &tag)
            .map_err(|DecryptError| ProviderError::Unwrap(DecryptError))?;
        Ok(DataKey::from_bytes(wrapped.data_key_id(), &body))
    }
}

impl fmt::Debug for LocalKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKeyring")
            .field("versions", &self.versions.keys().collect::<Vec<_>>())
            .field("active", &self.active)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}
