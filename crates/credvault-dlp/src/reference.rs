//! Secret references: `{{cv:<credential>/<field>}}` or `{{cv:<env>/<credential>/<field>}}`.
//! An agent writes the reference; [`render`] substitutes the value at the last moment and
//! returns a masker for exactly the values it used, to clean whatever comes back.

use std::fmt;
use std::ops::Range;

use zeroize::Zeroizing;

use crate::masker::{Masker, MaskerBuilder};

/// Longest template accepted by [`render`] and [`references`].
pub const MAX_TEMPLATE_LEN: usize = 1 << 20;
/// Most references in one template.
pub const MAX_REFERENCES: usize = 1024;

/// A parsed reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    /// The environment, if given (`production`, `staging`...).
    pub environment: Option<String>,
    /// The credential name.
    pub credential: String,
    /// The field.
    pub field: String,
}

impl Reference {
    /// `env/credential/field` or `credential/field`: the name used in markers.
    pub fn path(&self) -> String {
        match &self.environment {
            Some(e) => format!("{e}/{}/{}", self.credential, self.field),
            None => format!("{}/{}", self.credential, self.field),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{{cv:{}}}}}", self.path())
    }
}

/// A malformed reference: where, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("reference at byte {position}: {reason}")]
pub struct ReferenceError {
    /// Byte offset of the `{{cv:` that starts it.
    pub position: usize,
    /// What is wrong.
    pub reason: &'static str,
}

fn name_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// Parses one reference, the whole text being `{{cv:...}}`.
///
/// # Errors
/// [`ReferenceError`] naming the problem.
pub fn parse_reference(text: &str) -> Result<Reference, ReferenceError> {
    match references(text)?.as_slice() {
        [(r, reference)] if r.start == 0 && r.end == text.len() => Ok(reference.clone()),
        _ => Err(ReferenceError {
            position: 0,
            reason: "not a single {{cv:...}} reference",
        }),
    }
}

/// Every reference in `text`, with its byte range. A `{{` not followed by `cv:` is ordinary
/// text; a `{{cv:` that does not form a valid reference is an error.
///
/// # Errors
/// [`ReferenceError`] for the first malformed reference, or when the text is longer than
/// [`MAX_TEMPLATE_LEN`] or holds more than [`MAX_REFERENCES`].
pub fn references(text: &str) -> Result<Vec<(Range<usize>, Reference)>, ReferenceError> {
    if text.len() > MAX_TEMPLATE_LEN {
        return Err(ReferenceError {
            position: 0,
            reason: "template longer than the limit",
        });
    }
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find("{{cv:") {
        let start = from + i;
        let err = |reason| ReferenceError {
            position: start,
            reason,
        };
        let body_start = start + 5;
        let Some(close) = text[body_start..].find("}}") else {
            return Err(err("`{{cv:` is not closed by `}}`"));
        };
        let body = &text[body_start..body_start + close];
        if body.len() > 3 * 128 + 2 {
            return Err(err("reference too long"));
        }
        let parts: Vec<&str> = body.split('/').collect();
        let (environment, credential, field) = match parts.as_slice() {
            [c, f] => (None, *c, *f),
            [e, c, f] => (Some(*e), *c, *f),
            _ => {
                return Err(err(
                    "expected credential/field or environment/credential/field",
                ))
            }
        };
        if !parts.iter().all(|p| name_ok(p)) {
            return Err(err("names are 1–128 of letters, digits, `.`, `_` and `-`, starting with a letter or digit"));
        }
        if out.len() >= MAX_REFERENCES {
            return Err(err("too many references"));
        }
        let end = body_start + close + 2;
        out.push((
            start..end,
            Reference {
                environment: environment.map(str::to_owned),
                credential: credential.to_owned(),
                field: field.to_owned(),
            },
        ));
        from = end;
    }
    Ok(out)
}

/// Looks up the value of a reference (the credential store, or a test double).
pub trait Resolver {
    /// The value, or why there is none (the reason must not contain a secret).
    ///
    /// # Errors
    /// A reason for the caller, e.g. "no such credential", "access denied".
    fn resolve(&self, reference: &Reference) -> Result<Zeroizing<String>, String>;
}

/// Text with secrets substituted: `Debug` redacted, wiped on drop.
pub struct SecretText(Zeroizing<String>);

impl SecretText {
    /// The text. Hand it to the consumer (a child process, an HTTP client) and nowhere else.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretText(<redacted>)")
    }
}

/// The result of [`render`]: the text with values substituted, and a masker for exactly those
/// values (to clean the consumer's output).
#[derive(Debug)]
pub struct Rendered {
    /// The rendered text.
    pub text: SecretText,
    /// Masks every value that was substituted, in all encoded forms, as `[cv:<path>]`.
    pub masker: Masker,
    /// The references substituted, in order.
    pub references: Vec<Reference>,
}

/// Why a template could not be rendered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// A malformed reference.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// A malformed secret URI (`{{ cv://... }}`).
    #[error(transparent)]
    Uri(#[from] crate::uri::UriError),
    /// The resolver had no value.
    #[error("{reference}: {reason}")]
    Resolve {
        /// The reference's path.
        reference: String,
        /// The resolver's reason.
        reason: String,
    },
    /// The masker for the used values could not be built.
    #[error("masker: {0}")]
    Masker(String),
}

/// Substitutes every `{{cv:...}}` in `template` through `resolver`.
///
/// # Errors
/// [`RenderError`]: a malformed reference, a value the resolver refused, or a masker failure.
pub fn render(template: &str, resolver: &dyn Resolver) -> Result<Rendered, RenderError> {
    let refs = references(template)?;
    // Resolve everything first, so the output buffer is sized once and never reallocated
    // (a reallocation would leave a copy of the secrets behind).
    let mut values = Vec::with_capacity(refs.len());
    for (_, reference) in &refs {
        let value = resolver
            .resolve(reference)
            .map_err(|reason| RenderError::Resolve {
                reference: reference.path(),
                reason,
            })?;
        values.push(value);
    }
    let (text, masker) = substitute(
        template,
        refs.iter()
            .zip(&values)
            .map(|((range, reference), value)| (range.clone(), reference.path(), value)),
    )?;
    Ok(Rendered {
        text,
        masker,
        references: refs.into_iter().map(|(_, r)| r).collect(),
    })
}

/// Replaces each range of `template` by its value (ranges in order, not overlapping), and
/// builds a masker for the values used, each named by its label.
pub(crate) fn substitute<'v>(
    template: &str,
    items: impl IntoIterator<Item = (Range<usize>, String, &'v Zeroizing<String>)>,
) -> Result<(SecretText, Masker), RenderError> {
    let items: Vec<_> = items.into_iter().collect();
    // Sized once and never reallocated (a reallocation would leave a copy of the secrets).
    let size = template.len() + items.iter().map(|(_, _, v)| v.len()).sum::<usize>();
    let mut out = Zeroizing::new(String::with_capacity(size));
    let mut builder = MaskerBuilder::new();
    let mut pos = 0;
    for (range, label, value) in items {
        out.push_str(&template[pos..range.start]);
        out.push_str(value);
        pos = range.end;
        // The caller used this value: mask it even if short (forced).
        if !value.is_empty() {
            builder
                .add_forced(&label, value)
                .map_err(|e| RenderError::Masker(e.to_string()))?;
        }
    }
    out.push_str(&template[pos..]);
    let masker = builder
        .build()
        .map_err(|e| RenderError::Masker(e.to_string()))?;
    Ok((SecretText(out), masker))
}
