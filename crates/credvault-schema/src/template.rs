//! `{{field}}` templates in `test` and `authenticate`, and the requests they render to.

use crate::value::{Credential, SecretValue};

#[derive(Clone, Debug)]
enum Part {
    Lit(String),
    Field(usize),
}

/// A parsed template: literal text and field references.
#[derive(Clone, Debug)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

/// Longest template accepted.
const MAX_TEMPLATE: usize = 4096;

impl Template {
    /// Parses `{{ key }}` references (spaces inside the braces allowed) against the type's
    /// fields. Errors name the problem, never the template text.
    pub(crate) fn parse(
        text: &str,
        index: &rustc_hash::FxHashMap<String, usize>,
    ) -> Result<Self, String> {
        if text.len() > MAX_TEMPLATE {
            return Err(format!("template longer than {MAX_TEMPLATE} bytes"));
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Lit(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or("a `{{` is not closed by `}}`")?;
            let key = after[..close].trim();
            let i = *index
                .get(key)
                .ok_or_else(|| format!("template refers to unknown field `{}`", truncate(key)))?;
            parts.push(Part::Field(i));
            rest = &after[close + 2..];
        }
        if rest.contains("}}") {
            return Err("a `}}` has no opening `{{`".to_owned());
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// Fills the template from a credential; an unset field renders empty.
    pub(crate) fn render(&self, cred: &Credential) -> SecretValue {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Field(i) => {
                    if let Some(v) = cred.value(*i) {
                        v.render(&mut out);
                    }
                }
            }
        }
        SecretValue::new(out)
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// An HTTP request part list: (name, value) pairs, both rendered from templates. Values may
/// hold secrets, so both sides are [`SecretValue`]s.
pub type Pairs = Vec<(SecretValue, SecretValue)>;

/// The authentication parts of a request, rendered from a credential.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct RenderedAuth {
    /// Headers to set.
    pub headers: Pairs,
    /// Query parameters to add.
    pub query: Pairs,
    /// Body parameters to add.
    pub body: Pairs,
    /// Basic authentication (user name, password).
    pub basic: Option<(SecretValue, SecretValue)>,
}

/// A test request rendered from a credential, with the type's authentication applied (unless
/// the test turns it off).
#[derive(Debug)]
#[non_exhaustive]
pub struct RenderedRequest {
    /// HTTP method.
    pub method: String,
    /// URL (may hold secrets, e.g. a key in the query).
    pub url: SecretValue,
    /// Headers, query and body parameters, and basic authentication.
    pub parts: RenderedAuth,
    /// How body parameters are encoded.
    pub body_format: crate::BodyFormat,
    /// Accepted status codes.
    pub success_status: Vec<u16>,
    /// A dotted path that must exist in the JSON response.
    pub success_json_path: Option<Vec<String>>,
}

/// Compiled `(name template, value template)` pairs.
pub(crate) type TemplatePairs = Vec<(Template, Template)>;

/// The compiled `authenticate` block.
#[derive(Clone, Debug, Default)]
pub(crate) struct CompiledAuth {
    pub(crate) headers: TemplatePairs,
    pub(crate) query: TemplatePairs,
    pub(crate) body: TemplatePairs,
    pub(crate) basic: Option<(Template, Template)>,
}

impl CompiledAuth {
    pub(crate) fn render_into(&self, cred: &Credential, out: &mut RenderedAuth) {
        let render = |pairs: &TemplatePairs, out: &mut Pairs| {
            for (k, v) in pairs {
                out.push((k.render(cred), v.render(cred)));
            }
        };
        render(&self.headers, &mut out.headers);
        render(&self.query, &mut out.query);
        render(&self.body, &mut out.body);
        if let Some((u, p)) = &self.basic {
            out.basic = Some((u.render(cred), p.render(cred)));
        }
    }
}

/// The compiled HTTP test request.
#[derive(Clone, Debug)]
pub(crate) struct CompiledRequest {
    pub(crate) method: String,
    pub(crate) url: Template,
    pub(crate) extra: CompiledAuth,
    pub(crate) body_format: crate::BodyFormat,
    pub(crate) authenticate: bool,
    pub(crate) status: Vec<u16>,
    pub(crate) json_path: Option<Vec<String>>,
}
