//! Validated credentials: typed values, secret values that only an explicit call reveals, and
//! the masked and metadata views that are safe to serialize.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use zeroize::Zeroizing;

use crate::compile::CredentialType;
use crate::def::FieldKind;

/// What a set secret field shows in a masked view. A patch that sends this value back for a
/// secret field keeps the stored secret (user interfaces round-trip masked forms).
pub const SECRET_MARKER: &str = "__credvault_secret__";

/// A secret text value: not `Clone`, not `Serialize`, `Debug` redacted, wiped on drop. The
/// only way to the text is [`expose_secret`](Self::expose_secret).
pub struct SecretValue(Zeroizing<String>);

impl SecretValue {
    /// Wraps a secret.
    pub fn new(text: String) -> Self {
        Self(Zeroizing::new(text))
    }

    /// The secret text. Every call is a deliberate act: keep the result short-lived.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Its length in bytes (safe to show: it reveals no content).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

/// A secret inside a [`Credential`]: `Debug` redacted, not `Serialize`; the text is reachable
/// only through [`expose_secret`](Self::expose_secret). It borrows the credential, whose secret storage is
/// wiped when the credential is dropped.
#[derive(Clone, Copy)]
pub struct SecretStr<'a>(&'a str);

impl<'a> SecretStr<'a> {
    pub(crate) fn internal(s: &'a str) -> Self {
        Self(s)
    }

    /// The secret text. Every call is a deliberate act: keep the result short-lived.
    pub fn expose_secret(&self) -> &'a str {
        self.0
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretStr(<redacted>)")
    }
}

/// A field value of a validated credential, borrowed from it.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum FieldValue<'a> {
    /// Text (`string`, `options`, non-secret `hidden`).
    Text(&'a str),
    /// A whole number (`number` with `integer`).
    Integer(i64),
    /// A number.
    Number(f64),
    /// `boolean`.
    Bool(bool),
    /// A secret (`password`, or any field marked `secret`).
    Secret(SecretStr<'a>),
}

impl FieldValue<'_> {
    /// The value as JSON, or `None` for a secret.
    pub fn to_public_json(&self) -> Option<serde_json::Value> {
        Some(match *self {
            Self::Text(s) => serde_json::Value::String(s.to_owned()),
            Self::Integer(i) => serde_json::Value::from(i),
            Self::Number(n) => serde_json::Number::from_f64(n)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Self::Bool(b) => serde_json::Value::Bool(b),
            Self::Secret(_) => return None,
        })
    }

    /// Text for templates: numbers in decimal, booleans as `true`/`false`, secrets exposed.
    pub(crate) fn render(&self, out: &mut String) {
        match *self {
            Self::Text(s) => out.push_str(s),
            Self::Integer(i) => out.push_str(&i.to_string()),
            Self::Number(n) => out.push_str(&n.to_string()),
            Self::Bool(b) => out.push_str(if b { "true" } else { "false" }),
            Self::Secret(s) => out.push_str(s.expose_secret()),
        }
    }

    pub(crate) fn same_as(&self, other: &FieldValue<'_>) -> bool {
        match (*self, *other) {
            (Self::Text(a), FieldValue::Text(b)) => a == b,
            (Self::Integer(a), FieldValue::Integer(b)) => a == b,
            (Self::Number(a), FieldValue::Number(b)) => a == b,
            (Self::Bool(a), FieldValue::Bool(b)) => a == b,
            (Self::Secret(a), FieldValue::Secret(b)) => subtle::ConstantTimeEq::ct_eq(
                a.expose_secret().as_bytes(),
                b.expose_secret().as_bytes(),
            )
            .into(),
            _ => false,
        }
    }
}

/// Where a field's value lives in a credential.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Slot {
    Unset,
    Text(u32, u32),
    Integer(i64),
    Number(f64),
    Bool(bool),
    Secret(u32, u32),
}

/// Builds a credential's storage: non-secret text in one buffer, secret text in another that
/// is wiped on drop and never reallocated without wiping.
pub(crate) struct Builder {
    text: String,
    secret: Zeroizing<String>,
    slots: Vec<Slot>,
}

impl Builder {
    pub(crate) fn new(fields: usize, text_hint: usize, secret_hint: usize) -> Self {
        Self {
            text: String::with_capacity(text_hint),
            secret: Zeroizing::new(String::with_capacity(secret_hint)),
            slots: Vec::with_capacity(fields),
        }
    }

    pub(crate) fn unset(&mut self) {
        self.slots.push(Slot::Unset);
    }

    pub(crate) fn text(&mut self, s: &str, secret: bool) {
        if secret {
            if self.secret.len() + s.len() > self.secret.capacity() {
                // Grow by copying into a new buffer; the old one is wiped as it drops.
                let mut bigger = Zeroizing::new(String::with_capacity(
                    (self.secret.len() + s.len()).max(2 * self.secret.capacity()),
                ));
                bigger.push_str(&self.secret);
                self.secret = bigger;
            }
            let start = self.secret.len() as u32;
            self.secret.push_str(s);
            self.slots
                .push(Slot::Secret(start, self.secret.len() as u32));
        } else {
            let start = self.text.len() as u32;
            self.text.push_str(s);
            self.slots.push(Slot::Text(start, self.text.len() as u32));
        }
    }

