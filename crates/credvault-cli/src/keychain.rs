//! `keychain://SERVICE/ACCOUNT` references: entries of the OS keychain, read through
//! `credvault-kms` (`keyring-core`; on Linux the kernel's keyutils, the session keyring, which
//! a process started from it shares).

use zeroize::Zeroizing;

/// The entry's value, or a reason that names no value.
#[cfg(feature = "keychain")]
pub(crate) fn get(service: &str, account: &str) -> Result<Zeroizing<String>, String> {
    use credvault_kms::keychain::{get, Store};
    get(Store::platform_default(), service, account).map_err(|e| match e {
        credvault_kms::KmsError::Keychain { reason } => reason,
        other => other.to_string(),
    })
}

/// This build has no keychain.
#[cfg(not(feature = "keychain"))]
pub(crate) fn get(_service: &str, _account: &str) -> Result<Zeroizing<String>, String> {
    Err("keychain:// needs the `keychain` feature of credvault-cli".into())
}
