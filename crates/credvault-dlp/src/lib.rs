//! Keep secrets out of LLM prompts, logs and responses.
//!
//! ```
//! use credvault_dlp::{render, Action, MaskerBuilder, Reference, Resolver, Scanner};
//! use zeroize::Zeroizing;
//!
//! // Known secrets, in every encoded form, become markers naming their reference.
//! let mut b = MaskerBuilder::new();
//! b.add("github/token", "ghp_8f3KqZ2vX9LmP4tR7wY1nB6cD0eF5gH2jK3l")?;
//! assert!(b.add("router/admin", "admin").is_err()); // too short to mask everywhere
//! let masker = b.build()?;
//! let log = "push failed: auth=Z2hwXzhmM0txWjJ2WDlMbVA0dFI3d1kxbkI2Y0QwZUY1Z0gyakszbA== (base64)";
//! assert_eq!(masker.mask(log), "push failed: auth=[cv:github/token] (base64)");
//!
//! // Detectors: cards, SSNs, cloud and API keys...; findings never carry the value.
//! let scanner = Scanner::builtin().with_action("us_ssn", Action::Block)?;
//! let out = scanner.clean("card 4111 1111 1111 1111, key AKIAIOSFODNN7EXAMPLE", Some(&masker)).unwrap();
//! assert_eq!(out.text, "card [redacted:payment_card], key [redacted:aws_access_key_id]");
//! assert!(scanner.clean("ssn 123-45-6789", None).is_err());
//!
//! // References: the agent writes {{cv:...}}; the executor substitutes and masks the output.
//! struct Vault;
//! impl Resolver for Vault {
//!     fn resolve(&self, r: &Reference) -> Result<Zeroizing<String>, String> {
//!         Ok(Zeroizing::new(format!("s3cr3t-value-for-{}", r.field)))
//!     }
//! }
//! let rendered = render("curl -H 'Authorization: {{cv:stripe/api_key}}'", &Vault)?;
//! assert_eq!(rendered.text.expose_secret(), "curl -H 'Authorization: s3cr3t-value-for-api_key'");
//! let tool_output = "echo: s3cr3t-value-for-api_key";
//! assert_eq!(rendered.masker.mask(tool_output), "echo: [cv:stripe/api_key]");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! - [`MaskerBuilder`]/[`Masker`]: up to 100,000 known secrets, each in its raw form and its
//!   base64 (both alphabets, all three alignments, padded or not), hex, percent-encoded (RFC
//!   3986, JavaScript, Python `quote`, form encoding with `+`), JSON escaped (also ASCII-only
//!   and Go's HTML-safe `\u0026`), HTML references (named, decimal, hex; also around JSON) and
//!   line-split forms, found in one gated pass (a hashed bit set of the forms'
//!   first bytes proposes positions, an anchored Aho-Corasick search confirms); a guard against
//!   short and common values; streaming ([`StreamMasker`], [`SharedStreamMasker`], [`MaskingWriter`], [`MaskingReader`]) that
//!   catches secrets split across chunks.
//! - [`Scanner`]: built-in and custom detectors, each with an [`Action`]; [`Finding`]s name
//!   detector and range, never the value (fit for an audit record).
//! - [`references`], [`parse_reference`], [`render`]: `{{cv:<credential>/<field>}}` and
//!   `{{cv:<env>/<credential>/<field>}}`, the short form for prompts within one tenant.
//! - [`SecretUri`], [`template_uris`], [`render_uris`]: the reference syntax for processes and
//!   files, `cv://[TENANT/]NAME/FIELD[?env=ENV]` and `keychain://SERVICE/ACCOUNT`, alone (an
//!   environment variable's value) or as `{{ URI }}` in a template:
//!
//! ```
//! use credvault_dlp::{render_uris, SecretUri, UriResolver, VaultRef};
//! use zeroize::Zeroizing;
//!
//! let uri: SecretUri = "cv://acme/GitHub bot/token?env=prod".parse()?;
//! let SecretUri::Vault(VaultRef { tenant, name, .. }) = &uri else { unreachable!() };
//! assert_eq!((tenant.as_deref(), name.as_str()), (Some("acme"), "GitHub bot"));
//!
//! struct Fixed;
//! impl UriResolver for Fixed {
//!     fn resolve(&self, _: &SecretUri) -> Result<Zeroizing<String>, String> {
//!         Ok(Zeroizing::new("hunter2-but-longer".into()))
//!     }
//! }
//! let out = render_uris("password: {{ cv://db/password }}\n", &Fixed)?;
//! assert_eq!(out.text.expose_secret(), "password: hunter2-but-longer\n");
//! assert_eq!(out.masker.mask("echo hunter2-but-longer"), "echo [cv:db/password]");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod detect;
#[doc(hidden)]
pub mod fuzzing;
mod masker;
mod reference;
mod uri;
mod variants;

pub use detect::{builtin_detectors, Action, Blocked, Cleaned, DetectorError, Finding, Scanner};
pub use masker::{
    entropy, AddError, BuildError, MaskMatch, Masker, MaskerBuilder, MaskingReader, MaskingWriter,
    SharedStreamMasker, StreamMasker, MAX_REFERENCE_LEN, MAX_SECRETS, MAX_SECRET_LEN,
};
pub use reference::{
    parse_reference, references, render, Reference, ReferenceError, RenderError, Rendered,
    Resolver, SecretText, MAX_REFERENCES, MAX_TEMPLATE_LEN,
};
pub use uri::{
    render_uris, template_uris, KeychainRef, RenderedUris, SecretUri, UriError, UriErrorKind,
    UriResolver, VaultRef, MAX_SEGMENT_LEN, MAX_URI_LEN,
};
pub use variants::Form;
