//! Validation: JSON in, a typed [`Credential`] or every error out.
//!
//! Each field reports at most one error: the first rule it breaks, in this order — type,
//! min_length, max_length, options, pattern, format (text); type, integer, min, max
//! (numbers). Errors come in field order, then unknown keys.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::compile::{CredentialType, Field, MAX_FIELDS, MAX_SAFE_INTEGER};
use crate::def::{FieldKind, Format};
use crate::error::{cut, Limit, Rule, ValidationError, ValidationErrors};
use crate::formats;
use crate::value::{Builder, Credential, FieldValue, SecretStr, SECRET_MARKER};

/// Largest input [`CredentialType::validate_json`] reads.
pub const MAX_INPUT_BYTES: usize = 1 << 20;
/// Deepest nesting accepted in input JSON (a credential is flat; this bounds the work done on
/// hostile input before it is refused).
pub const MAX_DEPTH: usize = 32;
/// Most keys in an input object.
pub const MAX_INPUT_KEYS: usize = 256;
/// Most errors listed; past it, one `limit:errors` error ends the list.
pub const MAX_ERRORS: usize = 100;

type Check<T> = Result<T, (Rule, String)>;

/// A value that passed its field's rules, borrowing the input where it can.
#[derive(Clone, Debug)]
pub(crate) enum Checked<'v> {
    Text(Cow<'v, str>),
    Integer(i64),
    Number(f64),
    Bool(bool),
}

impl Checked<'_> {
    pub(crate) fn into_owned(self) -> Checked<'static> {
        match self {
            Self::Text(t) => Checked::Text(Cow::Owned(t.into_owned())),
            Self::Integer(i) => Checked::Integer(i),
            Self::Number(n) => Checked::Number(n),
            Self::Bool(b) => Checked::Bool(b),
        }
    }

    /// As a field value (`secret`: text is a secret).
    pub(crate) fn as_value(&self, secret: bool) -> FieldValue<'_> {
        match self {
            Self::Text(t) if secret => FieldValue::Secret(SecretStr::internal(t)),
            Self::Text(t) => FieldValue::Text(t),
            Self::Integer(i) => FieldValue::Integer(*i),
            Self::Number(n) => FieldValue::Number(*n),
            Self::Bool(b) => FieldValue::Bool(*b),
        }
    }
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::Url => "URL",
        Format::Email => "email address",
        Format::Hostname => "host name",
        Format::Port => "port (1–65535)",
        Format::Base32 => "base32 key",
        Format::Pem => "PEM block",
    }
}

fn fmt_num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e16 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

