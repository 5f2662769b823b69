//! Verification of a hash-chained log: every line's hash, every link, every checkpoint's MAC,
//! and the anchor (the last checkpoint kept outside the log).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::key::AuditKey;
use crate::record::{self, CheckpointBody, Hash, Line, RecordType, RecoveryBody, ZERO_HASH};
use crate::Timestamp;

/// What is wrong with a log. The first problem found is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemKind {
    /// A record's bytes changed (its hash no longer matches), or a line is not a record.
    Edited,
    /// A record appears twice (a copy was inserted).
    Inserted,
    /// A record is missing from the middle of the chain.
    Deleted,
    /// Records are out of order.
    Reordered,
    /// The log ends before a record the anchor (or a later segment) says exists.
    Truncated,
    /// A checkpoint or the anchor is malformed, does not match the chain, or its MAC fails.
    BadCheckpoint,
    /// The last line is incomplete (a crash during a write). Records before it are intact.
    TornTail,
    /// The log is not the one the anchor describes (another log id, or another record at the
    /// anchored position).
    Replaced,
}

impl ProblemKind {
    /// The kind's name, as printed by the CLI.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Edited => "edited",
            Self::Inserted => "inserted",
            Self::Deleted => "deleted",
            Self::Reordered => "reordered",
            Self::Truncated => "truncated",
            Self::BadCheckpoint => "bad checkpoint",
            Self::TornTail => "torn tail",
            Self::Replaced => "replaced",
        }
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first problem in a log, and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// What kind of problem.
    pub kind: ProblemKind,
    /// Index of the segment (file) in the order given.
    pub segment: usize,
    /// Line number in that segment, from 1 (0 when the problem is the end of the log).
    pub line: u64,
    /// Byte offset of that line in the segment.
    pub offset: u64,
    /// The sequence number expected at that point.
    pub seq: u64,
    /// A short explanation.
    pub detail: &'static str,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "record {} (segment {}, line {}, byte {}): {}: {}",
            self.seq,
            self.segment + 1,
            self.line,
            self.offset,
            self.kind,
            self.detail
        )
    }
}

/// What a verification found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Records whose hash and link were checked (all types).
    pub records: u64,
    /// Of those, audit events.
    pub events: u64,
    /// Checkpoints whose MAC was checked with the key.
    pub checkpoints_checked: u64,
    /// Checkpoints seen without a key to check their MAC (their links were checked).
    pub checkpoints_unchecked: u64,
    /// Segments (files) read.
    pub segments: usize,
    /// Torn tails left by crashes, each terminated and described by a recovery record.
    pub recovered_breaks: u64,
    /// The log id from the genesis record.
    pub log_id: Option<String>,
    /// The last intact record's sequence number.
    pub last_seq: Option<u64>,
    /// The last intact record's hash (hex).
    pub head: Option<String>,
    /// Whether an anchor was given and matched, and whether its MAC was checked.
    pub anchor: AnchorCheck,
    /// The first problem, or `None` if the log is intact.
    pub problem: Option<Problem>,
}

impl VerifyReport {
    /// Whether the log verified with no problem.
    pub fn is_intact(&self) -> bool {
        self.problem.is_none()
    }
}

/// What became of the anchor during verification.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnchorCheck {
    /// No anchor was given: truncation at a record boundary cannot be detected.
    #[default]
    None,
    /// The anchored record was found with the anchored hash; the MAC was not checked (no key).
    Matched,
    /// The anchored record was found and the anchor's MAC checked with the key.
    Authenticated,
}

/// The last checkpoint, kept outside the log so that a log cut short or replaced by an older
/// copy is detected. One JSON object:
/// `{"v":1,"log":"..","seq":N,"hash":"..","time":"..","mac":".."}` where `seq` and `hash` are
/// the checkpoint record's own.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Anchor {
    v: u32,
    /// The log id.
    pub log: String,
    /// Sequence number of the anchored checkpoint record.
    pub seq: u64,
    /// Its hash (hex).
    pub hash: String,
    /// When it was written.
    pub time: Timestamp,
    mac: String,
}

/// Longest anchor file accepted.
const MAX_ANCHOR: usize = 4096;

/// An anchor file that cannot be read or parsed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnchorError {
    /// The file could not be read.
    #[error("cannot read anchor {path}: {source}")]
    Io {
        /// The anchor's path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not an anchor.
    #[error("anchor {path} is not a credvault audit anchor v1")]
    Malformed {
        /// The anchor's path.
        path: PathBuf,
    },
}

