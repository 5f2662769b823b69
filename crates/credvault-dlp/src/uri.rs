//! Secret URIs, the reference syntax for processes and templates:
//!
//! - `cv://[TENANT/]NAME/FIELD[?env=ENV]`: one field of a vault credential;
//! - `keychain://SERVICE/ACCOUNT`: one entry of the OS keychain.
//!
//! An environment variable whose whole value is a URI, or `{{ URI }}` in a template, is
//! replaced by the value at the last moment (`credvault run`, `credvault inject`). Segments
//! are percent-decoded: names may hold spaces and any Unicode, and `%2F`, `%3F`, `%25`, `%7D`
//! stand for `/`, `?`, `%` and `}`. The format is frozen in `docs/formats.md`.

use std::fmt;
use std::ops::Range;

use zeroize::Zeroizing;

use crate::reference::{substitute, RenderError, SecretText, MAX_REFERENCES, MAX_TEMPLATE_LEN};
use crate::Masker;

/// Longest URI accepted, in bytes.
pub const MAX_URI_LEN: usize = 2048;
/// Longest segment (tenant, name, field, service, account) once decoded, in bytes.
pub const MAX_SEGMENT_LEN: usize = 256;
/// Longest tenant id and environment (the store's rules).
const MAX_ID_LEN: usize = 64;

const VAULT_SCHEME: &str = "cv://";
const KEYCHAIN_SCHEME: &str = "keychain://";

/// A parsed secret URI.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum SecretUri {
    /// `cv://[TENANT/]NAME/FIELD[?env=ENV]`.
    Vault(VaultRef),
    /// `keychain://SERVICE/ACCOUNT`.
    Keychain(KeychainRef),
}

/// One field of a vault credential.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VaultRef {
    /// The tenant; `None`: the caller's default tenant.
    pub tenant: Option<String>,
    /// The credential's name.
    pub name: String,
    /// The field.
    pub field: String,
    /// The environment; `None`: the caller's default environment.
    pub environment: Option<String>,
}

/// One entry of the OS keychain.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeychainRef {
    /// The keychain service.
    pub service: String,
    /// The account (user) under the service.
    pub account: String,
}

/// What is wrong with a URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UriErrorKind {
    /// Neither `cv://` nor `keychain://`.
    Scheme,
    /// Longer than [`MAX_URI_LEN`], a segment longer than [`MAX_SEGMENT_LEN`], or a template
    /// longer than [`MAX_TEMPLATE_LEN`].
    TooLong,
    /// Not `[TENANT/]NAME/FIELD` (vault) or `SERVICE/ACCOUNT` (keychain).
    Segments,
    /// A segment is empty.
    EmptySegment,
    /// `%` not followed by two hex digits, or escapes that do not decode to UTF-8.
    Escape,
    /// A control character in a segment.
    Control,
    /// The tenant is not 1–64 of letters, digits, `_`, `-`, `.` starting with a letter or digit.
    Tenant,
    /// The environment is not 1–64 of letters, digits, `_`, `-`, `.`.
    Environment,
    /// A query parameter other than `env`, a repeated one, or an empty query.
    Query,
    /// A `keychain://` URI with a query.
    KeychainQuery,
    /// `{{ cv://` or `{{ keychain://` not closed by `}}`.
    Unclosed,
    /// More than [`MAX_REFERENCES`] URIs in one template.
    TooMany,
}

impl UriErrorKind {
    fn reason(self) -> &'static str {
        match self {
            Self::Scheme => "expected cv://[TENANT/]NAME/FIELD[?env=ENV] or keychain://SERVICE/ACCOUNT",
            Self::TooLong => "longer than the limit",
            Self::Segments => "expected cv://[TENANT/]NAME/FIELD or keychain://SERVICE/ACCOUNT (encode a `/` in a name as %2F)",
            Self::EmptySegment => "a name is empty",
            Self::Escape => "`%` must be followed by two hex digits that decode to UTF-8",
            Self::Control => "a name holds a control character",
            Self::Tenant => "the tenant must be 1-64 of letters, digits, `_`, `-`, `.`, starting with a letter or digit",
            Self::Environment => "env must be 1-64 of letters, digits, `_`, `-`, `.`",
            Self::Query => "the only parameter is env=ENV, given once",
            Self::KeychainQuery => "keychain:// takes no parameters",
            Self::Unclosed => "`{{` is not closed by `}}`",
            Self::TooMany => "too many references",
        }
    }
}

/// A malformed URI, or a template that cannot be read: what, and at which byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("secret reference at byte {position}: {}", .kind.reason())]
pub struct UriError {
    /// What is wrong.
    pub kind: UriErrorKind,
    /// Byte offset in the text given (the URI's start within a template).
    pub position: usize,
}

