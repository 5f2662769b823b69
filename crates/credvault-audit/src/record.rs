//! The record line, format v1 (docs/formats.md, "Audit log v1"):
//!
//! ```text
//! {"v":1,"seq":<u64>,"prev":"<64 hex>","type":"<type>","body":<JSON>,"hash":"<64 hex>"}\n
//! ```
//!
//! `hash` is SHA-256 over the line's bytes before `,"hash":"`; `prev` is the previous record's
//! `hash` (64 zeros for the genesis record). The writer emits compact JSON in a fixed field
//! order, so the bytes hashed are the canonical record; a reader hashes the bytes as they are
//! and never re-serializes. Lines hold no raw newline (JSON escapes control characters).

use ring::digest;
use serde::{Deserialize, Serialize};

pub(crate) type Hash = [u8; 32];

/// The `prev` of the genesis record.
pub(crate) const ZERO_HASH: Hash = [0u8; 32];

const PREFIX: &[u8] = b"{\"v\":1,\"seq\":";
const PREV: &[u8] = b",\"prev\":\"";
const TYPE: &[u8] = b"\",\"type\":\"";
const BODY: &[u8] = b"\",\"body\":";
const HASH: &[u8] = b",\"hash\":\"";
const END: &[u8] = b"\"}";
/// Bytes after the hashed part: `,"hash":"` + 64 hex + `"}`.
const TAIL_LEN: usize = HASH.len() + 64 + END.len();

/// Longest line a reader accepts (1 MiB); longer lines are not records.
pub(crate) const MAX_LINE: usize = 1 << 20;

/// The kind of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecordType {
    /// First record of a log (seq 0): the log id and creation time.
    Genesis,
    /// First record of every later segment file.
    Segment,
    /// An audit event.
    Event,
    /// An audit event encrypted at rest ([`RecordSealer`](crate::RecordSealer)).
    Sealed,
    /// A keyed checkpoint over the chain so far.
    Checkpoint,
    /// Written after a torn tail found on open: describes the torn bytes it skips.
    Recovery,
}

impl RecordType {
    /// The type's name as written.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Genesis => "genesis",
            Self::Segment => "segment",
            Self::Event => "event",
            Self::Sealed => "sealed",
            Self::Checkpoint => "checkpoint",
            Self::Recovery => "recovery",
        }
    }

    fn parse(b: &[u8]) -> Option<Self> {
        Some(match b {
            b"genesis" => Self::Genesis,
            b"segment" => Self::Segment,
            b"event" => Self::Event,
            b"sealed" => Self::Sealed,
            b"checkpoint" => Self::Checkpoint,
            b"recovery" => Self::Recovery,
            _ => return None,
        })
    }
}

pub(crate) fn sha256(bytes: &[u8]) -> Hash {
    let d = digest::digest(&digest::SHA256, bytes);
    let mut h = [0u8; 32];
    h.copy_from_slice(d.as_ref());
    h
}

pub(crate) fn hex64(h: &Hash) -> [u8; 64] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (i, b) in h.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 15)];
    }
    out
}

pub(crate) fn hex_string(h: &Hash) -> String {
    hex::encode(h)
}

/// Starts a line in `out` (everything before the body); returns where the line starts.
pub(crate) fn begin_line(out: &mut Vec<u8>, seq: u64, prev: &Hash, ty: RecordType) -> usize {
    let start = out.len();
    out.extend_from_slice(PREFIX);
    out.extend_from_slice(seq.to_string().as_bytes());
    out.extend_from_slice(PREV);
    out.extend_from_slice(&hex64(prev));
    out.extend_from_slice(TYPE);
    out.extend_from_slice(ty.as_str().as_bytes());
    out.extend_from_slice(BODY);
    start
}

/// Ends the line begun at `start` (after its body has been appended): hashes it, appends the
/// hash and the newline, and returns the hash.
pub(crate) fn finish_line(out: &mut Vec<u8>, start: usize) -> Hash {
    let h = sha256(&out[start..]);
    out.extend_from_slice(HASH);
    out.extend_from_slice(&hex64(&h));
    out.extend_from_slice(END);
    out.push(b'\n');
    h
}

