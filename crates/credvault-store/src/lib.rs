//! A credential store for automations and AI agents: each tenant's credentials encrypted
//! under its own data key (AES-256-GCM) wrapped by a master key, typed and validated by
//! `credvault-schema`, every operation audited (fail closed) to a tamper-evident log, keys
//! rotated without losing anything, and an embedded default (SQLite and one key file) that
//! needs no set-up.
//!
//! ```
//! use std::sync::Arc;
//! use credvault_audit::MemorySink;
//! use credvault_envelope::LocalKeyring;
//! use credvault_store::{AuditTarget, MemoryStorage, NewCredential, Store, TenantId};
//! use serde_json::json;
//!
//! let audit = Arc::new(MemorySink::new());
//! let store = Store::new(
//!     Arc::new(MemoryStorage::new()),
//!     Arc::new(LocalKeyring::generate()?),
//!     AuditTarget::Sink(audit.clone()),
//! );
//! let acme = TenantId::new("acme")?;
//! store.create_tenant(&acme, "Acme", "admin")?;
//!
//! let scope = store.tenant(&acme, "alice")?;
//! let info = scope.create(NewCredential::new(
//!     "http_bearer_token",
//!     "stripe",
//!     json!({"token": "sk_live_51Hx9aQ2eZvKYlo2C0sT"}),
//! ))?;
//! assert_eq!(info.fields["token"], credvault_schema::SECRET_MARKER); // masked
//!
//! let id = info.id.clone();
//! let revealed = scope.reveal(&id, &["token"], Some("billing-bot"))?;
//! assert_eq!(revealed.expose_secret("token"), Some("sk_live_51Hx9aQ2eZvKYlo2C0sT"));
//!
//! // Another tenant cannot reach it, even with its id.
//! let other = TenantId::new("globex")?;
//! store.create_tenant(&other, "Globex", "admin")?;
//! assert!(store.tenant(&other, "mallory")?.reveal(&id, &["token"], None).is_err());
//! // Everything is in the audit log: the acme key unwrapped (by the vault) to seal the
//! // credential, the access, and the denial (unknown in globex).
//! let actions: Vec<String> = audit.events().iter().map(|e| e.action.as_str().to_owned()).collect();
//! assert_eq!(
//!     actions,
//!     ["tenant_created", "key_used", "created", "accessed", "tenant_created", "access_denied"]
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The joints where backends plug in are [`Storage`] (with [`MemoryStorage`] and
//! [`SqliteStorage`]), [`MasterKey`], [`AuditSink`] and [`CredentialTester`]; each has a
//! conformance suite in `credvault-test`.
//!
//! - [`Vault`]: the embedded default, one directory (SQLite, a master key file, an audit log),
//!   usable from several processes at once; [`Vault::open_or_init`] for zero set-up.
//! - [`Store`]: a cheap `Clone + Send + Sync + 'static` handle; [`Store::tenant`] gives a
//!   [`Scope`] bound to one tenant, through which every credential operation goes.
//! - The built-in credential types and their field keys are listed in
//!   [`schema::builtin_types`]; [`SECRET_MARKER`] is what a set secret field shows.
//! - Errors are [`StoreError`]: validation ([`ValidationErrors`]), access refused
//!   ([`DenyReason`]), busy ([`StoreError::Busy`], another process held a lock past
//!   [`VaultOptions::lock_timeout`]), and opaque crypto failures.
//! - Times are Unix milliseconds (`i64`) everywhere in this crate.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod backup;
mod error;
mod fields;
pub mod files;
#[doc(hidden)]
pub mod fuzzing;
mod ids;
mod keys;
mod memory;
mod model;
pub mod net;
pub mod pgpass;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;
pub mod storage;
mod store;
mod tester;
#[cfg(feature = "sqlite")]
mod vault;

/// The crates this one is built on, whole: every type a function of this crate takes or
/// returns is reachable through them (or through the re-exports below), so an embedder needs
/// `credvault-store` as its only credvault dependency.
pub use credvault_audit as audit;
pub use credvault_envelope as envelope;
pub use credvault_schema as schema;
pub use credvault_totp as totp;

pub use credvault_audit::{
    AuditEvent, AuditKey, AuditLog, AuditSink, DenyReason, Durability, LogConfig, MemorySink,
    TestStatus, VerifyReport,
};
pub use credvault_envelope::{
    reseed_nonce_generator, DataKey, EncryptionContext, KeyId, LocalKeyring, MasterKey,
    ProviderError,
};
pub use credvault_schema::{
    CredentialType, Registry, Rule, SecretValue, ValidationError, ValidationErrors, SECRET_MARKER,
};
pub use error::{SealRejection, StoreError};
pub use fields::{
    decode_secret_fields, encode_secret_fields, MAX_FIELD_NAME_LEN, MAX_FIELD_VALUE_LEN,
    MAX_SECRET_FIELDS, SECRET_FIELDS_VERSION,
};
pub use ids::{CredentialId, IdError, TenantId, MAX_TENANT_ID_LEN};
pub use keys::CacheConfig;
pub use memory::MemoryStorage;
pub use model::{
    effective_policy, wipe_json, CredentialInfo, CredentialUpdate, Integrity, KeyRotation,
    MasterRotation, NewCredential, Progress, Revealed, SealedCredential, TenantInfo, TestOutcome,
    TotpCode, DEFAULT_ENVIRONMENT,
};
#[cfg(feature = "postgres")]
pub use postgres::{redact_database_url, PostgresOptions, PostgresStorage};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteDurability, SqliteStorage, DEFAULT_LOCK_TIMEOUT};
pub use storage::{ListFilter, OtpThrottle, Storage, StorageError};
pub use store::{
    credential_context, AuditTarget, Clock, Finding, ManualClock, Problem, RequestAuth, Scope,
    StorageReplayGuard, Store, StoreConfig, StoreVerification, SystemClock, AUTO_ROTATION_ACTOR,
    HOTP_COUNTER_FIELD, HOTP_LOOK_AHEAD, MAX_ATTACHMENT_NAME, VAULT_ACTOR,
};
#[cfg(feature = "aws-tester")]
pub use tester::AwsStsTester;
#[cfg(feature = "http-tester")]
pub use tester::HttpTester;
#[cfg(feature = "mysql-tester")]
pub use tester::MysqlTester;
#[cfg(feature = "net")]
pub use tester::Outbound;
#[cfg(feature = "postgres")]
pub use tester::PostgresTester;
#[cfg(feature = "redis-tester")]
pub use tester::RedisTester;
#[cfg(feature = "smtp-tester")]
pub use tester::SmtpTester;
#[cfg(feature = "ssh-tester")]
pub use tester::SshTester;
pub use tester::{CredentialTester, FixedTester, TesterRegistry};
#[cfg(feature = "sqlite")]
pub use vault::{
    read_audit_key, verify_vault_audit, AuditCheck, MasterSource, Restored, Vault, VaultOptions,
    VaultVerification, MASTER_KEY_ENV,
};
#[cfg(all(feature = "sqlite", feature = "postgres"))]
pub use vault::{DatabaseConfig, StorageMigration};
