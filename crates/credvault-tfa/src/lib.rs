//! Email and SMS second factors for automations that log in on their own, over a
//! `credvault_store::Store`.
//!
//! Some sites send the second factor by email or SMS instead of an authenticator app. Each
//! credential gets a receiving address (`vault+<token>@your-domain`) and, for SMS, a phone
//! number; messages arrive through the [`SmtpReceiver`] (or a Twilio webhook a gateway
//! verifies with [`verify_twilio_signature`]), are matched to their credential, and the code
//! is extracted (`credvault_totp::extract_code`), sealed under the tenant's data key, kept
//! briefly and handed out once:
//!
//! ```
//! use std::time::Duration;
//! use credvault_store::{NewCredential, TenantId, Vault, VaultOptions};
//! use credvault_tfa::Tfa;
//!
//! let dir = tempfile::tempdir()?;
//! let vault = Vault::open_or_init(dir.path(), VaultOptions::default())?;
//! let store = vault.store();
//! let acme = TenantId::new("acme")?;
//! store.create_tenant(&acme, "Acme", "admin")?;
//! let scope = store.tenant(&acme, "robot")?;
//! let portal = scope.create(NewCredential::new("website_login", "portal",
//!     serde_json::json!({"login_url": "https://portal.example.com", "username": "robot",
//!                        "password": "pw"})))?;
//! let tfa = Tfa::open_in(dir.path(), store.clone())?;
//! let address = tfa.address(&scope, &portal.id, "mail.example.net")?;
//!
//! let since = store.now();
//! let email = format!("From: Portal <no-reply@portal.example.com>\r\nTo: {address}\r\n\
//!     Subject: Your sign-in code\r\n\r\nYour verification code is 482913.\r\n\
//!     Order 77120455 ships soon. Call 555-0100 with questions.\r\n");
//! tfa.receive_email(email.as_bytes(), &[address.clone()])?;
//!
//! let code = tfa.wait_for_code(&scope, &portal.id, since, Duration::from_secs(5))?;
//! assert_eq!(code.expose_secret(), "482913");
//! // Handed out once.
//! assert!(tfa.wait_for_code(&scope, &portal.id, since, Duration::ZERO).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
#[doc(hidden)]
pub mod fuzzing;
mod imap;
mod smtp;
mod tfa;
mod twilio;

pub use error::TfaError;
pub use imap::{ImapTrust, PollReport, IMAP_SERVICE, IMAP_TIMEOUT, MAX_PER_POLL};
pub use smtp::{SmtpReceiver, IDLE_TIMEOUT, MAX_CONNECTIONS, MAX_LINE_LEN, MAX_RECIPIENTS};
pub use tfa::{
    address_token, Channel, Outcome, ReceivedCode, Rules, Tfa, ADDRESS_PREFIX, DEFAULT_RETENTION,
    MAX_EMAIL_LEN, MAX_SMS_LEN, RECEIVER_ACTOR, TFA_DB,
};
pub use twilio::{twilio_signature, verify_twilio_signature};
