//! The built-in catalog: every type loads; its valid examples pass; every rule of every field has
//! an example that fails with exactly that error (hand-written in `data/examples.json` for
//! patterns and formats, derived from the definition for the structural rules); no error,
//! `Debug` or masked output holds a secret (canary); and the exported JSON Schema, run through
//! the `jsonschema` crate, accepts and rejects exactly the same examples.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;

use credvault_schema::{CredentialType, FieldDef, FieldKind, Format, Registry, Rule, TypeDef};
use serde_json::{json, Value};

const EXAMPLES: &str = include_str!("data/examples.json");
const CANARY: &str = "CanAry7x9QzW";

fn examples() -> serde_json::Map<String, Value> {
    serde_json::from_str::<Value>(EXAMPLES)
        .unwrap()
        .as_object()
        .unwrap()
        .clone()
}

/// One invalid example: the input and the exact `(path, rule name)` list expected.
struct Invalid {
    value: Value,
    errors: Vec<(String, String)>,
    origin: String,
}

fn rule_names(errors: &credvault_schema::ValidationErrors) -> Vec<(String, String)> {
    errors
        .errors()
        .iter()
        .map(|e| (e.path.clone(), e.rule.name()))
        .collect()
}

/// Invalid examples derived from a field's definition (not from the validator): one per
/// structural rule the field has.
fn derived_invalid(def: &TypeDef, base: &Value) -> Vec<Invalid> {
    let mut out = Vec::new();
    let mut with = |key: &str, v: Option<Value>, rule: &str, origin: String| {
        let mut obj = base.as_object().unwrap().clone();
        match v {
            Some(v) => obj.insert(key.to_owned(), v),
            None => obj.remove(key),
        };
        out.push(Invalid {
            value: Value::Object(obj),
            errors: vec![(key.to_owned(), rule.to_owned())],
            origin,
        });
    };
    for f in &def.fields {
        let k = f.key.as_str();
        let o = |what: &str| format!("derived {}.{k} {what}", def.name);
        if f.required && f.default.is_none() {
            with(k, None, "required", o("missing"));
        }
        let wrong_type = match f.kind {
            FieldKind::Number => json!("12"),
            FieldKind::Boolean => json!("true"),
            _ => json!(12),
        };
        with(k, Some(wrong_type), "type", o("wrong type"));
        with(k, Some(json!([1])), "type", o("array"));
        if let Some(max) = f.max_length.or(match f.kind {
            FieldKind::Number | FieldKind::Boolean | FieldKind::Options => None,
            _ => Some(65_536),
        }) {
            let max = if f.format == Some(Format::Hostname) {
                max.min(253)
            } else {
                max
            };
            with(
                k,
                Some(json!("a".repeat(max as usize + 1))),
                "max_length",
                o("too long"),
            );
        }
        if let Some(min) = f.min_length.filter(|m| *m > 0) {
            with(
                k,
                Some(json!("a".repeat(min as usize - 1))),
                "min_length",
                o("too short"),
            );
        }
        if f.kind == FieldKind::Options {
            with(
                k,
                Some(json!("definitely-not-an-option")),
                "options",
                o("not an option"),
            );
        }
        let port = f.format == Some(Format::Port);
        if let Some(min) = f.min.or(port.then_some(1.0)) {
            with(k, Some(json!(min - 1.0)), "min", o("below min"));
        }
        if let Some(max) = f.max.or(port.then_some(65535.0)) {
            with(k, Some(json!(max + 1.0)), "max", o("above max"));
        }
        if f.integer {
            with(k, Some(json!(1.5)), "integer", o("fraction"));
            with(
                k,
                Some(json!(9_007_199_254_740_992_i64)),
                "max",
                o("above 2^53-1"),
            );
        }
    }
    with(
        "zz_not_a_field",
        Some(json!(1)),
        "unknown_field",
        format!("derived {} unknown key", def.name),
    );
    out
}

/// The rules a field has, as `rule name`s, for the coverage check.
fn field_rules(f: &FieldDef) -> Vec<String> {
    let mut r = vec!["type".to_owned()];
    if f.required && f.default.is_none() {
        r.push("required".into());
    }
    if f.pattern.is_some() {
        r.push("pattern".into());
    }
    if let Some(fmt) = f.format {
        if fmt == Format::Port && f.kind == FieldKind::Number {
            r.extend(["min".into(), "max".into()]);
        } else {
            r.push(format!("format:{}", fmt.as_str()));
        }
    }
    if f.min_length.is_some_and(|m| m > 0) {
        r.push("min_length".into());
    }
    if f.max_length.is_some() {
        r.push("max_length".into());
    }
    if f.min.is_some() {
        r.push("min".into());
    }
    if f.max.is_some() {
        r.push("max".into());
    }
    if f.integer {
        r.push("integer".into());
    }
    if f.kind == FieldKind::Options {
        r.push("options".into());
    }
    r
}