impl Field {
    /// Checks one value against the field's rules.
    pub(crate) fn check<'v>(&self, v: &'v Value) -> Check<Checked<'v>> {
        match self.kind {
            FieldKind::String | FieldKind::Password | FieldKind::Hidden | FieldKind::Options => {
                let text: Cow<'v, str> = match v {
                    Value::String(s) => Cow::Borrowed(s),
                    Value::Number(n) if self.coerce => Cow::Owned(n.to_string()),
                    Value::Bool(b) if self.coerce => {
                        Cow::Borrowed(if *b { "true" } else { "false" })
                    }
                    _ => {
                        let what = if self.kind == FieldKind::Options {
                            "one of the options (text)"
                        } else {
                            "text"
                        };
                        return Err((Rule::Type, format!("expected {what}")));
                    }
                };
                if text == SECRET_MARKER {
                    let why = if self.secret {
                        "the secret marker keeps a stored secret, and there is none to keep"
                    } else {
                        "the secret marker is only accepted by secret fields"
                    };
                    return Err((Rule::SecretMarker, why.into()));
                }
                self.check_text(&text)?;
                Ok(Checked::Text(text))
            }
            FieldKind::Number => {
                let n = match v {
                    Value::Number(n) => Num::from_json(n),
                    Value::String(s) if self.coerce => match s.trim().parse::<f64>() {
                        Ok(f) if f.is_finite() => Num::from_f64(f),
                        _ => return Err((Rule::Type, "expected a number".into())),
                    },
                    _ => {
                        let what = if self.integer {
                            "an integer"
                        } else {
                            "a number"
                        };
                        return Err((Rule::Type, format!("expected {what}")));
                    }
                };
                self.check_number(n)
            }
            FieldKind::Boolean => match v {
                Value::Bool(b) => Ok(Checked::Bool(*b)),
                Value::String(s) if self.coerce => match s.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" | "on" => Ok(Checked::Bool(true)),
                    "false" | "0" | "no" | "off" => Ok(Checked::Bool(false)),
                    _ => Err((Rule::Type, "expected true or false".into())),
                },
                Value::Number(n)
                    if self.coerce && (n.as_u64() == Some(0) || n.as_u64() == Some(1)) =>
                {
                    Ok(Checked::Bool(n.as_u64() == Some(1)))
                }
                _ => Err((Rule::Type, "expected true or false".into())),
            },
        }
    }

    fn check_text(&self, text: &str) -> Check<()> {
        // Characters, as JSON Schema counts them; more than 4 bytes per character is impossible,
        // so a long input is refused without counting.
        let too_long = || {
            (
                Rule::MaxLength,
                format!("longer than {} characters", self.max_len),
            )
        };
        if text.len() > 4 * self.max_len as usize {
            return Err(too_long());
        }
        let chars = if text.is_ascii() {
            text.len()
        } else {
            text.chars().count()
        };
        if chars < self.min_len as usize {
            return Err((
                Rule::MinLength,
                format!("shorter than {} characters", self.min_len),
            ));
        }
        if chars > self.max_len as usize {
            return Err(too_long());
        }
        if self.kind == FieldKind::Options && !self.options.iter().any(|o| o == text) {
            return Err((
                Rule::Options,
                format!("not one of: {}", self.options.join(", ")),
            ));
        }
        if let Some(re) = &self.pattern {
            if !re.is_match(text) {
                return Err((Rule::Pattern, "does not match the required pattern".into()));
            }
        }
        if let Some(f) = self.format {
            if !formats::matches(f, text) {
                return Err((Rule::Format(f), format!("not a valid {}", format_name(f))));
            }
        }
        Ok(())
    }

    fn check_number(&self, n: Num) -> Check<Checked<'static>> {
        if n.float.is_nan() {
            return Err((Rule::Type, "expected a number".into()));
        }
        if self.integer && n.int.is_none() && n.float.fract() != 0.0 {
            return Err((Rule::Integer, "not a whole number".into()));
        }
        if let Some(min) = self.min {
            if n.float < min {
                return Err((Rule::Minimum, format!("less than {}", fmt_num(min))));
            }
        }
        if let Some(max) = self.max {
            if n.float > max {
                return Err((Rule::Maximum, format!("greater than {}", fmt_num(max))));
            }
        }
        if self.integer {
            // Within ±(2^53 − 1) by the bounds above (integer fields always have them), so the
            // float is exact.
            let i = n.int.unwrap_or(n.float as i64);
            debug_assert!(i.abs() <= MAX_SAFE_INTEGER);
            Ok(Checked::Integer(i))
        } else {
            Ok(Checked::Number(n.float))
        }
    }
}

/// A JSON number as a float, and as an `i64` when it is one exactly.
#[derive(Clone, Copy)]
struct Num {
    float: f64,
    int: Option<i64>,
}

impl Num {
    fn from_json(n: &serde_json::Number) -> Self {
        Self {
            float: n.as_f64().unwrap_or(f64::NAN),
            int: n.as_i64(),
        }
    }

    fn from_f64(f: f64) -> Self {
        Self {
            float: f,
            int: None,
        }
    }
}

/// One field changed by a patch: metadata fields carry old and new values, secret fields only
/// their key (ready for an audit record).
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// The field.
    pub key: String,
    /// Whether it is secret (then `old` and `new` are `None`).
    pub secret: bool,
    /// The old value (`None`: unset, or secret).
    pub old: Option<Value>,
    /// The new value (`None`: unset, or secret).
    pub new: Option<Value>,
}

