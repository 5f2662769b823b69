//! JSON Schema (draft 2020-12) export of a credential type, for forms in user interfaces.
//!
//! The schema accepts exactly the values [`CredentialType::validate`] accepts: formats are
//! written as `pattern`s (the same expressions the validator runs), lengths and ranges as
//! `minLength`/`maxLength`/`minimum`/`maximum`, including the global limits, and unknown keys
//! are refused. Secret fields are `writeOnly`; hidden fields `readOnly`.

use serde_json::{json, Map, Value};

use crate::compile::{CredentialType, Field};
use crate::def::{FieldKind, Format};
use crate::formats;

impl CredentialType {
    /// The type as a JSON Schema 2020-12 document.
    pub fn json_schema(&self) -> Value {
        let mut properties = Map::new();
        let mut required = Vec::new();
        for f in &self.fields {
            properties.insert(f.key.clone(), field_schema(f));
            if f.required && f.default.is_none() {
                required.push(Value::String(f.key.clone()));
            }
        }
        let mut schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": format!("urn:credvault:credential-type:{}", self.name()),
            "title": self.def.display_name,
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false,
        });
        if let (Some(d), Value::Object(o)) = (&self.def.description, &mut schema) {
            o.insert("description".into(), Value::String(d.clone()));
        }
        schema
    }
}

fn field_schema(f: &Field) -> Value {
    let mut s = Map::new();
    s.insert("title".into(), Value::String(f.def.label.clone()));
    if let Some(d) = &f.def.description {
        s.insert("description".into(), Value::String(d.clone()));
    }
    if let Some(p) = &f.def.placeholder {
        s.insert("examples".into(), json!([p]));
    }
    if let (Some(d), false) = (&f.def.default, f.secret) {
        s.insert("default".into(), d.clone());
    }
    if f.secret {
        s.insert("writeOnly".into(), Value::Bool(true));
    }
    if f.kind == FieldKind::Hidden {
        s.insert("readOnly".into(), Value::Bool(true));
    }
    let mut types = Vec::new();
    match f.kind {
        FieldKind::String | FieldKind::Password | FieldKind::Hidden | FieldKind::Options => {
            types.push("string");
            if f.min_len > 0 {
                s.insert("minLength".into(), json!(f.min_len));
            }
            s.insert("maxLength".into(), json!(f.max_len));
            if f.kind == FieldKind::Options {
                s.insert("enum".into(), json!(f.options));
            }
            let mut patterns: Vec<&str> = Vec::new();
            if let Some(re) = &f.pattern {
                patterns.push(re.as_str());
            }
            if let Some(fmt) = f.format {
                patterns.push(formats::pattern(fmt));
                s.insert("format".into(), Value::String(schema_format(fmt).into()));
            }
            match patterns.as_slice() {
                [] => {}
                [one] => {
                    s.insert("pattern".into(), Value::String((*one).to_owned()));
                }
                many => {
                    let all: Vec<Value> = many.iter().map(|p| json!({ "pattern": p })).collect();
                    s.insert("allOf".into(), Value::Array(all));
                }
            }
            if f.coerce {
                types.extend(["number", "boolean"]);
            }
        }
        FieldKind::Number => {
            types.push(if f.integer { "integer" } else { "number" });
            if let Some(min) = f.min {
                s.insert("minimum".into(), num(min));
            }
            if let Some(max) = f.max {
                s.insert("maximum".into(), num(max));
            }
            if f.coerce {
                types.push("string");
            }
        }
        FieldKind::Boolean => {
            types.push("boolean");
            if f.coerce {
                types.extend(["string", "number"]);
            }
        }
    }
    s.insert(
        "type".into(),
        if types.len() == 1 {
            json!(types[0])
        } else {
            json!(types)
        },
    );
    Value::Object(s)
}

fn num(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() <= 9_007_199_254_740_991.0 {
        json!(n as i64)
    } else {
        json!(n)
    }
}

/// The JSON Schema `format` annotation closest to ours (annotation only; the `pattern` is
/// what is enforced).
fn schema_format(f: Format) -> &'static str {
    match f {
        Format::Url => "uri",
        Format::Email => "email",
        Format::Hostname => "hostname",
        Format::Port => "credvault-port",
        Format::Base32 => "credvault-base32",
        Format::Pem => "credvault-pem",
    }
}
