//! Entry points for the fuzz targets (not a public API).

use std::sync::OnceLock;

use crate::Registry;

fn builtins() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(Registry::with_builtins)
}

/// Parses arbitrary bytes as a type definition and, if it compiles, validates a few inputs
/// against it and exports its JSON Schema. Must never panic.
pub fn definition(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut r = builtins().clone();
    if let Ok(t) = r.add_json(text) {
        let _ = t.json_schema();
        let _ = t.validate(&serde_json::json!({}));
        let _ = t.validate_json(data);
    }
}

/// Validates arbitrary bytes (as JSON text) against every built-in type, and as a patch of a
/// valid credential where one can be built. Must never panic.
pub fn validate(data: &[u8]) {
    let value: Option<serde_json::Value> = serde_json::from_slice(data).ok();
    for t in builtins().iter() {
        let _ = t.validate_json(data);
        if let Some(v) = &value {
            if let Ok(c) = t.validate(v) {
                let _ = t.authenticate(&c);
                let _ = t.test_request(&c);
                let _ = t.validate_patch(&c, v);
            }
        }
    }
}