/// A patched credential and what changed.
#[derive(Debug)]
pub struct Patched {
    /// The credential after the patch.
    pub credential: Credential,
    /// The fields whose value changed, in field order.
    pub changes: Vec<Change>,
}

struct Errors(Vec<ValidationError>);

impl Errors {
    fn push(&mut self, path: &str, rule: Rule, message: String) {
        if self.0.len() < MAX_ERRORS {
            self.0.push(ValidationError {
                path: cut(path).to_owned(),
                rule,
                message,
            });
        } else if self.0.len() == MAX_ERRORS {
            self.0.push(ValidationError {
                path: String::new(),
                rule: Rule::Limit(Limit::Errors),
                message: format!("more than {MAX_ERRORS} errors; the rest are not listed"),
            });
        }
    }
}

fn single(path: &str, rule: Rule, message: String) -> ValidationErrors {
    ValidationErrors(vec![ValidationError {
        path: path.to_owned(),
        rule,
        message,
    }])
}

fn depth_ok(v: &Value) -> bool {
    let mut stack: Vec<(&Value, usize)> = vec![(v, 1)];
    while let Some((v, d)) = stack.pop() {
        if d > MAX_DEPTH {
            return false;
        }
        match v {
            Value::Array(a) => stack.extend(a.iter().map(|x| (x, d + 1))),
            Value::Object(o) => stack.extend(o.values().map(|x| (x, d + 1))),
            _ => {}
        }
    }
    true
}