impl Anchor {
    pub(crate) fn new(key: &AuditKey, log: &str, seq: u64, hash: &Hash, time: Timestamp) -> Self {
        let hash = record::hex_string(hash);
        let time_ms = time.as_unix_millis().to_string();
        let mac = key.sign(&Self::mac_parts(log, &seq.to_string(), &hash, &time_ms));
        Self {
            v: 1,
            log: log.to_owned(),
            seq,
            hash,
            time,
            mac: hex::encode(mac),
        }
    }

    fn mac_parts<'a>(log: &'a str, seq: &'a str, hash: &'a str, time: &'a str) -> [&'a [u8]; 5] {
        [
            b"credvault-audit anchor v1",
            log.as_bytes(),
            seq.as_bytes(),
            hash.as_bytes(),
            time.as_bytes(),
        ]
    }

    /// Whether the anchor's MAC is valid under `key`.
    pub fn authenticate(&self, key: &AuditKey) -> bool {
        let seq = self.seq.to_string();
        let time = self.time.as_unix_millis().to_string();
        key.check(
            &Self::mac_parts(&self.log, &seq, &self.hash, &time),
            &self.mac,
        )
    }

    /// Parses an anchor from its bytes.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > MAX_ANCHOR {
            return None;
        }
        let a: Self = serde_json::from_slice(bytes).ok()?;
        (a.v == 1 && a.hash.len() == 64).then_some(a)
    }

    /// The anchor as one JSON line.
    pub fn to_line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Reads and parses an anchor file.
    ///
    /// # Errors
    /// [`AnchorError`] if it cannot be read or is not an anchor.
    pub fn load(path: &Path) -> Result<Self, AnchorError> {
        let bytes = std::fs::read(path).map_err(|source| AnchorError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&bytes).ok_or_else(|| AnchorError::Malformed {
            path: path.to_owned(),
        })
    }
}

/// What to check a log against.
#[derive(Clone, Copy, Debug, Default)]
pub struct VerifyOptions<'a> {
    /// The audit key: checkpoint and anchor MACs are checked only with it.
    pub key: Option<&'a AuditKey>,
    /// The anchor: without it a log cut at a record boundary looks complete.
    pub anchor: Option<&'a Anchor>,
}

/// Verifies a log given as the bytes of its segments, in order.
pub fn verify_segments(segments: &[&[u8]], options: VerifyOptions<'_>) -> VerifyReport {
    let loaded: Vec<Cow<'_, [u8]>> = segments.iter().map(|s| Cow::Borrowed(*s)).collect();
    let mut load = |i: usize| -> std::io::Result<Cow<'_, [u8]>> { Ok(loaded[i].clone()) };
    // Loading from memory cannot fail.
    verify_with(segments.len(), &mut load, options).unwrap_or_default()
}

/// Verifies a log stored in files (segments, in order). Each file is read whole, one at a time.
///
/// # Errors
/// A file could not be read.
pub fn verify_files(
    paths: &[PathBuf],
    options: VerifyOptions<'_>,
) -> std::io::Result<VerifyReport> {
    let mut load = |i: usize| -> std::io::Result<Cow<'static, [u8]>> {
        std::fs::read(&paths[i]).map(Cow::Owned)
    };
    verify_with(paths.len(), &mut load, options)
}

type Loader<'l, 'b> = dyn FnMut(usize) -> std::io::Result<Cow<'b, [u8]>> + 'l;

fn verify_with<'b>(
    count: usize,
    load: &mut Loader<'_, 'b>,
    options: VerifyOptions<'_>,
) -> std::io::Result<VerifyReport> {
    let mut chain = Chain::new(options.key, options.anchor, false);
    if let Some(anchor) = options.anchor {
        if let Some(key) = options.key {
            if !anchor.authenticate(key) {
                chain.report.problem = Some(Problem {
                    kind: ProblemKind::BadCheckpoint,
                    segment: 0,
                    line: 0,
                    offset: 0,
                    seq: anchor.seq,
                    detail: "the anchor's MAC does not verify under this key",
                });
                return Ok(chain.report);
            }
        }
    }
    let mut outcome = Ok(());
    for i in 0..count {
        let bytes = load(i)?;
        chain.report.segments += 1;
        outcome = chain.segment(i, &bytes, i + 1 == count);
        if outcome.is_err() {
            break;
        }
    }
    if outcome.is_ok() {
        outcome = chain.finish(count);
    }
    match outcome {
        Ok(()) => {}
        Err(Stop::Problem(p)) => chain.report.problem = Some(p),
        Err(Stop::Sequence(at)) => {
            let kind = classify(count, load, at.found, at.expected)?;
            chain.report.problem = Some(Problem {
                kind,
                segment: at.segment,
                line: at.line,
                offset: at.offset,
                seq: at.expected,
                detail: match kind {
                    ProblemKind::Inserted => "a record appears twice",
                    ProblemKind::Reordered => "records are out of order",
                    _ => "records are missing from the chain",
                },
            });
        }
    }
    if chain.started {
        chain.report.head = Some(record::hex_string(&chain.prev));
    }
    Ok(chain.report)
}

