//! Typed credential types for vaults: what fields a PostgreSQL login, an API key or a website
//! login has, which are secret, how to test the credential and how it goes into a request.
//!
//! ```
//! use credvault_schema::{FieldValue, Registry, Rule, SECRET_MARKER};
//! use serde_json::json;
//!
//! let registry = Registry::with_builtins();
//! let postgres = registry.get("postgres").expect("built in");
//!
//! // Valid input becomes a typed credential: defaults applied, the password in a secret type.
//! let cred = postgres
//!     .validate(&json!({"host": "db.internal", "database": "app", "user": "svc", "password": "hunter2"}))
//!     .expect("valid");
//! assert!(matches!(cred.get("port"), Some(FieldValue::Integer(5432))));
//! assert_eq!(cred.expose_secret("password"), Some("hunter2")); // the only way to the secret
//! assert!(!format!("{cred:?}").contains("hunter2"));
//!
//! // The masked view is what may be logged or returned.
//! let masked = serde_json::to_string(&cred.masked())?;
//! assert!(masked.contains(SECRET_MARKER) && !masked.contains("hunter2"));
//!
//! // Every error at once, each naming the field and the rule, never the value.
//! let errors = postgres
//!     .validate(&json!({"host": "not a host!", "port": 70000, "password": "hunter2", "colour": "red"}))
//!     .unwrap_err();
//! assert_eq!(
//!     errors.rules(),
//!     vec![
//!         ("host", Rule::Format(credvault_schema::Format::Hostname)),
//!         ("port", Rule::Maximum),
//!         ("database", Rule::Required),
//!         ("user", Rule::Required),
//!         ("colour", Rule::UnknownField),
//!     ]
//! );
//! assert!(!errors.to_string().contains("hunter2"));
//! # Ok::<(), serde_json::Error>(())
//! ```
//!
//! - [`TypeDef`]/[`FieldDef`]: definitions in JSON (`docs/formats.md`, "Credential type
//!   definition v1"); kinds `string`, `password`, `number`, `boolean`, `options`, `hidden`;
//!   rules `pattern`, `min_length`/`max_length`, `min`/`max`, `format` (url, email, hostname,
//!   port, base32, pem); `extends`; a declarative `test` and `authenticate`.
//! - [`Registry`]: the built-in catalog ([`Registry::with_builtins`], 22 types) and user types
//!   from JSON, with inheritance resolved and cycles refused.
//! - [`CredentialType::validate`], [`validate_json`](CredentialType::validate_json),
//!   [`validate_patch`](CredentialType::validate_patch): a [`Credential`] or every
//!   [`ValidationError`]; size and depth limits on hostile input.
//! - [`Credential::masked`], [`Credential::metadata`]: views safe to serialize;
//!   [`SecretValue::expose_secret`] is the only way to a secret.
//! - [`CredentialType::json_schema`]: JSON Schema 2020-12 that accepts exactly what the
//!   validator accepts.
//! - [`CredentialType::authenticate`], [`CredentialType::test_request`]: `{{field}}` templates
//!   rendered into request parts (held as secrets).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// The built-in credential types ([`Registry::with_builtins`]) and their fields, generated
/// from the catalog (`catalog/*.json`) by a test that fails when this list drifts from it.
///
#[doc = include_str!("../BUILTIN_TYPES.md")]
pub mod builtin_types {}

mod compile;
mod def;
mod error;
mod formats;
#[doc(hidden)]
pub mod fuzzing;
mod matcher;
mod registry;
mod schema;
mod template;
mod validate;
mod value;

pub use compile::{
    CredentialType, MAX_FIELDS, MAX_OPTIONS, MAX_PATTERN_LEN, MAX_SAFE_INTEGER, MAX_VALUE_LEN,
};
pub use def::{
    AuthDef, BasicAuthDef, BodyFormat, Category, FieldDef, FieldKind, Format, HttpRequestDef,
    RevealPolicy, SuccessDef, TestDef, TestKind, TypeDef,
};
pub use error::{DefinitionError, Limit, Rule, ValidationError, ValidationErrors};
pub use registry::{
    parse_definition, Registry, MAX_DEFINITION_BYTES, MAX_EXTENDS_DEPTH, MAX_TYPES,
};
pub use template::{Pairs, RenderedAuth, RenderedRequest};
pub use validate::{Change, Patched, MAX_DEPTH, MAX_ERRORS, MAX_INPUT_BYTES, MAX_INPUT_KEYS};
pub use value::{
    Credential, FieldInfo, FieldValue, MaskedCredential, SecretStr, SecretValue, SECRET_MARKER,
};
