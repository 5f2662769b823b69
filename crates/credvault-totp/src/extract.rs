//! Pulling a one-time code out of a forwarded email or SMS.
//!
//! Candidates are 4–8 digit numbers (also split as `123 456` / `123-456`, or prefixed like
//! `G-123456`) and 6–8 character upper-case alphanumeric codes that contain a digit. Each gets a
//! score: near a code word (code, OTP, verification, passcode, PIN, one-time, security code, and
//! their Spanish, French, German, Italian, Portuguese, Dutch, Russian, Chinese and Japanese
//! forms), in a subject line, or alone in a short message scores up; next to phone, money,
//! date/time, order, tracking, invoice or account context scores down. The best candidate above
//! a threshold wins, with the reason; otherwise nothing.

use std::sync::OnceLock;

use regex::Regex;

/// Longest message examined (longer input is truncated to this many bytes).
pub const MAX_MESSAGE_LEN: usize = 256 * 1024;

/// Why a candidate was chosen.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A code word (code, OTP, verification...) is next to it.
    NearCodeWord,
    /// It sits in the subject line next to a code word.
    SubjectLine,
    /// The message is short and this is its only code-shaped token.
    OnlyCandidate,
}

/// An extracted code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extracted {
    /// The code with separators removed (`123-456` → `123456`; `G-123456` keeps `G-`).
    pub code: String,
    /// Why it was chosen.
    pub reason: Reason,
}

const CODE_WORDS: &[&str] = &[
    "code",
    "otp",
    "one-time",
    "one time",
    "passcode",
    "pass code",
    "verification",
    "verify",
    "pin",
    "2fa",
    "two-factor",
    "security code",
    "login code",
    "sign-in",
    "sign in",
    "auth",
    "token",
    "código",
    "codigo",
    "verificación",
    "clave",
    "code de vérification",
    "vérification",
    "bestätigungscode",
    "sicherheitscode",
    "code lautet",
    "codice",
    "verifica",
    "verificação",
    "verificatiecode",
    "код",
    "验证码",
    "校验码",
    "認証コード",
    "確認コード",
    "コード",
];

const DECOY_WORDS: &[&str] = &[
    "order",
    "tracking",
    "invoice",
    "account",
    "acct",
    "ref",
    "reference",
    "ticket",
    "case",
    "call",
    "phone",
    "tel",
    "fax",
    "support",
    "$",
    "€",
    "£",
    "usd",
    "eur",
    "total",
    "amount",
    "balance",
    "paid",
    "price",
    "flight",
    "booking",
    "confirmation number",
    "zip",
    "postal",
    "room",
    "suite",
    "version",
    "build",
    "id:",
    "customer",
    "member",
];

fn candidates_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        // Hand-checked pattern; a failure here is a programming error caught by every test.
        match Regex::new(
            r"(?x)
            (?P<pre>[A-Z]-)?(?P<a>\b\d{3,4})[\x20-](?P<b>\d{3,4}\b)   # 123 456, 123-456 (\x20: verbose mode drops a literal space)
            | (?P<pre2>[A-Z]-)?\b(?P<num>\d{4,8})\b                  # 123456, G-123456
            | \b(?P<alnum>[A-Z0-9]{6,8})\b                           # ABC123
            ",
        ) {
            Ok(r) => r,
            Err(_) => unreachable!("static pattern"),
        }
    })
}

