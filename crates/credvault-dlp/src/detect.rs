//! Pattern detectors: payment cards (Luhn and issuer checked), US SSNs (invalid ranges
//! excluded), email addresses, phone numbers, cloud and API secrets, and custom expressions.
//! Each has an action: redact, block or warn. Findings name the detector and the byte range,
//! never the matched text.

use std::fmt;
use std::ops::Range;

use regex::bytes::{Regex, RegexBuilder};
use regex_automata::meta;
use regex_automata::{Anchored, Input, PatternID};
use serde::Serialize;

use crate::masker::{MaskMatch, Masker};

/// What to do when a detector fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Action {
    /// Replace the match with `[redacted:<detector>]`.
    Redact,
    /// Refuse the whole text, with the reasons.
    Block,
    /// Report only.
    Warn,
}

/// Extra checks after the expression matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    None,
    Card,
    Ssn,
}

struct Detector {
    name: String,
    regex: Regex,
    check: Check,
    /// Capture group holding the sensitive part (0: the whole match).
    group: usize,
    action: Action,
}

/// One detection: which detector, where, and what it does. Never the matched text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Detector name (`payment_card`, `aws_access_key_id`, a custom name...).
    pub detector: String,
    /// Byte range in the scanned text.
    pub range: Range<usize>,
    /// The detector's action.
    pub action: Action,
}

/// A custom detector's expression does not compile, or its name is taken or malformed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("detector {name}: {reason}")]
pub struct DetectorError {
    /// The detector name.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// The text was refused by a `block` detector.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("blocked by {}", blocking_names(.findings))]
pub struct Blocked {
    /// Every finding in the text (the blocking ones have [`Action::Block`]).
    pub findings: Vec<Finding>,
}

fn blocking_names(f: &[Finding]) -> String {
    let mut names: Vec<&str> = f
        .iter()
        .filter(|x| x.action == Action::Block)
        .map(|x| x.detector.as_str())
        .collect();
    names.dedup();
    names.join(", ")
}

/// Text after cleaning, with what was found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Cleaned {
    /// The text with known secrets masked and `redact` findings replaced.
    pub text: String,
    /// Detector findings (ranges in the input text), `warn` ones included.
    pub findings: Vec<Finding>,
    /// Known secrets masked (ranges in the input text).
    pub masked: Vec<MaskMatch>,
}

/// Built-in detectors: (name, expression, check, group, default action). Expressions are
/// ASCII-only (`(?-u)`), so `\d`, `\w` and `\b` mean ASCII classes.
const BUILTIN: &[(&str, &str, Check, usize, Action)] = &[
    (
        "private_key",
        r"(?s-u)-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----.{16}.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----",
        Check::None,
        0,
        Action::Redact,
    ),
    (
        "jwt",
        r"(?-u)\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
        Check::None,
        0,
        Action::Redact,
    ),
    (
        "aws_access_key_id",
        r"(?-u)\b(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ASCA)[A-Z2-7]{16}\b",
        Check::None,
        0,
        Action::Redact,
    ),
    (
        "aws_secret_access_key",
        r#"(?i-u)(?:aws_?secret_?access_?key|aws_?secret_?key|secret_?access_?key)["']?\s{0,3}[:=]\s{0,3}["']?([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+]|$)"#,
        Check::None,
        1,
        Action::Redact,
    ),
    (
        "github_token",
        r"(?-u)\b(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,255})\b",
        Check::None,
        0,
        Action::Redact,
    ),
    (
        "gitlab_token",
        r"(?-u)\bglpat-[A-Za-z0-9_-]{20,}",
        Check::None,
        0,
        Action::Redact,
    ),
    (
        "slack_token",
        r"(?-u)\bxox[abposr]-[A-Za-z0-9-]{10,}|https://hooks\.slack\.com/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]{16,}",
        Check::None,
        0,
        Action::Redact,
    ),
    (
        "stripe_key",
        r"(?-u)\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}\b",
        Check::None,
        0,
        Action::Redact,
    ),
    (
        "anthropic_key",
        r"(?-u)\bsk-ant-[A-Za-z0-9_-]{20,}",
        Check::None,
        0,
        Action::Redact,
    ),
    (
        "openai_key",
        r"(?-u)\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}",
        Check::None,
        0,
        Action::Redact,
    ),
    (
        "payment_card",
        r"(?-u)\b\d(?:[ -]?\d){12,18}\b",
        Check::Card,
        0,
        Action::Redact,
    ),
    (
        "us_ssn",
        r"(?-u)\b\d{3}-\d{2}-\d{4}\b",
        Check::Ssn,
        0,
        Action::Redact,
    ),
    (
        "email",
        r"(?-u)\b[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}\b",
        Check::None,
        0,
        Action::Warn,
    ),
    (
        "phone",
        r"(?-u)(?:\+[1-9]\d{7,14}\b|\(\d{3}\) ?\d{3}[ .-]\d{4}\b|\b\d{3}[.-]\d{3}[.-]\d{4}\b)",
        Check::None,
        0,
        Action::Warn,
    ),
];

