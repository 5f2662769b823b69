//! The encoded forms a secret can take in text: base64 (standard and URL-safe, at each of the
//! three byte alignments, with and without padding), hex (both cases), percent-encoding (RFC
//! 3986, JavaScript, Python `quote` with `/` kept, form encoding with `+` for space), JSON
//! string escaping (ASCII-only, `\/`, Go's HTML-safe `\u0026 \u003c \u003e \u2028`), HTML
//! character references (named, decimal, hex; Python and Go styles), HTML around JSON, and,
//! for a multi-line secret, other line endings and its lines one by one.

use base64::Engine as _;

/// One searchable form of a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Variant {
    pub(crate) bytes: Vec<u8>,
    pub(crate) form: Form,
}

/// Which encoding a variant is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Form {
    /// The value as is.
    Raw,
    /// Base64, standard or URL-safe alphabet, at some byte alignment.
    Base64,
    /// Hex, lower or upper case.
    Hex,
    /// Percent-encoded (URLs, form bodies).
    Percent,
    /// Inside a JSON string (escapes applied).
    Json,
    /// HTML character references (`&amp;`, `&#38;`, `&#x26;`), also around a JSON string.
    Html,
    /// A multi-line secret with other line endings, or one of its lines on its own.
    Lines,
}

/// Shortest base64 run taken as evidence of a secret (shorter cores would match by chance).
const MIN_B64_CORE: usize = 8;

/// The characters of a base64 encoding that depend only on the secret, when it starts `align`
/// bytes into the encoded stream and anything may follow it.
fn base64_core(
    engine: &base64::engine::GeneralPurpose,
    secret: &[u8],
    align: usize,
) -> Option<Vec<u8>> {
    let mut stream = vec![0u8; align];
    stream.extend_from_slice(secret);
    let enc = engine.encode(&stream).into_bytes();
    // Character i covers bits [6i, 6i+6); the secret covers bits [8*align, 8*(align+n)).
    let first = (8 * align).div_ceil(6);
    let end_bits = 8 * (align + secret.len());
    let last = (end_bits / 6).checked_sub(1)?; // last char fully inside
    if last < first {
        return None;
    }
    let core = enc.get(first..=last)?.to_vec();
    (core.len() >= MIN_B64_CORE).then_some(core)
}

fn percent(secret: &[u8], keep: &[u8], upper: bool, plus_for_space: bool) -> Vec<u8> {
    let hex: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let mut out = Vec::with_capacity(secret.len() * 3);
    for &b in secret {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            out.push(b);
        } else if b == b' ' && plus_for_space {
            out.push(b'+');
        } else {
            out.extend_from_slice(&[b'%', hex[usize::from(b >> 4)], hex[usize::from(b & 15)]]);
        }
    }
    out
}

/// How a JSON encoder escapes a string.
#[derive(Clone, Copy, Default)]
struct JsonStyle {
    /// Non-ASCII as `\uXXXX` (Python's default `ensure_ascii`).
    ascii_only: bool,
    /// `/` as `\/` (PHP).
    escape_slash: bool,
    /// `& < >` and U+2028/U+2029 as `\u0026 \u003c \u003e \u2028 \u2029` (Go's
    /// `encoding/json`, safe inside HTML `<script>`).
    html_safe: bool,
}

