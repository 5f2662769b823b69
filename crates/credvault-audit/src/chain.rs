//! A log whose records someone else stores: [`ChainWriter`] formats each next record of a
//! chain exactly as [`AuditLog`](crate::AuditLog) writes it (same lines, hashes, checkpoints,
//! sealing and keyed fields), and the caller stores the lines, typically in a database table
//! written in the same transaction as the change each event describes. The lines of such a
//! chain, written one after another into a file, are a one-segment log that
//! [`verify_segments`](crate::verify_segments) checks like any other.
//!
//! ```
//! use credvault_audit::{verify_segments, Action, AuditEvent, AuditKey, ChainWriter, LogConfig, VerifyOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = AuditKey::generate()?;
//! let writer = ChainWriter::new(AuditKey::from_text(&key.to_hex())?, &ChainWriter::new_log_id()?, &LogConfig::default());
//! let mut stored = Vec::new(); // the caller's table
//! let start = writer.genesis()?;
//! stored.extend(start.records.iter().map(|r| r.line.clone()));
//! let next = writer.append(&start.tip, &[AuditEvent::new("acme", "alice", Action::Accessed)])?;
//! stored.extend(next.records.iter().map(|r| r.line.clone()));
//!
//! let file: Vec<u8> = stored.concat();
//! let report = verify_segments(&[&file], VerifyOptions { key: Some(&key), anchor: None });
//! assert!(report.is_intact());
//! assert_eq!(report.events, 1);
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

use crate::event::AuditEvent;
use crate::key::{AuditKey, HashedField, IdentifierHasher};
use crate::log::{
    checkpoint_line, event_body, event_line, genesis_line, new_log_id, segment_line, LogConfig,
    LogError, Receipt,
};
use crate::record::RecordType;
use crate::seal::RecordSealer;
use crate::verify::Anchor;

/// Where a chain stands: what the caller keeps beside the records (in the same transaction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainTip {
    /// The next record's sequence number.
    pub next_seq: u64,
    /// The last record's hash.
    pub head: [u8; 32],
    /// Events since the last checkpoint.
    pub since_checkpoint: u64,
}

impl ChainTip {
    /// As stored: `NEXT_SEQ:HEAD_HEX:SINCE_CHECKPOINT`.
    pub fn to_text(&self) -> String {
        format!(
            "{}:{}:{}",
            self.next_seq,
            hex::encode(self.head),
            self.since_checkpoint
        )
    }

    /// Parses [`to_text`](Self::to_text)'s form.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split(':');
        let next_seq = parts.next()?.parse().ok()?;
        let mut head = [0u8; 32];
        hex::decode_to_slice(parts.next()?, &mut head).ok()?;
        let since_checkpoint = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            next_seq,
            head,
            since_checkpoint,
        })
    }
}

/// One record for the caller to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainRecord {
    /// Its sequence number.
    pub seq: u64,
    /// Its hash.
    pub hash: [u8; 32],
    /// Its type.
    pub kind: RecordType,
    /// The whole line, with its newline.
    pub line: Vec<u8>,
}

/// What [`ChainWriter::append`] made.
#[derive(Clone, Debug)]
pub struct Appended {
    /// The records to store, in order (the events', and any checkpoint that fell due).
    pub records: Vec<ChainRecord>,
    /// Where the chain stands after them.
    pub tip: ChainTip,
    /// The last event's record (`None` when no event was given).
    pub last_event: Option<Receipt>,
    /// The anchor of the last checkpoint among the records, if any.
    pub anchor: Option<Anchor>,
}

/// Formats the records of a chain the caller stores. Holds the audit key; cheap to share.
#[derive(Clone)]
pub struct ChainWriter {
    key: Arc<AuditKey>,
    log_id: String,
    checkpoint_every: u64,
    hashed_fields: Vec<HashedField>,
    sealer: Option<Arc<dyn RecordSealer>>,
    hasher: Arc<IdentifierHasher>,
}

impl std::fmt::Debug for ChainWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainWriter")
            .field("log_id", &self.log_id)
            .field("checkpoint_every", &self.checkpoint_every)
            .field("sealed", &self.sealer.is_some())
            .finish_non_exhaustive()
    }
}

impl ChainWriter {
    /// A writer for the log `log_id` under `key`, checkpointing, sealing and hashing fields
    /// as `config` says (its durability, segment size, timer and lock timeout are the
    /// caller's business).
    pub fn new(key: AuditKey, log_id: &str, config: &LogConfig) -> Self {
        let hasher = Arc::new(IdentifierHasher::new(&key, log_id));
        Self {
            key: Arc::new(key),
            log_id: log_id.to_owned(),
            checkpoint_every: config.checkpoint_every.max(1),
            hashed_fields: config.hashed_fields.clone(),
            sealer: config.sealer.clone(),
            hasher,
        }
    }

