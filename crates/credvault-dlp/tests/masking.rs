//! Known-secret masking: each encoded form, the guard, streaming and the I/O adapters, limits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};

use base64::Engine as _;
use credvault_dlp::{
    AddError, Form, Masker, MaskerBuilder, MaskingReader, MaskingWriter, MAX_SECRETS,
};

const SECRET: &str = "Tr0ub4dor&3-horse/battery+staple";

fn masker() -> Masker {
    let mut b = MaskerBuilder::new();
    b.add("vault/db_password", SECRET).unwrap();
    b.build().unwrap()
}

fn assert_masked(m: &Masker, text: &str, form: Form) {
    let found = m.find(text.as_bytes());
    assert!(
        found.iter().any(|f| f.form == form),
        "{form:?} not found in {text}"
    );
    let out = m.mask(text);
    assert!(out.contains("[cv:vault/db_password]"), "{out}");
}

#[test]
fn raw_and_base64_in_every_alignment_and_alphabet() {
    let m = masker();
    assert_eq!(
        m.mask(&format!("pw={SECRET};")),
        "pw=[cv:vault/db_password];"
    );
    for engine in [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        for prefix in ["", "u", "us", "user:"] {
            for suffix in ["", "!", "!!", "@host"] {
                let encoded = engine.encode(format!("{prefix}{SECRET}{suffix}"));
                let text = format!("Authorization: Basic {encoded}");
                assert_masked(&m, &text, Form::Base64);
                // What is left of the encoding no longer decodes to the secret.
                let out = m.mask(&text);
                let rest = out.split(' ').next_back().unwrap();
                assert!(!rest.contains(&encoded[encoded.len() / 2..]), "{out}");
            }
        }
    }
}

#[test]
fn hex_percent_json_forms() {
    let m = masker();
    let hex = SECRET
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    assert_masked(&m, &format!("dump {hex} end"), Form::Hex);
    assert_masked(&m, &format!("dump {} end", hex.to_uppercase()), Form::Hex);
    // RFC 3986 (upper and lower hex), encodeURIComponent style, and form encoding.
    for text in [
        "https://x/?p=Tr0ub4dor%263-horse%2Fbattery%2Bstaple&x=1",
        "https://x/?p=Tr0ub4dor%263-horse%2fbattery%2bstaple",
        "body: password=Tr0ub4dor%263-horse%2Fbattery%2Bstaple",
    ] {
        assert_masked(&m, text, Form::Percent);
    }
    // JSON escaping: a secret with a quote, backslash, slash, newline and a non-ASCII char.
    let mut b = MaskerBuilder::new();
    let tricky = "p\"a\\s/s\nwörd-42xZ";
    b.add("t/x", tricky).unwrap();
    let m = b.build().unwrap();
    let serde = serde_json::to_string(&serde_json::json!({ "pw": tricky })).unwrap();
    assert!(m.mask(&serde).contains("[cv:t/x]"), "{serde}");
    for escaped in [r#"p\"a\\s/s\nw\u00f6rd-42xZ"#, r#"p\"a\\s\/s\nwörd-42xZ"#] {
        let text = format!("{{\"pw\":\"{escaped}\"}}");
        assert_eq!(m.mask(&text), "{\"pw\":\"[cv:t/x]\"}", "{text}");
    }
}

#[test]
fn multi_line_secrets_split_across_lines() {
    let key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n-----END PRIVATE KEY-----";
    let mut b = MaskerBuilder::new();
    b.add("ssh/deploy", key).unwrap();
    let m = b.build().unwrap();
    // Whole, with CRLF line endings, and line by line with log prefixes.
    assert_eq!(m.mask(key), "[cv:ssh/deploy]");
    assert_eq!(m.mask(&key.replace('\n', "\r\n")), "[cv:ssh/deploy]");
    let logged: String = key
        .lines()
        .map(|l| format!("12:00:01 stderr| {l}\n"))
        .collect();
    let out = m.mask(&logged);
    assert!(!out.contains("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"), "{out}");
    assert!(!out.contains("BKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj"), "{out}");
    assert!(m
        .find(logged.as_bytes())
        .iter()
        .all(|f| f.form == Form::Lines));
}

