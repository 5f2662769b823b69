//! `credvault type ...`: the credential type catalog.
//!
//! Built-in types are always there; `--types PATH` (repeatable, a JSON file or a directory of
//! them) adds user types for the command. Registering a type in a vault (`type add`) comes with
//! the store.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use credvault_schema::{FieldKind, Registry, MAX_INPUT_BYTES};
use serde_json::json;

use crate::{Failure, Output};

#[derive(Debug, Subcommand)]
pub(crate) enum TypeCommand {
    /// List the credential types.
    List {
        #[command(flatten)]
        types: TypesArg,
    },
    /// Show a type's fields, test and authentication; or its definition (--json) or JSON Schema.
    Show {
        /// Type name (e.g. postgres).
        name: String,
        /// Print the JSON Schema (draft 2020-12) for forms instead.
        #[arg(long)]
        json_schema: bool,
        #[command(flatten)]
        types: TypesArg,
    },
    /// Validate a credential (a JSON object) against a type: exit 0 if valid, 1 with every error,
    /// one per line. Values are never printed; secrets are masked in --json output.
    Validate {
        /// Type name.
        name: String,
        /// The credential as JSON; `-` reads stdin.
        file: PathBuf,
        #[command(flatten)]
        types: TypesArg,
    },
    /// Register a type definition (JSON file) in the vault (`--vault`), for `credvault add`.
    Add {
        /// The definition.
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
pub(crate) struct TypesArg {
    /// User type definitions: a JSON file, or a directory of `*.json` files (repeatable).
    #[arg(long = "types", value_name = "PATH")]
    paths: Vec<PathBuf>,
}

fn registry(arg: &TypesArg) -> Result<Registry, Failure> {
    let mut r = Registry::with_builtins();
    let mut defs = Vec::new();
    for p in &arg.paths {
        let files: Vec<PathBuf> = if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| Failure::new(format!("cannot read {}: {e}", p.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "json"))
                .collect();
            v.sort();
            v
        } else {
            vec![p.clone()]
        };
        for f in files {
            let text = read_limited(&f, credvault_schema::MAX_DEFINITION_BYTES)?;
            let def = credvault_schema::parse_definition(&text)
                .map_err(|e| Failure::new(format!("{}: {e}", f.display())))?;
            defs.push(def);
        }
    }
    r.add_all(defs).map_err(|e| Failure::new(e.to_string()))?;
    Ok(r)
}

fn read_limited(path: &Path, limit: usize) -> Result<String, Failure> {
    let mut text = String::new();
    let read = if path == Path::new("-") {
        std::io::stdin()
            .take(limit as u64 + 1)
            .read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(limit as u64 + 1).read_to_string(&mut text))
    };
    read.map_err(|e| Failure::new(format!("cannot read {}: {e}", path.display())))?;
    if text.len() > limit {
        return Err(Failure::new(format!(
            "{}: larger than {limit} bytes",
            path.display()
        )));
    }
    Ok(text)
}

pub(crate) fn run(
    cmd: TypeCommand,
    vault: &crate::vault::VaultArgs,
    json_out: bool,
) -> Result<Output, Failure> {
    match cmd {
        TypeCommand::Add { file } => crate::vault::type_add(vault, &file),
        TypeCommand::List { types } => list(&registry(&types)?),
        TypeCommand::Show {
            name,
            json_schema,
            types,
        } => show(
            &registry(&types)?,
            &name,
            json_schema || json_out,
            json_schema,
        ),
        TypeCommand::Validate { name, file, types } => validate(&registry(&types)?, &name, &file),
    }
}

fn list(r: &Registry) -> Result<Output, Failure> {
    let mut text = String::new();
    let mut rows = Vec::new();
    for t in r.iter() {
        let d = t.definition();
        let test = d.test.as_ref().map_or("-", |t| t.kind.as_str());
        let builtin = r.builtin_names().iter().any(|n| n == t.name());
        text.push_str(&format!(
            "{:<28} {:<15} {:<9} {:>2} fields  {}{}\n",
            t.name(),
            d.category.as_str(),
            test,
            d.fields.len(),
            d.display_name,
            if builtin { "" } else { "  (user)" }
        ));
        rows.push(json!({
            "name": t.name(),
            "display_name": d.display_name,
            "category": d.category.as_str(),
            "description": d.description,
            "fields": d.fields.len(),
            "test": d.test.as_ref().map(|t| t.kind.as_str()),
            "builtin": builtin,
        }));
    }
    Ok(Output::Text {
        text,
        json: json!(rows),
    })
}