/// Where a record with an unexpected sequence number was found.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SeqAnomaly {
    segment: usize,
    line: u64,
    offset: u64,
    found: u64,
    expected: u64,
}

pub(crate) enum Stop {
    Problem(Problem),
    Sequence(SeqAnomaly),
}

/// Tells a deleted record from an inserted copy from a reordering, from the sequence numbers
/// of every intact line in the log.
fn classify<'b>(
    count: usize,
    load: &mut Loader<'_, 'b>,
    found: u64,
    expected: u64,
) -> std::io::Result<ProblemKind> {
    if found < expected {
        return Ok(ProblemKind::Inserted);
    }
    let mut seen: HashMap<u64, u32> = HashMap::new();
    for i in 0..count {
        let bytes = load(i)?;
        for line in bytes.split(|b| *b == b'\n') {
            if let Some(l) = Line::parse(line) {
                if l.check_hash().is_some() {
                    *seen.entry(l.seq).or_default() += 1;
                }
            }
        }
    }
    Ok(if seen.get(&found).copied().unwrap_or(0) > 1 {
        ProblemKind::Inserted
    } else if seen.contains_key(&expected) {
        ProblemKind::Reordered
    } else {
        ProblemKind::Deleted
    })
}

/// The chain state as lines are read.
pub(crate) struct Chain<'a> {
    key: Option<&'a AuditKey>,
    anchor: Option<&'a Anchor>,
    anchor_seen: bool,
    /// Resume mode (a writer reopening its last segment): the first record read sets the
    /// expected sequence number and hash instead of requiring the genesis record.
    resume: bool,
    started: bool,
    expected: u64,
    prev: Hash,
    prev_hex: [u8; 64],
    pub(crate) report: VerifyReport,
    /// Records since the last checkpoint, and that checkpoint's time (for a resuming writer).
    pub(crate) since_checkpoint: u64,
    pub(crate) last_checkpoint: Option<Timestamp>,
    /// A torn tail at the end of the last segment: (offset, length).
    pub(crate) torn: Option<(u64, u64)>,
    /// Byte length of the intact part of the last segment read.
    pub(crate) intact_len: u64,
}

impl<'a> Chain<'a> {
    pub(crate) fn new(key: Option<&'a AuditKey>, anchor: Option<&'a Anchor>, resume: bool) -> Self {
        Self {
            key,
            anchor,
            anchor_seen: false,
            resume,
            started: false,
            expected: 0,
            prev: ZERO_HASH,
            prev_hex: record::hex64(&ZERO_HASH),
            report: VerifyReport::default(),
            since_checkpoint: 0,
            last_checkpoint: None,
            torn: None,
            intact_len: 0,
        }
    }

    /// The next sequence number and the head hash after the records read so far.
    pub(crate) fn head(&self) -> Option<(u64, Hash)> {
        self.started.then_some((self.expected, self.prev))
    }

    /// A line that is not an intact record (and no recovery record describes it).
    fn not_a_record(&self, segment: usize, line: u64, offset: usize) -> Stop {
        self.problem(
            ProblemKind::Edited,
            segment,
            line,
            offset,
            "a line is not an intact record",
        )
    }

    fn problem(
        &self,
        kind: ProblemKind,
        segment: usize,
        line: u64,
        offset: usize,
        detail: &'static str,
    ) -> Stop {
        Stop::Problem(Problem {
            kind,
            segment,
            line,
            offset: offset as u64,
            seq: self.expected,
            detail,
        })
    }