    /// A new random log id.
    ///
    /// # Errors
    /// [`LogError::Failed`] without randomness.
    pub fn new_log_id() -> Result<String, LogError> {
        new_log_id()
    }

    /// The log id.
    pub fn log_id(&self) -> &str {
        &self.log_id
    }

    /// [`AuditKey::head_tag`] under this writer's key.
    pub fn head_tag(&self, seq: u64, hash: &[u8; 32]) -> [u8; 32] {
        self.key.head_tag(seq, hash)
    }

    /// The first records of a new chain: the genesis record and a checkpoint anchoring it
    /// (as a new [`AuditLog`](crate::AuditLog) starts).
    ///
    /// # Errors
    /// [`LogError::Serialize`] or [`LogError::Failed`].
    pub fn genesis(&self) -> Result<Appended, LogError> {
        let mut records = Vec::with_capacity(2);
        let mut line = Vec::new();
        let hash = genesis_line(&mut line, &self.log_id)?;
        records.push(ChainRecord {
            seq: 0,
            hash,
            kind: RecordType::Genesis,
            line,
        });
        let mut tip = ChainTip {
            next_seq: 1,
            head: hash,
            since_checkpoint: 0,
        };
        let anchor = self.push_checkpoint(&mut records, &mut tip)?;
        Ok(Appended {
            records,
            tip,
            last_event: None,
            anchor: Some(anchor),
        })
    }

    fn push_checkpoint(
        &self,
        records: &mut Vec<ChainRecord>,
        tip: &mut ChainTip,
    ) -> Result<Anchor, LogError> {
        let mut line = Vec::new();
        let (hash, anchor) =
            checkpoint_line(&mut line, &self.key, &self.log_id, tip.next_seq, &tip.head)
                .map_err(|reason| LogError::Failed { reason })?;
        records.push(ChainRecord {
            seq: tip.next_seq,
            hash,
            kind: RecordType::Checkpoint,
            line,
        });
        tip.next_seq += 1;
        tip.head = hash;
        tip.since_checkpoint = 0;
        Ok(anchor)
    }

    /// The records of `events` after `tip`, with a checkpoint after every
    /// `checkpoint_every`-th event since the last one.
    ///
    /// # Errors
    /// [`LogError::Serialize`] or [`LogError::Failed`] (a sealer that failed); then none of
    /// the records may be stored.
    pub fn append(&self, tip: &ChainTip, events: &[AuditEvent]) -> Result<Appended, LogError> {
        let mut tip = *tip;
        let mut records = Vec::with_capacity(events.len());
        let mut last_event = None;
        let mut anchor = None;
        for event in events {
            let body = event_body(&self.hashed_fields, &self.hasher, event)?;
            let mut line = Vec::with_capacity(body.len() + 200);
            let hash = event_line(
                &mut line,
                self.sealer.as_ref(),
                &self.log_id,
                tip.next_seq,
                &tip.head,
                &body,
            )
            .map_err(|reason| LogError::Failed { reason })?;
            records.push(ChainRecord {
                seq: tip.next_seq,
                hash,
                kind: if self.sealer.is_some() {
                    RecordType::Sealed
                } else {
                    RecordType::Event
                },
                line,
            });
            last_event = Some(Receipt {
                seq: tip.next_seq,
                hash,
            });
            tip.next_seq += 1;
            tip.head = hash;
            tip.since_checkpoint += 1;
            if tip.since_checkpoint >= self.checkpoint_every {
                anchor = Some(self.push_checkpoint(&mut records, &mut tip)?);
            }
        }
        Ok(Appended {
            records,
            tip,
            last_event,
            anchor,
        })
    }

    /// Continues a chain kept until now in segment files (a log migrated into a database)
    /// as segment `segment` of it, exactly as the file log rotates: the first record is a
    /// checkpoint covering the last record at `tip`, which **ends the previous segment** (the
    /// caller appends it there), the second the segment record that starts the new one.
    ///
    /// # Errors
    /// As [`append`](Self::append).
    pub fn start_segment(&self, tip: &ChainTip, segment: u32) -> Result<Appended, LogError> {
        let mut tip = *tip;
        let mut records = Vec::with_capacity(2);
        let anchor = self.push_checkpoint(&mut records, &mut tip)?;
        let mut line = Vec::new();
        let hash = segment_line(&mut line, &self.log_id, segment, tip.next_seq, &tip.head)?;
        records.push(ChainRecord {
            seq: tip.next_seq,
            hash,
            kind: RecordType::Segment,
            line,
        });
        tip.next_seq += 1;
        tip.head = hash;
        Ok(Appended {
            records,
            tip,
            last_event: None,
            anchor: Some(anchor),
        })
    }

