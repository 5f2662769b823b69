//! Known-secret masking: every occurrence of a secret, or of one of its encoded forms, becomes a
//! marker naming the secret's reference (`[cv:github/token]`). One-shot, streaming, and as
//! `Read`/`Write` adapters.

use std::fmt;
use std::io::{self, Read, Write};

use aho_corasick::automaton::Automaton;
use aho_corasick::nfa::contiguous;
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, Anchored, Input, Match, MatchKind, StartKind};
use zeroize::Zeroizing;

use crate::variants::{self, Form};

/// Most secrets one masker holds.
pub const MAX_SECRETS: usize = 100_000;
/// Longest secret accepted (bytes).
pub const MAX_SECRET_LEN: usize = 64 * 1024;
/// Longest reference name accepted.
pub const MAX_REFERENCE_LEN: usize = 256;

/// Values too common to mask everywhere unless the caller insists ([`MaskerBuilder::add_forced`]).
const COMMON: &[&str] = &[
    "password",
    "password1",
    "password123",
    "passw0rd",
    "changeme",
    "changeit",
    "12345678",
    "123456789",
    "1234567890",
    "qwerty123",
    "qwertyuiop",
    "iloveyou",
    "letmein1",
    "welcome1",
    "administrator",
    "11111111",
    "00000000",
    "abcdefgh",
    "abc12345",
    "secret123",
    "default1",
    "trustno1",
    "postgres",
    "localhost",
    "true",
    "false",
    "null",
    "undefined",
    "example",
    "test1234",
];

/// Why a secret was not added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddError {
    /// Shorter than the minimum length (default 8 bytes).
    #[error("secret is shorter than the minimum length; masking it would hit ordinary text")]
    TooShort,
    /// Too little variety (Shannon entropy per character below the minimum).
    #[error("secret has too little entropy to mask safely everywhere")]
    LowEntropy,
    /// A well-known default or common password.
    #[error("secret is a common value; masking it would hit ordinary text")]
    Common,
    /// Empty, or longer than [`MAX_SECRET_LEN`].
    #[error("secret is empty or longer than the limit")]
    Size,
    /// The reference name is empty, too long, or has `]`, `[` or a control character.
    #[error("reference name is empty, too long, or holds `[`, `]` or a control character")]
    Reference,
    /// The masker already holds [`MAX_SECRETS`].
    #[error("the masker holds the maximum number of secrets")]
    Full,
}

struct Entry {
    reference: String,
    secret: Zeroizing<String>,
}

/// Collects secrets and builds a [`Masker`].
pub struct MaskerBuilder {
    entries: Vec<Entry>,
    min_len: usize,
    min_entropy: f64,
    quick: bool,
}

