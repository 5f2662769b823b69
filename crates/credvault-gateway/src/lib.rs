//! credvault's vault as a network service: a TLS gateway where each client hostname maps to
//! one tenant, bearer API keys stored only as keyed hashes and shown once, per-key and
//! per-tenant rate limits, and one fail-closed audit record for every request (source IP,
//! hostname, key id, route, status, latency).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use credvault_gateway::{serve, tls, Gateway, GatewayConfig, KeyStore, ServeOptions, ServerKey};
//! use credvault_store::{TenantId, Vault, VaultOptions};
//!
//! let dir = std::path::Path::new("/var/lib/credvault");
//! let vault = Vault::open(dir, VaultOptions::default())?;
//! let keys = KeyStore::open(&dir.join("gateway.db"), ServerKey::load_or_create(&dir.join("gateway.key"))?)?;
//! let cfg = GatewayConfig::default().host("acme.vault.example.com", TenantId::new("acme")?)?;
//! let gateway = Gateway::new(vault.store().clone(), Arc::new(keys), cfg);
//!
//! let cert = tls::ReloadingCert::load("cert.pem", "key.pem")?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8443").await?;
//! let options = ServeOptions::tls(tls::server_config(cert, false)?);
//! serve(listener, gateway.router(), options, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod apikey;
#[cfg(feature = "postgres")]
mod apikey_pg;
mod connect_api;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod gateway;
mod metrics;
mod proxy;
mod server;
mod session_api;
pub mod source;
mod source_routes;
pub mod tls;
mod ui;
mod vault_api;
mod vault_kv;
mod vault_totp;
mod vault_transit;

pub use apikey::{ApiScope, KeyError, KeyInfo, KeyPolicy, KeyStore, NewKey, RateLimit, ServerKey};
pub use error::ApiError;
pub use gateway::{AuditReader, Gateway, GatewayConfig, OPENAPI};
pub use proxy::UpstreamConfig;
pub use server::{serve, ConnInfo, ServeError, ServeOptions};