/// Checks the shape limits and returns the object.
fn as_object(input: &Value) -> Result<&Map<String, Value>, ValidationErrors> {
    let Value::Object(obj) = input else {
        return Err(single(
            "",
            Rule::NotObject,
            "a credential must be a JSON object".into(),
        ));
    };
    if obj.len() > MAX_INPUT_KEYS {
        return Err(single(
            "",
            Rule::Limit(Limit::Keys),
            format!("more than {MAX_INPUT_KEYS} keys"),
        ));
    }
    // Values are flat; anything nested is a type error, but a hostile depth is refused whole.
    if obj
        .values()
        .any(|v| matches!(v, Value::Array(_) | Value::Object(_)))
        && !depth_ok(input)
    {
        return Err(single(
            "",
            Rule::Limit(Limit::Depth),
            format!("nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    Ok(obj)
}

/// Parses JSON text within the size limit; errors name the position, never the content.
pub(crate) fn parse_json(bytes: &[u8]) -> Result<Value, ValidationErrors> {
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(single(
            "",
            Rule::Limit(Limit::Size),
            format!("input larger than {MAX_INPUT_BYTES} bytes"),
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        single(
            "",
            Rule::Syntax,
            format!("not valid JSON (line {}, column {})", e.line(), e.column()),
        )
    })
}

impl CredentialType {
    /// Validates a JSON object against this type: a [`Credential`] with defaults applied and
    /// secrets in secret types, or every error.
    ///
    /// # Errors
    /// [`ValidationErrors`], one per offending field (and per unknown key), in field order.
    pub fn validate(self: &Arc<Self>, input: &Value) -> Result<Credential, ValidationErrors> {
        let obj = as_object(input)?;
        // One pass over the input, each key to its field by a hash lookup; then the fields in
        // order, so errors come in field order.
        let mut given: [Option<&Value>; MAX_FIELDS] = [None; MAX_FIELDS];
        let mut unknown = false;
        let (mut text_len, mut secret_len) = (0, 0);
        for (k, v) in obj {
            match self.index.get(k.as_str()) {
                Some(&i) => {
                    given[i] = Some(v);
                    if let Value::String(s) = v {
                        if self.fields[i].secret {
                            secret_len += s.len();
                        } else {
                            text_len += s.len();
                        }
                    }
                }
                None => unknown = true,
            }
        }
        let mut errors = Errors(Vec::new());
        let mut out = Builder::new(self.fields.len(), text_len + 64, secret_len);
        for (f, v) in self.fields.iter().zip(&given) {
            match *v {
                Some(v) => match f.check(v) {
                    Ok(c) => out.value(c.as_value(f.secret)),
                    Err((rule, message)) => {
                        errors.push(&f.key, rule, message);
                        out.unset();
                    }
                },
                None => match self.missing(f, &mut errors) {
                    Some(d) => out.value(d.as_value(false)),
                    None => out.unset(),
                },
            }
        }
        if unknown {
            self.unknown_keys(obj, &mut errors);
        }
        if errors.0.is_empty() {
            Ok(out.finish(Arc::clone(self)))
        } else {
            Err(ValidationErrors(errors.0))
        }
    }

    /// Parses JSON text (at most [`MAX_INPUT_BYTES`]) and validates it.
    ///
    /// # Errors
    /// As [`validate`](Self::validate), plus `syntax` and `limit:size`.
    pub fn validate_json(self: &Arc<Self>, bytes: &[u8]) -> Result<Credential, ValidationErrors> {
        self.validate(&parse_json(bytes)?)
    }

    /// Applies a partial update to `existing`: only the keys given change. `null` unsets an
    /// optional field. A secret field given [`SECRET_MARKER`] keeps its value (forms round-trip
    /// masked values); any other value replaces it. Required fields must stay set.
    ///
    /// # Errors
    /// [`ValidationErrors`] for every bad key or value; `type` (path empty) if `existing` is
    /// of another type.
    pub fn validate_patch(
        self: &Arc<Self>,
        existing: &Credential,
        patch: &Value,
    ) -> Result<Patched, ValidationErrors> {
        if existing.ty.name() != self.name() {
            return Err(single(
                "",
                Rule::Type,
                "the credential is of another type".into(),
            ));
        }
        let obj = as_object(patch)?;
        let mut errors = Errors(Vec::new());
        let mut out = Builder::new(self.fields.len(), 128, 64);
        let mut changes = Vec::new();
        let mut matched = 0usize;
        for (i, f) in self.fields.iter().enumerate() {
            let old = existing.value(i);
            let checked;
            let new: Option<FieldValue<'_>> = match obj.get(&f.key) {
                None => old,
                Some(v) => {
                    matched += 1;
                    match v {
                        Value::Null if f.required => {
                            errors.push(
                                &f.key,
                                Rule::Required,
                                "required field cannot be unset".into(),
                            );
                            old
                        }
                        Value::Null => None,
                        Value::String(s) if f.secret && s == SECRET_MARKER => old,
                        v => match f.check(v) {
                            Ok(c) => {
                                checked = c;
                                Some(checked.as_value(f.secret))
                            }
                            Err((rule, message)) => {
                                errors.push(&f.key, rule, message);
                                old
                            }
                        },
                    }
                }
            };
            let changed = match (&old, &new) {
                (None, None) => false,
                (Some(a), Some(b)) => !a.same_as(b),
                _ => true,
            };
            if changed {
                changes.push(Change {
                    key: f.key.clone(),
                    secret: f.secret,
                    old: if f.secret {
                        None
                    } else {
                        old.and_then(|v| v.to_public_json())
                    },
                    new: if f.secret {
                        None
                    } else {
                        new.and_then(|v| v.to_public_json())
                    },
                });
            }
            match new {
                Some(v) => out.value(v),
                None => out.unset(),
            }
        }
        if matched < obj.len() {
            self.unknown_keys(obj, &mut errors);
        }
        if errors.0.is_empty() {
            Ok(Patched {
                credential: out.finish(Arc::clone(self)),
                changes,
            })
        } else {
            Err(ValidationErrors(errors.0))
        }
    }

    fn missing<'f>(&self, f: &'f Field, errors: &mut Errors) -> Option<&'f Checked<'static>> {
        if let Some(d) = &f.default {
            return Some(d);
        }
        if f.required {
            errors.push(&f.key, Rule::Required, "required field is missing".into());
        }
        None
    }

    fn unknown_keys(&self, obj: &Map<String, Value>, errors: &mut Errors) {
        for k in obj.keys() {
            if !self.index.contains_key(k) {
                errors.push(
                    k,
                    Rule::UnknownField,
                    format!("not a field of type {}", self.name()),
                );
            }
        }
    }
}
