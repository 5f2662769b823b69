//! User-defined types: inheritance, cycles, every definition error; partial updates; masking
//! and metadata; `{{field}}` templates rendered into authentication and test requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use credvault_schema::{
    parse_definition, FieldKind, FieldValue, Registry, Rule, TypeDef, MAX_FIELDS, SECRET_MARKER,
};
use serde_json::{json, Value};

fn def(v: Value) -> TypeDef {
    serde_json::from_value(v).unwrap()
}

fn base() -> Value {
    json!({
        "name": "internal_api",
        "display_name": "Internal API",
        "category": "api",
        "fields": [
            {"key": "base_url", "label": "Base URL", "kind": "string", "required": true, "format": "url"},
            {"key": "token", "label": "Token", "kind": "password", "required": true},
            {"key": "team", "label": "Team", "kind": "string", "default": "core"}
        ],
        "test": {"kind": "http", "request": {"url": "{{base_url}}/whoami"}, "success": {"status": [200, 204], "json_path": "user.id"}},
        "authenticate": {"headers": {"Authorization": "Token {{token}}", "X-Team": "{{team}}"}, "query": {"v": "2"}}
    })
}

#[test]
fn a_user_type_from_json_text_and_file() {
    let mut r = Registry::with_builtins();
    let t = r.add_json(&base().to_string()).unwrap();
    assert_eq!(t.name(), "internal_api");
    assert_eq!(r.len(), 23);
    // Same name again: refused.
    let err = r.add_json(&base().to_string()).unwrap_err();
    assert!(err.reason.contains("exists"), "{err}");
    // From a file.
    let dir = std::env::temp_dir().join(format!("credvault-schema-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut other = base();
    other["name"] = json!("internal_api_2");
    let path = dir.join("t.json");
    std::fs::write(&path, other.to_string()).unwrap();
    assert_eq!(r.add_file(&path).unwrap().name(), "internal_api_2");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn extends_inherits_and_overrides_in_place() {
    let mut r = Registry::new();
    r.add(def(base())).unwrap();
    let child = r
        .add(def(json!({
            "name": "internal_api_eu",
            "display_name": "Internal API (EU)",
            "extends": "internal_api",
            "fields": [
                {"key": "base_url", "label": "Base URL", "kind": "string", "format": "url", "default": "https://eu.internal"},
                {"key": "region", "label": "Region", "kind": "options", "options": ["eu-west", "eu-central"], "default": "eu-west"}
            ]
        })))
        .unwrap();
    let keys: Vec<&str> = child
        .definition()
        .fields
        .iter()
        .map(|f| f.key.as_str())
        .collect();
    assert_eq!(keys, ["base_url", "token", "team", "region"]);
    // The override took the parent's slot and its default now applies.
    let c = child.validate(&json!({"token": "t"})).unwrap();
    assert!(matches!(c.get("base_url"), Some(FieldValue::Text(u)) if u == "https://eu.internal"));
    // Test and authentication are inherited.
    let req = child.test_request(&c).unwrap();
    assert_eq!(req.url.expose_secret(), "https://eu.internal/whoami");
    // The built-in anthropic type extends llm_api_key the same way.
    let b = Registry::with_builtins();
    let anthropic = b.get("anthropic_api_key").unwrap();
    let c = anthropic
        .validate(&json!({"api_key": "sk-ant-api03-abcdefghijklmnopqrstuvwxyz"}))
        .unwrap();
    let auth = anthropic.authenticate(&c).unwrap();
    let headers: Vec<(&str, &str)> = auth
        .headers
        .iter()
        .map(|(k, v)| (k.expose_secret(), v.expose_secret()))
        .collect();
    assert_eq!(
        headers,
        [
            ("anthropic-version", "2023-06-01"),
            ("x-api-key", "sk-ant-api03-abcdefghijklmnopqrstuvwxyz")
        ]
    );
}

#[test]
fn cycles_and_unknown_parents_are_refused() {
    let t = |name: &str, parent: &str| {
        def(
            json!({"name": name, "display_name": name, "extends": parent,
            "fields": [{"key": "k", "label": "K", "kind": "string"}]}),
        )
    };
    let mut r = Registry::new();
    let err = r
        .add_all(vec![t("a", "b"), t("b", "c"), t("c", "a")])
        .unwrap_err();
    assert!(err.reason.contains("cycle"), "{err}");
    assert!(
        err.reason.contains("a -> b -> c -> a") || err.reason.contains("->"),
        "{err}"
    );
    assert!(r.is_empty(), "nothing is added when one fails");
    let err = r.add_all(vec![t("self_ref", "self_ref")]).unwrap_err();
    assert!(err.reason.contains("cycle"), "{err}");
    let err = r.add(t("orphan", "nobody")).unwrap_err();
    assert_eq!(err.path, "extends");
    assert!(err.reason.contains("unknown parent"), "{err}");
    // In any order, a valid chain loads.
    let root = def(
        json!({"name": "root", "display_name": "R", "fields": [{"key": "k", "label": "K", "kind": "string"}]}),
    );
    let added = r
        .add_all(vec![t("leaf", "mid"), t("mid", "root"), root])
        .unwrap();
    assert_eq!(added.len(), 3);
}

#[test]
fn every_definition_error_is_named() {
    let field = |extra: Value| {
        let mut f = json!({"key": "f", "label": "F", "kind": "string"});
        for (k, v) in extra.as_object().unwrap() {
            f[k] = v.clone();
        }
        f
    };
    let with_fields = |fields: Value| json!({"name": "t", "display_name": "T", "fields": fields});
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"name": "Bad Name", "display_name": "T", "fields": [field(json!({}))]}),
            "name",
        ),
        (
            json!({"name": "t", "display_name": "", "fields": [field(json!({}))]}),
            "display_name",
        ),
        (with_fields(json!([])), "fields"),
        (
            with_fields(Value::Array(
                (0..=MAX_FIELDS)
                    .map(|i| field(json!({"key": format!("f{i}")})))
                    .collect(),
            )),
            "fields",
        ),
        (
            with_fields(json!([field(json!({})), field(json!({}))])),
            "fields[1].key",
        ),
        (
            with_fields(json!([field(json!({"key": "1x"}))])),
            "fields[0].key",
        ),
        (
            with_fields(json!([field(json!({"kind": "number", "secret": true}))])),
            "fields[0].secret",
        ),
        (
            with_fields(json!([field(json!({"integer": true}))])),
            "fields[0].integer",
        ),
        (
            with_fields(json!([field(json!({"expirable": true}))])),
            "fields[0].expirable",
        ),
        (
            with_fields(json!([field(json!({"kind": "hidden", "required": true}))])),
            "fields[0].required",
        ),
        (
            with_fields(json!([field(json!({"kind": "options"}))])),
            "fields[0].options",
        ),
        (
            with_fields(json!([field(
                json!({"kind": "options", "options": ["a", "a"]})
            )])),
            "fields[0].options",
        ),
        (
            with_fields(json!([field(json!({"options": ["a"]}))])),
            "fields[0].options",
        ),
        (
            with_fields(json!([field(json!({"kind": "boolean", "pattern": "x"}))])),
            "fields[0].pattern",
        ),
        (
            with_fields(json!([field(json!({"min": 1}))])),
            "fields[0].min",
        ),
        (
            with_fields(json!([field(json!({"kind": "boolean", "format": "url"}))])),
            "fields[0].format",
        ),
        (
            with_fields(json!([field(json!({"max_length": 70000}))])),
            "fields[0].max_length",
        ),
        (
            with_fields(json!([field(json!({"min_length": 5, "max_length": 2}))])),
            "fields[0].min_length",
        ),
        (
            with_fields(json!([field(
                json!({"kind": "number", "min": 5, "max": 2})
            )])),
            "fields[0].min",
        ),
        (
            with_fields(json!([field(json!({"pattern": "(unclosed"}))])),
            "fields[0].pattern",
        ),
        (
            with_fields(json!([field(json!({"pattern": "a".repeat(2000)}))])),
            "fields[0].pattern",
        ),
        (
            with_fields(json!([field(json!({"pattern": "\\w{1000}{1000}"}))])),
            "fields[0].pattern",
        ),
        (
            with_fields(json!([field(json!({"kind": "password", "default": "x"}))])),
            "fields[0].default",
        ),
        (
            with_fields(json!([field(
                json!({"format": "email", "default": "nope"})
            )])),
            "fields[0].default",
        ),
        (
            with_fields(json!([field(json!({"kind": "number", "default": "7"}))])),
            "fields[0].default",
        ),
        (
            with_fields(json!([field(
                json!({"coerce": true, "kind": "options", "options": ["a"]})
            )])),
            "fields[0].coerce",
        ),
        (
            json!({"name": "t", "display_name": "T", "fields": [field(json!({}))], "authenticate": {"headers": {"A": "{{nope}}"}}}),
            "authenticate.headers",
        ),
        (
            json!({"name": "t", "display_name": "T", "fields": [field(json!({}))], "authenticate": {"headers": {"A": "{{f"}}}),
            "authenticate.headers",
        ),
        (
            json!({"name": "t", "display_name": "T", "fields": [field(json!({}))], "test": {"kind": "http"}}),
            "test.request",
        ),
        (
            json!({"name": "t", "display_name": "T", "fields": [field(json!({}))], "test": {"kind": "postgres", "request": {"url": "x"}}}),
            "test",
        ),
        (
            json!({"name": "t", "display_name": "T", "fields": [field(json!({}))], "test": {"kind": "http", "request": {"url": "x", "method": "BREW"}}}),
            "test.request.method",
        ),
        (
            json!({"name": "t", "display_name": "T", "fields": [field(json!({}))], "test": {"kind": "http", "request": {"url": "x"}, "success": {"status": [42]}}}),
            "test.success.status",
        ),
        (
            json!({"name": "t", "display_name": "T", "fields": [field(json!({}))], "test": {"kind": "http", "request": {"url": "x"}, "success": {"json_path": "a..b"}}}),
            "test.success.json_path",
        ),
        (
            json!({"name": "t", "display_name": "T", "documentation_url": "docs", "fields": [field(json!({}))]}),
            "documentation_url",
        ),
    ];
    for (v, path) in cases {
        let mut r = Registry::new();
        let err = r.add(def(v.clone())).unwrap_err();
        assert_eq!(err.path, path, "{v}: {err}");
        assert!(!err.reason.is_empty());
    }
    // Unknown keys and wrong shapes are refused by the parser, naming the key.
    let err = parse_definition(r#"{"name":"t","display_name":"T","fields":[],"colour":"red"}"#)
        .unwrap_err();
    assert!(err.reason.contains("colour"), "{err}");
    let err = parse_definition(&"x".repeat(300 * 1024)).unwrap_err();
    assert!(err.reason.contains("larger"), "{err}");
}

