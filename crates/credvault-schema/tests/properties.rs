//! Properties over the built-in catalog, 512 cases each: values generated from a type's own
//! definition validate (and the exported JSON Schema agrees); removing a required field,
//! changing a type, or exceeding a limit yields exactly the matching error; patches equal
//! validating the merged input; arbitrary JSON and arbitrary definitions never panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, OnceLock};

use credvault_schema::{
    CredentialType, FieldDef, FieldKind, Limit, Registry, Rule, MAX_DEPTH, MAX_INPUT_BYTES,
    MAX_INPUT_KEYS,
};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(Registry::with_builtins)
}

fn types() -> Vec<Arc<CredentialType>> {
    registry().iter().cloned().collect()
}

/// The patterns a text field must match, read from the exported schema (`pattern` or
/// `allOf[*].pattern`), anchors removed for the generator.
fn patterns(ty: &CredentialType, key: &str) -> Vec<String> {
    let s = ty.json_schema();
    let p = &s["properties"][key];
    let mut out: Vec<String> = p["pattern"]
        .as_str()
        .map(str::to_owned)
        .into_iter()
        .collect();
    if let Some(all) = p["allOf"].as_array() {
        out.extend(
            all.iter()
                .filter_map(|x| x["pattern"].as_str().map(str::to_owned)),
        );
    }
    out.iter()
        .map(|p| p.trim_start_matches('^').trim_end_matches('$').to_owned())
        .collect()
}

fn max_len(ty: &CredentialType, key: &str) -> usize {
    ty.json_schema()["properties"][key]["maxLength"]
        .as_u64()
        .unwrap_or(65_536) as usize
}

/// A value satisfying the field's rules.
fn field_value(ty: &CredentialType, f: &FieldDef) -> BoxedStrategy<Value> {
    match f.kind {
        FieldKind::Boolean => any::<bool>().prop_map(Value::Bool).boxed(),
        FieldKind::Options => prop::sample::select(f.options.clone())
            .prop_map(Value::String)
            .boxed(),
        FieldKind::Number => {
            let schema = ty.json_schema();
            let p = &schema["properties"][&f.key];
            let lo = p["minimum"].as_f64().unwrap_or(-1e9);
            let hi = p["maximum"].as_f64().unwrap_or(1e9);
            if f.integer {
                (lo as i64..=hi as i64).prop_map(|i| json!(i)).boxed()
            } else {
                (lo..=hi).prop_map(|x| json!(x)).boxed()
            }
        }
        _ => {
            let (min, max) = (f.min_length.unwrap_or(0) as usize, max_len(ty, &f.key));
            let pats = patterns(ty, &f.key);
            let base: BoxedStrategy<String> = match pats.first() {
                Some(p) => proptest::string::string_regex(p).unwrap().boxed(),
                None => proptest::string::string_regex(&format!(
                    "[ -~]{{{},{}}}",
                    min,
                    max.min(min + 40)
                ))
                .unwrap()
                .boxed(),
            };
            base.prop_filter("length within the field's limits", move |s| {
                let n = s.chars().count();
                n >= min && n <= max
            })
            .prop_map(Value::String)
            .boxed()
        }
    }
}

/// A valid input for the type: every required field, optional ones at random.
fn valid_input(
    ty: Arc<CredentialType>,
) -> BoxedStrategy<(Arc<CredentialType>, Map<String, Value>)> {
    let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = ty
        .definition()
        .fields
        .iter()
        .map(|f| {
            let key = f.key.clone();
            let v = field_value(&ty, f).prop_map(move |v| Some((key.clone(), v)));
            if f.required && f.default.is_none() {
                v.boxed()
            } else {
                prop_oneof![Just(None), v].boxed()
            }
        })
        .collect();
    fields
        .prop_map(move |kv| {
            (
                Arc::clone(&ty),
                kv.into_iter().flatten().collect::<Map<String, Value>>(),
            )
        })
        .boxed()
}

fn any_valid() -> BoxedStrategy<(Arc<CredentialType>, Map<String, Value>)> {
    let all: Vec<_> = types().into_iter().map(valid_input).collect();
    prop::sample::select((0..all.len()).collect::<Vec<_>>())
        .prop_flat_map(move |i| all[i].clone())
        .boxed()
}