impl fmt::Debug for MaskerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaskerBuilder")
            .field("secrets", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl Default for MaskerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// Shannon entropy of the bytes, in bits per byte.
pub fn entropy(s: &[u8]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in s {
        counts[usize::from(b)] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

impl MaskerBuilder {
    /// A builder with the default guard: at least 8 bytes, at least 2.5 bits of entropy per
    /// byte, and not a common value.
    pub fn new() -> Self {
        Self {
            entries: Vec::new(),
            min_len: 8,
            min_entropy: 2.5,
            quick: false,
        }
    }

    /// Sets the minimum length for [`add`](Self::add) (at least 1).
    pub fn min_length(mut self, n: usize) -> Self {
        self.min_len = n.max(1);
        self
    }

    /// Builds the automaton that is quickest to build rather than the one quickest to search
    /// (a contiguous NFA, never a DFA): for a masker made per request over a few secrets and
    /// used on one answer (the gateway's proxy), where building a DFA costs more than it saves.
    /// Same matches either way.
    pub fn quick_build(mut self) -> Self {
        self.quick = true;
        self
    }

    /// Sets the minimum entropy (bits per byte) for [`add`](Self::add).
    pub fn min_entropy(mut self, bits: f64) -> Self {
        self.min_entropy = bits;
        self
    }

    /// Number of secrets added.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no secret was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds a secret under a reference name, if it passes the guard (length, entropy, not a
    /// common value).
    ///
    /// # Errors
    /// [`AddError`] saying why it was not added; the secret is never part of the error.
    pub fn add(&mut self, reference: &str, secret: &str) -> Result<(), AddError> {
        if secret.len() < self.min_len {
            return Err(AddError::TooShort);
        }
        if COMMON.iter().any(|c| c.eq_ignore_ascii_case(secret)) {
            return Err(AddError::Common);
        }
        if entropy(secret.as_bytes()) < self.min_entropy {
            return Err(AddError::LowEntropy);
        }
        self.add_forced(reference, secret)
    }

    /// Adds a secret without the guard: the caller asks for even a short or common value to be
    /// masked (as [`render`](crate::render) does for values it substituted).
    ///
    /// # Errors
    /// [`AddError::Size`], [`AddError::Reference`], [`AddError::Full`].
    pub fn add_forced(&mut self, reference: &str, secret: &str) -> Result<(), AddError> {
        if secret.is_empty() || secret.len() > MAX_SECRET_LEN {
            return Err(AddError::Size);
        }
        if reference.is_empty()
            || reference.len() > MAX_REFERENCE_LEN
            || reference
                .chars()
                .any(|c| c == '[' || c == ']' || c.is_control())
        {
            return Err(AddError::Reference);
        }
        if self.entries.len() >= MAX_SECRETS {
            return Err(AddError::Full);
        }
        self.entries.push(Entry {
            reference: reference.to_owned(),
            secret: Zeroizing::new(secret.to_owned()),
        });
        Ok(())
    }

    /// Builds the masker: every secret in every encoded form, in one automaton.
    ///
    /// # Errors
    /// The automaton could not be built (far beyond [`MAX_SECRETS`] of
    /// [`MAX_SECRET_LEN`] each).
    pub fn build(self) -> Result<Masker, BuildError> {
        let mut patterns: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        let mut owner: Vec<(u32, Form)> = Vec::new();
        let mut markers = Vec::with_capacity(self.entries.len());
        for (i, e) in self.entries.iter().enumerate() {
            markers.push(format!("[cv:{}]", e.reference));
            // Forced short secrets keep their raw form even below the default minimum.
            let min = e.secret.len().min(4);
            for v in variants::variants(&e.secret, min) {
                patterns.push(Zeroizing::new(v.bytes));
                owner.push((i as u32, v.form));
            }
        }
        // No pattern is ever dropped, even one that occurs inside a marker (a secret that is part
        // of a reference name): masking must never let a secret through. Such a secret makes a
        // second masking pass rewrite the marker; reference names should not hold secrets.
        let max_len = patterns.iter().map(|p| p.len()).max().unwrap_or(0);
        let search = if patterns.is_empty() {
            None
        } else {
            Some(Search {
                ac: build_ac(&patterns, self.quick)?,
                prefixes: build_prefixes(&patterns)?,
                gate: Gate::new(&patterns),
            })
        };
        Ok(Masker {
            search,
            owner,
            markers,
            max_len,
            secrets: self.entries.len(),
        })
    }
}

/// Anchored only: [`Gate`] proposes the start positions, and an anchored leftmost-longest search
/// at the first proposed position that matches gives exactly the unanchored leftmost-longest
/// match.
fn build_ac(patterns: &[Zeroizing<Vec<u8>>], quick: bool) -> Result<AhoCorasick, BuildError> {
    AhoCorasickBuilder::new()
        .kind(quick.then_some(aho_corasick::AhoCorasickKind::ContiguousNFA))
        .match_kind(MatchKind::LeftmostLongest)
        .start_kind(StartKind::Anchored)
        .build(patterns.iter().map(|p| p.as_slice()))
        .map_err(|e| BuildError(e.to_string()))
}

/// The trie of all patterns, walked anchored: a walk that does not die means the bytes walked
/// are the start of some pattern, so a stream must hold them back until more arrives.
fn build_prefixes(patterns: &[Zeroizing<Vec<u8>>]) -> Result<contiguous::NFA, BuildError> {
    contiguous::NFA::builder()
        .match_kind(MatchKind::Standard)
        .prefilter(false)
        .build(patterns.iter().map(|p| p.as_slice()))
        .map_err(|e| BuildError(e.to_string()))
}

/// Hashes of every pattern's first `width` bytes (`width` = the shortest pattern's length, at
/// most 8), in a bit set about 64 times as large as the number of patterns. A position whose
/// next `width` bytes hash to an unset bit cannot start a match, so the search skips it with
/// one load, one multiply and one bit test; about 1 in 64 of the other positions is checked
/// for nothing. Secrets and their encodings share no useful literal (base64 and hex forms have
/// none), which defeats the usual prefilters; this one needs none.
struct Gate {
    starts: Bits,
    width: usize,
    keep: u64,
    /// For `width` ≥ 5: every 4-byte run at offsets `0..=width-4` of every pattern's first
    /// `width` bytes. When the 4 bytes ending a position's window are in none of them, no
    /// pattern starts at that position or the `width - 4` after it, and the search jumps
    /// `width - 3` bytes at once (the Wu-Manber shift).
    grams: Option<Bits>,
}

/// A bit set indexed by a multiplicative hash.
struct Bits {
    words: Vec<u64>,
    shift: u32,
}

const GATE_MUL: u64 = 0x9e37_79b9_7f4a_7c15;

impl Bits {
    fn new(entries: usize) -> Self {
        let nbits = (entries * 64).next_power_of_two().clamp(1 << 12, 1 << 26);
        Self {
            words: vec![0; nbits / 64],
            shift: 64 - nbits.trailing_zeros(),
        }
    }

    #[inline(always)]
    fn index(&self, x: u64) -> usize {
        (x.wrapping_mul(GATE_MUL) >> self.shift) as usize
    }

    fn insert(&mut self, x: u64) {
        let h = self.index(x);
        self.words[h >> 6] |= 1 << (h & 63);
    }

    #[inline(always)]
    fn contains(&self, x: u64) -> bool {
        let h = self.index(x);
        let mask = self.words.len() - 1;
        self.words[(h >> 6) & mask] >> (h & 63) & 1 != 0
    }
}

impl Gate {
    fn new(patterns: &[Zeroizing<Vec<u8>>]) -> Self {
        let width = patterns
            .iter()
            .map(|p| p.len())
            .min()
            .unwrap_or(1)
            .clamp(1, 8);
        let keep = if width == 8 {
            u64::MAX
        } else {
            (1u64 << (8 * width)) - 1
        };
        let mut starts = Bits::new(patterns.len());
        for p in patterns {
            starts.insert(load(p) & keep);
        }
        let grams = (width >= 5).then(|| {
            let mut g = Bits::new(patterns.len() * (width - 3));
            for p in patterns {
                for off in 0..=width - 4 {
                    g.insert(load(&p[off..off + 4]));
                }
            }
            g
        });
        Self {
            starts,
            width,
            keep,
            grams,
        }
    }

    /// The first position at or after `from` that may start a match.
    #[inline]
    fn next(&self, hay: &[u8], from: usize) -> Option<usize> {
        let last = hay.len().checked_sub(self.width)?;
        let mut p = from;
        while p <= last {
            if let Some(grams) = &self.grams {
                let end = p + self.width;
                if let Some(g) = hay[end - 4..].first_chunk::<4>() {
                    if !grams.contains(u64::from(u32::from_le_bytes(*g))) {
                        p += self.width - 3;
                        continue;
                    }
                }
            }
            let x = match hay[p..].first_chunk::<8>() {
                Some(w) => u64::from_le_bytes(*w),
                None => load(&hay[p..]),
            };
            if self.starts.contains(x & self.keep) {
                return Some(p);
            }
            p += 1;
        }
        None
    }
}

/// Up to the first 8 bytes, little-endian, zero-padded.
fn load(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    let n = bytes.len().min(8);
    w[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(w)
}

/// What a non-empty masker searches with.
struct Search {
    /// Confirms a match at a proposed position (anchored).
    ac: AhoCorasick,
    /// Tells a stream which tail could still become a match.
    prefixes: contiguous::NFA,
    /// Proposes start positions.
    gate: Gate,
}

/// Leftmost-longest, non-overlapping matches, the same as an unanchored search would give.
struct Matches<'m, 'h> {
    search: &'m Search,
    hay: &'h [u8],
    pos: usize,
}

impl Iterator for Matches<'_, '_> {
    type Item = Match;

    fn next(&mut self) -> Option<Match> {
        loop {
            let p = self.search.gate.next(self.hay, self.pos)?;
            let input = Input::new(self.hay)
                .span(p..self.hay.len())
                .anchored(Anchored::Yes);
            if let Some(m) = self.search.ac.find(input) {
                self.pos = m.end();
                return Some(m);
            }
            self.pos = p + 1;
        }
    }
}

/// The automaton could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("masker could not be built: {0}")]
pub struct BuildError(String);

/// One masked occurrence: where it was, which secret (by reference), in which form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaskMatch {
    /// Byte range in the input.
    pub range: std::ops::Range<usize>,
    /// The secret's reference name.
    pub reference: String,
    /// The form it was found in.
    pub form: Form,
}

/// Replaces known secrets, in all their forms, with `[cv:<reference>]`. Holds the secrets'
/// search automaton only; `Debug` shows counts.
pub struct Masker {
    search: Option<Search>,
    owner: Vec<(u32, Form)>,
    markers: Vec<String>,
    max_len: usize,
    secrets: usize,
}

impl fmt::Debug for Masker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Masker")
            .field("secrets", &self.secrets)
            .field("patterns", &self.owner.len())
            .finish_non_exhaustive()
    }
}

impl Masker {
    /// A masker that masks nothing.
    pub fn empty() -> Self {
        Self {
            search: None,
            owner: Vec::new(),
            markers: Vec::new(),
            max_len: 0,
            secrets: 0,
        }
    }

    /// Number of secrets.
    pub fn secrets(&self) -> usize {
        self.secrets
    }

    /// Number of searched forms (all encodings of all secrets).
    pub fn patterns(&self) -> usize {
        self.owner.len()
    }

    /// Longest searched form, in bytes: what streaming keeps back between chunks.
    pub fn max_pattern_len(&self) -> usize {
        self.max_len
    }

    /// Where the secrets occur in `text` (leftmost-longest, not overlapping).
    pub fn find(&self, text: &[u8]) -> Vec<MaskMatch> {
        self.matches(text)
            .map(|m| {
                let (i, form) = self.owner[m.pattern().as_usize()];
                let marker = &self.markers[i as usize];
                MaskMatch {
                    range: m.range(),
                    reference: marker[4..marker.len() - 1].to_owned(),
                    form,
                }
            })
            .collect()
    }

    /// `text` with every occurrence replaced by its marker.
    pub fn mask_bytes(&self, text: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len());
        let mut pos = 0;
        for m in self.matches(text) {
            out.extend_from_slice(&text[pos..m.start()]);
            out.extend_from_slice(self.marker(m.pattern().as_usize()));
            pos = m.end();
        }
        out.extend_from_slice(&text[pos..]);
        out
    }

    /// `text` with every occurrence replaced by its marker. Secrets and their forms are valid
    /// UTF-8, so they can only match whole characters and the result stays valid UTF-8.
    pub fn mask(&self, text: &str) -> String {
        String::from_utf8(self.mask_bytes(text.as_bytes()))
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// Every match in `text` (none for an empty masker).
    fn matches<'h>(&self, text: &'h [u8]) -> impl Iterator<Item = Match> + use<'_, 'h> {
        self.search.iter().flat_map(move |search| Matches {
            search,
            hay: text,
            pos: 0,
        })
    }

    fn marker(&self, pattern: usize) -> &[u8] {
        let (i, _) = self.owner[pattern];
        self.markers[i as usize].as_bytes()
    }

    /// A streaming masker over this one.
    pub fn stream(&self) -> StreamMasker<'_> {
        StreamMasker {
            masker: self,
            carry: Vec::new(),
        }
    }
}