fn json_escape(secret: &str, style: JsonStyle) -> String {
    let mut out = String::with_capacity(secret.len() + 8);
    for c in secret.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' if style.escape_slash => out.push_str("\\/"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '&' | '<' | '>' | '\u{2028}' | '\u{2029}' if style.html_safe => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 || (style.ascii_only && !c.is_ascii()) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// How an HTML encoder writes the characters it escapes.
#[derive(Clone, Copy)]
enum HtmlStyle {
    /// Python `html.escape`: `&amp; &lt; &gt;`, with `quote`: `&quot; &#x27;` too.
    Python { quote: bool },
    /// Go `html.EscapeString`: `&amp; &#39; &lt; &gt; &#34;`.
    Go,
    /// `&#38;` for each of `& < > " '`.
    Decimal,
    /// `&#x26;` for each of `& < > " '`.
    Hex,
}

fn html_escape(secret: &str, style: HtmlStyle) -> String {
    let mut out = String::with_capacity(secret.len() + 8);
    for c in secret.chars() {
        let named = match (c, style) {
            ('&', HtmlStyle::Python { .. } | HtmlStyle::Go) => "&amp;",
            ('<', HtmlStyle::Python { .. } | HtmlStyle::Go) => "&lt;",
            ('>', HtmlStyle::Python { .. } | HtmlStyle::Go) => "&gt;",
            ('"', HtmlStyle::Python { quote: true }) => "&quot;",
            ('\'', HtmlStyle::Python { quote: true }) => "&#x27;",
            ('"', HtmlStyle::Go) => "&#34;",
            ('\'', HtmlStyle::Go) => "&#39;",
            ('&' | '<' | '>' | '"' | '\'', HtmlStyle::Decimal) => {
                out.push_str(&format!("&#{};", c as u32));
                continue;
            }
            ('&' | '<' | '>' | '"' | '\'', HtmlStyle::Hex) => {
                out.push_str(&format!("&#x{:x};", c as u32));
                continue;
            }
            _ => {
                out.push(c);
                continue;
            }
        };
        out.push_str(named);
    }
    out
}

/// Every form of `secret` to search for, deduplicated, shortest forms not below `min_len`.
pub(crate) fn variants(secret: &str, min_len: usize) -> Vec<Variant> {
    let raw = secret.as_bytes();
    let mut out: Vec<Variant> = Vec::new();
    let mut add = |bytes: Vec<u8>, form: Form| {
        if bytes.len() >= min_len.max(1) && !out.iter().any(|v| v.bytes == bytes) {
            out.push(Variant { bytes, form });
        }
    };
    add(raw.to_vec(), Form::Raw);
    for engine in [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE,
    ] {
        // The whole value encoded on its own, padded and not (the longest match wins), then
        // the alignment-independent cores for a value inside a longer encoded stream.
        let full = engine.encode(raw).into_bytes();
        let unpadded = full
            .iter()
            .copied()
            .filter(|c| *c != b'=')
            .collect::<Vec<u8>>();
        if unpadded.len() >= MIN_B64_CORE {
            add(full, Form::Base64);
            add(unpadded, Form::Base64);
        }
        for align in 0..3 {
            if let Some(core) = base64_core(engine, raw, align) {
                add(core, Form::Base64);
            }
        }
    }
    add(hex_lower(raw), Form::Hex);
    add(hex_lower(raw).to_ascii_uppercase(), Form::Hex);
    // RFC 3986 unreserved kept; JavaScript encodeURIComponent also keeps !'()*.
    add(percent(raw, b"-._~", true, false), Form::Percent);
    add(percent(raw, b"-._~", false, false), Form::Percent);
    add(percent(raw, b"-._~!'()*", true, false), Form::Percent);
    add(percent(raw, b"-._*", true, true), Form::Percent);
    // Python `urllib.parse.quote` keeps `/` by default; `quote_plus` and `urlencode` write `+`
    // for a space.
    add(percent(raw, b"-._~/", true, false), Form::Percent);
    add(percent(raw, b"-._~", true, true), Form::Percent);
    let json = |ascii_only, escape_slash, html_safe| {
        json_escape(
            secret,
            JsonStyle {
                ascii_only,
                escape_slash,
                html_safe,
            },
        )
    };
    let plain_json = json(false, false, false);
    let ascii_json = json(true, false, false);
    add(plain_json.clone().into_bytes(), Form::Json);
    add(ascii_json.clone().into_bytes(), Form::Json);
    add(json(false, true, false).into_bytes(), Form::Json);
    add(json(false, false, true).into_bytes(), Form::Json);
    add(json(true, false, true).into_bytes(), Form::Json);
    for style in [
        HtmlStyle::Python { quote: true },
        HtmlStyle::Python { quote: false },
        HtmlStyle::Go,
        HtmlStyle::Decimal,
        HtmlStyle::Hex,
    ] {
        add(html_escape(secret, style).into_bytes(), Form::Html);
    }
    // A JSON string inside an HTML attribute or text.
    for j in [&plain_json, &ascii_json] {
        for style in [HtmlStyle::Python { quote: true }, HtmlStyle::Go] {
            add(html_escape(j, style).into_bytes(), Form::Html);
        }
    }
    if secret.contains('\n') {
        if !secret.contains("\r\n") {
            add(secret.replace('\n', "\r\n").into_bytes(), Form::Lines);
        } else {
            add(secret.replace("\r\n", "\n").into_bytes(), Form::Lines);
        }
        for line in secret.lines() {
            let line = line.trim();
            add(line.as_bytes().to_vec(), Form::Lines);
        }
    }
    out
}

fn hex_lower(b: &[u8]) -> Vec<u8> {
    const D: &[u8; 16] = b"0123456789abcdef";
    b.iter()
        .flat_map(|x| [D[usize::from(x >> 4)], D[usize::from(x & 15)]])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_cores_are_inside_every_aligned_encoding() {
        let secret = b"correct-horse-battery-staple";
        for engine in [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::URL_SAFE,
        ] {
            for align in 0..3 {
                let core = base64_core(engine, secret, align).unwrap();
                for prefix in [[0xffu8; 3], [0x00; 3], [0x5a; 3]] {
                    for suffix in [&b""[..], b"x", b"xy", b"xyz"] {
                        let mut s = prefix[..align].to_vec();
                        s.extend_from_slice(secret);
                        s.extend_from_slice(suffix);
                        let enc = engine.encode(&s);
                        let found = enc
                            .as_bytes()
                            .windows(core.len())
                            .any(|w| w == core.as_slice());
                        assert!(found, "align {align} suffix {suffix:?}");
                    }
                }
            }
        }
    }
}