fn rules(ty: &Arc<CredentialType>, v: &Value) -> Vec<(String, Rule)> {
    match ty.validate(v) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .rules()
            .into_iter()
            .map(|(p, r)| (p.to_owned(), r))
            .collect(),
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
        Just(json!(credvault_schema::SECRET_MARKER)),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    "[a-z_]{1,12}",
                    prop::sample::select(vec![
                        "host".to_owned(),
                        "port".to_owned(),
                        "password".to_owned(),
                        "api_key".to_owned(),
                        "base_url".to_owned(),
                        "database".to_owned()
                    ])
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn generated_values_validate_and_the_schema_agrees((ty, input) in any_valid()) {
        let v = Value::Object(input);
        let cred = ty.validate(&v);
        prop_assert!(cred.is_ok(), "{}: {:?}\n{}", ty.name(), cred.err(), v);
        let schema = ty.json_schema();
        let validator = jsonschema::draft202012::new(&schema).unwrap();
        prop_assert!(validator.is_valid(&v), "{}: jsonschema refuses {}", ty.name(), v);
    }

    #[test]
    fn removing_a_required_field_is_exactly_required((ty, input) in any_valid(), pick in any::<prop::sample::Index>()) {
        let required: Vec<&str> = ty.definition().fields.iter()
            .filter(|f| f.required && f.default.is_none()).map(|f| f.key.as_str()).collect();
        prop_assume!(!required.is_empty());
        let key = required[pick.index(required.len())];
        let mut obj = input.clone();
        obj.remove(key);
        prop_assert_eq!(rules(&ty, &Value::Object(obj)), vec![(key.to_owned(), Rule::Required)]);
    }

    #[test]
    fn changing_a_type_is_exactly_type((ty, input) in any_valid(), pick in any::<prop::sample::Index>(), which in 0usize..4) {
        let fields = &ty.definition().fields;
        let f = &fields[pick.index(fields.len())];
        let wrong = match (f.kind, which) {
            (_, 0) => json!(null),
            (_, 1) => json!([]),
            (_, 2) => json!({}),
            (FieldKind::Number, _) => json!("7"),
            (FieldKind::Boolean, _) => json!(1),
            (_, _) => json!(true),
        };
        let mut obj = input.clone();
        obj.insert(f.key.clone(), wrong);
        prop_assert_eq!(rules(&ty, &Value::Object(obj)), vec![(f.key.clone(), Rule::Type)]);
    }

    #[test]
    fn exceeding_a_limit_is_exactly_that_limit((ty, input) in any_valid(), pick in any::<prop::sample::Index>(), which in 0usize..5) {
        let obj = Value::Object(input.clone());
        match which {
            0 => {
                // A text field one character over its maximum.
                let texts: Vec<&FieldDef> = ty.definition().fields.iter()
                    .filter(|f| matches!(f.kind, FieldKind::String | FieldKind::Password | FieldKind::Hidden)).collect();
                prop_assume!(!texts.is_empty());
                let f = texts[pick.index(texts.len())];
                let mut o = input.clone();
                o.insert(f.key.clone(), json!("x".repeat(max_len(&ty, &f.key) + 1)));
                prop_assert_eq!(rules(&ty, &Value::Object(o)), vec![(f.key.clone(), Rule::MaxLength)]);
            }
            1 => {
                // A number over its maximum.
                let nums: Vec<&FieldDef> = ty.definition().fields.iter().filter(|f| f.kind == FieldKind::Number).collect();
                prop_assume!(!nums.is_empty());
                let f = nums[pick.index(nums.len())];
                let max = ty.json_schema()["properties"][&f.key]["maximum"].as_f64();
                prop_assume!(max.is_some());
                let mut o = input.clone();
                o.insert(f.key.clone(), json!(max.unwrap() + 1.0));
                prop_assert_eq!(rules(&ty, &Value::Object(o)), vec![(f.key.clone(), Rule::Maximum)]);
            }
            2 => {
                // More bytes than the input limit (valid JSON, padded with spaces).
                let mut text = serde_json::to_vec(&obj).unwrap();
                text.splice(1..1, std::iter::repeat_n(b' ', MAX_INPUT_BYTES));
                let e = ty.validate_json(&text).map(|_| ()).unwrap_err();
                prop_assert_eq!(e.rules(), vec![("", Rule::Limit(Limit::Size))]);
            }
            3 => {
                // A field value nested deeper than the limit.
                let fields = &ty.definition().fields;
                let f = &fields[pick.index(fields.len())];
                let mut deep = json!(1);
                for _ in 0..MAX_DEPTH { deep = json!([deep]); }
                let mut o = input.clone();
                o.insert(f.key.clone(), deep);
                prop_assert_eq!(rules(&ty, &Value::Object(o)), vec![(String::new(), Rule::Limit(Limit::Depth))]);
            }
            _ => {
                // More keys than the limit.
                let mut o = input.clone();
                for i in 0..=MAX_INPUT_KEYS { o.insert(format!("extra_{i}"), json!(i)); }
                prop_assert_eq!(rules(&ty, &Value::Object(o)), vec![(String::new(), Rule::Limit(Limit::Keys))]);
            }
        }
    }

    #[test]
    fn a_patch_equals_validating_the_merged_input((ty, base) in any_valid(), (_, other) in any_valid()) {
        // Patch with the keys of another valid input that this type has (values may not fit).
        let existing = ty.validate(&Value::Object(base.clone())).unwrap();
        let patch: Map<String, Value> = other.into_iter()
            .filter(|(k, _)| ty.definition().fields.iter().any(|f| &f.key == k))
            .collect();
        let mut merged = base.clone();
        merged.extend(patch.clone());
        let direct = ty.validate(&Value::Object(merged));
        let patched = ty.validate_patch(&existing, &Value::Object(patch));
        match (direct, patched) {
            (Ok(d), Ok(p)) => {
                prop_assert_eq!(d.masked(), p.credential.masked());
                for (k, _) in d.secrets() {
                    prop_assert_eq!(d.expose_secret(k), p.credential.expose_secret(k));
                }
            }
            (Err(d), Err(p)) => prop_assert_eq!(d.rules(), p.rules()),
            (d, p) => prop_assert!(false, "direct {:?} vs patch {:?}", d.map(|_| ()), p.map(|_| ())),
        }
    }

    #[test]
    fn arbitrary_json_never_panics_and_never_echoes_values(v in arb_json()) {
        for ty in types() {
            if let Err(e) = ty.validate(&v) {
                for err in e.errors() {
                    prop_assert!(err.message.len() < 600);
                }
            }
            let text = serde_json::to_vec(&v).unwrap();
            let _ = ty.validate_json(&text);
            if let Ok(c) = ty.validate(&v) {
                let _ = ty.validate_patch(&c, &v);
                let _ = ty.authenticate(&c);
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
        credvault_schema::fuzzing::validate(&data);
        credvault_schema::fuzzing::definition(&data);
    }

    #[test]
    fn arbitrary_definitions_never_panic(
        name in "[a-z_]{0,10}",
        fields in prop::collection::vec((
            "[a-zA-Z_]{0,8}",
            prop::sample::select(vec!["string", "password", "number", "boolean", "options", "hidden", "x"]),
            any::<bool>(), any::<bool>(),
            prop::option::of("[a-z\\^$()|.*+?{}0-9\\[\\]]{0,12}"),
            prop::option::of(-5i64..5), prop::option::of(-5i64..70000),
            prop::option::of(prop::sample::select(vec!["url", "email", "hostname", "port", "base32", "pem", "nope"])),
            prop::collection::vec("[a-z]{0,3}", 0..3),
            prop::option::of(arb_json()),
        ), 0..6),
        template in "[a-z{} ]{0,20}",
    ) {
        let fields: Vec<Value> = fields.into_iter().map(|(key, kind, required, secret, pattern, min, max, format, options, default)| {
            let mut f = json!({"key": key, "label": "L", "kind": kind, "required": required, "secret": secret, "options": options});
            let o = f.as_object_mut().unwrap();
            if let Some(p) = pattern { o.insert("pattern".into(), json!(p)); }
            if let Some(m) = min { o.insert(if kind == "number" { "min" } else { "min_length" }.into(), json!(m)); }
            if let Some(m) = max { o.insert(if kind == "number" { "max" } else { "max_length" }.into(), json!(m)); }
            if let Some(fm) = format { o.insert("format".into(), json!(fm)); }
            if let Some(d) = default { o.insert("default".into(), d); }
            f
        }).collect();
        let def = json!({"name": name, "display_name": "D", "fields": fields,
            "authenticate": {"headers": {"X": template}}});
        credvault_schema::fuzzing::definition(def.to_string().as_bytes());
    }
}