/// Masks a stream chunk by chunk. Keeps back at most the longest form's length minus one byte
/// between chunks, and only while those bytes could be the start of a secret, so a secret
/// split across chunks is still caught and other output is not delayed; the output equals
/// masking the whole stream at once.
pub struct StreamMasker<'m> {
    masker: &'m Masker,
    carry: Vec<u8>,
}

impl fmt::Debug for StreamMasker<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamMasker")
            .field("held_back", &self.carry.len())
            .finish()
    }
}

impl StreamMasker<'_> {
    /// Masks `chunk`, appending what is decided to `out`. Holds back only a tail that could
    /// still become (part of) a match: the bytes from the first position where the text seen
    /// so far is the start of some searched form. Output that cannot be the start of a
    /// secret, such as a prompt or a log line, goes out at once.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        push_into(self.masker, &mut self.carry, chunk, out);
    }

    /// Ends the stream: masks and appends what was held back.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        finish_into(self.masker, &mut self.carry, out);
    }

    /// Bytes held back now.
    pub fn held_back(&self) -> usize {
        self.carry.len()
    }
}

/// A [`StreamMasker`] that holds its [`Masker`] by `Arc`, for a stream that outlives any one
/// borrow (an HTTP response body handed to a server). Same output; what it holds back is wiped
/// when it is dropped.
pub struct SharedStreamMasker {
    masker: std::sync::Arc<Masker>,
    carry: Vec<u8>,
}

