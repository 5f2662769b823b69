//! Terminal safety: stored strings (names, descriptions, actors, audit fields, test
//! messages) may hold control characters and ANSI escape sequences written by whoever could
//! edit the vault or a service's response. Text output escapes them so they cannot move the
//! cursor, rewrite earlier lines, change the window title or hide text; JSON output keeps
//! JSON's own escaping.

use std::borrow::Cow;
use std::fmt::Write;

/// Whether `c` must not reach a terminal as is: C0 controls (tab included), DEL, C1
/// controls, and the Unicode bidirectional overrides and isolates (which reorder what is
/// shown, "Trojan Source").
fn unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every unsafe character written as `\u{XX}` (and a backslash as `\\`, so the
/// escaping cannot be forged), borrowed when there is nothing to escape.
pub(crate) fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| unsafe_char(c) || c == '\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if unsafe_char(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escapes_controls_ansi_and_bidi_and_leaves_the_rest() {
        assert_eq!(escape("plain name"), "plain name");
        assert_eq!(escape("héllo ✓"), "héllo ✓");
        assert_eq!(
            escape("\u{1b}[2J\u{1b}]0;pwned\u{7}"),
            "\\u{1b}[2J\\u{1b}]0;pwned\\u{7}"
        );
        assert_eq!(escape("a\nb\rc\td"), "a\\u{a}b\\u{d}c\\u{9}d");
        assert_eq!(escape("x\u{9b}31m"), "x\\u{9b}31m");
        assert_eq!(escape("\u{202e}txt.exe"), "\\u{202e}txt.exe");
        assert_eq!(escape("\u{7f}"), "\\u{7f}");
        // A literal backslash sequence cannot pass for an escape.
        assert_eq!(escape("\\u{1b}"), "\\\\u{1b}");
    }
}
