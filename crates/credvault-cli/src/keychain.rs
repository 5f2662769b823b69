//! `keychain://SERVICE/ACCOUNT` references: entries of the OS keychain, read through
//! `keyring-core`. On Linux the store is the kernel's keyutils (the session keyring, which a
//! process started from it shares); other platforms' stores come with the key providers.

use zeroize::Zeroizing;

/// The entry's value, or a reason that names no value.
#[cfg(target_os = "linux")]
pub(crate) fn get(service: &str, account: &str) -> Result<Zeroizing<String>, String> {
    use keyring_core::Error;
    static INIT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    INIT.get_or_init(|| {
        let store = linux_keyutils_keyring_store::Store::new()
            .map_err(|e| format!("the kernel keyring is not available: {e}"))?;
        keyring_core::set_default_store(store);
        Ok(())
    })
    .clone()?;
    let reason = |e: Error| match e {
        Error::NoEntry => "no such keychain entry".to_owned(),
        Error::NoStorageAccess(_) => "the keychain refused access".to_owned(),
        Error::BadEncoding(_) | Error::BadDataFormat(..) => {
            "the keychain entry is not UTF-8 text".to_owned()
        }
        Error::Invalid(what, _) | Error::TooLong(what, _) => format!("invalid {what}"),
        Error::PlatformFailure(p) => format!("keychain failure: {p}"),
        _ => "the keychain could not read the entry".to_owned(),
    };
    let entry = keyring_core::Entry::new(service, account).map_err(reason)?;
    entry.get_password().map(Zeroizing::new).map_err(reason)
}

/// No keychain store is built for this platform yet.
#[cfg(not(target_os = "linux"))]
pub(crate) fn get(_service: &str, _account: &str) -> Result<Zeroizing<String>, String> {
    Err("keychain:// is supported on Linux (kernel keyutils) only in this version".into())
}
