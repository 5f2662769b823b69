//! Master-key providers for credvault, named by one URI: a local key file or variable, the OS
//! keychain, a PKCS#11 token (HSM), or AWS KMS. Each is a
//! `credvault_envelope::MasterKey` that passes
//! `credvault_test::master_key_conformance` against the real component.
//!
//! ```
//! use credvault_envelope::{generate_data_key, EncryptionContext};
//! use credvault_kms::MasterUri;
//!
//! let dir = tempfile::tempdir()?;
//! let uri = MasterUri::parse(&format!("file:{}/master.key", dir.path().display()))?;
//! // Makes the key when the URI names none yet (here an owner-only key file).
//! let (master, created) = credvault_kms::open_or_create(&uri)?;
//! assert!(created);
//! let ctx = EncryptionContext::new().with("tenant", "acme")?;
//! let (dek, wrapped) = generate_data_key(master.as_ref(), &ctx)?;
//! // Any later process opens the same key from the URI alone.
//! let again = credvault_kms::open(&uri)?;
//! assert_eq!(again.unwrap(&wrapped, &ctx)?.expose_secret(), dek.expose_secret());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! | URI | feature | provider id in wrapped keys |
//! |---|---|---|
//! | `file:PATH`, `env:VAR` | always | `local` |
//! | `keychain:SERVICE/ACCOUNT` | `keychain` (default) | `local` |
//! | `pkcs11:token=T;object=O?module-path=P` | `pkcs11` | `pkcs11:T/O` |
//! | `aws-kms://KEY` | `aws-kms` | `aws-kms:KEY-ID` |
//!
//! The three `local` forms hold the same key text, so a key moves between a file, a variable
//! and the keychain without re-wrapping anything. A key file from a mounted Kubernetes Secret
//! is `file:` (the Secret's volume must be mode 0400/0600); a Secret exposed as a variable is
//! `env:`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::path::Path;
use std::sync::Arc;

use credvault_envelope::{KeyringError, LocalKeyring, MasterKey, ProviderError};

#[cfg(feature = "aws-kms")]
pub mod aws;
#[cfg(feature = "keychain")]
pub mod keychain;
mod metered;
mod migrating;
#[cfg(feature = "pkcs11")]
pub mod pkcs11;
mod uri;

pub use metered::{MasterKeyCounts, Metered, OPERATIONS};
pub use migrating::Migrating;
pub use uri::{MasterUri, Pkcs11Uri, UriError, KEYCHAIN_STORES, MAX_URI_LEN};

/// Why a master-key provider could not be opened, made or rotated. Never holds key material
/// or a PIN.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// The URI is malformed.
    #[error(transparent)]
    Uri(#[from] UriError),
    /// The provider refused or could not be reached.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// A local keyring's key text could not be read or written.
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    /// The OS keychain failed.
    #[error("keychain: {reason}")]
    Keychain {
        /// Why (names no value).
        reason: String,
    },
    /// No usable PKCS#11 PIN.
    #[error("PKCS#11 PIN: {reason}")]
    Pin {
        /// Why (never the PIN).
        reason: String,
    },
    /// This build has no support for the URI's scheme.
    #[error("{scheme}: not built in; enable the credvault-kms feature {feature:?}")]
    NotBuilt {
        /// The scheme.
        scheme: &'static str,
        /// The cargo feature that adds it.
        feature: &'static str,
    },
    /// The operation does not apply to this provider.
    #[error("{scheme}: {reason}")]
    Unsupported {
        /// The scheme.
        scheme: &'static str,
        /// Why, and what to do instead.
        reason: &'static str,
    },
}

/// Opens the master key `uri` names. It must exist.
///
/// # Errors
/// [`KmsError`]: a missing key file or keychain entry, an unreachable or refusing provider,
/// a scheme not built in.
pub fn open(uri: &MasterUri) -> Result<Arc<dyn MasterKey>, KmsError> {
    match uri {
        MasterUri::File(p) => Ok(Arc::new(LocalKeyring::from_file(p)?)),
        MasterUri::Env(v) => Ok(Arc::new(LocalKeyring::from_env(v)?)),
        MasterUri::Keychain { .. } => keychain_open(uri, false).map(|(k, _)| k),
        MasterUri::Pkcs11(p) => pkcs11_open(p, false).map(|(k, _)| k),
        MasterUri::AwsKms { key } => aws_open(key),
    }
}

/// Opens the master key `uri` names, making it first when the URI names a key that does not
/// exist yet: an owner-only key file (its directory made owner-only), a keychain entry, a
/// PKCS#11 key object generated in the token. A variable or a KMS key must already exist.
/// Returns the provider and whether a key was made.
///
/// # Errors
/// As [`open`].
pub fn open_or_create(uri: &MasterUri) -> Result<(Arc<dyn MasterKey>, bool), KmsError> {
    match uri {
        MasterUri::File(p) => {
            if p.exists() {
                return Ok((Arc::new(LocalKeyring::from_file(p)?), false));
            }
            create_private_parent(p)?;
            let k = LocalKeyring::generate()?;
            k.save_to_file(p)?;
            Ok((Arc::new(LocalKeyring::from_file(p)?), true))
        }
        MasterUri::Keychain { .. } => keychain_open(uri, true),
        MasterUri::Pkcs11(p) => pkcs11_open(p, true),
        MasterUri::Env(_) | MasterUri::AwsKms { .. } => open(uri).map(|k| (k, false)),
    }
}