    /// Reads one segment. `last`: whether it is the final segment (where a torn tail may be).
    pub(crate) fn segment(&mut self, index: usize, bytes: &[u8], last: bool) -> Result<(), Stop> {
        let mut pos = 0usize;
        let mut line_no = 0u64;
        // A line that is not an intact record; allowed only if a recovery record describing it
        // follows immediately. (offset, length, line number)
        let mut torn: Option<(usize, usize, u64)> = None;
        self.intact_len = 0;
        while pos < bytes.len() {
            let rest = &bytes[pos..];
            let Some(n) = memchr::memchr(b'\n', rest) else {
                if let Some((off, _, no)) = torn {
                    return Err(self.not_a_record(index, no, off));
                }
                return Err(self.tail(index, line_no + 1, pos, rest, last));
            };
            line_no += 1;
            let line = &rest[..n];
            let parsed = Line::parse(line).and_then(|l| l.check_hash().map(|h| (l, h)));
            match parsed {
                None => {
                    if let Some((off, _, no)) = torn {
                        return Err(self.not_a_record(index, no, off));
                    }
                    torn = Some((pos, n, line_no));
                }
                Some((l, h)) => {
                    if let Some((off, len, no)) = torn.take() {
                        if !recovery_describes(&l, off, &bytes[off..off + len]) {
                            return Err(self.not_a_record(index, no, off));
                        }
                        self.report.recovered_breaks += 1;
                    } else if l.ty == RecordType::Recovery {
                        return Err(self.problem(
                            ProblemKind::Edited,
                            index,
                            line_no,
                            pos,
                            "a recovery record follows no torn line",
                        ));
                    }
                    self.link(index, line_no, pos, &l, h)?;
                    self.intact_len = (pos + n + 1) as u64;
                }
            }
            pos += n + 1;
        }
        if let Some((off, _, no)) = torn {
            return Err(self.not_a_record(index, no, off));
        }
        Ok(())
    }

    /// The log ended: anything anchored must have been seen.
    pub(crate) fn finish(&mut self, segments: usize) -> Result<(), Stop> {
        if !self.started && !self.resume {
            return Err(self.problem(
                ProblemKind::Truncated,
                segments.saturating_sub(1),
                0,
                0,
                "the log holds no record",
            ));
        }
        if let Some(a) = self.anchor {
            if !self.anchor_seen {
                return Err(self.problem(
                    ProblemKind::Truncated,
                    segments.saturating_sub(1),
                    0,
                    0,
                    "the log ends before the anchored checkpoint",
                ));
            }
            self.report.anchor = if self.key.is_some() {
                AnchorCheck::Authenticated
            } else {
                AnchorCheck::Matched
            };
            let _ = a;
        }
        Ok(())
    }

    /// An unterminated last line.
    fn tail(&mut self, index: usize, line: u64, pos: usize, tail: &[u8], last: bool) -> Stop {
        if !last {
            return self.problem(
                ProblemKind::Truncated,
                index,
                line,
                pos,
                "a segment before the last one ends mid-line",
            );
        }
        // A complete record followed by one stray byte: the newline was overwritten.
        if let Some((_, rest)) = tail.split_last() {
            if Line::parse(rest).and_then(|l| l.check_hash()).is_some() {
                return self.problem(
                    ProblemKind::Edited,
                    index,
                    line,
                    pos,
                    "the last record's newline was changed",
                );
            }
        }
        if !self.resume && self.anchor.is_some() && !self.anchor_seen {
            return self.problem(
                ProblemKind::Truncated,
                index,
                line,
                pos,
                "the log ends before the anchored checkpoint",
            );
        }
        self.torn = Some((pos as u64, tail.len() as u64));
        self.problem(
            ProblemKind::TornTail,
            index,
            line,
            pos,
            "the last line is incomplete (a write was interrupted)",
        )
    }

