//! Differential: a built-in credential type's own validation against the `jsonschema` crate
//! (draft 2020-12) running the JSON Schema the type exports.
//!
//! Input: a type-selector byte, then JSON text. Whatever JSON parses is accepted by both
//! validators or refused by both.
#![no_main]

use std::sync::{Arc, OnceLock};

use credvault_schema::{CredentialType, Registry};
use libfuzzer_sys::fuzz_target;

fn types() -> &'static [(Arc<CredentialType>, jsonschema::Validator)] {
    static T: OnceLock<Vec<(Arc<CredentialType>, jsonschema::Validator)>> = OnceLock::new();
    T.get_or_init(|| {
        Registry::with_builtins()
            .iter()
            .map(|t| {
                let v = jsonschema::draft202012::new(&t.json_schema()).expect("schema compiles");
                (Arc::clone(t), v)
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, json)) = data.split_first() else {
        return;
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(json) else {
        return;
    };
    let all = types();
    let (ty, validator) = &all[usize::from(sel) % all.len()];
    let ours = ty.validate(&value).is_ok();
    let theirs = validator.is_valid(&value);
    assert_eq!(ours, theirs, "{}: credvault {ours}, jsonschema {theirs} on {value}", ty.name());
});
