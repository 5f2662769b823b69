//! `credvault type ...` end to end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use assert_cmd::Command;

fn run(args: &[&str], stdin: &str) -> (i32, String, String) {
    let o = Command::cargo_bin("credvault")
        .unwrap()
        .args(args)
        .write_stdin(stdin.to_owned())
        .output()
        .unwrap();
    (
        o.status.code().unwrap(),
        String::from_utf8(o.stdout).unwrap(),
        String::from_utf8(o.stderr).unwrap(),
    )
}

#[test]
fn list_and_show() {
    let (code, out, _) = run(&["type", "list"], "");
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 22);
    assert!(
        out.lines()
            .any(|l| l.starts_with("postgres ") && l.contains("database")),
        "{out}"
    );
    let (code, out, _) = run(&["--json", "type", "list"], "");
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 22);
    assert!(v.as_array().unwrap().iter().all(|t| t["builtin"] == true));

    let (code, out, _) = run(&["type", "show", "http_bearer_token"], "");
    assert_eq!(code, 0);
    assert!(
        out.contains("token")
            && out.contains("secret")
            && out.contains("authenticate: header Authorization"),
        "{out}"
    );
    let (code, out, _) = run(&["type", "show", "postgres", "--json-schema"], "");
    assert_eq!(code, 0);
    let schema: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    let (code, out, _) = run(&["--json", "type", "show", "postgres"], "");
    assert_eq!(code, 0);
    let def: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(def["name"], "postgres");

    let (code, out, err) = run(&["type", "show", "nope"], "");
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert_eq!(
        err.trim(),
        "credvault: no credential type named `nope` (see `credvault type list`)"
    );
}

#[test]
fn validate_prints_every_error_and_never_a_value() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"host":"db bad","port":99999,"password":"hunter2-canary","colour":"red"}"#,
    )
    .unwrap();
    let (code, out, err) = run(&["type", "validate", "postgres", bad.to_str().unwrap()], "");
    assert_eq!(code, 1);
    assert!(out.is_empty());
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [
            "credvault: host: not a valid host name",
            "credvault: port: greater than 65535",
            "credvault: database: required field is missing",
            "credvault: user: required field is missing",
            "credvault: colour: not a field of type postgres",
        ]
    );
    assert!(!err.contains("hunter2") && !err.contains("db bad"));

    let good = r#"{"host":"db","database":"d","user":"u","password":"hunter2-canary"}"#;
    let (code, out, _) = run(&["type", "validate", "postgres", "-"], good);
    assert_eq!(code, 0);
    assert_eq!(out, "valid postgres credential: 6 field(s) set, 1 secret\n");
    let (code, out, _) = run(&["--json", "type", "validate", "postgres", "-"], good);
    assert_eq!(code, 0);
    assert!(!out.contains("hunter2"));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["credential"]["fields"]["password"],
        credvault_schema::SECRET_MARKER
    );

    let (code, _, err) = run(&["type", "validate", "postgres", "-"], "{not json");
    assert_eq!(code, 1);
    assert!(
        err.starts_with("credvault: not valid JSON (line 1, column 2)"),
        "{err}"
    );
}

#[test]
fn user_types_from_files_and_directories() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("acme.json"),
        r#"{"name":"acme_api","display_name":"ACME","extends":"http_bearer_token",
            "fields":[{"key":"tenant","label":"Tenant","kind":"string","required":true}]}"#,
    )
    .unwrap();
    let d = dir.path().to_str().unwrap();
    let (code, out, _) = run(&["type", "list", "--types", d], "");
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.starts_with("acme_api") && l.ends_with("(user)")),
        "{out}"
    );
    let (code, _, err) = run(
        &["type", "validate", "acme_api", "-", "--types", d],
        r#"{"token":"t"}"#,
    );
    assert_eq!(code, 1);
    assert_eq!(err.trim(), "credvault: tenant: required field is missing");
    std::fs::write(
        dir.path().join("broken.json"),
        r#"{"name":"x","display_name":"X","fields":[],"oops":1}"#,
    )
    .unwrap();
    let (code, _, err) = run(&["type", "list", "--types", d], "");
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1);
    assert!(err.contains("broken.json") && err.contains("oops"), "{err}");
}
