//! Entry points for the fuzz targets (not a public API).

use std::sync::OnceLock;

use crate::{references, Masker, MaskerBuilder, Scanner};

fn fixtures() -> &'static (Scanner, Masker) {
    static F: OnceLock<(Scanner, Masker)> = OnceLock::new();
    F.get_or_init(|| {
        let mut b = MaskerBuilder::new();
        let _ = b.add("a/token", "ghp_8f3KqZ2vX9LmP4tR7wY1nB6cD0eF5gH2jK3l");
        let _ = b.add(
            "b/pem",
            "-----BEGIN KEY-----\nAbCdEfGhIjKlMnOp\nQrStUvWxYz012345\n-----END KEY-----",
        );
        let _ = b.add_forced("c/short", "x\"y/z");
        let masker = b.build().unwrap_or_else(|_| Masker::empty());
        (Scanner::builtin(), masker)
    })
}

/// Scans, cleans and masks arbitrary bytes, one-shot and streamed in two chunks; checks that
/// both agree. Must never panic.
pub fn scan_and_mask(data: &[u8]) {
    let (scanner, masker) = fixtures();
    let _ = scanner.scan(data);
    let text = String::from_utf8_lossy(data);
    let _ = scanner.clean(&text, Some(masker));
    let once = masker.mask_bytes(data);
    let mut streamed = Vec::new();
    let mut s = masker.stream();
    let cut = data
        .first()
        .map_or(0, |b| usize::from(*b) % (data.len() + 1));
    s.push(&data[..cut], &mut streamed);
    s.push(&data[cut..], &mut streamed);
    s.finish(&mut streamed);
    assert_eq!(once, streamed, "streamed masking differs from one-shot");
}

/// Parses references in arbitrary text. Must never panic.
pub fn parse(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = references(text);
        let _ = crate::parse_reference(text);
    }
}

/// Parses secret URIs and `{{ URI }}` templates in arbitrary text; every URI found must print
/// in a canonical form that parses back to itself. Must never panic otherwise.
pub fn parse_uri(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut found: Vec<crate::SecretUri> = crate::SecretUri::parse(text).into_iter().collect();
    if let Ok(refs) = crate::template_uris(text) {
        found.extend(refs.into_iter().map(|(_, u)| u));
    }
    for uri in found {
        let again = crate::SecretUri::parse(&uri.to_string());
        assert_eq!(
            again.as_ref(),
            Ok(&uri),
            "canonical form does not parse back"
        );
        let label = uri.label();
        assert!(label.len() <= 200 && !label.contains(['[', ']']));
    }
}

/// Whether the masker's gated, anchored search finds exactly the matches of a plain unanchored
/// leftmost-longest Aho-Corasick search over the same forms (`forced`: add every secret with
/// [`MaskerBuilder::add_forced`], so short ones take part).
pub fn gated_search_agrees(secrets: &[String], text: &[u8], forced: bool) -> bool {
    let mut b = MaskerBuilder::new();
    let mut patterns = Vec::new();
    for (i, s) in secrets.iter().enumerate() {
        let added = if forced {
            b.add_forced(&format!("r{i}"), s)
        } else {
            b.add(&format!("r{i}"), s)
        };
        if added.is_ok() {
            let min = s.len().min(4);
            patterns.extend(
                crate::variants::variants(s, min)
                    .into_iter()
                    .map(|v| v.bytes),
            );
        }
    }
    let Ok(masker) = b.build() else {
        return false;
    };
    let ours: Vec<_> = masker.find(text).into_iter().map(|m| m.range).collect();
    if patterns.is_empty() {
        return ours.is_empty();
    }
    let Ok(plain) = aho_corasick::AhoCorasick::builder()
        .match_kind(aho_corasick::MatchKind::LeftmostLongest)
        .build(&patterns)
    else {
        return false;
    };
    let theirs: Vec<_> = plain.find_iter(text).map(|m| m.range()).collect();
    ours == theirs
}
