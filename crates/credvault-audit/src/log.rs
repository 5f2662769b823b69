//! The hash-chained JSON Lines log: a directory of segment files (`audit-000001.jsonl`, ...),
//! an anchor file (`audit.anchor`) and a lock file.
//!
//! Durability: with the default [`Durability::GroupCommit`], a record is acknowledged only
//! after an `fsync` (`fdatasync`) that covers it; concurrent writers share one `fsync`.
//! [`Durability::PerRecord`] writes and syncs each record alone. [`Durability::NoSync`]
//! acknowledges after `write(2)`: a process crash loses nothing, a power loss may; it must be
//! chosen explicitly.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::event::{AuditEvent, Timestamp};
use crate::key::{AuditKey, HashedField, IdentifierHasher};
use crate::record::{self, Hash, RecordType};
use crate::sink::{AuditSink, SinkError};
use crate::verify::{Anchor, Chain, Problem, ProblemKind, Stop};

/// When a record counts as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// Write and `fsync` each record on its own, under the log's lock.
    PerRecord,
    /// Group commit (the default): records from concurrent writers are written together and
    /// covered by one `fsync`; each is acknowledged only once synced. The syncing writer
    /// first waits up to `max_delay` for more records to join (zero: no wait; batches still
    /// form while a sync is running).
    GroupCommit {
        /// How long a batch may wait for company before it is synced.
        max_delay: Duration,
    },
    /// Acknowledge after `write(2)`, never `fsync`. Survives a process crash, not a power loss.
    NoSync,
}

impl Default for Durability {
    fn default() -> Self {
        Self::GroupCommit {
            max_delay: Duration::ZERO,
        }
    }
}

/// How a log is written.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LogConfig {
    /// When a record counts as written.
    pub durability: Durability,
    /// A checkpoint after this many events (default 1,000).
    pub checkpoint_every: u64,
    /// A checkpoint at least this often, written by a background thread even when no event
    /// arrives (default 60 s; `None`: no timer, checkpoints by count and on close only).
    pub checkpoint_interval: Option<Duration>,
    /// Start a new segment file once the current one reaches this size (default 64 MiB).
    pub max_segment_bytes: u64,
    /// Event fields stored as keyed hashes ([`IdentifierHasher`]) instead of plain text.
    pub hashed_fields: Vec<HashedField>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            durability: Durability::default(),
            checkpoint_every: 1000,
            checkpoint_interval: Some(Duration::from_secs(60)),
            max_segment_bytes: 64 << 20,
            hashed_fields: Vec::new(),
        }
    }
}

impl LogConfig {
    /// Sets the durability.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets the checkpoint count interval (at least 1).
    pub fn checkpoint_every(mut self, events: u64) -> Self {
        self.checkpoint_every = events.max(1);
        self
    }

    /// Sets the checkpoint timer.
    pub fn checkpoint_interval(mut self, interval: Option<Duration>) -> Self {
        self.checkpoint_interval = interval;
        self
    }

    /// Sets the segment size limit.
    pub fn max_segment_bytes(mut self, bytes: u64) -> Self {
        self.max_segment_bytes = bytes;
        self
    }

    /// Sets the fields stored as keyed hashes.
    pub fn hashed_fields(mut self, fields: impl IntoIterator<Item = HashedField>) -> Self {
        self.hashed_fields = fields.into_iter().collect();
        self
    }
}

/// Errors of the log writer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// A file operation failed.
    #[error("audit log {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Another process holds the log open for writing.
    #[error("audit log {path} is in use by another writer")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The existing log failed its checks on open; it is left untouched.
    #[error("audit log {path} refused: {problem}")]
    Corrupt {
        /// The segment or anchor.
        path: PathBuf,
        /// The problem.
        problem: Problem,
    },
    /// An earlier write failed; the log refuses every record until it is reopened (fail
    /// closed: the torn tail, if any, is then reported and skipped).
    #[error("audit log failed earlier and accepts no more records: {reason}")]
    Failed {
        /// The first failure.
        reason: String,
    },
    /// An event could not be serialized.
    #[error("audit event could not be serialized: {0}")]
    Serialize(String),
}

