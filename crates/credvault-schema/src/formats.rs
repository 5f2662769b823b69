//! The named formats as regular expressions. The same expressions are written into the JSON
//! Schema export as `pattern`s, so any JSON Schema validator accepts exactly what we accept.
//! They use only ASCII classes (no `\d`, `\w`, `\s`, `.`), which mean the same in Rust `regex`
//! and ECMA-262.

use std::sync::OnceLock;

use crate::def::Format;
use crate::matcher::Matcher;

const URL: &str = r"^[A-Za-z][A-Za-z0-9+.-]*://[^ \t\r\n/?#]+([/?#][^ \t\r\n]*)?$";
const EMAIL: &str = r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$";
const HOSTNAME: &str = r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$";
const PORT: &str =
    r"^([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$";
const BASE32: &str = r"^[A-Za-z2-7 -]+=*$";
const PEM: &str = r"^-----BEGIN [A-Z0-9 ]+-----\r?\n[A-Za-z0-9+/=:, \r\n-]+\r?\n-----END [A-Z0-9 ]+-----(\r?\n)?$";

/// Longest host name (RFC 1035).
pub(crate) const HOSTNAME_MAX: u32 = 253;

/// The regular expression of a text format.
pub(crate) const fn pattern(format: Format) -> &'static str {
    match format {
        Format::Url => URL,
        Format::Email => EMAIL,
        Format::Hostname => HOSTNAME,
        Format::Port => PORT,
        Format::Base32 => BASE32,
        Format::Pem => PEM,
    }
}

fn compiled() -> &'static [Option<Matcher>; 6] {
    static RE: OnceLock<[Option<Matcher>; 6]> = OnceLock::new();
    RE.get_or_init(|| {
        [URL, EMAIL, HOSTNAME, PORT, BASE32, PEM].map(|p| Matcher::new(p, 1 << 22).ok())
    })
}

/// Whether `text` has the format. Host names, email addresses, ports and base32 are checked by
/// direct scans equivalent to their expressions (a property test holds them equal); URLs and
/// PEM blocks by the compiled expression.
pub(crate) fn matches(format: Format, text: &str) -> bool {
    match format {
        Format::Hostname => hostname(text.as_bytes(), 1),
        Format::Email => email(text.as_bytes()),
        Format::Port => port(text.as_bytes()),
        Format::Base32 => base32(text.as_bytes()),
        Format::Url | Format::Pem => by_expression(format, text),
    }
}

/// The format checked by its regular expression (the reference for the direct scans).
pub(crate) fn by_expression(format: Format, text: &str) -> bool {
    let i = match format {
        Format::Url => 0,
        Format::Email => 1,
        Format::Hostname => 2,
        Format::Port => 3,
        Format::Base32 => 4,
        Format::Pem => 5,
    };
    // The expressions are constants checked by a test; a failed compile would refuse all.
    compiled()[i].as_ref().is_some_and(|re| re.is_match(text))
}

/// Labels of 1–63 letters, digits and `-`, not starting or ending with `-`, joined by `.`;
/// at least `min_labels` of them.
fn hostname(b: &[u8], min_labels: usize) -> bool {
    // One pass: the length of the current label and whether it ends in `-`.
    let (mut labels, mut len, mut dash) = (0usize, 0usize, false);
    for &c in b {
        if c == b'.' {
            if len == 0 || dash {
                return false;
            }
            labels += 1;
            len = 0;
        } else if c.is_ascii_alphanumeric() || (c == b'-' && len > 0) {
            if len == 63 {
                return false;
            }
            len += 1;
            dash = c == b'-';
        } else {
            return false;
        }
    }
    len > 0 && !dash && labels + 1 >= min_labels
}

/// `local@domain`: a non-empty local part of RFC 5322 atext and dots, a domain of two or
/// more host-name labels.
fn email(b: &[u8]) -> bool {
    let Some(at) = b.iter().position(|c| *c == b'@') else {
        return false;
    };
    let (local, domain) = (&b[..at], &b[at + 1..]);
    !local.is_empty()
        && local
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b".!#$%&'*+/=?^_`{|}~-".contains(c))
        && hostname(domain, 2)
}

/// A decimal 1–65535 without leading zeros.
fn port(b: &[u8]) -> bool {
    if b.is_empty() || b.len() > 5 || b[0] == b'0' || !b.iter().all(u8::is_ascii_digit) {
        return false;
    }
    b.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')) <= 65_535
}

/// Base32 letters and digits 2–7, spaces and dashes (at least one), then any `=` padding.
fn base32(b: &[u8]) -> bool {
    let body_len = b.len() - b.iter().rev().take_while(|c| **c == b'=').count();
    body_len > 0
        && b[..body_len].iter().all(|c| {
            c.is_ascii_alphabetic() || (b'2'..=b'7').contains(c) || *c == b' ' || *c == b'-'
        })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn same(format: Format, s: &str) -> Result<(), TestCaseError> {
        prop_assert_eq!(
            matches(format, s),
            by_expression(format, s),
            "{:?} on {:?}",
            format,
            s
        );
        Ok(())
    }

    #[test]
    fn every_expression_compiles_to_a_dfa() {
        assert!(compiled()
            .iter()
            .all(|m| m.as_ref().is_some_and(Matcher::has_dfa)));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

        #[test]
        fn direct_scans_equal_their_expressions(
            s in prop_oneof![
                "[a-zA-Z0-9.@-]{0,80}",
                "[a-z0-9._%+!=@-]{0,30}@[a-z0-9.-]{0,30}",
                "[0-9]{0,7}",
                "[A-Za-z0-9 =-]{0,40}",
                "[a-z]{1,63}(\\.[a-z0-9-]{0,64}){0,4}",
                ".{0,20}",
            ],
        ) {
            for f in [Format::Hostname, Format::Email, Format::Port, Format::Base32] {
                same(f, &s)?;
            }
        }

        #[test]
        fn generated_members_match(
            host in proptest::string::string_regex(&HOSTNAME[1..HOSTNAME.len() - 1]).unwrap(),
            mail in proptest::string::string_regex(&EMAIL[1..EMAIL.len() - 1]).unwrap(),
            n in 0u32..70_000,
        ) {
            same(Format::Hostname, &host)?;
            same(Format::Email, &mail)?;
            same(Format::Port, &n.to_string())?;
            same(Format::Port, &format!("0{n}"))?;
        }
    }
}