#[test]
fn patches_change_only_what_is_given() {
    let mut r = Registry::new();
    let t = r.add(def(base())).unwrap();
    let c = t
        .validate(&json!({"base_url": "https://a.internal", "token": "old-secret"}))
        .unwrap();

    // Metadata change: old and new values recorded; the secret untouched.
    let p = t.validate_patch(&c, &json!({"team": "payments"})).unwrap();
    assert_eq!(p.credential.expose_secret("token"), Some("old-secret"));
    assert_eq!(p.changes.len(), 1);
    assert_eq!(
        (p.changes[0].key.as_str(), p.changes[0].secret),
        ("team", false)
    );
    assert_eq!(
        (p.changes[0].old.clone(), p.changes[0].new.clone()),
        (Some(json!("core")), Some(json!("payments")))
    );

    // The masked marker sent back keeps the secret; a new value replaces it, recorded by name.
    let p = t
        .validate_patch(&c, &json!({"token": SECRET_MARKER}))
        .unwrap();
    assert_eq!(p.credential.expose_secret("token"), Some("old-secret"));
    assert!(p.changes.is_empty());
    let p = t
        .validate_patch(&c, &json!({"token": "new-secret"}))
        .unwrap();
    assert_eq!(p.credential.expose_secret("token"), Some("new-secret"));
    assert_eq!(p.changes.len(), 1);
    assert!(p.changes[0].secret && p.changes[0].old.is_none() && p.changes[0].new.is_none());
    assert!(!format!("{:?}", p.changes).contains("secret\""));

    // The marker is no value: a non-secret field refuses it, in a patch and on creation, and a
    // secret field refuses it where there is nothing to keep.
    let e = t
        .validate_patch(&c, &json!({"team": SECRET_MARKER}))
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.rules(), [("team", Rule::SecretMarker)]);
    let e = t
        .validate(&json!({"base_url": "https://a.internal", "token": SECRET_MARKER, "team": SECRET_MARKER}))
        .map(|_| ())
        .unwrap_err();
    assert_eq!(
        e.rules(),
        [("token", Rule::SecretMarker), ("team", Rule::SecretMarker)]
    );
    assert!(!e.to_string().contains(SECRET_MARKER), "{e}");

    // Null unsets an optional field; a required one cannot be unset; bad values and unknown keys
    // are all reported.
    let p = t.validate_patch(&c, &json!({"team": null})).unwrap();
    assert!(!p.credential.is_set("team"));
    let e = t
        .validate_patch(&c, &json!({"token": null, "base_url": "nope", "x": 1}))
        .map(|_| ())
        .unwrap_err();
    assert_eq!(
        e.rules(),
        [
            ("base_url", Rule::Format(credvault_schema::Format::Url)),
            ("token", Rule::Required),
            ("x", Rule::UnknownField)
        ]
    );
    // A credential of another type is refused.
    let b = Registry::with_builtins();
    let other = b
        .get("http_bearer_token")
        .unwrap()
        .validate(&json!({"token": "t"}))
        .unwrap();
    assert!(t.validate_patch(&other, &json!({})).is_err());
}