/// Names of the built-in detectors, in priority order (earlier wins where two overlap).
pub fn builtin_detectors() -> Vec<&'static str> {
    BUILTIN.iter().map(|b| b.0).collect()
}

fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// Issuer prefixes and lengths of the major card networks.
fn issuer_ok(d: &[u8]) -> bool {
    let n = d.len();
    let p = |k: usize| -> u32 { d[..k].iter().fold(0, |a, c| a * 10 + u32::from(c - b'0')) };
    match d[0] {
        b'4' => matches!(n, 13 | 16 | 19),
        b'3' => {
            (matches!(p(2), 34 | 37) && n == 15)
                || (p(2) == 35 && (16..=19).contains(&n))
                || ((matches!(p(2), 36 | 38 | 39) || (300..=305).contains(&p(3)))
                    && (14..=19).contains(&n))
        }
        b'5' => (51..=55).contains(&p(2)) && n == 16,
        b'2' => (2221..=2720).contains(&p(4)) && n == 16,
        b'6' => {
            (p(4) == 6011 || p(2) == 65 || (644..=649).contains(&p(3)) || p(2) == 62)
                && (16..=19).contains(&n)
        }
        _ => false,
    }
}

fn card_ok(m: &[u8]) -> bool {
    let digits: Vec<u8> = m.iter().copied().filter(u8::is_ascii_digit).collect();
    // One kind of separator, if any.
    let spaces = m.contains(&b' ');
    let dashes = m.contains(&b'-');
    (13..=19).contains(&digits.len()) && !(spaces && dashes) && issuer_ok(&digits) && luhn(&digits)
}

fn ssn_ok(m: &[u8]) -> bool {
    let num = |r: Range<usize>| -> u32 { m[r].iter().fold(0, |a, c| a * 10 + u32::from(c - b'0')) };
    let (area, group, serial) = (num(0..3), num(4..6), num(7..11));
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// A set of detectors with their actions.
pub struct Scanner {
    detectors: Vec<Detector>,
    /// All detectors as one multi-pattern automaton (pattern i = detector i): one pass over
    /// the text finds every candidate.
    all: Option<meta::Regex>,
}

impl fmt::Debug for Scanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.detectors.iter().map(|d| (&d.name, d.action)))
            .finish()
    }
}

fn compile(name: &str, pattern: &str) -> Result<Regex, DetectorError> {
    RegexBuilder::new(pattern)
        .size_limit(4 << 20)
        .dfa_size_limit(8 << 20)
        .build()
        .map_err(|e| DetectorError {
            name: name.to_owned(),
            reason: format!("expression does not compile: {e}"),
        })
}

impl Scanner {
    /// The built-in detectors with their default actions: secrets, cards and SSNs redacted;
    /// email addresses and phone numbers reported.
    pub fn builtin() -> Self {
        let mut detectors = Vec::new();
        for &(name, pattern, check, group, action) in BUILTIN {
            // The built-in expressions are constants compiled by the tests.
            if let Ok(regex) = compile(name, pattern) {
                detectors.push(Detector {
                    name: name.to_owned(),
                    regex,
                    check,
                    group,
                    action,
                });
            }
        }
        Self::from_detectors(detectors)
    }

    /// A scanner with no detectors.
    pub fn empty() -> Self {
        Self::from_detectors(Vec::new())
    }

    fn from_detectors(detectors: Vec<Detector>) -> Self {
        let patterns: Vec<&str> = detectors.iter().map(|d| d.regex.as_str()).collect();
        let all = meta::Regex::builder()
            .syntax(regex_automata::util::syntax::Config::new().utf8(false))
            .configure(
                meta::Config::new()
                    .utf8_empty(false)
                    .nfa_size_limit(Some(64 << 20))
                    .hybrid_cache_capacity(16 << 20),
            )
            .build_many(&patterns)
            .ok()
            .filter(|_| !patterns.is_empty());
        Self { detectors, all }
    }

    /// The sensitive range of detector `i` matching at exactly `start`, if it passes its check.
    fn accept(&self, text: &[u8], i: usize, start: usize, end: usize) -> Option<Range<usize>> {
        let d = &self.detectors[i];
        let range = if d.group == 0 {
            start..end
        } else {
            // The sensitive part is a group: capture on this match only.
            d.regex
                .captures_at(text, start)
                .and_then(|c| c.get(d.group))
                .map(|g| g.range())?
        };
        let bytes = &text[range.clone()];
        let ok = match d.check {
            Check::None => true,
            Check::Card => card_ok(bytes),
            Check::Ssn => ssn_ok(bytes),
        };
        ok.then_some(range)
    }

    /// Sets a detector's action.
    ///
    /// # Errors
    /// No detector has that name.
    pub fn with_action(mut self, name: &str, action: Action) -> Result<Self, DetectorError> {
        let d = self
            .detectors
            .iter_mut()
            .find(|d| d.name == name)
            .ok_or_else(|| DetectorError {
                name: name.to_owned(),
                reason: "no such detector".into(),
            })?;
        d.action = action;
        Ok(self)
    }

    /// Removes a detector.
    pub fn without(mut self, name: &str) -> Self {
        self.detectors.retain(|d| d.name != name);
        Self::from_detectors(self.detectors)
    }