/// Strips tags and decodes the few entities that appear around codes.
fn html_to_text(msg: &str) -> String {
    if !msg.contains('<') {
        return msg.to_owned();
    }
    let mut out = String::with_capacity(msg.len());
    let mut in_tag = false;
    for c in msg.chars() {
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&nbsp;", " ")
        .replace("&amp;", "&")
        .replace("&#58;", ":")
        .replace("&colon;", ":")
}

fn context_has(ctx: &str, words: &[&str]) -> bool {
    words.iter().any(|w| ctx.contains(w))
}

/// Finds the one-time code in `message` (plain text or HTML), or `None`.
pub fn extract_code(message: &str) -> Option<Extracted> {
    let mut end = message.len().min(MAX_MESSAGE_LEN);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let text = html_to_text(&message[..end]);
    let lower = text.to_lowercase();
    // `to_lowercase` can change byte lengths; fall back to ASCII lowering of the same text so
    // offsets stay aligned.
    let lower = if lower.len() == text.len() {
        lower
    } else {
        text.to_ascii_lowercase()
    };

    let subject_end = text
        .lines()
        .next()
        .filter(|l| l.to_ascii_lowercase().starts_with("subject:"))
        .map_or(0, str::len);

    let mut best: Option<(i32, Extracted)> = None;
    let mut count = 0;
    for m in candidates_re().captures_iter(&text) {
        let Some(whole) = m.get(0) else { continue };
        let (start, stop) = (whole.start(), whole.end());
        let code = if let (Some(a), Some(b)) = (m.name("a"), m.name("b")) {
            if a.as_str().len() != b.as_str().len() {
                continue;
            }
            format!(
                "{}{}{}",
                m.name("pre").map_or("", |p| p.as_str()),
                a.as_str(),
                b.as_str()
            )
        } else if let Some(n) = m.name("num") {
            format!(
                "{}{}",
                m.name("pre2").map_or("", |p| p.as_str()),
                n.as_str()
            )
        } else if let Some(a) = m.name("alnum") {
            let s = a.as_str();
            if !s.bytes().any(|c| c.is_ascii_digit()) || s.bytes().all(|c| c.is_ascii_digit()) {
                continue;
            }
            s.to_owned()
        } else {
            continue;
        };
        count += 1;

        // Context windows on both sides, on char boundaries.
        let before_start = floor_boundary(&lower, start.saturating_sub(40));
        let after_end = ceil_boundary(&lower, (stop + 25).min(lower.len()));
        let before = &lower[before_start..start];
        let after = &lower[stop..after_end];
        let near_before = &lower[floor_boundary(&lower, start.saturating_sub(14))..start];

        let mut score = 0i32;
        let mut reason = Reason::OnlyCandidate;
        if context_has(before, CODE_WORDS) || context_has(after, CODE_WORDS) {
            score += 10;
            reason = Reason::NearCodeWord;
        }
        if start < subject_end && score > 0 {
            score += 3;
            reason = Reason::SubjectLine;
        }
        if context_has(near_before, DECOY_WORDS)
            || near_before.contains('#')
            || near_before.trim_end().ends_with("no.")
        {
            score -= 12;
        }
        // Shapes of non-codes next to the candidate.
        let prev = text[..start].chars().next_back();
        let next = text[stop..].chars().next();
        if matches!(
            prev,
            Some('+' | '(' | '/' | ':' | '.' | ',' | '$' | '€' | '£' | '#')
        ) || matches!(next, Some('/' | ':' | ',' | ')' | '%'))
            || (matches!(next, Some('.'))
                && text[stop..]
                    .chars()
                    .nth(1)
                    .is_some_and(|c| c.is_ascii_digit()))
            || (matches!(prev, Some('-'))
                && text[..start]
                    .chars()
                    .rev()
                    .nth(1)
                    .is_some_and(|c| c.is_ascii_digit()))
            || (matches!(next, Some('-'))
                && text[stop..]
                    .chars()
                    .nth(1)
                    .is_some_and(|c| c.is_ascii_digit()))
        {
            score -= 15;
        }
        // A 4-digit number that looks like a year is rarely a code.
        if code.len() == 4 && (code.starts_with("19") || code.starts_with("20")) {
            score -= 4;
        }
        if best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((score, Extracted { code, reason }));
        }
    }
    let (score, mut found) = best?;
    if score >= 10 {
        return Some(found);
    }
    // A short message (an SMS) with exactly one code-shaped token and no decoy context.
    if count == 1 && score >= 0 && text.len() <= 160 {
        found.reason = Reason::OnlyCandidate;
        return Some(found);
    }
    None
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(s: &str, mut i: usize) -> usize {
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i
}