struct Case {
    ty: Arc<CredentialType>,
    valid: Vec<Value>,
    invalid: Vec<Invalid>,
}

fn cases() -> Vec<Case> {
    let registry = Registry::with_builtins();
    let ex = examples();
    let mut out = Vec::new();
    for ty in registry.iter() {
        let name = ty.name();
        let e = ex
            .get(name)
            .unwrap_or_else(|| panic!("no examples for {name}"));
        let valid: Vec<Value> = e["valid"].as_array().unwrap().clone();
        let mut invalid: Vec<Invalid> = e["invalid"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| Invalid {
                value: i["value"].clone(),
                errors: i["errors"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| {
                        (
                            p[0].as_str().unwrap().to_owned(),
                            p[1].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect(),
                origin: format!("examples.json {name}"),
            })
            .collect();
        invalid.extend(derived_invalid(ty.definition(), &valid[0]));
        out.push(Case {
            ty: Arc::clone(ty),
            valid,
            invalid,
        });
    }
    out
}

#[test]
fn the_catalog_has_every_required_type() {
    let registry = Registry::with_builtins();
    let names: BTreeSet<&str> = registry.iter().map(|t| t.name()).collect();
    for required in [
        "postgres",
        "mysql",
        "redis",
        "mongodb",
        "http_basic_auth",
        "http_bearer_token",
        "http_header_auth",
        "oauth2_client_credentials",
        "oauth2_token",
        "aws_access_key",
        "smtp",
        "ssh_private_key",
        "openai_api_key",
        "llm_api_key",
        "website_login",
        "anthropic_api_key",
        "http_proxy",
    ] {
        assert!(
            names.contains(required),
            "{required} missing from the catalog"
        );
    }
    assert_eq!(registry.len(), 22);
    assert_eq!(registry.builtin_names().len(), 22);
    // Each catalog file also loads on its own terms (errors would otherwise be silent).
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog");
    let mut defs = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        defs.push(credvault_schema::parse_definition(&text).unwrap());
    }
    let mut fresh = Registry::new();
    assert_eq!(fresh.add_all(defs).unwrap().len(), 22);
}

#[test]
fn valid_examples_pass_and_invalid_ones_fail_with_exactly_the_expected_errors() {
    let mut checked = 0;
    for case in cases() {
        for v in &case.valid {
            if let Err(e) = case.ty.validate(v) {
                panic!("{}: valid example refused: {e}\n{v}", case.ty.name());
            }
        }
        for i in &case.invalid {
            let got = case.ty.validate(&i.value).map(|_| ()).unwrap_err();
            assert_eq!(rule_names(&got), i.errors, "{}", i.origin);
            checked += 1;
        }
    }
    assert!(checked > 300, "{checked}");
}

#[test]
fn every_rule_of_every_field_has_a_failing_example() {
    for case in cases() {
        let mut covered: BTreeSet<(String, String)> = BTreeSet::new();
        for i in &case.invalid {
            if let [(path, rule)] = i.errors.as_slice() {
                covered.insert((path.clone(), rule.clone()));
            } else {
                covered.extend(i.errors.iter().cloned());
            }
        }
        for f in &case.ty.definition().fields {
            for rule in field_rules(f) {
                assert!(
                    covered.contains(&(f.key.clone(), rule.clone())),
                    "{}.{}: no example fails rule {rule}",
                    case.ty.name(),
                    f.key
                );
            }
        }
    }
}

#[test]
fn secrets_never_reach_errors_debug_or_masked_views() {
    for case in cases() {
        let secrets: Vec<&FieldDef> = case
            .ty
            .definition()
            .fields
            .iter()
            .filter(|f| f.kind == FieldKind::Password || f.secret)
            .collect();
        assert!(
            !secrets.is_empty(),
            "{} has no secret field",
            case.ty.name()
        );
        for f in secrets {
            // Accepted: the canary is inside a valid value (patterns permitting).
            for base in &case.valid {
                let mut obj = base.as_object().unwrap().clone();
                let valid_value = match f.key.as_str() {
                    "connection_string" => format!("mongodb://u:{CANARY}@h"),
                    "api_key" if case.ty.name() == "openai_api_key" => {
                        format!("sk-{CANARY}abcdefghijklmnop")
                    }
                    "api_key" if case.ty.name() == "anthropic_api_key" => {
                        format!("sk-ant-{CANARY}abcdefghijklmnop")
                    }
                    "secret_access_key" => format!("{CANARY}{}", "A".repeat(40 - CANARY.len())),
                    "data" if case.ty.name() == "kv_secret" => format!("{{\"k\": \"{CANARY}\"}}"),
                    "history" if case.ty.name() == "kv_secret" => {
                        format!("{{\"1\": {{\"k\": \"{CANARY}\"}}}}")
                    }
                    "keys" if case.ty.name() == "transit_key" => format!("{{\"1\": \"{CANARY}\"}}"),
                    // (Base32 keys cannot hold the canary's letters and digits.)
                    "private_key" => continue,
                    _ if f.format == Some(Format::Base32) => continue,
                    _ => CANARY.to_owned(),
                };
                obj.insert(f.key.clone(), json!(valid_value));
                let cred = case
                    .ty
                    .validate(&Value::Object(obj.clone()))
                    .unwrap_or_else(|e| panic!("{}.{}: {e}", case.ty.name(), f.key));
                assert!(cred.expose_secret(&f.key).unwrap().contains(CANARY));
                for out in [
                    format!("{cred:?}"),
                    serde_json::to_string(&cred.masked()).unwrap(),
                    serde_json::to_string(&cred.metadata()).unwrap(),
                    serde_json::to_string(&cred.public_json()).unwrap(),
                ] {
                    assert!(!out.contains(CANARY), "{}.{}: {out}", case.ty.name(), f.key);
                }
                // Refused: the canary in a value that breaks a rule, beside other errors.
                for bad in [
                    json!(CANARY.repeat(4000)),
                    json!(format!("{CANARY} \u{0}")),
                    json!([CANARY]),
                    Value::Object([(CANARY.to_owned(), json!(CANARY))].into_iter().collect()),
                ] {
                    obj.insert(f.key.clone(), bad);
                    obj.insert("zz_unknown".to_owned(), json!(CANARY));
                    let e = case
                        .ty
                        .validate(&Value::Object(obj.clone()))
                        .map(|_| ())
                        .unwrap_err();
                    for out in [e.to_string(), format!("{e:?}")] {
                        assert!(!out.contains(CANARY), "{}.{}: {out}", case.ty.name(), f.key);
                    }
                    obj.remove("zz_unknown");
                }
            }
        }
    }
}

#[test]
fn json_schema_accepts_and_rejects_the_same_examples() {
    let mut compared = 0;
    for case in cases() {
        let schema = case.ty.json_schema();
        let validator = jsonschema::draft202012::new(&schema)
            .unwrap_or_else(|e| panic!("{}: schema does not compile: {e}", case.ty.name()));
        for v in &case.valid {
            assert!(
                validator.is_valid(v),
                "{}: jsonschema refuses a valid example {v}",
                case.ty.name()
            );
            compared += 1;
        }
        for i in &case.invalid {
            assert!(
                !validator.is_valid(&i.value),
                "{}: jsonschema accepts {}",
                i.origin,
                i.value
            );
            compared += 1;
        }
    }
    assert!(compared > 300);
}

#[test]
fn json_schema_shape() {
    let registry = Registry::with_builtins();
    let s = registry.get("postgres").unwrap().json_schema();
    assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(s["additionalProperties"], false);
    assert_eq!(
        s["required"],
        json!(["host", "database", "user", "password"])
    );
    assert_eq!(s["properties"]["password"]["writeOnly"], true);
    assert_eq!(s["properties"]["port"]["type"], "integer");
    assert_eq!(s["properties"]["port"]["maximum"], 65535);
    assert_eq!(s["properties"]["port"]["default"], 5432);
    assert_eq!(s["properties"]["ssl_mode"]["enum"][0], "disable");
    assert_eq!(s["properties"]["host"]["format"], "hostname");
    assert_eq!(s["properties"]["host"]["maxLength"], 253);
    let oauth = registry
        .get("oauth2_client_credentials")
        .unwrap()
        .json_schema();
    assert_eq!(oauth["properties"]["access_token"]["readOnly"], true);
    assert_eq!(oauth["properties"]["access_token"]["writeOnly"], true);
    let _ = Rule::Required;
}
