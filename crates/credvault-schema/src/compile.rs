//! Checking a type definition and compiling it: regexes built once, templates parsed, defaults
//! validated, limits applied.

use std::collections::HashSet;
use std::sync::Arc;

use crate::def::{FieldDef, FieldKind, Format, TestKind, TypeDef};
use crate::error::DefinitionError;
use crate::formats;
use crate::matcher::Matcher;
use crate::template::{
    CompiledAuth, CompiledRequest, RenderedAuth, RenderedRequest, Template, TemplatePairs,
};
use crate::validate::Checked;
use crate::value::{Credential, FieldInfo};

/// Most fields a type may have (after inheritance).
pub const MAX_FIELDS: usize = 64;
/// Longest text value, in characters; also the default `max_length`.
pub const MAX_VALUE_LEN: u32 = 65_536;
/// Largest safe integer (2^53 − 1): integer fields stay within ±this, as JavaScript clients
/// and JSON Schema validators agree on it.
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;
/// Longest `pattern` in a definition.
pub const MAX_PATTERN_LEN: usize = 1024;
/// Most options of an `options` field.
pub const MAX_OPTIONS: usize = 256;

/// A checked, compiled field.
#[derive(Debug)]
pub(crate) struct Field {
    pub(crate) key: String,
    pub(crate) kind: FieldKind,
    pub(crate) secret: bool,
    pub(crate) required: bool,
    pub(crate) integer: bool,
    pub(crate) coerce: bool,
    pub(crate) min_len: u32,
    pub(crate) max_len: u32,
    pub(crate) min: Option<f64>,
    pub(crate) max: Option<f64>,
    pub(crate) options: Vec<String>,
    pub(crate) pattern: Option<Matcher>,
    pub(crate) format: Option<Format>,
    /// The default, already validated (never for secret fields).
    pub(crate) default: Option<Checked<'static>>,
    pub(crate) def: FieldDef,
}

/// A credential type, checked and compiled: what [`validate`](Self::validate) checks values
/// against. Built by a [`Registry`](crate::Registry).
#[derive(Debug)]
pub struct CredentialType {
    pub(crate) def: TypeDef,
    pub(crate) fields: Vec<Field>,
    pub(crate) index: rustc_hash::FxHashMap<String, usize>,
    pub(crate) auth: Option<CompiledAuth>,
    pub(crate) test_request: Option<CompiledRequest>,
}

fn valid_name(s: &str, allow_upper: bool) -> bool {
    let mut chars = s.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || (allow_upper && c.is_ascii_uppercase()));
    first_ok
        && s.len() <= 64
        && chars.all(|c| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || c == '_'
                || (allow_upper && c.is_ascii_uppercase())
        })
}

impl CredentialType {
    /// Checks and compiles a definition whose `extends` has already been resolved.
    pub(crate) fn compile(def: TypeDef) -> Result<Arc<Self>, DefinitionError> {
        let name = def.name.clone();
        let err = |path: &str, reason: &str| DefinitionError::new(&name, path, reason);
        if !valid_name(&def.name, false) {
            return Err(err(
                "name",
                "must be 1–64 of a–z, 0–9 and _, starting with a letter",
            ));
        }
        if def.display_name.trim().is_empty() || def.display_name.len() > 128 {
            return Err(err("display_name", "must be 1–128 bytes"));
        }
        if let Some(url) = &def.documentation_url {
            if !formats::matches(Format::Url, url) {
                return Err(err("documentation_url", "is not an absolute URL"));
            }
        }
        if def.fields.is_empty() {
            return Err(err("fields", "a type needs at least one field"));
        }
        if def.fields.len() > MAX_FIELDS {
            return Err(err("fields", &format!("more than {MAX_FIELDS} fields")));
        }
        let mut index = rustc_hash::FxHashMap::default();
        let mut fields = Vec::with_capacity(def.fields.len());
        for (i, f) in def.fields.iter().enumerate() {
            let field = compile_field(&name, i, f)?;
            if index.insert(field.key.clone(), i).is_some() {
                return Err(err(&format!("fields[{i}].key"), "duplicate key"));
            }
            fields.push(field);
        }
        // Templates in `authenticate` and `test`: errors name the definition path.
        let template =
            |text: &str, path: &str| Template::parse(text, &index).map_err(|r| err(path, &r));
        let pairs = |m: &std::collections::BTreeMap<String, String>,
                     path: &str|
         -> Result<TemplatePairs, DefinitionError> {
            m.iter()
                .map(|(k, v)| Ok((template(k, path)?, template(v, path)?)))
                .collect()
        };
        let auth = match &def.authenticate {
            None => None,
            Some(a) => {
                let basic = match &a.basic {
                    None => None,
                    Some(b) => Some((
                        template(&b.username, "authenticate.basic.username")?,
                        template(&b.password, "authenticate.basic.password")?,
                    )),
                };
                Some(CompiledAuth {
                    headers: pairs(&a.headers, "authenticate.headers")?,
                    query: pairs(&a.query, "authenticate.query")?,
                    body: pairs(&a.body, "authenticate.body")?,
                    basic,
                })
            }
        };
        let test_request = match &def.test {
            None => None,
            Some(t) if t.kind != TestKind::Http => {
                if t.request.is_some() || t.success.is_some() {
                    return Err(err("test", "request and success apply to http tests only"));
                }
                None
            }
            Some(t) => {
                let Some(r) = &t.request else {
                    return Err(err("test.request", "an http test needs a request"));
                };
                let method = r.method.to_ascii_uppercase();
                if !["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"].contains(&method.as_str()) {
                    return Err(err(
                        "test.request.method",
                        "must be GET, POST, PUT, PATCH, DELETE or HEAD",
                    ));
                }
                let url = template(&r.url, "test.request.url")?;
                let (status, json_path) = match &t.success {
                    None => (vec![200], None),
                    Some(s) => {
                        if s.status.is_empty() || s.status.iter().any(|c| !(100..=599).contains(c))
                        {
                            return Err(err(
                                "test.success.status",
                                "must list status codes between 100 and 599",
                            ));
                        }
                        let path = match &s.json_path {
                            None => None,
                            Some(p) => {
                                let segs: Vec<String> = p.split('.').map(str::to_owned).collect();
                                if p.len() > 256 || segs.iter().any(String::is_empty) {
                                    return Err(err("test.success.json_path", "must be dot-separated non-empty segments, at most 256 bytes"));
                                }
                                Some(segs)
                            }
                        };
                        (s.status.clone(), path)
                    }
                };
                Some(CompiledRequest {
                    method,
                    url,
                    extra: CompiledAuth {
                        headers: pairs(&r.headers, "test.request.headers")?,
                        query: pairs(&r.query, "test.request.query")?,
                        body: pairs(&r.body, "test.request.body")?,
                        basic: None,
                    },
                    body_format: r.body_format,
                    authenticate: r.authenticate,
                    status,
                    json_path,
                })
            }
        };
        Ok(Arc::new(Self {
            def,
            fields,
            index,
            auth,
            test_request,
        }))
    }