impl fmt::Debug for SharedStreamMasker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedStreamMasker")
            .field("held_back", &self.carry.len())
            .finish()
    }
}

impl SharedStreamMasker {
    /// A streaming masker over `masker`.
    pub fn new(masker: std::sync::Arc<Masker>) -> Self {
        Self {
            masker,
            carry: Vec::new(),
        }
    }

    /// As [`StreamMasker::push`].
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        push_into(&self.masker, &mut self.carry, chunk, out);
    }

    /// As [`StreamMasker::finish`], without consuming: the stream is over afterwards (what
    /// is pushed next starts a new one).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        finish_into(&self.masker, &mut self.carry, out);
    }

    /// Bytes held back now.
    pub fn held_back(&self) -> usize {
        self.carry.len()
    }
}

impl Drop for SharedStreamMasker {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.carry);
    }
}

fn push_into(m: &Masker, carry: &mut Vec<u8>, chunk: &[u8], out: &mut Vec<u8>) {
    let Some(search) = &m.search else {
        out.extend_from_slice(carry);
        carry.clear();
        out.extend_from_slice(chunk);
        return;
    };
    if carry.is_empty() {
        // The usual case: nothing held back, so search the caller's chunk where it is
        // (no copy, and the caller owns and wipes it); keep only the undecided tail.
        let stop = decide(m, &search.prefixes, chunk, out);
        carry.extend_from_slice(&chunk[stop..]);
    } else {
        carry.extend_from_slice(chunk);
        let buf = std::mem::take(carry);
        let stop = decide(m, &search.prefixes, &buf, out);
        *carry = buf[stop..].to_vec();
        // Held-back bytes may be secret material: wipe the consumed buffer.
        wipe(buf);
    }
}