    fn link(
        &mut self,
        index: usize,
        line: u64,
        pos: usize,
        l: &Line<'_>,
        h: Hash,
    ) -> Result<(), Stop> {
        if !self.started {
            self.started = true;
            if self.resume {
                self.expected = l.seq;
                let mut prev = [0u8; 32];
                if hex::decode_to_slice(l.prev_hex, &mut prev).is_err() {
                    return Err(self.problem(
                        ProblemKind::Edited,
                        index,
                        line,
                        pos,
                        "bad previous hash",
                    ));
                }
                self.prev = prev;
                self.prev_hex = record::hex64(&prev);
            }
        }
        if l.seq != self.expected {
            return Err(Stop::Sequence(SeqAnomaly {
                segment: index,
                line,
                offset: pos as u64,
                found: l.seq,
                expected: self.expected,
            }));
        }
        if l.prev_hex != self.prev_hex.as_slice() {
            return Err(self.problem(
                ProblemKind::Edited,
                index,
                line,
                pos,
                "the previous record was rewritten (chain link broken)",
            ));
        }
        match l.ty {
            RecordType::Genesis => {
                let body: Option<record::GenesisBody> = serde_json::from_slice(l.body).ok();
                match body {
                    Some(g) if l.seq == 0 && g.format == record::FORMAT => {
                        if let Some(a) = self.anchor {
                            if a.log != g.log {
                                return Err(self.problem(
                                    ProblemKind::Replaced,
                                    index,
                                    line,
                                    pos,
                                    "the log id differs from the anchor's",
                                ));
                            }
                        }
                        self.report.log_id = Some(g.log);
                    }
                    _ => {
                        return Err(self.problem(
                            ProblemKind::Edited,
                            index,
                            line,
                            pos,
                            "a genesis record out of place",
                        ))
                    }
                }
            }
            RecordType::Segment => {
                let body: Option<record::SegmentBody> = serde_json::from_slice(l.body).ok();
                let ok = match (&body, &self.report.log_id) {
                    (Some(s), Some(id)) => &s.log == id && line == 1,
                    (Some(s), None) if self.resume => {
                        self.report.log_id = Some(s.log.clone());
                        line == 1
                    }
                    _ => false,
                };
                if !ok {
                    return Err(self.problem(
                        ProblemKind::Edited,
                        index,
                        line,
                        pos,
                        "a segment record out of place",
                    ));
                }
            }
            RecordType::Checkpoint => {
                let body: Option<CheckpointBody> = serde_json::from_slice(l.body).ok();
                let Some(c) = body else {
                    return Err(self.problem(
                        ProblemKind::BadCheckpoint,
                        index,
                        line,
                        pos,
                        "malformed checkpoint",
                    ));
                };
                let linked = Some(&c.log) == self.report.log_id.as_ref()
                    && l.seq > 0
                    && c.covers == l.seq - 1
                    && c.head.as_bytes() == l.prev_hex;
                if !(linked || self.resume && self.report.log_id.is_none()) {
                    return Err(self.problem(
                        ProblemKind::BadCheckpoint,
                        index,
                        line,
                        pos,
                        "the checkpoint does not match the chain",
                    ));
                }
                if self.report.log_id.is_none() {
                    self.report.log_id = Some(c.log.clone());
                }
                match self.key {
                    Some(key) => {
                        let covers = c.covers.to_string();
                        let time = c.time.as_unix_millis().to_string();
                        if !key.check(
                            &record::checkpoint_mac_parts(&c.log, &covers, &c.head, &time),
                            &c.mac,
                        ) {
                            return Err(self.problem(
                                ProblemKind::BadCheckpoint,
                                index,
                                line,
                                pos,
                                "the checkpoint's MAC does not verify under this key",
                            ));
                        }
                        self.report.checkpoints_checked += 1;
                    }
                    None => self.report.checkpoints_unchecked += 1,
                }
                self.since_checkpoint = 0;
                self.last_checkpoint = Some(c.time);
            }
            RecordType::Recovery => {}
            // A sealed event counts as one; its chain is checked without opening it.
            RecordType::Event | RecordType::Sealed => {
                self.report.events += 1;
                self.since_checkpoint += 1;
            }
        }
        if let Some(a) = self.anchor {
            if a.seq == l.seq {
                if a.hash.as_bytes() != record::hex64(&h).as_slice() {
                    return Err(self.problem(
                        ProblemKind::Replaced,
                        index,
                        line,
                        pos,
                        "the anchored record differs from the anchor",
                    ));
                }
                self.anchor_seen = true;
            }
        }
        self.prev = h;
        // `check_hash` compared the line's hash field with this hash's hex: reuse it.
        self.prev_hex.copy_from_slice(l.hash_hex);
        self.expected = l.seq.wrapping_add(1);
        self.report.records += 1;
        self.report.last_seq = Some(l.seq);
        Ok(())
    }
}

pub(crate) fn recovery_describes(l: &Line<'_>, offset: usize, torn: &[u8]) -> bool {
    if l.ty != RecordType::Recovery {
        return false;
    }
    let Ok(body) = serde_json::from_slice::<RecoveryBody>(l.body) else {
        return false;
    };
    body.torn_offset == offset as u64
        && body.torn_len == torn.len() as u64
        && body.torn_sha256.as_bytes() == record::hex64(&record::sha256(torn)).as_slice()
}