    /// The type's name.
    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// The type's definition (inherited fields merged in).
    pub fn definition(&self) -> &TypeDef {
        &self.def
    }

    pub(crate) fn field_index(&self, key: &str) -> Option<usize> {
        self.index.get(key).copied()
    }

    /// Whether the field `key` exists and is secret.
    pub fn is_secret(&self, key: &str) -> Option<bool> {
        self.field_index(key).map(|i| self.fields[i].secret)
    }

    /// The fields, for user interfaces (`set` is `false`).
    pub fn fields_info(&self) -> Vec<FieldInfo> {
        self.fields
            .iter()
            .map(|f| FieldInfo {
                key: f.key.clone(),
                label: f.def.label.clone(),
                kind: f.kind,
                secret: f.secret,
                required: f.required,
                expirable: f.def.expirable,
                set: false,
                description: f.def.description.clone(),
                placeholder: f.def.placeholder.clone(),
                options: f.options.clone(),
                default: if f.secret {
                    None
                } else {
                    f.def.default.clone()
                },
            })
            .collect()
    }

    /// The authentication parts for an HTTP request, rendered from `credential`; `None` if the
    /// type has no `authenticate`. The values hold secrets.
    pub fn authenticate(&self, credential: &Credential) -> Option<RenderedAuth> {
        let auth = self.auth.as_ref()?;
        let mut out = RenderedAuth::default();
        auth.render_into(credential, &mut out);
        Some(out)
    }

    /// The HTTP test request rendered from `credential` (with authentication unless the test
    /// turns it off); `None` if the type has no HTTP test.
    pub fn test_request(&self, credential: &Credential) -> Option<RenderedRequest> {
        let t = self.test_request.as_ref()?;
        let mut parts = RenderedAuth::default();
        t.extra.render_into(credential, &mut parts);
        if t.authenticate {
            if let Some(auth) = &self.auth {
                auth.render_into(credential, &mut parts);
            }
        }
        Some(RenderedRequest {
            method: t.method.clone(),
            url: t.url.render(credential),
            parts,
            body_format: t.body_format,
            success_status: t.status.clone(),
            success_json_path: t.json_path.clone(),
        })
    }
}