#[test]
fn masked_and_metadata_views() {
    let r = Registry::with_builtins();
    let t = r.get("website_login").unwrap();
    let c = t
        .validate(&json!({"login_url": "https://x.example/login", "username": "bot", "password": "pw-123", "totp_secret": "JBSWY3DPEHPK3PXP"}))
        .unwrap();
    let m = serde_json::to_value(c.masked()).unwrap();
    assert_eq!(m["type"], "website_login");
    assert_eq!(m["fields"]["username"], "bot");
    assert_eq!(m["fields"]["password"], SECRET_MARKER);
    assert_eq!(m["fields"]["totp_secret"], SECRET_MARKER);
    assert!(m["fields"].get("notes").is_none());
    let meta = c.metadata();
    let pw = meta.iter().find(|f| f.key == "password").unwrap();
    assert!(pw.secret && pw.set && pw.required && pw.kind == FieldKind::Password);
    assert!(!meta.iter().find(|f| f.key == "notes").unwrap().set);
    assert_eq!(c.public_json().len(), 2);
    assert_eq!(c.secrets().count(), 2);
    assert_eq!(c.type_name(), "website_login");
}

#[test]
fn templates_render_authentication_and_tests() {
    let r = Registry::with_builtins();
    let basic = r.get("http_basic_auth").unwrap();
    let c = basic
        .validate(&json!({"user": "alice", "password": "s3cret"}))
        .unwrap();
    let a = basic.authenticate(&c).unwrap();
    let (u, p) = a.basic.as_ref().unwrap();
    assert_eq!((u.expose_secret(), p.expose_secret()), ("alice", "s3cret"));
    assert!(!format!("{a:?}").contains("s3cret"));

    let header = r.get("http_header_auth").unwrap();
    let c = header
        .validate(&json!({"header_name": "api-key", "api_key": "k-1"}))
        .unwrap();
    let a = header.authenticate(&c).unwrap();
    assert_eq!(
        (
            a.headers[0].0.expose_secret(),
            a.headers[0].1.expose_secret()
        ),
        ("api-key", "k-1")
    );

    let oauth = r.get("oauth2_client_credentials").unwrap();
    let c = oauth
        .validate(&json!({"token_url": "https://auth.example/token", "client_id": "id", "client_secret": "cs", "scope": "read"}))
        .unwrap();
    let req = oauth.test_request(&c).unwrap();
    assert_eq!(req.method, "POST");
    assert_eq!(req.url.expose_secret(), "https://auth.example/token");
    assert_eq!(req.body_format, credvault_schema::BodyFormat::Form);
    let body: Vec<(&str, &str)> = req
        .parts
        .body
        .iter()
        .map(|(k, v)| (k.expose_secret(), v.expose_secret()))
        .collect();
    assert_eq!(
        body,
        [
            ("client_id", "id"),
            ("client_secret", "cs"),
            ("grant_type", "client_credentials"),
            ("scope", "read")
        ]
    );
    assert!(
        req.parts.headers.is_empty(),
        "authentication is off for the token request"
    );
    assert_eq!(req.success_json_path, Some(vec!["access_token".to_owned()]));

    let mut reg = Registry::new();
    let t = reg.add(def(base())).unwrap();
    let c = t
        .validate(&json!({"base_url": "https://a.internal", "token": "tk"}))
        .unwrap();
    let req = t.test_request(&c).unwrap();
    assert_eq!(
        (req.method.as_str(), req.url.expose_secret()),
        ("GET", "https://a.internal/whoami")
    );
    let headers: Vec<(&str, &str)> = req
        .parts
        .headers
        .iter()
        .map(|(k, v)| (k.expose_secret(), v.expose_secret()))
        .collect();
    assert_eq!(headers, [("Authorization", "Token tk"), ("X-Team", "core")]);
    assert_eq!(req.parts.query[0].1.expose_secret(), "2");
    assert_eq!(req.success_status, [200, 204]);
    assert_eq!(
        req.success_json_path,
        Some(vec!["user".to_owned(), "id".to_owned()])
    );
    // Types without a test or authentication render nothing.
    let pg = r.get("postgres").unwrap();
    let c = pg
        .validate(&json!({"host": "h", "database": "d", "user": "u", "password": "p"}))
        .unwrap();
    assert!(pg.test_request(&c).is_none() && pg.authenticate(&c).is_none());
}

