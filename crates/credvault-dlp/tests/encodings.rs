//! Known secrets in the encodings other programs write them in, as written by the real
//! encoders: Python's `urllib.parse.quote`/`quote_plus`/`urlencode`, `json.dumps`, `html.escape`,
//! Go's HTML-safe JSON escaping, numeric HTML references and HTML around JSON
//! (`tests/data/encodings.json`, made by `tests/data/make_encoding_vectors.py`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use credvault_dlp::{Form, MaskerBuilder};

const VECTORS: &str = include_str!("data/encodings.json");

fn form_of(kind: &str) -> Form {
    match kind {
        k if k.starts_with("quote") || k == "urlencode" => Form::Percent,
        k if k.starts_with("html") => Form::Html,
        _ => Form::Json,
    }
}

#[test]
fn every_encoder_output_is_found_and_masked() {
    let v: serde_json::Value = serde_json::from_str(VECTORS).unwrap();
    let vectors = v["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 7);
    let mut checked = 0;
    for vec in vectors {
        let secret = vec["secret"].as_str().unwrap();
        let mut b = MaskerBuilder::new();
        b.add("app/key", secret).unwrap();
        let m = b.build().unwrap();
        for (kind, enc) in vec["forms"].as_object().unwrap() {
            let enc = enc.as_str().unwrap();
            let text = format!("<p data-x=\"{enc}\">\n{{\"k\": \"{enc}\"}}&next=1");
            let found = m.find(text.as_bytes());
            assert_eq!(found.len(), 2, "{kind} of {secret:?}: {enc}: {found:?}");
            if enc != secret {
                // The encoder changed it: found as the encoding, not by luck as the raw value.
                assert!(
                    found.iter().all(|f| f.form == form_of(kind)),
                    "{kind} of {secret:?}: {found:?}"
                );
            }
            let out = m.mask(&text);
            assert!(!out.contains(enc), "{kind} of {secret:?} survives: {out}");
            assert_eq!(out.matches("[cv:app/key]").count(), 2, "{kind}: {out}");
            checked += 1;
        }
    }
    assert!(checked >= 90, "{checked} encodings checked");
}

#[test]
fn an_encoding_of_another_value_is_left_alone() {
    let mut b = MaskerBuilder::new();
    b.add("app/key", "Tr0ub4dor&3-horse/battery+staple")
        .unwrap();
    let m = b.build().unwrap();
    for text in [
        "Tr0ub4dor&amp;4-horse/battery+staple",
        "Tr0ub4dor\\u00264-horse/battery+staple",
        "Tr0ub4dor%264-horse/battery%2Bstaple",
        "Tr0ub4dor&#38;4-horse/battery+staple",
    ] {
        assert_eq!(m.mask(text), text);
    }
}
