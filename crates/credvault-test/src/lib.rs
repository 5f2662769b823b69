//! Test support shared by the credvault crates (not published).
//!
//! The suites every implementation of a pluggable joint must pass:
//! [`master_key_conformance`] for [`MasterKey`] providers (the local keyring now, HSM and KMS
//! providers later), [`audit_sink_conformance`] for audit sinks, and
//! [`replay_guard_conformance`] for TOTP replay guards (the in-memory guard and the store's
//! durable one), and [`storage_conformance`] for credential-store backends (memory, SQLite,
//! PostgreSQL later).
//!
//! ```
//! let mut keyring = credvault_envelope::LocalKeyring::generate().unwrap();
//! credvault_test::master_key_conformance(&keyring).unwrap();
//! let before = credvault_envelope::LocalKeyring::from_secret_text(&keyring.export_secret_text()).unwrap();
//! keyring.rotate().unwrap();
//! credvault_test::master_key_rotation_conformance(&before, &keyring).unwrap();
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "https")]
pub mod https;

use credvault_envelope::{
    generate_data_key, needs_rewrap, EncryptionContext, MasterKey, ProviderError, WrappedKey,
};

/// A failed conformance check: which suite and rule, and what happened.
#[derive(Debug)]
pub struct Violation {
    /// The suite (`master key`, `audit sink`, `replay guard`).
    pub suite: &'static str,
    /// The rule that failed.
    pub rule: &'static str,
    /// What was observed.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} conformance: {}: {}",
            self.suite, self.rule, self.detail
        )
    }
}

impl std::error::Error for Violation {}

fn check(ok: bool, rule: &'static str, detail: impl FnOnce() -> String) -> Result<(), Violation> {
    if ok {
        Ok(())
    } else {
        Err(Violation {
            suite: "master key",
            rule,
            detail: detail(),
        })
    }
}

fn ctx(tenant: &str) -> EncryptionContext {
    let mut c = EncryptionContext::new();
    // Fixed short keys and values: cannot exceed the limits.
    let _ = c.insert("tenant", tenant);
    let _ = c.insert("purpose", "conformance");
    c
}

/// Runs the master-key contract against `provider`.
pub fn master_key_conformance(provider: &dyn MasterKey) -> Result<(), Violation> {
    let a = ctx("tenant-a");
    let b = ctx("tenant-b");
    let active = provider.active_version().map_err(|e| Violation {
        suite: "master key",
        rule: "active_version available",
        detail: e.to_string(),
    })?;
    let (dek, wrapped) = generate_data_key(provider, &a).map_err(|e| Violation {
        suite: "master key",
        rule: "wrap succeeds",
        detail: e.to_string(),
    })?;

    let m = wrapped.master_key();
    check(
        m.provider == provider.provider_id(),
        "wrapped key names its provider",
        || format!("{} vs {}", m.provider, provider.provider_id()),
    )?;
    check(m.version == active, "wrap uses the active version", || {
        format!("{} vs {active}", m.version)
    })?;
    check(
        wrapped.data_key_id() == dek.id(),
        "wrapped key names its data key",
        || String::from("key id differs"),
    )?;
    check(
        !needs_rewrap(provider, &wrapped).unwrap_or(true),
        "fresh wrap needs no rewrap",
        String::new,
    )?;

    // Round trip through bytes.
    let parsed = WrappedKey::parse(wrapped.as_bytes()).map_err(|e| Violation {
        suite: "master key",
        rule: "wrapped key parses",
        detail: e.to_string(),
    })?;
    let back = provider.unwrap(&parsed, &a).map_err(|e| Violation {
        suite: "master key",
        rule: "unwrap with the same context",
        detail: e.to_string(),
    })?;
    check(
        back.expose_secret() == dek.expose_secret(),
        "unwrap returns the same key",
        String::new,
    )?;
    check(
        back.id() == dek.id(),
        "unwrap keeps the key id",
        String::new,
    )?;

    // Wrong context: opaque failure.
    match provider.unwrap(&parsed, &b) {
        Err(ProviderError::Unwrap(_)) => {}
        other => {
            return Err(Violation {
                suite: "master key",
                rule: "unwrap with another context fails opaquely",
                detail: format!("{:?}", other.map(|k| k.id())),
            })
        }
    }

    // Every single-bit flip of the wrapped key fails (parse or unwrap).
    let bytes = wrapped.as_bytes();
    for i in 0..bytes.len() * 8 {
        let mut t = bytes.to_vec();
        t[i / 8] ^= 1 << (i % 8);
        if let Ok(w) = WrappedKey::parse(&t) {
            if let Ok(k) = provider.unwrap(&w, &a) {
                return Err(Violation {
                    suite: "master key",
                    rule: "tampered wrapped key is refused",
                    detail: format!("bit {i} flipped still unwrapped (key id {})", k.id()),
                });
            }
        }
    }

    // Two wraps of one key differ (randomised).
    let again = provider.wrap(&dek, &a).map_err(|e| Violation {
        suite: "master key",
        rule: "wrap succeeds",
        detail: e.to_string(),
    })?;
    check(
        again.as_bytes() != wrapped.as_bytes(),
        "wrapping is randomised",
        String::new,
    )?;

    // Rewrap keeps the key.
    let re = provider.rewrap(&wrapped, &a).map_err(|e| Violation {
        suite: "master key",
        rule: "rewrap succeeds",
        detail: e.to_string(),
    })?;
    let k2 = provider.unwrap(&re, &a).map_err(|e| Violation {
        suite: "master key",
        rule: "rewrapped key unwraps",
        detail: e.to_string(),
    })?;
    check(
        k2.expose_secret() == dek.expose_secret(),
        "rewrap keeps the key",
        String::new,
    )?;

    // Debug of the key never shows it.
    let dbg = format!("{dek:?}");
    let hex: String = dek
        .expose_secret()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    check(!dbg.contains(&hex), "DataKey Debug is redacted", || {
        dbg.clone()
    })?;
    Ok(())
}