/// Writes a whole line with a serializable body.
pub(crate) fn write_line<T: Serialize>(
    out: &mut Vec<u8>,
    seq: u64,
    prev: &Hash,
    ty: RecordType,
    body: &T,
) -> Result<Hash, serde_json::Error> {
    let start = begin_line(out, seq, prev, ty);
    if let Err(e) = serde_json::to_writer(&mut *out, body) {
        out.truncate(start);
        return Err(e);
    }
    Ok(finish_line(out, start))
}

/// A line split into its parts; nothing about it is checked beyond its shape.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Line<'a> {
    pub(crate) seq: u64,
    pub(crate) prev_hex: &'a [u8],
    pub(crate) ty: RecordType,
    pub(crate) body: &'a [u8],
    hashed: &'a [u8],
    pub(crate) hash_hex: &'a [u8],
}

impl<'a> Line<'a> {
    /// Splits `line` (without its newline), or `None` if it does not have the v1 shape.
    pub(crate) fn parse(line: &'a [u8]) -> Option<Self> {
        if line.len() > MAX_LINE || line.len() < PREFIX.len() + TAIL_LEN {
            return None;
        }
        let rest = line.strip_prefix(PREFIX)?;
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 20 || (digits > 1 && rest[0] == b'0') {
            return None;
        }
        let seq = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
        let rest = rest[digits..].strip_prefix(PREV)?;
        // Hex digits are not checked here: `prev` is compared with the previous record's hash
        // and `hash` with the computed one, byte for byte, in lower-case hex.
        let prev_hex = rest.get(..64)?;
        let rest = rest[64..].strip_prefix(TYPE)?;
        let ty_len = memchr::memchr(b'"', rest)?;
        let ty = RecordType::parse(&rest[..ty_len])?;
        let rest = rest[ty_len..].strip_prefix(BODY)?;
        let tail_at = line.len() - TAIL_LEN;
        let body_at = line.len() - rest.len();
        if body_at >= tail_at {
            return None;
        }
        let tail = &line[tail_at..];
        let hash_hex = tail.strip_prefix(HASH)?.strip_suffix(END)?;
        Some(Self {
            seq,
            prev_hex,
            ty,
            body: &line[body_at..tail_at],
            hashed: &line[..tail_at],
            hash_hex,
        })
    }

    /// Whether the line's `hash` is the SHA-256 of its hashed part; returns the hash if so.
    pub(crate) fn check_hash(&self) -> Option<Hash> {
        let h = sha256(self.hashed);
        (hex64(&h).as_slice() == self.hash_hex).then_some(h)
    }
}

/// Body of the genesis record.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct GenesisBody {
    pub(crate) log: String,
    pub(crate) format: String,
    pub(crate) time: crate::Timestamp,
}

/// Body of a segment record.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SegmentBody {
    pub(crate) log: String,
    pub(crate) segment: u32,
    pub(crate) time: crate::Timestamp,
}

/// Body of a checkpoint record: a MAC over (log, covers, head, time) where `covers` is the
/// seq of the record before the checkpoint and `head` its hash.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CheckpointBody {
    pub(crate) log: String,
    pub(crate) covers: u64,
    pub(crate) head: String,
    pub(crate) time: crate::Timestamp,
    pub(crate) mac: String,
}

/// Body of a recovery record: the torn bytes it skips.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RecoveryBody {
    pub(crate) torn_offset: u64,
    pub(crate) torn_len: u64,
    pub(crate) torn_sha256: String,
    pub(crate) time: crate::Timestamp,
}

pub(crate) const FORMAT: &str = "credvault-audit/1";

pub(crate) fn checkpoint_mac_parts<'a>(
    log: &'a str,
    covers: &'a str,
    head: &'a str,
    time: &'a str,
) -> [&'a [u8]; 5] {
    [
        b"credvault-audit checkpoint v1",
        log.as_bytes(),
        covers.as_bytes(),
        head.as_bytes(),
        time.as_bytes(),
    ]
}
