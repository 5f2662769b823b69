//! Browser sessions, login leases and per-credential proxy settings for automations that log
//! into websites on their own, over a `credvault_store::Store`.
//!
//! An automation that finds itself logged out fetches the credential, logs in (a TOTP code on
//! demand), and keeps the browser's state for the next run; several runs may share one
//! account, but only one may be logging in at a time. [`Sessions::with_session`] is that flow
//! as one call:
//!
//! ```
//! use credvault_session::{BrowserState, SessionConfig, Sessions};
//! use credvault_store::{NewCredential, TenantId, Vault, VaultOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let vault = Vault::open_or_init(dir.path(), VaultOptions::default())?;
//! let store = vault.store();
//! let acme = TenantId::new("acme")?;
//! store.create_tenant(&acme, "Acme", "admin")?;
//! let sessions = Sessions::open_in(dir.path(), store.clone())?;
//! let scope = store.tenant(&acme, "robot")?;
//! let login = scope.create(NewCredential::new(
//!     "website_login",
//!     "portal",
//!     serde_json::json!({"login_url": "https://portal.example.com/login",
//!                        "username": "robot@example.com", "password": "pw"}),
//! ))?;
//! sessions.configure(&scope, &login.id, &SessionConfig::default().max_concurrent(Some(2)))?;
//!
//! // No saved state: the callback logs in (here it only reads the password) and returns
//! // the browser's storageState; it is saved sealed.
//! let first = sessions.with_session(&scope, &login.id, "default", |ctx| {
//!     let fields = ctx.reveal(&["username", "password"])?;
//!     assert_eq!(fields.expose_secret("password"), Some("pw"));
//!     Ok(BrowserState::parse(r#"{"cookies": [{"name": "sid", "value": "abc",
//!         "domain": "portal.example.com", "path": "/"}], "origins": []}"#)?)
//! })?;
//! assert!(first.logged_in());
//!
//! // The next run restores it without logging in.
//! let second = sessions.with_session(&scope, &login.id, "default", |_| unreachable!())?;
//! assert!(!second.logged_in());
//! assert!(second.state().expose_json().contains("abc"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What the crate keeps, and where: `docs/sessions.md`. In short, the records (settings,
//! state metadata, leases) are in a SQLite database beside the vault (`sessions.db`), each
//! authenticated under a key of its own (`sessions.key`); each state is sealed under its
//! tenant's data key, bound to tenant, credential, profile and version.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod db;
mod error;
mod flow;
#[doc(hidden)]
pub mod fuzzing;
mod key;
mod lease;
pub mod sql;
mod state;

pub use config::{
    parse_duration, resolve_proxy, ProxySetting, ProxyVia, SessionConfig, StoreKinds, MAX_LIFETIME,
};
pub use db::{
    check_profile, SessionInfo, Sessions, SharedSessions, MAX_PROFILE_LEN, SESSIONS_DB,
    SESSIONS_KEY, SWEEPER_ACTOR,
};
pub use error::SessionError;
pub use flow::{LoginContext, LoginError, SessionOutcome};
pub use key::SessionKey;
pub use lease::{Lease, LeaseKind, MAX_LEASE_TTL, MIN_LEASE_TTL};
pub use state::{BrowserState, MAX_COOKIES, MAX_ITEMS, MAX_ORIGINS, MAX_STATE_LEN};