/// Checks a provider across a rotation: `before` is the provider as it was, `after` the same
/// provider once a new version was made (a new key file version, a new token object). A key
/// wrapped before must still open after, be flagged for rewrap, and rewrap to the new active
/// version; the new version must wrap and open too.
pub fn master_key_rotation_conformance(
    before: &dyn MasterKey,
    after: &dyn MasterKey,
) -> Result<(), Violation> {
    let a = ctx("tenant-rot");
    let fail = |rule: &'static str| {
        move |e: ProviderError| Violation {
            suite: "master key",
            rule,
            detail: e.to_string(),
        }
    };
    let old_version = before
        .active_version()
        .map_err(fail("active_version before"))?;
    let (dek, wrapped) = generate_data_key(before, &a).map_err(fail("wrap before rotation"))?;
    let new_version = after
        .active_version()
        .map_err(fail("active_version after"))?;
    check(
        before.provider_id() == after.provider_id(),
        "a rotation keeps the provider id",
        || format!("{} vs {}", before.provider_id(), after.provider_id()),
    )?;
    check(
        new_version > old_version,
        "rotation makes a newer version active",
        || format!("{old_version} -> {new_version}"),
    )?;
    let back = after
        .unwrap(&wrapped, &a)
        .map_err(fail("an old version still unwraps after rotation"))?;
    check(
        back.expose_secret() == dek.expose_secret(),
        "an old version unwraps to the same key",
        String::new,
    )?;
    check(
        needs_rewrap(after, &wrapped).unwrap_or(false),
        "a key under an old version needs rewrap",
        String::new,
    )?;
    let re = after
        .rewrap(&wrapped, &a)
        .map_err(fail("rewrap after rotation"))?;
    check(
        re.master_key().version == new_version,
        "rewrap uses the new version",
        || re.master_key().to_string(),
    )?;
    let k = after
        .unwrap(&re, &a)
        .map_err(fail("a rewrapped key unwraps"))?;
    check(
        k.expose_secret() == dek.expose_secret(),
        "rewrap keeps the key",
        String::new,
    )?;
    master_key_conformance(after)
}

mod audit;
pub mod http;
mod replay;
mod storage;

pub use audit::{audit_sink_conformance, SinkHooks};
pub use replay::replay_guard_conformance;
pub use storage::storage_conformance;

/// A command that runs the ignored test `name` of the running test binary, alone, as a child
/// process (`--exact --ignored --nocapture --test-threads=1`). A test that needs a second
/// process (a crash, a lock held elsewhere, a change made by another process) starts its other
/// half this way, and passes it what it needs in the environment.
///
/// # Panics
/// If the running executable's path cannot be found.
#[allow(clippy::expect_used)]
pub fn child_test(name: &str) -> std::process::Command {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        name,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    cmd
}