    pub(crate) fn value(&mut self, v: FieldValue<'_>) {
        match v {
            FieldValue::Text(s) => self.text(s, false),
            FieldValue::Secret(s) => self.text(s.expose_secret(), true),
            FieldValue::Integer(i) => self.slots.push(Slot::Integer(i)),
            FieldValue::Number(n) => self.slots.push(Slot::Number(n)),
            FieldValue::Bool(b) => self.slots.push(Slot::Bool(b)),
        }
    }

    pub(crate) fn finish(self, ty: Arc<CredentialType>) -> Credential {
        Credential {
            ty,
            text: self.text,
            secret: self.secret,
            slots: self.slots,
        }
    }
}

/// A credential that passed validation: its type, and a value for every field that is set
/// (defaults applied). Not `Clone`, not `Serialize`: it holds secrets. Serialize
/// [`masked`](Self::masked) or [`metadata`](Self::metadata) instead.
pub struct Credential {
    pub(crate) ty: Arc<CredentialType>,
    text: String,
    secret: Zeroizing<String>,
    slots: Vec<Slot>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in self.iter() {
            m.entry(&k, &v);
        }
        m.finish()
    }
}

impl Credential {
    /// The value of the field at position `i`, if set.
    pub(crate) fn value(&self, i: usize) -> Option<FieldValue<'_>> {
        let range = |a: u32, b: u32| a as usize..b as usize;
        Some(match *self.slots.get(i)? {
            Slot::Unset => return None,
            Slot::Text(a, b) => FieldValue::Text(self.text.get(range(a, b))?),
            Slot::Secret(a, b) => FieldValue::Secret(SecretStr(self.secret.get(range(a, b))?)),
            Slot::Integer(n) => FieldValue::Integer(n),
            Slot::Number(n) => FieldValue::Number(n),
            Slot::Bool(b) => FieldValue::Bool(b),
        })
    }

    /// The credential's type.
    pub fn credential_type(&self) -> &Arc<CredentialType> {
        &self.ty
    }

    /// The type's name.
    pub fn type_name(&self) -> &str {
        self.ty.name()
    }

    /// The value of a field, if set. A secret field gives a [`FieldValue::Secret`], whose text
    /// only [`SecretStr::expose_secret`] reveals.
    pub fn get(&self, key: &str) -> Option<FieldValue<'_>> {
        self.value(self.ty.field_index(key)?)
    }

    /// The text of a secret field, if set: the explicit way to a secret.
    pub fn expose_secret(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            FieldValue::Secret(s) => Some(s.expose_secret()),
            _ => None,
        }
    }

    /// Every set field, in the type's order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, FieldValue<'_>)> {
        self.ty
            .fields
            .iter()
            .enumerate()
            .filter_map(|(i, f)| self.value(i).map(|v| (f.key.as_str(), v)))
    }

    /// Whether a field is set.
    pub fn is_set(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The non-secret fields as a JSON object (what a store keeps in clear beside the sealed
    /// secrets).
    pub fn public_json(&self) -> serde_json::Map<String, serde_json::Value> {
        self.iter()
            .filter_map(|(k, v)| v.to_public_json().map(|j| (k.to_owned(), j)))
            .collect()
    }

    /// The secret fields that are set, in order.
    pub fn secrets(&self) -> impl Iterator<Item = (&str, SecretStr<'_>)> {
        self.iter().filter_map(|(k, v)| match v {
            FieldValue::Secret(s) => Some((k, s)),
            _ => None,
        })
    }

    /// A view safe to serialize: secret fields that are set show [`SECRET_MARKER`].
    pub fn masked(&self) -> MaskedCredential {
        let fields = self
            .iter()
            .map(|(k, v)| {
                let json = v
                    .to_public_json()
                    .unwrap_or_else(|| serde_json::Value::String(SECRET_MARKER.to_owned()));
                (k.to_owned(), json)
            })
            .collect();
        MaskedCredential {
            type_name: self.ty.name().to_owned(),
            fields,
        }
    }

    /// The field list for a user interface, each with whether it is set; no values.
    pub fn metadata(&self) -> Vec<FieldInfo> {
        self.ty
            .fields_info()
            .into_iter()
            .enumerate()
            .map(|(i, mut info)| {
                info.set = self.value(i).is_some();
                info
            })
            .collect()
    }
}

/// A credential with its secrets masked. This is what may be logged, returned by an API, or
/// shown in a form.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MaskedCredential {
    /// The credential type.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Field values, secrets replaced by [`SECRET_MARKER`].
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// One field of a type, for user interfaces.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldInfo {
    /// Key.
    pub key: String,
    /// Label.
    pub label: String,
    /// Kind.
    pub kind: FieldKind,
    /// Whether it is secret (write-only).
    pub secret: bool,
    /// Whether a value must be given.
    pub required: bool,
    /// For `hidden`: refreshed by the system.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub expirable: bool,
    /// Whether the credential has a value for it (always `false` for a type's own list).
    pub set: bool,
    /// Help text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Placeholder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placeholder: Option<String>,
    /// Allowed values of an `options` field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// Default value (never for secret fields).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
}
