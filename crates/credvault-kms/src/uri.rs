//! Master-key URIs: where a vault's master key lives, written without any secret.
//!
//! | URI | provider |
//! |---|---|
//! | `file:PATH` | a local keyring's key text in an owner-only file (also a mounted Kubernetes Secret) |
//! | `env:VAR` | a local keyring's key text in an environment variable (also a Secret exposed as one) |
//! | `keychain:SERVICE/ACCOUNT` | a local keyring's key text in the OS keychain (`keychain://` also accepted) |
//! | `pkcs11:token=T;object=O?module-path=P[&pin-source=F]` | an AES-256 key object in a PKCS#11 token (RFC 7512) |
//! | `aws-kms://KEY` | an AWS KMS key: a key id, a key ARN, `alias/NAME` or an alias ARN |

use std::fmt;
use std::path::PathBuf;

/// The keychain stores a `keychain:` URI may name.
pub const KEYCHAIN_STORES: [&str; 4] = ["keyutils", "secret-service", "macos", "windows"];

/// Longest master-key URI accepted, in bytes.
pub const MAX_URI_LEN: usize = 4096;

/// Why a master-key URI was refused. Names the part and the reason, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("master key URI: {part}: {reason}")]
pub struct UriError {
    /// Which part of the URI (`scheme`, `token`, `module-path`, ...).
    pub part: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

fn err(part: &'static str, reason: &'static str) -> UriError {
    UriError { part, reason }
}

/// Where a master key lives. [`fmt::Display`] writes the canonical URI, which
/// [`MasterUri::parse`] reads back to an equal value; neither ever holds a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MasterUri {
    /// `file:PATH`: a local keyring's key text in an owner-only file.
    File(PathBuf),
    /// `env:VAR`: a local keyring's key text in an environment variable.
    Env(String),
    /// `keychain:SERVICE/ACCOUNT`: a local keyring's key text in the OS keychain.
    Keychain {
        /// The entry's service.
        service: String,
        /// The entry's account (user).
        account: String,
        /// `?store=`: `keyutils`, `secret-service`, `macos` or `windows`; `None` for the
        /// platform's default.
        store: Option<String>,
    },
    /// `pkcs11:...`: a key object in a PKCS#11 token.
    Pkcs11(Pkcs11Uri),
    /// `aws-kms://KEY`: an AWS KMS key.
    AwsKms {
        /// A key id, key ARN, `alias/NAME` or alias ARN, as KMS takes it.
        key: String,
    },
}

/// An RFC 7512 PKCS#11 URI naming a token (by label: slot ids change) and a key object (by
/// label; versions are objects labelled `OBJECT.vN`, see [`crate::pkcs11`]).
///
/// The PIN is never part of it: `pin-value` is refused. It comes from `pin-source` (an
/// owner-only file) or the `CREDVAULT_PKCS11_PIN` environment variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// The token's label (`token=`).
    pub token: String,
    /// The key object's label (`object=`), without a version suffix.
    pub object: String,
    /// The PKCS#11 module to load (`module-path=`).
    pub module_path: PathBuf,
    /// A file holding the user PIN (`pin-source=`, `file:` or an absolute path).
    pub pin_source: Option<PathBuf>,
}

impl MasterUri {
    /// Parses a master-key URI.
    ///
    /// # Errors
    /// [`UriError`] naming the part at fault: unknown scheme, empty or over-long parts, a
    /// `pin-value` (a PIN must not be written into a URI), bad percent-encoding.
    pub fn parse(s: &str) -> Result<Self, UriError> {
        let uri = Self::parse_unchecked(s)?;
        // Percent-encoding may write a part longer than it was read (`@` becomes `%40`):
        // what parses must also write back within the limit, so it can be read again.
        if uri.to_string().len() > MAX_URI_LEN {
            return Err(err(
                "uri",
                "longer than 4096 bytes once written canonically",
            ));
        }
        Ok(uri)
    }

    fn parse_unchecked(s: &str) -> Result<Self, UriError> {
        if s.len() > MAX_URI_LEN {
            return Err(err("uri", "longer than 4096 bytes"));
        }
        if s.chars().any(char::is_control) {
            return Err(err("uri", "contains a control character"));
        }
        if let Some(path) = s.strip_prefix("file:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(err("file", "empty path"));
            }
            return Ok(Self::File(PathBuf::from(path)));
        }
        if let Some(var) = s.strip_prefix("env:") {
            if var.is_empty() || !var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(err("env", "must be a variable name (letters, digits, _)"));
            }
            return Ok(Self::Env(var.to_owned()));
        }
        if let Some(rest) = s.strip_prefix("keychain:") {
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            let (rest, store) = match rest.split_once('?') {
                Some((r, q)) => {
                    let name = q
                        .strip_prefix("store=")
                        .filter(|n| KEYCHAIN_STORES.contains(n))
                        .ok_or_else(|| {
                            err(
                                "keychain store",
                                "must be ?store=keyutils, secret-service, macos or windows",
                            )
                        })?;
                    (r, Some(name.to_owned()))
                }
                None => (rest, None),
            };
            let (service, account) = rest
                .split_once('/')
                .ok_or_else(|| err("keychain", "must be SERVICE/ACCOUNT"))?;
            if service.is_empty() || account.is_empty() || account.contains(['/', '?']) {
                return Err(err("keychain", "must be SERVICE/ACCOUNT, both non-empty"));
            }
            return Ok(Self::Keychain {
                service: service.to_owned(),
                account: account.to_owned(),
                store,
            });
        }
        if let Some(key) = s.strip_prefix("aws-kms://") {
            if key.is_empty() || key.len() > 2048 {
                return Err(err("aws-kms", "key must be 1..=2048 bytes"));
            }
            if !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_/:.".contains(&b))
            {
                return Err(err(
                    "aws-kms",
                    "key must be a key id, key ARN, alias/NAME or alias ARN",
                ));
            }
            return Ok(Self::AwsKms {
                key: key.to_owned(),
            });
        }
        if let Some(rest) = s.strip_prefix("pkcs11:") {
            return Pkcs11Uri::parse_body(rest).map(Self::Pkcs11);
        }
        Err(err(
            "scheme",
            "must be file:, env:, keychain:, pkcs11: or aws-kms://",
        ))
    }

    /// The URI's scheme, for messages and metrics.
    pub fn scheme(&self) -> &'static str {
        match self {
            Self::File(_) => "file",
            Self::Env(_) => "env",
            Self::Keychain { .. } => "keychain",
            Self::Pkcs11(_) => "pkcs11",
            Self::AwsKms { .. } => "aws-kms",
        }
    }
}