/// What opening a log found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenReport {
    /// Whether the log was created by this call.
    pub created: bool,
    /// Segment files present after opening.
    pub segments: u32,
    /// A torn tail found at the end of the last segment (a crash during a write), as
    /// (path, byte offset, length). It was left in place, terminated, and described by a
    /// recovery record; appending continues after it.
    pub torn_tail: Option<(PathBuf, u64, u64)>,
    /// Sequence number of the last record after opening.
    pub last_seq: u64,
}

/// The acknowledgement of a durable record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The record's sequence number.
    pub seq: u64,
    /// The record's hash.
    pub hash: [u8; 32],
}

/// A submitted record that may not be durable yet; [`wait`](Ticket::wait) for it.
#[must_use = "a record is acknowledged only by waiting for its ticket"]
#[derive(Debug)]
pub struct Ticket {
    log: Arc<Inner>,
    receipt: Receipt,
}

impl Ticket {
    /// Blocks until the record is durable (by the log's [`Durability`]).
    ///
    /// # Errors
    /// [`LogError::Failed`] if the write or sync covering it failed.
    pub fn wait(self) -> Result<Receipt, LogError> {
        self.log.wait_durable(self.receipt.seq)?;
        Ok(self.receipt)
    }
}

/// An append-only, hash-chained, checkpointed audit log. Cheap to clone (a shared handle);
/// safe to use from many threads.
#[derive(Clone, Debug)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Chunk {
    segment: u32,
    bytes: Vec<u8>,
}

struct State {
    /// The open segment file; `None` while a syncing writer holds it.
    file: Option<File>,
    file_segment: u32,
    /// Segment that new lines go to, and its size counting pending lines.
    segment: u32,
    segment_bytes: u64,
    next_seq: u64,
    head: Hash,
    pending: Vec<Chunk>,
    pending_anchor: Option<Anchor>,
    /// Every record with seq below this is durable.
    durable_below: u64,
    syncing: bool,
    failed: Option<String>,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    spare: Vec<Vec<u8>>,
}

struct Inner {
    dir: PathBuf,
    key: AuditKey,
    log_id: String,
    config: LogConfig,
    hasher: IdentifierHasher,
    state: Mutex<State>,
    cond: Condvar,
    stop: Arc<(Mutex<bool>, Condvar)>,
    /// Test hook: writes fail (after this many more bytes) as a full disk would.
    fault: Mutex<Option<u64>>,
    _lock: File,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.dir)
            .field("log_id", &self.log_id)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let (flag, cond) = &*self.stop;
        if let Ok(mut stopped) = flag.lock() {
            *stopped = true;
        }
        cond.notify_all();
    }
}

/// The path of segment `n` in `dir`.
pub fn segment_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("audit-{n:06}.jsonl"))
}

/// The anchor file of the log in `dir`.
pub fn anchor_path(dir: &Path) -> PathBuf {
    dir.join("audit.anchor")
}

/// The segment files of the log in `dir`, in order.
///
/// # Errors
/// The directory cannot be read.
pub fn segment_paths(dir: &Path) -> io::Result<Vec<PathBuf>> {
    Ok(segment_numbers(dir)?
        .into_iter()
        .map(|n| segment_path(dir, n))
        .collect())
}