fn err(kind: UriErrorKind) -> UriError {
    UriError { kind, position: 0 }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode(seg: &str) -> Result<String, UriError> {
    let b = seg.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = b.get(i + 1).copied().and_then(hex);
            let lo = b.get(i + 2).copied().and_then(hex);
            match (hi, lo) {
                (Some(h), Some(l)) => out.push(h << 4 | l),
                _ => return Err(err(UriErrorKind::Escape)),
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let s = String::from_utf8(out).map_err(|_| err(UriErrorKind::Escape))?;
    if s.is_empty() {
        return Err(err(UriErrorKind::EmptySegment));
    }
    if s.len() > MAX_SEGMENT_LEN {
        return Err(err(UriErrorKind::TooLong));
    }
    if s.chars().any(char::is_control) {
        return Err(err(UriErrorKind::Control));
    }
    Ok(s)
}

fn id_ok(s: &str, first_alnum: bool) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && (!first_alnum || s.starts_with(|c: char| c.is_ascii_alphanumeric()))
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl SecretUri {
    /// Parses a URI (the whole text; no surrounding whitespace).
    ///
    /// # Errors
    /// [`UriError`] naming the rule broken; `position` is 0.
    pub fn parse(text: &str) -> Result<Self, UriError> {
        if text.len() > MAX_URI_LEN {
            return Err(err(UriErrorKind::TooLong));
        }
        if let Some(rest) = text.strip_prefix(VAULT_SCHEME) {
            let (path, query) = match rest.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (rest, None),
            };
            let segs: Vec<&str> = path.split('/').collect();
            let (tenant, name, field) = match segs.as_slice() {
                [n, f] => (None, *n, *f),
                [t, n, f] => (Some(*t), *n, *f),
                _ => return Err(err(UriErrorKind::Segments)),
            };
            let tenant = tenant.map(decode).transpose()?;
            if tenant.as_deref().is_some_and(|t| !id_ok(t, true)) {
                return Err(err(UriErrorKind::Tenant));
            }
            let name = decode(name)?;
            let field = decode(field)?;
            let mut environment = None;
            if let Some(q) = query {
                for pair in q.split('&') {
                    match pair.split_once('=') {
                        Some(("env", v)) if environment.is_none() => {
                            let v = decode(v).map_err(|_| err(UriErrorKind::Environment))?;
                            if !id_ok(&v, false) {
                                return Err(err(UriErrorKind::Environment));
                            }
                            environment = Some(v);
                        }
                        _ => return Err(err(UriErrorKind::Query)),
                    }
                }
            }
            Ok(Self::Vault(VaultRef {
                tenant,
                name,
                field,
                environment,
            }))
        } else if let Some(rest) = text.strip_prefix(KEYCHAIN_SCHEME) {
            if rest.contains('?') {
                return Err(err(UriErrorKind::KeychainQuery));
            }
            match rest.split('/').collect::<Vec<_>>().as_slice() {
                [s, a] => Ok(Self::Keychain(KeychainRef {
                    service: decode(s)?,
                    account: decode(a)?,
                })),
                _ => Err(err(UriErrorKind::Segments)),
            }
        } else {
            Err(err(UriErrorKind::Scheme))
        }
    }

    /// Whether `text` starts like a secret URI (`cv://` or `keychain://`): text that does is
    /// meant as one, and failing to parse it is an error rather than a literal value.
    pub fn looks_like(text: &str) -> bool {
        text.starts_with(VAULT_SCHEME) || text.starts_with(KEYCHAIN_SCHEME)
    }

    /// A short name for markers and messages, without the `cv://` scheme
    /// (`acme/github/token?env=prod`, `keychain:svc/account`): at most 200 bytes, never holding
    /// `[`, `]` or a control character. Names the reference, never a value.
    pub fn label(&self) -> String {
        let full = match self {
            Self::Vault(_) => self.to_string()[VAULT_SCHEME.len()..].to_owned(),
            Self::Keychain(k) => format!("keychain:{}/{}", Enc(&k.service), Enc(&k.account)),
        };
        if full.len() <= 200 {
            return full;
        }
        let mut end = 199;
        while !full.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}~", &full[..end])
    }
}

impl std::str::FromStr for SecretUri {
    type Err = UriError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A segment in its canonical encoding: `%`, `/`, `?`, `&`, `=`, `#`, `{`, `}`, `[`, `]` and
/// whitespace at either end are escaped; everything else (inner spaces, Unicode) stays.
struct Enc<'a>(&'a str);