fn finish_into(m: &Masker, carry: &mut Vec<u8>, out: &mut Vec<u8>) {
    let rest = std::mem::take(carry);
    out.extend_from_slice(&m.mask_bytes(&rest));
    wipe(rest);
}

/// Masks what is decided in `buf` into `out` and returns where the undecided tail starts: the
/// first position from which the rest of `buf` could still become (part of) a match.
fn decide(m: &Masker, prefixes: &contiguous::NFA, buf: &[u8], out: &mut Vec<u8>) -> usize {
    let len = buf.len();
    // Every match that starts before `window` is fully in view.
    let window = len.saturating_sub(m.max_len - 1);
    // The first position in [from, to) where the rest of the buffer starts a pattern.
    let live = |from: usize, to: usize| {
        (from.max(window)..to).find(|&p| starts_pattern(prefixes, &buf[p..]))
    };
    let mut pos = 0;
    let mut stop = None;
    for hit in m.matches(buf) {
        // A match near the end is final only if no longer match can start at its start
        // and no earlier match can still complete: both are live prefixes.
        if hit.start() >= window {
            if let Some(p) = live(pos, hit.start() + 1) {
                stop = Some(p);
                break;
            }
        }
        out.extend_from_slice(&buf[pos..hit.start()]);
        out.extend_from_slice(m.marker(hit.pattern().as_usize()));
        pos = hit.end();
    }
    let stop = stop.or_else(|| live(pos, len)).unwrap_or(len).max(pos);
    out.extend_from_slice(&buf[pos..stop]);
    stop
}

