//! The named formats as regular expressions. The same expressions are written into the JSON
//! Schema export as `pattern`s, so any JSON Schema validator accepts exactly what we accept.
//! They use only ASCII classes (no `\d`, `\w`, `\s`, `.`), which mean the same in Rust `regex`
//! and ECMA-262.

use std::sync::OnceLock;

use regex::Regex;

use crate::def::Format;

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

fn compiled() -> &'static [Option<Regex>; 6] {
    static RE: OnceLock<[Option<Regex>; 6]> = OnceLock::new();
    RE.get_or_init(|| [URL, EMAIL, HOSTNAME, PORT, BASE32, PEM].map(|p| Regex::new(p).ok()))
}

/// Whether `text` has the format.
pub(crate) fn matches(format: Format, text: &str) -> bool {
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