    /// A checkpoint after `tip`: always when `force`, else only when an event came since the
    /// last one (`None` otherwise).
    ///
    /// # Errors
    /// As [`append`](Self::append).
    pub fn checkpoint(&self, tip: &ChainTip, force: bool) -> Result<Option<Appended>, LogError> {
        if tip.since_checkpoint == 0 && !force {
            return Ok(None);
        }
        let mut tip = *tip;
        let mut records = Vec::with_capacity(1);
        let anchor = self.push_checkpoint(&mut records, &mut tip)?;
        Ok(Some(Appended {
            records,
            tip,
            last_event: None,
            anchor: Some(anchor),
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{verify_segments, Action, AuditLog, ProblemKind, VerifyOptions};

    fn key() -> AuditKey {
        AuditKey::from_text(&"ab".repeat(32)).unwrap()
    }

    fn chain(every: u64, events: usize) -> (Vec<ChainRecord>, ChainTip) {
        let w = ChainWriter::new(key(), "0123", &LogConfig::default().checkpoint_every(every));
        let g = w.genesis().unwrap();
        let mut records = g.records;
        let mut tip = g.tip;
        for i in 0..events {
            let e = AuditEvent::new("acme", format!("user{i}"), Action::Accessed);
            let a = w.append(&tip, &[e]).unwrap();
            records.extend(a.records);
            tip = a.tip;
        }
        (records, tip)
    }

    #[test]
    fn a_stored_chain_verifies_as_a_one_segment_log_and_checkpoints_fall_due() {
        let (records, tip) = chain(3, 7);
        // genesis, checkpoint, 7 events, a checkpoint after the 3rd and the 6th.
        assert_eq!(records.len(), 2 + 7 + 2);
        assert_eq!(tip.next_seq, 11);
        assert_eq!(tip.since_checkpoint, 1);
        let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (0..11).collect::<Vec<_>>());
        let file: Vec<u8> = records.iter().flat_map(|r| r.line.clone()).collect();
        let k = key();
        let report = verify_segments(
            &[&file],
            VerifyOptions {
                key: Some(&k),
                anchor: None,
            },
        );
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.events, 7);
        assert_eq!(ChainTip::parse(&tip.to_text()), Some(tip));
    }

    #[test]
    fn a_record_left_out_or_edited_is_found() {
        let (records, _) = chain(100, 4);
        let k = key();
        let opts = || VerifyOptions {
            key: Some(&k),
            anchor: None,
        };
        let mut gap = records.clone();
        gap.remove(3);
        let file: Vec<u8> = gap.iter().flat_map(|r| r.line.clone()).collect();
        assert!(!verify_segments(&[&file], opts()).is_intact());
        let mut edited: Vec<u8> = records.iter().flat_map(|r| r.line.clone()).collect();
        let at = edited.windows(5).position(|w| w == b"user2").unwrap();
        edited[at + 4] = b'9';
        let report = verify_segments(&[&edited], opts());
        assert_eq!(report.problem.map(|p| p.kind), Some(ProblemKind::Edited));
    }

    #[test]
    fn lines_are_those_a_file_log_writes() {
        // The same event after the same head gives the same line from both writers (the
        // chain formats with the file log's own functions; this pins that they agree).
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = AuditLog::open(dir.path(), key(), LogConfig::default()).unwrap();
        let e = AuditEvent::new("acme", "alice", Action::Accessed);
        let r = log.record(&e).unwrap();
        log.close().unwrap();
        let text = std::fs::read(crate::segment_path(dir.path(), 1)).unwrap();
        let lines: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
        fn parsed(l: &[u8]) -> crate::record::Line<'_> {
            crate::record::Line::parse(&l[..l.len() - 1]).unwrap()
        }
        let at = |seq: u64| *lines.iter().find(|l| parsed(l).seq == seq).unwrap();
        let prev = parsed(at(r.seq - 1)).check_hash().unwrap();
        let id: serde_json::Value = serde_json::from_slice(parsed(lines[0]).body).unwrap();
        let w = ChainWriter::new(key(), id["log"].as_str().unwrap(), &LogConfig::default());
        let a = w
            .append(
                &ChainTip {
                    next_seq: r.seq,
                    head: prev,
                    since_checkpoint: 0,
                },
                &[e],
            )
            .unwrap();
        assert_eq!(a.records[0].line.as_slice(), at(r.seq));
        assert_eq!(a.last_event, Some(r));
    }
}