fn get<'r>(
    r: &'r Registry,
    name: &str,
) -> Result<&'r std::sync::Arc<credvault_schema::CredentialType>, Failure> {
    r.get(name).ok_or_else(|| {
        Failure::new(format!(
            "no credential type named `{name}` (see `credvault type list`)"
        ))
    })
}

fn show(r: &Registry, name: &str, json_out: bool, schema: bool) -> Result<Output, Failure> {
    let t = get(r, name)?;
    let d = t.definition();
    if json_out {
        let json = if schema {
            t.json_schema()
        } else {
            serde_json::to_value(d).map_err(|e| Failure::new(e.to_string()))?
        };
        // Pretty text for people (`--json-schema`), compact JSON under the global `--json`.
        let text = format!(
            "{}\n",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        );
        return Ok(Output::Text { text, json });
    }
    let mut text = format!(
        "{} ({}) — {}\n",
        d.display_name,
        t.name(),
        d.category.as_str()
    );
    if let Some(desc) = &d.description {
        text.push_str(&format!("{desc}\n"));
    }
    if let Some(url) = &d.documentation_url {
        text.push_str(&format!("docs: {url}\n"));
    }
    if let Some(p) = &d.extends {
        text.push_str(&format!("extends: {p}\n"));
    }
    text.push_str("fields:\n");
    for f in &d.fields {
        let mut flags = Vec::new();
        if f.required {
            flags.push("required".to_owned());
        }
        if f.kind == FieldKind::Password || f.secret {
            flags.push("secret".to_owned());
        }
        if let Some(v) = &f.default {
            flags.push(format!("default {v}"));
        }
        if let Some(fmt) = f.format {
            flags.push(format!("format {}", fmt.as_str()));
        }
        if !f.options.is_empty() {
            flags.push(format!("one of {}", f.options.join("|")));
        }
        if let Some(p) = &f.pattern {
            flags.push(format!("pattern {p}"));
        }
        match (f.min_length, f.max_length) {
            (Some(a), Some(b)) => flags.push(format!("{a}..{b} chars")),
            (None, Some(b)) => flags.push(format!("≤{b} chars")),
            (Some(a), None) => flags.push(format!("≥{a} chars")),
            (None, None) => {}
        }
        if f.min.is_some() || f.max.is_some() {
            let n = |x: Option<f64>| x.map_or(String::new(), |v| v.to_string());
            flags.push(format!("range {}..{}", n(f.min), n(f.max)));
        }
        text.push_str(&format!(
            "  {:<20} {:<8} {}{}\n",
            f.key,
            f.kind.as_str(),
            f.label,
            if flags.is_empty() {
                String::new()
            } else {
                format!("  [{}]", flags.join(", "))
            }
        ));
    }
    if let Some(test) = &d.test {
        let target = test
            .request
            .as_ref()
            .map(|r| format!(" {} {}", r.method, r.url))
            .unwrap_or_default();
        text.push_str(&format!("test: {}{target}\n", test.kind.as_str()));
    }
    if let Some(a) = &d.authenticate {
        let mut parts: Vec<String> = a.headers.keys().map(|h| format!("header {h}")).collect();
        parts.extend(a.query.keys().map(|q| format!("query {q}")));
        parts.extend(a.body.keys().map(|b| format!("body {b}")));
        if a.basic.is_some() {
            parts.push("basic auth".into());
        }
        text.push_str(&format!("authenticate: {}\n", parts.join(", ")));
    }
    Ok(Output::Text {
        text,
        json: serde_json::Value::Null,
    })
}

fn validate(r: &Registry, name: &str, file: &Path) -> Result<Output, Failure> {
    let t = get(r, name)?;
    let text = read_limited(file, MAX_INPUT_BYTES)?;
    match t.validate_json(text.as_bytes()) {
        Ok(c) => {
            let set = c.iter().count();
            let secrets = c.secrets().count();
            Ok(Output::Text {
                text: format!("valid {name} credential: {set} field(s) set, {secrets} secret\n"),
                json: json!({"valid": true, "credential": c.masked()}),
            })
        }
        Err(errors) => Err(Failure::lines(
            errors.errors().iter().map(ToString::to_string).collect(),
        )),
    }
}
