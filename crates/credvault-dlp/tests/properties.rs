//! Properties (512 cases each): after masking, no secret appears in any supported encoding
//! (base64, hex, percent and form encoding, JSON and Go's HTML-safe JSON, HTML references);
//! masking is idempotent; text without secrets is unchanged byte for byte; streaming with random
//! chunk sizes equals one-shot masking. Encodings here are computed independently of the crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use credvault_dlp::{Masker, MaskerBuilder};
use proptest::prelude::*;

const SECRET_CHARS: &str = "[A-Za-z0-9_+/=.!@#$%^&*(){}<>?:;'\"\\\\ ~-]{10,40}";
const TEXT_CHARS: &str = "[A-Za-z0-9 .,:;=/_\\n\\t-]{0,60}";

fn build(secrets: &[String]) -> Option<(Masker, Vec<String>)> {
    let mut b = MaskerBuilder::new();
    let mut added = Vec::new();
    for (i, s) in secrets.iter().enumerate() {
        if b.add(&format!("r{i}"), s).is_ok() {
            added.push(s.clone());
        }
    }
    (!added.is_empty()).then(|| (b.build().unwrap(), added))
}

fn percent(s: &str) -> String {
    percent_keeping(s, b"-._~", false)
}

/// Percent-encoding keeping `keep`, optionally `+` for a space (Python `quote`, `quote_plus`).
fn percent_keeping(s: &str, keep: &[u8], plus: bool) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || keep.contains(&b) {
                (b as char).to_string()
            } else if b == b' ' && plus {
                "+".to_owned()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Inside a JSON string as Go writes it: `& < >` as `\u0026 \u003c \u003e`.
fn go_json(s: &str) -> String {
    let j = serde_json::to_string(s).unwrap();
    j[1..j.len() - 1]
        .replace('&', "\\u0026")
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
}

/// Python `html.escape(s)`.
fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;")
}

/// Decimal references for `& < > " '`.
fn html_decimal(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' | '<' | '>' | '"' | '\'' => format!("&#{};", u32::from(c)),
            c => c.to_string(),
        })
        .collect()
}

/// The secret in one of the supported encodings, possibly inside a longer encoded blob.
fn encode(secret: &str, how: u8, pre: &[u8], post: &[u8]) -> String {
    let b64 = |e: &base64::engine::GeneralPurpose, bytes: &[u8]| e.encode(bytes);
    let wrapped = [pre, secret.as_bytes(), post].concat();
    match how % 13 {
        0 => secret.to_owned(),
        9 => percent_keeping(secret, b"-._~/", false),
        10 => percent_keeping(secret, b"-._~", true),
        11 => go_json(secret),
        12 => {
            if how.is_multiple_of(2) {
                html(secret)
            } else {
                html_decimal(secret)
            }
        }
        1 => b64(&base64::engine::general_purpose::STANDARD, &wrapped),
        2 => b64(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &wrapped),
        3 => secret.bytes().map(|b| format!("{b:02x}")).collect(),
        4 => secret.bytes().map(|b| format!("{b:02X}")).collect(),
        5 => percent(secret),
        6 => {
            let j = serde_json::to_string(secret).unwrap();
            j[1..j.len() - 1].to_owned()
        }
        7 => b64(
            &base64::engine::general_purpose::STANDARD,
            secret.as_bytes(),
        ),
        _ => b64(
            &base64::engine::general_purpose::URL_SAFE,
            secret.as_bytes(),
        ),
    }
}

