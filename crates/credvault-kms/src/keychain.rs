//! A local keyring whose key text lives in the OS keychain (`keychain:SERVICE/ACCOUNT`), so
//! no key file is on disk.
//!
//! Read and written through `keyring-core`, in the store the URI's `?store=` names ([`Store`]):
//! on Linux the kernel's keyutils by default (feature `keychain`, the session keyring); the
//! Secret Service, macOS Keychain and Windows Credential Manager stores are behind their own
//! features. The kernel keyring forgets at reboot: it is for a key that something else puts
//! there at boot (a unit reading it from a TPM, an operator), never the only copy.

use credvault_envelope::LocalKeyring;
use zeroize::Zeroizing;

use crate::KmsError;

/// A keychain store `keyring-core` can use; chosen by the URI's `?store=` (`keyutils`,
/// `secret-service`, `macos`, `windows`), or the platform's default: the kernel keyring on
/// Linux, the Keychain on macOS, the Credential Manager on Windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Store {
    /// Linux kernel keyutils (the session keyring; forgotten at reboot).
    Keyutils,
    /// The freedesktop Secret Service (GNOME Keyring, KWallet), feature `keychain-secret-service`.
    SecretService,
    /// The macOS Keychain, feature `keychain-apple`.
    MacOs,
    /// The Windows Credential Manager, feature `keychain-windows`.
    Windows,
}

impl Store {
    /// The store a URI without `?store=` means on this platform.
    pub fn platform_default() -> Self {
        if cfg!(target_os = "macos") {
            Self::MacOs
        } else if cfg!(windows) {
            Self::Windows
        } else {
            Self::Keyutils
        }
    }

    /// Its name in a URI.
    pub fn name(self) -> &'static str {
        match self {
            Self::Keyutils => "keyutils",
            Self::SecretService => "secret-service",
            Self::MacOs => "macos",
            Self::Windows => "windows",
        }
    }

    /// Parses a name from a URI.
    pub fn from_name(s: &str) -> Option<Self> {
        [
            Self::Keyutils,
            Self::SecretService,
            Self::MacOs,
            Self::Windows,
        ]
        .into_iter()
        .find(|k| k.name() == s)
    }

    /// True for a store that forgets its entries at reboot.
    pub fn forgets_at_reboot(self) -> bool {
        self == Self::Keyutils
    }
}

type Handle = std::sync::Arc<keyring_core::CredentialStore>;

fn open_store(kind: Store) -> Result<Handle, String> {
    match kind {
        #[cfg(target_os = "linux")]
        Store::Keyutils => linux_keyutils_keyring_store::Store::new()
            .map(|s| s as Handle)
            .map_err(|e| format!("the kernel keyring is not available: {e}")),
        #[cfg(all(target_os = "linux", feature = "keychain-secret-service"))]
        Store::SecretService => dbus_secret_service_keyring_store::Store::new()
            .map(|s| s as Handle)
            .map_err(|e| format!("the Secret Service is not available: {e}")),
        #[cfg(all(target_os = "macos", feature = "keychain-apple"))]
        Store::MacOs => apple_native_keyring_store::keychain::Store::new()
            .map(|s| s as Handle)
            .map_err(|e| format!("the macOS Keychain is not available: {e}")),
        #[cfg(all(windows, feature = "keychain-windows"))]
        Store::Windows => windows_native_keyring_store::Store::new()
            .map(|s| s as Handle)
            .map_err(|e| format!("the Windows Credential Manager is not available: {e}")),
        #[allow(unreachable_patterns)]
        other => Err(format!(
            "the {} store is not built for this platform (features keychain-secret-service, keychain-apple, keychain-windows)",
            other.name()
        )),
    }
}

fn store(kind: Store) -> Result<Handle, KmsError> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static STORES: OnceLock<Mutex<HashMap<Store, Handle>>> = OnceLock::new();
    let mut map = STORES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(h) = map.get(&kind) {
        return Ok(std::sync::Arc::clone(h));
    }
    let h = open_store(kind).map_err(|reason| KmsError::Keychain { reason })?;
    map.insert(kind, std::sync::Arc::clone(&h));
    Ok(h)
}

fn reason(e: keyring_core::Error) -> KmsError {
    use keyring_core::Error;
    let reason = match e {
        Error::NoEntry => "no such keychain entry".to_owned(),
        Error::NoStorageAccess(_) => "the keychain refused access".to_owned(),
        Error::BadEncoding(_) | Error::BadDataFormat(..) => {
            "the keychain entry is not UTF-8 text".to_owned()
        }
        Error::Invalid(what, _) | Error::TooLong(what, _) => format!("invalid {what}"),
        Error::PlatformFailure(p) => format!("keychain failure: {p}"),
        _ => "the keychain could not use the entry".to_owned(),
    };
    KmsError::Keychain { reason }
}

fn entry(kind: Store, service: &str, account: &str) -> Result<keyring_core::Entry, KmsError> {
    keyring_core::Entry::new_in_store(&store(kind)?, service, account).map_err(reason)
}

/// Reads an entry's text (a `keychain://` reference's value, say). Never logs it.
///
/// # Errors
/// [`KmsError::Keychain`] with a reason that names no value.
pub fn get(kind: Store, service: &str, account: &str) -> Result<Zeroizing<String>, KmsError> {
    entry(kind, service, account)?
        .get_password()
        .map(Zeroizing::new)
        .map_err(reason)
}

/// Loads the local keyring held in the entry.
///
/// # Errors
/// [`KmsError::Keychain`] (no entry, no access), [`KmsError::Keyring`] (not key text).
pub fn load(kind: Store, service: &str, account: &str) -> Result<LocalKeyring, KmsError> {
    let text = get(kind, service, account)?;
    Ok(LocalKeyring::from_secret_text(&text)?)
}

/// Stores `keyring`'s key text in the entry, replacing what it held.
///
/// # Errors
/// [`KmsError::Keychain`].
pub fn save(
    kind: Store,
    service: &str,
    account: &str,
    keyring: &LocalKeyring,
) -> Result<(), KmsError> {
    let text = keyring.export_secret_text();
    entry(kind, service, account)?
        .set_password(&text)
        .map_err(reason)
}

/// True when the entry exists.
///
/// # Errors
/// [`KmsError::Keychain`] for any failure but a missing entry.
pub fn exists(kind: Store, service: &str, account: &str) -> Result<bool, KmsError> {
    match entry(kind, service, account)?.get_password() {
        Ok(t) => {
            drop(Zeroizing::new(t));
            Ok(true)
        }
        Err(keyring_core::Error::NoEntry) => Ok(false),
        Err(e) => Err(reason(e)),
    }
}