fn segment_numbers(dir: &Path) -> io::Result<Vec<u32>> {
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_prefix("audit-")
            .and_then(|s| s.strip_suffix(".jsonl"))
            .filter(|s| s.len() == 6 && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
        {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_owned(),
        source,
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl AuditLog {
    /// Opens the log in `dir`, creating the directory and a new log if there is none.
    ///
    /// An existing log's last segment is checked (hashes, links, checkpoint MACs under `key`)
    /// and compared with the anchor; any problem other than a torn tail refuses the open and
    /// changes nothing. A torn tail is kept, terminated, and described by a recovery record.
    ///
    /// # Errors
    /// [`LogError`]: I/O, another writer holds the lock, or the log failed its checks.
    pub fn open(
        dir: &Path,
        key: AuditKey,
        config: LogConfig,
    ) -> Result<(Self, OpenReport), LogError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock_path = dir.join("audit.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(LogError::Locked { path: lock_path }),
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        let numbers = segment_numbers(dir).map_err(io_err(dir))?;
        // A segment still under its temporary name never became part of the log (its records
        // were not acknowledged): remove it.
        let tmp =
            segment_path(dir, numbers.last().map_or(1, |n| n + 1)).with_extension("jsonl.tmp");
        if tmp.exists() {
            fs::remove_file(&tmp).map_err(io_err(&tmp))?;
        }
        let sync = config.durability != Durability::NoSync;
        let (state, log_id, report) = match numbers.last() {
            None => Self::create(dir, sync)?,
            Some(&last) => Self::resume(dir, &key, last, numbers.len(), sync)?,
        };
        let hasher = IdentifierHasher::new(&key, &log_id);
        let inner = Arc::new(Inner {
            dir: dir.to_owned(),
            key,
            log_id,
            config,
            hasher,
            state: Mutex::new(state),
            cond: Condvar::new(),
            stop: Arc::new((Mutex::new(false), Condvar::new())),
            fault: Mutex::new(None),
            _lock: lock,
        });
        let log = Self { inner };
        if report.created {
            // Anchor the genesis record right away: from the first moment, a log cut short or
            // replaced is detectable.
            log.checkpoint()?;
        }
        if let Some(interval) = log.inner.config.checkpoint_interval {
            spawn_ticker(
                Arc::downgrade(&log.inner),
                Arc::clone(&log.inner.stop),
                interval,
            );
        }
        Ok((log, report))
    }

    fn create(dir: &Path, sync: bool) -> Result<(State, String, OpenReport), LogError> {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| LogError::Io {
            path: dir.to_owned(),
            source: io::Error::other(e.to_string()),
        })?;
        let log_id = hex::encode(id);
        let mut line = Vec::new();
        let genesis = record::GenesisBody {
            log: log_id.clone(),
            format: record::FORMAT.to_owned(),
            time: Timestamp::now(),
        };
        let head = record::write_line(
            &mut line,
            0,
            &record::ZERO_HASH,
            RecordType::Genesis,
            &genesis,
        )
        .map_err(|e| LogError::Serialize(e.to_string()))?;
        let file = write_new_segment(dir, 1, &line, sync)?;
        let state = State::new(file, 1, line.len() as u64, 1, head);
        Ok((
            state,
            log_id,
            OpenReport {
                created: true,
                segments: 1,
                torn_tail: None,
                last_seq: 0,
            },
        ))
    }

    fn resume(
        dir: &Path,
        key: &AuditKey,
        last: u32,
        count: usize,
        sync: bool,
    ) -> Result<(State, String, OpenReport), LogError> {
        let path = segment_path(dir, last);
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        let anchor_file = anchor_path(dir);
        let anchor = match fs::read(&anchor_file) {
            Ok(b) => Some(Anchor::parse(&b).ok_or_else(|| LogError::Corrupt {
                path: anchor_file.clone(),
                problem: open_problem(ProblemKind::BadCheckpoint, "the anchor is malformed"),
            })?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&anchor_file)(e)),
        };
        if let Some(a) = &anchor {
            if !a.authenticate(key) {
                return Err(LogError::Corrupt {
                    path: anchor_file,
                    problem: open_problem(
                        ProblemKind::BadCheckpoint,
                        "the anchor's MAC does not verify under this key",
                    ),
                });
            }
        }
        let mut chain = Chain::new(Some(key), anchor.as_ref(), true);
        let torn = match chain.segment(count - 1, &bytes, true) {
            Ok(()) => None,
            Err(Stop::Problem(p)) if p.kind == ProblemKind::TornTail => chain.torn,
            Err(Stop::Problem(problem)) => return Err(LogError::Corrupt { path, problem }),
            Err(Stop::Sequence(_)) => {
                return Err(LogError::Corrupt {
                    path,
                    problem: open_problem(
                        ProblemKind::Reordered,
                        "sequence numbers are out of order",
                    ),
                })
            }
        };
        let Some((next_seq, head)) = chain.head() else {
            return Err(LogError::Corrupt {
                path,
                problem: open_problem(
                    ProblemKind::Truncated,
                    "the last segment holds no intact record",
                ),
            });
        };
        let Some(log_id) = chain.report.log_id.clone() else {
            return Err(LogError::Corrupt {
                path,
                problem: open_problem(ProblemKind::Edited, "the last segment names no log"),
            });
        };
        if let Some(a) = &anchor {
            if a.log != log_id {
                return Err(LogError::Corrupt {
                    path,
                    problem: open_problem(
                        ProblemKind::Replaced,
                        "the log id differs from the anchor's",
                    ),
                });
            }
            if a.seq >= next_seq {
                return Err(LogError::Corrupt {
                    path,
                    problem: open_problem(
                        ProblemKind::Truncated,
                        "the log ends before the anchored checkpoint",
                    ),
                });
            }
        }
        let mut file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut len = bytes.len() as u64;
        let mut state_head = head;
        let mut seq = next_seq;
        let mut torn_tail = None;
        if let Some((offset, torn_len)) = torn {
            let fragment = &bytes[offset as usize..];
            let body = record::RecoveryBody {
                torn_offset: offset,
                torn_len,
                torn_sha256: record::hex_string(&record::sha256(fragment)),
                time: Timestamp::now(),
            };
            let mut line = vec![b'\n'];
            state_head = record::write_line(&mut line, seq, &head, RecordType::Recovery, &body)
                .map_err(|e| LogError::Serialize(e.to_string()))?;
            file.write_all(&line).map_err(io_err(&path))?;
            if sync {
                file.sync_data().map_err(io_err(&path))?;
            }
            len += line.len() as u64;
            seq += 1;
            torn_tail = Some((path.clone(), offset, torn_len));
        }
        let mut state = State::new(file, last, len, seq, state_head);
        state.since_checkpoint = chain.since_checkpoint;
        Ok((
            state,
            log_id,
            OpenReport {
                created: false,
                segments: u32::try_from(count).unwrap_or(u32::MAX),
                torn_tail,
                last_seq: seq - 1,
            },
        ))
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The log id (from its genesis record).
    pub fn log_id(&self) -> &str {
        &self.inner.log_id
    }

    /// The hasher for this log's keyed identifiers, to look up records by a known value.
    pub fn identifier_hasher(&self) -> IdentifierHasher {
        IdentifierHasher::new(&self.inner.key, &self.inner.log_id)
    }

    /// Appends an event and returns at once with a [`Ticket`]; the record is acknowledged
    /// when the ticket's [`wait`](Ticket::wait) returns. Lets one writer keep several records
    /// in flight, all covered by one sync.
    ///
    /// # Errors
    /// [`LogError::Failed`] after an earlier failure; [`LogError::Serialize`].
    pub fn submit(&self, event: &AuditEvent) -> Result<Ticket, LogError> {
        let inner = &self.inner;
        let mut st = inner.lock();
        if let Some(reason) = &st.failed {
            return Err(LogError::Failed {
                reason: reason.clone(),
            });
        }
        if st.segment_bytes >= inner.config.max_segment_bytes {
            inner.rotate(&mut st)?;
        }
        let receipt = inner.append_event(&mut st, event)?;
        st.since_checkpoint += 1;
        let due_time = inner
            .config
            .checkpoint_interval
            .is_some_and(|i| st.last_checkpoint.elapsed() >= i);
        if st.since_checkpoint >= inner.config.checkpoint_every || due_time {
            inner.append_checkpoint(&mut st)?;
        }
        let st = inner.flush_if_inline(st);
        drop(st);
        Ok(Ticket {
            log: Arc::clone(&self.inner),
            receipt,
        })
    }

    /// Appends an event and waits until it is durable. If this returns an error, the caller
    /// must refuse the operation the event describes.
    ///
    /// # Errors
    /// See [`submit`](Self::submit) and [`Ticket::wait`].
    pub fn record(&self, event: &AuditEvent) -> Result<Receipt, LogError> {
        self.submit(event)?.wait()
    }

    /// Writes a checkpoint now (and the anchor), and waits until it is durable.
    ///
    /// # Errors
    /// [`LogError::Failed`] or an I/O error.
    pub fn checkpoint(&self) -> Result<Receipt, LogError> {
        let inner = &self.inner;
        let mut st = inner.lock();
        if let Some(reason) = &st.failed {
            return Err(LogError::Failed {
                reason: reason.clone(),
            });
        }
        let receipt = inner.append_checkpoint(&mut st)?;
        drop(inner.flush_if_inline(st));
        inner.wait_durable(receipt.seq)?;
        Ok(receipt)
    }

    /// Test hook: after `bytes` more bytes, every write fails as on a full disk (the allowed
    /// prefix is written first, so a torn line is left behind).
    #[doc(hidden)]
    pub fn inject_write_failure_after(&self, bytes: u64) {
        *self.inner.fault.lock().unwrap_or_else(|e| e.into_inner()) = Some(bytes);
    }

    /// Writes a final checkpoint and releases this handle.
    ///
    /// # Errors
    /// As [`checkpoint`](Self::checkpoint).
    pub fn close(self) -> Result<(), LogError> {
        self.checkpoint().map(|_| ())
    }
}

impl AuditSink for AuditLog {
    fn record(&self, event: &AuditEvent) -> Result<(), SinkError> {
        AuditLog::record(self, event)
            .map(|_| ())
            .map_err(|e| SinkError::new("hash-chained log", e.to_string()))
    }

    fn is_durable(&self) -> bool {
        self.inner.config.durability != Durability::NoSync
    }
}

fn open_problem(kind: ProblemKind, detail: &'static str) -> Problem {
    Problem {
        kind,
        segment: 0,
        line: 0,
        offset: 0,
        seq: 0,
        detail,
    }
}

/// Writes a new segment file under a temporary name and renames it into place, so a crash
/// never leaves a segment without its first record.
fn write_new_segment(dir: &Path, n: u32, first: &[u8], sync: bool) -> Result<File, LogError> {
    let path = segment_path(dir, n);
    let tmp = path.with_extension("jsonl.tmp");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    file.write_all(first).map_err(io_err(&tmp))?;
    if sync {
        file.sync_data().map_err(io_err(&tmp))?;
    }
    if path.exists() {
        return Err(LogError::Io {
            path,
            source: io::Error::new(io::ErrorKind::AlreadyExists, "segment exists"),
        });
    }
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    if sync {
        sync_dir(dir).map_err(io_err(dir))?;
    }
    // The handle stays valid after the rename; reopen in append mode for later writes.
    drop(file);
    OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(io_err(&path))
}

fn write_anchor(dir: &Path, anchor: &Anchor, sync: bool) -> io::Result<()> {
    let path = anchor_path(dir);
    let tmp = dir.join("audit.anchor.tmp");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&tmp)?;
    f.write_all(&anchor.to_line())?;
    if sync {
        f.sync_data()?;
    }
    fs::rename(&tmp, &path)?;
    if sync {
        sync_dir(dir)?;
    }
    Ok(())
}

/// What one write takes out of the state: the file, the pending lines, the anchor to write
/// after them, and the sequence number below which all will then be durable.
struct Batch {
    file: Option<File>,
    file_segment: u32,
    chunks: Vec<Chunk>,
    anchor: Option<Anchor>,
    durable_below: u64,
}

impl State {
    fn take_batch(&mut self) -> Batch {
        Batch {
            file: self.file.take(),
            file_segment: self.file_segment,
            chunks: std::mem::take(&mut self.pending),
            anchor: self.pending_anchor.take(),
            durable_below: self.next_seq,
        }
    }

    fn new(file: File, segment: u32, segment_bytes: u64, next_seq: u64, head: Hash) -> Self {
        Self {
            file: Some(file),
            file_segment: segment,
            segment,
            segment_bytes,
            next_seq,
            head,
            pending: Vec::new(),
            pending_anchor: None,
            durable_below: next_seq,
            syncing: false,
            failed: None,
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            spare: Vec::new(),
        }
    }

    /// The buffer that lines for the current segment go to.
    fn chunk(&mut self) -> &mut Vec<u8> {
        let seg = self.segment;
        if self.pending.last().is_none_or(|c| c.segment != seg) {
            let bytes = self.spare.pop().unwrap_or_default();
            self.pending.push(Chunk {
                segment: seg,
                bytes,
            });
        }
        let last = self.pending.len() - 1;
        &mut self.pending[last].bytes
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A writer that panicked while holding the lock left the state consistent up to its
        // last complete step; the poisoned flag carries no extra information here.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn append_event(&self, st: &mut State, event: &AuditEvent) -> Result<Receipt, LogError> {
        let seq = st.next_seq;
        let head = st.head;
        let chunk = st.chunk();
        let start = record::begin_line(chunk, seq, &head, RecordType::Event);
        let written = if self.config.hashed_fields.is_empty() {
            serde_json::to_writer(&mut *chunk, event)
        } else {
            serde_json::to_writer(&mut *chunk, &self.hash_fields(event))
        };
        if let Err(e) = written {
            chunk.truncate(start);
            return Err(LogError::Serialize(e.to_string()));
        }
        let hash = record::finish_line(chunk, start);
        let len = (chunk.len() - start) as u64;
        st.segment_bytes += len;
        st.next_seq += 1;
        st.head = hash;
        Ok(Receipt { seq, hash })
    }

    fn hash_fields(&self, event: &AuditEvent) -> AuditEvent {
        let mut e = event.clone();
        for f in &self.config.hashed_fields {
            let slot = match f {
                HashedField::Actor => {
                    e.actor = self.hasher.hash(&e.actor);
                    continue;
                }
                HashedField::SourceIp => &mut e.source_ip,
                HashedField::ClientHost => &mut e.client_host,
                HashedField::RequestId => &mut e.request_id,
            };
            if let Some(v) = slot.as_mut() {
                *v = self.hasher.hash(v);
            }
        }
        e
    }

    fn append_line<T: serde::Serialize>(
        &self,
        st: &mut State,
        ty: RecordType,
        body: &T,
    ) -> Result<Receipt, LogError> {
        let seq = st.next_seq;
        let head = st.head;
        let chunk = st.chunk();
        let before = chunk.len();
        let hash = record::write_line(chunk, seq, &head, ty, body)
            .map_err(|e| LogError::Serialize(e.to_string()))?;
        let len = (chunk.len() - before) as u64;
        st.segment_bytes += len;
        st.next_seq += 1;
        st.head = hash;
        Ok(Receipt { seq, hash })
    }

    fn append_checkpoint(&self, st: &mut State) -> Result<Receipt, LogError> {
        let covers = st.next_seq - 1;
        let head = record::hex_string(&st.head);
        let time = Timestamp::now();
        let mac = self.key.sign(&record::checkpoint_mac_parts(
            &self.log_id,
            &covers.to_string(),
            &head,
            &time.as_unix_millis().to_string(),
        ));
        let body = record::CheckpointBody {
            log: self.log_id.clone(),
            covers,
            head,
            time,
            mac: hex::encode(mac),
        };
        let receipt = self.append_line(st, RecordType::Checkpoint, &body)?;
        st.pending_anchor = Some(Anchor::new(
            &self.key,
            &self.log_id,
            receipt.seq,
            &receipt.hash,
            time,
        ));
        st.since_checkpoint = 0;
        st.last_checkpoint = Instant::now();
        Ok(receipt)
    }

    /// Ends the current segment with a checkpoint and starts the next with a segment record.
    fn rotate(&self, st: &mut State) -> Result<(), LogError> {
        self.append_checkpoint(st)?;
        st.segment += 1;
        st.segment_bytes = 0;
        let body = record::SegmentBody {
            log: self.log_id.clone(),
            segment: st.segment,
            time: Timestamp::now(),
        };
        self.append_line(st, RecordType::Segment, &body)?;
        Ok(())
    }

    /// `PerRecord` and `NoSync` write under the lock, right away.
    fn flush_if_inline<'g>(&'g self, mut st: MutexGuard<'g, State>) -> MutexGuard<'g, State> {
        match self.config.durability {
            Durability::GroupCommit { .. } => st,
            Durability::PerRecord | Durability::NoSync => {
                while st.syncing {
                    st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                let sync = self.config.durability == Durability::PerRecord;
                let mut batch = st.take_batch();
                let result = self.write_batch(&mut batch, sync);
                self.settle(&mut st, batch, result);
                st
            }
        }
    }

    /// Puts the file back, records the outcome, and keeps the buffers for reuse.
    fn settle(&self, st: &mut State, batch: Batch, result: Result<(), String>) {
        let Batch {
            file,
            file_segment,
            chunks,
            durable_below,
            ..
        } = batch;
        st.file = file;
        st.file_segment = file_segment;
        match result {
            Ok(()) => st.durable_below = st.durable_below.max(durable_below),
            Err(reason) => {
                if st.failed.is_none() {
                    st.failed = Some(reason);
                }
            }
        }
        for mut c in chunks {
            if st.spare.len() < 8 {
                c.bytes.clear();
                st.spare.push(c.bytes);
            }
        }
    }

    fn write_batch(&self, batch: &mut Batch, sync: bool) -> Result<(), String> {
        let Batch {
            file,
            file_segment,
            chunks,
            anchor,
            ..
        } = batch;
        for chunk in chunks.iter() {
            self.injected_fault(file.as_mut(), &chunk.bytes)?;
            match file {
                Some(f) if *file_segment == chunk.segment => {
                    f.write_all(&chunk.bytes).map_err(|e| {
                        format!(
                            "write {}: {e}",
                            segment_path(&self.dir, chunk.segment).display()
                        )
                    })?;
                }
                _ => {
                    // The previous segment is synced before the next one exists.
                    if let Some(f) = file.as_mut() {
                        if sync {
                            f.sync_data().map_err(|e| format!("sync: {e}"))?;
                        }
                    }
                    *file = None;
                    let f = write_new_segment(&self.dir, chunk.segment, &chunk.bytes, sync)
                        .map_err(|e| e.to_string())?;
                    *file = Some(f);
                    *file_segment = chunk.segment;
                }
            }
        }
        if sync {
            if let Some(f) = file.as_mut() {
                f.sync_data().map_err(|e| {
                    format!(
                        "sync {}: {e}",
                        segment_path(&self.dir, *file_segment).display()
                    )
                })?;
            }
        }
        if let Some(a) = anchor.as_ref() {
            write_anchor(&self.dir, a, sync).map_err(|e| format!("anchor: {e}"))?;
        }
        Ok(())
    }

    /// The test hook: writes the allowed prefix of `bytes` and fails, like a disk that fills.
    fn injected_fault(&self, file: Option<&mut File>, bytes: &[u8]) -> Result<(), String> {
        let mut fault = self.fault.lock().unwrap_or_else(|e| e.into_inner());
        let Some(allowed) = fault.as_mut() else {
            return Ok(());
        };
        let n = usize::try_from(*allowed).unwrap_or(usize::MAX);
        if n >= bytes.len() {
            *allowed -= bytes.len() as u64;
            return Ok(());
        }
        if let Some(f) = file {
            let _ = f.write_all(&bytes[..n]);
        }
        *allowed = 0;
        Err("write: No space left on device (os error 28)".to_owned())
    }

    /// Waits until record `seq` is durable, syncing a batch itself when no one else is.
    fn wait_durable(&self, seq: u64) -> Result<(), LogError> {
        let mut st = self.lock();
        loop {
            if st.durable_below > seq {
                return Ok(());
            }
            if let Some(reason) = &st.failed {
                return Err(LogError::Failed {
                    reason: reason.clone(),
                });
            }
            if st.syncing {
                st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // Become the syncing writer for everything pending.
            st.syncing = true;
            if let Durability::GroupCommit { max_delay } = self.config.durability {
                if !max_delay.is_zero() {
                    drop(st);
                    std::thread::sleep(max_delay);
                    st = self.lock();
                }
            }
            let mut batch = st.take_batch();
            drop(st);
            let result = self.write_batch(&mut batch, true);
            st = self.lock();
            st.syncing = false;
            self.settle(&mut st, batch, result);
            self.cond.notify_all();
        }
    }
}

fn spawn_ticker(log: Weak<Inner>, stop: Arc<(Mutex<bool>, Condvar)>, interval: Duration) {
    let spawned = std::thread::Builder::new()
        .name("credvault-audit-checkpoint".into())
        .spawn(move || {
            let (flag, cond) = &*stop;
            let tick = interval
                .min(Duration::from_secs(1))
                .max(Duration::from_millis(10));
            loop {
                {
                    // The flag's lock is released before the log is touched: dropping the
                    // last handle below sets the flag from this very thread.
                    let stopped = flag.lock().unwrap_or_else(|e| e.into_inner());
                    if *stopped {
                        return;
                    }
                    let (stopped, _) = cond
                        .wait_timeout(stopped, tick)
                        .unwrap_or_else(|e| e.into_inner());
                    if *stopped {
                        return;
                    }
                }
                let Some(inner) = log.upgrade() else { return };
                let due = inner.lock().last_checkpoint.elapsed() >= interval;
                if due {
                    // A failure is recorded in the log's state and refuses later records.
                    let _ = AuditLog { inner }.checkpoint();
                }
            }
        });
    // Without the thread, checkpoints still come by count and on close.
    drop(spawned);
}