/// Whether `text` is the start of (or equal to) some pattern: the anchored walk never dies.
fn starts_pattern(nfa: &contiguous::NFA, text: &[u8]) -> bool {
    let Ok(mut sid) = nfa.start_state(Anchored::Yes) else {
        return true; // cannot tell: hold back
    };
    for &b in text {
        sid = nfa.next_state(Anchored::Yes, sid, b);
        if nfa.is_dead(sid) {
            return false;
        }
    }
    true
}

fn wipe(mut v: Vec<u8>) {
    zeroize::Zeroize::zeroize(&mut v);
}

/// A writer that masks everything written through it. Call [`finish`](Self::finish) at the
/// end: it writes what was held back (dropping without it loses at most the longest form's
/// length of trailing bytes, never leaks them).
pub struct MaskingWriter<'m, W: Write> {
    inner: W,
    stream: StreamMasker<'m>,
    out: Vec<u8>,
}

impl<'m, W: Write> MaskingWriter<'m, W> {
    /// Wraps `inner`.
    pub fn new(masker: &'m Masker, inner: W) -> Self {
        Self {
            inner,
            stream: masker.stream(),
            out: Vec::new(),
        }
    }

    /// Writes the held-back tail and returns the inner writer.
    ///
    /// # Errors
    /// The inner writer failed.
    pub fn finish(mut self) -> io::Result<W> {
        let masker = self.stream.masker;
        let stream = std::mem::replace(&mut self.stream, masker.stream());
        stream.finish(&mut self.out);
        self.inner.write_all(&self.out)?;
        self.out.clear();
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for MaskingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.push(buf, &mut self.out);
        self.inner.write_all(&self.out)?;
        self.out.clear();
        Ok(buf.len())
    }

    /// Flushes what is decided; up to the longest form's length stays held back until
    /// [`finish`](Self::finish).
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that masks what it reads from the inner reader (for a child process's output).
pub struct MaskingReader<'m, R: Read> {
    inner: R,
    stream: Option<StreamMasker<'m>>,
    ready: Vec<u8>,
    at: usize,
}

impl<'m, R: Read> MaskingReader<'m, R> {
    /// Wraps `inner`.
    pub fn new(masker: &'m Masker, inner: R) -> Self {
        Self {
            inner,
            stream: Some(masker.stream()),
            ready: Vec::new(),
            at: 0,
        }
    }
}

impl<R: Read> Read for MaskingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut chunk = [0u8; 8192];
        while self.at == self.ready.len() {
            self.ready.clear();
            self.at = 0;
            let Some(stream) = self.stream.as_mut() else {
                return Ok(0);
            };
            let n = self.inner.read(&mut chunk)?;
            if n == 0 {
                if let Some(s) = self.stream.take() {
                    s.finish(&mut self.ready);
                }
            } else {
                stream.push(&chunk[..n], &mut self.ready);
            }
            zeroize::Zeroize::zeroize(&mut chunk[..n]);
        }
        let n = buf.len().min(self.ready.len() - self.at);
        buf[..n].copy_from_slice(&self.ready[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