/// Makes a new master key version where `uri` keeps it (a key file, a keychain entry, a
/// PKCS#11 object `OBJECT.vN+1`); it wraps from the next open on, older versions keep
/// unwrapping. Returns the new version.
///
/// # Errors
/// [`KmsError::Unsupported`] for a variable (rotate where it is set) and for AWS KMS (rotate
/// in KMS, or move to another key with `credvault rotate master --to`); others as [`open`].
pub fn rotate(uri: &MasterUri) -> Result<u32, KmsError> {
    match uri {
        MasterUri::File(p) => {
            let mut k = LocalKeyring::from_file(p)?;
            let v = k.rotate()?;
            k.save_to_file(p)?;
            Ok(v)
        }
        MasterUri::Env(_) => Err(KmsError::Unsupported {
            scheme: "env",
            reason: "the key text is set outside credvault: rotate it there",
        }),
        MasterUri::AwsKms { .. } => Err(KmsError::Unsupported {
            scheme: "aws-kms",
            reason: "KMS rotates a key's material itself; to move to another key use `credvault rotate master --to aws-kms://NEW`",
        }),
        #[cfg(feature = "keychain")]
        MasterUri::Keychain {
            service, account, ..
        } => {
            let kind = keychain_store(uri)?;
            let mut k = keychain::load(kind, service, account)?;
            let v = k.rotate()?;
            keychain::save(kind, service, account, &k)?;
            Ok(v)
        }
        #[cfg(feature = "pkcs11")]
        MasterUri::Pkcs11(p) => Ok(pkcs11::Pkcs11MasterKey::open(p)?.rotate()?),
        #[allow(unreachable_patterns)]
        other => Err(not_built(other)),
    }
}

fn not_built(uri: &MasterUri) -> KmsError {
    let feature = match uri {
        MasterUri::Keychain { .. } => "keychain",
        MasterUri::Pkcs11(_) => "pkcs11",
        MasterUri::AwsKms { .. } => "aws-kms",
        _ => "",
    };
    KmsError::NotBuilt {
        scheme: uri.scheme(),
        feature,
    }
}

fn create_private_parent(p: &Path) -> Result<(), KmsError> {
    let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    if dir.exists() {
        return Ok(());
    }
    let io = |source| {
        KmsError::Keyring(KeyringError::Io {
            path: dir.to_owned(),
            source,
        })
    };
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(io)
}

/// The keychain store a `keychain:` URI names.
#[cfg(feature = "keychain")]
pub fn keychain_store(uri: &MasterUri) -> Result<keychain::Store, KmsError> {
    match uri {
        MasterUri::Keychain { store: None, .. } => Ok(keychain::Store::platform_default()),
        MasterUri::Keychain { store: Some(s), .. } => {
            keychain::Store::from_name(s).ok_or(KmsError::Uri(UriError {
                part: "keychain store",
                reason: "unknown store",
            }))
        }
        _ => Err(KmsError::Uri(UriError {
            part: "scheme",
            reason: "not a keychain: URI",
        })),
    }
}

#[cfg(feature = "keychain")]
fn keychain_open(uri: &MasterUri, create: bool) -> Result<(Arc<dyn MasterKey>, bool), KmsError> {
    let MasterUri::Keychain {
        service, account, ..
    } = uri
    else {
        return Err(not_built(uri));
    };
    let kind = keychain_store(uri)?;
    if create && !keychain::exists(kind, service, account)? {
        keychain::save(kind, service, account, &LocalKeyring::generate()?)?;
        return Ok((Arc::new(keychain::load(kind, service, account)?), true));
    }
    Ok((Arc::new(keychain::load(kind, service, account)?), false))
}

#[cfg(not(feature = "keychain"))]
fn keychain_open(uri: &MasterUri, _create: bool) -> Result<(Arc<dyn MasterKey>, bool), KmsError> {
    Err(not_built(uri))
}

#[cfg(feature = "pkcs11")]
fn pkcs11_open(p: &Pkcs11Uri, create: bool) -> Result<(Arc<dyn MasterKey>, bool), KmsError> {
    if create {
        let (k, made) = pkcs11::Pkcs11MasterKey::create(p)?;
        return Ok((Arc::new(k), made));
    }
    Ok((Arc::new(pkcs11::Pkcs11MasterKey::open(p)?), false))
}

#[cfg(not(feature = "pkcs11"))]
fn pkcs11_open(p: &Pkcs11Uri, _create: bool) -> Result<(Arc<dyn MasterKey>, bool), KmsError> {
    Err(not_built(&MasterUri::Pkcs11(p.clone())))
}

#[cfg(feature = "aws-kms")]
fn aws_open(key: &str) -> Result<Arc<dyn MasterKey>, KmsError> {
    Ok(Arc::new(aws::AwsKmsMasterKey::open(
        key,
        &aws::AwsKmsOptions::default(),
    )?))
}

#[cfg(not(feature = "aws-kms"))]
fn aws_open(key: &str) -> Result<Arc<dyn MasterKey>, KmsError> {
    Err(not_built(&MasterUri::AwsKms {
        key: key.to_owned(),
    }))
}
