//! Regular-expression matching for patterns and formats: a precompiled dense DFA when the
//! expression is small enough (one table lookup per input byte, no cache), else the `regex`
//! crate's engine. Both implement the same syntax and "contains a match" semantics.

use regex::Regex;
use regex_automata::dfa::{dense, Automaton};
use regex_automata::Input;

/// Largest DFA built for one expression; larger ones fall back to `regex`.
const DFA_LIMIT: usize = 512 * 1024;

/// A compiled expression.
#[derive(Clone, Debug)]
pub(crate) struct Matcher {
    dfa: Option<dense::DFA<Vec<u32>>>,
    re: Regex,
}

impl Matcher {
    /// Compiles `pattern` (Rust `regex` syntax) within the given size limit.
    pub(crate) fn new(pattern: &str, size_limit: usize) -> Result<Self, regex::Error> {
        let re = regex::RegexBuilder::new(pattern)
            .size_limit(size_limit)
            .dfa_size_limit(size_limit)
            .build()?;
        let dfa = dense::Builder::new()
            .configure(
                dense::Config::new()
                    .minimize(false)
                    .dfa_size_limit(Some(DFA_LIMIT))
                    .determinize_size_limit(Some(DFA_LIMIT)),
            )
            .build(pattern)
            .ok();
        Ok(Self { dfa, re })
    }

    /// The expression's source text.
    pub(crate) fn as_str(&self) -> &str {
        self.re.as_str()
    }

    /// Whether `text` contains a match.
    pub(crate) fn is_match(&self, text: &str) -> bool {
        if let Some(dfa) = &self.dfa {
            if let Ok(found) = dfa.try_search_fwd(&Input::new(text).earliest(true)) {
                return found.is_some();
            }
        }
        self.re.is_match(text)
    }

    /// Whether the DFA path is in use (for tests).
    #[cfg(test)]
    pub(crate) fn has_dfa(&self) -> bool {
        self.dfa.is_some()
    }
}