fn compile_field(type_name: &str, i: usize, f: &FieldDef) -> Result<Field, DefinitionError> {
    let at = |what: &str| format!("fields[{i}].{what}");
    let err = |what: &str, reason: &str| DefinitionError::new(type_name, at(what), reason);
    if !valid_name(&f.key, true) {
        return Err(err(
            "key",
            "must be 1–64 of letters, digits and _, starting with a letter",
        ));
    }
    if f.label.trim().is_empty() || f.label.len() > 128 {
        return Err(err("label", "must be 1–128 bytes"));
    }
    let text = matches!(
        f.kind,
        FieldKind::String | FieldKind::Password | FieldKind::Hidden
    );
    let secret = f.kind == FieldKind::Password || f.secret;
    if !secret
        && f.reveal
            .is_some_and(|p| p != crate::def::RevealPolicy::Revealable)
    {
        return Err(err(
            "reveal",
            "only secret fields can be use-only or write-only",
        ));
    }
    if f.secret
        && !matches!(
            f.kind,
            FieldKind::String | FieldKind::Hidden | FieldKind::Password
        )
    {
        return Err(err(
            "secret",
            "only string and hidden fields can be marked secret",
        ));
    }
    if f.integer && f.kind != FieldKind::Number {
        return Err(err("integer", "applies to number fields only"));
    }
    if f.expirable && f.kind != FieldKind::Hidden {
        return Err(err("expirable", "applies to hidden fields only"));
    }
    if f.kind == FieldKind::Hidden && f.required {
        return Err(err(
            "required",
            "hidden fields are filled in by the system and cannot be required",
        ));
    }
    if f.coerce
        && !matches!(
            f.kind,
            FieldKind::String | FieldKind::Number | FieldKind::Boolean
        )
    {
        return Err(err(
            "coerce",
            "applies to string, number and boolean fields only",
        ));
    }
    if f.kind == FieldKind::Options {
        if f.options.is_empty() || f.options.len() > MAX_OPTIONS {
            return Err(err(
                "options",
                &format!("an options field needs 1–{MAX_OPTIONS} options"),
            ));
        }
        let mut seen = HashSet::new();
        if f.options.iter().any(|o| o.len() > 256 || !seen.insert(o)) {
            return Err(err(
                "options",
                "options must be distinct and at most 256 bytes",
            ));
        }
    } else if !f.options.is_empty() {
        return Err(err("options", "applies to options fields only"));
    }
    if !text && (f.pattern.is_some() || f.min_length.is_some() || f.max_length.is_some()) {
        return Err(err(
            "pattern",
            "pattern, min_length and max_length apply to text fields only",
        ));
    }
    if f.kind != FieldKind::Number && (f.min.is_some() || f.max.is_some()) {
        return Err(err("min", "min and max apply to number fields only"));
    }
    if let Some(format) = f.format {
        let ok = text || (format == Format::Port && f.kind == FieldKind::Number);
        if !ok {
            return Err(err(
                "format",
                "formats apply to text fields (and port to numbers)",
            ));
        }
    }
    let mut max_len = f.max_length.unwrap_or(MAX_VALUE_LEN);
    if max_len > MAX_VALUE_LEN {
        return Err(err("max_length", &format!("at most {MAX_VALUE_LEN}")));
    }
    if f.format == Some(Format::Hostname) {
        max_len = max_len.min(formats::HOSTNAME_MAX);
    }
    let min_len = f.min_length.unwrap_or(0);
    if min_len > max_len {
        return Err(err("min_length", "greater than max_length"));
    }
    let (mut min, mut max) = (f.min, f.max);
    for (v, what) in [(min, "min"), (max, "max")] {
        if v.is_some_and(|v| !v.is_finite()) {
            return Err(err(what, "must be finite"));
        }
    }
    if f.integer {
        let lo = -(MAX_SAFE_INTEGER as f64);
        let hi = MAX_SAFE_INTEGER as f64;
        min = Some(min.map_or(lo, |m| m.max(lo)));
        max = Some(max.map_or(hi, |m| m.min(hi)));
    }
    if f.format == Some(Format::Port) && f.kind == FieldKind::Number {
        min = Some(min.map_or(1.0, |m| m.max(1.0)));
        max = Some(max.map_or(65535.0, |m| m.min(65535.0)));
    }
    if let (Some(lo), Some(hi)) = (min, max) {
        if lo > hi {
            return Err(err("min", "greater than max"));
        }
    }
    let pattern = match &f.pattern {
        None => None,
        Some(p) => {
            if p.len() > MAX_PATTERN_LEN {
                return Err(err(
                    "pattern",
                    &format!("longer than {MAX_PATTERN_LEN} bytes"),
                ));
            }
            Some(Matcher::new(p, 1 << 20).map_err(|_| {
                err(
                    "pattern",
                    "is not a valid regular expression (or compiles too large)",
                )
            })?)
        }
    };
    let mut field = Field {
        key: f.key.clone(),
        kind: f.kind,
        secret,
        required: f.required,
        integer: f.integer,
        coerce: f.coerce,
        min_len,
        max_len,
        min,
        max,
        options: f.options.clone(),
        pattern,
        format: f.format,
        default: None,
        def: f.clone(),
    };
    if let Some(d) = &f.default {
        if secret {
            return Err(err("default", "secret fields cannot have a default"));
        }
        match field.check(d) {
            Ok(v) => field.default = Some(v.into_owned()),
            Err((rule, _)) => {
                return Err(err(
                    "default",
                    &format!("does not satisfy the field's own rules ({})", rule.name()),
                ));
            }
        }
    }
    Ok(field)
}
