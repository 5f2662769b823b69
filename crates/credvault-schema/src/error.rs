//! Errors: definition errors (a type is malformed) and validation errors (a credential does not
//! fit its type). Neither ever holds a field's value.

use std::fmt;

use crate::def::Format;

/// Which rule a value broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rule {
    /// The input is not a JSON object.
    NotObject,
    /// The input is not JSON.
    Syntax,
    /// A required field is missing (or, in a patch, set to null).
    Required,
    /// A field the type does not have.
    UnknownField,
    /// The value has the wrong JSON type.
    Type,
    /// Shorter than `min_length`.
    MinLength,
    /// Longer than `max_length` (or the global value limit).
    MaxLength,
    /// Not one of the `options`.
    Options,
    /// Does not match `pattern`.
    Pattern,
    /// Not in the field's `format`.
    Format(Format),
    /// Below `min`.
    Minimum,
    /// Above `max`.
    Maximum,
    /// Not a whole number (or outside ±(2^53 − 1)).
    Integer,
    /// A size limit on the input (bytes, nesting depth, number of keys, number of errors).
    Limit(Limit),
    /// The value is [`SECRET_MARKER`](crate::SECRET_MARKER): only a secret field in a patch
    /// accepts it (meaning "keep the stored secret"); anywhere else it would be stored as if it
    /// were a value, and shown masked ever after.
    SecretMarker,
}

/// Which input limit was exceeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// The input is larger than [`MAX_INPUT_BYTES`](crate::MAX_INPUT_BYTES).
    Size,
    /// The input nests deeper than [`MAX_DEPTH`](crate::MAX_DEPTH).
    Depth,
    /// The input object has more than [`MAX_INPUT_KEYS`](crate::MAX_INPUT_KEYS) keys.
    Keys,
    /// More than [`MAX_ERRORS`](crate::MAX_ERRORS) errors; the rest are not listed.
    Errors,
}

impl Rule {
    /// A short stable name (`required`, `max_length`, `format:url`...).
    pub fn name(self) -> String {
        match self {
            Self::NotObject => "not_object".into(),
            Self::Syntax => "syntax".into(),
            Self::Required => "required".into(),
            Self::UnknownField => "unknown_field".into(),
            Self::Type => "type".into(),
            Self::MinLength => "min_length".into(),
            Self::MaxLength => "max_length".into(),
            Self::Options => "options".into(),
            Self::Pattern => "pattern".into(),
            Self::Format(f) => format!("format:{}", f.as_str()),
            Self::Minimum => "min".into(),
            Self::Maximum => "max".into(),
            Self::Integer => "integer".into(),
            Self::SecretMarker => "secret_marker".into(),
            Self::Limit(Limit::Size) => "limit:size".into(),
            Self::Limit(Limit::Depth) => "limit:depth".into(),
            Self::Limit(Limit::Keys) => "limit:keys".into(),
            Self::Limit(Limit::Errors) => "limit:errors".into(),
        }
    }
}

/// One reason a credential does not fit its type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationError {
    /// The field key (empty for the whole input). Keys longer than 64 characters are cut.
    pub path: String,
    /// The rule broken.
    pub rule: Rule,
    /// A sentence for people. Names the field and the rule's parameter, never the value.
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every reason a credential does not fit its type, in field order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl ValidationErrors {
    /// The errors.
    pub fn errors(&self) -> &[ValidationError] {
        &self.0
    }

    /// `(path, rule)` of each error, for tests and programs.
    pub fn rules(&self) -> Vec<(&str, Rule)> {
        self.0.iter().map(|e| (e.path.as_str(), e.rule)).collect()
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A credential type definition that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("credential type {type_name}: {path}: {reason}")]
pub struct DefinitionError {
    /// The type's name (as far as it could be read).
    pub type_name: String,
    /// Where in the definition (`fields[2].pattern`, `extends`...).
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

impl DefinitionError {
    pub(crate) fn new(type_name: &str, path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            type_name: cut(type_name).to_owned(),
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// At most 64 characters of a name taken from input.
pub(crate) fn cut(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