    /// Adds a custom detector (Rust `regex` syntax, matched on bytes; the whole match is the
    /// sensitive part). Custom detectors come after the built-ins in priority.
    ///
    /// # Errors
    /// The name is empty, taken or not `[a-z0-9_]`, or the expression does not compile (or
    /// compiles larger than 4 MiB).
    pub fn with_custom(
        mut self,
        name: &str,
        pattern: &str,
        action: Action,
    ) -> Result<Self, DetectorError> {
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(DetectorError {
                name: name.chars().take(64).collect(),
                reason: "name must be 1–64 of a–z, 0–9 and _".into(),
            });
        }
        if self.detectors.iter().any(|d| d.name == name) {
            return Err(DetectorError {
                name: name.to_owned(),
                reason: "a detector with this name exists".into(),
            });
        }
        let regex = compile(name, pattern)?;
        self.detectors.push(Detector {
            name: name.to_owned(),
            regex,
            check: Check::None,
            group: 0,
            action,
        });
        Ok(Self::from_detectors(self.detectors))
    }

    /// The detectors' names and actions.
    pub fn detectors(&self) -> Vec<(&str, Action)> {
        self.detectors
            .iter()
            .map(|d| (d.name.as_str(), d.action))
            .collect()
    }

    /// Every finding in `text`, by position; where two overlap, the higher-priority detector
    /// (earlier in [`detectors`](Self::detectors)) wins, then the longer match.
    pub fn scan(&self, text: &[u8]) -> Vec<Finding> {
        let mut raw: Vec<(usize, Range<usize>)> = Vec::new();
        if self.detectors.is_empty() {
            return Vec::new();
        }
        let Some(all) = &self.all else {
            return Vec::new();
        };
        let mut pos = 0;
        while pos <= text.len() {
            let Some(m) = all.search(&Input::new(text).range(pos..)) else {
                break;
            };
            let start = m.start();
            let first = m.pattern().as_usize();
            let mut next = start + 1;
            match self.accept(text, first, start, m.end()) {
                Some(r) => {
                    raw.push((first, r));
                    next = m.end().max(start + 1);
                }
                None => {
                    // The leftmost candidate failed its check (a number that is not a card):
                    // any other detector matching at the same place still counts.
                    for i in (0..self.detectors.len()).filter(|&i| i != first) {
                        let input = Input::new(text)
                            .range(start..)
                            .anchored(Anchored::Pattern(PatternID::new_unchecked(i)));
                        if let Some(m2) = all.search(&input) {
                            if let Some(r) = self.accept(text, i, start, m2.end()) {
                                raw.push((i, r));
                                next = m2.end().max(start + 1);
                                break;
                            }
                        }
                    }
                }
            }
            pos = next;
        }
        // Priority first, then position: keep a finding unless it overlaps one already kept.
        raw.sort_by_key(|(i, r)| (*i, r.start, std::cmp::Reverse(r.end)));
        let mut kept: Vec<(usize, Range<usize>)> = Vec::new();
        for (i, r) in raw {
            if !kept.iter().any(|(_, k)| k.start < r.end && r.start < k.end) {
                kept.push((i, r));
            }
        }
        kept.sort_by_key(|(_, r)| r.start);
        kept.into_iter()
            .map(|(i, range)| Finding {
                detector: self.detectors[i].name.clone(),
                range,
                action: self.detectors[i].action,
            })
            .collect()
    }

    /// Masks known secrets (if a masker is given) and applies the detectors' actions.
    ///
    /// # Errors
    /// [`Blocked`] if a `block` detector fired; the text is not returned.
    pub fn clean(&self, text: &str, masker: Option<&Masker>) -> Result<Cleaned, Blocked> {
        let bytes = text.as_bytes();
        let findings = self.scan(bytes);
        if findings.iter().any(|f| f.action == Action::Block) {
            return Err(Blocked { findings });
        }
        let masked = masker.map(|m| m.find(bytes)).unwrap_or_default();
        // Replacements: known secrets first, then redactions that do not overlap them.
        let mut spans: Vec<(Range<usize>, String)> = masked
            .iter()
            .map(|m| (m.range.clone(), format!("[cv:{}]", m.reference)))
            .collect();
        for f in findings.iter().filter(|f| f.action == Action::Redact) {
            if !spans
                .iter()
                .any(|(r, _)| r.start < f.range.end && f.range.start < r.end)
            {
                spans.push((f.range.clone(), format!("[redacted:{}]", f.detector)));
            }
        }
        spans.sort_by_key(|(r, _)| r.start);
        let mut out = Vec::with_capacity(text.len());
        let mut pos = 0;
        for (r, replacement) in spans {
            out.extend_from_slice(&bytes[pos..r.start]);
            out.extend_from_slice(replacement.as_bytes());
            pos = r.end;
        }
        out.extend_from_slice(&bytes[pos..]);
        // Every span starts and ends on an ASCII byte or a whole secret, so this is UTF-8.
        let out = String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Ok(Cleaned {
            text: out,
            findings,
            masked,
        })
    }
}