/// Strings that must not survive masking: every plain encoding of the secret, and the middle
/// of every aligned base64 encoding (the ends can hold bits of the neighbours).
fn forbidden(secret: &str) -> Vec<String> {
    let mut v = vec![
        secret.to_owned(),
        secret.bytes().map(|b| format!("{b:02x}")).collect(),
        secret.bytes().map(|b| format!("{b:02X}")).collect(),
        percent(secret),
        percent_keeping(secret, b"-._~/", false),
        percent_keeping(secret, b"-._~", true),
        go_json(secret),
        html(secret),
        html_decimal(secret),
    ];
    let j = serde_json::to_string(secret).unwrap();
    v.push(j[1..j.len() - 1].to_owned());
    for e in [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::URL_SAFE,
    ] {
        for align in 0..3 {
            let enc = e.encode([&b"\0\0\0"[..align], secret.as_bytes()].concat());
            let start = (8 * align).div_ceil(6) + 1;
            let end = (8 * (align + secret.len())) / 6 - 1;
            if end > start + 8 {
                v.push(enc[start..end].to_owned());
            }
        }
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn no_secret_survives_in_any_encoding(
        secrets in prop::collection::vec(SECRET_CHARS, 1..4),
        pieces in prop::collection::vec((TEXT_CHARS, 0usize..4, any::<u8>(), prop::collection::vec(any::<u8>(), 0..3), prop::collection::vec(any::<u8>(), 0..3)), 1..6),
    ) {
        let Some((m, added)) = build(&secrets) else { return Ok(()) };
        let mut text = String::new();
        for (filler, which, how, pre, post) in &pieces {
            text.push_str(filler);
            if let Some(s) = added.get(*which) {
                text.push_str(&encode(s, *how, pre, post));
            }
        }
        let out = m.mask(&text);
        for s in &added {
            for f in forbidden(s) {
                prop_assert!(!out.contains(&f), "{:?} survives in {:?}", f, out);
            }
        }
    }

    #[test]
    fn masking_is_idempotent(
        secrets in prop::collection::vec(SECRET_CHARS, 1..4),
        pieces in prop::collection::vec((TEXT_CHARS, 0usize..4, any::<u8>()), 1..6),
    ) {
        let Some((m, added)) = build(&secrets) else { return Ok(()) };
        let mut text = String::new();
        for (filler, which, how) in &pieces {
            text.push_str(filler);
            if let Some(s) = added.get(*which) {
                text.push_str(&encode(s, *how, b"", b""));
            }
        }
        let once = m.mask(&text);
        prop_assert_eq!(m.mask(&once), once);
    }

    #[test]
    fn text_without_secrets_is_unchanged(secrets in prop::collection::vec(SECRET_CHARS, 1..4), text in "[\\PC\\n]{0,200}") {
        let Some((m, _)) = build(&secrets) else { return Ok(()) };
        prop_assume!(m.find(text.as_bytes()).is_empty());
        prop_assert_eq!(m.mask(&text), text);
    }

    #[test]
    fn streaming_equals_one_shot(
        secrets in prop::collection::vec(SECRET_CHARS, 1..4),
        pieces in prop::collection::vec((TEXT_CHARS, 0usize..4, any::<u8>()), 1..8),
        sizes in prop::collection::vec(1usize..50, 1..20),
    ) {
        let Some((m, added)) = build(&secrets) else { return Ok(()) };
        let mut text = Vec::new();
        for (filler, which, how) in &pieces {
            text.extend_from_slice(filler.as_bytes());
            if let Some(s) = added.get(*which) {
                text.extend_from_slice(encode(s, *how, b"x", b"yz").as_bytes());
            }
        }
        let once = m.mask_bytes(&text);
        // The quick-to-build automaton finds the same matches.
        let mut qb = MaskerBuilder::new().quick_build();
        for (i, sec) in secrets.iter().enumerate() {
            let _ = qb.add(&format!("r{i}"), sec);
        }
        prop_assert_eq!(&qb.build().unwrap().mask_bytes(&text), &once);
        let mut s = m.stream();
        let mut out = Vec::new();
        let mut rest: &[u8] = &text;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].min(rest.len());
            s.push(&rest[..n], &mut out);
            rest = &rest[n..];
            i += 1;
        }
        s.finish(&mut out);
        prop_assert_eq!(&out, &once);
        // The shared one gives the same bytes, twice over (a finished stream starts anew).
        let m = std::sync::Arc::new(m);
        let mut shared = credvault_dlp::SharedStreamMasker::new(std::sync::Arc::clone(&m));
        for _ in 0..2 {
            let mut out2 = Vec::new();
            for chunk in text.chunks(sizes[0]) {
                shared.push(chunk, &mut out2);
            }
            shared.finish(&mut out2);
            prop_assert_eq!(&out2, &once);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..600)) {
        credvault_dlp::fuzzing::scan_and_mask(&data);
        credvault_dlp::fuzzing::parse(&data);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// The gated anchored search equals a plain unanchored leftmost-longest search over the
    /// same forms, with short (forced) secrets, overlapping secrets and secrets glued together.
    #[test]
    fn gated_search_equals_plain_aho_corasick(
        secrets in proptest::collection::vec("[a-c0-9+/=%_ -]{1,12}", 1..6),
        glue in proptest::collection::vec((0usize..6, "[a-c0-9+/= ]{0,4}"), 0..12),
        forced in any::<bool>(),
    ) {
        let mut text = Vec::new();
        for (i, sep) in &glue {
            text.extend_from_slice(secrets[i % secrets.len()].as_bytes());
            text.extend_from_slice(sep.as_bytes());
        }
        prop_assert!(credvault_dlp::fuzzing::gated_search_agrees(&secrets, &text, forced));
    }

    /// The same with every form at least 5 bytes long, where the search skips ahead on
    /// 4-byte runs no pattern begins with (the shift must never jump over a match).
    #[test]
    fn skipping_search_equals_plain_aho_corasick(
        secrets in proptest::collection::vec("[a-d0-9+/=%_ -]{5,14}", 1..8),
        glue in proptest::collection::vec((0usize..8, 0usize..14, "[a-d0-9+/= ]{0,6}"), 0..14),
    ) {
        // Whole secrets, and prefixes and suffixes of them, glued with short runs.
        let mut text = Vec::new();
        for (i, cut, sep) in &glue {
            let s = secrets[i % secrets.len()].as_bytes();
            let cut = cut % (s.len() + 1);
            text.extend_from_slice(if i % 3 == 0 { &s[cut..] } else { s });
            text.extend_from_slice(sep.as_bytes());
        }
        prop_assert!(credvault_dlp::fuzzing::gated_search_agrees(&secrets, &text, true));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Secrets sharing long prefixes (`sk-proj-`, `ghp_`, a JWT header), in text full of
    /// unknown tokens with the same prefixes and of cut-off secrets: the gated search (every
    /// encoded form included) finds exactly what a plain search over the same forms finds.
    #[test]
    fn shared_long_prefixes_equal_plain_aho_corasick(
        tails in proptest::collection::vec((0usize..3, "[A-Za-z0-9]{4,12}"), 1..8),
        glue in proptest::collection::vec((0usize..8, 0usize..3, "[A-Za-z0-9]{0,10}", "[ =:\n]{1,2}", any::<u8>()), 0..16),
    ) {
        const PREFIXES: [&str; 3] = ["sk-proj-", "ghp_", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."];
        let secrets: Vec<String> =
            tails.iter().map(|(p, t)| format!("{}{t}", PREFIXES[*p])).collect();
        let mut text = Vec::new();
        for (i, how, other, sep, enc) in &glue {
            let s = &secrets[i % secrets.len()];
            match how {
                // The secret in one of its forms (raw, base64, hex, percent, JSON...).
                0 => text.extend_from_slice(encode(s, *enc, b"", b"").as_bytes()),
                // An unknown token with the same prefix.
                1 => text.extend_from_slice(format!("{}{other}", PREFIXES[i % 3]).as_bytes()),
                // A secret cut short.
                _ => text.extend_from_slice(&s.as_bytes()[..s.len() - 1]),
            }
            text.extend_from_slice(sep.as_bytes());
        }
        prop_assert!(credvault_dlp::fuzzing::gated_search_agrees(&secrets, &text, true));
    }
}