impl fmt::Display for Enc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let first_inner = s.len() - s.trim_start().len();
        let last_inner = s.trim_end().len();
        for (i, c) in s.char_indices() {
            let edge_space = c.is_whitespace() && (i < first_inner || i >= last_inner);
            if edge_space || matches!(c, '%' | '/' | '?' | '&' | '=' | '#' | '{' | '}' | '[' | ']')
            {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    write!(f, "%{b:02X}")?;
                }
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for SecretUri {
    /// The canonical form; [`SecretUri::parse`] reads it back to the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Vault(v) => {
                f.write_str(VAULT_SCHEME)?;
                if let Some(t) = &v.tenant {
                    write!(f, "{}/", Enc(t))?;
                }
                write!(f, "{}/{}", Enc(&v.name), Enc(&v.field))?;
                if let Some(e) = &v.environment {
                    write!(f, "?env={}", Enc(e))?;
                }
                Ok(())
            }
            Self::Keychain(k) => write!(
                f,
                "{KEYCHAIN_SCHEME}{}/{}",
                Enc(&k.service),
                Enc(&k.account)
            ),
        }
    }
}

/// Every `{{ URI }}` in `text` (spaces inside the braces optional), with the byte range of the
/// whole `{{ ... }}`. A `{{` not followed by `cv://` or `keychain://` is ordinary text (other
/// template languages keep working); one that is must be a valid URI closed by `}}`.
///
/// # Errors
/// [`UriError`] for the first malformed reference (its `position` is where its `{{` starts),
/// a text longer than [`MAX_TEMPLATE_LEN`], or more than [`MAX_REFERENCES`] references.
pub fn template_uris(text: &str) -> Result<Vec<(Range<usize>, SecretUri)>, UriError> {
    if text.len() > MAX_TEMPLATE_LEN {
        return Err(err(UriErrorKind::TooLong));
    }
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find("{{") {
        let start = from + i;
        let at = |kind| UriError {
            kind,
            position: start,
        };
        let inner = &text[start + 2..];
        let body_start = start + 2 + (inner.len() - inner.trim_start_matches([' ', '\t']).len());
        if !SecretUri::looks_like(&text[body_start..]) {
            from = start + 2;
            continue;
        }
        let Some(close) = text[body_start..].find("}}") else {
            return Err(at(UriErrorKind::Unclosed));
        };
        let body = text[body_start..body_start + close].trim_end_matches([' ', '\t']);
        let uri = SecretUri::parse(body).map_err(|e| at(e.kind))?;
        if out.len() >= MAX_REFERENCES {
            return Err(at(UriErrorKind::TooMany));
        }
        let end = body_start + close + 2;
        out.push((start..end, uri));
        from = end;
    }
    Ok(out)
}

/// Looks up the value a [`SecretUri`] names (the vault, the keychain, or a test double).
pub trait UriResolver {
    /// The value, or why there is none (the reason must not contain a secret).
    ///
    /// # Errors
    /// A reason for the caller, e.g. "no such credential", "access denied".
    fn resolve(&self, uri: &SecretUri) -> Result<Zeroizing<String>, String>;
}

/// The result of [`render_uris`]: the text with values substituted, a masker for exactly those
/// values, and the URIs substituted, in order.
#[derive(Debug)]
pub struct RenderedUris {
    /// The rendered text.
    pub text: SecretText,
    /// Masks every value that was substituted, in all encoded forms, as `[cv:<label>]`
    /// ([`SecretUri::label`]).
    pub masker: Masker,
    /// The URIs substituted, in order.
    pub uris: Vec<SecretUri>,
}

/// Substitutes every `{{ URI }}` in `template` through `resolver`.
///
/// # Errors
/// [`RenderError::Uri`] for a malformed reference, [`RenderError::Resolve`] for a value the
/// resolver refused, [`RenderError::Masker`].
pub fn render_uris(
    template: &str,
    resolver: &dyn UriResolver,
) -> Result<RenderedUris, RenderError> {
    let refs = template_uris(template)?;
    let mut items = Vec::with_capacity(refs.len());
    for (range, uri) in refs {
        let value = resolver
            .resolve(&uri)
            .map_err(|reason| RenderError::Resolve {
                reference: uri.label(),
                reason,
            })?;
        items.push((range, uri, value));
    }
    let (text, masker) = substitute(
        template,
        items.iter().map(|(r, u, v)| (r.clone(), u.label(), v)),
    )?;
    Ok(RenderedUris {
        text,
        masker,
        uris: items.into_iter().map(|(_, u, _)| u).collect(),
    })
}