#[test]
fn the_guard_refuses_short_common_and_low_entropy_values_unless_forced() {
    let mut b = MaskerBuilder::new();
    assert_eq!(b.add("r/a", "admin"), Err(AddError::TooShort));
    assert_eq!(b.add("r/b", "password"), Err(AddError::Common));
    assert_eq!(b.add("r/c", "aaaaaaaaaaaaaaaa"), Err(AddError::LowEntropy));
    assert_eq!(b.add("bad]ref", SECRET), Err(AddError::Reference));
    assert_eq!(b.add("", SECRET), Err(AddError::Reference));
    assert_eq!(b.add_forced("r/e", ""), Err(AddError::Size));
    assert_eq!(
        b.add_forced("r/f", &"x".repeat(70_000)),
        Err(AddError::Size)
    );
    assert!(b.is_empty());
    b.add_forced("r/admin", "admin").unwrap();
    let m = b.build().unwrap();
    assert_eq!(m.mask("login admin ok"), "login [cv:r/admin] ok");
    let mut b = MaskerBuilder::new().min_length(4).min_entropy(1.0);
    b.add("r/pin", "8472").unwrap();
    // Errors never hold the value.
    assert!(!AddError::Common.to_string().contains("password"));
}

#[test]
fn streaming_catches_secrets_split_across_chunks() {
    let m = masker();
    let text = format!(
        "a{SECRET}b and {} c",
        base64::engine::general_purpose::STANDARD.encode(SECRET)
    );
    let once = m.mask_bytes(text.as_bytes());
    for size in 1..=text.len() {
        let mut s = m.stream();
        let mut out = Vec::new();
        for chunk in text.as_bytes().chunks(size) {
            s.push(chunk, &mut out);
            assert!(
                s.held_back() < m.max_pattern_len(),
                "held back {} bytes",
                s.held_back()
            );
        }
        s.finish(&mut out);
        assert_eq!(out, once, "chunk size {size}");
    }
}

#[test]
fn writer_and_reader_adapters_mask_a_child_process() {
    let m = masker();
    let mut w = MaskingWriter::new(&m, Vec::new());
    for piece in ["log: ", &SECRET[..5], &SECRET[5..], " done\n"] {
        w.write_all(piece.as_bytes()).unwrap();
    }
    w.flush().unwrap();
    let out = w.finish().unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "log: [cv:vault/db_password] done\n"
    );

    // A real child process printing the secret (and its base64) on stdout.
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("printf '%s\\n' \"$S\"; printf '%s' \"$S\" | base64")
        .env("S", SECRET)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut r = MaskingReader::new(&m, child.stdout.take().unwrap());
    let mut text = String::new();
    r.read_to_string(&mut text).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(!text.contains(SECRET), "{text}");
    assert!(text.starts_with("[cv:vault/db_password]\n"), "{text}");
    assert!(
        !text.contains(&base64::engine::general_purpose::STANDARD.encode(SECRET)[..20]),
        "{text}"
    );
}

#[test]
fn many_secrets_and_the_limit() {
    let secret = |i: u64| {
        let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        format!("tok_{:016x}", z ^ (z >> 31))
    };
    let mut b = MaskerBuilder::new();
    for i in 0..2000 {
        b.add(&format!("bulk/{i}"), &secret(i)).unwrap();
    }
    let m = b.build().unwrap();
    assert_eq!(m.secrets(), 2000);
    assert!(m.patterns() >= 2000 * 7, "{}", m.patterns());
    assert_eq!(
        m.mask(&format!("x {} y", secret(1234))),
        "x [cv:bulk/1234] y"
    );
    assert_eq!(MAX_SECRETS, 100_000);
    assert!(format!("{m:?}").contains("secrets: 2000"));
}

#[test]
fn streaming_holds_back_only_what_could_start_a_secret() {
    let m = masker();
    let mut s = m.stream();
    let mut out = Vec::new();
    // A prompt that cannot begin any form of the secret goes out at once.
    s.push(b"Enter the code: ", &mut out);
    assert_eq!(out, b"Enter the code: ");
    assert_eq!(s.held_back(), 0);
    // The start of the secret is held until the rest arrives.
    s.push(&SECRET.as_bytes()[..6], &mut out);
    assert_eq!(out, b"Enter the code: ");
    assert_eq!(s.held_back(), 6);
    s.push(&SECRET.as_bytes()[6..], &mut out);
    s.push(b"\nnext line\n", &mut out);
    s.finish(&mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "Enter the code: [cv:vault/db_password]\nnext line\n"
    );
}