impl Pkcs11Uri {
    fn parse_body(rest: &str) -> Result<Self, UriError> {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut token = None;
        let mut object = None;
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (k, v) = attr
                .split_once('=')
                .ok_or_else(|| err("pkcs11 path", "attribute without ="))?;
            let slot = match k {
                "token" => &mut token,
                "object" => &mut object,
                "pin-value" => return Err(err(
                    "pin-value",
                    "a PIN must not be written into a URI: use pin-source= or CREDVAULT_PKCS11_PIN",
                )),
                // Other standard path attributes narrow the match; this provider finds the
                // token by label only, so they are refused rather than silently ignored.
                _ => return Err(err("pkcs11 path", "only token= and object= are supported")),
            };
            if slot.is_some() {
                return Err(err("pkcs11 path", "attribute given twice"));
            }
            *slot = Some(pct_decode(v, "pkcs11 path")?);
        }
        let mut module_path = None;
        let mut pin_source = None;
        for attr in query.split('&').filter(|a| !a.is_empty()) {
            let (k, v) = attr
                .split_once('=')
                .ok_or_else(|| err("pkcs11 query", "attribute without ="))?;
            let v = pct_decode(v, "pkcs11 query")?;
            match k {
                "module-path" => {
                    if module_path.replace(PathBuf::from(v)).is_some() {
                        return Err(err("module-path", "given twice"));
                    }
                }
                "pin-source" => {
                    let p = v.strip_prefix("file:").unwrap_or(&v);
                    let p = p.strip_prefix("//").unwrap_or(p);
                    if !p.starts_with('/') {
                        return Err(err("pin-source", "must be an absolute path or file: URI"));
                    }
                    if pin_source.replace(PathBuf::from(p)).is_some() {
                        return Err(err("pin-source", "given twice"));
                    }
                }
                "pin-value" => return Err(err(
                    "pin-value",
                    "a PIN must not be written into a URI: use pin-source= or CREDVAULT_PKCS11_PIN",
                )),
                _ => {
                    return Err(err(
                        "pkcs11 query",
                        "only module-path= and pin-source= are supported",
                    ))
                }
            }
        }
        let token = token.ok_or_else(|| err("token", "missing (token=LABEL)"))?;
        let object = object.ok_or_else(|| err("object", "missing (object=LABEL)"))?;
        let module_path = module_path
            .ok_or_else(|| err("module-path", "missing (module-path=/path/to/module.so)"))?;
        if token.is_empty() || token.len() > 32 {
            return Err(err("token", "label must be 1..=32 bytes"));
        }
        if object.is_empty() || object.len() > 64 {
            return Err(err("object", "label must be 1..=64 bytes"));
        }
        if !module_path.is_absolute() {
            return Err(err("module-path", "must be an absolute path"));
        }
        Ok(Self {
            token,
            object,
            module_path,
            pin_source,
        })
    }
}

/// Decodes RFC 3986 percent-encoding into UTF-8 text.
fn pct_decode(v: &str, part: &'static str) -> Result<String, UriError> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| core::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| err(part, "bad percent-encoding"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let s = String::from_utf8(out).map_err(|_| err(part, "not UTF-8 after decoding"))?;
    if s.chars().any(char::is_control) {
        return Err(err(part, "contains a control character"));
    }
    Ok(s)
}

/// Percent-encodes everything but RFC 3986 unreserved characters and `/`.
fn pct_encode(s: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            write!(f, "{}", b as char)?;
        } else {
            write!(f, "%{b:02X}")?;
        }
    }
    Ok(())
}

impl fmt::Display for MasterUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // `file://PATH` when the path itself starts with `//`, which parsing strips once.
            Self::File(p) if p.to_string_lossy().starts_with("//") => {
                write!(f, "file://{}", p.display())
            }
            Self::File(p) => write!(f, "file:{}", p.display()),
            Self::Env(v) => write!(f, "env:{v}"),
            Self::Keychain {
                service,
                account,
                store,
            } => {
                write!(f, "keychain:{service}/{account}")?;
                if let Some(s) = store {
                    write!(f, "?store={s}")?;
                }
                Ok(())
            }
            Self::AwsKms { key } => write!(f, "aws-kms://{key}"),
            Self::Pkcs11(p) => p.fmt(f),
        }
    }
}

impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("pkcs11:token=")?;
        pct_encode(&self.token, f)?;
        f.write_str(";object=")?;
        pct_encode(&self.object, f)?;
        f.write_str("?module-path=")?;
        pct_encode(&self.module_path.to_string_lossy(), f)?;
        if let Some(p) = &self.pin_source {
            f.write_str("&pin-source=file://")?;
            pct_encode(&p.to_string_lossy(), f)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for MasterUri {
    type Err = UriError;
    fn from_str(s: &str) -> Result<Self, UriError> {
        Self::parse(s)
    }
}
