//! credvault-schema beside the `jsonschema` crate in one run: validating one 10-field
//! credential (every rule kind: hostname and email formats, patterns, lengths, an integer port,
//! a bounded number, options, a boolean, a secret) against its type, and the `jsonschema`
//! crate validating the same value against the type's exported JSON Schema, compiled once.
//!
//! `credvault_validate` builds the typed credential (values copied, the secret in a
//! `SecretValue`). The peer `jsonschema_validate` returns `Result<(), ValidationError>`;
//! `jsonschema_is_valid` is its fastest yes/no path, shown for reference.
//!
//! `cargo run -p credvault-benches --bin bench-report -- --peer jsonschema_validate schema_`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use credvault_schema::Registry;
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;

fn bench(c: &mut Criterion) {
    let mut registry = Registry::new();
    let ty = registry
        .add_json(
            &json!({
                "name": "bench_db",
                "display_name": "Bench database",
                "fields": [
                    {"key": "host", "label": "Host", "kind": "string", "required": true, "format": "hostname"},
                    {"key": "port", "label": "Port", "kind": "number", "integer": true, "format": "port", "default": 5432},
                    {"key": "database", "label": "Database", "kind": "string", "required": true, "min_length": 1, "max_length": 63},
                    {"key": "user", "label": "User", "kind": "string", "required": true, "pattern": "^[a-z_][a-z0-9_]*$", "max_length": 63},
                    {"key": "password", "label": "Password", "kind": "password", "required": true, "max_length": 1024},
                    {"key": "ssl_mode", "label": "SSL", "kind": "options", "options": ["disable", "prefer", "require", "verify-full"], "default": "require"},
                    {"key": "timeout", "label": "Timeout (s)", "kind": "number", "min": 0, "max": 3600},
                    {"key": "read_only", "label": "Read only", "kind": "boolean", "default": false},
                    {"key": "region", "label": "Region", "kind": "string", "pattern": "^[a-z]{2}-[a-z]+-[0-9]$"},
                    {"key": "admin_email", "label": "Admin", "kind": "string", "format": "email", "max_length": 254}
                ]
            })
            .to_string(),
        )
        .unwrap();
    let value = json!({
        "host": "db-primary.eu-west-1.internal.example.com",
        "port": 6432,
        "database": "billing",
        "user": "svc_billing",
        "password": "c0rrect-h0rse-battery-staple",
        "ssl_mode": "verify-full",
        "timeout": 30.5,
        "read_only": true,
        "region": "eu-west-1",
        "admin_email": "dba-team@example.com"
    });
    let schema = ty.json_schema();
    let peer = jsonschema::draft202012::new(&schema).unwrap();
    assert!(ty.validate(&value).is_ok());
    assert!(peer.validate(&value).is_ok());
    assert_eq!(value.as_object().unwrap().len(), 10);

    let mut g = c.benchmark_group("schema_validate_10_fields");
    g.bench_function("jsonschema_validate", |b| {
        b.iter(|| black_box(peer.validate(black_box(&value)).is_ok()))
    });
    g.bench_function("jsonschema_is_valid", |b| {
        b.iter(|| black_box(peer.is_valid(black_box(&value))))
    });
    g.bench_function("credvault_validate", |b| {
        b.iter(|| black_box(ty.validate(black_box(&value)).is_ok()))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(40);
    targets = bench
}
criterion_main!(benches);