#[test]
fn coercion_only_where_declared() {
    let mut r = Registry::new();
    let t = r
        .add(def(json!({"name": "c", "display_name": "C", "fields": [
            {"key": "port", "label": "P", "kind": "number", "integer": true, "coerce": true, "format": "port"},
            {"key": "on", "label": "O", "kind": "boolean", "coerce": true},
            {"key": "label", "label": "L", "kind": "string", "coerce": true},
            {"key": "strict", "label": "S", "kind": "number"}
        ]})))
        .unwrap();
    let c = t
        .validate(&json!({"port": " 5432 ", "on": "yes", "label": 42}))
        .unwrap();
    assert!(matches!(c.get("port"), Some(FieldValue::Integer(5432))));
    assert!(matches!(c.get("on"), Some(FieldValue::Bool(true))));
    assert!(matches!(c.get("label"), Some(FieldValue::Text(s)) if s == "42"));
    let e = t
        .validate(&json!({"port": "70000", "on": "maybe", "strict": "1"}))
        .map(|_| ())
        .unwrap_err();
    assert_eq!(
        e.rules(),
        [
            ("port", Rule::Maximum),
            ("on", Rule::Type),
            ("strict", Rule::Type)
        ]
    );
}

#[test]
fn input_text_limits_and_syntax() {
    let r = Registry::with_builtins();
    let t = r.get("http_bearer_token").unwrap();
    assert!(t.validate_json(br#"{"token":"abc"}"#).is_ok());
    let e = t
        .validate_json(br#"{"token": "abc""#)
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.rules(), [("", Rule::Syntax)]);
    assert!(e.to_string().contains("line 1"), "{e}");
    let e = t
        .validate_json(b"\"just a string\"")
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.rules(), [("", Rule::NotObject)]);
    // More errors than the cap: listed up to it, then one limit error.
    let mut obj = serde_json::Map::new();
    for i in 0..200 {
        obj.insert(format!("k{i:03}"), json!(i));
    }
    let e = t.validate(&Value::Object(obj)).map(|_| ()).unwrap_err();
    assert_eq!(e.errors().len(), credvault_schema::MAX_ERRORS + 1);
    assert_eq!(
        e.errors().last().unwrap().rule,
        Rule::Limit(credvault_schema::Limit::Errors)
    );
}

#[test]
fn a_registry_holds_at_most_max_types() {
    let mut r = Registry::new();
    for i in 0..credvault_schema::MAX_TYPES {
        r.add(def(json!({"name": format!("t{i}"), "display_name": "T", "fields": [{"key": "k", "label": "K", "kind": "string"}]})))
            .unwrap();
    }
    let err = r
        .add(def(json!({"name": "one_more", "display_name": "T", "fields": [{"key": "k", "label": "K", "kind": "string"}]})))
        .unwrap_err();
    assert!(err.reason.contains("1024 types"), "{err}");
}
